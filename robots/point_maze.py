"""Goal-conditioned point-mass maze in PyBullet, observed by a top-down camera.

Coordinates are in **cell units** (one maze cell = 1 simulator metre). For a layout with
``rows`` rows, the centre of cell (row, col) is at ``x = col + 0.5``, ``y = rows - row - 0.5``:
x grows to the right, y grows *up*, so the rendered image looks like the ASCII layout
(row 0 at the top). Walls are unit cubes on z in [0, 1]; the ball moves in the plane z = 0.5
with zero gravity, so its only contacts are with vertical wall faces.

Pixel colours (flat ambient lighting, no shadows, so frames are deterministic):
floor ``FLOOR_RGB`` (white), walls ``WALL_RGB`` (dark grey), ball ``BALL_RGB`` (red). The image is the whole grid
stretched to a square, nothing else in view; the goal is never drawn (it is given as an image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
import pybullet
from gymnasium import spaces
from pybullet_utils.bullet_client import BulletClient

from robots.layouts import all_pairs_cell_distances, parse_layout, wall_runs

FLOOR_RGB = (255, 255, 255)  # TinyRenderer's clear colour: the floor is empty space
WALL_RGB = (63, 63, 63)
BALL_RGB = (255, 0, 0)

_BALL_Z = 0.5  # the ball's centre height: mid-height of the walls, so contacts are horizontal
_CAMERA_HEIGHT = 100.0  # far away + narrow field of view ~ orthographic (TinyRenderer has no ortho)
_MAX_COMPOUND = 16  # PyBullet's MAX_COMPOUND_COLLISION_SHAPES
_TIME_STEP = 1.0 / 240.0  # PyBullet's default; only the ratio speed*dt matters for motion


class PointMazeEnv(gymnasium.Env):
    """A ball driven by planar velocity commands through a walled maze.

    Observation: ``{"pixels": uint8 (H, W, 3), "state": float32 (4,) = [x, y, vx, vy]}``,
    positions in cells, velocities in cells per env step (displacement over the last step).
    Action: float32 (2,) in [-1, 1], the desired planar velocity; |a| = 1 moves ``max_speed``
    cells per control tick. One env step = ``action_repeat`` ticks of ``physics_substeps``
    physics steps each. Walls stop the ball through real contacts (zero friction, so it slides).

    Reward is ``-distance`` to the goal; ``terminated`` is always False (the harness scores
    ``info["is_success"]`` at any step); ``truncated`` once ``max_episode_steps`` are taken.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    BALL_RADIUS = 0.25  # cells; small enough to pass a 1-cell corridor with slack

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
        render_mode: str = "rgb_array",
    ) -> None:
        self._init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.walls = parse_layout(layout)  # bool (rows, cols)
        self.n_rows, self.n_cols = self.walls.shape
        self.image_size = int(image_size)
        self.max_episode_steps = int(max_episode_steps)
        self.action_repeat = int(action_repeat)
        self.physics_substeps = int(physics_substeps)
        self.max_speed = float(max_speed)
        self.success_radius = float(success_radius)
        self.min_goal_distance = int(min_goal_distance)
        self.render_mode = render_mode
        self._check_args()

        # All-pairs BFS once: sampling start/goal by distance is then a table lookup.
        self._cells, self._cell_dist = all_pairs_cell_distances(self.walls)
        # (row, col) -> index into _cells, -1 for walls.
        self._cell_index = np.full(self.walls.shape, -1, dtype=np.int64)
        self._cell_index[self._cells[:, 0], self._cells[:, 1]] = np.arange(len(self._cells))
        if self._cell_dist.max() < self.min_goal_distance:
            raise ValueError(
                f"min_goal_distance={min_goal_distance} but the longest path in this layout is "
                f"{int(self._cell_dist.max())} cells; lower min_goal_distance or use a larger maze"
            )

        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = spaces.Dict(
            {
                "pixels": spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
                "state": spaces.Box(-np.inf, np.inf, (4,), np.float32),
            }
        )

        self._client = BulletClient(connection_mode=pybullet.DIRECT)
        self._build_scene()
        self._view, self._proj = self._camera_matrices()

        self._goal = np.array([0.5, 0.5])  # overwritten by reset
        self._vel = np.zeros(2)  # cells per env step
        self._steps = 0
        self._goal_pixels: np.ndarray | None = None

    def _check_args(self) -> None:
        """Reject arguments that would silently produce a broken env."""
        for name in ("image_size", "max_episode_steps", "action_repeat", "physics_substeps",
                     "max_speed", "success_radius"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        if self.max_speed > 0.45:
            # Beyond ~half a cell per tick the ball could skip past thin contacts.
            raise ValueError(f"max_speed={self.max_speed} cells/tick is too fast; use <= 0.45")
        if self.min_goal_distance < 0:
            raise ValueError(f"min_goal_distance={self.min_goal_distance} must be >= 0")
        if self.render_mode != "rgb_array":
            raise ValueError(f"render_mode={self.render_mode!r} is not supported; use 'rgb_array'")

    # ------------------------------------------------------------------ scene
    def _build_scene(self) -> None:
        """Create collision walls, one visual mesh of wall tops, and the ball.

        Rendering cost in TinyRenderer grows with covered pixels per triangle, so the scene
        has no floor body (the renderer's white clear colour is the floor) and walls are drawn
        as one mesh of their top faces only (a top-down camera never sees the sides).
        """
        c = self._client
        c.setGravity(0, 0, 0)
        c.setTimeStep(_TIME_STEP)
        # Deterministic pair order keeps contact solving identical across set_state replays.
        c.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        self._build_walls()
        ball_col = c.createCollisionShape(pybullet.GEOM_SPHERE, radius=self.BALL_RADIUS)
        ball_vis = c.createVisualShape(
            pybullet.GEOM_SPHERE,
            radius=self.BALL_RADIUS,
            rgbaColor=[v / 255.0 for v in BALL_RGB] + [1.0],
        )
        self._ball = c.createMultiBody(1.0, ball_col, ball_vis, [0.5, 0.5, _BALL_Z])
        c.changeDynamics(self._ball, -1, lateralFriction=0.0, restitution=0.0,
                         linearDamping=0.0, angularDamping=0.0)  # fmt: skip

    def _build_walls(self) -> None:
        """Static compound collision boxes per wall run plus the border, and the top-face mesh."""
        c = self._client
        h, w = self.n_rows, self.n_cols
        centers: list[list[float]] = []
        halves: list[list[float]] = []
        vertices: list[list[float]] = []
        indices: list[int] = []
        # Merged row runs: fewer shapes and triangles, and no internal edges to snag the ball.
        for r, c0, c1 in wall_runs(self.walls):
            y0 = h - r - 1
            centers.append([(c0 + c1) / 2, y0 + 0.5, 0.5])
            halves.append([(c1 - c0) / 2, 0.5, 0.5])
            n = len(vertices)
            vertices += [[c0, y0, 1.0], [c1, y0, 1.0], [c1, y0 + 1, 1.0], [c0, y0 + 1, 1.0]]
            indices += [n, n + 1, n + 2, n, n + 2, n + 3]  # counter-clockwise seen from +z
        # Border walls just outside the grid: layouts need not be closed; they are out of view.
        centers += [
            [w / 2, -0.5, 0.5],
            [w / 2, h + 0.5, 0.5],
            [-0.5, h / 2, 0.5],
            [w + 0.5, h / 2, 0.5],
        ]
        halves += [
            [w / 2 + 1, 0.5, 0.5],
            [w / 2 + 1, 0.5, 0.5],
            [0.5, h / 2 + 1, 0.5],
            [0.5, h / 2 + 1, 0.5],
        ]
        # Static bodies of compound collision boxes (PyBullet caps a compound at 16 children,
        # hence chunks). A body without a visual shape would be rendered from its collision
        # shapes (slow, and the sides too), so the first body carries the top-face mesh and
        # the others an invisible speck far outside the camera's view.
        speck = c.createVisualShape(
            pybullet.GEOM_SPHERE,
            radius=1e-3,
            rgbaColor=[1, 1, 1, 1],
            visualFramePosition=[-w - 10.0, -h - 10.0, -10.0],
        )
        first_vis = speck
        if vertices:
            first_vis = c.createVisualShape(
                pybullet.GEOM_MESH,
                vertices=vertices,
                indices=indices,
                rgbaColor=[v / 255.0 for v in WALL_RGB] + [1.0],
            )
        for k in range(0, len(centers), _MAX_COMPOUND):
            shape = c.createCollisionShapeArray(
                shapeTypes=[pybullet.GEOM_BOX] * len(centers[k : k + _MAX_COMPOUND]),
                halfExtents=halves[k : k + _MAX_COMPOUND],
                collisionFramePositions=centers[k : k + _MAX_COMPOUND],
            )
            body = c.createMultiBody(0, shape, first_vis if k == 0 else speck, [0, 0, 0])
            c.changeDynamics(body, -1, lateralFriction=0.0, restitution=0.0)

    def _camera_matrices(self) -> tuple[list[float], list[float]]:
        """Top-down camera whose view is exactly the grid, stretched to a square image."""
        cx, cy = self.n_cols / 2, self.n_rows / 2
        view = self._client.computeViewMatrix([cx, cy, _CAMERA_HEIGHT], [cx, cy, 0], [0, 1, 0])
        fov_deg = float(np.degrees(2 * np.arctan(self.n_rows / 2 / _CAMERA_HEIGHT)))
        proj = self._client.computeProjectionMatrixFOV(
            fov_deg, self.n_cols / self.n_rows, _CAMERA_HEIGHT - 2.0, _CAMERA_HEIGHT + 1.0
        )
        return view, proj

    def render(self) -> np.ndarray:
        """The current top-down frame, uint8 (image_size, image_size, 3)."""
        s = self.image_size
        _, _, rgba, _, _ = self._client.getCameraImage(
            s,
            s,
            self._view,
            self._proj,
            renderer=pybullet.ER_TINY_RENDERER,
            shadow=0,
            lightAmbientCoeff=1.0,
            lightDiffuseCoeff=0.0,
            lightSpecularCoeff=0.0,
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(s, s, 4)[..., :3].copy()

    # ------------------------------------------------------------------ state
    def _ball_xy(self) -> np.ndarray:
        pos, _ = self._client.getBasePositionAndOrientation(self._ball)
        return np.array(pos[:2], dtype=np.float64)

    def _place_ball(self, xy: Sequence[float]) -> None:
        """Teleport the ball (reset/set_state only) and zero its physics velocity."""
        self._client.resetBasePositionAndOrientation(
            self._ball, [float(xy[0]), float(xy[1]), _BALL_Z], [0, 0, 0, 1]
        )
        self._client.resetBaseVelocity(self._ball, [0, 0, 0], [0, 0, 0])

    def _cell_of(self, xy: Sequence[float]) -> tuple[int, int]:
        """(row, col) of the cell containing point (x, y); may be outside the grid."""
        return int(self.n_rows - np.floor(xy[1]) - 1), int(np.floor(xy[0]))

    def _validate_point(self, xy: Any, name: str) -> np.ndarray:
        arr = np.asarray(xy, dtype=np.float64).reshape(-1)
        if arr.shape != (2,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"options[{name!r}]={xy!r} must be a finite (x, y) pair in cell units")
        r, c = self._cell_of(arr)
        if not (0 <= r < self.n_rows and 0 <= c < self.n_cols) or self.walls[r, c]:
            raise ValueError(
                f"options[{name!r}]={tuple(arr)} is not inside a free cell (cell row={r}, "
                f"col={c}); the layout has {len(self._cells)} free cells; cell (row, col) spans "
                f"x in [col, col+1], y in [rows-row-1, rows-row] with rows={self.n_rows}"
            )
        return arr

    def get_state(self) -> np.ndarray:
        """float64 (7,) = [x, y, vx, vy, goal_x, goal_y, step_count]; see :meth:`set_state`."""
        return np.array([*self._ball_xy(), *self._vel, *self._goal, self._steps], np.float64)

    def set_state(self, state: np.ndarray) -> None:
        """Restore a state from :meth:`get_state` exactly (for simulator-oracle planning)."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (7,):
            raise ValueError(f"state has shape {state.shape}; expected (7,) from get_state()")
        self._place_ball(state[:2])
        self._vel = state[2:4].copy()
        if not np.array_equal(state[4:6], self._goal) or self._goal_pixels is None:
            self._goal = state[4:6].copy()
            self._goal_pixels = self._render_at(self._goal)
        self._steps = int(state[6])

    # ------------------------------------------------------------------ episode
    def _sample_start_goal(self) -> tuple[np.ndarray, np.ndarray]:
        """Uniform start cell among those with a goal >= min_goal_distance away, then goal cell."""
        rng = self.np_random
        ok = self._cell_dist >= max(self.min_goal_distance, 0)  # -1 (unreachable) never ok
        starts = np.flatnonzero(ok.any(axis=1))
        i = int(rng.choice(starts))
        j = int(rng.choice(np.flatnonzero(ok[i])))
        # Jitter inside the cell, keeping the ball (plus a margin) off the cell's walls.
        slack = 0.5 - self.BALL_RADIUS - 0.05
        points = []
        for k in (i, j):
            r, c = self._cells[k]
            centre = np.array([c + 0.5, self.n_rows - r - 0.5])
            points.append(centre + rng.uniform(-slack, slack, size=2))
        return points[0], points[1]

    def _render_at(self, xy: np.ndarray) -> np.ndarray:
        """Render with the ball temporarily at xy, then put it back."""
        pos, orn = self._client.getBasePositionAndOrientation(self._ball)
        lin, ang = self._client.getBaseVelocity(self._ball)
        self._client.resetBasePositionAndOrientation(self._ball, [xy[0], xy[1], _BALL_Z], orn)
        img = self.render()
        self._client.resetBasePositionAndOrientation(self._ball, pos, orn)
        self._client.resetBaseVelocity(self._ball, lin, ang)
        return img

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode. ``options`` may hold "start" and/or "goal" as (x, y) in cells."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"start", "goal"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; accepted: 'start', 'goal'")
        start, goal = self._sample_start_goal()
        if "start" in options:
            start = self._validate_point(options["start"], "start")
        if "goal" in options:
            goal = self._validate_point(options["goal"], "goal")
        self._place_ball(start)
        self._vel, self._steps, self._goal = np.zeros(2), 0, goal
        self._goal_pixels = self._render_at(goal)
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Drive the ball with velocity ``action`` (2,) for one env step."""
        clipped = self._advance(action)
        info = self._info()
        info["action_clipped"] = clipped
        truncated = self._steps >= self.max_episode_steps
        return self._obs(), -info["distance"], False, truncated, info

    def simulate(self, action: np.ndarray) -> tuple[float, int]:
        """:meth:`step` without rendering, for planning in a :meth:`clone`: the same physics and
        step count; returns info's (distance, path_distance) after the step."""
        self._advance(action)
        return self._distances()

    def clone(self) -> PointMazeEnv:
        """A new env (own PyBullet client) with this one's arguments; sync with set_state."""
        return PointMazeEnv(**self._init_kwargs)

    def _advance(self, action: np.ndarray) -> bool:
        """Apply velocity command ``action`` (2,) for one env step; True if it was clipped."""
        raw = np.asarray(action, dtype=np.float64).reshape(-1)
        if raw.shape != (2,):
            raise ValueError(f"action has shape {np.shape(action)}; expected (2,)")
        # Non-finite entries become 0 (stop) rather than poisoning the physics state.
        act = np.where(np.isfinite(raw), raw, 0.0)
        clipped = not np.array_equal(np.clip(act, -1.0, 1.0), raw)
        act = np.clip(act, -1.0, 1.0)
        # Velocity that covers max_speed cells per tick at |a| = 1.
        vel = act * self.max_speed / (self.physics_substeps * _TIME_STEP)
        before = self._ball_xy()
        c = self._client
        for _ in range(self.action_repeat):
            c.resetBaseVelocity(self._ball, [vel[0], vel[1], 0.0], [0, 0, 0])
            for _ in range(self.physics_substeps):
                c.stepSimulation()
            # Pin the ball to the plane: numerical contact noise must not lift or spin it.
            xy = self._ball_xy()
            c.resetBasePositionAndOrientation(self._ball, [xy[0], xy[1], _BALL_Z], [0, 0, 0, 1])
        self._vel = self._ball_xy() - before
        self._steps += 1
        return bool(clipped)

    def _obs(self) -> dict[str, np.ndarray]:
        state = np.array([*self._ball_xy(), *self._vel], dtype=np.float32)
        return {"pixels": self.render(), "state": state}

    def _distances(self) -> tuple[float, int]:
        """(Euclidean goal distance in cells, BFS path distance in cells or -1)."""
        xy = self._ball_xy()
        r0, c0 = self._cell_of(xy)
        r1, c1 = self._cell_of(self._goal)
        path = -1  # unreachable, or the ball centre is (numerically) outside the free cells
        if 0 <= r0 < self.n_rows and 0 <= c0 < self.n_cols and self._cell_index[r0, c0] >= 0:
            path = int(self._cell_dist[self._cell_index[r0, c0], self._cell_index[r1, c1]])
        return float(np.linalg.norm(xy - self._goal)), path

    def _info(self) -> dict[str, Any]:
        distance, path = self._distances()
        return {
            "goal_pixels": self._goal_pixels.copy(),
            "goal_state": np.array([*self._goal, 0.0, 0.0], dtype=np.float32),
            "is_success": distance < self.success_radius,
            "distance": distance,
            "path_distance": path,
        }

    def goal_observation(self) -> dict[str, np.ndarray]:
        """The goal as an observation: ``{"pixels": (H, W, 3) uint8, "state": (4,) float32}``."""
        if self._goal_pixels is None:
            raise RuntimeError("goal_observation() called before reset(); call env.reset() first")
        return {
            "pixels": self._goal_pixels.copy(),
            "state": np.array([*self._goal, 0.0, 0.0], dtype=np.float32),
        }

    def close(self) -> None:
        """Disconnect this env's own PyBullet client (idempotent)."""
        client = getattr(self, "_client", None)
        if client is not None:
            client.disconnect()
            self._client = None
        super().close()
