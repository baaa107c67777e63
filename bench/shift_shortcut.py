"""Does an encoder read the image shift instead of the scene? (``trainer.augment.shift``)

    python bench/shift_shortcut.py DATASET CHECKPOINT [CHECKPOINT ...] [--shift 4] [--episodes 10]

Encodes every 10th frame of the first ``--episodes`` episodes of DATASET under each whole-pixel
shift (dy, dx) on a grid of 5 (or 2 * shift + 1) offsets from -shift to shift through 0, each way
(edges repeated, as ``trainer.augment.shift`` does), and prints, per checkpoint, the level-1 latents' std across shifts of the same frame and
across frames under the same shift, averaged over dims. An encoder of the scene varies more across
frames; one that keyed on the augmentation (constant within a training window, different between
windows: what the variance term rewards) varies across shifts and hardly across frames. Encoders
that fuse ``observation.state`` (``model.state_dim`` > 0) are not supported.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from hmpc.checkpoint import load_checkpoint
from hmpc.data import LeRobotDataset


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) moved by (dy, dx) whole pixels, edge pixels repeated."""
    h, w = x.shape[-2:]
    rows = (torch.arange(h) + dy).clamp(0, h - 1)
    cols = (torch.arange(w) + dx).clamp(0, w - 1)
    return x[:, :, rows][:, :, :, cols]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--shift", type=int, default=4)
    ap.add_argument("--episodes", type=int, default=10)
    args = ap.parse_args()
    ds = LeRobotDataset(args.dataset)
    n = min(args.episodes, len(ds))
    px = np.concatenate([ds.load_episode(i).pixels[::10] for i in range(n)])  # (N, H, W, 3)
    x = torch.from_numpy(px).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    if args.shift < 1:
        ap.error(f"--shift {args.shift}: give a shift >= 1 pixel")
    step = args.shift // 2 if args.shift % 2 == 0 else 1  # 4 -> -4, -2, 0, 2, 4; 3 -> -3 .. 3
    offsets = list(range(-args.shift, args.shift + 1, step))
    print(f"| checkpoint | std across {len(offsets) ** 2} shifts (same frame) | "
          f"std across {x.shape[0]} frames (same shift) | unshifted, across frames |")
    print("|---|---:|---:|---:|")
    for ck in args.checkpoints:
        model, _ = load_checkpoint(ck)
        model.eval()
        with torch.no_grad():
            z = torch.stack([model.encode(shifted(x, dy, dx)) for dy in offsets for dx in offsets])
        plain = z[offsets.index(0) * (len(offsets) + 1)]  # (dy, dx) = (0, 0)
        print(f"| {ck} | {z.std(0).mean():.3f} | {z.std(1).mean():.3f} | {plain.std(0).mean():.3f} |")


if __name__ == "__main__":
    main()
