"""Push-T geometry in the block frame and in the world: the T's boxes, its size, distances to it.

Pure numpy, no simulator: shared by the env (:mod:`robots.push_t`), its episode sampling and the
checks of its reset options, and the scripted expert. Lengths in metres, angles in radians; a pose
is ``(x, y, theta)`` of the T's centre of mass (at theta = 0 the bar is on top, +y, and the stem
points down, -y).
"""

from __future__ import annotations

from typing import Any

import numpy as np

PUSHER_RADIUS = 0.03  # m


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


def _outline() -> np.ndarray:
    """float64 (8, 2): the T's outline in the block frame, counter-clockwise from the stem's
    bottom-left corner."""
    (bx, by, bhx, bhy), (sx, sy, shx, shy) = BLOCK_BOXES
    lo, top = by - bhy, by + bhy
    return np.array([[sx - shx, sy - shy], [sx + shx, sy - shy], [sx + shx, lo], [bx + bhx, lo],
                     [bx + bhx, top], [bx - bhx, top], [bx - bhx, lo], [sx - shx, lo]])  # fmt: skip


BLOCK_OUTLINE = _outline()


def outline_point(u: float) -> tuple[np.ndarray, np.ndarray]:
    """The point at fraction ``u`` in [0, 1) of the T's perimeter (block frame, counter-clockwise
    from :data:`BLOCK_OUTLINE`'s first corner) and the outward unit normal there, both (2,)."""
    edges = np.roll(BLOCK_OUTLINE, -1, axis=0) - BLOCK_OUTLINE
    lengths = np.linalg.norm(edges, axis=1)
    at = (u % 1.0) * lengths.sum()
    k = min(int(np.searchsorted(np.cumsum(lengths), at, side="right")), len(lengths) - 1)
    along = at - (lengths[:k].sum())
    point = BLOCK_OUTLINE[k] + edges[k] * along / lengths[k]
    return point, np.array([edges[k, 1], -edges[k, 0]]) / lengths[k]


def to_world(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Block-frame points (..., 2) in the world for the T at ``pose`` (x, y, theta)."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    p = np.asarray(points, dtype=np.float64)
    return np.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1]], -1) + pose[:2]


def pose_option(options: dict[str, Any], name: str, arena_size: float) -> np.ndarray | None:
    """Reset option ``name`` as a block pose (x, y, theta wrapped) that fits in the arena, or None."""
    if name not in options:
        return None
    lo, hi = BLOCK_RADIUS, arena_size - BLOCK_RADIUS
    arr = np.asarray(options[name], dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or not np.all((lo <= arr[:2]) & (arr[:2] <= hi)):
        raise ValueError(
            f"options[{name!r}]={options[name]!r} must be a finite pose (x, y, theta) with "
            f"x and y in [{lo:.3f}, {hi:.3f}] m (the T fits in the {arena_size} m arena "
            "at any theta); theta is in radians, any finite value"
        )
    arr[2] = wrap_angle(arr[2])
    return arr


def point_option(options: dict[str, Any], name: str, pose: np.ndarray, arena_size: float) -> np.ndarray | None:
    """Reset option ``name`` as a pusher position (x, y) in the arena, clear of the T at ``pose``."""
    if name not in options:
        return None
    p = np.asarray(options[name], dtype=np.float64).reshape(-1)
    lo, hi = PUSHER_RADIUS, arena_size - PUSHER_RADIUS
    if (p.shape != (2,) or not np.all(np.isfinite(p)) or not np.all((lo <= p) & (p <= hi))
            or distance_to_block(p, pose) < PUSHER_RADIUS):  # fmt: skip
        raise ValueError(
            f"options[{name!r}]={options[name]!r} must be a finite (x, y) with x and y in "
            f"[{lo:.3f}, {hi:.3f}] m, at least {PUSHER_RADIUS} m (the pusher radius) from "
            f"the T's {'goal' if name == 'goal_pusher' else 'start'} pose"
        )
    return p

