"""A pose read out of a keypoint checkpoint, and dynamics in the T's frame on it: Push-T from images.

    python bench/pose_dynamics.py --checkpoint <run>/train/checkpoint --data <run>/dataset \
        --held-out <run>/held_out --eval-episodes 40 --seeds 2000 1000 3000 --raw --pusher-weight 0
        # ~13 min on 2 CPU cores

``bench/state_model.py --frame block`` plans 95 % of the Push-T push-goal pairs from the true
state; ``bench/perfect_dynamics.py`` shows the image latent's goal distance is good enough. This
bench puts the two together from images, with nothing privileged in the loop:
- the pusher is painted out of every frame before it is encoded (``hmpc.agent_mask``, at the
  fused pusher's place through the camera's map; ``--no-mask`` leaves it in; a checkpoint trained
  with ``model.agent_mask`` brings its own): what the encoder reads of the T no longer follows the
  pusher, so the slowness correction below has nothing left to take out (``--raw`` skips it);
- the object's keypoints are found without labels in a keypoint checkpoint with vectors
  (``model.keypoint_vectors`` >= 1): keypoints that copy one another are merged, and the largest
  cluster of distinct ones (those within 0.03 of one of them) is the object (``--keypoints`` chooses them by hand);
- its pose is the cluster's mean place (keypoint coordinates) and the circular mean of the
  members' first vectors' angles, each turned by its own offset to the first member (a vector
  turns with what its keypoint sits on: the equivariance term);
- ``PoseDynamics``: ``state_model.RelativeDynamics`` in the object's frame, the pose put into
  world units by the camera's map (``env.unwrapped.image_map()``) and a learned scale for the
  softmax keypoints' shrink toward the image centre (one number, starts at 1);
- flat CEM with ``flat_cem``'s budget on the env's pose distance of the predicted pose to the goal
  image's, plus ``--pusher-weight`` x the squared distance of the pusher to the goal image's.
The controller sees the images, the fused pusher and the goal image with its pusher; the true block
pose is read only to report how well the readout matches it. The camera map is calibration, not
state.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from state_model import (
    GROUPS,
    CostFn,
    RelativeDynamics,
    cem_episode,
    error_ratios,
    fit_dynamics,
    push_t_distance,
    success_cells,
)
from torch import nn
from tqdm import trange

from hmpc.agent_mask import AgentMask
from hmpc.checkpoint import load_checkpoint
from hmpc.data import LeRobotDataset
from hmpc.data.windows import FrameArrays, build_frame_cache
from hmpc.models import KeypointEncoder, keypoint_grid_scale
from hmpc.rollout import episode_seed
from robots import make_env

COPY_TOL = 0.02  # keypoints whose places never differ by more than this are copies of one another
CLUSTER_TOL = 0.03  # distinct keypoints whose mean distance is below this sit on one object


@torch.no_grad()
def read_keypoints(encoder: KeypointEncoder, pixels: np.ndarray, pusher: np.ndarray,
                   mask: AgentMask | None, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, H, W, 3) uint8 -> keypoints (N, K, 2) and first vectors (N, K, 2); with
    ``mask``, the pusher (N, 2, world) is painted out first."""
    points, vectors = [], []
    for i in range(0, len(pixels), chunk):
        frames = torch.as_tensor(pixels[i:i + chunk]).permute(0, 3, 1, 2)
        if mask is not None:
            frames = mask(frames, torch.as_tensor(pusher[i:i + chunk]))
        p, v = encoder.parts(frames)
        points.append(p)
        vectors.append(v[:, :, 0])
    return torch.cat(points).numpy(), torch.cat(vectors).numpy()


def contact_basis(r: np.ndarray, bearing: np.ndarray) -> np.ndarray:
    """Features (N, 27) of the pusher's place around the object, at distance ``r`` (m) and
    ``bearing`` (rad) in the object's frame: 4 harmonics of the bearing and a constant, each
    fading with distance at 5, 10 and 20 cm."""
    feats = []
    for scale in (0.05, 0.1, 0.2):
        fade = np.exp(-r / scale)
        feats += [fade * f(k * bearing) for k in (1, 2, 3, 4) for f in (np.cos, np.sin)] + [fade]
    return np.stack(feats, 1)


@dataclasses.dataclass(frozen=True)
class PoseReadout:
    """The object's pose from keypoints: ``members`` (their indices), ``offsets`` (rad, each
    member's vector angle minus the first member's, circular mean over the data), ``sign`` (-1
    where the image flips the world's turning sense), ``to_image`` (2, 3: world x, y, 1 ->
    keypoint coordinates, the camera's map on the keypoint grid). ``angle_coef`` (F,) and
    ``place_coef`` (2F,) undo what the pusher's place adds to the readout (:func:`fit_slowness`)."""

    members: tuple[int, ...]
    offsets: np.ndarray
    sign: float
    to_image: np.ndarray
    angle_coef: np.ndarray | None = None
    place_coef: np.ndarray | None = None

    def raw(self, points: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints and vectors (N, K, 2) -> the cluster's place (N, 2) and angle (N,)."""
        m = list(self.members)
        angles = np.arctan2(vectors[:, m, 1], vectors[:, m, 0]) - self.offsets
        return points[:, m].mean(1), self.sign * np.angle(np.exp(1j * angles).mean(1))

    def to_world(self, place: np.ndarray) -> np.ndarray:
        """Keypoint coordinates (N, 2) -> world x, y (N, 2), by the camera's map alone."""
        return (place - self.to_image[:, 2]) @ np.linalg.inv(self.to_image[:, :2]).T

    def basis(self, place: np.ndarray, angle: np.ndarray, pusher: np.ndarray) -> np.ndarray:
        """:func:`contact_basis` of the pusher (N, 2, world) around the readout's pose."""
        rel = pusher - self.to_world(place)
        cos, sin = np.cos(angle), np.sin(angle)
        x, y = cos * rel[:, 0] + sin * rel[:, 1], -sin * rel[:, 0] + cos * rel[:, 1]
        return contact_basis(np.hypot(x, y), np.arctan2(y, x))

    def __call__(self, points: np.ndarray, vectors: np.ndarray,
                 pusher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints and vectors (N, K, 2), the pusher (N, 2) -> place (N, 2), angle (N,)."""
        place, angle = self.raw(points, vectors)
        if self.angle_coef is None or self.place_coef is None:
            return place, angle
        feats = self.basis(place, angle, pusher)
        local = feats @ self.place_coef.reshape(2, -1).T  # (N, 2) in the object's frame
        cos, sin = np.cos(angle), np.sin(angle)
        shift = np.stack([cos * local[:, 0] - sin * local[:, 1], sin * local[:, 0] + cos * local[:, 1]], 1)
        return place - shift @ self.to_image[:, :2].T, angle - feats @ self.angle_coef


def find_object(points: np.ndarray, vectors: np.ndarray, sign: float, to_image: np.ndarray,
                members: list[int] | None = None) -> PoseReadout:
    """The readout of ``members``, or else of the largest cluster of distinct keypoints (those within
    ``CLUSTER_TOL`` of one of them; ties to the first), from keypoints and vectors (N, K, 2) alone:
    no state is read."""
    k = points.shape[1]
    if members is None:
        reps: list[int] = []  # one keypoint of each set of copies
        for i in range(k):
            if all(np.abs(points[:, i] - points[:, r]).max() > COPY_TOL for r in reps):
                reps.append(i)
        dist = np.linalg.norm(points[:, reps, None] - points[:, None, reps], axis=-1).mean(0)
        clusters = [[reps[j] for j in np.flatnonzero(row < CLUSTER_TOL)] for row in dist]
        members = max(clusters, key=len)
        if len(members) < 2:
            raise SystemExit(f"no two distinct keypoints sit together (mean distance < {CLUSTER_TOL}) "
                             "in this checkpoint; choose the object's keypoints with --keypoints")
    angles = np.arctan2(vectors[:, members, 1], vectors[:, members, 0])
    offsets = np.angle(np.exp(1j * (angles - angles[:, :1])).mean(0))
    return PoseReadout(tuple(int(i) for i in members), offsets, sign, to_image)


def fit_slowness(readout: PoseReadout, points: np.ndarray, vectors: np.ndarray, pusher: np.ndarray,
                 episode_index: np.ndarray) -> PoseReadout:
    """The readout with the pusher's share taken out, fit without labels: the corrections (linear
    in :func:`contact_basis` of the pusher around the raw pose) that make the readout change least
    from one frame to the next within episodes (least squares). The pusher moves at every step,
    the object only when pushed, so what the readout moves with the pusher alone is taken out."""
    place, angle = readout.raw(points, vectors)
    feats = readout.basis(place, angle, pusher)
    same = episode_index[1:] == episode_index[:-1]
    step = (feats[1:] - feats[:-1])[same]
    turn = np.angle(np.exp(1j * (angle[1:] - angle[:-1])))[same]
    angle_coef, *_ = np.linalg.lstsq(step, turn, rcond=None)
    world = readout.to_world(place)
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x_of = np.concatenate([cos * feats, -sin * feats], 1)  # world x of the shift, over [cx, cy]
    y_of = np.concatenate([sin * feats, cos * feats], 1)
    design = np.concatenate([(x_of[1:] - x_of[:-1])[same], (y_of[1:] - y_of[:-1])[same]])
    moves = np.concatenate([(world[1:, 0] - world[:-1, 0])[same], (world[1:, 1] - world[:-1, 1])[same]])
    place_coef, *_ = np.linalg.lstsq(design, moves, rcond=None)
    return dataclasses.replace(readout, angle_coef=angle_coef, place_coef=place_coef)


def pose_state(readout: PoseReadout, points: np.ndarray, vectors: np.ndarray,
               pusher: np.ndarray) -> np.ndarray:
    """Pose states (N, 6) float32 = [pusher x, y (fused, metres), the object's place (keypoint
    units), cos, sin of its angle]: what the controller may know."""
    place, angle = readout(points, vectors, pusher)
    return np.concatenate([pusher, place, np.cos(angle)[:, None], np.sin(angle)[:, None]], 1).astype(np.float32)


def pose_frames(frames: FrameArrays, readout: PoseReadout, points: np.ndarray,
                vectors: np.ndarray) -> FrameArrays:
    """``frames`` with :func:`pose_state` as ``state``."""
    return dataclasses.replace(frames, state=pose_state(readout, points, vectors, frames.state[:, :2]))


class PoseDynamics(nn.Module):
    """``RelativeDynamics`` (the object's frame) on pose states (N, 6) of :func:`pose_frames`. The
    place goes to world metres through the camera's ``image_map`` (2, 3), the keypoint grid's
    scale and a learned shrink; ``std`` (6,) scales the training loss."""

    def __init__(self, hidden: int, std: torch.Tensor, image_map: np.ndarray, grid_scale: float) -> None:
        super().__init__()
        self.inner = RelativeDynamics(hidden, std, rotate=True)
        self.register_buffer("map", torch.as_tensor(image_map, dtype=torch.float32))
        self.register_buffer("map_inv", torch.linalg.inv(self.map[:, :2]))
        self.grid_scale = grid_scale
        self.log_shrink = nn.Parameter(torch.zeros(()))

    @property
    def std(self) -> torch.Tensor:
        return self.inner.std

    @property
    def shrink(self) -> float:
        return float(self.log_shrink.detach().exp())

    def to_world(self, place: torch.Tensor) -> torch.Tensor:
        """Keypoint coordinates (..., 2) -> world x, y (..., 2)."""
        image = place * self.log_shrink.exp() / self.grid_scale - self.map[:, 2]
        return image @ self.map_inv.T

    def to_image(self, world: torch.Tensor) -> torch.Tensor:
        return (world @ self.map[:, :2].T + self.map[:, 2]) * self.grid_scale / self.log_shrink.exp()

    def world_state(self, s: torch.Tensor) -> torch.Tensor:
        """Pose states (..., 6) -> states in world units (..., 6), as ``push_t_distance`` reads them."""
        return torch.cat([s[..., :2], self.to_world(s[..., 2:4]), s[..., 4:6]], -1)

    def rollout(self, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Pose states (N, 6) and actions (N, H, A) -> predicted pose states (N, H, 6)."""
        world = self.inner.rollout(self.world_state(s0), actions)
        return torch.cat([world[..., :2], self.to_image(world[..., 2:4]), world[..., 4:6]], -1)


def readout_error(readout_state: np.ndarray, true_state: np.ndarray,
                  to_world: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
    """For reading only: the readout's angle error (deg, rms after the best constant offset) and
    place error (cm in ``to_world``'s metres, rms after the best affine fit on the true pose)
    against the true state."""
    angle = np.arctan2(readout_state[:, 5], readout_state[:, 4])
    d = np.angle(np.exp(1j * (angle - np.arctan2(true_state[:, 5], true_state[:, 4]))))
    d = np.angle(np.exp(1j * (d - np.angle(np.exp(1j * d).mean()))))
    world = to_world(torch.as_tensor(readout_state[:, 2:4])).detach().numpy()
    x = np.concatenate([true_state[:, 2:6], np.ones((len(true_state), 1))], 1)
    coef, *_ = np.linalg.lstsq(x, world, rcond=None)
    res = world - x @ coef
    return float(np.degrees(np.sqrt((d ** 2).mean()))), float(100 * np.sqrt((res ** 2).sum(1).mean()))


@torch.no_grad()
def plan_episodes(model: PoseDynamics, encoder: KeypointEncoder, readout: PoseReadout,
                  mask: AgentMask | None, pusher_weight: float, episodes: int, seed: int) -> list[dict]:
    env = make_env("push_t", goal_mode="push", goal_push_steps=25)

    def pose(obs: dict) -> torch.Tensor:
        points, vectors = read_keypoints(encoder, obs["pixels"][None], obs["state"][None, :2], mask)
        return torch.from_numpy(pose_state(readout, points, vectors, obs["state"][None, :2]))

    rows = []
    try:
        for i in trange(episodes, desc="episodes"):
            obs, _ = env.reset(seed=episode_seed(seed, i))
            # the goal image and its pusher (the goal state's first 2 dims; the block's are never read)
            goal = model.world_state(pose(env.unwrapped.goal_observation())[0])

            def make_cost(obs: dict, prev: torch.Tensor, goal: torch.Tensor = goal) -> CostFn:
                s0 = pose(obs)

                def cost(actions: torch.Tensor) -> torch.Tensor:
                    pred = model.world_state(model.rollout(s0.expand(len(actions), -1), actions))
                    pusher = (pred[..., :2] - goal[:2]).pow(2).sum(-1)
                    return (push_t_distance(pred, goal) + pusher_weight * pusher).mean(1)
                return cost

            rows.append(cem_episode(env, obs, make_cost, cem_seed=i))
    finally:
        env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a Push-T keypoint checkpoint with vectors (model.keypoint_vectors >= 1)")
    parser.add_argument("--data", type=Path, required=True, help="training dataset (push_t)")
    parser.add_argument("--held-out", type=Path, required=True, help="held-out dataset (push_t)")
    parser.add_argument("--keypoints", type=int, nargs="+", default=None,
                        help="the object's keypoints (default: found without labels)")
    parser.add_argument("--raw", action="store_true",
                        help="read the pose as it is, without the slowness correction for the pusher")
    parser.add_argument("--no-mask", action="store_true",
                        help="encode the frames as they are, without painting the pusher out first "
                             "(checkpoints trained with model.agent_mask always paint it out)")
    parser.add_argument("--train-steps", type=int, default=5000)
    parser.add_argument("--horizon", type=int, default=8, help="open-loop steps per training window")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--pusher-weight", type=float, nargs="+", default=[0.3],
                        help="weights of the pusher's squared distance to the goal image's, one row each")
    parser.add_argument("--eval-episodes", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2000], help="evaluation seeds, one row each")
    args = parser.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    encoder = model.encoder
    if not isinstance(encoder, KeypointEncoder) or not encoder.num_vectors:
        raise SystemExit(f"{args.checkpoint}: needs a keypoint encoder with vectors (trained with "
                         "model.keypoints > 0 and model.keypoint_vectors >= 1, e.g. model=push_t)")
    train = build_frame_cache(LeRobotDataset(args.data), progress=False)
    held = build_frame_cache(LeRobotDataset(args.held_out), progress=False)
    env = make_env("push_t")
    image_map, env_mask = env.unwrapped.image_map(), AgentMask.from_value(env.unwrapped.agent_mask())
    env.close()
    sign = float(np.sign(np.linalg.det(image_map[:, :2])))  # the image's y points down: -1
    t0 = time.perf_counter()
    mask = model.spec.agent_mask or (None if args.no_mask else env_mask)  # a masked checkpoint's own
    kp_train = read_keypoints(encoder, train.pixels, train.state[:, :2], mask)
    kp_held = read_keypoints(encoder, held.pixels, held.state[:, :2], mask)
    grid = keypoint_grid_scale(encoder.image_size)
    readout = find_object(*kp_train, sign, image_map * grid, args.keypoints)
    if not args.raw:
        readout = fit_slowness(readout, *kp_train, train.state[:, :2], train.episode_index)
    pose_train, pose_held = pose_frames(train, readout, *kp_train), pose_frames(held, readout, *kp_held)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        dyn = PoseDynamics(args.hidden, torch.from_numpy(pose_train.state).std(0), image_map, grid)
    fit_dynamics(dyn, pose_train, args.train_steps, args.horizon, seed=0)
    build_s = time.perf_counter() - t0
    angle_deg, place_cm = readout_error(pose_held.state, held.state, dyn.to_world)
    ratios = error_ratios(dyn, pose_held)
    print(f"\n# Push-T push goals from images{'' if mask is None else ', pusher painted out'}: "
          f"pose readout of keypoints {list(readout.members)}, "
          f"{'raw' if args.raw else 'slowness-corrected'} "
          f"(held out, against the true pose: angle {angle_deg:.1f} deg rms, place {place_cm:.2f} cm rms); "
          f"object-frame dynamics ({args.train_steps} steps, horizon {args.horizon}, hidden {args.hidden}; "
          f"learned shrink {dyn.shrink:.3f}; {build_s / 60:.1f} min); held-out 10-step error / copying "
          f"of the readout: " + ", ".join(f"{g} {ratios[g]:.3f}" for g in GROUPS) + "; flat CEM 64 x 3, horizon 16\n")
    print("| pusher weight | seed | pairs | success % | 95 % CI | final distance | plan ms |\n"
          "|---:|---:|---:|---:|---|---:|---:|")
    for w in args.pusher_weight:
        for seed in args.seeds:
            rows = plan_episodes(dyn, encoder, readout, mask, w, args.eval_episodes, seed)
            print(f"| {w:g} | {seed} | {success_cells(rows)}", flush=True)


if __name__ == "__main__":
    main()
