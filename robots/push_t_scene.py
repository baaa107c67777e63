"""Push-T's PyBullet scene: floor, walls, the T block and the disc pusher (see robots/push_t.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pybullet

from robots.push_t_geometry import BLOCK_BOXES, BLOCK_GYRATION, PUSHER_RADIUS

FLOOR_RGB = (255, 255, 255)
BLOCK_RGB = (119, 136, 153)
PUSHER_RGB = (65, 105, 225)

BLOCK_HEIGHT = 0.02  # m; the pusher's centre is at mid-height, so pushes are horizontal
BLOCK_MASS = 1.0  # kg
BLOCK_FLOOR_FRICTION = 2.0  # combined mu (PyBullet multiplies the two bodies' coefficients)
PUSHER_BLOCK_FRICTION = 0.4
PUSHER_MAX_FORCE = 200.0  # N per axis


def build_scene(client: Any, arena_size: float) -> tuple[int, int, int, int]:
    """Create the bodies in ``client`` (a PyBullet client); returns their ids (floor, walls,
    block, pusher). The pusher is a fixed base at mid-block height with prismatic x then y
    joints and the sphere on link 1."""
    c, size = client, arena_size
    c.setGravity(0, 0, -9.81)
    # Bodies that must not be drawn carry this speck far outside the view (without a visual
    # shape PyBullet would draw their collision shapes).
    far = -10.0 * size
    speck = c.createVisualShape(  # one triangle, far out of view: nothing to rasterise
        pybullet.GEOM_MESH, vertices=[[far, far, -10.0], [far + 1e-3, far, -10.0],
                                      [far, far + 1e-3, -10.0]], indices=[0, 1, 2])  # fmt: skip
    floor = c.createMultiBody(0, c.createCollisionShape(pybullet.GEOM_PLANE), speck)
    t = 0.1  # wall thickness and height (m)
    walls = c.createCollisionShapeArray(
        [pybullet.GEOM_BOX] * 4,
        halfExtents=[[size / 2 + t, t / 2, t]] * 2 + [[t / 2, size / 2 + t, t]] * 2,
        collisionFramePositions=[[size / 2, -t / 2, t], [size / 2, size + t / 2, t],
                                 [-t / 2, size / 2, t], [size + t / 2, size / 2, t]],
    )  # fmt: skip
    walls_body = c.createMultiBody(0, walls, speck)
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
    body = c.createMultiBody(BLOCK_MASS, col, vis, [size / 2, size / 2, h])
    # Bullet approximates a compound's inertia by its bounding box; use the T's own.
    iz = BLOCK_MASS * BLOCK_GYRATION**2
    c.changeDynamics(body, -1, lateralFriction=BLOCK_FLOOR_FRICTION, restitution=0.0,
                     localInertiaDiagonal=[iz / 2, iz / 2, iz], linearDamping=0.0,
                     angularDamping=0.0,
                     activationState=pybullet.ACTIVATION_STATE_DISABLE_SLEEPING)  # fmt: skip
    c.changeDynamics(floor, -1, lateralFriction=1.0, restitution=0.0)
    c.changeDynamics(walls_body, -1, lateralFriction=0.5 / BLOCK_FLOOR_FRICTION,
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
    pusher = c.createMultiBody(
        0, -1, speck, [0, 0, h], linkMasses=[0.5, 0.5], linkCollisionShapeIndices=[-1, pcol],
        linkVisualShapeIndices=[speck, pvis], linkPositions=[[0, 0, 0]] * 2,
        linkOrientations=[[0, 0, 0, 1]] * 2, linkInertialFramePositions=[[0, 0, 0]] * 2,
        linkInertialFrameOrientations=[[0, 0, 0, 1]] * 2, linkParentIndices=[0, 1],
        linkJointTypes=[pybullet.JOINT_PRISMATIC] * 2, linkJointAxis=[[1, 0, 0], [0, 1, 0]],
    )  # fmt: skip
    for link in (0, 1):
        c.changeDynamics(pusher, link, linearDamping=0.0, angularDamping=0.0,
                         jointDamping=0.0, restitution=0.0,
                         lateralFriction=PUSHER_BLOCK_FRICTION / BLOCK_FLOOR_FRICTION,
                         activationState=pybullet.ACTIVATION_STATE_DISABLE_SLEEPING)  # fmt: skip
    c.setCollisionFilterPair(pusher, floor, 1, -1, 0)
    return floor, walls_body, body, pusher
