"""Robustness perturbations as gymnasium wrappers, selectable by name from config.

Evaluation runs each named condition as its own row: observation noise, action delay, and
dynamics changes (``dynamics``: mass and surface friction of the PyBullet scene; PointMaze's
actuator gain through its ``max_speed`` argument). Goals are sampled with nominal dynamics. The
oracle plans in a clone that sees the dynamics change as it sees the env's arguments (it stays the
perfect model, the upper bound), but neither the noise nor the delay: it reads the true state and
plans as if each command took effect at once.
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


# (body, link) -> (mass, local inertia diagonal, lateral friction)
_Dynamics = dict[tuple[int, int], tuple[float, tuple[float, ...], float]]


class DynamicsChange(gymnasium.Wrapper):
    """Scales the PyBullet scene's dynamics for each episode: ``mass`` multiplies the mass and
    inertia of every movable body and link (mass > 0: the ball, the pusher and the T, the arm and the
    cube), ``friction`` the lateral friction of every static one (floor, table, walls), so each
    contact of a movable body with a surface has ``friction`` times its friction (PyBullet multiplies
    the two bodies' coefficients); contacts between movable bodies (a grasp) keep theirs.

    Applied after each reset and undone before the next, so the episode's goal (sampled, for
    Push-T's push goals, by simulating a push) comes from the nominal dynamics. :meth:`apply_to_clone`
    gives a simulator clone (the oracle's model) the same change.
    """

    def __init__(self, env: gymnasium.Env, mass: float = 1.0, friction: float = 1.0) -> None:
        super().__init__(env)
        for key, value in (("mass", mass), ("friction", friction)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"dynamics {key}={value} must be a finite factor > 0 (1.2 = +20 %)")
        if not hasattr(env.unwrapped, "bullet_client"):
            raise ValueError(f"dynamics changes need a PyBullet env of hmpc's; {env.unwrapped} has no bullet_client")
        self.mass, self.friction = float(mass), float(friction)
        self._nominal: _Dynamics = {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        _scale(self.env.unwrapped.bullet_client, self._nominal, 1.0, 1.0)  # the next goal: nominal
        out = super().reset(seed=seed, options=options)
        self._nominal = _dynamics(self.env.unwrapped.bullet_client)
        _scale(self.env.unwrapped.bullet_client, self._nominal, self.mass, self.friction)
        return out

    def apply_to_clone(self, sim: Any) -> None:
        """Scale ``sim``'s scene (a clone of this env, at its nominal dynamics) the same way."""
        client = getattr(sim, "bullet_client", None)
        if client is None:
            raise ValueError(f"dynamics changes need a PyBullet clone; {type(sim).__name__} has no bullet_client")
        _scale(client, _dynamics(client), self.mass, self.friction)


def _dynamics(client: Any) -> _Dynamics:
    """(mass, local inertia diagonal, lateral friction) of every body and link of a PyBullet scene."""
    out: _Dynamics = {}
    for body in (client.getBodyUniqueId(i) for i in range(client.getNumBodies())):
        for link in range(-1, client.getNumJoints(body)):
            info = client.getDynamicsInfo(body, link)
            out[(body, link)] = (float(info[0]), tuple(float(v) for v in info[2]), float(info[1]))
    return out


def _scale(client: Any, nominal: _Dynamics, mass: float, friction: float) -> None:
    """Set ``nominal``'s movable links to ``mass`` times their mass and inertia, its static ones to
    ``friction`` times their lateral friction (factors 1: back to nominal)."""
    for (body, link), (m, inertia, mu) in nominal.items():
        if m > 0:
            client.changeDynamics(body, link, mass=m * mass, localInertiaDiagonal=[v * mass for v in inertia])
        else:
            client.changeDynamics(body, link, lateralFriction=mu * friction)


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
