"""Does an encoder read the augmentation instead of the scene? (``trainer.augment``)

    python bench/jitter_shortcut.py DATASET CHECKPOINT [CHECKPOINT ...] [--shift 4] [--episodes 10]
    python bench/jitter_shortcut.py DATASET CHECKPOINT ... --photometric 0.2 0.3  # brightness, contrast

Encodes every 10th frame of the first ``--episodes`` episodes of DATASET under 25 jitters and
prints, per checkpoint, the level-1 latents' std across the jitters of the same frame and across
frames under the same jitter, averaged over dims. Jitters: whole-pixel shifts (dy, dx) on a grid
of 5 (or 2 * shift + 1) offsets from -shift to shift through 0, each way, edges repeated as
``trainer.augment.shift`` does; or, with ``--photometric B C``, 25 seeded draws of brightness
U(-B, B) and contrast U(1 - C, 1 + C) by ``hmpc.augment.augment_windows`` itself. An encoder of the scene
varies more across frames; one that keyed on the augmentation (drawn once per training window,
``trainer.augment.per_frame=false``: constant within a window, different between windows, what
the variance term rewards) varies across jitters and hardly across frames. Encoders that fuse
``observation.state`` (``model.state_dim`` > 0) are not supported.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from hmpc.augment import ImageAugment, augment_windows, shift_frames
from hmpc.checkpoint import load_checkpoint
from hmpc.data import LeRobotDataset


def jitters(x: torch.Tensor, args: argparse.Namespace) -> tuple[list[torch.Tensor], int]:
    """The jittered copies of x and the index of the plain one (-1: none is plain)."""
    if args.photometric:  # all frames one window: one draw for them all, as the trainer draws it
        aug = ImageAugment(brightness=args.photometric[0], contrast=args.photometric[1], per_frame=False)
        rng = np.random.default_rng(0)
        return [augment_windows(x[None], aug, rng)[0] for _ in range(25)], -1
    step = args.shift // 2 if args.shift % 2 == 0 else 1  # 4 -> -4, -2, 0, 2, 4; 3 -> -3 .. 3
    offsets = list(range(-args.shift, args.shift + 1, step))
    views = [shift_frames(x, torch.tensor([[dy, dx]]).expand(len(x), 2)) for dy in offsets for dx in offsets]
    return views, offsets.index(0) * (len(offsets) + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--shift", type=int, default=4)
    ap.add_argument("--photometric", type=float, nargs=2, default=None, metavar=("B", "C"))
    ap.add_argument("--episodes", type=int, default=10)
    args = ap.parse_args()
    if args.shift < 1:
        ap.error(f"--shift {args.shift}: give a shift >= 1 pixel")
    ds = LeRobotDataset(args.dataset)
    n = min(args.episodes, len(ds))
    px = np.concatenate([ds.load_episode(i).pixels[::10] for i in range(n)])  # (N, H, W, 3)
    x = torch.from_numpy(px).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    views, plain_at = jitters(x, args)
    kind = "brightness/contrast draws" if args.photometric else "shifts"
    print(f"| checkpoint | std across {len(views)} {kind} (same frame) | "
          f"std across {x.shape[0]} frames (same jitter) | unjittered, across frames |")
    print("|---|---:|---:|---:|")
    for ck in args.checkpoints:
        model, _ = load_checkpoint(ck)
        model.eval()
        with torch.no_grad():
            z = torch.stack([model.encode(v) for v in views])  # (jitters, N, D)
            plain = z[plain_at] if plain_at >= 0 else model.encode(x)
        print(f"| {ck} | {z.std(0).mean():.3f} | {z.std(1).mean():.3f} | {plain.std(0).mean():.3f} |")


if __name__ == "__main__":
    main()
