"""Planning success on the manipulation tasks: collect, train the env's preset, evaluate.

    python bench/tasks.py --task panda_reach --out outputs/bench/panda_reach   # ~35 min, 2 CPUs
    python bench/tasks.py --task push_t --checkpoint <run>/checkpoint          # evaluation only
    python bench/tasks.py --task push_t_push --checkpoint <run>/checkpoint     # goals one push away

Per task: exploration data from a mixture (per episode: the scripted expert with action noise,
or OU-correlated random actions), the env's model preset, then ``hmpc-eval`` of every
controller on the same seeded start/goal pairs from the goal image, within the task's step
budget. The oracle (the simulator as the model) bounds what planning can reach in that budget;
on the Panda tasks it is left out by default (``--controllers`` adds it: ~4 s per control step).
Issue goals: PushT >= 90 % (50 steps), PandaReach 100 %, PandaPickPlace >= 75 %.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _cli import ci, evaluate, run_cli


def _mixture(expert: str, noise: float) -> str:
    return (f"policy.components=[{{name: {expert}, weight: 1, noise: {noise}}},"
            "{name: correlated, weight: 1}]")  # fmt: skip


_ALL = "hierarchical,flat_gd,flat_cem,oracle,random"
_NO_ORACLE = "hierarchical,flat_gd,flat_cem,random"  # the Panda oracle takes ~4 s per step
_PUSH_T = {"collect": ["env=push_t", "policy=mixture", _mixture("push_t_expert", 0.5)],
           "episodes": 400, "steps": 100, "model": "push_t", "train_steps": 1500,
           "max_steps": 50, "goal": 90, "controllers": _ALL}  # fmt: skip
# task -> collection, model preset, training steps, evaluation step budget, success goal (%)
SETUPS = {
    "panda_reach": {"collect": ["env=panda_reach", "policy=mixture",
                                _mixture("panda_reach_expert", 0.3)],
                    "episodes": 300, "steps": 50, "model": "panda", "train_steps": 3000,
                    "max_steps": 50, "goal": 100, "controllers": _NO_ORACLE},  # fmt: skip
    "push_t": {**_PUSH_T,
               # goals within 10 cm and 30 degrees of the start: reachable in 50 steps
               "eval_env": ["env.max_goal_offset=0.1", "env.max_goal_rotation_deg=30"]},  # fmt: skip
    # the same data and model; goals from a push simulated from the start (env.goal_mode=push,
    # DINO-WM-like: its starts and goals are 25 steps apart on expert trajectories)
    # flat_cem_proprio plans toward the goal image's pusher alone: the learned block must beat it
    "push_t_push": {**_PUSH_T, "eval_env": ["env.goal_mode=push", "env.goal_push_steps=25"],
                    "controllers": "hierarchical,flat_gd,flat_cem,flat_cem_proprio,oracle,random",
                    # the fused pusher (the preset's last 2 of 66 dims, <1 % of the latent's
                    # variance) weighs 30x in the goal distance: the goal image's pusher shows
                    # the push (chosen on seed 1000's 20 episodes; report other seeds)
                    "plan": [f"controllers.{c}.weights.fused_state=30"
                             for c in ("hierarchical", "flat_gd", "flat_cem")]},  # fmt: skip
    "panda_pick_place": {"collect": ["env=panda_pick_place", "policy=mixture",
                                     _mixture("panda_pick_place_expert", 0.3)],
                         "episodes": 300, "steps": 100, "model": "panda", "train_steps": 2000,
                         "max_steps": 100, "goal": 75, "controllers": _NO_ORACLE},  # fmt: skip
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(SETUPS), required=True)
    parser.add_argument("--checkpoint", default=None, help="skip collection and training")
    parser.add_argument("--episodes", type=int, default=None, help="training episodes")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--controllers", default=None, help="comma-separated; default per task")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000, help="evaluation seed (start/goal pairs)")
    parser.add_argument("--plain", action="store_true", help="leave out the task's planner overrides")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    setup = SETUPS[args.task]
    out = Path(args.out or tempfile.mkdtemp(prefix=f"hmpc-{args.task}-"))
    episodes = args.episodes or setup["episodes"]
    train_steps = args.train_steps or setup["train_steps"]
    ckpt = args.checkpoint
    if ckpt is None:
        run_cli("collect", [*setup["collect"], f"steps={setup['steps']}", f"episodes={episodes}",
                            f"workers={args.workers}", f"output_dir={out / 'dataset'}"],
                "collect")  # fmt: skip
        run_cli("train", [f"data={out / 'dataset'}", f"model={setup['model']}",
                          f"trainer.steps={train_steps}", f"output_dir={out / 'train'}"],
                "train")  # fmt: skip
        ckpt = str(out / "train" / "checkpoint")
    names = (args.controllers or setup["controllers"]).split(",")
    # the task's planner overrides for the controllers evaluated ("controllers.<name>.<key>=...")
    plan = [] if args.plain else [o for o in setup.get("plan", []) if o.split(".")[1] in names]
    res = evaluate(ckpt, names, [
        setup["collect"][0], *setup.get("eval_env", []), f"episodes={args.eval_episodes}", f"seed={args.seed}",
        *plan,
        f"max_steps={setup['max_steps']}", "videos=2", f"workers={args.workers}",
    ], out / "eval", "eval")  # fmt: skip
    (out / "tasks.json").write_text(json.dumps(res, indent=1))
    data = "" if args.checkpoint else f"{episodes} x {setup['steps']} frames, {train_steps} steps, "
    print(f"\n# {args.task}: model={setup['model']}, {data}{args.eval_episodes} episodes of "
          f"{setup['max_steps']} steps from the goal image (seed {args.seed}) {' '.join(setup.get('eval_env', []))} "
          f"{' '.join(plan)}; checkpoint {ckpt}; outputs in {out} "
          f"(videos in eval/videos)\n")  # fmt: skip
    print(f"| controller | success % (goal >= {setup['goal']}) | 95 % CI | final distance | "
          "plan ms mean | p95 | out-of-bounds commands |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|")
    for name in names:
        a = res[name]
        print(f"| {name} | {a['pc_success']:.0f} | {ci(a)} | {a['avg_final_distance']:.3f} | "
              f"{a['plan_ms_mean']:.1f} | {a['plan_ms_p95']:.1f} | "
              f"{a['actions_out_of_bounds']} of {a['steps']} |")  # fmt: skip


if __name__ == "__main__":
    main()
