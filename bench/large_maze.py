"""Hierarchy where it should pay: PointMaze large, start-goal path distance >= 12 cells.

    python bench/large_maze.py --out outputs/bench/large          # ~100 min on 2 CPU cores (flat_cem_long: 40 of them)
    python bench/large_maze.py --data D --checkpoint C --episodes 20   # reuse a dataset / model

Steps (each an hmpc CLI, printed before it runs, skipped when --data / --checkpoint are given):
  1. hmpc-collect policy=maze_mixture: waypoint following (covers the maze) mixed per episode with
     OU noise (presses on walls, so the model learns that walls stop the ball);
  2. hmpc-train model=maze trainer=long_horizon;
  3. hmpc-eval on the same seeded start/goal pairs for every controller.
Prints one table: success with 95 % intervals, points above the flat planners, planning time as
a fraction of flat CEM's. Issue goals: hierarchical >= 90 %, >= 40 points above flat GD and flat
CEM, at <= 1/3 of flat CEM's planning time. ``flat_cem_long`` is flat CEM with the hierarchy's
lookahead (64 env steps) and its top level's sampling budget: the fair "no hierarchy" row.
``hierarchical_landmarks`` is the default ``hierarchical`` planner routed by a landmark graph of
the training data (:mod:`hmpc.landmarks`): its top level plans toward a waypoint on the route;
``hierarchical_landmarks_fast`` is the same at a real-time budget (one gradient step every second
control step, the top level replanned every 4 steps).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _cli import ci, evaluate, run_cli

CONTROLLERS = "hierarchical_landmarks,hierarchical_landmarks_fast,hierarchical_long,flat_gd,flat_cem,flat_cem_long,oracle"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per controller")
    parser.add_argument("--collect-episodes", type=int, default=700)
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--min-path", type=int, default=12, help="start-goal path distance (cells)")
    parser.add_argument("--controllers", default=CONTROLLERS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", default=None, help="an existing dataset: skip collection")
    parser.add_argument("--checkpoint", default=None, help="an existing model: skip training")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra hmpc-eval override, e.g. controllers.hierarchical_long.goal_switch=1")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="hmpc-large-maze-"))
    maze = ["env=point_maze", "env.layout=large"]
    data = Path(args.data) if args.data else out / "dataset"
    if not args.data and not args.checkpoint:
        run_cli("collect", [*maze, "policy=maze_mixture", f"episodes={args.collect_episodes}",
                         "steps=200", f"workers={args.workers}", f"output_dir={data}"])  # fmt: skip
    ckpt = Path(args.checkpoint) if args.checkpoint else out / "train" / "checkpoint"
    if not args.checkpoint:
        run_cli("train", [f"data={data}", "model=maze", "trainer=long_horizon",
                       f"trainer.steps={args.train_steps}", f"output_dir={out / 'train'}"])  # fmt: skip
    agg = evaluate(ckpt, args.controllers.split(","), [
        *maze, f"env.min_goal_distance={args.min_path}", f"env.max_episode_steps={args.max_steps}",
        f"max_steps={args.max_steps}", f"episodes={args.episodes}", "videos=2",
        f"workers={args.workers}", *args.set,
    ], out / "eval")  # fmt: skip
    ref = {name: agg[name] for name in ("flat_gd", "flat_cem") if name in agg}
    cem_ms = ref["flat_cem"]["plan_ms_mean"] if "flat_cem" in ref else float("nan")
    print(f"\n# PointMaze large, path distance >= {args.min_path} cells, {args.episodes} episodes "
          f"per controller, one world model ({ckpt}); outputs in {out}\n")  # fmt: skip
    print("| controller | success % | 95 % CI | vs flat_gd | vs flat_cem | plan ms mean | "
          "time / flat_cem | commands out of bounds |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, a in agg.items():
        vs = [f"{a['pc_success'] - ref[r]['pc_success']:+.0f}" if r in ref else "-"
              for r in ("flat_gd", "flat_cem")]  # fmt: skip
        print(f"| {name} | {a['pc_success']:.0f} | {ci(a)} | {vs[0]} | {vs[1]} | "
              f"{a['plan_ms_mean']:.1f} | {a['plan_ms_mean'] / cem_ms:.2f} | "
              f"{a.get('actions_out_of_bounds', '-')} of {a.get('steps', '-')} |")  # fmt: skip


if __name__ == "__main__":
    main()
