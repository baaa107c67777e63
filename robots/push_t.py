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
the pusher parked at ``PARK_FRACTION * arena_size`` (the bottom-left corner), or, for goals made
by a push (``goal_mode="push"``), where that push left it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pybullet

from robots.base import TIME_STEP, BulletGoalEnv, Camera, check_positive
from robots.push_t_geometry import (
    BLOCK_BOXES,
    BLOCK_GYRATION,
    BLOCK_RADIUS,
    PUSHER_RADIUS,
    distance_to_block,
    outline_point,
    point_option,
    pose_option,
    to_world,
    wrap_angle,
)
from robots.push_t_scene import (
    BLOCK_HEIGHT,
    BLOCK_RGB,
    FLOOR_RGB,
    PUSHER_BLOCK_FRICTION,
    PUSHER_MAX_FORCE,
    PUSHER_RGB,
    build_scene,
)

__all__ = ["BLOCK_BOXES", "BLOCK_GYRATION", "BLOCK_RADIUS", "BLOCK_RGB", "FLOOR_RGB",
           "PARK_FRACTION", "PUSHER_BLOCK_FRICTION", "PUSHER_MAX_FORCE", "PUSHER_RADIUS", "PUSHER_RGB", "PushTEnv",
           "distance_to_block", "wrap_angle"]  # fmt: skip

PARK_FRACTION = (0.06, 0.06)  # the pusher's place in the goal image, as fractions of the arena
GOAL_MODES = ("pose", "push")
_PUSH_SPEED = 0.6  # |action| of the pushes that make goal_mode="push" goals
_PUSH_TURN = np.radians(10.0)  # per-step std of their heading drift (rad)
_PUSH_CONE = np.radians(60.0)  # the heading stays within this of the contact's inward normal


_SAMPLE_MARGIN = BLOCK_RADIUS + 3 * PUSHER_RADIUS  # sampled poses keep this far from the walls
_CAMERA_HEIGHT = 100.0  # in arena sizes: far + narrow field of view ~ orthographic


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
    ``info["goal_state"]`` is the goal image's state: the goal image's pusher and the goal pose.

    Episodes: start and goal block poses are sampled with centres uniform in
    ``[m, arena_size - m]^2`` (m = ``BLOCK_RADIUS + 3 * PUSHER_RADIUS`` ~ 0.25) and yaws uniform,
    the goal yaw within ``max_goal_rotation_deg`` of the start's and, when ``max_goal_offset``
    (m) is set, the goal centre within that distance of the start's; a start with both errors
    within twice the tolerances is resampled. The pusher starts uniformly in the arena, at least
    2 cm clear of the block.

    ``goal_mode="push"`` makes goals reachable by one push instead (the protocol of DINO-WM,
    whose starts and goals are 25 steps apart on expert trajectories): the pusher starts 1 cm
    outside a point drawn uniformly on the T's outline, and the goal is the state after
    ``goal_push_steps`` env steps of pushing from there at |action| 0.6 with the heading starting
    along the inward normal and drifting (10 degrees per step, within 60 degrees of it),
    simulated by this env's own physics, ending early where the pusher slides off (2 cm clear of
    the T); pushes that move the T less than twice a tolerance are redrawn. The goal image then
    shows the pusher where the push left it. ``max_goal_offset`` and ``max_goal_rotation_deg`` do
    not apply.
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
        goal_mode: str = "pose",
        goal_push_steps: int = 25,
    ) -> None:
        init_kwargs = dict(locals())
        self.arena_size = float(arena_size)
        self.max_speed = float(max_speed)
        self.success_pos_tol = float(success_pos_tol)
        self.success_angle_tol = float(np.radians(success_angle_tol_deg))
        self.max_goal_rotation = float(np.radians(max_goal_rotation_deg))
        self.max_goal_offset = None if max_goal_offset is None else float(max_goal_offset)
        if goal_mode not in GOAL_MODES:
            raise ValueError(f"goal_mode={goal_mode!r}; use one of {GOAL_MODES}")
        if int(goal_push_steps) < 1:
            raise ValueError(f"goal_push_steps={goal_push_steps} must be >= 1 (env steps)")
        self.goal_mode, self.goal_push_steps = goal_mode, int(goal_push_steps)
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
        self._floor, self._walls, self._body, self._pusher_body = build_scene(
            self._client, self.arena_size
        )
        # The authoritative float64 state, written to PyBullet by _write().
        self._pusher = np.array([*PARK_FRACTION, 0.0, 0.0]) * [size, size, 1, 1]  # x, y, vx, vy
        self._block = np.array([size / 2, size / 2, 0.0, 0.0, 0.0, 0.0])  # x, y, yaw, vx, vy, wz
        self._goal = np.array([size / 2, size / 2, 0.0])
        self._goal_pusher = np.multiply(PARK_FRACTION, size)  # the goal image's pusher (x, y)
        self._write()

    # ------------------------------------------------------------------ scene
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
        g, q = self._goal, self._goal_pusher
        return np.array([*q, g[0], g[1], np.cos(g[2]), np.sin(g[2])], np.float32)

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
        """float64 (16,) = [pusher x, y, vx, vy, block x, y, theta, vx, vy, omega,
        goal x, y, theta, goal-image pusher x, y, step_count]; see :meth:`set_state`."""
        return np.concatenate([self._pusher, self._block, self._goal, self._goal_pusher,
                               [self._steps]])  # fmt: skip

    def set_state(self, state: np.ndarray) -> None:
        """Restore a state from :meth:`get_state` exactly (re-renders the goal if it changed)."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (16,) or not np.all(np.isfinite(state)):
            raise ValueError(f"state has shape {state.shape} (finite: "
                             f"{bool(np.all(np.isfinite(state)))}); expected 16 finite values "
                             "from get_state()")  # fmt: skip
        self._pusher, self._block = state[0:4].copy(), state[4:10].copy()
        self._steps = int(state[15])
        self._write()
        if not np.array_equal(state[10:15], [*self._goal, *self._goal_pusher]) or (
                self._goal_pixels is None):  # fmt: skip
            self._goal, self._goal_pusher = state[10:13].copy(), state[13:15].copy()
            self._goal_pixels = self._render_goal()

    def agent_mask(self) -> dict[str, Any]:
        """The pusher's disc for ``model.agent_mask``; half a pixel of margin (one ate the T's edge
        in contact, bench/RESULTS.md#planning-on-the-final-step)."""
        return {"image_map": self.image_map().tolist(), "radius": PUSHER_RADIUS, "fill": list(FLOOR_RGB),
                "margin": 0.5}

    object_pose_dims = (2, 3, 4, 5)  # observation.state columns of the T's x, y, cos, sin (hmpc-pose's check)

    @property
    def object_gyration(self) -> float:
        """The T's radius of gyration (m): ``info["distance"]`` weighs its heading error by it."""
        return BLOCK_GYRATION

    # ------------------------------------------------------------------ episodes
    def _render_goal(self) -> np.ndarray:
        """The T at the goal pose, the pusher at the goal image's place; the state is restored."""
        saved = self._pusher, self._block
        self._pusher = np.array([*self._goal_pusher, 0.0, 0.0])
        self._block = np.array([*self._goal, 0.0, 0.0, 0.0])
        self._write()
        img = self.render()
        self._pusher, self._block = saved
        self._write()
        return img

    def _start_pose(self, start: np.ndarray | None) -> np.ndarray:
        """``start``, or a block pose drawn uniformly (centre kept from the walls, any yaw)."""
        if start is not None:
            return start
        lo, hi = _SAMPLE_MARGIN, self.arena_size - _SAMPLE_MARGIN
        return np.array([*self.np_random.uniform(lo, hi, 2), self.np_random.uniform(-np.pi, np.pi)])

    def _sample_poses(
        self, start: np.ndarray | None, goal: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Start and goal block poses, sampled where not given (see the class docstring)."""
        rng, lo, hi = self.np_random, _SAMPLE_MARGIN, self.arena_size - _SAMPLE_MARGIN
        for _ in range(1000):
            s = self._start_pose(start)
            rot = rng.uniform(-self.max_goal_rotation, self.max_goal_rotation)
            if self.max_goal_offset is None:
                xy = rng.uniform(lo, hi, 2)
            else:  # uniform in the disc of that radius around the start, kept in the arena
                r, phi = self.max_goal_offset * np.sqrt(rng.uniform()), rng.uniform(-np.pi, np.pi)
                xy = np.clip(s[:2] + r * np.array([np.cos(phi), np.sin(phi)]), lo, hi)
            g = goal if goal is not None else np.array([*xy, wrap_angle(s[2] + rot)])
            if self._far(s, g) or (start is not None and goal is not None):
                break
        return s, g

    def _far(self, start: np.ndarray, goal: np.ndarray) -> bool:
        """Whether either error between two poses exceeds twice its tolerance."""
        return bool(np.hypot(*(start[:2] - goal[:2])) > 2 * self.success_pos_tol
                    or abs(wrap_angle(start[2] - goal[2])) > 2 * self.success_angle_tol)  # fmt: skip

    def _push_goal(self, start: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """goal_mode="push": (start pose, start pusher, goal pose, goal pusher) from a simulated
        push (see the class docstring); the env's state is restored afterwards."""
        saved = self._pusher, self._block
        try:
            return self._simulate_push(start)
        finally:
            self._pusher, self._block = saved
            self._write()

    def _simulate_push(self, start: np.ndarray | None) -> tuple[np.ndarray, ...]:
        rng = self.np_random
        for _ in range(1000):
            s = self._start_pose(start)
            point, normal = outline_point(rng.uniform())
            p = to_world(point + (PUSHER_RADIUS + 0.01) * normal, s)
            if (not np.all((PUSHER_RADIUS <= p) & (p <= self.arena_size - PUSHER_RADIUS))
                    or distance_to_block(p, s) < PUSHER_RADIUS + 0.005):  # fmt: skip
                continue  # outside the arena, or in the T's inner corner
            self._block, self._pusher = np.array([*s, 0.0, 0.0, 0.0]), np.array([*p, 0.0, 0.0])
            self._write()
            inward = np.arctan2(*(-normal[::-1])) + s[2]  # world heading of the inward normal
            heading = inward
            for _ in range(self.goal_push_steps):
                heading = np.clip(heading + rng.normal(0.0, _PUSH_TURN), inward - _PUSH_CONE,
                                  inward + _PUSH_CONE)  # fmt: skip
                self._advance_physics(_PUSH_SPEED * np.array([np.cos(heading), np.sin(heading)]))
                if distance_to_block(self._pusher[:2], self._block[:3]) > PUSHER_RADIUS + 0.02:
                    break  # it slid off: the push ends where contact was lost
            g = np.array([*self._block[:2], wrap_angle(self._block[2])])
            edge = BLOCK_RADIUS + PUSHER_RADIUS  # the pusher fits between the T and the walls
            if self._far(s, g) and np.all((edge <= g[:2]) & (g[:2] <= self.arena_size - edge)):
                return s, p, g, self._pusher[:2].copy()
        raise RuntimeError(f"no push from start pose {start} moved the T far enough in 1000 "
                           "tries; give another start, or use goal_mode='pose'")  # fmt: skip

    def _sample_episode(self, options: dict[str, Any]) -> None:
        """Options (all optional): ``start``/``goal`` block poses (x, y, theta), ``pusher`` and
        ``goal_pusher`` (x, y; the goal image's pusher, default parked, or the push's end with
        goal_mode="push"); the rest is sampled from ``self.np_random`` (see the class docstring).
        With goal_mode="push" a ``goal`` option makes a goal_mode="pose" episode."""
        unknown = sorted(set(options) - {"start", "goal", "pusher", "goal_pusher"})
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; accepted: 'start' and 'goal' "
                             "(block poses x, y, theta), 'pusher', 'goal_pusher' (x, y)")  # fmt: skip
        start, goal = (pose_option(options, k, self.arena_size) for k in ("start", "goal"))
        q = np.multiply(PARK_FRACTION, self.arena_size)
        if self.goal_mode == "push" and goal is None:
            s, p, g, q = self._push_goal(start)
        else:
            s, g = self._sample_poses(start, goal)
            p = None
            clear, m = PUSHER_RADIUS + 0.02, PUSHER_RADIUS + 0.02
            for _ in range(0 if "pusher" in options else 1000):
                p = self.np_random.uniform(m, self.arena_size - m, 2)
                if distance_to_block(p, s) >= clear:
                    break
        p = point_option(options, "pusher", s, self.arena_size) if "pusher" in options else p
        q = point_option(options, "goal_pusher", g, self.arena_size) if "goal_pusher" in options else q
        # Only now that every option is valid does the state change.
        self._block, self._goal, self._goal_pusher = np.array([*s, 0.0, 0.0, 0.0]), g, q
        self._pusher = np.array([*p, 0.0, 0.0])
        self._write()
