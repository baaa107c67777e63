"""Scene pieces of the Panda tasks: a fast-rendering Franka Panda, table, cube, cameras.

World frame (metres): the robot base stands at the origin on the table top (z = 0), x points
away from the robot across the table, z up. The end effector (EE) is the Panda's
``panda_grasptarget`` link: the point between the fingertips (the tips are ~7 mm below it).

Rendering: PyBullet's TinyRenderer spends its time on triangles, and the stock Panda visual
meshes have ~100k of them (~36 frames/s at 64x64 on one core). :func:`load_panda` loads a copy
of ``franka_panda/panda.urdf`` whose *visual* meshes are the stock *collision* meshes (~3.7k
triangles, ~14x faster renders); physics is untouched (the collision meshes are the same file
either way). The copy is written to a temporary directory when an env is built, loaded, and the
directory deleted right away (PyBullet reads everything at load time); nothing is written at
import. Links are recoloured with flat per-link colours (``LINK_RGBA``) so the arm's pose reads
clearly under the flat lighting of :class:`robots.base.Camera`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from robots.base import Camera, body_state, set_body_state

PANDA_DIR = os.path.join(pybullet_data.getDataPath(), "franka_panda")
ARM_JOINTS = tuple(range(7))  # panda_joint1..7
FINGER_JOINTS = (9, 10)  # panda_finger_joint1/2: prismatic, 0 (closed) .. 0.04 m each
EE_LINK = 11  # panda_grasptarget
FINGER_MAX = 0.04  # m, travel of one finger (gripper width = 2 x finger position)
# Grasp target pointing straight down (rotation pi about world x): fingers open along world y.
DOWN_QUAT = (1.0, 0.0, 0.0, 0.0)
# Arm rest pose: EE about (0.45, 0, 0.3) pointing down; IK's null space is pulled towards it.
HOME_Q = (0.0, -0.25, 0.0, -2.25, 0.0, 2.0, np.pi / 4)

# The EE target is clipped to this box (metres): above the table, in front of the robot.
WORKSPACE_LOW = np.array([0.25, -0.3, 0.01])
WORKSPACE_HIGH = np.array([0.75, 0.3, 0.45])
# Objects and goals are sampled in this table region (x, y), inside the workspace.
TABLE_REGION_LOW = np.array([0.35, -0.2])
TABLE_REGION_HIGH = np.array([0.65, 0.2])

TABLE_HALF = (0.55, 0.6, 0.025)  # table box half extents; its top face is z = 0
TABLE_CENTER = (0.4, 0.0, -0.025)
TABLE_RGBA = (0.82, 0.71, 0.55, 1.0)
CUBE_RGBA = (0.9, 0.1, 0.1, 1.0)
# Flat colours per PyBullet link index (-1 = base link0): alternating greys down the arm,
# dark hand, black fingers.
LINK_RGBA = {
    -1: (0.55, 0.55, 0.6, 1.0),
    0: (0.85, 0.85, 0.9, 1.0),
    1: (0.55, 0.55, 0.6, 1.0),
    2: (0.85, 0.85, 0.9, 1.0),
    3: (0.55, 0.55, 0.6, 1.0),
    4: (0.85, 0.85, 0.9, 1.0),
    5: (0.55, 0.55, 0.6, 1.0),
    6: (0.35, 0.35, 0.4, 1.0),
    8: (0.25, 0.25, 0.3, 1.0),
    9: (0.1, 0.1, 0.1, 1.0),
    10: (0.1, 0.1, 0.1, 1.0),
}

# Default cameras; ``camera_view`` picks one, ``camera={...}`` overrides its fields.
CAMERAS: dict[str, Camera] = {
    "front": Camera(eye=(1.3, 0.0, 0.85), target=(0.5, 0.0, 0.2), fov_deg=40.0),
    "side": Camera(eye=(0.5, -0.95, 0.55), target=(0.5, 0.0, 0.2), fov_deg=42.0),
}


def lowpoly_urdf_text() -> str:
    """The stock Panda URDF with visual meshes swapped for the collision meshes and mesh paths
    made absolute (so the copy can live anywhere)."""
    with open(os.path.join(PANDA_DIR, "panda.urdf"), encoding="utf-8") as f:
        text = f.read()
    text = text.replace("package://meshes/visual/", "package://meshes/collision/")
    return text.replace("package://meshes/", os.path.join(PANDA_DIR, "meshes") + "/")


@dataclass(frozen=True)
class JointLimits:
    """URDF limits of the 9 movable joints (7 arm + 2 fingers), float64 (9,) each."""

    lower: np.ndarray
    upper: np.ndarray
    max_force: np.ndarray  # N m (arm) / N (fingers)
    max_velocity: np.ndarray  # rad/s (arm) / m/s (fingers)


class Panda:
    """A fixed-base Franka Panda in ``client`` with IK and joint-limited position control."""

    POSITION_GAIN = 0.1  # PyBullet motor kp (its default); higher gains ring at 20 substeps

    def __init__(self, client: BulletClient) -> None:
        self.client = client
        with tempfile.TemporaryDirectory(prefix="hmpc_panda_") as tmp:
            path = os.path.join(tmp, "panda_lowpoly.urdf")
            with open(path, "w", encoding="utf-8") as f:
                f.write(lowpoly_urdf_text())
            self.body = client.loadURDF(path, [0, 0, 0], useFixedBase=True)
        # Sleeping is history the state vector does not hold: never let the robot doze off.
        client.changeDynamics(
            self.body, -1, activationState=pybullet.ACTIVATION_STATE_DISABLE_SLEEPING
        )
        for link, rgba in LINK_RGBA.items():
            client.changeVisualShape(self.body, link, rgbaColor=list(rgba))
        # The URDF's <mimic> (fingers move together) is not simulated; a gear constraint does
        # it, so a grasped cube stays centred between the fingers.
        gear = client.createConstraint(
            self.body,
            FINGER_JOINTS[0],
            self.body,
            FINGER_JOINTS[1],
            pybullet.JOINT_GEAR,
            [1, 0, 0],
            [0, 0, 0],
            [0, 0, 0],
        )
        client.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=50)
        self.joints = ARM_JOINTS + FINGER_JOINTS
        info = [client.getJointInfo(self.body, j) for j in self.joints]
        self.limits = JointLimits(
            *(np.array([i[k] for i in info], np.float64) for k in (8, 9, 10, 11))
        )
        self._ranges = (self.limits.upper - self.limits.lower).tolist()
        self._rest = list(HOME_Q) + [FINGER_MAX, FINGER_MAX]

    # ------------------------------------------------------------------ kinematics
    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(EE position (3,) m, EE linear velocity (3,) m/s) in the world frame."""
        link = self.client.getLinkState(self.body, EE_LINK, computeLinkVelocity=1,
                                        computeForwardKinematics=1)  # fmt: skip
        return np.array(link[4], np.float64), np.array(link[6], np.float64)

    def finger_positions(self) -> np.ndarray:
        """(2,) m, the two finger joint positions (gripper width is their sum)."""
        return np.array([s[0] for s in self.client.getJointStates(self.body, FINGER_JOINTS)])

    def ik(self, target: np.ndarray, iterations: int = 20) -> np.ndarray:
        """Arm joint angles (7,) that put the EE at ``target`` pointing down, from the current
        joint state, clipped to the URDF limits."""
        q = self.client.calculateInverseKinematics(
            self.body, EE_LINK, [float(v) for v in target], list(DOWN_QUAT),
            lowerLimits=self.limits.lower.tolist(), upperLimits=self.limits.upper.tolist(),
            jointRanges=self._ranges, restPoses=self._rest,
            maxNumIterations=iterations, residualThreshold=1e-5,
        )  # fmt: skip
        return np.clip(np.asarray(q[:7], np.float64), self.limits.lower[:7], self.limits.upper[:7])

    def set_configuration(self, arm_q: np.ndarray, finger: float) -> None:
        """Teleport (zero velocity): arm joints to ``arm_q`` (7,), both fingers to ``finger`` m."""
        for j, q in zip(ARM_JOINTS, arm_q, strict=True):
            self.client.resetJointState(self.body, j, float(q), 0.0)
        for j in FINGER_JOINTS:
            self.client.resetJointState(self.body, j, float(finger), 0.0)

    def place_ee(self, target: np.ndarray, finger: float, rounds: int = 6) -> None:
        """Teleport the arm to an IK configuration with the EE at ``target`` (from the home
        pose, refined over ``rounds`` IK calls: deterministic given ``target``)."""
        self.set_configuration(np.array(HOME_Q), finger)
        for _ in range(rounds):
            self.set_configuration(self.ik(target), finger)

    # ------------------------------------------------------------------ control
    def command(self, ee_target: np.ndarray, finger_target: float, tick_s: float) -> None:
        """Position-control targets for one control tick of ``tick_s`` seconds: IK for the EE
        target (pointing down), clipped to the joint limits, then the arm's joint step scaled
        down (all joints alike, so the joint-space direction is kept) to what the URDF velocity
        limits allow in one tick; motor forces and speeds capped at the URDF limits."""
        c, lim = self.client, self.limits
        q = np.array([s[0] for s in c.getJointStates(self.body, ARM_JOINTS)])
        dq = self.ik(ee_target) - q
        ratio = np.max(np.abs(dq) / (lim.max_velocity[:7] * tick_s))
        arm = np.clip(q + dq / max(1.0, ratio), lim.lower[:7], lim.upper[:7])
        finger = float(np.clip(finger_target, 0.0, FINGER_MAX))
        targets = [*arm, finger, finger]
        for k, j in enumerate(self.joints):
            c.setJointMotorControl2(self.body, j, pybullet.POSITION_CONTROL,
                                    targetPosition=float(targets[k]),
                                    force=float(lim.max_force[k]),
                                    maxVelocity=float(lim.max_velocity[k]),
                                    positionGain=self.POSITION_GAIN)  # fmt: skip


class BodyStates:
    """Exact save/restore of the dynamic bodies of a scene (``body_state`` of each).

    ``snapshot`` is the list of per-body states the simulator was last *set from*. PyBullet
    does not round-trip an orientation exactly (set, then get, differs in the last bits), so
    the envs keep the simulator, between steps, in the state set from the numbers they report:
    restoring those numbers elsewhere (a clone) lands on the very same internal state.
    """

    def __init__(self, client: BulletClient, bodies: list[int]) -> None:
        self.client = client
        self.bodies = list(bodies)
        self.snapshot: list[np.ndarray] = []
        self.canonicalize()

    def canonicalize(self) -> None:
        """Re-set every body from its read-back state and keep that as the snapshot."""
        self.restore([body_state(self.client, b) for b in self.bodies])

    def restore(self, states: list[np.ndarray] | None = None) -> None:
        """Set the bodies to ``states`` (which become the snapshot), or back to the snapshot."""
        if states is not None:
            self.snapshot = [np.asarray(s, np.float64) for s in states]
        for b, s in zip(self.bodies, self.snapshot, strict=True):
            set_body_state(self.client, b, s)

    def forget_contacts(self) -> None:
        """Drop PyBullet's cached contact points (warm-start impulses, friction anchors),
        history no state vector holds, then restore the snapshot: the bodies are moved far
        apart for one collision pass, which discards every cached point."""
        for k, b in enumerate(self.bodies):
            self.client.resetBasePositionAndOrientation(b, [0.0, 0.0, 100.0 * (k + 1)],
                                                        [0, 0, 0, 1])  # fmt: skip
        self.client.performCollisionDetection()
        self.restore()


def make_table(client: BulletClient) -> int:
    """A static box table whose top face is the plane z = 0."""
    col = client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=list(TABLE_HALF))
    vis = client.createVisualShape(pybullet.GEOM_BOX, halfExtents=list(TABLE_HALF),
                                   rgbaColor=list(TABLE_RGBA))  # fmt: skip
    body = client.createMultiBody(0, col, vis, list(TABLE_CENTER))
    client.changeDynamics(body, -1, lateralFriction=0.5, restitution=0.0)
    return body


def make_cube(client: BulletClient, size: float, mass: float, friction: float) -> int:
    """A dynamic cube of edge ``size`` m and ``mass`` kg (placed later by the env)."""
    half = [size / 2] * 3
    col = client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half)
    vis = client.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=list(CUBE_RGBA))
    body = client.createMultiBody(mass, col, vis, [0.5, 0.0, size / 2])
    client.changeDynamics(body, -1, lateralFriction=friction, spinningFriction=0.001,
                          rollingFriction=0.0, restitution=0.0,
                          activationState=pybullet.ACTIVATION_STATE_DISABLE_SLEEPING)  # fmt: skip
    return body
