"""One rigid object's pose read out of a keypoint world model without labels, and a model of how
the agent moves it: what ``hmpc-pose`` fits and controllers of kind "pose" plan with.

From a checkpoint whose encoder gives keypoints with vectors (``model.keypoints`` > 0,
``model.keypoint_vectors`` >= 1; Push-T's preset with ``model.loss.equivariance``):
- the agent (a disc at ``observation.state[:2]``) is painted out of every image first
  (``hmpc.agent_mask``: the model's own, else the env's), so nothing read follows it;
- keypoints that copy one another are merged, and the largest cluster of distinct ones (mean
  distance below ``cluster_tol``) is the object (:func:`find_object`; no state is read);
- its pose is the cluster's mean place and the circular mean of the members' first vectors'
  angles, each turned by its own offset (:class:`PoseReadout`);
- :class:`hmpc.pose_dynamics.PoseDynamics` learns how actions move agent and object.
Pose states (N, 6) are ``[agent x, y (world), object place (keypoint coordinates), cos, sin]``.
Folder: ``pose.safetensors`` (dynamics weights) and ``pose.json`` (readout, sizes, camera map,
mask, the world-model checkpoint it reads), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from hmpc.agent_mask import AgentMask
from hmpc.checkpoint import WEIGHTS as CHECKPOINT_WEIGHTS
from hmpc.checkpoint import atomic_save_weights, atomic_write_json
from hmpc.data.windows import FrameArrays
from hmpc.models import KeypointEncoder, keypoint_grid_scale
from hmpc.pose_dynamics import PoseDynamics, fit_dynamics
from hmpc.runtime import seeded
from hmpc.security import check_safetensors_file
from hmpc.world_model import WorldModel

WEIGHTS, CONFIG = "pose.safetensors", "pose.json"
COPY_TOL = 0.02  # keypoints whose places never differ by more than this are copies of one another
CLUSTER_TOL = 0.03  # distinct keypoints whose mean distance is below this sit on one object


@dataclass(frozen=True)
class PoseReadout:
    """``members`` (keypoint indices), ``offsets`` (rad: each member's vector angle minus the
    first member's, circular mean over the data), ``sign`` (-1 where the image flips the world's
    turning sense: ``sign(det(image_map[:, :2]))``)."""

    members: tuple[int, ...]
    offsets: tuple[float, ...]
    sign: float

    def __call__(self, points: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints and first vectors (N, K, 2) -> the object's place (N, 2) and angle (N,)."""
        m = list(self.members)
        angles = torch.atan2(vectors[:, m, 1], vectors[:, m, 0]) - torch.tensor(self.offsets, device=points.device)
        return points[:, m].mean(1), self.sign * torch.atan2(angles.sin().mean(1), angles.cos().mean(1))


def find_object(points: torch.Tensor, vectors: torch.Tensor, sign: float, members: list[int] | None = None,
                cluster_tol: float = CLUSTER_TOL) -> PoseReadout:
    """The readout of ``members``, or else of the largest cluster of distinct keypoints (those
    within ``cluster_tol`` of one of them, ties to the first), from keypoints and vectors
    (N, K, 2) of many frames alone."""
    k = points.shape[1]
    if members is None:
        reps: list[int] = []  # one keypoint of each set of copies
        for i in range(k):
            if all(float((points[:, i] - points[:, r]).abs().max()) > COPY_TOL for r in reps):
                reps.append(i)
        dist = (points[:, reps, None] - points[:, None, reps]).norm(dim=-1).mean(0)
        clusters = [[reps[j] for j in torch.nonzero(row < cluster_tol).flatten().tolist()] for row in dist]
        members = max(clusters, key=len)
        if len(members) < 2:
            raise ValueError(f"no two distinct keypoints sit together (mean distance < {cluster_tol}): "
                             "this checkpoint's keypoints do not find one object; choose them with "
                             "members=[...] or train with model=push_t_pose (model.loss.equivariance=1.0)")
    bad = [i for i in members if not 0 <= i < k]
    if bad or len(members) < 1:
        raise ValueError(f"keypoint members {members}: each must be in [0, {k}) and there must be one")
    angles = torch.atan2(vectors[:, members, 1], vectors[:, members, 0])
    d = angles - angles[:, :1]
    offsets = torch.atan2(d.sin().mean(0), d.cos().mean(0))
    return PoseReadout(tuple(int(i) for i in members), tuple(float(o) for o in offsets), float(sign))


def encoder_of(model: WorldModel) -> KeypointEncoder:
    """The keypoint encoder with vectors of ``model``, or a ValueError that says what to train."""
    enc = model.encoder
    if not isinstance(enc, KeypointEncoder) or not enc.num_vectors:
        raise ValueError("an object pose needs a keypoint encoder with vectors: train with model.keypoints "
                         "> 0 and model.keypoint_vectors >= 1 (e.g. model=push_t_pose)")
    return enc


@torch.no_grad()
def keypoint_parts(encoder: KeypointEncoder, mask: AgentMask | None, pixels: torch.Tensor,
                   agent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, H, W) and the agent's x, y (N, 2) -> keypoints and first vectors
    (N, K, 2), the agent painted out first when ``mask`` is given."""
    if mask is not None:
        pixels = mask(pixels, agent)
    points, vectors = encoder.parts(pixels)
    return points, vectors[:, :, 0]


def read_frames(encoder: KeypointEncoder, mask: AgentMask | None, pixels: np.ndarray, agent: np.ndarray,
                chunk: int = 512, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`keypoint_parts` of dataset frames (N, H, W, 3) uint8 with the agent (N, 2), in chunks."""
    points, vectors = [], []
    for i in range(0, len(pixels), chunk):
        px = torch.as_tensor(np.array(pixels[i:i + chunk]), device=device).permute(0, 3, 1, 2)  # a copy
        p, v = keypoint_parts(encoder, mask, px, torch.as_tensor(agent[i:i + chunk], device=device,
                                                                 dtype=torch.float32))
        points.append(p)
        vectors.append(v)
    return torch.cat(points), torch.cat(vectors)


def pose_state(readout: PoseReadout, points: torch.Tensor, vectors: torch.Tensor,
               agent: torch.Tensor) -> torch.Tensor:
    """Pose states (N, 6) from keypoints, vectors (N, K, 2) and the agent (N, 2)."""
    place, angle = readout(points, vectors)
    return torch.cat([agent.float(), place, angle.cos()[:, None], angle.sin()[:, None]], 1)


class PoseModel(torch.nn.Module):
    """Reads pose states from images and predicts them: ``encoder`` (keypoints with vectors),
    ``readout``, ``dynamics``, the ``mask`` painting the agent out (None: images as they are) and
    the object's radius of ``gyration`` (m: weighs heading against place in goal distances)."""

    def __init__(self, encoder: KeypointEncoder, readout: PoseReadout, dynamics: PoseDynamics,
                 mask: AgentMask | None, gyration: float) -> None:
        super().__init__()
        if not gyration > 0:
            raise ValueError(f"gyration={gyration} must be > 0 (the object's radius of gyration, m)")
        self.encoder, self.readout, self.dynamics, self.mask = encoder, readout, dynamics, mask
        self.gyration = float(gyration)

    @torch.no_grad()
    def read(self, pixels: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, 3, H, W) and the agent (N, 2) -> pose states (N, 6)."""
        return pose_state(self.readout, *keypoint_parts(self.encoder, self.mask, pixels, agent), agent)


def save_pose_model(folder: str | Path, model: PoseModel, meta: dict[str, Any]) -> Path:
    """Weights, then ``pose.json`` (written last: it marks completion) with readout, sizes and ``meta``."""
    folder, dyn = Path(folder), model.dynamics
    atomic_save_weights(folder / WEIGHTS, dyn)
    config = {"readout": asdict(model.readout), "hidden": dyn.inner.net[0].out_features,
              "image_map": dyn.map.tolist(), "grid_scale": dyn.grid_scale, "gyration": model.gyration,
              "agent_mask": None if model.mask is None else asdict(model.mask), **meta}
    atomic_write_json(folder / CONFIG, config)
    return folder


def weights_digest(checkpoint: str | Path) -> str:
    """SHA-256 of a world-model checkpoint's weights file: which encoder a pose model reads."""
    return hashlib.sha256((Path(checkpoint) / CHECKPOINT_WEIGHTS).read_bytes()).hexdigest()


def pose_blob(folder: str | Path, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The pose model in ``folder`` (from :func:`save_pose_model`) as plain config and arrays, to
    travel to workers with no shared filesystem. With ``checkpoint``, refuses a pose model fit on
    other weights (``checkpoint_sha256`` in its config)."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG} and {WEIGHTS}; fit a pose model with "
                                f"`hmpc-pose checkpoint={checkpoint or '<checkpoint>'} env=<env>` (it writes "
                                "<checkpoint>/pose)")
    config = json.loads((folder / CONFIG).read_text())
    fit_on = config.get("checkpoint_sha256")
    if checkpoint is not None and fit_on is not None and fit_on != weights_digest(checkpoint):
        raise ValueError(f"{folder / CONFIG} was fit on other weights than {checkpoint}/{CHECKPOINT_WEIGHTS} "
                         f"(checkpoint_sha256 differs): refit it with `hmpc-pose checkpoint={checkpoint}`")
    check_safetensors_file(folder / WEIGHTS)
    weights = {k: v.numpy() for k, v in load_file(str(folder / WEIGHTS)).items()}
    return {"config": config, "weights": weights, "folder": str(folder)}


def check_pose_env(blob: dict[str, Any], env: Any, env_name: str) -> None:
    """Refuse to plan with :func:`pose_blob`'s model in an env it was not fit for: another env, or
    a camera whose map of world x, y into the image differs (the readout would be off)."""
    cfg, where = blob["config"], Path(blob["folder"]) / CONFIG
    fit_env = cfg.get("env")
    if fit_env is not None and fit_env != env_name:
        raise ValueError(f"{where} was fit for env {fit_env!r}, not {env_name!r}: refit it with "
                         f"`hmpc-pose checkpoint=<checkpoint> env={env_name}`")
    camera = getattr(env.unwrapped, "image_map", None)
    if camera is not None and not np.allclose(camera(), np.asarray(cfg["image_map"]), atol=1e-6):
        raise ValueError(f"{where} was fit with the camera map {np.round(cfg['image_map'], 4).tolist()}; env "
                         f"{env_name!r} here has {np.round(camera(), 4).tolist()} (another camera or arena "
                         f"option): evaluate with the env options it was fit with ({cfg.get('env_options')}), "
                         f"or refit with hmpc-pose")


def pose_from_blob(blob: dict[str, Any], world_model: WorldModel,
                   device: torch.device | str = "cpu") -> PoseModel:
    """:func:`pose_blob`'s pose model on ``world_model``'s encoder (the checkpoint it was fit on)."""
    cfg, where = blob["config"], Path(blob["folder"]) / CONFIG
    weights = {k: torch.from_numpy(v.copy()) for k, v in blob["weights"].items()}
    r = cfg["readout"]
    readout = PoseReadout(tuple(int(i) for i in r["members"]), tuple(float(o) for o in r["offsets"]),
                          float(r["sign"]))
    enc = encoder_of(world_model)
    if max(readout.members) >= enc.maps.out_channels:
        raise ValueError(f"{where}: readout members {list(readout.members)} do not fit the checkpoint's "
                         f"{enc.maps.out_channels} keypoints; fit the pose model on this checkpoint")
    dyn = PoseDynamics(int(cfg["hidden"]), weights["inner.std"], np.asarray(cfg["image_map"]),
                       float(cfg["grid_scale"]))
    dyn.load_state_dict(weights)
    return PoseModel(enc, readout, dyn.to(device).eval(), AgentMask.from_value(cfg["agent_mask"]),
                     float(cfg["gyration"]))


def load_pose_model(folder: str | Path, world_model: WorldModel,
                    device: torch.device | str = "cpu") -> PoseModel:
    """The pose model saved in ``folder`` on ``world_model``'s encoder."""
    return pose_from_blob(pose_blob(folder), world_model, device)


def fit_pose_model(world_model: WorldModel, frames: FrameArrays, image_map: np.ndarray,
                   mask: AgentMask | None, gyration: float, steps: int, horizon: int = 8, hidden: int = 512, seed: int = 0,
                   members: list[int] | None = None, device: torch.device | str = "cpu",
                   progress: bool = True) -> PoseModel:
    """Find the object in ``frames`` (pixels, state whose first two dims are the agent's x, y,
    actions, episodes), then fit its dynamics on the pose states read from them (seeded)."""
    enc = encoder_of(world_model)
    image_map = np.asarray(image_map, dtype=np.float64)
    sign = math.copysign(1.0, float(np.linalg.det(image_map[:, :2])))
    agent = frames.state[:, :2]
    points, vectors = read_frames(enc, mask, frames.pixels, agent, device=device)
    readout = find_object(points, vectors, sign, members)
    pose = pose_state(readout, points, vectors, torch.as_tensor(agent, device=device)).cpu()
    with seeded(seed):  # the global generator left as it was
        dyn = PoseDynamics(hidden, pose.std(0), image_map, keypoint_grid_scale(enc.image_size)).to(device)
    fit_dynamics(dyn, replace(frames, state=pose.numpy()), steps, horizon, seed, progress=progress)
    return PoseModel(enc, readout, dyn, mask, gyration)


def pose_errors(angle: np.ndarray, place: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """A read angle (N,) rad and place (N, 2) m against the true pose (N, 4) = x, y, cos, sin:
    the angle error in degrees rms after the best constant offset, the place error in cm rms
    after the best affine map of the true pose (so a reference point fixed on the object but off
    its true one costs nothing, and neither does an error of scale or rotation of the place; with
    few distinct poses the fit absorbs everything and the place error means nothing)."""
    d = np.angle(np.exp(1j * (angle - np.arctan2(true[:, 3], true[:, 2]))))
    d = np.angle(np.exp(1j * (d - np.angle(np.exp(1j * d).mean()))))
    x = np.concatenate([true, np.ones((len(true), 1))], 1)
    coef, *_ = np.linalg.lstsq(x, place, rcond=None)
    res = place - x @ coef
    return float(np.degrees(np.sqrt((d ** 2).mean()))), float(100 * np.sqrt((res ** 2).sum(1).mean()))


@torch.no_grad()
def readout_check(pose: PoseModel, frames: FrameArrays, dims: list[int], max_frames: int = 4000,
                  device: torch.device | str = "cpu") -> dict[str, float]:
    """How well the readout matches a logged pose, for reading only (nothing is fit on it):
    ``dims`` are the ``frames.state`` columns of the object's true x, y (m), cos, sin.
    :func:`pose_errors` on up to ``max_frames`` frames spread over the data."""
    if len(dims) != 4 or not all(0 <= d < frames.state.shape[1] for d in dims):
        raise ValueError(f"check dims {list(dims)}: need 4 observation.state columns (x, y, cos, sin) "
                         f"in [0, {frames.state.shape[1]})")
    idx = np.unique(np.linspace(0, frames.num_frames - 1, min(max_frames, frames.num_frames)).astype(np.int64))
    agent = frames.state[idx, :2]
    points, vectors = read_frames(pose.encoder, pose.mask, frames.pixels[idx], agent, device=device)
    read = pose_state(pose.readout, points, vectors, torch.as_tensor(agent, device=device))
    angle_deg, place_cm = state_errors(pose, read, frames.state[idx][:, dims])
    return {"angle_deg_rms": angle_deg, "place_cm_rms": place_cm, "frames": int(len(idx))}


@torch.no_grad()
def state_errors(pose: PoseModel, read: torch.Tensor, true: np.ndarray) -> tuple[float, float]:
    """:func:`pose_errors` of pose states read by ``pose`` (N, 6), the place in the dynamics'
    metres, against the true pose (N, 4) = x, y, cos, sin."""
    world = pose.dynamics.to_world(read[:, 2:4]).cpu().double().numpy()
    read = read.cpu().double().numpy()
    return pose_errors(np.arctan2(read[:, 5], read[:, 4]), world, np.asarray(true, dtype=np.float64))
