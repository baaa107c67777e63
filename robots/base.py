"""Shared machinery of the hmpc PyBullet task envs: camera, action checks, episode bookkeeping.

Every task env (``PointMaze``, ``TwoRooms``, ``PushT``, the Panda tasks) is a
:class:`BulletGoalEnv` and so has the same contract, which collection, training, evaluation and
the oracle rely on:

- observation ``{"pixels": uint8 (H, W, 3), "state": float32 (d,)}``, action ``Box(-1, 1, (A,))``;
- ``reset(seed=..., options={"goal": ...})`` (a goal is sampled when none is given);
- ``info`` on every reset and step: ``is_success`` (bool), ``distance`` (float, the task's goal
  distance, lower is better), ``path_distance`` (int, maze cells; -1 where not a maze),
  ``goal_pixels`` (the goal image, for controllers), ``goal_state`` (float32, for scoring only);
  ``step`` adds ``action_clipped``;
- ``get_state()`` / ``set_state(s)`` round-trip the whole simulator state exactly, ``clone()``
  builds an independent env with the same arguments and ``simulate(action)`` steps without
  rendering and returns ``(distance, path_distance)``: together a perfect model for the oracle;
- actions of the wrong shape raise ``ValueError``; non-finite entries become 0 and everything is
  clipped to [-1, 1] (``info["action_clipped"]`` says so), so the simulator is never corrupted.

Subclasses implement :meth:`_advance_physics`, :meth:`_state_vector`, :meth:`_sample_episode`,
:meth:`_goal_distance`, :meth:`_is_success`, :meth:`get_state`, :meth:`set_state` and
:meth:`_render_goal`, and call :meth:`_init_base` from ``__init__``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import gymnasium
import numpy as np
import pybullet
from gymnasium import spaces

TIME_STEP = 1.0 / 240.0  # PyBullet's default physics step (s)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: where it sits, what it looks at, and how the image is lit.

    ``eye``/``target``/``up`` are world coordinates (metres); ``fov_deg`` is the vertical field
    of view. Flat lighting (ambient 1, no diffuse/specular, no shadows) keeps frames
    deterministic and cheap; ``flat=False`` uses PyBullet's default shading.
    """

    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    fov_deg: float = 60.0
    near: float = 0.01
    far: float = 10.0
    aspect: float = 1.0  # width / height of the view; the image is stretched to a square
    flat: bool = True

    @classmethod
    def from_config(cls, default: Camera, overrides: dict[str, Any] | None) -> Camera:
        """``default`` with the keys of ``overrides`` replaced (unknown keys are an error)."""
        overrides = dict(overrides or {})
        fields = set(cls.__dataclass_fields__)
        bad = sorted(set(overrides) - fields)
        if bad:
            raise ValueError(f"unknown camera key(s) {bad}; accepted: {sorted(fields)}")
        for key in ("eye", "target", "up"):
            if key in overrides:
                value = tuple(float(v) for v in overrides[key])
                if len(value) != 3 or not all(np.isfinite(value)):
                    raise ValueError(f"camera.{key}={overrides[key]!r} must be 3 finite numbers")
                overrides[key] = value
        cam = cls(**{**default.__dict__, **overrides})
        if not 0 < cam.fov_deg < 180 or not 0 < cam.near < cam.far or not cam.aspect > 0:
            raise ValueError(
                f"camera needs 0 < fov_deg < 180, 0 < near < far and aspect > 0; got {cam}"
            )
        return cam


class BulletClient:
    """One PyBullet physics server (DIRECT) whose methods are ``pybullet`` functions bound to it.

    Like ``pybullet_utils.bullet_client.BulletClient`` but each bound method is built once and
    cached on the instance, so hot loops pay a plain attribute lookup per call rather than a
    new ``functools.partial`` (measured: a third of the Python overhead of a PointMaze step).
    """

    def __init__(self) -> None:
        self._id = pybullet.connect(pybullet.DIRECT)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(pybullet, name)
        if callable(attr):
            attr = functools.partial(attr, physicsClientId=self._id)
        self.__dict__[name] = attr
        return attr

    def disconnect(self) -> None:
        """Shut the physics server down (idempotent)."""
        if self._id >= 0:
            pybullet.disconnect(physicsClientId=self._id)
            self._id = -1


def sanitize_action(action: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
    """(float64 action of ``shape`` with non-finite entries zeroed and clipped to [-1, 1],
    whether anything was changed). Raises ``ValueError`` on a wrong shape."""
    raw = np.asarray(action, dtype=np.float64)
    if raw.size != int(np.prod(shape)) or raw.ndim > len(shape):
        raise ValueError(f"action has shape {np.shape(action)}; expected {shape}")
    raw = raw.reshape(shape)
    finite = np.isfinite(raw)
    act = np.clip(raw if finite.all() else np.where(finite, raw, 0.0), -1.0, 1.0)
    return act, bool((act != raw).any())


def check_positive(**values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name}={value!r} must be > 0")


def body_state(client: BulletClient, body: int) -> np.ndarray:
    """float64 (13 + 2 J,): base position (3), quaternion (4), linear and angular velocity (6),
    then every joint's position and velocity."""
    pos, orn = client.getBasePositionAndOrientation(body)
    lin, ang = client.getBaseVelocity(body)
    joints = client.getJointStates(body, range(client.getNumJoints(body))) or []
    q = [j[0] for j in joints]
    qd = [j[1] for j in joints]
    return np.array([*pos, *orn, *lin, *ang, *q, *qd], dtype=np.float64)


def set_body_state(client: BulletClient, body: int, state: np.ndarray) -> None:
    """Inverse of :func:`body_state`."""
    n = client.getNumJoints(body)
    if state.shape != (13 + 2 * n,):
        raise ValueError(f"body state has shape {state.shape}; expected ({13 + 2 * n},)")
    client.resetBasePositionAndOrientation(body, state[0:3].tolist(), state[3:7].tolist())
    client.resetBaseVelocity(body, state[7:10].tolist(), state[10:13].tolist())
    for j in range(n):
        client.resetJointState(body, j, float(state[13 + j]), float(state[13 + n + j]))


class BulletGoalEnv(gymnasium.Env):
    """Base class of the goal-conditioned PyBullet task envs (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    has_path_distance = False  # True for mazes: info["path_distance"] is a BFS cell distance

    def _init_base(
        self,
        init_kwargs: dict[str, Any],
        *,
        action_dim: int,
        state_dim: int,
        image_size: int,
        max_episode_steps: int,
        action_repeat: int,
        physics_substeps: int,
        camera: Camera,
        render_mode: str,
    ) -> None:
        """Common constructor part: arguments, spaces and this env's own PyBullet client.

        ``init_kwargs`` are the subclass's constructor arguments (for :meth:`clone`).
        """
        self._init_kwargs = {k: v for k, v in init_kwargs.items() if k not in ("self", "__class__")}
        self.image_size = int(image_size)
        self.max_episode_steps = int(max_episode_steps)
        self.action_repeat = int(action_repeat)
        self.physics_substeps = int(physics_substeps)
        check_positive(image_size=self.image_size, max_episode_steps=self.max_episode_steps,
                       action_repeat=self.action_repeat, physics_substeps=self.physics_substeps)  # fmt: skip
        if render_mode != "rgb_array":
            raise ValueError(f"render_mode={render_mode!r} is not supported; use 'rgb_array'")
        self.render_mode = render_mode
        self.camera = camera
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self.observation_space = spaces.Dict(
            {
                "pixels": spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
                "state": spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
            }
        )
        self._client = BulletClient()
        self._client.setTimeStep(TIME_STEP)
        # Deterministic pair order keeps contact solving identical across set_state replays.
        self._client.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        self._steps = 0
        self._goal_pixels: np.ndarray | None = None
        self._view = self._proj = None

    # ------------------------------------------------------------------ camera
    def _camera_matrices(self) -> tuple[Sequence[float], Sequence[float]]:
        cam, c = self.camera, self._client
        if self._view is None:
            self._view = c.computeViewMatrix(list(cam.eye), list(cam.target), list(cam.up))
            self._proj = c.computeProjectionMatrixFOV(cam.fov_deg, cam.aspect, cam.near, cam.far)
        return self._view, self._proj

    def render(self) -> np.ndarray:
        """The current camera frame, uint8 (image_size, image_size, 3)."""
        s = self.image_size
        view, proj = self._camera_matrices()
        light = {}
        if self.camera.flat:
            light = dict(lightAmbientCoeff=1.0, lightDiffuseCoeff=0.0, lightSpecularCoeff=0.0)
        _, _, rgba, _, _ = self._client.getCameraImage(
            s, s, view, proj, renderer=pybullet.ER_TINY_RENDERER, shadow=0, **light
        )
        return cv2.cvtColor(np.asarray(rgba, dtype=np.uint8).reshape(s, s, 4), cv2.COLOR_RGBA2RGB)

    def image_map(self, z: float | None = None) -> np.ndarray:
        """The camera's affine map (2, 3) of world (x, y) at height ``z`` (default: the camera
        target's) into image coordinates in [-1, 1], x to the right and y down: [u, v] =
        M @ [x, y, 1]. A least-squares fit over points around the target, exact for a camera
        looking straight down; ``model.anchor_map`` of the relative predictor."""
        cam = self.camera
        z = cam.target[2] if z is None else float(z)
        reach = float(np.linalg.norm(np.subtract(cam.eye, cam.target))) * np.tan(np.radians(cam.fov_deg) / 4)
        offsets = np.linspace(-reach, reach, 5)
        world = np.array([[cam.target[0] + dx, cam.target[1] + dy, z, 1.0]
                          for dx in offsets for dy in offsets])  # fmt: skip
        view, proj = (np.asarray(m, dtype=np.float64).reshape(4, 4, order="F")
                      for m in self._camera_matrices())
        clip = world @ (proj @ view).T
        image = clip[:, :2] / clip[:, 3:4] * [1.0, -1.0]  # NDC y points up, image rows down
        coef, *_ = np.linalg.lstsq(world[:, [0, 1, 3]], image, rcond=None)
        return coef.T

    def agent_mask(self) -> dict[str, Any]:
        """``model.agent_mask`` for this env's camera: ``{image_map, radius, fill}`` of a
        disc-shaped agent whose world x, y are ``observation.state[:2]``. Envs whose agent is
        not such a disc (an arm) have none."""
        raise ValueError(f"{type(self).__name__} has no disc-shaped agent at observation.state[:2] "
                         "to paint out; leave model.agent_mask=null (hmpc-pose: mask=none)")

    # ------------------------------------------------------------------ actions
    def _check_action(self, action: Any) -> tuple[np.ndarray, bool]:
        return sanitize_action(action, self.action_space.shape)

    # ------------------------------------------------------------------ API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; ``options`` keys are the subclass's (at least ``"goal"``)."""
        super().reset(seed=seed)
        self._steps = 0
        self._sample_episode(dict(options or {}))
        self._set_goal_pixels(self._render_goal())
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply ``action`` (A,) for ``action_repeat`` control ticks."""
        act, clipped = self._check_action(action)
        self._advance_physics(act)
        self._steps += 1
        info = self._info()
        info["action_clipped"] = clipped
        truncated = self._steps >= self.max_episode_steps
        return self._obs(), -info["distance"], False, truncated, info

    def simulate(self, action: Any) -> tuple[float, int]:
        """:meth:`step` without rendering (for planning in a :meth:`clone`):
        ``(distance, path_distance)`` after the step."""
        act, _ = self._check_action(action)
        self._advance_physics(act)
        self._steps += 1
        return float(self._goal_distance()), self._path_distance()

    @property
    def bullet_client(self) -> BulletClient:
        """This env's own PyBullet client (perturbation wrappers change the scene through it)."""
        return self._client

    def clone(self) -> BulletGoalEnv:
        """A new env (own PyBullet client) with this one's arguments; sync with set_state."""
        return type(self)(**self._init_kwargs)

    def goal_observation(self) -> dict[str, np.ndarray]:
        """The goal as an observation: ``{"pixels": (H, W, 3) uint8, "state": (d,) float32}``."""
        if self._goal_pixels is None:
            raise RuntimeError("goal_observation() called before reset(); call env.reset() first")
        return {"pixels": self._goal_pixels.copy(), "state": self._goal_state_vector()}

    def close(self) -> None:
        """Disconnect this env's own PyBullet client (idempotent)."""
        client = getattr(self, "_client", None)
        if client is not None:
            client.disconnect()
            self._client = None
        super().close()

    # ------------------------------------------------------------------ helpers
    def _set_goal_pixels(self, pixels: np.ndarray) -> None:
        """Store the goal image (read-only: info and goal_observation hand out copies)."""
        pixels.flags.writeable = False
        self._goal_pixels = pixels

    def _obs(self) -> dict[str, np.ndarray]:
        return {"pixels": self.render(), "state": self._state_vector().astype(np.float32)}

    def _info(self) -> dict[str, Any]:
        return {
            "goal_pixels": self._goal_pixels.copy(),  # gymnasium: new info data every call
            "goal_state": self._goal_state_vector(),
            "is_success": bool(self._is_success()),
            "distance": float(self._goal_distance()),
            "path_distance": self._path_distance(),
        }

    def _path_distance(self) -> int:
        """Maze cell distance to the goal; -1 for tasks without a maze."""
        return -1

    # ------------------------------------------------------------------ subclass hooks
    def _advance_physics(self, action: np.ndarray) -> None:
        """Apply the checked action (A,) in [-1, 1] for one env step (action_repeat ticks)."""
        raise NotImplementedError

    def _state_vector(self) -> np.ndarray:
        """The observation's ``state`` (d,)."""
        raise NotImplementedError

    def _goal_state_vector(self) -> np.ndarray:
        """float32 (d,): the ``state`` the task counts as the goal (for scoring only)."""
        raise NotImplementedError

    def _sample_episode(self, options: dict[str, Any]) -> None:
        """Place robot and objects and set the goal from ``self.np_random`` and ``options``."""
        raise NotImplementedError

    def _render_goal(self) -> np.ndarray:
        """The goal image (H, W, 3) uint8; must leave the simulator state as it found it."""
        raise NotImplementedError

    def _goal_distance(self) -> float:
        raise NotImplementedError

    def _is_success(self) -> bool:
        raise NotImplementedError

    def get_state(self) -> np.ndarray:
        """float64 (n,): everything needed to restore this moment exactly with set_state."""
        raise NotImplementedError

    def set_state(self, state: np.ndarray) -> None:
        raise NotImplementedError
