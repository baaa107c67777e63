"""Push-T in PyBullet: a disc pusher pushes a T-shaped block to a goal pose, seen from above.

Coordinates are metres. The arena is the square ``[0, arena_size]^2`` on the floor z = 0, closed
by four invisible walls just outside it; x grows to the right and y *up* in the image (the
default camera looks straight down and sees exactly the arena). A pose is ``(x, y, theta)``:
the position of the T's centre of mass and its yaw (rad, counter-clockwise; at theta = 0 the
bar is on top, +y, and the stem points down, -y).

Physics: gravity on a plane with Coulomb friction (block-floor mu = ``BLOCK_FLOOR_FRICTION``),
so the block only moves while pushed and stops within ~1 cm after a full-speed push. The pusher
is a sphere on two prismatic joints (x, y) at the block's mid-height, driven by joint velocity
motors of bounded force (it cannot crush the block through a wall); it does not touch the
floor. Exact replay: after every control tick the block is projected to the plane (z, roll,
pitch and their velocities zeroed) and the env's float64 copy of the state is written back
after clearing PyBullet's contact caches, so the next tick depends on that state only; this is
what makes :meth:`get_state` / :meth:`set_state` and :meth:`clone` replays bitwise identical.

Pixels (flat lighting): floor ``FLOOR_RGB`` (the renderer's clear colour, no floor mesh),
block ``BLOCK_RGB``, pusher ``PUSHER_RGB``; only top faces are drawn (4 triangles for the T,
16 for the disc). The goal is never drawn as a marker: the goal image shows the T at the goal pose with
the pusher parked at ``PARK_FRACTION * arena_size`` (the bottom-left corner).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pybullet

from robots.base import TIME_STEP, BulletGoalEnv, Camera, check_positive

FLOOR_RGB = (255, 255, 255)
BLOCK_RGB = (119, 136, 153)
PUSHER_RGB = (65, 105, 225)

PUSHER_RADIUS = 0.03  # m
BLOCK_HEIGHT = 0.02  # m; the pusher's centre is at mid-height, so pushes are horizontal
BLOCK_MASS = 1.0  # kg
BLOCK_FLOOR_FRICTION = 2.0  # combined mu (PyBullet multiplies the two bodies' coefficients)
PUSHER_BLOCK_FRICTION = 0.4
PUSHER_MAX_FORCE = 200.0  # N per axis
PARK_FRACTION = (0.06, 0.06)  # the pusher's place in the goal image, as fractions of the arena


def _t_boxes() -> np.ndarray:
    """float64 (2, 4): the T's bar and stem as [cx, cy, half_x, half_y] in the block frame,
    whose origin is the T's centre of mass. Bar 0.24 x 0.06 m on top of a 0.06 x 0.18 m stem."""
    boxes = np.array([[0.0, 0.21, 0.12, 0.03], [0.0, 0.09, 0.03, 0.09]])
    area = 4 * boxes[:, 2] * boxes[:, 3]
    boxes[:, 1] -= area @ boxes[:, 1] / area.sum()
    return boxes


BLOCK_BOXES = _t_boxes()
_AREA = 4 * BLOCK_BOXES[:, 2] * BLOCK_BOXES[:, 3]
# Polar radius of gyration of the T about its centre of mass (m), ~0.088.
BLOCK_GYRATION = float(
    np.sqrt(
        _AREA
        @ ((BLOCK_BOXES[:, 2:] ** 2).sum(1) / 3 + (BLOCK_BOXES[:, :2] ** 2).sum(1))
        / _AREA.sum()
    )
)
# Farthest point of the T from its centre of mass (m), ~0.161: bounds the T in any orientation.
BLOCK_RADIUS = float(
    np.max(
        np.hypot(
            np.abs(BLOCK_BOXES[:, 0]) + BLOCK_BOXES[:, 2],
            np.abs(BLOCK_BOXES[:, 1]) + BLOCK_BOXES[:, 3],
        )
    )
)
_SAMPLE_MARGIN = BLOCK_RADIUS + 3 * PUSHER_RADIUS  # sampled poses keep this far from the walls
_CAMERA_HEIGHT = 100.0  # in arena sizes: far + narrow field of view ~ orthographic


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Angle(s) wrapped to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def distance_to_block(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Euclidean distance (m, 0 inside) from world points (..., 2) to the T at ``pose``."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    d = np.asarray(points, dtype=np.float64) - pose[:2]
    local = np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1)
    gap = np.maximum(np.abs(local[..., None, :] - BLOCK_BOXES[:, :2]) - BLOCK_BOXES[:, 2:], 0)
    return np.linalg.norm(gap, axis=-1).min(-1)


class PushTEnv(BulletGoalEnv):
    """Push a T-shaped block to a goal pose with a velocity-controlled disc.

    Observation: ``{"pixels": uint8 (H, W, 3), "state": float32 (6,)}`` with state
    ``[pusher_x, pusher_y, block_x, block_y, cos(theta), sin(theta)]`` (m; block = the T's
    centre of mass). Action: float32 (2,) in [-1, 1], the pusher's planar velocity; |a_i| = 1
    moves it ``max_speed`` m per control tick along axis i (less while it pushes or touches a
    wall). One env step = ``action_repeat`` ticks of ``physics_substeps`` steps of 1/240 s.

    ``info["distance"]`` (m) is the RMS distance between corresponding points of the T at its
    current and goal poses: ``sqrt(dp^2 + (2 * BLOCK_GYRATION * sin(dtheta / 2))^2)`` with dp the
    centre-of-mass distance and dtheta the wrapped yaw error. ``is_success``: dp <=
    ``success_pos_tol`` and |dtheta| <= ``success_angle_tol_deg``. Reward is ``-distance``.
    ``info["goal_state"]`` is the goal image's state: the parked pusher and the goal pose.

    Episodes: start and goal block poses are sampled with centres uniform in
    ``[m, arena_size - m]^2`` (m = ``BLOCK_RADIUS + 3 * PUSHER_RADIUS`` ~ 0.25) and yaws uniform,
    the goal yaw within ``max_goal_rotation_deg`` of the start's and, when ``max_goal_offset``
    (m) is set, the goal centre within that distance of the start's; a start with both errors
    within twice the tolerances is resampled. The pusher starts uniformly in the arena, at least
    2 cm clear of the block.
    """

    def __init__(
        self,
        image_size: int = 64,
        max_episode_steps: int = 300,
        action_repeat: int = 1,
        physics_substeps: int = 10,
        camera: dict[str, Any] | None = None,
        render_mode: str = "rgb_array",
        arena_size: float = 1.0,
        max_speed: float = 0.025,
        success_pos_tol: float = 0.03,
        success_angle_tol_deg: float = 15.0,
        max_goal_rotation_deg: float = 180.0,
        max_goal_offset: float | None = None,
    ) -> None:
        init_kwargs = dict(locals())
        self.arena_size = float(arena_size)
        self.max_speed = float(max_speed)
        self.success_pos_tol = float(success_pos_tol)
        self.success_angle_tol = float(np.radians(success_angle_tol_deg))
        self.max_goal_rotation = float(np.radians(max_goal_rotation_deg))
        self.max_goal_offset = None if max_goal_offset is None else float(max_goal_offset)
        check_positive(arena_size=self.arena_size, max_speed=self.max_speed,
                       success_pos_tol=self.success_pos_tol,
                       success_angle_tol_deg=float(success_angle_tol_deg))  # fmt: skip
        if self.arena_size < 2 * _SAMPLE_MARGIN + 0.1:
            raise ValueError(f"arena_size={arena_size} m leaves no room to place the T; use >= "
                             f"{2 * _SAMPLE_MARGIN + 0.1:.2f}")  # fmt: skip
        if self.max_speed > 0.05:
            raise ValueError(f"max_speed={max_speed} m/tick is too fast for the 6 cm block "
                             "edges (pushes could skip through); use <= 0.05")  # fmt: skip
        if not 0 <= max_goal_rotation_deg <= 180:
            raise ValueError(f"max_goal_rotation_deg={max_goal_rotation_deg} must be in [0, 180]")
        if self.max_goal_offset is not None and self.max_goal_offset <= 2 * self.success_pos_tol:
            raise ValueError(f"max_goal_offset={max_goal_offset} m must exceed twice "
                             f"success_pos_tol ({2 * self.success_pos_tol} m), or be null")  # fmt: skip
        size = self.arena_size
        height = _CAMERA_HEIGHT * size
        default_cam = Camera(
            eye=(size / 2, size / 2, height), target=(size / 2, size / 2, 0.0), up=(0.0, 1.0, 0.0),
            fov_deg=float(np.degrees(2 * np.arctan(size / 2 / height))),
            near=height - 1.0, far=height + 1.0,
        )  # fmt: skip
        self._init_base(init_kwargs, action_dim=2, state_dim=6, image_size=image_size,
                        max_episode_steps=max_episode_steps, action_repeat=action_repeat,
                        physics_substeps=physics_substeps, render_mode=render_mode,
                        camera=Camera.from_config(default_cam, camera))  # fmt: skip
        self._build_scene()
        # The authoritative float64 state, written to PyBullet by _write().
        self._pusher = np.array([*PARK_FRACTION, 0.0, 0.0]) * [size, size, 1, 1]  # x, y, vx, vy
        self._block = np.array([size / 2, size / 2, 0.0, 0.0, 0.0, 0.0])  # x, y, yaw, vx, vy, wz
        self._goal = np.array([size / 2, size / 2, 0.0])
        self._write()

    # ------------------------------------------------------------------ scene
    def _build_scene(self) -> None:
        c, size = self._client, self.arena_size
        c.setGravity(0, 0, -9.81)
        # Bodies that must not be drawn carry this speck far outside the view (without a visual
        # shape PyBullet would draw their collision shapes).
        far = -10.0 * size
        speck = c.createVisualShape(  # one triangle, far out of view: nothing to rasterise
            pybullet.GEOM_MESH, vertices=[[far, far, -10.0], [far + 1e-3, far, -10.0],
                                          [far, far + 1e-3, -10.0]], indices=[0, 1, 2])  # fmt: skip
        self._floor = c.createMultiBody(0, c.createCollisionShape(pybullet.GEOM_PLANE), speck)
        t = 0.1  # wall thickness and height (m)
        walls = c.createCollisionShapeArray(
            [pybullet.GEOM_BOX] * 4,
            halfExtents=[[size / 2 + t, t / 2, t]] * 2 + [[t / 2, size / 2 + t, t]] * 2,
            collisionFramePositions=[[size / 2, -t / 2, t], [size / 2, size + t / 2, t],
                                     [-t / 2, size / 2, t], [size + t / 2, size / 2, t]],
        )  # fmt: skip
        self._walls = c.createMultiBody(0, walls, speck)
        h = BLOCK_HEIGHT / 2
        col = c.createCollisionShapeArray(
            [pybullet.GEOM_BOX] * 2, halfExtents=[[hx, hy, h] for _, _, hx, hy in BLOCK_BOXES],
            collisionFramePositions=[[x, y, 0.0] for x, y, _, _ in BLOCK_BOXES])  # fmt: skip
        verts, idx = [], []
        for x, y, hx, hy in BLOCK_BOXES:  # top faces only, counter-clockwise seen from +z
            n = len(verts)
            verts += [[x - hx, y - hy, h], [x + hx, y - hy, h], [x + hx, y + hy, h],
                      [x - hx, y + hy, h]]  # fmt: skip
            idx += [n, n + 1, n + 2, n, n + 2, n + 3]
        vis = c.createVisualShape(
            pybullet.GEOM_MESH,
            vertices=verts,
            indices=idx,
            rgbaColor=[v / 255 for v in BLOCK_RGB] + [1.0],
        )
        self._body = c.createMultiBody(BLOCK_MASS, col, vis, [size / 2, size / 2, h])
        # Bullet approximates a compound's inertia by its bounding box; use the T's own.
        iz = BLOCK_MASS * BLOCK_GYRATION**2
        c.changeDynamics(self._body, -1, lateralFriction=BLOCK_FLOOR_FRICTION, restitution=0.0,
                         localInertiaDiagonal=[iz / 2, iz / 2, iz], linearDamping=0.0,
                         angularDamping=0.0,
                         activationState=pybullet.ACTIVATION_STATE_DISABLE_SLEEPING)  # fmt: skip
        c.changeDynamics(self._floor, -1, lateralFriction=1.0, restitution=0.0)
        c.changeDynamics(self._walls, -1, lateralFriction=0.5 / BLOCK_FLOOR_FRICTION,
                         restitution=0.0)  # fmt: skip
        # Pusher: fixed base at mid-block height, prismatic x then y; the sphere is on link 1.
        ring = np.linspace(0, 2 * np.pi, 17)[:-1]
        disc = [[0.0, 0.0, BLOCK_HEIGHT]] + [[PUSHER_RADIUS * np.cos(a), PUSHER_RADIUS * np.sin(a),
                                             BLOCK_HEIGHT] for a in ring]  # fmt: skip
        fan = [i for k in range(16) for i in (0, 1 + k, 1 + (k + 1) % 16)]
        pvis = c.createVisualShape(
            pybullet.GEOM_MESH,
            vertices=disc,
            indices=fan,
            rgbaColor=[v / 255 for v in PUSHER_RGB] + [1.0],
        )
        pcol = c.createCollisionShape(pybullet.GEOM_SPHERE, radius=PUSHER_RADIUS)
        self._pusher_body = c.createMultiBody(
            0, -1, speck, [0, 0, h], linkMasses=[0.5, 0.5], linkCollisionShapeIndices=[-1, pcol],
            linkVisualShapeIndices=[speck, pvis], linkPositions=[[0, 0, 0]] * 2,
            linkOrientations=[[0, 0, 0, 1]] * 2, linkInertialFramePositions=[[0, 0, 0]] * 2,
            linkInertialFrameOrientations=[[0, 0, 0, 1]] * 2, linkParentIndices=[0, 1],
            linkJointTypes=[pybullet.JOINT_PRISMATIC] * 2, linkJointAxis=[[1, 0, 0], [0, 1, 0]],
        )  # fmt: skip
        for link in (0, 1):
            c.changeDynamics(self._pusher_body, link, linearDamping=0.0, angularDamping=0.0,
                             jointDamping=0.0, restitution=0.0,
                             lateralFriction=PUSHER_BLOCK_FRICTION / BLOCK_FLOOR_FRICTION,
                             activationState=pybullet.ACTIVATION_STATE_DISABLE_SLEEPING)  # fmt: skip
        c.setCollisionFilterPair(self._pusher_body, self._floor, 1, -1, 0)

    # ------------------------------------------------------------------ physics
    def _write(self) -> None:
        """Put the float64 state into PyBullet, first dropping all cached contacts (moving the
        bodies apart and re-running collision detection), so nothing else carries over."""
        c, (px, py, vpx, vpy), (x, y, yaw, vx, vy, wz) = self._client, self._pusher, self._block
        far = 100.0 * self.arena_size
        c.resetBasePositionAndOrientation(self._body, [far, far, 1.0], [0, 0, 0, 1])
        c.resetJointState(self._pusher_body, 0, -far)
        c.resetJointState(self._pusher_body, 1, -far)
        c.performCollisionDetection()
        quat = [0.0, 0.0, float(np.sin(yaw / 2)), float(np.cos(yaw / 2))]
        c.resetBasePositionAndOrientation(self._body, [x, y, BLOCK_HEIGHT / 2], quat)
        c.resetBaseVelocity(self._body, [vx, vy, 0.0], [0.0, 0.0, wz])
        c.resetJointState(self._pusher_body, 0, px, vpx)
        c.resetJointState(self._pusher_body, 1, py, vpy)

    def _read(self) -> None:
        """Copy PyBullet's state into the float64 state, projected to the plane."""
        c = self._client
        (x, y, _), (qx, qy, qz, qw) = c.getBasePositionAndOrientation(self._body)
        (vx, vy, _), (_, _, wz) = c.getBaseVelocity(self._body)
        yaw = np.arctan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
        self._block = np.array([x, y, yaw, vx, vy, wz], dtype=np.float64)
        (px, vpx, *_), (py, vpy, *_) = c.getJointStates(self._pusher_body, [0, 1])
        self._pusher = np.array([px, py, vpx, vpy], dtype=np.float64)

    def _advance_physics(self, action: np.ndarray) -> None:
        vel = (action * self.max_speed / (self.physics_substeps * TIME_STEP)).tolist()
        c = self._client
        for _ in range(self.action_repeat):
            c.setJointMotorControlArray(
                self._pusher_body,
                [0, 1],
                pybullet.VELOCITY_CONTROL,
                targetVelocities=vel,
                forces=[PUSHER_MAX_FORCE] * 2,
            )
            for _ in range(self.physics_substeps):
                c.stepSimulation()
            self._read()
            self._write()

    # ------------------------------------------------------------------ state
    def task_state(self) -> dict[str, np.ndarray]:
        """Privileged state for scripted experts, float64 copies: ``pusher`` (x, y, vx, vy) in
        m and m/s, ``block`` (x, y, theta, vx, vy, omega), ``goal`` (x, y, theta)."""
        return {"pusher": self._pusher.copy(), "block": self._block.copy(),
                "goal": self._goal.copy()}  # fmt: skip

    def _state_vector(self) -> np.ndarray:
        b = self._block
        return np.array([*self._pusher[:2], b[0], b[1], np.cos(b[2]), np.sin(b[2])], np.float32)

    def _goal_state_vector(self) -> np.ndarray:
        g, park = self._goal, np.multiply(PARK_FRACTION, self.arena_size)
        return np.array([*park, g[0], g[1], np.cos(g[2]), np.sin(g[2])], np.float32)

    def _errors(self) -> tuple[float, float]:
        """(centre-of-mass distance in m, |yaw error| in rad) to the goal."""
        dp = float(np.hypot(*(self._block[:2] - self._goal[:2])))
        return dp, float(abs(wrap_angle(self._block[2] - self._goal[2])))

    def _goal_distance(self) -> float:
        dp, dth = self._errors()
        return float(np.hypot(dp, 2 * BLOCK_GYRATION * np.sin(dth / 2)))

    def _is_success(self) -> bool:
        dp, dth = self._errors()
        return dp <= self.success_pos_tol and dth <= self.success_angle_tol

    def get_state(self) -> np.ndarray:
        """float64 (14,) = [pusher x, y, vx, vy, block x, y, theta, vx, vy, omega,
        goal x, y, theta, step_count]; see :meth:`set_state`."""
        return np.concatenate([self._pusher, self._block, self._goal, [self._steps]])

    def set_state(self, state: np.ndarray) -> None:
        """Restore a state from :meth:`get_state` exactly (re-renders the goal if it changed)."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (14,) or not np.all(np.isfinite(state)):
            raise ValueError(f"state has shape {state.shape} (finite: "
                             f"{bool(np.all(np.isfinite(state)))}); expected 14 finite values "
                             "from get_state()")  # fmt: skip
        self._pusher, self._block = state[0:4].copy(), state[4:10].copy()
        self._steps = int(state[13])
        self._write()
        if not np.array_equal(state[10:13], self._goal) or self._goal_pixels is None:
            self._goal = state[10:13].copy()
            self._goal_pixels = self._render_goal()

    # ------------------------------------------------------------------ episodes
    def _render_goal(self) -> np.ndarray:
        """The T at the goal pose, the pusher parked; the state is restored afterwards."""
        saved = self._pusher, self._block
        self._pusher = np.array([*np.multiply(PARK_FRACTION, self.arena_size), 0.0, 0.0])
        self._block = np.array([*self._goal, 0.0, 0.0, 0.0])
        self._write()
        img = self.render()
        self._pusher, self._block = saved
        self._write()
        return img

    def _pose_option(self, options: dict[str, Any], name: str) -> np.ndarray | None:
        if name not in options:
            return None
        lo, hi = BLOCK_RADIUS, self.arena_size - BLOCK_RADIUS
        arr = np.asarray(options[name], dtype=np.float64).reshape(-1)
        if arr.shape != (3,) or not np.all(np.isfinite(arr)) or not np.all(
                (lo <= arr[:2]) & (arr[:2] <= hi)):  # fmt: skip
            raise ValueError(
                f"options[{name!r}]={options[name]!r} must be a finite pose (x, y, theta) with "
                f"x and y in [{lo:.3f}, {hi:.3f}] m (the T fits in the {self.arena_size} m arena "
                "at any theta); theta is in radians, any finite value"
            )
        arr[2] = wrap_angle(arr[2])
        return arr

    def _sample_episode(self, options: dict[str, Any]) -> None:
        """Options (all optional): ``start``/``goal`` block poses (x, y, theta), ``pusher``
        (x, y); the rest is sampled from ``self.np_random`` (see the class docstring)."""
        unknown = sorted(set(options) - {"start", "goal", "pusher"})
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; accepted: 'start' and 'goal' "
                             "(block poses x, y, theta), 'pusher' (x, y)")  # fmt: skip
        start, goal = self._pose_option(options, "start"), self._pose_option(options, "goal")
        rng, lo, hi = self.np_random, _SAMPLE_MARGIN, self.arena_size - _SAMPLE_MARGIN
        for _ in range(1000):
            s = start if start is not None else np.array(
                [*rng.uniform(lo, hi, 2), rng.uniform(-np.pi, np.pi)])  # fmt: skip
            rot = rng.uniform(-self.max_goal_rotation, self.max_goal_rotation)
            if self.max_goal_offset is None:
                xy = rng.uniform(lo, hi, 2)
            else:  # uniform in the disc of that radius around the start, kept in the arena
                r, phi = self.max_goal_offset * np.sqrt(rng.uniform()), rng.uniform(-np.pi, np.pi)
                xy = np.clip(s[:2] + r * np.array([np.cos(phi), np.sin(phi)]), lo, hi)
            g = goal if goal is not None else np.array([*xy, wrap_angle(s[2] + rot)])
            far = (np.hypot(*(s[:2] - g[:2])) > 2 * self.success_pos_tol
                   or abs(wrap_angle(s[2] - g[2])) > 2 * self.success_angle_tol)  # fmt: skip
            if far or (start is not None and goal is not None):
                break
        if "pusher" in options:
            p = np.asarray(options["pusher"], dtype=np.float64).reshape(-1)
            lo_p, hi_p = PUSHER_RADIUS, self.arena_size - PUSHER_RADIUS
            if (p.shape != (2,) or not np.all(np.isfinite(p)) or not np.all((lo_p <= p) & (p <= hi_p))
                    or distance_to_block(p, s) < PUSHER_RADIUS):  # fmt: skip
                raise ValueError(
                    f"options['pusher']={options['pusher']!r} must be a finite (x, y) with x and "
                    f"y in [{lo_p:.3f}, {hi_p:.3f}] m, at least {PUSHER_RADIUS} m (the pusher "
                    "radius) from the T's start pose"
                )
        else:
            clear, m = PUSHER_RADIUS + 0.02, PUSHER_RADIUS + 0.02
            for _ in range(1000):
                p = rng.uniform(m, self.arena_size - m, 2)
                if distance_to_block(p, s) >= clear:
                    break
        # Only now that every option is valid does the state change.
        self._block, self._goal = np.array([*s, 0.0, 0.0, 0.0]), g
        self._pusher = np.array([*p, 0.0, 0.0])
        self._write()
