"""Hierarchy where it should pay: PointMaze large, start-goal path distance >= 12 cells.

    python bench/large_maze.py                      # ~25 min on 2 CPU cores
    python bench/large_maze.py --train-steps 4000 --episodes 20 --out outputs/bench/large

Runs ``hmpc-demo`` on the large maze (waypoint-following exploration data, one world model for
every controller, the same seeded start/goal pairs) and prints one table: success with 95 %
intervals, points above flat GD and flat CEM, and planning time as a fraction of flat CEM's.
Issue goals: hierarchical >= 90 %, >= 40 points above both flat planners, at <= 1/3 of flat
CEM's planning time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collect-episodes", type=int, default=300)
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per controller")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--min-path", type=int, default=12, help="start-goal path distance (cells)")
    parser.add_argument("--top-horizon", type=int, default=12, help="hierarchical: macro steps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="hmpc-large-maze-"))
    overrides = [
        "env.layout=large", f"env.min_goal_distance={args.min_path}",
        f"env.max_episode_steps={args.max_steps}", "policy@collect.policy=waypoints",
        f"collect.episodes={args.collect_episodes}", "collect.steps=200",
        f"trainer.steps={args.train_steps}", f"trainer.val_every={max(1, args.train_steps // 4)}",
        f"eval.episodes={args.episodes}", f"eval.max_steps={args.max_steps}", "eval.videos=2",
        "controllers=[hierarchical,flat_gd,flat_cem,oracle]",
        f"controllers.hierarchical.top_horizon={args.top_horizon}",
        f"workers={args.workers}", f"output_dir={out}",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "hmpc.cli.demo", *overrides]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    agg = json.loads((out / "eval" / "eval_info.json").read_text())["aggregated"]
    cem_ms = agg["flat_cem"]["plan_ms_mean"]
    print(f"\n# PointMaze large, path distance >= {args.min_path} cells, {args.episodes} episodes "
          f"per controller, world model {args.train_steps} steps; outputs in {out}\n")  # fmt: skip
    print("| controller | success % | 95 % CI | vs flat_gd | vs flat_cem | plan ms mean | "
          "time / flat_cem |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, a in agg.items():
        lo, hi = a["pc_success_ci95"]
        d_gd = a["pc_success"] - agg["flat_gd"]["pc_success"]
        d_cem = a["pc_success"] - agg["flat_cem"]["pc_success"]
        print(f"| {name} | {a['pc_success']:.0f} | [{lo:.0f}, {hi:.0f}] | {d_gd:+.0f} | "
              f"{d_cem:+.0f} | {a['plan_ms_mean']:.1f} | {a['plan_ms_mean'] / cem_ms:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
