"""World-model training throughput: frames/s of optimiser steps per device, in one run.

    python bench/train_throughput.py                         # model=small on cpu (+ cuda if any)
    python bench/train_throughput.py --model small3 --batch 64 --steps 40 --devices cpu cuda
    python bench/train_throughput.py --augment shift=4 blur=1.0   # each device with and without

A small PointMaze dataset is collected into a temporary folder and decoded once into the frame
cache, as ``hmpc-train`` does (``--frames synthetic``: seeded random frames of the same shapes, for
a machine without the simulator or video codecs); then each device runs ``--steps`` full optimiser steps (sample
windows, multi-level loss, backward, AdamW) after ``--warmup`` untimed ones. frames/s counts
every frame of every window (batch x window length). Validation, logging and checkpoints are
left out: this is the training step alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from hmpc.data.windows import FrameArrays


def _maze_frames(tmp: Path) -> FrameArrays:
    """16 episodes x 60 steps of correlated exploration in the U-maze, decoded as hmpc-train does."""
    from hmpc.data import LeRobotDataset, build_frame_cache
    from hmpc.rollout import EnvSpec, PolicySpec, collect

    root = collect(EnvSpec("point_maze", {"layout": "umaze", "image_size": 64}), PolicySpec("correlated"),
                   tmp / "ds", episodes=16, steps=60, seed=0, workers=0, progress=False)
    return build_frame_cache(LeRobotDataset(root), progress=False)


def _synthetic_frames(episodes: int = 16, steps: int = 60) -> FrameArrays:
    """The maze data's shapes (64x64 RGB, 2-D actions, 4-D state) with seeded random content."""
    from hmpc.data.windows import FrameArrays

    rng = np.random.default_rng(0)
    n = episodes * steps
    lengths = np.full(episodes, steps, dtype=np.int64)
    return FrameArrays(pixels=rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
                       state=rng.standard_normal((n, 4)).astype(np.float32),
                       action=rng.uniform(-1, 1, (n, 2)).astype(np.float32), has_action=np.ones(n, dtype=bool),
                       episode_index=np.repeat(np.arange(episodes), steps),
                       episode_starts=np.arange(0, n, steps, dtype=np.int64), episode_lengths=lengths)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small", help="a configs/model preset")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu and cuda if any")
    parser.add_argument("--malloc", choices=["keep", "default"], default="keep",
                        help="keep: glibc keeps freed memory, as hmpc-train sets it "
                             "(hmpc.runtime.keep_freed_memory); default: glibc's defaults")
    parser.add_argument("--frames", choices=["maze", "synthetic"], default="maze",
                        help="maze: a small collected PointMaze dataset (needs pybullet and av); "
                             "synthetic: seeded random 64x64 frames of the same shapes (the step's compute "
                             "does not depend on the pixels)")
    parser.add_argument("--augment", nargs="*", default=None, metavar="KEY=VALUE",
                        help="trainer.augment settings (e.g. shift=4 blur=1.0): adds a row per device "
                             "with the windows augmented, as hmpc-train does")
    args = parser.parse_args()
    if args.malloc == "keep":
        from hmpc.runtime import keep_freed_memory

        keep_freed_memory()
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    from omegaconf import OmegaConf

    from hmpc.augment import ImageAugment, augment_batch
    from hmpc.cli.common import model_spec
    from hmpc.data import WindowSampler
    from hmpc.objective import world_model_loss
    from hmpc.world_model import build_world_model

    preset = OmegaConf.load(Path(__file__).parents[1] / "configs" / "model" / f"{args.model}.yaml")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        frames = _maze_frames(Path(tmp)) if args.frames == "maze" else _synthetic_frames()
        spec, weights = model_spec(preset, frames.pixels.shape[1], frames.action.shape[1])
        window = 1 + 3 * spec.span(spec.num_levels)  # trainer.top_steps = 3
        sampler = WindowSampler(frames, window)
        augs = [("", ImageAugment())]
        if args.augment is not None:
            kv = dict(item.split("=", 1) for item in args.augment)
            aug = ImageAugment(**{k: json.loads(v) for k, v in kv.items()})  # 4, 1.0, false
            augs.append((f", augment {' '.join(args.augment)}", aug))
        for name, (suffix, aug) in ((n, a) for n in devices for a in augs):
            device = torch.device(name)
            model = build_world_model(spec, 0, device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            rng = np.random.default_rng(0)
            t0 = 0.0
            for i in range(args.warmup + args.steps):
                if i == args.warmup:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                batch = augment_batch(sampler.sample(args.batch, rng, device), aug, rng)
                loss, _ = world_model_loss(model, batch, weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            label = torch.cuda.get_device_name(device) if device.type == "cuda" else (
                f"cpu ({torch.get_num_threads()} threads)")  # fmt: skip
            rows.append((label + suffix, args.steps / seconds, args.steps * args.batch * window / seconds))
    print(f"# training throughput: model={args.model}, batch {args.batch} x window {window} "
          f"frames (64x64, {args.frames}), {args.steps} steps, {os.cpu_count()} cores, malloc {args.malloc}\n")  # fmt: skip
    print("| device | steps/s | frames/s | ratio vs first |")
    print("|---|---:|---:|---:|")
    for label, sps, fps in rows:
        print(f"| {label} | {sps:.2f} | {fps:.0f} | {fps / rows[0][2]:.2f}x |")


if __name__ == "__main__":
    main()
