"""Robustness perturbations as gymnasium wrappers, selectable by name from config.

Evaluation runs each named condition as its own row: observation noise, action delay, and
dynamics changes (``dynamics``: mass and surface friction of the PyBullet scene; PointMaze's
actuator gain through its ``max_speed`` argument). Goals are sampled with nominal dynamics, and the
oracle plans in a clone built from the env's arguments, so neither sees the change.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium
import numpy as np


class ObservationNoise(gymnasium.ObservationWrapper):
    """Adds Gaussian noise of ``std`` (in 0..255 pixel units) to ``obs["pixels"]``.

    The noise generator is seeded from ``reset(seed=...)``, so episodes stay reproducible.
    """

    def __init__(self, env: gymnasium.Env, std: float = 8.0) -> None:
        super().__init__(env)
        if std < 0:
            raise ValueError(f"obs_noise std={std} must be >= 0")
        self.std = float(std)
        self._rng = np.random.default_rng(0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._rng = np.random.default_rng(None if seed is None else [seed, 7])
        return super().reset(seed=seed, options=options)

    def observation(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        px = obs["pixels"].astype(np.float32) + self._rng.normal(0.0, self.std, obs["pixels"].shape)
        return {**obs, "pixels": np.clip(np.rint(px), 0, 255).astype(np.uint8)}


class ActionDelay(gymnasium.Wrapper):
    """Applies each command ``steps`` env steps late (zeros until the queue fills)."""

    def __init__(self, env: gymnasium.Env, steps: int = 1) -> None:
        super().__init__(env)
        if steps < 0:
            raise ValueError(f"action_delay steps={steps} must be >= 0")
        self.steps = int(steps)
        self._queue: deque[np.ndarray] = deque()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        shape = self.env.action_space.shape
        self._queue = deque(np.zeros(shape, np.float32) for _ in range(self.steps))
        return super().reset(seed=seed, options=options)

    def step(self, action: np.ndarray):
        self._queue.append(np.asarray(action, np.float32))
        return super().step(self._queue.popleft())


class DynamicsChange(gymnasium.Wrapper):
    """Scales the PyBullet scene's dynamics for each episode: ``mass`` multiplies the mass and
    inertia of every movable body and link (mass > 0: the ball, the pusher and the T, the arm and the
    cube), ``friction`` the lateral friction of every static one (floor, table, walls), so each
    contact of a movable body with a surface has ``friction`` times its friction (PyBullet multiplies
    the two bodies' coefficients); contacts between movable bodies (a grasp) keep theirs.

    Applied after each reset and undone before the next, so the episode's goal (sampled, for
    Push-T's push goals, by simulating a push) comes from the nominal dynamics.
    """

    def __init__(self, env: gymnasium.Env, mass: float = 1.0, friction: float = 1.0) -> None:
        super().__init__(env)
        for key, value in (("mass", mass), ("friction", friction)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"dynamics {key}={value} must be a finite factor > 0 (1.2 = +20 %)")
        if not hasattr(env.unwrapped, "bullet_client"):
            raise ValueError(f"dynamics changes need a PyBullet env of hmpc's; {env.unwrapped} has no bullet_client")
        self.mass, self.friction = float(mass), float(friction)
        self._nominal: dict[tuple[int, int], tuple[float, tuple[float, ...], float]] = {}

    def _links(self) -> list[tuple[int, int]]:
        c = self.env.unwrapped.bullet_client
        bodies = [c.getBodyUniqueId(i) for i in range(c.getNumBodies())]
        return [(b, link) for b in bodies for link in range(-1, c.getNumJoints(b))]

    def _set(self, scaled: bool) -> None:
        c = self.env.unwrapped.bullet_client
        for (body, link), (mass, inertia, friction) in self._nominal.items():
            if mass > 0:
                s = self.mass if scaled else 1.0
                c.changeDynamics(body, link, mass=mass * s, localInertiaDiagonal=[v * s for v in inertia])
            else:
                c.changeDynamics(body, link, lateralFriction=friction * (self.friction if scaled else 1.0))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._set(scaled=False)  # the goal of the next episode comes from nominal dynamics
        out = super().reset(seed=seed, options=options)
        c = self.env.unwrapped.bullet_client
        self._nominal = {}
        for body, link in self._links():
            info = c.getDynamicsInfo(body, link)
            self._nominal[(body, link)] = (float(info[0]), tuple(float(v) for v in info[2]), float(info[1]))
        self._set(scaled=True)
        return out


PERTURBATIONS: dict[str, type[gymnasium.Wrapper]] = {
    "obs_noise": ObservationNoise,
    "action_delay": ActionDelay,
    "dynamics": DynamicsChange,
}


def apply_perturbations(env: gymnasium.Env, wrappers: list[dict[str, Any]]) -> gymnasium.Env:
    """Wrap ``env`` with each ``{"name": ..., **kwargs}`` in order; unknown names are refused."""
    for w in wrappers:
        w = dict(w)
        name = w.pop("name", None)
        if name not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {name!r}; known: {sorted(PERTURBATIONS)}")
        env = PERTURBATIONS[name](env, **w)
    return env
