"""Noisy waypoint following in mazes: long, purposeful exploration paths for reward-free data.

Random noise (uniform or OU) covers a large maze poorly: it dithers in the start region. D4RL's
maze2d data was collected instead by a controller following waypoints to random goals; this is
that behaviour for :class:`robots.point_maze.PointMazeEnv` (and ``TwoRoomsEnv``): pick a random
free cell, steer along the maze's shortest path to it cell by cell with OU noise on top, pick a
new one on arrival. It reads the layout and the ball position through ``env.unwrapped``
(privileged: it is a data source and a baseline, never a learned controller).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skills.exploration import CorrelatedNoisePolicy


class MazeWaypointPolicy:
    """Follow shortest maze paths to random waypoints, with correlated noise.

    Args:
        env: a PointMaze-family env (possibly wrapped).
        noise: sigma of the OU noise added to the steering action (0 = a clean expert that
            heads for the episode's goal when ``to_goal``).
        theta: OU mean reversion of the noise.
        gain: steering action per cell of offset to the next cell centre (clipped to [-1, 1]).
        to_goal: follow the path to the episode's goal (an expert baseline) instead of random
            waypoints.
    """

    def __init__(
        self, env: Any, noise: float = 0.3, theta: float = 0.15, gain: float = 2.0,
        to_goal: bool = False,
    ) -> None:  # fmt: skip
        self.env = env.unwrapped
        for attr in ("walls", "_cells", "_cell_dist", "_cell_index", "_cell_of", "_ball_xy"):
            if not hasattr(self.env, attr):
                raise ValueError(f"waypoint policy needs a maze env (PointMaze, TwoRooms); "
                                 f"{type(self.env).__name__} has no {attr!r}")  # fmt: skip
        self.gain, self.to_goal = float(gain), bool(to_goal)
        self._noise = CorrelatedNoisePolicy(2, theta=theta, sigma=noise) if noise > 0 else None
        self._rng = np.random.default_rng()
        self._target: int | None = None

    def reset(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        if self._noise is not None:
            self._noise.reset(None if seed is None else seed + 1)
        self._target = None

    def _cell_centre(self, index: int) -> np.ndarray:
        r, c = self.env._cells[index]
        return np.array([c + 0.5, self.env.n_rows - r - 0.5])

    def act(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """float32 (2,): steer toward the next cell on the path to the current waypoint."""
        env = self.env
        xy = env._ball_xy()
        r, c = env._cell_of(xy)
        here = int(env._cell_index[r, c]) if 0 <= r < env.n_rows and 0 <= c < env.n_cols else -1
        if self.to_goal:
            gr, gc = env._cell_of(env._goal)
            self._target = int(env._cell_index[gr, gc])
        elif self._target is None or here == self._target:
            reachable = np.flatnonzero(env._cell_dist[max(here, 0)] > 0)
            self._target = int(self._rng.choice(reachable)) if reachable.size else max(here, 0)
        if here < 0:
            aim = self._cell_centre(self._target)  # numerically off-grid: head back in
        elif here == self._target:
            aim = env._goal if self.to_goal else self._cell_centre(here)
        else:
            # The neighbour of `here` one step closer to the target on a shortest path.
            dist = env._cell_dist[:, self._target]
            best = here
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                nr, nc = r + dr, c + dc
                if 0 <= nr < env.n_rows and 0 <= nc < env.n_cols and env._cell_index[nr, nc] >= 0:
                    k = int(env._cell_index[nr, nc])
                    if 0 <= dist[k] < dist[best]:
                        best = k
            aim = self._cell_centre(best)
        action = np.clip(self.gain * (aim - xy), -1.0, 1.0)
        if self._noise is not None:
            action = action + self._noise.act()
        return np.clip(action, -1.0, 1.0).astype(np.float32)
