"""Planning latency per control step of the maze controllers, per device, in one run.

    python bench/plan_latency.py                                   # untrained demo-sized model, cpu (+ cuda)
    python bench/plan_latency.py --checkpoint runs/demo/train/checkpoint --devices cpu cuda

Each controller (a ``configs/controllers`` preset, as ``hmpc-demo`` runs it) plans ``--episodes``
short PointMaze episodes of ``--steps`` control steps on each device, from the same seeds; only
``controller.act`` is timed (it returns a CPU action, so GPU work is finished inside the timing),
after ``--warmup`` untimed steps per device and controller. Without ``--checkpoint`` an untrained
model of ``configs/model/<--model>.yaml``'s size is used: its planning compute is a trained
model's, except that gradient descent may stop early at other iterations (the table shows the
mean iterations per step). The issue's goal: <= 150 ms on 2 CPU cores, <= 20 ms on one GPU.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from hmpc.controllers import ControllerSpec
    from hmpc.world_model import WorldModel

ROOT = Path(__file__).parents[1]


def _model(checkpoint: str | None, preset: str, image_size: int, device: torch.device) -> WorldModel:
    from omegaconf import OmegaConf

    from hmpc.checkpoint import load_checkpoint
    from hmpc.cli.common import model_spec
    from hmpc.world_model import build_world_model

    if checkpoint:
        return load_checkpoint(checkpoint, device)[0]
    spec, _ = model_spec(OmegaConf.load(ROOT / "configs" / "model" / f"{preset}.yaml"), image_size, 2)
    return build_world_model(spec, 0, device).eval()


def _spec(name: str) -> ControllerSpec:
    from omegaconf import OmegaConf

    from hmpc.controllers import ControllerSpec

    (label, values), = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "controllers" / f"{name}.yaml")).items()
    return ControllerSpec(name=label, **values)


def measure(model: WorldModel, spec: ControllerSpec, device: torch.device, env: Any, episodes: int,
            steps: int, warmup: int) -> dict[str, float]:
    """Per-step planning times (ms) and optimiser iterations of ``spec`` over seeded episodes."""
    from hmpc.controllers import build_controller
    from hmpc.evaluate import observation_for

    times, iters = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        goal = env.unwrapped.goal_observation()
        ctrl = build_controller(spec, model, env.action_space.shape[0], episode, device, env=env)
        ctrl.reset(observation_for(ctrl, obs), observation_for(ctrl, goal))
        for step in range(steps + (warmup if episode == 0 else 0)):
            t0 = time.perf_counter()
            action, info = ctrl.act(observation_for(ctrl, obs))
            ms = 1000 * (time.perf_counter() - t0)
            if episode > 0 or step >= warmup:
                times.append(ms)
                iters.append(float(info.get("iters", np.nan)))
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    return {"mean": float(np.mean(times)), "p50": float(np.percentile(times, 50)),
            "p95": float(np.percentile(times, 95)), "iters": float(np.nanmean(iters)) if iters else float("nan"),
            "steps": float(len(times))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="a world-model checkpoint folder (default: untrained)")
    parser.add_argument("--model", default="small", help="configs/model preset of the untrained model")
    parser.add_argument("--controllers", nargs="+", default=["hierarchical", "flat_gd", "flat_cem"])
    parser.add_argument("--layout", default="medium", help="PointMaze layout")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu and cuda if any")
    args = parser.parse_args()
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    from robots import make_env

    env = make_env("point_maze", layout=args.layout, image_size=64, max_episode_steps=args.steps + args.warmup)
    rows = []
    try:
        for name in devices:
            device = torch.device(name)
            model = _model(args.checkpoint, args.model, 64, device)
            label = torch.cuda.get_device_name(device) if device.type == "cuda" else (
                f"cpu ({torch.get_num_threads()} threads)")  # fmt: skip
            for controller in args.controllers:
                r = measure(model, _spec(controller), device, env, args.episodes, args.steps, args.warmup)
                rows.append((label, controller, r))
                print(f"{label} {controller}: {r['mean']:.1f} ms mean", flush=True)
    finally:
        env.close()
    model_name = args.checkpoint or f"untrained model={args.model}"
    print(f"\n# planning latency per control step: {model_name}, PointMaze {args.layout} 64x64, "
          f"{args.episodes} episodes x {args.steps} steps, {os.cpu_count()} cores\n")
    print("| device | controller | mean ms | p50 ms | p95 ms | optimiser iterations | steps timed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, controller, r in rows:
        print(f"| {label} | {controller} | {r['mean']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | "
              f"{r['iters']:.1f} | {r['steps']:.0f} |")


if __name__ == "__main__":
    main()
