"""Trainer of the multi-level world model: windows from a LeRobot dataset -> safetensors checkpoint.

Owns the optimiser, the schedule, validation on held-out episodes, metrics (CSV + progress bar)
and checkpoints; the model owns no loss and the losses own no state.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hmpc.checkpoint import save_checkpoint
from hmpc.data import LeRobotDataset, WindowSampler, build_frame_cache, split_episodes
from hmpc.diagnostics import window_diagnostics
from hmpc.objective import LossWeights, world_model_loss
from hmpc.world_model import WorldModel, WorldModelSpec, build_world_model


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    top_steps: int = 3  # transitions of the top level per window: L = 1 + top_steps * span(top)
    val_fraction: float = 0.1
    val_every: int = 500
    val_batches: int = 4
    log_every: int = 50
    max_bad_steps: int = 20  # consecutive non-finite losses before stopping
    seed: int = 0


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict[str, float]
    steps: int
    seconds: float


class NonFiniteLossError(RuntimeError):
    pass


def _make_samplers(
    data_root: Path, window: int, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[WindowSampler, WindowSampler, LeRobotDataset]:
    dataset = LeRobotDataset(data_root)
    frames = build_frame_cache(dataset)
    train_ids, val_ids = split_episodes(dataset.num_episodes, cfg.val_fraction, rng)
    train = WindowSampler(frames, window, episodes=train_ids)
    val = WindowSampler(frames, window, episodes=val_ids if len(val_ids) else train_ids)
    return train, val, dataset


def _check_compatible(dataset: LeRobotDataset, spec: WorldModelSpec) -> None:
    h = dataset.image_shape[0]
    if h != spec.image_size:
        raise ValueError(
            f"dataset {dataset.root} has {h}x{h} images but model.image_size={spec.image_size}; "
            f"set model.image_size={h}"
        )
    if dataset.action_dim != spec.action_dim:
        raise ValueError(
            f"dataset {dataset.root} has action dim {dataset.action_dim} but "
            f"model.action_dim={spec.action_dim}; set model.action_dim={dataset.action_dim}"
        )


@torch.no_grad()
def validate(
    model: WorldModel, sampler: WindowSampler, weights: LossWeights, cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Mean loss terms and diagnostics over ``cfg.val_batches`` held-out batches (fixed seed)."""
    model.eval()
    rng = np.random.default_rng(10_000 + cfg.seed)  # same validation windows every time
    sums: dict[str, float] = {}
    for _ in range(cfg.val_batches):
        batch = sampler.sample(max(cfg.batch_size, 8), rng, device)
        _, m = world_model_loss(model, batch, weights)
        m.update(window_diagnostics(model, batch))
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v / cfg.val_batches
    model.train()
    return {f"val/{k}": v for k, v in sums.items()}


def train_world_model(
    data_root: str | Path,
    out_dir: str | Path,
    spec: WorldModelSpec,
    weights: LossWeights,
    cfg: TrainConfig,
    device: torch.device,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train from scratch and save ``out_dir/checkpoint``; metrics go to ``out_dir/metrics.csv``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    window = 1 + cfg.top_steps * spec.span(spec.num_levels)
    train_s, val_s, dataset = _make_samplers(Path(data_root), window, cfg, rng)
    _check_compatible(dataset, spec)
    model = build_world_model(spec, cfg.seed, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 100) * 0.5 * (1 + math.cos(math.pi * i / cfg.steps))
    )
    meta = {**(meta or {}), "train": asdict(cfg), "loss": asdict(weights), "data": str(data_root)}
    log_path = out_dir / "metrics.csv"
    rows: list[dict[str, float]] = []
    bad, t0, last = 0, time.perf_counter(), {}
    bar = tqdm(range(cfg.steps), desc="train", disable=not progress, dynamic_ncols=True)
    for step in bar:
        batch = train_s.sample(cfg.batch_size, rng, device)
        loss, m = world_model_loss(model, batch, weights)
        if not torch.isfinite(loss):
            bad += 1
            if bad >= cfg.max_bad_steps:
                raise NonFiniteLossError(
                    f"loss was non-finite for {bad} consecutive steps (last step {step}); lower "
                    f"train.lr (now {cfg.lr}) or check the dataset with `hmpc-dataset validate`. "
                    f"No checkpoint was written for the broken weights."
                )
            opt.zero_grad(set_to_none=True)
            continue
        bad = 0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{m['loss']:.3f}", pred=f"{m['l1/pred']:.3f}")
        if (step + 1) % cfg.val_every == 0 or step == cfg.steps - 1:
            last = {"step": step + 1, "time_s": time.perf_counter() - t0, **m}
            last.update(validate(model, val_s, weights, cfg, device))
            rows.append(last)
            _write_csv(log_path, rows)
    ckpt = save_checkpoint(out_dir / "checkpoint", model, {**meta, "metrics": last})
    return TrainResult(ckpt, last, cfg.steps, time.perf_counter() - t0)


def _write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
