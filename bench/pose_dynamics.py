"""The pose controller (``hmpc-pose`` + ``controllers=[pose_cem]``) on Push-T push goals, with
what hmpc-eval does not print: how well the pose read without labels matches the true one.

    python bench/pose_dynamics.py --checkpoint <run>/train/checkpoint --data <run>/dataset \
        --held-out <run>/held_out --eval-episodes 40 --seeds 2000 1000 3000   # ~13 min on 2 CPU cores

``bench/state_model.py --frame block`` plans 95 % of the Push-T push-goal pairs from the true
state. This bench runs the same recipe on a pose read from the images, with nothing privileged
in the loop (``hmpc.object_pose``):
- the pusher is painted out of every frame before it is encoded, at the fused pusher's place
  through the camera's map (``hmpc.agent_mask``; ``--no-mask`` leaves it in; a checkpoint
  trained with ``model.agent_mask`` brings its own);
- the object's keypoints are found without labels in a keypoint checkpoint with vectors
  (``model.keypoint_vectors`` >= 1; ``--keypoints`` chooses them by hand), its pose is their
  mean place and the circular mean of their vectors' angles;
- ``PoseDynamics`` in the object's frame, the place in metres through the camera's map and a
  learned shrink;
- ``hmpc.pose_mpc.PoseMPC``: flat CEM with ``flat_cem``'s budget on the env's pose distance to the
  goal image's read pose, plus ``--pusher-weight`` x the pusher's squared distance to the goal
  image's, run by hmpc-eval's own episode loop.
The true block pose is read only to report the readout's error and the dynamics' 10-step error.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from state_model import GROUPS, success_cells
from tqdm import trange

from hmpc.agent_mask import AgentMask
from hmpc.checkpoint import load_checkpoint
from hmpc.data import LeRobotDataset
from hmpc.data.windows import build_frame_cache
from hmpc.evaluate import run_episode
from hmpc.object_pose import PoseModel, fit_pose_model, pose_state, read_frames, state_errors
from hmpc.optimizers import CEM
from hmpc.pose_dynamics import error_ratios
from hmpc.pose_mpc import PoseMPC
from hmpc.rollout import episode_seed
from robots import make_env
from robots.push_t import BLOCK_GYRATION


def plan_episodes(pose: PoseModel, pusher_weight: float, episodes: int, seed: int,
                  goal_mode: str = "final") -> list[dict]:
    """``episodes`` Push-T push-goal episodes of 50 steps with the pose controller (flat_cem's budget)."""
    env = make_env("push_t", goal_mode="push", goal_push_steps=25)
    rows = []
    try:
        for i in trange(episodes, desc="episodes"):
            s = episode_seed(seed, i)
            ctrl = PoseMPC(pose, CEM(iters=3, population=64, elites=8, seed=s), horizon=16,
                           agent_weight=pusher_weight, goal_mode=goal_mode)
            rec = run_episode(env, ctrl, s, max_steps=50)
            rows.append({"success": rec["success"], "distance": rec["final_distance"],
                         "plan_ms": rec["plan_ms_mean"]})
    finally:
        env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a Push-T keypoint checkpoint with vectors (model.keypoint_vectors >= 1)")
    parser.add_argument("--data", type=Path, required=True, help="training dataset (push_t)")
    parser.add_argument("--held-out", type=Path, required=True, help="held-out dataset (push_t)")
    parser.add_argument("--keypoints", type=int, nargs="+", default=None,
                        help="the object's keypoints (default: found without labels)")
    parser.add_argument("--no-mask", action="store_true",
                        help="encode the frames as they are, without painting the pusher out first "
                             "(checkpoints trained with model.agent_mask always paint it out)")
    parser.add_argument("--train-steps", type=int, default=5000)
    parser.add_argument("--horizon", type=int, default=8, help="open-loop steps per training window")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--goal-mode", default="final", choices=["final", "sum", "mixed"],
                        help="the goal distance at the horizon's end, or averaged over it (pose_cem's pose.goal_mode)")
    parser.add_argument("--pusher-weight", type=float, nargs="+", default=[0.0],
                        help="weights of the pusher's squared distance to the goal image's, one row each")
    parser.add_argument("--eval-episodes", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2000], help="evaluation seeds, one row each")
    args = parser.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    train = build_frame_cache(LeRobotDataset(args.data), progress=False)
    held = build_frame_cache(LeRobotDataset(args.held_out), progress=False)
    env = make_env("push_t")
    image_map, env_mask = env.unwrapped.image_map(), AgentMask.from_value(env.unwrapped.agent_mask())
    env.close()
    mask = model.spec.agent_mask or (None if args.no_mask else env_mask)  # a masked checkpoint's own
    t0 = time.perf_counter()
    try:
        pose = fit_pose_model(model, train, image_map, mask, BLOCK_GYRATION, args.train_steps, args.horizon,
                              args.hidden, seed=0, members=args.keypoints)
    except ValueError as e:
        raise SystemExit(f"{args.checkpoint}: {e}") from e
    build_s = time.perf_counter() - t0
    points, vectors = read_frames(pose.encoder, mask, held.pixels, held.state[:, :2])
    held_pose = pose_state(pose.readout, points, vectors, torch.as_tensor(held.state[:, :2]))
    angle_deg, place_cm = state_errors(pose, held_pose, held.state[:, 2:6])
    ratios = error_ratios(pose.dynamics, dataclasses.replace(held, state=held_pose.numpy()), GROUPS)
    print(f"\n# Push-T push goals from images{'' if mask is None else ', pusher painted out'}: "
          f"pose readout of keypoints {list(pose.readout.members)} "
          f"(held out, against the true pose: angle {angle_deg:.1f} deg rms, place {place_cm:.2f} cm rms); "
          f"object-frame dynamics ({args.train_steps} steps, horizon {args.horizon}, hidden {args.hidden}; "
          f"learned shrink {pose.dynamics.shrink:.3f}; {build_s / 60:.1f} min); held-out 10-step error / copying "
          f"of the readout: " + ", ".join(f"{g} {ratios[g]:.3f}" for g in GROUPS) + f"; flat CEM 64 x 3, horizon 16, goal_mode {args.goal_mode}\n")
    print("| pusher weight | seed | pairs | success % | 95 % CI | final distance | plan ms |\n"
          "|---:|---:|---:|---:|---|---:|---:|")
    for w in args.pusher_weight:
        for seed in args.seeds:
            rows = plan_episodes(pose, w, args.eval_episodes, seed, args.goal_mode)
            print(f"| {w:g} | {seed} | {success_cells(rows)}", flush=True)


if __name__ == "__main__":
    main()
