"""Noisy waypoint following in mazes: long, purposeful exploration paths for reward-free data.

Random noise (uniform or OU) covers a large maze poorly: it dithers in the start region. D4RL's
maze2d data was collected instead by a controller following waypoints to random goals; this is
that behaviour for :class:`robots.point_maze.PointMazeEnv` (and ``TwoRoomsEnv``): pick a random
free cell, steer along the maze's shortest path to it cell by cell with OU noise on top, pick a
new one on arrival. It reads the layout and the ball position through the public maze API of
``env.unwrapped`` (``task_state``, ``free_cells``, ``cell_of``, ...; privileged: it is a data
source and a baseline, never a learned controller).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skills.exploration import CorrelatedNoisePolicy

# The public PointMazeEnv methods this policy reads (TwoRoomsEnv inherits them).
_MAZE_API = ("task_state", "free_cells", "cell_of", "cell_center", "free_cell_index",
             "path_distances", "next_cell_toward")  # fmt: skip


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
        for attr in _MAZE_API:
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
        """float64 (2,): (x, y) centre of free cell ``index``."""
        return self.env.cell_center(self.env.free_cells[index])

    def act(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """float32 (2,): steer toward the next cell on the path to the current waypoint."""
        env = self.env
        task = env.task_state()
        xy, goal = task["ball"], task["goal"]
        here = env.free_cell_index(env.cell_of(xy))  # -1: (numerically) off the free cells
        if self.to_goal:
            self._target = env.free_cell_index(env.cell_of(goal))
        elif self._target is None or here == self._target:
            reachable = np.flatnonzero(env.path_distances(max(here, 0)) > 0)
            self._target = int(self._rng.choice(reachable)) if reachable.size else max(here, 0)
        if here < 0:
            aim = self._cell_centre(self._target)  # numerically off-grid: head back in
        elif here == self._target:
            aim = goal if self.to_goal else self._cell_centre(here)
        else:
            aim = self._cell_centre(env.next_cell_toward(here, self._target))
        action = np.clip(self.gain * (aim - xy), -1.0, 1.0)
        if self._noise is not None:
            action = action + self._noise.act()
        return np.clip(action, -1.0, 1.0).astype(np.float32)
