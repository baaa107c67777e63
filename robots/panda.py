"""Goal-conditioned Franka Panda tasks in PyBullet: reach, push, pick-and-place.

All three are :class:`robots.base.BulletGoalEnv` envs sharing one scene (see
:mod:`robots.panda_scene` for the world frame, workspace box and rendering notes) and one
action space, float32 (4,) in [-1, 1]:

- ``action[:3]``: end-effector (EE) displacement; 1 moves ``max_step`` metres per control tick.
  It is added to the commanded EE target (kept within ``2 max_step`` of the real EE, so a
  blocked arm does not wind up), which is clipped to the workspace box above the table
  (``WORKSPACE_LOW``/``WORKSPACE_HIGH``), solved by IK with the hand pointing straight down,
  clipped to the URDF joint limits, and tracked by position control with the URDF force and
  velocity limits (the joint step per tick is scaled down to what the velocity limits allow);
- ``action[3]``: gripper, -1 fully closed .. +1 fully open (8 cm); each finger's target is
  ``(action[3] + 1) / 2 * 0.04`` m. :class:`PandaPushEnv` ignores it and holds the gripper shut.

One env step is ``action_repeat`` control ticks of ``physics_substeps`` physics steps (1/240 s).
Reward is ``-distance``; ``terminated`` is always False; ``truncated`` at ``max_episode_steps``.

Observation ``state`` (float32, metres, m/s):

- reach (7,): ``[ee_x, ee_y, ee_z, gripper_width, ee_vx, ee_vy, ee_vz]``;
- push and pick-place (14,): the same, then ``[cube_x, cube_y, cube_z, cube_qx, cube_qy,
  cube_qz, cube_qw]`` (cube centre and orientation quaternion).

The goal image shows the task achieved by the scene itself, never a marker: reach, the arm at
an IK configuration with the EE at the goal (gripper open); push, the cube at the goal (edges
along the axes) and the arm at its home pose (gripper closed); pick-and-place, the arm holding
the cube (fingers at the cube's width) with cube and EE at the goal. It is a function of the
goal only, so :meth:`set_state` can rebuild it.

Determinism: ``get_state``/``set_state`` are exact, and a :meth:`clone` synced with
``set_state`` continues bit for bit like the original. Two PyBullet habits needed care (see
:class:`robots.panda_scene.BodyStates`): the contact cache (warm-start impulses) is history the
state cannot hold, so every step starts without it; and orientations do not round-trip
exactly, so between steps the simulator is always re-set from the numbers ``get_state``
returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from robots.base import TIME_STEP, BulletGoalEnv, Camera, check_positive
from robots.panda_scene import (
    CAMERAS,
    FINGER_MAX,
    HOME_Q,
    TABLE_REGION_HIGH,
    TABLE_REGION_LOW,
    WORKSPACE_HIGH,
    WORKSPACE_LOW,
    BodyStates,
    Panda,
    make_cube,
    make_table,
)

GRAVITY = -9.81  # m/s^2
# EE start positions (before any goal): a box around the home pose, high above the table.
_START_LOW = np.array([0.4, -0.05, 0.22])
_START_HIGH = np.array([0.5, 0.05, 0.28])


class _PandaTask(BulletGoalEnv):
    """Shared Panda machinery; subclasses set the goal semantics (see the module docstring)."""

    HAS_CUBE = False
    GOAL_DIM = 3
    HOLD_GRIPPER_CLOSED = False

    def _setup(self, kwargs: dict[str, Any]) -> None:
        """Common constructor: ``kwargs`` are the subclass's constructor arguments."""
        k = {n: v for n, v in kwargs.items() if n not in ("self", "__class__")}
        if k["camera_view"] not in CAMERAS:
            raise ValueError(f"camera_view={k['camera_view']!r} is unknown; use one of "
                             f"{sorted(CAMERAS)}")  # fmt: skip
        self.max_step = float(k["max_step"])
        self.success_tolerance = float(k["success_tolerance"])
        self.min_goal_distance = float(k["min_goal_distance"])
        self.cube_size = float(k.get("cube_size", 0.05))
        check_positive(max_step=self.max_step, success_tolerance=self.success_tolerance)
        if self.max_step > 0.06:
            raise ValueError(f"max_step={self.max_step} m per tick is faster than the arm can "
                             f"track; use <= 0.06")  # fmt: skip
        if not 0.02 <= self.cube_size <= 0.06:
            raise ValueError(f"cube_size={self.cube_size} m must be in [0.02, 0.06] (the "
                             f"gripper opens to 0.08 m)")  # fmt: skip
        if not 0 <= self.min_goal_distance <= 0.3:
            raise ValueError(f"min_goal_distance={self.min_goal_distance} m must be in [0, 0.3]")
        self._init_base(
            k, action_dim=4, state_dim=14 if self.HAS_CUBE else 7, image_size=k["image_size"],
            max_episode_steps=k["max_episode_steps"], action_repeat=k["action_repeat"],
            physics_substeps=k["physics_substeps"], render_mode=k["render_mode"],
            camera=Camera.from_config(CAMERAS[k["camera_view"]], k["camera"]),
        )  # fmt: skip
        c = self._client
        c.setGravity(0, 0, GRAVITY)
        self._table = make_table(c)
        self.robot = Panda(c)
        self._cube = make_cube(c, self.cube_size, mass=0.1, friction=1.0) if self.HAS_CUBE else None
        self._goal = np.zeros(self.GOAL_DIM)
        self._goal_state = np.zeros(self.observation_space["state"].shape, np.float32)
        # Put everything somewhere valid so get_state()/render() work before the first reset.
        self.robot.place_ee(np.array([0.45, 0.0, 0.25]), FINGER_MAX)
        if self._cube is not None:
            self._place_cube(np.array([0.5, 0.0, self.cube_size / 2]))
        self._bodies = BodyStates(c, [self.robot.body] + ([self._cube] if self.HAS_CUBE else []))
        self._ee_target = self.robot.ee_pose()[0]  # the commanded EE position (m)

    # ------------------------------------------------------------------ physics
    def _finger_target(self, command: float) -> float:
        return 0.0 if self.HOLD_GRIPPER_CLOSED else (float(command) + 1.0) / 2.0 * FINGER_MAX

    def _advance_physics(self, action: np.ndarray) -> None:
        self._bodies.forget_contacts()
        tick_s = self.physics_substeps * TIME_STEP
        max_lag = 2.0 * self.max_step
        for _ in range(self.action_repeat):
            # The commanded EE target integrates the displacements (so holding still does not
            # drift with IK residuals), but stays within max_lag of the real EE (no wind-up
            # when the arm is blocked) and inside the workspace box.
            ee, _ = self.robot.ee_pose()
            target = self._ee_target + action[:3] * self.max_step
            lag = target - ee
            norm = np.linalg.norm(lag)
            if norm > max_lag:
                target = ee + lag * (max_lag / norm)
            self._ee_target = np.clip(target, WORKSPACE_LOW, WORKSPACE_HIGH)
            self.robot.command(self._ee_target, self._finger_target(action[3]), tick_s)
            for _ in range(self.physics_substeps):
                self._client.stepSimulation()
        self._bodies.canonicalize()

    def _place_cube(self, pos: np.ndarray, yaw: float = 0.0) -> None:
        quat = self._client.getQuaternionFromEuler([0.0, 0.0, float(yaw)])
        self._client.resetBasePositionAndOrientation(self._cube, [float(v) for v in pos], quat)
        self._client.resetBaseVelocity(self._cube, [0, 0, 0], [0, 0, 0])

    def _cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pos, quat = self._client.getBasePositionAndOrientation(self._cube)
        return np.array(pos, np.float64), np.array(quat, np.float64)

    # ------------------------------------------------------------------ state
    def _state_vector(self) -> np.ndarray:
        ee, vel = self.robot.ee_pose()
        width = self.robot.finger_positions().sum()
        parts = [ee, [width], vel]
        if self._cube is not None:
            parts += list(self._cube_pose())
        return np.concatenate(parts).astype(np.float32)

    def _goal_state_vector(self) -> np.ndarray:
        return self._goal_state.copy()

    def get_state(self) -> np.ndarray:
        """float64: robot body state (37,) [base pose/velocity, 12 joint positions, 12 joint
        velocities], cube body state (13,) (push/pick-place only), commanded EE target (3,),
        goal (GOAL_DIM,), step count."""
        return np.concatenate([*self._bodies.snapshot, self._ee_target, self._goal, [self._steps]])

    def set_state(self, state: np.ndarray) -> None:
        """Restore a :meth:`get_state` vector exactly (the goal image is rebuilt if the goal
        differs)."""
        state = np.asarray(state, dtype=np.float64)
        sizes = [len(s) for s in self._bodies.snapshot]
        m = sum(sizes)
        n = m + 3 + self.GOAL_DIM + 1
        if state.shape != (n,) or not np.all(np.isfinite(state)):
            raise ValueError(f"state has shape {state.shape}; expected finite ({n},) from "
                             f"get_state() of a {type(self).__name__}")  # fmt: skip
        self._bodies.restore(np.split(state[:m].copy(), np.cumsum(sizes)[:-1]))
        self._ee_target = state[m : m + 3].copy()
        goal = state[m + 3 : n - 1]
        if not np.array_equal(goal, self._goal) or self._goal_pixels is None:
            self._goal = goal.copy()
            self._set_goal_pixels(self._render_goal())
        self._steps = int(state[-1])

    def task_state(self) -> dict[str, Any]:
        """Privileged task state for scripted experts (not for learned controllers):
        ``ee`` (3,) m, ``ee_velocity`` (3,) m/s, ``ee_target`` (3,) the commanded EE position
        the next action's displacement is added to, ``gripper_width`` m, ``goal`` (GOAL_DIM,),
        ``cube`` (3,) / ``cube_quat`` (4,) (None without a cube), and the constants
        ``cube_size``, ``max_step``, ``success_tolerance``, ``workspace_low/high`` (3,)."""
        ee, vel = self.robot.ee_pose()
        cube, quat = self._cube_pose() if self._cube is not None else (None, None)
        return {
            "ee": ee, "ee_velocity": vel, "ee_target": self._ee_target.copy(),
            "gripper_width": float(self.robot.finger_positions().sum()),
            "goal": self._goal.copy(), "cube": cube, "cube_quat": quat,
            "cube_size": self.cube_size, "max_step": self.max_step,
            "success_tolerance": self.success_tolerance,
            "workspace_low": WORKSPACE_LOW.copy(), "workspace_high": WORKSPACE_HIGH.copy(),
        }  # fmt: skip

    # ------------------------------------------------------------------ episodes
    def _goal_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of valid goals, (GOAL_DIM,) each."""
        raise NotImplementedError

    def _sample_goal(self) -> np.ndarray:
        raise NotImplementedError

    def _pose_goal_scene(self) -> None:
        """Teleport robot (and cube) into the goal configuration (state is restored after)."""
        raise NotImplementedError

    def _validate_goal(self, goal: Any) -> np.ndarray:
        low, high = self._goal_bounds()
        arr = np.asarray(goal, dtype=np.float64).reshape(-1)
        if arr.shape != (self.GOAL_DIM,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"options['goal']={goal!r} must be {self.GOAL_DIM} finite numbers "
                             f"(metres)")  # fmt: skip
        if np.any(arr < low - 1e-9) or np.any(arr > high + 1e-9):
            raise ValueError(f"options['goal']={tuple(arr.tolist())} is outside the workspace: "
                             f"need {low.tolist()} <= goal <= {high.tolist()} "
                             f"(metres)")  # fmt: skip
        return arr

    def _sample_episode(self, options: dict[str, Any]) -> None:
        unknown = set(options) - {"goal"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; accepted: ['goal']")
        goal = options.get("goal")
        self._goal = self._sample_goal() if goal is None else self._validate_goal(goal)
        self._place_start()
        self._bodies.canonicalize()
        self._ee_target = self.robot.ee_pose()[0]

    def _place_start(self) -> None:
        """Arm at a random EE start above the table, gripper open (closed for push)."""
        start = self.np_random.uniform(_START_LOW, _START_HIGH)
        self.robot.place_ee(start, self._finger_target(1.0))

    def _sample_away(self, draw: Callable[[], np.ndarray]) -> np.ndarray:
        """``draw()`` again until the point is ``min_goal_distance`` from the goal (compared
        over the goal's dimensions; at most 100 tries, the box is roomy)."""
        point = draw()
        for _ in range(100):
            if np.linalg.norm(point[: self.GOAL_DIM] - self._goal) >= self.min_goal_distance:
                break
            point = draw()
        return point

    def _render_goal(self) -> np.ndarray:
        self._pose_goal_scene()
        img = self.render()
        goal_state = self._state_vector()
        # The task's entries are the exact goal (IK leaves the EE up to ~1 mm off it).
        first = 0 if self._cube is None else 7  # EE (reach) or cube (push, pick-place)
        goal_state[first : first + self.GOAL_DIM] = self._goal
        self._goal_state = goal_state
        self._bodies.restore()
        return img

    def _error(self) -> np.ndarray:
        raise NotImplementedError

    def _goal_distance(self) -> float:
        return float(np.linalg.norm(self._error()))

    def _is_success(self) -> bool:
        return self._goal_distance() < self.success_tolerance

    def _info(self) -> dict[str, Any]:
        """The base info, and with a cube ``object_out_of_reach``: its centre lies past the hand's
        horizontal workspace (``WORKSPACE_LOW/HIGH``), where no action can fetch it back."""
        info = super()._info()
        if self._cube is not None:
            xy = self._cube_pose()[0][:2]
            info["object_out_of_reach"] = bool(np.any(xy < WORKSPACE_LOW[:2]) or np.any(xy > WORKSPACE_HIGH[:2]))
        return info


class PandaReachEnv(_PandaTask):
    """Move the end effector to a goal point: success when within ``success_tolerance`` m.

    ``reset(options={"goal": (x, y, z)})``: goal in the workspace box
    ``WORKSPACE_LOW <= goal <= WORKSPACE_HIGH``; sampled goals and starts lie in a slightly
    smaller box and are at least ``min_goal_distance`` m apart.
    """

    _SAMPLE_LOW = np.array([0.3, -0.25, 0.05])
    _SAMPLE_HIGH = np.array([0.7, 0.25, 0.4])

    def __init__(self, image_size: int = 64, max_episode_steps: int = 50, action_repeat: int = 1,
                 physics_substeps: int = 20, camera: dict[str, Any] | None = None,
                 camera_view: str = "front", render_mode: str = "rgb_array",
                 max_step: float = 0.03, success_tolerance: float = 0.03,
                 min_goal_distance: float = 0.1) -> None:  # fmt: skip
        self._setup(locals())

    def _goal_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return WORKSPACE_LOW.copy(), WORKSPACE_HIGH.copy()

    def _sample_goal(self) -> np.ndarray:
        return self.np_random.uniform(self._SAMPLE_LOW, self._SAMPLE_HIGH)

    def _place_start(self) -> None:
        start = self._sample_away(
            lambda: self.np_random.uniform(self._SAMPLE_LOW, self._SAMPLE_HIGH)
        )
        self.robot.place_ee(start, FINGER_MAX)

    def _pose_goal_scene(self) -> None:
        self.robot.place_ee(self._goal, FINGER_MAX)

    def _error(self) -> np.ndarray:
        return self.robot.ee_pose()[0] - self._goal


class PandaPushEnv(_PandaTask):
    """Push a cube across the table to a goal (x, y): success when the cube centre is within
    ``success_tolerance`` m of it. The gripper is held closed (``action[3]`` is ignored).

    ``reset(options={"goal": (x, y)})``: goal inside the workspace's (x, y) box. Sampled cube
    starts and goals lie in ``TABLE_REGION_LOW/HIGH``, ``min_goal_distance`` m or more apart.
    """

    HAS_CUBE = True
    GOAL_DIM = 2
    HOLD_GRIPPER_CLOSED = True

    def __init__(self, image_size: int = 64, max_episode_steps: int = 100, action_repeat: int = 1,
                 physics_substeps: int = 20, camera: dict[str, Any] | None = None,
                 camera_view: str = "front", render_mode: str = "rgb_array",
                 max_step: float = 0.03, success_tolerance: float = 0.05, cube_size: float = 0.05,
                 min_goal_distance: float = 0.1) -> None:  # fmt: skip
        self._setup(locals())

    def _goal_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return WORKSPACE_LOW[:2].copy(), WORKSPACE_HIGH[:2].copy()

    def _sample_goal(self) -> np.ndarray:
        return self.np_random.uniform(TABLE_REGION_LOW, TABLE_REGION_HIGH)

    def _place_start(self) -> None:
        super()._place_start()
        xy = self._sample_away(lambda: self.np_random.uniform(TABLE_REGION_LOW, TABLE_REGION_HIGH))
        self._place_cube(np.array([*xy, self.cube_size / 2]))

    def _pose_goal_scene(self) -> None:
        self.robot.set_configuration(np.array(HOME_Q), 0.0)
        self._place_cube(np.array([*self._goal, self.cube_size / 2]))

    def _error(self) -> np.ndarray:
        return self._cube_pose()[0][:2] - self._goal


class PandaPickPlaceEnv(_PandaTask):
    """Pick up a cube and bring its centre to a goal (x, y, z), in the air or on the table:
    success when within ``success_tolerance`` m.

    ``reset(options={"goal": (x, y, z)})``: (x, y) inside the workspace box, z between
    ``cube_size / 2`` (resting on the table) and the workspace top. Sampled goals have (x, y)
    in ``TABLE_REGION_LOW/HIGH``; with probability ``air_goal_prob`` z is in the air
    (up to 0.25 m), otherwise on the table; cube start and goal are ``min_goal_distance`` apart.
    """

    HAS_CUBE = True
    GOAL_DIM = 3

    def __init__(self, image_size: int = 64, max_episode_steps: int = 100, action_repeat: int = 1,
                 physics_substeps: int = 20, camera: dict[str, Any] | None = None,
                 camera_view: str = "front", render_mode: str = "rgb_array",
                 max_step: float = 0.03, success_tolerance: float = 0.05, cube_size: float = 0.05,
                 min_goal_distance: float = 0.1, air_goal_prob: float = 0.5) -> None:  # fmt: skip
        self.air_goal_prob = float(air_goal_prob)
        if not 0 <= self.air_goal_prob <= 1:
            raise ValueError(f"air_goal_prob={air_goal_prob} must be in [0, 1]")
        self._setup(locals())

    def _goal_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([*WORKSPACE_LOW[:2], self.cube_size / 2]), WORKSPACE_HIGH.copy()

    def _sample_goal(self) -> np.ndarray:
        rng, half = self.np_random, self.cube_size / 2
        xy = rng.uniform(TABLE_REGION_LOW, TABLE_REGION_HIGH)
        z = rng.uniform(half + 0.05, 0.25) if rng.uniform() < self.air_goal_prob else half
        return np.array([*xy, z])

    def _place_start(self) -> None:
        super()._place_start()
        half = self.cube_size / 2
        xyz = self._sample_away(lambda: np.array(
            [*self.np_random.uniform(TABLE_REGION_LOW, TABLE_REGION_HIGH), half]))  # fmt: skip
        self._place_cube(xyz)

    def _pose_goal_scene(self) -> None:
        self.robot.place_ee(self._goal, self.cube_size / 2)
        self._place_cube(self._goal)

    def _error(self) -> np.ndarray:
        return self._cube_pose()[0] - self._goal
