"""Exploration / data-collection policies behind one small interface.

Every behaviour implements :class:`Policy`: ``reset(seed)`` at the start of an episode, then
``act(obs)`` once per env step. Policies own their ``np.random.Generator`` (seeded in
``reset``), so rollouts are reproducible per episode seed and never touch global RNG state.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

ArrayLike = float | np.ndarray


@runtime_checkable
class Policy(Protocol):
    """A behaviour: ``reset(seed)`` per episode, then ``act(obs) -> float32 (A,)`` per step."""

    def reset(self, seed: int | None = None) -> None:
        """Start an episode; ``seed`` makes the following actions reproducible."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action float32 (A,) for observation ``obs`` (``{"pixels", "state"}``)."""


def _bounds(action_dim: int, low: ArrayLike, high: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and broadcast action bounds to float32 (A,)."""
    if int(action_dim) != action_dim or action_dim < 1:
        raise ValueError(f"action_dim={action_dim!r} must be a positive integer")
    lo = np.broadcast_to(np.asarray(low, dtype=np.float32), (action_dim,)).copy()
    hi = np.broadcast_to(np.asarray(high, dtype=np.float32), (action_dim,)).copy()
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
        raise ValueError(f"need finite low < high per dimension; got low={low!r}, high={high!r}")
    return lo, hi


class UniformPolicy:
    """Independent uniform actions in [low, high]: white noise, no temporal correlation.

    Args:
        action_dim: A, the action size.
        low, high: bounds, scalars or (A,) arrays.
    """

    def __init__(self, action_dim: int, low: ArrayLike = -1.0, high: ArrayLike = 1.0) -> None:
        self.action_dim = int(action_dim)
        self.low, self.high = _bounds(action_dim, low, high)
        self._rng = np.random.default_rng()  # replaced by reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the policy's own generator."""
        self._rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """float32 (A,) drawn uniformly in [low, high]; ``obs`` is ignored."""
        return self._rng.uniform(self.low, self.high).astype(np.float32)


class CorrelatedNoisePolicy:
    """Ornstein–Uhlenbeck (discrete-time) correlated random actions.

    ``x <- x + theta * (mean - x) + sigma * N(0, 1)``, then clipped to [low, high]; the
    action is ``x``. Smooth actions cover far more of a maze than white noise, whose
    displacements cancel out (a random walk of step size ~max_speed).

    Args:
        action_dim: A, the action size.
        theta: mean reversion per step in [0, 1]; the lag-1 autocorrelation is about
            ``1 - theta`` (0.85 at the default). ``theta=0`` gives a clipped random walk.
        sigma: std of the per-step Gaussian innovation (before clipping).
        low, high: action bounds, scalars or (A,) arrays.
        mean: level the process reverts to (default 0: no drift), scalar or (A,).
    """

    def __init__(
        self,
        action_dim: int,
        theta: float = 0.15,
        sigma: float = 0.4,
        low: ArrayLike = -1.0,
        high: ArrayLike = 1.0,
        mean: ArrayLike = 0.0,
    ) -> None:
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta={theta!r} must be in [0, 1] (0 = random walk, 1 = white)")
        if not sigma >= 0.0:
            raise ValueError(f"sigma={sigma!r} must be >= 0")
        self.action_dim = int(action_dim)
        self.low, self.high = _bounds(action_dim, low, high)
        self.theta, self.sigma = float(theta), float(sigma)
        self.mean = np.broadcast_to(np.asarray(mean, np.float64), (self.action_dim,)).copy()
        self._rng = np.random.default_rng()  # replaced by reset(seed)
        self._x = self._initial_state()

    def _initial_state(self) -> np.ndarray:
        """Draw x0 from the stationary distribution so the first actions are not all ~mean."""
        if self.theta == 0.0:
            return np.clip(self.mean, self.low, self.high)
        # AR(1) x' = (1 - theta) x + sigma eps has stationary std sigma / sqrt(1 - (1-theta)^2).
        std = self.sigma / np.sqrt(1.0 - (1.0 - self.theta) ** 2)
        x0 = self.mean + std * self._rng.standard_normal(self.action_dim)
        return np.clip(x0, self.low, self.high)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the generator and redraw the process state."""
        self._rng = np.random.default_rng(seed)
        self._x = self._initial_state()

    def act(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Advance the process one step; float32 (A,) in [low, high]; ``obs`` is ignored."""
        noise = self._rng.standard_normal(self.action_dim)
        x = self._x + self.theta * (self.mean - self._x) + self.sigma * noise
        # Clipping the state (not only the output) keeps x from lingering far outside the box.
        self._x = np.clip(x, self.low, self.high)
        return self._x.astype(np.float32)
