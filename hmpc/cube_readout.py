"""A cube readout for the Panda cube tasks: camera image (+ proprioception) -> cube pose, supervised.

What controllers of kind "cube" (``hmpc.cube_mpc``) see the cube and the goal image's cube
through, and what ``bench/panda_state_model.py --perception`` puts between the true state and the
planner. Trained on the dataset's own ``observation.state`` labels (cube xyz and quaternion, logged
by the simulator at collection time; never read while acting): a state-supervised readout, unlike
the label-free Push-T pose readout of ``hmpc-pose``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import trange

from hmpc.data.windows import FrameArrays
from hmpc.runtime import seeded

PROPRIO = slice(0, 4)  # end effector xyz, gripper width: what the controller may see
CUBE_POSE = slice(7, 14)  # cube xyz, quaternion (x, y, z, w)
READOUT_BATCH = 64  # frames per readout training step


def _grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1], (h, w) each: y down the rows, x along them."""
    ys, xs = torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device)
    return torch.meshgrid(ys, xs, indexing="ij")


class CubeReadout(nn.Module):
    """A CNN with a spatial softmax: ``keypoints`` expected (x, y) places and peak values of its
    last feature maps (at half resolution), with proprioception (or zeros, ``proprio=False``),
    through an MLP to the cube pose (7,): xyz (m) and quaternion."""

    def __init__(self, channels: int = 32, keypoints: int = 16, proprio: bool = True) -> None:
        super().__init__()
        self.proprio = proprio
        self.conv = nn.Sequential(
            nn.Conv2d(5, 16, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(16, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, keypoints, 3, padding=1),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(3 * keypoints + 4, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(),
                                  nn.Linear(256, 7))  # fmt: skip

    def forward(self, pixels: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, H, W, 3), proprioception (N, 4) -> cube poses (N, 7)."""
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        n, _, h, w = x.shape
        gy, gx = _grid(h, w, x.device)
        x = torch.cat([x, gx.expand(n, 1, h, w), gy.expand(n, 1, h, w)], dim=1)  # CoordConv
        f = self.conv(x)
        gy, gx = _grid(*f.shape[-2:], x.device)
        f = f.flatten(2)  # (N, K, h * w)
        p = f.softmax(-1)
        places = torch.cat([(p * gx.flatten()).sum(-1), (p * gy.flatten()).sum(-1), f.amax(-1).tanh()], -1)
        prop = proprio if self.proprio else torch.zeros_like(proprio)
        return self.head(torch.cat([places, prop], dim=-1))


def extra_per_batch(share: float, batch: int = READOUT_BATCH, key: str = "extra_share") -> int:
    """Frames of each readout batch drawn from the extra data: ``share`` of ``batch``, refused (naming
    ``key``) unless it leaves at least one frame to each side."""
    n = round(share * batch)
    if not 1 <= n <= batch - 1:
        raise ValueError(f"{key}={share}: the share of each readout batch of {batch} drawn from the extra data "
                         f"must give 1 to {batch - 1} frames (e.g. 0.25)")
    return n


def _batch(sources: Sequence[FrameArrays], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and states of frames ``idx`` (sorted) counted across ``sources`` back to back."""
    starts = np.cumsum([0] + [f.num_frames for f in sources])
    px, st = [], []
    for f, lo, hi in zip(sources, starts[:-1], starts[1:], strict=True):
        local = idx[(idx >= lo) & (idx < hi)] - lo
        if len(local):
            px.append(np.asarray(f.pixels[local]))
            st.append(f.state[local])
    return np.concatenate(px), np.concatenate(st)


def train_readout(frames: FrameArrays, steps: int, seed: int, proprio: bool = True,
                  batch: int = READOUT_BATCH, device: torch.device | str = "cpu", progress: bool = True,
                  extra: Sequence[FrameArrays] = (), extra_share: float = 0.25) -> CubeReadout:
    """Fit a :class:`CubeReadout` to the frames' cube poses (``observation.state[7:14]``):
    squared error of xyz (m) + 0.01 x that of the quaternion; AdamW, cosine schedule, batches
    drawn from ``seed`` alone. With ``extra`` datasets (for example the planner's own episodes,
    :mod:`skills.cube_planner`), ``extra_share`` of every batch is drawn from them (uniformly over
    their frames) and the rest from ``frames``."""
    for f in (frames, *extra):
        if f.state.shape[1] < CUBE_POSE.stop:
            raise ValueError(f"observation.state has {f.state.shape[1]} dims; a cube readout needs the "
                             f"Panda cube tasks' {CUBE_POSE.stop} (end effector, gripper, velocity, cube pose)")
    n_extra = extra_per_batch(extra_share, batch) if extra else 0
    total_extra = sum(f.num_frames for f in extra)
    with seeded(seed):
        net = CubeReadout(proprio=proprio).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng = np.random.default_rng(seed)
    for _ in trange(steps, desc="readout", mininterval=5, disable=not progress):
        idx = np.sort(rng.integers(0, frames.num_frames, batch - n_extra))
        pixels, state = np.array(frames.pixels[idx]), frames.state[idx]
        if n_extra:
            more = _batch(extra, np.sort(rng.integers(0, total_extra, n_extra)))
            pixels, state = np.concatenate([pixels, more[0]]), np.concatenate([state, more[1]])
        state = torch.from_numpy(state).to(device)
        pred = net(torch.from_numpy(pixels).to(device), state[:, PROPRIO])
        target = state[:, CUBE_POSE]
        loss = (pred[:, :3] - target[:, :3]).pow(2).sum(-1).mean() + 0.01 * (pred[:, 3:] - target[:, 3:]).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.no_grad()
def readout_errors(net: CubeReadout, frames: FrameArrays) -> dict[str, float]:
    """Mean cube xyz error (cm) over all frames, those with the cube on the table and in the air
    (a key only where there are such frames)."""
    errs, device = [], next(net.parameters()).device
    for j in range(0, frames.num_frames, 512):
        state = torch.from_numpy(frames.state[j : j + 512]).to(device)
        pred = net(torch.from_numpy(np.array(frames.pixels[j : j + 512])).to(device), state[:, PROPRIO])
        errs.append((pred[:, :3] - state[:, CUBE_POSE][:, :3]).norm(dim=-1).cpu())
    err, z = torch.cat(errs).numpy() * 100, frames.state[:, CUBE_POSE.start + 2]  # the cube's height
    parts = {"all": err, "table": err[z < 0.03], "air": err[z >= 0.03]}
    return {k: float(v.mean()) for k, v in parts.items() if len(v)}
