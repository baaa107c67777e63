"""Evaluation throughput: episodes/s of hmpc-eval with 1, 2 and W Ray workers, in one run.

    python bench/eval_throughput.py                       # untrained small model, flat GD
    python bench/eval_throughput.py --checkpoint runs/wm/checkpoint --workers 1 2 4 --gpus 0.25

Each row evaluates the same episodes (same seeds) with the same controller; Ray is started
before timing, so only actor start-up (imports, env, model) and the episodes are inside it, as
in a real run. Without ``--checkpoint`` an untrained model of ``configs/model/small.yaml``'s
size is used: the planning compute is the same as a trained one's. ``--gpus`` sets
``gpus_per_worker`` (fractions let several workers share one card). Goal: ratio >= 0.8 W on W
free cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def _untrained_checkpoint(folder: Path, image_size: int) -> Path:
    from hmpc.checkpoint import save_checkpoint
    from hmpc.world_model import LevelSpec, WorldModelSpec, build_world_model

    spec = WorldModelSpec(image_size=image_size, action_dim=2, latent_dim=32,
                          widths=(16, 32, 64, 64), hidden=128,
                          levels=(LevelSpec(latent_dim=16, k=4, macro_dim=4, hidden=128),))  # fmt: skip
    return save_checkpoint(folder / "checkpoint", build_world_model(spec, 0, "cpu"), {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--controller", default="flat_gd", help="a configs/controllers name")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpus", type=float, default=0.0, help="gpus_per_worker")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from omegaconf import OmegaConf

    from hmpc.controllers import ControllerSpec
    from hmpc.evaluate import EvalConfig, evaluate
    from hmpc.parallel import init_ray
    from hmpc.rollout import EnvSpec

    cfg_file = Path(__file__).parents[1] / "configs" / "controllers" / f"{args.controller}.yaml"
    (name, values), = OmegaConf.to_container(OmegaConf.load(cfg_file)).items()
    spec = ControllerSpec(name=name, **values)
    env = EnvSpec("point_maze", {"layout": "umaze", "image_size": 64})
    init_ray(num_gpus=None)
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or _untrained_checkpoint(Path(tmp), 64)
        for w in args.workers:
            cfg = EvalConfig(episodes=args.episodes, max_steps=args.max_steps, workers=w,
                             videos=0, device=args.device, gpus_per_worker=args.gpus)  # fmt: skip
            t0 = time.perf_counter()
            info = evaluate(env, ckpt, [spec], cfg, Path(tmp) / f"eval-w{w}", progress=False)
            seconds = time.perf_counter() - t0
            rows.append((w, args.episodes / seconds, seconds))
            failed += [f"{r['episode_id']}: {r['error']}" for r in info["per_episode"] if r["error"]]
            devices = sorted({str(r.get("device")) for r in info["per_episode"]})
            print(f"{w} worker(s): {args.episodes / seconds:.3f} episodes/s ({seconds:.1f} s) on {devices}, "
                  f"{sum(bool(r['error']) for r in info['per_episode'])} failed", flush=True)
    base = rows[0][1]
    print(f"# eval throughput: {args.controller}, {args.episodes} episodes x {args.max_steps} "
          f"steps, gpus_per_worker={args.gpus}, {os.cpu_count()} cores\n")  # fmt: skip
    print(f"| workers | episodes/s | seconds | ratio vs {rows[0][0]} worker(s) |")
    print("|---:|---:|---:|---:|")
    for w, eps, seconds in rows:
        print(f"| {w} | {eps:.3f} | {seconds:.1f} | {eps / base:.2f}x |")
    if failed:  # a fast failure is no throughput: the ratio above would mean nothing
        raise SystemExit(f"{len(failed)} episodes failed, e.g. {failed[0]}")


if __name__ == "__main__":
    main()
