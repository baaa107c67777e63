"""Starts outside the training distribution: planners on starts the data covered vs starts it did not.

    python bench/ood_starts.py --out outputs/bench/ood_starts       # ~8 min on 2 CPU cores (2026-12-06)
    python bench/ood_starts.py --checkpoint <run>/checkpoint        # evaluation only

PointMaze medium (8 x 8 cells, walls included). Exploration episodes (OU-correlated random
actions, 1200 x 50 frames) start only in the left half (``env.start_region=[0,0,4,8]``); the world model
(``model=small``) trains on them. Every controller then runs on the same seeded episodes twice
(``conditions=ood_starts``): starts in the left half (in distribution) and starts in the right
half (out of distribution). Goals are anywhere, at most ``--max-goal-distance`` cells of path
away. Exploration wanders, so the right half is rarer in the data, not absent: the table shows
how much each planner loses where the model saw less, and the data's coverage of each half.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from _cli import ci, evaluate, run_cli

from hmpc.data import LeRobotDataset
from hmpc.evaluate import row_label
from hmpc.report import fisher_exact

LEFT, RIGHT = "in_distribution", "ood_starts"  # the conditions of configs/conditions/ood_starts.yaml


def right_half_share(data: Path, x_split: float = 4.0) -> float:
    """Fraction of the dataset's frames with the ball in the right half (x > ``x_split`` cells)."""
    files = [f for f in LeRobotDataset(data).data_files() if f.suffix == ".parquet"]
    states = [pq.read_table(f, columns=["observation.state"]).column(0).to_pylist() for f in files]
    xs = np.array([s[0] for part in states for s in part])
    return float((xs > x_split).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="skip collection and training")
    parser.add_argument("--episodes", type=int, default=1200, help="training episodes")
    parser.add_argument("--steps", type=int, default=50, help="frames per training episode "
                        "(short episodes wander less far from their start)")  # fmt: skip
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--controllers", default="hierarchical,flat_gd,oracle")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--max-goal-distance", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="hmpc-ood-starts-"))
    maze = ["env=point_maze", "env.layout=medium"]
    share = None
    ckpt = args.checkpoint
    if ckpt is None:
        run_cli("collect", [*maze, "env.start_region=[0,0,4,8]", "policy=correlated", f"steps={args.steps}",
                            f"episodes={args.episodes}", f"workers={args.workers}",
                            f"output_dir={out / 'dataset'}"], "collect")  # fmt: skip
        share = right_half_share(out / "dataset")
        run_cli("train", [f"data={out / 'dataset'}", "model=small",
                          f"trainer.steps={args.train_steps}", f"output_dir={out / 'train'}"],
                "train")  # fmt: skip
        ckpt = str(out / "train" / "checkpoint")
    names = args.controllers.split(",")
    res = evaluate(ckpt, names, [
        *maze, f"env.max_goal_distance={args.max_goal_distance}", "conditions=ood_starts",
        f"episodes={args.eval_episodes}", "seed=1000", "max_steps=100", "videos=0",
        f"workers={args.workers}",
    ], out / "eval", "eval")  # fmt: skip
    (out / "ood_starts.json").write_text(json.dumps({"right_half_share": share, **res}, indent=1))
    cover = "" if share is None else f"; {100 * share:.1f} % of training frames in the right half"
    print(f"\n# Starts outside the data, PointMaze medium, {args.eval_episodes} episodes per row, "
          f"checkpoint {ckpt}{cover}; outputs in {out}\n")  # fmt: skip
    print("| controller | success %, starts in data (left) | 95 % CI | success %, starts "
          "outside (right) | 95 % CI | change (points) | Fisher exact p | plan ms (left / right) |")  # fmt: skip
    print("|---|---:|---|---:|---|---:|---:|---:|")
    for name in names:
        a, b = res[row_label(name, LEFT)], res[row_label(name, RIGHT)]
        wins = [round(r["pc_success"] * r["n_episodes"] / 100) for r in (a, b)]
        p = fisher_exact(wins[0], a["n_episodes"], wins[1], b["n_episodes"])  # other starts: two samples
        print(f"| {name} | {a['pc_success']:.1f} | {ci(a)} | {b['pc_success']:.1f} | {ci(b)} | "
              f"{b['pc_success'] - a['pc_success']:+.1f} | {p:.2g} | "
              f"{a['plan_ms_mean']:.1f} / {b['plan_ms_mean']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
