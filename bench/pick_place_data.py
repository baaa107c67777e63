"""PandaPickPlace: does data with failed grasps make the learned cube controller better?

    python bench/pick_place_data.py --out outputs/bench/pick_place_data     # ~80 min on 2 CPU cores

The scripted expert's grasps almost always hold, so dynamics learned on its data believe that a
closing, rising hand near the cube lifts it, and the planner grasps hastily. Two datasets, both
collected at seed 0 (``hmpc-collect``), and one held-out set at seed 777:

- ``expert+OU``: per episode the pick-and-place expert (noise 0.3) or OU noise, 1:1 (the data
  ``hmpc-cube`` was fit on until the failed grasps);
- ``+misses``: ``policy=panda_pick_place_mixture``: the same plus, 1:1:1, the expert whose first
  grasp misses on purpose (``miss_prob`` 0.7: aims 3-5 cm off the cube, closes, lifts without it).

Each is fit with ``hmpc-cube`` (readout + four dynamics members) and evaluated from images with
``hmpc-eval controllers=[cube_cem]`` on the same start/goal pairs (``--seeds``, 40 each by
default). One row per dataset: how often a closed hand rising near a resting cube left it on the
table, the held-out errors, success per seed and in all (95 % interval), air and table goals.
Existing outputs under ``--out`` are reused (collection resumes; a fitted model or a finished
evaluation is not redone), so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _cli import run_cli

from hmpc.report import wilson_interval
from hmpc.rollout import episode_seed

EXPERT_OU = ["policy=mixture", "policy.components=[{name: panda_pick_place_expert, weight: 1, noise: 0.3},"
             "{name: correlated, weight: 1}]"]  # fmt: skip
DATA = {"expert+OU": EXPERT_OU, "+misses": ["policy=panda_pick_place_mixture"]}


def grasp_counts(root: Path) -> tuple[int, int]:
    """(transitions where a closed hand rises near a resting cube, those where the cube stayed):
    hand within 6 cm of the cube horizontally and 12 cm above it, gripper narrower than 6 cm,
    the hand rising more than 5 mm in the step; the cube "stayed" if it rose 5 mm or less."""
    from hmpc.data import LeRobotDataset, build_frame_cache

    f = build_frame_cache(LeRobotDataset(root))
    s, ep = f.state, f.episode_index
    now, nxt = np.arange(len(s) - 1), np.arange(1, len(s))
    ee, grip, cube = s[:, 0:3], s[:, 3], s[:, 7:10]
    m = ((ep[now] == ep[nxt]) & (np.linalg.norm(ee[now, :2] - cube[now, :2], axis=1) < 0.06)
         & (ee[now, 2] - cube[now, 2] < 0.12) & (cube[now, 2] < 0.03) & (grip[now] < 0.06)
         & (ee[nxt, 2] - ee[now, 2] > 0.005))  # fmt: skip
    stayed = cube[nxt, 2] - cube[now, 2] <= 0.005
    return int(m.sum()), int((m & stayed).sum())


def air_goals(seed: int, episodes: int) -> np.ndarray:
    """Whether each start/goal pair of ``hmpc-eval seed=`` has its goal above the table, (episodes,)."""
    from robots import make_env

    env = make_env("panda_pick_place", image_size=8)
    try:
        out = []
        for i in range(episodes):
            env.reset(seed=episode_seed(seed, i))
            out.append(env.unwrapped.task_state()["goal"][2] > 0.03)
        return np.array(out)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--episodes", type=int, nargs=2, default=[300, 450], help="expert+OU, +misses")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2000, 3000, 4000])
    parser.add_argument("--eval-episodes", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    base = ["env=panda_pick_place", "steps=100", f"workers={args.workers}"]
    held = args.out / "held_out"
    run_cli("collect", [*base, *EXPERT_OU, "episodes=50", "seed=777", f"output_dir={held}"], "held out")
    air = {s: air_goals(s, args.eval_episodes) for s in args.seeds}
    rows = []
    for (name, policy), n in zip(DATA.items(), args.episodes, strict=True):
        tag = name.strip("+").replace("+", "_")
        data, cube = args.out / f"data_{tag}", args.out / f"cube_{tag}"
        run_cli("collect", [*base, *policy, f"episodes={n}", "seed=0", f"output_dir={data}"], name)
        if not (cube / "cube.json").exists():
            run_cli("cube", [f"data={data}", f"held_out={held}", f"output_dir={cube}"], name)
        fit = json.loads((cube / "cube.json").read_text())
        wins, per_seed, ms = [], [], []
        for s in args.seeds:
            out = args.out / f"eval_{tag}_{s}"
            if not (out / "eval_info.json").exists():
                run_cli("evaluate", ["env=panda_pick_place", "controllers=[cube_cem]", f"cube_model={cube}",
                                     f"episodes={args.eval_episodes}", f"seed={s}", "max_steps=100",
                                     f"workers={args.workers}", f"output_dir={out}"], f"{name} seed {s}")  # fmt: skip
            eps = sorted(json.loads((out / "eval_info.json").read_text())["per_episode"],
                         key=lambda r: r["episode_index"])
            ok = np.array([bool(r["success"]) for r in eps])
            wins.append((ok, air[s]))
            per_seed.append(int(ok.sum()))
            ms.extend(r.get("plan_ms_mean", 0.0) for r in eps)
        ok, up = (np.concatenate(v) for v in zip(*wins, strict=True))
        lo, hi = wilson_interval(int(ok.sum()), len(ok))
        rows.append((name, n, grasp_counts(data), fit.get("held_out_error_over_copying", {}).get("cube"),
                     fit.get("held_out_readout_cm", {}).get("all"), per_seed, ok, up, lo, hi, np.mean(ms)))
    seeds = " | ".join(f"seed {s}" for s in args.seeds)
    print(f"\n| data | episodes | closed hand rising near a resting cube: cube stayed | held-out cube error / "
          f"copying | readout cm | {seeds} | all | 95 % CI | air goals | table goals | plan ms |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(args.seeds) + "---:|---|---:|---:|---:|")
    for name, n, (m, stay), err, cm, per_seed, ok, up, lo, hi, ms in rows:
        cells = " | ".join(f"{k} of {args.eval_episodes}" for k in per_seed)
        print(f"| {name} | {n} | {stay} of {m} | {err} | {cm} | {cells} | {100 * ok.mean():.1f} % | "
              f"[{lo:.1f}, {hi:.1f}] | {ok[up].sum()} of {up.sum()} | {ok[~up].sum()} of {(~up).sum()} | "
              f"{ms:.0f} |")
    if len(rows) == 2:
        a, b = rows[0][6], rows[1][6]
        print(f"\npairs solved by both: {int((a & b).sum())}, by {rows[0][0]} only: {int((a & ~b).sum())}, "
              f"by {rows[1][0]} only: {int((~a & b).sum())}")


if __name__ == "__main__":
    main()
