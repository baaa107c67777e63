"""Gradient-based low level against CEM: success and planning time per control step, one model.

    python bench/gd_vs_cem.py --checkpoint outputs/demo/<run>/train/checkpoint   # ~15 min, 2 CPUs

Flat MPC on the demo's task (U-maze, 20 seeded start/goal pairs, 100 steps, horizon 16), one
``hmpc-eval`` per row with the controller's optimiser overridden, same model, same seeds:
- CEM at the demo budget (64 samples x 3 iterations) and at a large one (512 x 10), the
  budget sampling planners are usually quoted at;
- gradient descent (Adam through the model, warm-started from the shifted previous plan) with
  4 restarts x 13 iterations (``flat_gd``), 1 x 13, 1 x 5, 1 x 2 and 1 x 1 (replanning every
  step from the warm start, a few iterations per step keep improving the same plan);
- GD 1 x 5 and 1 x 3 and the large CEM with the model's rollouts compiled (``compile=inductor``).
Prints success with 95 % intervals, planning ms per step, and each GD row's points and time
relative to the large CEM. Issue goal: GD within 5 points of CEM at <= 10 % of CEM's planning time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _cli import ci, evaluate

# name -> (controller config, overrides of its optimiser)
ROWS = {
    "cem 512x10": ("flat_cem", ["optimizer.population=512", "optimizer.iters=10",
                                "optimizer.elites=32"]),  # fmt: skip
    "cem 64x3": ("flat_cem", []),
    "gd 4x13": ("flat_gd", []),
    "gd 1x13": ("flat_gd", ["candidates=1"]),
    "gd 1x5": ("flat_gd", ["candidates=1", "optimizer.iters=5"]),
    "gd 1x2": ("flat_gd", ["candidates=1", "optimizer.iters=2"]),
    "gd 1x1": ("flat_gd", ["candidates=1", "optimizer.iters=1"]),
    # the rollouts compiled by torch.compile (inductor), once per worker, for GD and for CEM
    "cem 512x10 compiled": ("flat_cem", ["optimizer.population=512", "optimizer.iters=10",
                                         "optimizer.elites=32", "compile=inductor"]),  # fmt: skip
    "gd 1x5 compiled": ("flat_gd", ["candidates=1", "optimizer.iters=5", "compile=inductor"]),
    "gd 1x3 compiled": ("flat_gd", ["candidates=1", "optimizer.iters=3", "compile=inductor"]),
}
REFERENCE = "cem 512x10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all); "
                        f"{REFERENCE!r} is always run")  # fmt: skip
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = [REFERENCE, *(r for r in (args.rows.split(",") if args.rows else ROWS) if r != REFERENCE)]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown --rows {unknown}; known: {list(ROWS)}")
    out = Path(args.out or tempfile.mkdtemp(prefix="hmpc-gd-vs-cem-"))
    results = {}
    for i, name in enumerate(rows):
        ctrl, overrides = ROWS[name]
        results[name] = evaluate(args.checkpoint, [ctrl], [
            "env=point_maze", f"episodes={args.episodes}", "seed=1000", "max_steps=100",
            "videos=0", f"workers={args.workers}", *[f"controllers.{ctrl}.{o}" for o in overrides],
        ], out / f"row{i}", name)[ctrl]  # fmt: skip
    (out / "gd_vs_cem.json").write_text(json.dumps(results, indent=1))
    ref = results[REFERENCE]
    print(f"\n# Flat MPC, U-maze, {args.episodes} episodes, horizon 16, checkpoint "
          f"{args.checkpoint}; outputs in {out}\n")  # fmt: skip
    print(f"| optimiser | success % | 95 % CI | plan ms mean | p95 | vs {REFERENCE} | "
          f"time / {REFERENCE} |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, a in results.items():
        print(f"| {name} | {a['pc_success']:.0f} | {ci(a)} | {a['plan_ms_mean']:.1f} "
              f"| {a['plan_ms_p95']:.1f} | {a['pc_success'] - ref['pc_success']:+.0f} | "
              f"{a['plan_ms_mean'] / ref['plan_ms_mean']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
