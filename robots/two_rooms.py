"""TwoRooms: two rooms joined by one door whose position changes with the episode seed.

A :class:`robots.point_maze.PointMazeEnv` (same ball, camera, colours and physics) on the layout
family :func:`robots.layouts.two_rooms`: the layout id of an episode is the door's first row.
With ``cross_rooms`` (the default) start and goal are always in different rooms, so every
episode needs the door: the planner must find it from the images alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from robots.layouts import LayoutError, two_rooms
from robots.point_maze import PointMazeEnv


class TwoRoomsEnv(PointMazeEnv):
    """Two rooms split by a wall with a door at a seed-dependent row.

    Args:
        size: (rows, cols) with the wall border; cols odd (the split wall is the middle column).
        door_width: door height in cells.
        cross_rooms: sample start and goal in different rooms (else any pair).
        Every other argument is :class:`PointMazeEnv`'s.

    ``reset(options={"layout_id": r})`` fixes the door's first row to ``r``.
    """

    def __init__(
        self,
        size: Sequence[int] = (7, 11),
        door_width: int = 1,
        cross_rooms: bool = True,
        image_size: int = 64,
        max_episode_steps: int = 100,
        action_repeat: int = 1,
        physics_substeps: int = 4,
        max_speed: float = 0.25,
        success_radius: float = 0.35,
        min_goal_distance: int = 1,
        max_goal_distance: int | None = None,
        camera: dict[str, Any] | None = None,
        render_mode: str = "rgb_array",
    ) -> None:
        init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        rows, cols = int(size[0]), int(size[1])
        self.door_width = int(door_width)
        self.cross_rooms = bool(cross_rooms)
        if not 1 <= self.door_width <= rows - 2:
            raise LayoutError(f"door_width={door_width} must be in [1, {rows - 2}] for size {size}")
        super().__init__(
            layout="random",
            random_size=(rows, cols),
            layout_seeds=(1, rows - self.door_width),  # door rows 1 .. rows - 1 - door_width
            image_size=image_size,
            max_episode_steps=max_episode_steps,
            action_repeat=action_repeat,
            physics_substeps=physics_substeps,
            max_speed=max_speed,
            success_radius=success_radius,
            min_goal_distance=min_goal_distance,
            max_goal_distance=max_goal_distance,
            camera=camera,
            render_mode=render_mode,
        )
        self._init_kwargs = init_kwargs  # clone() rebuilds a TwoRoomsEnv

    def _walls_for(self, layout_id: int) -> np.ndarray:
        return two_rooms(*self._random_size, door_row=int(layout_id), door_width=self.door_width)

    def _pair_mask(self, lo: int, hi: int | None) -> np.ndarray:
        ok = super()._pair_mask(lo, hi)
        if not self.cross_rooms:
            return ok
        # -1 left room, +1 right room, 0 the door cells themselves.
        side = np.sign(self.free_cells[:, 1] - self.n_cols // 2)
        return ok & (side[:, None] * side[None, :] < 0)
