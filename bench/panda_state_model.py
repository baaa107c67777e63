"""PandaPickPlace with learned dynamics and the staged objective: true state, or the cube read from images.

    python bench/panda_state_model.py --data <run>/dataset --held-out <run>/held_out \
        --perception truth proprio pixels --seeds 2000 1000    # ~40 min on 2 CPU cores

Splits the gap between the simulator oracle and the image world models on PandaPickPlace, as
``bench/state_model.py`` does for Push-T. ``--ensemble`` MLP predictors (``hmpc.cube_model.CubeDynamics``,
seeds 0..K-1) are trained on the dataset's ``observation.state`` (end effector xyz, gripper width,
end effector velocity, cube xyz and quaternion) with ``--horizon``-step open-loop rollouts. Then:

- the first member's 10-step open-loop error per state group on the held-out episodes, relative
  to copying the start;
- planning with them toward the goal's cube: flat CEM (128 x 3, horizon 12, warm-started,
  replanned every step) on the oracle's "staged" objective averaged over the horizon (the
  predicted cube's goal distance + ``--reach`` x the predicted end effector's distance to the
  predicted cube, metres; the members' mean) + ``--disagreement`` x the members' spread of the
  predicted cube, the out-of-distribution penalty that keeps the plan where the data was.

``--perception`` picks where the planner's cube and goal come from, one row each: ``truth``, the
simulator's (privileged: this row bounds what these dynamics allow); ``proprio`` and ``pixels``,
a :class:`hmpc.cube_readout.CubeReadout` trained on the dataset's labels, reading the camera image and
the goal image with and without the proprioception that goes with them (the rest of the state is
proprioception). The goal image's proprioception is the hand in the goal scene, which holds the
cube at the goal: ``pixels`` is the row that reads the goal from the image alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from state_model import load_datasets, success_cells, train_dynamics
from torch import nn
from tqdm import trange

from hmpc.cube_model import CUBE, GROUPS, ensemble_terms, fit_members
from hmpc.cube_readout import CUBE_POSE, PROPRIO, CubeReadout, readout_errors, train_readout
from hmpc.optimizers import CEM, MPPI
from hmpc.pose_dynamics import error_ratios
from hmpc.rollout import episode_seed
from robots import make_env


def ensemble_cost(members: list[nn.Module], s0: torch.Tensor, actions: torch.Tensor, goal: torch.Tensor,
                  reach: float, disagreement: float) -> torch.Tensor:
    """Candidates (N, H, 4) from state (1, 14) -> (N,): the sum of
    :func:`hmpc.cube_model.ensemble_terms` (the members' mean staged cost + the spread term)."""
    return sum(ensemble_terms(members, s0, actions, goal, reach, disagreement).values())


@torch.no_grad()
def plan_episodes(members: list[nn.Module], episodes: int, seed: int, args: argparse.Namespace,
                  readout: CubeReadout | None = None) -> list[dict]:
    """One flat-planner episode per start/goal pair of ``seed`` (the pairs of ``hmpc-eval seed=``).
    Without ``readout`` the planner starts from the true state toward the goal's true cube; with
    it, the cube's pose in the state and the goal's cube come from the camera image and the goal
    image (with their proprioception where the readout takes it)."""
    env = make_env("panda_pick_place", image_size=64 if readout else 16)  # 16: no pixels read
    rows = []
    try:
        for i in trange(episodes, desc="episodes"):
            obs, info = env.reset(seed=episode_seed(seed, i))
            if readout is None:
                goal = torch.as_tensor(info["goal_state"][CUBE]).float()
            else:
                g = env.unwrapped.goal_observation()
                goal = readout(torch.as_tensor(g["pixels"])[None], torch.as_tensor(g["state"][PROPRIO])[None])[0, :3]
            opt = (MPPI(iters=args.iters, population=args.population, temperature=0.1, noise_std=0.5, seed=i)
                   if args.optimizer == "mppi" else
                   CEM(iters=args.iters, population=args.population, elites=max(4, args.population // 8), seed=i))
            plan, ms, success = torch.zeros(1, args.plan_horizon, 4), [], False
            for _ in range(args.max_steps):
                s0 = torch.as_tensor(obs["state"]).float().clone()
                if readout is not None:
                    s0[CUBE_POSE] = readout(torch.as_tensor(obs["pixels"])[None], s0[None, PROPRIO])[0]
                t0 = time.perf_counter()
                best, _ = opt.optimize(
                    lambda a, s0=s0[None], g=goal: ensemble_cost(members, s0, a, g, args.reach, args.disagreement),
                    plan, -1.0, 1.0)  # fmt: skip
                ms.append(1e3 * (time.perf_counter() - t0))
                best = best.reshape(args.plan_horizon, 4)
                plan = torch.cat([best[1:], best[-1:]])[None]  # warm start: the shifted plan
                obs, _, _, _, info = env.step(best[0].numpy())
                if info["is_success"]:
                    success = True
                    break
            rows.append({"success": success, "distance": float(info["distance"]), "plan_ms": float(np.mean(ms)),
                         "air": bool(info["goal_state"][9] > 0.03)})  # fmt: skip
    finally:
        env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="training dataset (panda_pick_place)")
    parser.add_argument("--held-out", type=Path, required=True, help="held-out dataset (panda_pick_place)")
    parser.add_argument("--train-steps", type=int, default=2500, help="per ensemble member")
    parser.add_argument("--horizon", type=int, default=8, help="open-loop steps per training window")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--frame", choices=["absolute", "relative"], default="relative",
                        help="absolute: state_model.StateDynamics on the raw state; relative: "
                        "hmpc.cube_model.CubeDynamics (the cube relative to the hand, nothing absolute in x, y)")
    parser.add_argument("--ensemble", type=int, default=4, help="dynamics models (seeds 0..K-1)")
    parser.add_argument("--disagreement", type=float, default=2.0,
                        help="weight of the ensemble's spread of the predicted cube (m) in the cost")
    parser.add_argument("--reach", type=float, default=1.0, help="weight of the end effector's distance to the cube")
    parser.add_argument("--optimizer", choices=["cem", "mppi"], default="cem")
    parser.add_argument("--population", type=int, default=128)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--plan-horizon", type=int, default=12)
    parser.add_argument("--perception", nargs="+", choices=["truth", "proprio", "pixels"], default=["truth"],
                        help="one row each: the true cube and goal; or both read from the images by a "
                        "CubeReadout with proprioception (proprio) or without (pixels)")
    parser.add_argument("--readout-steps", type=int, default=3000)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1000], help="evaluation seeds, one row each")
    args = parser.parse_args()
    train, held = load_datasets(args.data, args.held_out, 14, 4, "PandaPickPlace")
    t0 = time.perf_counter()
    if args.frame == "absolute":  # seeds 0..K-1: initialisation and batches
        members = [train_dynamics(train, args.train_steps, args.horizon, args.hidden, seed=k)
                   for k in range(args.ensemble)]
    else:
        members = fit_members(train, args.ensemble, args.train_steps, args.horizon, args.hidden, seed=0)
    train_s = time.perf_counter() - t0
    ratios = error_ratios(members[0], held, GROUPS)
    readouts, notes = {}, []
    for mode in args.perception:
        if mode != "truth":
            t0 = time.perf_counter()
            readouts[mode] = train_readout(train, args.readout_steps, seed=0, proprio=mode == "proprio")
            err = readout_errors(readouts[mode], held)
            notes.append(f"readout {mode} ({args.readout_steps} steps, {(time.perf_counter() - t0) / 60:.1f} min): "
                         f"held-out cube error {err['all']:.2f} cm (on the table {err.get('table', float('nan')):.2f}, "
                         f"in the air {err.get('air', float('nan')):.2f})")
    print(f"\n# PandaPickPlace, learned dynamics ({args.ensemble} x {args.train_steps} steps, horizon {args.horizon}, "
          f"hidden {args.hidden}, {args.frame} frame; {train_s / 60:.1f} min; disagreement weight {args.disagreement}); {args.optimizer.upper()} "
          f"{args.population} x {args.iters}, horizon {args.plan_horizon}, staged objective (reach "
          f"{args.reach}); held-out 10-step error / copying (the first member): " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
          + "".join(f"; {n}" for n in notes) + "\n")
    print("| perception | seed | pairs | success % | 95 % CI | final distance | plan ms | air goals solved |\n"
          "|---|---:|---:|---:|---|---:|---:|---:|")
    for mode in args.perception:
        for seed in args.seeds:
            rows = plan_episodes(members, args.eval_episodes, seed, args, readouts.get(mode))
            air = [r for r in rows if r["air"]]
            print(f"| {mode} | {seed} | {success_cells(rows)} {sum(r['success'] for r in air)} of {len(air)} |",
                  flush=True)


if __name__ == "__main__":
    main()
