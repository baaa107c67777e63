"""A scripted pushing expert for :class:`robots.push_t.PushTEnv` (privileged state, no model).

Every step the expert

1. reads the pusher, block and goal poses from ``env.unwrapped.task_state()`` and the
   arena/tolerances/speed from ``env.unwrapped.arena_size``, ``.success_pos_tol``,
   ``.success_angle_tol`` (rad) and ``.max_speed`` (the geometry constants come from
   :mod:`robots.push_t`);
2. predicts, for ~80 contact points on the T's outline, how the block would move if pushed
   there along the inward normal, with the quasi-static ellipsoidal limit-surface model of
   Lynch et al. (sticking or sliding contact, constant body twist over the push), and the best
   push length for its cost ``J = hypot(dp / pos_tol, dtheta / angle_tol)``;
3. prices each push by the pusher's path to a staging point 1 cm outside the contact, found
   in a visibility graph around the T's convex corners (so it never brushes the block on the
   way) and inside the arena;
4. keeps pushing where it touches while that is nearly the best improvement per metre of
   pusher travel (at 30 % speed once J < 1.5); otherwise goes round the block to the best
   staging point and pushes there.

When no push improves J (the T is stuck against a wall, or a local minimum) it pushes the T
towards the arena centre until the pusher fits round it again, then resumes; the position
error alone is the last resort. It holds still once both errors are below ``done_fraction``
of the env's tolerances (default 1: as soon as the env reports success). No simulator, clone
or learned model is consulted: the pushing model above is a few lines of closed-form algebra.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robots.push_t import (
    BLOCK_BOXES,
    PUSHER_BLOCK_FRICTION,
    PUSHER_RADIUS,
    distance_to_block,
    wrap_angle,
)

_GAP = 0.01  # staging point: this far (m) from the T's surface, outside the contact
_CLEAR = PUSHER_RADIUS + 0.004  # paths keep the pusher's centre this far from the T
_CORNER = PUSHER_RADIUS + 0.012  # graph nodes sit this far outside each convex corner (per axis)
_LENGTHS = np.array([0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.18, 0.25, 0.35])
_SLOW_WITHIN, _SLOW_SPEED = 1.5, 0.3  # gentle pushes (30 % speed) when J < 1.5
_SWITCH_COST = 0.05  # m of extra travel charged for leaving the current contact
_LIMIT_SURFACE = 0.08  # m: torque/force ratio of the T's floor friction (fitted to the env)
_T_CORNERS = np.array(
    [
        [cx + sx * hx, cy + sy * hy]
        for cx, cy, hx, hy in BLOCK_BOXES
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
)  # (8, 2), block frame


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _contact_candidates(spacing: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Block-frame contact points (K, 2) on the T's outline and their outward normals (K, 2):
    every rectangle edge sampled every ``spacing`` m (not within 8 mm of a corner), keeping
    points where the disc can touch without overlapping the T elsewhere."""
    points, normals = [], []
    for cx, cy, hx, hy in BLOCK_BOXES:
        for axis, sign in ((0, 1), (0, -1), (1, 1), (1, -1)):
            half_len = hy if axis == 0 else hx
            ts = np.arange(-half_len + 0.008, half_len - 0.008 + 1e-9, spacing)
            n = np.zeros(2)
            n[axis] = sign
            base = np.array([cx, cy]) + n * (hx, hy)[axis]
            along = np.array([0.0, 1.0]) if axis == 0 else np.array([1.0, 0.0])
            for t in ts:
                points.append(base + t * along)
                normals.append(n.copy())
    c, n = np.array(points), np.array(normals)
    origin = np.zeros(3)
    touch_ok = distance_to_block(c + n * PUSHER_RADIUS, origin) >= PUSHER_RADIUS - 1e-9
    stage_ok = distance_to_block(c + n * (PUSHER_RADIUS + _GAP), origin) >= _CLEAR + 1e-3
    keep = touch_ok & stage_ok
    return c[keep], n[keep]


def _corner_nodes() -> np.ndarray:
    """Block-frame graph nodes (M, 2) just outside the T's convex corners."""
    nodes = []
    origin = np.zeros(3)
    for cx, cy, hx, hy in BLOCK_BOXES:
        for sx in (-1, 1):
            for sy in (-1, 1):
                node = np.array([cx + sx * (hx + _CORNER), cy + sy * (hy + _CORNER)])
                if distance_to_block(node, origin) >= _CORNER - 1e-9:
                    nodes.append(node)
    return np.array(nodes)


def unit_twists(
    c: np.ndarray, n: np.ndarray, cls: float = _LIMIT_SURFACE, mu: float = PUSHER_BLOCK_FRICTION
) -> np.ndarray:
    """Block-frame twists (K, 3) = (vx, vy, omega) per metre the pusher moves along -n at
    contact points c (K, 2): the quasi-static ellipsoidal limit-surface model, sticking when the
    needed contact force is inside the friction cone, else sliding on the cone's edge."""
    d = -n
    t = np.stack([-d[:, 1], d[:, 0]], 1)
    cx, cy, dx, dy = c[:, 0], c[:, 1], d[:, 0], d[:, 1]
    k2 = cls * cls
    den = k2 + cx * cx + cy * cy
    vx = ((k2 + cx * cx) * dx + cx * cy * dy) / den
    vy = (cx * cy * dx + (k2 + cy * cy) * dy) / den
    stick = np.stack([vx, vy, (cx * vy - cy * vx) / k2], 1)
    f_n, f_t = vx * dx + vy * dy, vx * t[:, 0] + vy * t[:, 1]
    f = d + (np.sign(f_t) * mu)[:, None] * t
    slide = np.stack([f[:, 0], f[:, 1], (cx * f[:, 1] - cy * f[:, 0]) / k2], 1)
    # Scale so the contact point's normal velocity equals the pusher's.
    normal_speed = (slide[:, 0] - slide[:, 2] * cy) * dx + (slide[:, 1] + slide[:, 2] * cx) * dy
    slide /= normal_speed[:, None]
    return np.where((np.abs(f_t) > mu * f_n)[:, None], slide, stick)


def _segments_clear(a: np.ndarray, b: np.ndarray, pose: np.ndarray, clear: float) -> np.ndarray:
    """bool (...): whether world segments a -> b (..., 2) stay at least ``clear`` m from the T
    at ``pose`` (exact segment-rectangle distances)."""
    r = _rot(pose[2])
    la, lb = (a - pose[:2]) @ r, (b - pose[:2]) @ r
    la, lb = np.broadcast_arrays(la, lb)
    d = lb - la
    dd = np.maximum((d * d).sum(-1), 1e-18)[..., None]
    centre, half = BLOCK_BOXES[:, :2], BLOCK_BOXES[:, 2:]  # (2, 2) each
    # Distance from each end to each rectangle, and from each corner to the segment.
    ends = np.stack([la, lb], -2)[..., :, None, :]  # (..., 2 ends, 1, 2)
    dist = np.linalg.norm(np.maximum(np.abs(ends - centre) - half, 0), axis=-1).min((-2, -1))
    rel = _T_CORNERS - la[..., None, :]  # (..., 8, 2)
    t = np.clip((rel * d[..., None, :]).sum(-1, keepdims=True) / dd[..., None], 0.0, 1.0)
    dist = np.minimum(dist, np.linalg.norm(rel - t * d[..., None, :], axis=-1).min(-1))
    # A segment crossing a rectangle (slab test) is at distance 0.
    la4, d4 = la[..., None, :], d[..., None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (centre - half - la4) / d4, (centre + half - la4) / d4
    inside = np.abs(la4 - centre) <= half
    tmin = np.where(d4 == 0, np.where(inside, -np.inf, np.inf), np.minimum(t0, t1))
    tmax = np.where(d4 == 0, np.where(inside, np.inf, -np.inf), np.maximum(t0, t1))
    cross = np.maximum(tmin.max(-1), 0.0) <= np.minimum(tmax.min(-1), 1.0)  # (..., 2)
    return ~cross.any(-1) & (dist >= clear)


class PushTExpert:
    """Scripted pusher for :class:`robots.push_t.PushTEnv` (see the module docstring).

    Args:
        env: a PushTEnv (or a wrapper of one); its ``unwrapped`` is read every step.
        noise: std of Gaussian noise added to each action before clipping (0 = deterministic).
        done_fraction: hold still once both errors are within this fraction of the env's
            tolerances (1: as soon as the env reports success).
    """

    def __init__(self, env: Any, noise: float = 0.0, done_fraction: float = 1.0) -> None:
        base = getattr(env, "unwrapped", env)
        if not callable(getattr(base, "task_state", None)):
            raise ValueError(f"PushTExpert needs a PushTEnv (with task_state()); got "
                             f"{type(base).__name__}")  # fmt: skip
        if not noise >= 0:
            raise ValueError(f"noise={noise!r} must be >= 0")
        if not 0 < done_fraction <= 1:
            raise ValueError(f"done_fraction={done_fraction!r} must be in (0, 1]")
        self.env, self._base = env, base
        self.noise, self.done_fraction = float(noise), float(done_fraction)
        self._c, self._n = _contact_candidates()
        self._twists = unit_twists(self._c, self._n)
        self._nodes = _corner_nodes()
        self._rng = np.random.default_rng()
        self._target: tuple[int, int] | None = None  # (objective, candidate)
        self._recover = False  # pushing the T off a wall

    def reset(self, seed: int | None = None) -> None:
        """Start an episode; ``seed`` seeds the action noise."""
        self._rng = np.random.default_rng(seed)
        self._target = None
        self._recover = False

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action float32 (2,) in [-1, 1] for the env's current state (``obs`` is not needed)."""
        action = self._control()
        if self.noise > 0:
            action = action + self.noise * self._rng.normal(size=2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ internals
    def _cost(self, xy: np.ndarray, theta: np.ndarray, goal: np.ndarray, mode: int) -> np.ndarray:
        """The objective of ``mode``, in units of the tolerances: 0 = both errors to the goal,
        1 = the position error only, 2 = distance to the arena centre (to get off a wall)."""
        b = self._base
        if mode == 2:
            return np.linalg.norm(xy - b.arena_size / 2, axis=-1) / b.success_pos_tol
        dp = np.linalg.norm(xy - goal[:2], axis=-1) / b.success_pos_tol
        if mode == 1:
            return dp
        return np.hypot(dp, np.abs(wrap_angle(theta - goal[2])) / b.success_angle_tol)

    def _best_push(
        self, twists: np.ndarray, block: np.ndarray, goal: np.ndarray, mode: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cost decrease (K,), best push length (K,) in m) for block-frame unit twists; pushes
        that would drive a corner of the T further into a wall are ruled out."""
        vx, vy, w = (twists[:, i, None] for i in range(3))
        a = w * _LENGTHS  # (K, L) rotation after each push length
        small = np.abs(a) < 1e-9
        safe_w = np.where(np.abs(w) < 1e-12, 1.0, w)
        dx = np.where(small, vx * _LENGTHS, (np.sin(a) * vx - (1 - np.cos(a)) * vy) / safe_w)
        dy = np.where(small, vy * _LENGTHS, ((1 - np.cos(a)) * vx + np.sin(a) * vy) / safe_w)
        xy = block[:2] + np.stack([dx, dy], -1) @ _rot(block[2]).T  # (K, L, 2)
        theta = block[2] + a
        cost = self._cost(xy, theta, goal, mode)
        c, s = np.cos(theta)[..., None], np.sin(theta)[..., None]
        cx, cy = _T_CORNERS[:, 0], _T_CORNERS[:, 1]
        corners = np.stack([xy[..., :1] + c * cx - s * cy, xy[..., 1:] + s * cx + c * cy], -1)
        now = _T_CORNERS @ _rot(block[2]).T + block[:2]
        size = self._base.arena_size
        into_wall = np.maximum(np.maximum(-corners, corners - size), 0.0).sum((-2, -1))
        into_wall_now = np.maximum(np.maximum(-now, now - size), 0.0).sum()
        cost = np.where(into_wall > into_wall_now + 1e-4, np.inf, cost)
        best = cost.argmin(1)
        j0 = self._cost(block[:2], block[2], goal, mode)
        return j0 - cost[np.arange(len(cost)), best], _LENGTHS[best]

    def _paths(
        self, p: np.ndarray, targets: np.ndarray, block: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(path length (K,), first waypoint (K, 2)) from the pusher p (2,) to each world
        target (K, 2) round the T; inf length where unreachable inside the arena."""
        size, r = self._base.arena_size, _rot(block[2])
        nodes = self._nodes @ r.T + block[:2]
        inside = np.all((nodes > PUSHER_RADIUS + 0.003) & (nodes < size - PUSHER_RADIUS - 0.003), 1)
        pts = np.concatenate([p[None], nodes])  # 0 = pusher, 1.. = corner nodes
        ok = _segments_clear(pts[:, None], pts[None], block, _CLEAR)
        ok[:, 1:] &= inside[None]
        ok[1:, :] &= inside[:, None]
        dist = np.where(ok, np.linalg.norm(pts[:, None] - pts[None], axis=-1), np.inf)
        np.fill_diagonal(dist, 0.0)
        nxt = np.tile(np.arange(len(pts)), (len(pts), 1))
        for k in range(len(pts)):  # Floyd-Warshall with next hops
            via = dist[:, k, None] + dist[None, k, :]
            better = via < dist
            dist = np.where(better, via, dist)
            nxt = np.where(better, nxt[:, k, None], nxt)
        to_t = _segments_clear(pts[:, None], targets[None], block, _CLEAR)
        total = np.where(to_t, dist[0][:, None] + np.linalg.norm(pts[:, None] - targets[None], axis=-1),
                         np.inf)  # fmt: skip
        best = total.argmin(0)
        length = total[best, np.arange(len(targets))]
        hop = np.where(best == 0, -1, nxt[0, best])
        first = np.where((hop < 0)[:, None], targets, pts[np.maximum(hop, 0)])
        return length, first

    def _control(self) -> np.ndarray:
        b = self._base
        state = b.task_state()
        p, block, goal = state["pusher"][:2], state["block"][:3], state["goal"]
        dp, dth = np.hypot(*(block[:2] - goal[:2])), abs(wrap_angle(block[2] - goal[2]))
        if (dp <= self.done_fraction * b.success_pos_tol
                and dth <= self.done_fraction * b.success_angle_tol):  # fmt: skip
            self._target = None
            return np.zeros(2)
        r = _rot(block[2])
        stages = (self._c + self._n * (PUSHER_RADIUS + _GAP)) @ r.T + block[:2]
        lo, hi = PUSHER_RADIUS + 0.003, b.arena_size - PUSHER_RADIUS - 0.003
        travel, first = self._paths(p, stages, block)
        travel = np.where(np.all((stages > lo) & (stages < hi), 1), travel, np.inf)
        # Greedy in the full objective. When no push improves it (the T is stuck against a
        # wall) recover: push the T towards the arena centre until the pusher fits round it
        # again, then resume; the position error alone is the last resort.
        corners = _T_CORNERS @ r.T + block[:2]
        clearance = np.min(np.minimum(corners, b.arena_size - corners))
        if self._recover and clearance > 2 * PUSHER_RADIUS + 0.02:
            self._recover = False
        for mode in (2, 1) if self._recover else (0, 2, 1):
            action = self._plan(mode, p, block, goal, travel, first)
            if action is not None:
                self._recover = mode != 0
                return action
        return np.zeros(2)

    def _plan(
        self,
        mode: int,
        p: np.ndarray,
        block: np.ndarray,
        goal: np.ndarray,
        travel: np.ndarray,
        first: np.ndarray,
    ) -> np.ndarray | None:
        """The action for objective ``mode``, or None if no push improves it."""
        step = self._base.max_speed * self._base.action_repeat  # m per env step at |a| = 1
        r = _rot(block[2])
        local = (p - block[:2]) @ r
        gain, length = self._best_push(self._twists, block, goal, mode)
        ok = (gain > 0) & np.isfinite(travel)
        rate = np.zeros(len(gain))
        rate[ok] = gain[ok] / (travel[ok] + _GAP + length[ok] + _SWITCH_COST)
        # The contact the pusher touches now, if any: a candidate with no travel.
        gap = distance_to_block(p, block)
        touching = gap < PUSHER_RADIUS + 0.004
        if touching:
            near = self._nearest_on_t(local)
            n = local - near
            n = n / max(np.linalg.norm(n), 1e-9)
            g, ell = self._best_push(unit_twists(near[None], n[None]), block, goal, mode)
            if g[0] > 0 and g[0] / ell[0] >= 0.7 * rate.max():
                self._target = None
                # Slower close to the goal: the model is rough, the pushes re-plan each step.
                near_goal = self._cost(block[:2], block[2], goal, 0) < _SLOW_WITHIN
                return -(r @ n) * np.clip(ell[0] / step, 0.2, _SLOW_SPEED if near_goal else 1.0)
        if touching and gap < _CLEAR and np.any(gain > 0):
            return (r @ n) * 0.5  # leave the block before going round it (paths start outside)
        if not np.any(rate > 0):
            return None
        k = int(rate.argmax())
        if self._target is not None and self._target[0] == mode:
            if rate[self._target[1]] >= 0.8 * rate[k]:
                k = self._target[1]
        self._target = (mode, k)
        # On the approach line of target k: move in to touch it.
        rel = local - self._c[k]
        along = rel @ self._n[k]
        on_line = np.linalg.norm(rel - along * self._n[k]) < 0.004
        if on_line and PUSHER_RADIUS - 0.005 <= along <= PUSHER_RADIUS + _GAP + 0.004:
            return -(r @ self._n[k]) * 0.5
        delta = first[k] - p
        return delta / max(step, np.linalg.norm(delta))

    @staticmethod
    def _nearest_on_t(local: np.ndarray) -> np.ndarray:
        """The point of the T's outline (block frame) nearest to ``local`` (2,), outside it."""
        best, best_d = None, np.inf
        for cx, cy, hx, hy in BLOCK_BOXES:
            q = np.clip(local, [cx - hx, cy - hy], [cx + hx, cy + hy])
            d = np.linalg.norm(local - q)
            if d < best_d:
                best, best_d = q, d
        return best
