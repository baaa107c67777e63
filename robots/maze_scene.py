"""Wall bodies of the PyBullet point maze: merged collision boxes and one top-face mesh."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pybullet

from robots.base import BulletClient
from robots.layouts import wall_runs

_MAX_COMPOUND = 16  # PyBullet's MAX_COMPOUND_COLLISION_SHAPES


def build_wall_bodies(
    client: BulletClient, walls: np.ndarray, rgb: Sequence[int], speck: int
) -> list[int]:
    """Static compound collision boxes per wall run plus the border, and the top-face mesh.

    ``walls``: bool (rows, cols), True = wall; cell (row, col) spans x in [col, col + 1],
    y in [rows - row - 1, rows - row], z in [0, 1]. ``rgb``: the walls' colour (0-255).
    ``speck``: a visual shape id for bodies that need one but must not be seen. Returns the ids
    of the created bodies.

    Rendering cost in TinyRenderer grows with covered pixels per triangle, so the scene has
    no floor body (the white clear colour is the floor) and walls are drawn as one mesh of
    their top faces only (a top-down camera never sees the sides).
    """
    c = client
    h, w = walls.shape
    centers: list[list[float]] = []
    halves: list[list[float]] = []
    vertices: list[list[float]] = []
    indices: list[int] = []
    # Merged row runs: fewer shapes and triangles, and no internal edges to snag the ball.
    for r, c0, c1 in wall_runs(walls):
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
    halves += [[w / 2 + 1, 0.5, 0.5]] * 2 + [[0.5, h / 2 + 1, 0.5]] * 2
    first_vis = speck
    if vertices:
        first_vis = c.createVisualShape(pybullet.GEOM_MESH, vertices=vertices, indices=indices,
                                        rgbaColor=[v / 255.0 for v in rgb] + [1.0])  # fmt: skip
    bodies = []
    # PyBullet caps a compound at 16 children, hence chunks.
    for k in range(0, len(centers), _MAX_COMPOUND):
        shape = c.createCollisionShapeArray(
            shapeTypes=[pybullet.GEOM_BOX] * len(centers[k : k + _MAX_COMPOUND]),
            halfExtents=halves[k : k + _MAX_COMPOUND],
            collisionFramePositions=centers[k : k + _MAX_COMPOUND],
        )
        bodies.append(c.createMultiBody(0, shape, first_vis if k == 0 else speck, [0, 0, 0]))
        c.changeDynamics(bodies[-1], -1, lateralFriction=0.0, restitution=0.0)
    return bodies
