"""Perfect dynamics, learned cost: plan in the simulator, score what a checkpoint's encoder sees.

    python bench/perfect_dynamics.py --checkpoint <run>/train/checkpoint --cost latent probe \
        --eval-episodes 40 --seeds 2000 1000   # Push-T push goals, 10-15 min per row on 2 cores

The other half of ``bench/state_model.py`` (perfect perception, learned dynamics). Here the
dynamics are the simulator's own (a clone synced to the real env's state every step, as the
oracle does), and each candidate's rendered frames are scored through the checkpoint:
- ``latent``: ``flat_cem``'s goal cost, the squared distance of the encoded frames to the goal
  image's latent (``--fused-state`` weighting the fused pusher dims, as
  ``controllers.flat_cem.weights.fused_state``), plus its 0.01 smoothness term;
- ``probe``: the env's goal distance between the poses the model's state probe
  (``model.decode_state``, trained on detached latents) reads from the frames and from the goal
  image: perception read out as a pose, no ground truth at planning time;
- ``env``: the env's own goal distance (the oracle's cost, the control row).
Planner: flat CEM with ``flat_cem``'s budget (64 x 3, horizon 16, replanned every step,
warm-started), pairs of ``bench/tasks.py --task push_t_push`` for the same seed. The goal term
is averaged over every ``--score-every``-th step of the horizon (4: steps 4, 8, 12, 16), which
keeps rendering and encoding to 256 frames per CEM iteration.

Reading the rows: a ``latent`` row near ``env`` means the image latent's goal distance is a
good enough objective and the gap of the learned controllers is their predictor; a low one
means the objective itself misleads the planner, whatever the predictor.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from state_model import CostFn, cem_episode, push_t_distance, success_cells
from tqdm import trange

from hmpc.checkpoint import load_checkpoint
from hmpc.costs import CostWeights, action_smoothness
from hmpc.rollout import episode_seed
from hmpc.world_model import WorldModel
from robots import make_env

COSTS = ("latent", "probe", "env")


def simulate_frames(sim: Any, state: np.ndarray, actions: np.ndarray, every: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roll candidates (N, H, A) out in ``sim`` from ``state``; every ``every``-th step's frame.

    Returns pixels uint8 (N, K, H_img, W_img, 3), observation states (N, K, S) and the env's goal
    distances (N, K) at those K = H // every steps."""
    pixels, states, dist = [], [], []
    for seq in actions:
        sim.set_state(state)
        for t, a in enumerate(seq):
            if (t + 1) % every:
                sim.simulate(a)
                continue
            obs, _, _, _, info = sim.step(a)  # renders: only the scored steps
            pixels.append(obs["pixels"])
            states.append(obs["state"])
            dist.append(info["distance"])
    k = actions.shape[1] // every
    n = actions.shape[0]
    return (np.stack(pixels).reshape(n, k, *pixels[0].shape), np.stack(states).reshape(n, k, -1),
            np.asarray(dist).reshape(n, k))


def make_scorer(kind: str, model: WorldModel, goal_obs: dict[str, np.ndarray],
                weights: CostWeights) -> Callable[[np.ndarray, np.ndarray, np.ndarray], torch.Tensor]:
    """(pixels (N, K, h, w, 3), states (N, K, S), env distances (N, K)) -> goal term (N,)."""

    def encode(pixels: np.ndarray, states: np.ndarray) -> torch.Tensor:
        px = torch.as_tensor(pixels).flatten(0, -4).permute(0, 3, 1, 2)
        st = torch.as_tensor(states, dtype=torch.float32).flatten(0, -2)
        return model.encode(px, st).view(*pixels.shape[:-3], -1)

    goal = encode(goal_obs["pixels"][None], goal_obs["state"][None])[0]  # (D,)
    if kind == "latent":
        g = weights.goal_part(goal)
        return lambda px, st, d: (weights.goal_part(encode(px, st)) - g).pow(2).sum(-1).mean(1)
    if kind == "probe":
        g = model.decode_state(goal)
        return lambda px, st, d: push_t_distance(model.decode_state(encode(px, st)), g).mean(1)
    return lambda px, st, d: torch.as_tensor(d, dtype=torch.float32).pow(2).mean(1)


@torch.no_grad()
def plan_episodes(model: WorldModel, kind: str, weights: CostWeights, episodes: int, seed: int,
                  every: int) -> list[dict]:
    env = make_env("push_t", goal_mode="push", goal_push_steps=25)
    sim = env.unwrapped.clone()
    rows = []
    try:
        for i in trange(episodes, desc=f"{kind} cost, seed {seed}"):
            obs, _ = env.reset(seed=episode_seed(seed, i))
            score = make_scorer(kind, model, env.unwrapped.goal_observation(), weights)

            def make_cost(obs: dict, prev: torch.Tensor, score: Callable = score) -> CostFn:
                state = np.asarray(env.unwrapped.get_state()).copy()  # read, never written

                def cost(a: torch.Tensor) -> torch.Tensor:
                    px, st, d = simulate_frames(sim, state, a.double().numpy(), every)
                    return score(px, st, d) + weights.smoothness * action_smoothness(a, prev)
                return cost

            rows.append(cem_episode(env, obs, make_cost, cem_seed=i))
    finally:
        sim.close()
        env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a Push-T checkpoint folder")
    parser.add_argument("--cost", choices=COSTS, nargs="+", default=["latent", "probe"],
                        help="goal terms to plan with, one row each per seed")
    parser.add_argument("--fused-state", type=float, default=30.0,
                        help="weight of the fused pusher dims in the latent cost (flat_cem's "
                        "weights.fused_state; 30 in bench/RESULTS.md's Push-T rows)")
    parser.add_argument("--score-every", type=int, default=4,
                        help="score every k-th horizon step (horizon 16 must be a multiple)")
    parser.add_argument("--eval-episodes", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2000],
                        help="evaluation seeds (start/goal pairs), one row each")
    args = parser.parse_args()
    if args.score_every < 1 or 16 % args.score_every:
        raise SystemExit(f"--score-every {args.score_every}: use a divisor of the horizon 16")
    model, meta = load_checkpoint(args.checkpoint)
    if model.spec.action_dim != 2 or model.spec.image_size != 64:
        raise SystemExit(f"{args.checkpoint}: action_dim {model.spec.action_dim}, image_size "
                         f"{model.spec.image_size}; this bench plans Push-T (2 and 64)")
    if "probe" in args.cost and model.probe is None:
        raise SystemExit(f"{args.checkpoint} has no state probe (model.loss.state_probe=0): "
                         "drop --cost probe or retrain with model.loss.state_probe=1.0")
    weights = CostWeights(goal_mode="sum", fused_state=args.fused_state).for_model(model.spec)
    print(f"\n# Push-T push goals, simulator dynamics, goal term through {args.checkpoint} "
          f"(fused_state {args.fused_state}, every {args.score_every}th step); flat CEM 64 x 3, "
          "horizon 16\n")
    print("| cost | seed | pairs | success % | 95 % CI | final distance | plan ms |\n"
          "|---|---:|---:|---:|---|---:|---:|")
    for kind in args.cost:
        for seed in args.seeds:
            rows = plan_episodes(model, kind, weights, args.eval_episodes, seed, args.score_every)
            print(f"| {kind} | {seed} | {success_cells(rows)}", flush=True)


if __name__ == "__main__":
    main()
