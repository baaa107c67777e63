"""Goal-conditioned point-mass maze in PyBullet, observed by a top-down camera.

Coordinates are in **cell units** (one maze cell = 1 simulator metre). For a layout with
``rows`` rows, the centre of cell (row, col) is at ``x = col + 0.5``, ``y = rows - row - 0.5``:
x grows to the right, y grows *up*, so the rendered image looks like the ASCII layout
(row 0 at the top). Walls are unit cubes on z in [0, 1]; the ball moves in the plane z = 0.5
with zero gravity, so its only contacts are with vertical wall faces.

Pixel colours (flat ambient lighting, no shadows, so frames are deterministic):
floor ``FLOOR_RGB`` (white), walls ``WALL_RGB`` (dark grey), ball ``BALL_RGB`` (red). The image is the whole grid
stretched to a square, nothing else in view; the goal is never drawn (it is given as an image).

Layouts: a named one, any ASCII rows, or ``"random"``: a new seeded maze
(:func:`robots.layouts.random_maze`) every episode, its id drawn from ``layout_seeds`` (so a
model trained on ids [0, 1000) can be evaluated on unseen ids [1000, 1100)). Start/goal pairs
are sampled by maze path distance (cells) between ``min_goal_distance`` and
``max_goal_distance``, or in a bucket given per episode (``options={"path_distance": (lo, hi)}``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pybullet

from robots.base import TIME_STEP, BulletGoalEnv, Camera
from robots.layouts import (
    LayoutError,
    all_pairs_cell_distances,
    parse_layout,
    random_maze,
)
from robots.maze_scene import build_wall_bodies

FLOOR_RGB = (255, 255, 255)  # TinyRenderer's clear colour: the floor is empty space
WALL_RGB = (63, 63, 63)
BALL_RGB = (255, 0, 0)

_BALL_Z = 0.5  # the ball's centre height: mid-height of the walls, so contacts are horizontal
_CAMERA_HEIGHT = 100.0  # far away + narrow field of view ~ orthographic (TinyRenderer has no ortho)
_FIXED_LAYOUT = -1  # layout id of a layout given by name or rows


class PointMazeEnv(BulletGoalEnv):
    """A ball driven by planar velocity commands through a walled maze.

    Observation: ``{"pixels": uint8 (H, W, 3), "state": float32 (4,) = [x, y, vx, vy]}``,
    positions in cells, velocities in cells per env step (displacement over the last step).
    Action: float32 (2,) in [-1, 1], the desired planar velocity; |a| = 1 moves ``max_speed``
    cells per control tick. One env step = ``action_repeat`` ticks of ``physics_substeps``
    physics steps each. Walls stop the ball through real contacts (zero friction, so it slides).

    Reward is ``-distance`` to the goal; ``terminated`` is always False (the harness scores
    ``info["is_success"]`` at any step); ``truncated`` once ``max_episode_steps`` are taken.

    Args:
        layout: a named layout, ASCII rows, or "random" (a new maze per episode).
        random_size: (rows, cols) of random mazes, odd, wall border included.
        layout_seeds: [low, high) range the per-episode random layout id is drawn from.
        min_goal_distance, max_goal_distance: path-distance range (cells) of sampled pairs.
        start_region: [x_lo, y_lo, x_hi, y_hi]: starts only in cells whose centre lies inside.
        exclude_regions: boxes like ``start_region``; no start or goal in cells centred inside.
        camera: overrides of the default top-down :class:`robots.base.Camera`.
    """

    BALL_RADIUS = 0.25  # cells; small enough to pass a 1-cell corridor with slack
    has_path_distance = True
    RESET_OPTIONS = ("start", "goal", "path_distance", "layout_id")

    def __init__(
        self,
        layout: str | Sequence[str] = "umaze",
        image_size: int = 64,
        max_episode_steps: int = 100,
        action_repeat: int = 1,
        physics_substeps: int = 4,
        max_speed: float = 0.25,
        success_radius: float = 0.35,
        min_goal_distance: int = 1,
        max_goal_distance: int | None = None,
        start_region: Sequence[float] | None = None,
        exclude_regions: Sequence[Sequence[float]] = (),
        random_size: Sequence[int] = (9, 9),
        layout_seeds: Sequence[int] = (0, 2**31 - 1),
        camera: dict[str, Any] | None = None,
        render_mode: str = "rgb_array",
    ) -> None:
        init_kwargs = dict(locals())
        self.max_speed = float(max_speed)
        self.success_radius = float(success_radius)
        self.min_goal_distance = int(min_goal_distance)
        self.max_goal_distance = None if max_goal_distance is None else int(max_goal_distance)
        # [x_lo, y_lo, x_hi, y_hi]: starts only in cells whose centre lies inside (e.g. collect
        # on one side of the maze, then evaluate starts on the other: an out-of-distribution row)
        self.start_region = None if start_region is None else tuple(float(v) for v in start_region)
        # [[x_lo, y_lo, x_hi, y_hi], ...]: neither starts nor goals in cells whose centre lies
        # inside one (e.g. a forbidden region a guardrail keeps the ball out of)
        self.exclude_regions = tuple(tuple(float(v) for v in r) for r in exclude_regions)
        self.layout_seeds = (int(layout_seeds[0]), int(layout_seeds[1]))
        self._random_size = (int(random_size[0]), int(random_size[1]))
        self._check_args()
        self._fixed_walls = None if self._is_family(layout) else parse_layout(layout)
        walls = self._walls_for(self.layout_seeds[0])  # fails early on bad sizes
        self.n_rows, self.n_cols = walls.shape
        self._init_base(
            init_kwargs, action_dim=2, state_dim=4, image_size=image_size,
            max_episode_steps=max_episode_steps, action_repeat=action_repeat,
            physics_substeps=physics_substeps, render_mode=render_mode,
            camera=Camera.from_config(self._default_camera(), camera),
        )  # fmt: skip
        c = self._client
        c.setGravity(0, 0, 0)
        # A body without a visual shape is drawn from its collision shapes (slow, sides too),
        # so extra wall bodies carry this invisible speck far outside the camera's view.
        self._speck = c.createVisualShape(
            pybullet.GEOM_SPHERE, radius=1e-3, rgbaColor=[1, 1, 1, 1],
            visualFramePosition=[-self.n_cols - 10.0, -self.n_rows - 10.0, -10.0],
        )  # fmt: skip
        self._wall_bodies: list[int] = []
        self.layout_id = None
        self._set_layout(self.layout_seeds[0] if self._fixed_walls is None else _FIXED_LAYOUT)
        ball_col = c.createCollisionShape(pybullet.GEOM_SPHERE, radius=self.BALL_RADIUS)
        ball_vis = c.createVisualShape(pybullet.GEOM_SPHERE, radius=self.BALL_RADIUS,
                                       rgbaColor=[v / 255.0 for v in BALL_RGB] + [1.0])  # fmt: skip
        self._ball = c.createMultiBody(1.0, ball_col, ball_vis, [0.5, 0.5, _BALL_Z])
        self._xy = np.array([0.5, 0.5])  # the ball's (x, y), kept in sync by every move
        c.changeDynamics(self._ball, -1, lateralFriction=0.0, restitution=0.0,
                         linearDamping=0.0, angularDamping=0.0)  # fmt: skip
        self._goal = np.array([0.5, 0.5])  # overwritten by reset
        self._vel = np.zeros(2)  # cells per env step

    @staticmethod
    def _is_family(layout: Any) -> bool:
        return isinstance(layout, str) and layout.strip() == "random"

    def _check_args(self) -> None:
        """Reject arguments that would silently produce a broken env."""
        if not (self.max_speed > 0 and self.success_radius > 0):
            raise ValueError(f"max_speed={self.max_speed} and success_radius="
                             f"{self.success_radius} must be > 0")  # fmt: skip
        if self.max_speed > 0.45:
            # Beyond ~half a cell per tick the ball could skip past thin contacts.
            raise ValueError(f"max_speed={self.max_speed} cells/tick is too fast; use <= 0.45")
        if self.min_goal_distance < 0:
            raise ValueError(f"min_goal_distance={self.min_goal_distance} must be >= 0")
        if self.max_goal_distance is not None and self.max_goal_distance < self.min_goal_distance:
            raise ValueError(f"max_goal_distance={self.max_goal_distance} is below "
                             f"min_goal_distance={self.min_goal_distance}")  # fmt: skip
        boxes = [("start_region", self.start_region)]
        boxes += [(f"exclude_regions[{i}]", r) for i, r in enumerate(self.exclude_regions)]
        for key, r in boxes:
            if r is not None and not (len(r) == 4 and r[0] < r[2] and r[1] < r[3]):
                raise ValueError(f"{key}={list(r)} must be [x_lo, y_lo, x_hi, y_hi] with "
                                 "x_lo < x_hi and y_lo < y_hi (maze cells)")  # fmt: skip
        if not self.layout_seeds[0] < self.layout_seeds[1]:
            raise ValueError(
                f"layout_seeds={list(self.layout_seeds)} must be [low, high), low < high"
            )

    # ------------------------------------------------------------------ layout
    def _walls_for(self, layout_id: int) -> np.ndarray:
        """The wall mask of layout ``layout_id`` (the fixed layout, or a member of the family)."""
        if self._fixed_walls is not None:
            return self._fixed_walls
        return random_maze(*self._random_size, seed=layout_id)

    def _draw_layout_id(self) -> int:
        """The layout of a new episode: fixed, or drawn from ``layout_seeds``."""
        if self._fixed_walls is not None:
            return _FIXED_LAYOUT
        return int(self.np_random.integers(*self.layout_seeds))

    def _set_layout(self, layout_id: int) -> None:
        """Build the walls of ``layout_id`` (no-op if already built) and its distance tables."""
        if layout_id == self.layout_id:
            return
        walls = self._walls_for(layout_id)
        if walls.shape != (self.n_rows, self.n_cols):
            raise LayoutError(
                f"layout {layout_id} is {walls.shape}, not {(self.n_rows, self.n_cols)}"
            )
        for body in self._wall_bodies:
            self._client.removeBody(body)
        self.walls, self.layout_id = walls, layout_id
        self._wall_bodies = build_wall_bodies(self._client, self.walls, WALL_RGB, self._speck)
        # All-pairs BFS once per layout: sampling start/goal by distance is then a lookup.
        self._cells, self._cell_dist = all_pairs_cell_distances(self.walls)
        self._cell_index = np.full(self.walls.shape, -1, dtype=np.int64)  # (row, col) -> index
        self._cell_index[self._cells[:, 0], self._cells[:, 1]] = np.arange(len(self._cells))
        if self._cell_dist.max() < self.min_goal_distance:
            raise ValueError(
                f"min_goal_distance={self.min_goal_distance} but the longest path in this layout "
                f"is {int(self._cell_dist.max())} cells; lower min_goal_distance or use a larger maze"
            )

    def _default_camera(self) -> Camera:
        """Top-down camera whose view is exactly the grid, stretched to a square image."""
        cx, cy = self.n_cols / 2, self.n_rows / 2
        return Camera(
            eye=(cx, cy, _CAMERA_HEIGHT), target=(cx, cy, 0.0), up=(0.0, 1.0, 0.0),
            fov_deg=float(np.degrees(2 * np.arctan(self.n_rows / 2 / _CAMERA_HEIGHT))),
            near=_CAMERA_HEIGHT - 2.0, far=_CAMERA_HEIGHT + 1.0, aspect=self.n_cols / self.n_rows,
        )  # fmt: skip

    # ------------------------------------------------------------------ state
    def _ball_xy(self) -> np.ndarray:
        """float64 (2,): the ball's position, as last placed or pinned (no simulator query)."""
        return self._xy.copy()

    def _place_ball(self, xy: Sequence[float]) -> None:
        """Teleport the ball (reset/set_state only) and zero its physics velocity."""
        self._xy = np.array([float(xy[0]), float(xy[1])])
        self._client.resetBasePositionAndOrientation(
            self._ball, [self._xy[0], self._xy[1], _BALL_Z], [0, 0, 0, 1]
        )
        self._client.resetBaseVelocity(self._ball, [0, 0, 0], [0, 0, 0])

    def _validate_point(self, xy: Any, name: str) -> np.ndarray:
        arr = np.asarray(xy, dtype=np.float64).reshape(-1)
        if arr.shape != (2,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"options[{name!r}]={xy!r} must be a finite (x, y) pair in cell units")
        r, c = self.cell_of(arr)
        if not (0 <= r < self.n_rows and 0 <= c < self.n_cols) or self.walls[r, c]:
            raise ValueError(
                f"options[{name!r}]={tuple(arr)} is not inside a free cell (cell row={r}, "
                f"col={c}); the layout has {len(self._cells)} free cells; cell (row, col) spans "
                f"x in [col, col+1], y in [rows-row-1, rows-row] with rows={self.n_rows}"
            )
        return arr

    def get_state(self) -> np.ndarray:
        """float64 (8,) = [x, y, vx, vy, goal_x, goal_y, step_count, layout_id]."""
        return np.array([*self._ball_xy(), *self._vel, *self._goal, self._steps, self.layout_id],
                        np.float64)  # fmt: skip

    def set_state(self, state: np.ndarray) -> None:
        """Restore a state from :meth:`get_state` exactly (for simulator-oracle planning)."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (8,):
            raise ValueError(f"state has shape {state.shape}; expected (8,) from get_state()")
        self._set_layout(int(state[7]))
        self._place_ball(state[:2])
        self._vel = state[2:4].copy()
        if not np.array_equal(state[4:6], self._goal) or self._goal_pixels is None:
            self._goal = state[4:6].copy()
            self._set_goal_pixels(self._render_goal())
        self._steps = int(state[6])

    # ------------------------------------------------------------------ public maze API
    # Cells are (row, col); a "free-cell index" i in 0..N-1 names the cell free_cells[i].
    def task_state(self) -> dict[str, np.ndarray]:
        """Privileged state for scripted experts, float64 (2,) copies in cell units: ``ball``
        (x, y) and ``goal`` (x, y)."""
        return {"ball": self._ball_xy(), "goal": self._goal.copy()}

    @property
    def free_cells(self) -> np.ndarray:
        """int64 (N, 2), a copy: (row, col) of free cells 0..N-1 of the current layout."""
        return self._cells.copy()

    def cell_of(self, xy: Sequence[float]) -> tuple[int, int]:
        """(row, col) of the cell containing point (x, y); may be outside the grid."""
        return int(self.n_rows - np.floor(xy[1]) - 1), int(np.floor(xy[0]))

    def cell_center(self, cell: Sequence[int]) -> np.ndarray:
        """float64 (2,): the (x, y) centre of cell (row, col)."""
        return np.array([cell[1] + 0.5, self.n_rows - cell[0] - 0.5])

    def free_cell_index(self, cell: Sequence[int]) -> int:
        """Free-cell index of cell (row, col); -1 for a wall cell or one outside the grid."""
        r, c = int(cell[0]), int(cell[1])
        inside = 0 <= r < self.n_rows and 0 <= c < self.n_cols
        return int(self._cell_index[r, c]) if inside else -1

    def path_distances(self, index: int) -> np.ndarray:
        """int64 (N,), a copy: BFS path length in cells from free cell ``index`` to every free
        cell (-1: unreachable)."""
        return self._cell_dist[index].copy()

    def next_cell_toward(self, index: int, target: int) -> int:
        """Free-cell index of the neighbour of free cell ``index`` one step closer to free cell
        ``target`` on a shortest path (first of row+1, row-1, col+1, col-1 on ties); ``index``
        itself when none is closer (it is the target, or the target is unreachable)."""
        dist, (r, c), best = self._cell_dist[:, target], self._cells[index], int(index)
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            k = self.free_cell_index((r + dr, c + dc))
            if k >= 0 and 0 <= dist[k] < dist[best]:
                best = k
        return best

    # ------------------------------------------------------------------ episode
    def _pair_mask(self, lo: int, hi: int | None) -> np.ndarray:
        """bool (N, N): which (start cell, goal cell) pairs may be sampled."""
        ok = self._cell_dist >= max(lo, 0)  # -1 (unreachable) never ok
        c = self.free_cells
        x, y = c[:, 1] + 0.5, self.n_rows - c[:, 0] - 0.5  # cell centres

        def inside(box: Sequence[float]) -> np.ndarray:
            return (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])

        if self.start_region is not None:
            ok &= inside(self.start_region)[:, None]
        for box in self.exclude_regions:
            ok &= ~inside(box)[:, None] & ~inside(box)[None, :]
        return ok if hi is None else ok & (self._cell_dist <= hi)

    def _sample_episode(self, options: dict[str, Any]) -> None:
        unknown = set(options) - set(self.RESET_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; accepted: {self.RESET_OPTIONS}"
            )
        layout_id = options.get("layout_id", self._draw_layout_id())
        if self._fixed_walls is not None and layout_id != _FIXED_LAYOUT:
            raise ValueError(f"options['layout_id']={layout_id} needs a layout family; this env "
                             f"has a fixed layout")  # fmt: skip
        self._set_layout(int(layout_id))
        lo, hi = self.min_goal_distance, self.max_goal_distance
        if "path_distance" in options:
            bucket = np.atleast_1d(np.asarray(options["path_distance"], dtype=np.int64))
            lo, hi = int(bucket[0]), int(bucket[-1])
        ok = self._pair_mask(lo, hi)
        if not ok.any():
            raise ValueError(f"no start/goal pair has a path distance in [{lo}, {hi}] cells in "
                             f"this layout (longest: {int(self._cell_dist.max())}) with starts in "
                             f"start_region={self.start_region}, outside "
                             f"exclude_regions={[list(r) for r in self.exclude_regions]}")  # fmt: skip
        rng = self.np_random
        i = int(rng.choice(np.flatnonzero(ok.any(axis=1))))
        j = int(rng.choice(np.flatnonzero(ok[i])))
        # Jitter inside the cell, keeping the ball (plus a margin) off the cell's walls.
        slack = 0.5 - self.BALL_RADIUS - 0.05
        start, goal = (
            self.cell_center(cell) + rng.uniform(-slack, slack, size=2)
            for cell in self._cells[[i, j]]
        )
        if "start" in options:
            start = self._validate_point(options["start"], "start")
        if "goal" in options:
            goal = self._validate_point(options["goal"], "goal")
        self._place_ball(start)
        self._vel, self._goal = np.zeros(2), goal

    def _render_goal(self) -> np.ndarray:
        """Render with the ball temporarily at the goal, then put it back."""
        pos, orn = self._client.getBasePositionAndOrientation(self._ball)
        lin, ang = self._client.getBaseVelocity(self._ball)
        self._client.resetBasePositionAndOrientation(self._ball, [*self._goal[:2], _BALL_Z], orn)
        img = self.render()
        self._client.resetBasePositionAndOrientation(self._ball, pos, orn)
        self._client.resetBaseVelocity(self._ball, lin, ang)
        return img

    def _advance_physics(self, action: np.ndarray) -> None:
        """Drive the ball with velocity ``action`` (2,) in [-1, 1] for one env step."""
        # Velocity that covers max_speed cells per tick at |a| = 1.
        vel = action * self.max_speed / (self.physics_substeps * TIME_STEP)
        before = self._xy
        c = self._client
        for _ in range(self.action_repeat):
            c.resetBaseVelocity(self._ball, [vel[0], vel[1], 0.0], [0, 0, 0])
            for _ in range(self.physics_substeps):
                c.stepSimulation()
            # Pin the ball to the plane: numerical contact noise must not lift or spin it.
            pos, _ = c.getBasePositionAndOrientation(self._ball)
            c.resetBasePositionAndOrientation(self._ball, [pos[0], pos[1], _BALL_Z], [0, 0, 0, 1])
            self._xy = np.array(pos[:2], dtype=np.float64)
        self._vel = self._xy - before

    def _state_vector(self) -> np.ndarray:
        return np.array([*self._xy, *self._vel], dtype=np.float32)

    def _goal_state_vector(self) -> np.ndarray:
        return np.array([*self._goal, 0.0, 0.0], dtype=np.float32)

    def _goal_distance(self) -> float:
        return math.hypot(self._xy[0] - self._goal[0], self._xy[1] - self._goal[1])

    def _is_success(self) -> bool:
        return self._goal_distance() < self.success_radius

    def _path_distance(self) -> int:
        """BFS path distance in cells to the goal's cell, -1 if unreachable or off the grid."""
        here = self.free_cell_index(self.cell_of(self._xy))
        goal = self.free_cell_index(self.cell_of(self._goal))
        return int(self._cell_dist[here, goal]) if here >= 0 and goal >= 0 else -1
