"""World-model quality: linear-probe R² of the simulator state and 10-step prediction error.

    python bench/probe.py --env maze        # PointMaze medium, OU exploration, ~20 min on 2 CPU cores
    python bench/probe.py --env push_t      # Push-T, noisy scripted expert, ~12 min
    python bench/probe.py --env panda_pick_place --model panda_keypoints  # the cube
    python bench/probe.py --env maze --frames 200000 --train-steps 2500 --out outputs/bench/probe
    python bench/probe.py --env push_t --out <run> --reuse --score <checkpoint>  # score only

Collects data with ``hmpc-collect``, trains the env's preset with ``hmpc-train`` (its wall time
is printed next to the 15-minute goal), then scores the checkpoint on a separately collected
held-out dataset (other seeds):
- linear-probe R² of state groups from the level-1 latent (maze: the ball's (x, y); Push-T: the
  block's (x, y) and its angle as (cos, sin)): a ridge probe fit on frames of the training
  episodes (up to 20k), scored on every frame of the held-out episodes; also, as a small-sample
  check, fit on the first half of the held-out episodes and scored on the second half (with 20
  Push-T episodes, about 20 block angles, to fit, that one overfits the angle);
- 10-step open-loop prediction error of level 1 (real actions) divided by the error of copying
  the last latent (s_10 predicted as s_0), over every other 11-frame window of the held-out episodes;
- the same ratio in state units, per state group: the probe fit on the training frames reads the
  predicted and the start latents (``hmpc.diagnostics.probed_error_ratio``). The latent ratio can
  improve while this one gets worse: the latent distance may be dominated by dims that say little
  about the block, and planning follows the block. In brackets its floor: the same probe reading
  the encoder's latent of the true final frame, as a perfect predictor would; a state the probe
  reads poorly against how far it moves in 10 steps has a floor near 1.
``--reuse`` keeps the datasets of an earlier run in ``--out`` to compare training settings.
Issue goals: maze R² >= 0.95 and error ratio <= 0.3 within 15 minutes of training from <= 200k
frames; Push-T block position R² >= 0.9, block angle R² >= 0.8.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from _cli import run_cli

from hmpc import landmarks
from hmpc.checkpoint import load_checkpoint
from hmpc.data import LeRobotDataset
from hmpc.data.windows import WindowSampler, build_frame_cache
from hmpc.diagnostics import fit_prediction_probe, linear_probe_r2, probed_error_ratio

# Per env: collection overrides, model preset, probe targets {name: (state dims, goal R²)}.
SETUPS = {
    "maze": {
        "collect": ["env=point_maze", "env.layout=medium", "policy=correlated"],
        "model": "small",
        "probes": {"ball (x, y)": ([0, 1], 0.95)},
        "frames": 100_000, "train_steps": 1500,
    },
    "push_t": {
        "collect": ["env=push_t", "policy=push_t_expert", "policy.noise=0.5"],
        "model": "push_t",
        "probes": {"block (x, y)": ([2, 3], 0.9), "block angle (cos, sin)": ([4, 5], 0.8),
                   "pusher (x, y)": ([0, 1], None)},  # no goal: planning needs it, though
        "frames": 40_000, "train_steps": 1500,
        "train": ["trainer.probe_dims=[2,3,4,5]"],  # training diagnostics watch the block
    },
    # bench/tasks.py's pick-and-place data: the noisy expert or OU exploration, per episode
    "panda_pick_place": {
        "collect": ["env=panda_pick_place", "policy=mixture",
                    "policy.components=[{name: panda_pick_place_expert, weight: 1, noise: 0.3},"
                    "{name: correlated, weight: 1}]"],
        "model": "panda",
        "probes": {"cube (x, y, z)": ([7, 8, 9], None), "end effector (x, y, z)": ([0, 1, 2], None)},
        "frames": 30_000, "train_steps": 2000,
        "train": ["trainer.probe_dims=[7,8,9]"],  # training diagnostics watch the cube
    },
}


@torch.no_grad()
def encode_frames(model, frames, max_frames: int = 20_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Level-1 latents (N, D) and states (N, S) of every frame (strided down to ``max_frames``)."""
    idx = np.arange(0, frames.pixels.shape[0], max(1, -(-frames.pixels.shape[0] // max_frames)))
    return landmarks.encode_frames(model, frames, index=idx).cpu(), torch.from_numpy(frames.state[idx])


@torch.no_grad()
def score(checkpoint: Path, data: Path, probes: dict[str, tuple[list[int], float | None]],
          train_data: Path | None = None, steps: int = 10) -> dict[str, float]:
    """Probe R² of each state group and the ``steps``-step error ratio on the dataset at ``data``.

    With ``train_data`` the probe is fit on its frames (the world model's training episodes) and
    scored on every frame of ``data``; either way it is also fit on the first half of ``data``'s
    episodes and scored on the second half (keys ending in "half/half").
    """
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    frames = build_frame_cache(LeRobotDataset(data), progress=False)
    e = frames.num_episodes
    first = frames.episode_starts[e // 2]  # first frame of the second half
    z, y = encode_frames(model, frames, max_frames=frames.pixels.shape[0])
    out: dict[str, float] = {}
    for name, (dims, _) in probes.items():
        out[f"probe_r2 {name} half/half"] = linear_probe_r2(
            z[:first], y[:first, dims], z[first:], y[first:, dims])
    zt, yt = z[:first], y[:first]  # probes that read predictions: fit on the training episodes
    # when given, else on the first half of the held-out ones
    if train_data is not None:
        zt, yt = encode_frames(model, build_frame_cache(LeRobotDataset(train_data), progress=False))
        for name, (dims, _) in probes.items():
            out[f"probe_r2 {name}"] = linear_probe_r2(zt, yt[:, dims], z, y[:, dims])
    held = WindowSampler(frames, steps + 1)
    err = base = 0.0
    starts = held.starts[::2]  # every other window: overlapping, but half the encoding
    firsts, ends, encoded_ends, y_end = [], [], [], []
    for i in range(0, len(starts), 256):
        b = held.gather(starts[i : i + 256])
        s = model.encode_window(b["pixels"], b["state"])  # (B, steps + 1, D)
        pred = model.rollout(s[:, 0], b["action"], 1)[:, -1]
        err += float((pred - s[:, -1]).pow(2).sum())
        base += float((s[:, 0] - s[:, -1]).pow(2).sum())
        firsts.append(s[:, 0].cpu())
        ends.append(pred.cpu())
        encoded_ends.append(s[:, -1].cpu())
        y_end.append(b["state"][:, -1].cpu())
    out[f"pred_err_ratio_{steps}"] = err / base
    first_z, end_z, end_y = torch.cat(firsts), torch.cat(ends), torch.cat(y_end)
    encoded_end = torch.cat(encoded_ends)
    for name, (dims, _) in probes.items():
        w = fit_prediction_probe(zt, yt[:, dims])
        out[f"probe_pred_ratio_{steps} {name}"] = probed_error_ratio(w, first_z, end_z, end_y[:, dims])
        # the floor: the encoder's own latent of the true final frame, read by the same probe
        out[f"probe_floor_ratio_{steps} {name}"] = probed_error_ratio(
            w, first_z, encoded_end, end_y[:, dims])
    out["held_out_windows"] = len(starts)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=sorted(SETUPS), default="maze")
    parser.add_argument("--frames", type=int, default=None, help="training frames (<= 200k)")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--model", default=None, help="model preset (default: the env's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra hmpc-train override, e.g. model.loss.inverse_dynamics=0.1")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--reuse", action="store_true",
                        help="keep --out's dataset/ and held_out/ if present (compare training "
                        "settings on the same data); train/ is always rewritten")
    parser.add_argument("--score", metavar="CHECKPOINT", default=None,
                        help="score this checkpoint on --out's datasets (with --reuse) instead "
                        "of training one; train/ is left alone")
    args = parser.parse_args()
    setup = dict(SETUPS[args.env])
    setup["model"] = args.model or setup["model"]
    frames = args.frames or setup["frames"]
    train_steps = args.train_steps or setup["train_steps"]
    out = Path(args.out or tempfile.mkdtemp(prefix=f"hmpc-probe-{args.env}-"))
    env = [*setup["collect"], "steps=100", f"workers={args.workers}"]
    for name, extra in (("dataset", [f"episodes={frames // 100}"]),
                        ("held_out", ["episodes=40", "seed=777"])):
        if args.reuse and (out / name / "meta" / "info.json").exists():
            print(f"reusing {out / name}")
        else:
            run_cli("collect", [*env, *extra, f"output_dir={out / name}"])
    ckpt, train_s = Path(args.score or out / "train" / "checkpoint"), float("nan")
    if args.score is None:
        shutil.rmtree(out / "train", ignore_errors=True)
        train_s = run_cli("train", [f"data={out / 'dataset'}", f"model={setup['model']}",
                                 f"trainer.steps={train_steps}", *setup.get("train", []), *args.set,
                                 f"output_dir={out / 'train'}"])  # fmt: skip
    res = score(ckpt, out / "held_out", setup["probes"], out / "dataset")
    res.update(train_wall_s=train_s, frames=frames, train_steps=train_steps, checkpoint=str(ckpt))
    if args.score is None:
        (out / "probe.json").write_text(json.dumps(res, indent=1))
    run = (f"model={setup['model']}, {frames} frames ({' '.join(setup['collect'])}), {train_steps} "
           f"steps {' '.join(args.set)}" if args.score is None else "scored only")  # fmt: skip
    print(f"\n# {args.env}: {ckpt} ({run}); held-out: 40 episodes (seed 777) in {out}\n")
    print("| metric | measured | goal |\n|---|---:|---:|")
    for name, (_, goal) in setup["probes"].items():
        print(f"| probe R² {name}, level 1 | {res[f'probe_r2 {name}']:.3f} | "
              f"{'-' if goal is None else f'>= {goal}'} |")
        print(f"| same, probe fit on half the held-out episodes | "
              f"{res[f'probe_r2 {name} half/half']:.3f} | - |")
    print(f"| 10-step error / copy-last | {res['pred_err_ratio_10']:.3f} | "
          f"{'<= 0.3' if args.env == 'maze' else '-'} |")  # fmt: skip
    for name in setup["probes"]:
        print(f"| 10-step error of the probed {name} / copy-last (floor: the encoded true "
              f"frame) | {res[f'probe_pred_ratio_10 {name}']:.3f} "
              f"({res[f'probe_floor_ratio_10 {name}']:.3f}) | - |")
    if args.score is not None:
        return
    print(f"| training wall time | {train_s / 60:.1f} min (incl. start-up and frame cache) | "
          f"{'<= 15 min' if args.env == 'maze' else '-'} |")  # fmt: skip


if __name__ == "__main__":
    main()
