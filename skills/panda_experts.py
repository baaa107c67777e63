"""Scripted experts for the Panda tasks (reach, push, pick-and-place), for demonstrations
and as a sanity baseline.

Every expert has the :class:`skills.exploration.Policy` interface: ``reset(seed)`` at the start
of an episode (after ``env.reset``), then ``act(obs) -> float32 (4,)`` once per step. They are
*privileged*: ``act`` ignores ``obs`` and reads the simulator through
``env.unwrapped.task_state()`` (see :meth:`robots.panda._PandaTask.task_state`): the keys used
are ``ee`` and ``ee_target`` (actual and commanded end-effector position, m), ``cube`` (3,),
``goal``, ``cube_size``, ``max_step`` and ``gripper_width``. Each expert is a small state
machine that re-checks the scene every step, so it recovers from slips (a cube that drifts off
the push line, or drops out of the gripper, is approached again).

``noise`` adds N(0, noise^2) to every action component (then clips to [-1, 1]), drawn from the
expert's own generator, seeded by ``reset(seed)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPEN, CLOSE = 1.0, -1.0


class _PandaExpert:
    """Common part: privileged state access, proportional moves, noise."""

    def __init__(self, env: Any, noise: float = 0.0) -> None:
        base = getattr(env, "unwrapped", env)
        if not hasattr(base, "task_state"):
            raise ValueError(f"{type(self).__name__} needs a Panda env (robots.panda) with "
                             f"task_state(); got {type(base).__name__}")  # fmt: skip
        if not (np.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise={noise!r} must be a finite number >= 0")
        self.env = env
        self._task = base
        self.noise = float(noise)
        self._rng = np.random.default_rng()  # replaced by reset(seed)
        self.phase = "start"

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: reseed the noise generator and restart the state machine."""
        self._rng = np.random.default_rng(seed)
        self.phase = "start"

    def act(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """float32 (4,) in [-1, 1]: EE displacement (3,) and gripper command."""
        action = self._policy(self._task.task_state())
        if self.noise > 0:
            action = action + self._rng.normal(0.0, self.noise, size=4)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _policy(self, ts: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _move(ts: dict[str, Any], point: np.ndarray, gripper: float) -> np.ndarray:
        """Action that moves the commanded EE target straight towards ``point`` (at most one
        ``max_step`` per axis, direction kept)."""
        delta = (np.asarray(point, np.float64) - ts["ee_target"]) / ts["max_step"]
        delta /= max(1.0, float(np.max(np.abs(delta))))
        return np.array([*delta, gripper])


class PandaReachExpert(_PandaExpert):
    """Straight-line moves of the end effector to the goal (gripper open), then hold."""

    def _policy(self, ts: dict[str, Any]) -> np.ndarray:
        self.phase = "reach"
        return self._move(ts, ts["goal"], OPEN)


class PandaPushExpert(_PandaExpert):
    """Push the cube along the line from cube to goal with the closed fingers.

    Each step: if the fingertips are low and behind the cube on the cube->goal line (within
    ``lateral_tolerance`` m of it), push along the line towards the goal; otherwise lift to a
    safe height, move above a point ``standoff`` m behind the cube's face, and lower there.
    """

    def __init__(self, env: Any, noise: float = 0.0, push_height: float = 0.02,
                 standoff: float = 0.04, lateral_tolerance: float = 0.02) -> None:  # fmt: skip
        super().__init__(env, noise)
        self.push_height = float(push_height)
        self.standoff = float(standoff)
        self.lateral_tolerance = float(lateral_tolerance)

    def _policy(self, ts: dict[str, Any]) -> np.ndarray:
        ee, cube, goal = ts["ee"], ts["cube"][:2], ts["goal"]
        half = ts["cube_size"] / 2
        to_goal = goal - cube
        dist = float(np.linalg.norm(to_goal))
        if dist < 0.2 * ts["success_tolerance"]:
            self.phase = "done"
            return self._move(ts, ts["ee_target"], CLOSE)  # hold still
        u = to_goal / dist
        perp = np.array([-u[1], u[0]])
        rel = ee[:2] - cube
        along, lateral = float(rel @ u), float(rel @ perp)
        low = ee[2] < self.push_height + 0.015
        if low and along < -half and abs(lateral) < self.lateral_tolerance:
            self.phase = "push"
            # Aim the fingers at the point behind the cube on its line to the goal, advanced by
            # up to one step: pushes forward and steers back onto the line at once.
            contact = cube - u * (half + 0.015) + u * min(dist, ts["max_step"])
            return self._move(ts, np.array([*contact, self.push_height]), CLOSE)
        pre = cube - u * (half + self.standoff)
        safe_z = ts["cube_size"] + 0.05
        if np.linalg.norm(ee[:2] - pre) > 0.015:
            if ee[2] < safe_z - 0.01 and np.linalg.norm(rel) < half + 0.08:
                self.phase = "lift"  # near the cube and low: go up before moving sideways
                return self._move(ts, np.array([*ee[:2], safe_z]), CLOSE)
            self.phase = "approach"
            return self._move(ts, np.array([*pre, max(safe_z, min(ee[2], 0.2))]), CLOSE)
        self.phase = "lower"
        return self._move(ts, np.array([*pre, self.push_height]), CLOSE)


class PandaPickPlaceExpert(_PandaExpert):
    """Above the cube, descend with the gripper open, close, lift, carry to the goal, hold.

    The cube's offset in the hand is compensated while carrying (the EE aims at
    ``goal + (ee - cube)``). A cube that leaves the gripper is picked up again.

    Failed grasps on purpose (``miss_prob`` > 0): with that probability per episode, the first
    grasp aims ``miss_offset`` m (drawn uniformly from the range) off the cube's centre in a
    random horizontal direction, closes there and lifts closed for ``miss_lift_steps`` steps
    (phase ``"misslift"``), then grasps as usual. A model trained on the expert alone sees
    almost every closing, rising hand near the cube lift it (bench/RESULTS.md: 921 of 968
    such transitions), and plans with grasps that would fail; these episodes show the hand
    rising without the cube. The miss is drawn from its own stream of ``reset(seed)``, so the
    action noise is the same with or without it. A miss that turns the cube 35-45 degrees on the
    table can leave the expert regrasping across its diagonal until the episode ends (the hand
    does not rotate; 4 of 30 seeds with ``miss_prob=1`` and no noise): more failed grasps.
    """

    def __init__(self, env: Any, noise: float = 0.0, hover: float = 0.08, close_steps: int = 3,
                 miss_prob: float = 0.0, miss_offset: tuple[float, float] = (0.03, 0.05),
                 miss_lift_steps: int = 6) -> None:  # fmt: skip
        super().__init__(env, noise)
        if not 0.0 <= miss_prob <= 1.0:
            raise ValueError(f"miss_prob={miss_prob!r} must be in [0, 1]")
        lo, hi = (float(v) for v in miss_offset)
        if not 0.0 <= lo <= hi:
            raise ValueError(f"miss_offset={list(miss_offset)!r} must be [low, high] with 0 <= low <= high (m)")
        if int(miss_lift_steps) < 1:
            raise ValueError(f"miss_lift_steps={miss_lift_steps!r} must be >= 1")
        self.hover = float(hover)
        self.close_steps = int(close_steps)
        self.miss_prob, self.miss_offset = float(miss_prob), (lo, hi)
        self.miss_lift_steps = int(miss_lift_steps)
        self._closed_for = 0
        self._aim = np.zeros(2)  # horizontal offset of the grasp from the cube's centre (m)
        self._lifted_for = 0
        self._descend_at = np.zeros(2)  # (x, y) where the current descent started (m)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._closed_for = self._lifted_for = 0
        self._aim = np.zeros(2)
        if self.miss_prob > 0:
            rng = np.random.default_rng(None if seed is None else [seed, 0x6D697373])  # "miss" stream
            if rng.uniform() < self.miss_prob:
                angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(*self.miss_offset)
                self._aim = dist * np.array([np.cos(angle), np.sin(angle)])

    @property
    def missing(self) -> bool:
        """Whether the current grasp aims off the cube on purpose."""
        return bool(np.any(self._aim != 0))

    def _policy(self, ts: dict[str, Any]) -> np.ndarray:
        ee, cube, goal = ts["ee"], ts["cube"], ts["goal"]
        half = ts["cube_size"] / 2
        in_hand = np.linalg.norm(ee - cube) < 0.02 and ts["gripper_width"] < ts["cube_size"] + 0.01
        if self.phase == "misslift":
            self._lifted_for += 1
            if self._lifted_for > self.miss_lift_steps:
                self.phase, self._aim = "start", np.zeros(2)  # missed once: grasp for real now
            else:
                return self._move(ts, ts["ee_target"] + np.array([0.0, 0.0, ts["max_step"]]), CLOSE)
        if self.phase == "carry" and not in_hand:
            self.phase = "start"  # dropped it: start over
        if self.phase == "close":
            self._closed_for += 1
            if self._closed_for >= self.close_steps:
                self.phase, self._lifted_for = "misslift" if self.missing else "carry", 0
            return self._move(ts, ts["ee_target"], CLOSE)
        if self.phase == "carry":
            offset = ee - cube  # the cube's place in the hand
            travel_z = max(goal[2], half + 0.05)
            if np.linalg.norm(cube[:2] - goal[:2]) > 0.02:
                if cube[2] < travel_z - 0.01:  # lift first, then travel
                    return self._move(ts, np.array([*ee[:2], travel_z + offset[2]]), CLOSE)
                return self._move(ts, np.array([*(goal[:2] + offset[:2]), ee[2]]), CLOSE)
            return self._move(ts, goal + offset, CLOSE)
        # Approach: above the grasp point, then straight down to grasp height (EE at the cube
        # centre's height; the grasp point is the cube's centre unless this grasp misses).
        aim = cube[:2] + self._aim
        above = np.array([*aim, cube[2] + self.hover])
        xy_err = np.linalg.norm(ee[:2] - aim)
        if self.missing and self.phase == "descend":
            # A miss goes down where it aimed even if a finger nudges the cube, and closes at
            # grasp height or where a finger lands on the cube (the hand lags its command).
            grasp = np.array([*self._descend_at, half])
            if ee[2] < half + 0.008 or ts["ee_target"][2] < ee[2] - 0.015:
                self.phase, self._closed_for = "close", 0
                return self._move(ts, ts["ee_target"], CLOSE)
            return self._move(ts, grasp, OPEN)
        grasp = np.array([*aim, max(cube[2], half)])
        if self.phase != "descend" or xy_err > 0.02:
            self.phase = "above"
            if xy_err < 0.008 and abs(ee[2] - above[2]) < 0.02:
                self.phase, self._descend_at = "descend", aim
            return self._move(ts, above if ee[2] > cube[2] + 0.03 or xy_err < 0.03 else
                              np.array([*ee[:2], above[2]]), OPEN)  # fmt: skip
        if np.linalg.norm(ee - grasp) < 0.008:
            self.phase, self._closed_for = "close", 0
            return self._move(ts, ts["ee_target"], CLOSE)
        return self._move(ts, grasp, OPEN)


PANDA_EXPERTS = {
    "panda_reach": PandaReachExpert,
    "panda_push": PandaPushExpert,
    "panda_pick_place": PandaPickPlaceExpert,
}
