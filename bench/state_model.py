"""Perfect perception, learned dynamics: how far a predictor trained on the simulator state gets.

    python bench/state_model.py --data <probe run>/dataset --held-out <probe run>/held_out \
        --eval-episodes 40 --seeds 2000 1000    # Push-T push goals, ~9 min on 2 CPU cores

Splits the gap between the image world model and the oracle on Push-T (``env.goal_mode=push``,
the pairs of ``bench/tasks.py --task push_t_push`` for the same seed). An MLP predictor
is trained on the dataset's ``observation.state`` (pusher x, y, block x, y, cos, sin: what the
images show, normalised) with ``--horizon``-step open-loop rollouts, then:
- its 10-step open-loop error per state group on the held-out episodes, relative to copying the
  start: the quantity ``bench/probe.py`` reads through a probe from the image latent;
- planning with it from the true state toward the goal image's true state: flat CEM with
  ``flat_cem``'s budget (64 x 3, horizon 16, replanned every step, warm-started), scoring the
  env's own goal distance of the predicted block (the oracle's cost, no smoothness term).
The state here is privileged (the learned controllers see images; their goal is an image). So
this row bounds what learning the dynamics from this data allows with flat CEM: below it the
loss is perception and the latent; above it, up to the oracle, the dynamics' precision.
``--frame relative`` trains the same MLP on the pusher's place relative to the block, with
nothing absolute (``RelativeDynamics``: pushing is the same everywhere), ``--frame block`` turned
into the T's own frame as well (the same at every heading).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import trange

from hmpc.data import LeRobotDataset
from hmpc.data.windows import FrameArrays, build_frame_cache
from hmpc.optimizers import CEM
from hmpc.pose_dynamics import RelativeDynamics, error_ratios, fit_dynamics, gelu_mlp, pose_distance
from hmpc.report import wilson_interval
from hmpc.rollout import episode_seed
from hmpc.runtime import seeded
from robots import make_env
from robots.push_t import BLOCK_GYRATION

GROUPS = {"pusher": [0, 1], "block": [2, 3], "angle": [4, 5]}  # Push-T's observation.state


class StateDynamics(nn.Module):
    """s_{t+1} = s_t + f(s_t, a_t) on normalised states (B, S), actions (B, A). f is a plain
    GELU MLP; the world model's :func:`hmpc.models.mlp` (LayerNorm after each layer, depth 3)
    measured within noise of it (README)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int,
                 mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = gelu_mlp(state_dim + action_dim, hidden, state_dim)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def rollout(self, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Raw states (N, S) and actions (N, H, A) -> predicted raw states (N, H, S)."""
        z, out = (s0 - self.mean) / self.std, []
        for t in range(actions.shape[1]):
            z = z + self.net(torch.cat([z, actions[:, t]], dim=-1))
            out.append(z)
        return torch.stack(out, dim=1) * self.std + self.mean


def train_dynamics(frames: FrameArrays, steps: int, horizon: int, hidden: int, seed: int,
                   batch: int = 256, frame: str = "absolute") -> nn.Module:
    """A dynamics model of ``--frame`` kind, seeded, fit by :func:`fit_dynamics`."""
    state = torch.from_numpy(frames.state).float()
    with seeded(seed):  # the global generator left as it was
        model = (StateDynamics(state.shape[1], frames.action.shape[1], hidden, state.mean(0), state.std(0))
                 if frame == "absolute" else RelativeDynamics(hidden, state.std(0), frame == "block"))
    return fit_dynamics(model, frames, steps, horizon, seed, batch)


def push_t_distance(pred: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """The env's squared goal distance (info["distance"]^2) of predicted states (..., 6)."""
    return pose_distance(pred, goal, BLOCK_GYRATION)


CostFn = Callable[[torch.Tensor], torch.Tensor]


def cem_episode(env: Any, obs: dict, make_cost: Callable[[dict, torch.Tensor], CostFn],
                cem_seed: int, max_steps: int = 50, horizon: int = 16, population: int = 64,
                iters: int = 3) -> dict:
    """One Push-T episode of flat CEM (``flat_cem``'s budget: replanned every step, warm-started
    from the shifted plan) from ``obs``. ``make_cost(obs, prev_action)`` gives the cost of
    candidates (N, H, 2) -> (N,) at each step. Returns success, final distance and plan ms."""
    cem = CEM(iters=iters, population=population, elites=8, seed=cem_seed)
    plan, prev, ms, success = torch.zeros(1, horizon, 2), torch.zeros(2), [], False
    for _ in range(max_steps):
        cost = make_cost(obs, prev)
        t0 = time.perf_counter()
        best, _ = cem.optimize(cost, plan, -1.0, 1.0)
        ms.append(1e3 * (time.perf_counter() - t0))
        best = best.reshape(horizon, 2)
        plan, prev = torch.cat([best[1:], best[-1:]])[None], best[0]  # warm start: shifted plan
        obs, _, _, _, info = env.step(best[0].numpy())
        if info["is_success"]:
            success = True
            break
    return {"success": success, "distance": float(info["distance"]), "plan_ms": float(np.mean(ms))}


@torch.no_grad()
def plan_episodes(model: nn.Module, episodes: int, seed: int) -> list[dict]:
    env = make_env("push_t", goal_mode="push", goal_push_steps=25)
    rows = []
    try:
        for i in trange(episodes, desc="episodes"):
            obs, info = env.reset(seed=episode_seed(seed, i))
            goal = torch.as_tensor(info["goal_state"]).float()

            def make_cost(obs: dict, prev: torch.Tensor, goal: torch.Tensor = goal) -> CostFn:
                s0 = torch.as_tensor(obs["state"]).float()[None]
                return lambda a: push_t_distance(model.rollout(s0.expand(len(a), -1), a), goal).mean(1)

            rows.append(cem_episode(env, obs, make_cost, cem_seed=i))
    finally:
        env.close()
    return rows


def load_datasets(data: Path, held_out: Path, state_dim: int, action_dim: int,
                  task: str) -> tuple[FrameArrays, FrameArrays]:
    """The training and held-out frames, refused (naming the file) unless their state and action
    have ``task``'s ``state_dim`` and ``action_dim``."""
    out = []
    for path in (data, held_out):
        frames = build_frame_cache(LeRobotDataset(path), progress=False)
        if frames.state.shape[1] != state_dim or frames.action.shape[1] != action_dim:
            raise SystemExit(f"{path}: observation.state has {frames.state.shape[1]} dims and action "
                             f"{frames.action.shape[1]}; this bench reads {task}'s ({state_dim} and {action_dim})")
        out.append(frames)
    return out[0], out[1]


def success_cells(rows: list[dict]) -> str:
    """A table row's tail for episodes ``rows``: pairs | success % | 95 % CI | final distance |
    plan ms |."""
    wins = sum(r["success"] for r in rows)
    lo, hi = wilson_interval(wins, len(rows))
    return (f"{len(rows)} | {100 * wins / len(rows):.1f} | [{lo:.0f}, {hi:.0f}] | "
            f"{np.mean([r['distance'] for r in rows]):.3f} | {np.mean([r['plan_ms'] for r in rows]):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="training dataset (push_t)")
    parser.add_argument("--held-out", type=Path, required=True, help="held-out dataset (push_t)")
    parser.add_argument("--train-steps", type=int, default=5000)
    parser.add_argument("--horizon", type=int, default=8, help="open-loop steps per training window")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--frame", choices=["absolute", "relative", "block"], default="absolute",
                        help="absolute: the MLP sees the states as they are; relative: the pusher "
                        "relative to the block, nothing absolute; block: that, turned into the T's "
                        "frame (RelativeDynamics)")
    parser.add_argument("--eval-episodes", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2000],
                        help="evaluation seeds (start/goal pairs), one row each")
    args = parser.parse_args()
    train, held = load_datasets(args.data, args.held_out, 6, 2, "Push-T")
    t0 = time.perf_counter()
    model = train_dynamics(train, args.train_steps, args.horizon, args.hidden, seed=0, frame=args.frame)
    train_s = time.perf_counter() - t0
    ratios = error_ratios(model, held, GROUPS)
    print(f"\n# Push-T push goals, learned dynamics on the true state ({args.train_steps} steps, "
          f"horizon {args.horizon}, hidden {args.hidden}, {args.frame} frame; {train_s / 60:.1f} min); flat CEM 64 x 3, "
          f"horizon 16; held-out 10-step error / copying: pusher {ratios['pusher']:.3f}, block "
          f"{ratios['block']:.3f}, angle {ratios['angle']:.3f}\n")
    print("| seed | pairs | success % | 95 % CI | final distance | plan ms |\n|---:|---:|---:|---|---:|---:|")
    for seed in args.seeds:
        print(f"| {seed} | {success_cells(plan_episodes(model, args.eval_episodes, seed))}",
              flush=True)


if __name__ == "__main__":
    main()
