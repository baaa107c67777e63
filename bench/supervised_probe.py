"""Can the encoder architecture see a state variable at all? Train it *supervised* on it.

    python bench/supervised_probe.py --data OUT/dataset --held-out OUT/held_out --dims 4 5

(``OUT`` from ``bench/probe.py --env push_t --out OUT``; dims 4, 5 are the block's cos, sin.)
Builds the level-1 encoder of a model preset (``configs/model/<preset>.yaml``: widths, latent
size, keypoints) with a linear head, regresses ``observation.state[dims]`` from single frames for ``--steps``
steps and prints the held-out R² at each checkpoint step. A high supervised R² where the
self-supervised latent's probe is low puts the fault in the training objective, not in the
encoder's capacity or the image resolution.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from hmpc.data import LeRobotDataset
from hmpc.data.windows import build_frame_cache
from hmpc.models import make_encoder
from hmpc.runtime import seeded

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "model"


def batch(frames, idx: np.ndarray, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames uint8 (B, 3, H, W) and targets (B, len(dims)) at global frame indices ``idx``."""
    pixels = torch.from_numpy(np.ascontiguousarray(frames.pixels[idx])).permute(0, 3, 1, 2)
    return pixels, torch.from_numpy(frames.state[idx][:, dims])


@torch.no_grad()
def r2(encoder: torch.nn.Module, head: torch.nn.Linear, frames, dims: list[int]) -> float:
    """Mean R² over ``dims`` on every other frame of ``frames``."""
    x, y = batch(frames, np.arange(0, frames.pixels.shape[0], 2), dims)
    pred = torch.cat([head(encoder(x[i : i + 512])) for i in range(0, len(x), 512)])
    return float((1 - (pred - y).pow(2).sum(0) / (y - y.mean(0)).pow(2).sum(0)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="training dataset (LeRobot folder)")
    parser.add_argument("--held-out", required=True, help="held-out dataset (other seeds)")
    parser.add_argument("--dims", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--preset", default="push_t")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    preset = OmegaConf.load(PRESETS / f"{args.preset}.yaml")
    train = build_frame_cache(LeRobotDataset(args.data), progress=False)
    held = build_frame_cache(LeRobotDataset(args.held_out), progress=False)
    with seeded(args.seed):
        encoder = make_encoder(train.pixels.shape[1], preset.latent_dim, tuple(preset.widths),
                               keypoints=preset.get("keypoints", 0))
        head = torch.nn.Linear(preset.latent_dim, len(args.dims))
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    print(f"# supervised {args.preset} encoder -> state dims {args.dims}, batch {args.batch_size}")
    print("| step | held-out R² | s |\n|---:|---:|---:|")
    for step in range(1, args.steps + 1):
        x, y = batch(train, rng.integers(0, train.pixels.shape[0], args.batch_size), args.dims)
        loss = (head(encoder(x)) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 1000 == 0 or step == args.steps:
            print(f"| {step} | {r2(encoder, head, held, args.dims):.3f} | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
