"""Robustness perturbations as gymnasium wrappers, selectable by name from config.

Evaluation runs each named condition as its own row: observation noise, action delay (and, via
env arguments such as PointMaze's ``max_speed``, dynamics changes). Wrappers leave
``env.unwrapped`` untouched, so the goal image and the oracle's simulator stay clean.
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


PERTURBATIONS: dict[str, type[gymnasium.Wrapper]] = {
    "obs_noise": ObservationNoise,
    "action_delay": ActionDelay,
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
