"""Use any installed gymnasium env with hmpc: pixels + state observations, actions in [-1, 1].

:class:`GymnasiumAdapter` wraps an env made with ``render_mode="rgb_array"`` and a ``Box``
action space (for example panda-gym's ``PandaReach-v3``, or your own PyBullet env) so that
collection, training and evaluation work on it unchanged::

    hmpc-collect env=gymnasium env.id=PandaReach-v3 env.kwargs='{reward_type: dense}' ...

What it does, per step:

- ``pixels``: ``env.render()`` resized to ``image_size`` x ``image_size`` (area interpolation).
- ``state``: the env's observation flattened to float32; for goal-conditioned envs (a dict with
  ``observation`` / ``achieved_goal`` / ``desired_goal``, the gymnasium-robotics convention) it is
  ``observation`` alone, so the goal never leaks into the controller's inputs; a dict that
  already has ``state`` (an hmpc-style env) gives that, and ``pixels`` entries are skipped.
- actions in [-1, 1] are mapped affinely onto the env's ``Box`` bounds (non-finite entries -> 0,
  then clipped; ``info["action_clipped"]`` says so); a wrong shape raises ``ValueError``.
- ``info["distance"]`` is ``||achieved_goal - desired_goal||`` when those keys exist, else
  ``-reward``; ``info["is_success"]`` is the env's own when it reports one, else False.
- ``info["goal_pixels"]``: the goal image, from ``reset(options={"goal_pixels": img})`` if
  given, else from the wrapped env's ``render_goal()`` method when it has one, else a black
  image (model-based controllers then have no goal: supply goal images for evaluation).

Not available: ``get_state``/``set_state``/``clone`` (gymnasium has no portable state API), so
the simulator oracle cannot run on adapted envs; everything else can.
"""

from __future__ import annotations

from typing import Any

import cv2
import gymnasium
import numpy as np
from gymnasium import spaces

from robots.base import sanitize_action

_GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")


def _flat(x: Any) -> np.ndarray:
    if isinstance(x, dict):
        return np.concatenate([_flat(x[k]) for k in sorted(x)]) if x else np.zeros(0, np.float32)
    return np.asarray(x, dtype=np.float32).reshape(-1)


class GymnasiumAdapter(gymnasium.Env):
    """An installed gymnasium env as an hmpc task env (see the module docstring).

    Args:
        id: the gymnasium id (``gymnasium.make(id, render_mode="rgb_array", **kwargs)``).
        kwargs: extra keyword arguments for ``gymnasium.make``.
        image_size: side of the square ``pixels``.
        imports: modules to import first so their envs are registered (e.g. ``["panda_gym"]``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        id: str,
        kwargs: dict[str, Any] | None = None,
        image_size: int = 64,
        imports: list[str] | tuple[str, ...] = (),
        render_mode: str = "rgb_array",
    ) -> None:
        if render_mode != "rgb_array":
            raise ValueError(f"render_mode={render_mode!r} is not supported; use 'rgb_array'")
        if int(image_size) <= 0:
            raise ValueError(f"image_size={image_size!r} must be > 0")
        for module in imports:
            __import__(module)  # explicit opt-in registration, e.g. panda_gym
        try:
            self.env = gymnasium.make(id, render_mode="rgb_array", **dict(kwargs or {}))
        except gymnasium.error.Error as err:
            raise ValueError(
                f"env.id={id!r} could not be made ({err}); check the id, install its package "
                f"and list the module in env.imports so it registers its envs"
            ) from err
        if not isinstance(self.env.action_space, spaces.Box):
            raise ValueError(f"env.id={id!r} has action space {self.env.action_space}; the "
                             f"adapter needs a Box (continuous) action space")  # fmt: skip
        low, high = self.env.action_space.low, self.env.action_space.high
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"env.id={id!r} has unbounded actions ({low}, {high}); wrap it "
                             f"with gymnasium.wrappers.ClipAction or RescaleAction first")  # fmt: skip
        self._low, self._high = low.astype(np.float64), high.astype(np.float64)
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self._goal_env = isinstance(self.env.observation_space, spaces.Dict) and all(
            k in self.env.observation_space.spaces for k in _GOAL_KEYS
        )
        sample = self.env.observation_space.sample()
        state_dim = len(self._state(sample))
        self.action_space = spaces.Box(-1.0, 1.0, low.shape, np.float32)
        self.observation_space = spaces.Dict(
            {
                "pixels": spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
                "state": spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
            }
        )
        self.max_episode_steps = getattr(self.env.spec, "max_episode_steps", None)
        self._goal_pixels = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        self._last_obs: Any = None

    def _state(self, obs: Any) -> np.ndarray:
        if isinstance(obs, dict) and "state" in obs:  # already hmpc-style
            return _flat(obs["state"])
        if self._goal_env:
            return _flat(obs["observation"])
        if isinstance(obs, dict):
            return _flat({k: v for k, v in obs.items() if k != "pixels"})
        return _flat(obs)

    def _resize(self, frame: np.ndarray | None) -> np.ndarray:
        if frame is None:
            raise RuntimeError("the wrapped env's render() returned None; it must support "
                               "render_mode='rgb_array'")  # fmt: skip
        frame = np.asarray(frame, dtype=np.uint8)[..., :3]
        s = self.image_size
        if frame.shape[:2] != (s, s):
            frame = cv2.resize(frame, (s, s), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame)

    def render(self) -> np.ndarray:
        """The wrapped env's frame, uint8 (image_size, image_size, 3)."""
        return self._resize(self.env.render())

    def _obs(self, obs: Any) -> dict[str, np.ndarray]:
        self._last_obs = obs
        return {"pixels": self.render(), "state": self._state(obs)}

    def _info(self, info: dict[str, Any], reward: float | None) -> dict[str, Any]:
        obs = self._last_obs
        if self._goal_env:
            distance = float(
                np.linalg.norm(_flat(obs["achieved_goal"]) - _flat(obs["desired_goal"]))
            )
            goal_state = _flat(obs["desired_goal"])
        else:
            distance = float("nan") if reward is None else -float(reward)
            goal_state = np.zeros(0, np.float32)
        return {
            "goal_pixels": self._goal_pixels.copy(),
            "goal_state": goal_state,
            "is_success": bool(info.get("is_success", False)),
            "distance": distance,
            "path_distance": -1,
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset the wrapped env; ``options["goal_pixels"]`` sets the goal image, the other
        options go to the wrapped env."""
        super().reset(seed=seed)
        options = dict(options or {})
        goal_pixels = options.pop("goal_pixels", None)
        obs, info = self.env.reset(seed=seed, options=options or None)
        if goal_pixels is not None:
            self._goal_pixels = self._resize(goal_pixels)
        elif callable(getattr(self.env.unwrapped, "render_goal", None)):
            self._goal_pixels = self._resize(self.env.unwrapped.render_goal())
        else:
            self._goal_pixels = np.zeros_like(self._goal_pixels)
        out = self._obs(obs)
        return out, self._info(info, None)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Map ``action`` (A,) in [-1, 1] onto the env's bounds and step it."""
        act, clipped = sanitize_action(action, self.action_space.shape)
        scaled = self._low + (act + 1.0) * 0.5 * (self._high - self._low)
        obs, reward, terminated, truncated, info = self.env.step(
            scaled.astype(self.env.action_space.dtype)
        )
        out = self._obs(obs)
        info_out = self._info(info, reward)
        info_out["action_clipped"] = clipped
        return out, float(reward), bool(terminated), bool(truncated), info_out

    def goal_observation(self) -> dict[str, np.ndarray]:
        """The goal image (and the goal state where the env has one)."""
        goal_state = np.zeros(self.observation_space["state"].shape, np.float32)
        return {"pixels": self._goal_pixels.copy(), "state": goal_state}

    def close(self) -> None:
        self.env.close()
        super().close()
