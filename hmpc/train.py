"""Trainer of the multi-level world model: windows from a LeRobot dataset -> safetensors checkpoint.

Owns the optimiser, the schedule, the EMA target, validation on held-out episodes, metrics
(CSV, TensorBoard, progress bar), periodic checkpoints with exact resume, the NaN/inf guard and
the end-of-run diagnostics; the model owns no loss and the losses own no state.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hmpc.augment import ImageAugment, augment_batch
from hmpc.checkpoint import atomic_write_json
from hmpc.data import LeRobotDataset, WindowSampler, build_frame_cache, split_episodes
from hmpc.data.video import DatasetError
from hmpc.data.windows import FrameArrays
from hmpc.diagnostics import (
    health_warnings,
    pooled_error_ratios,
    pooled_probe_r2,
    representation_report,
    rolled_views,
    window_diagnostics,
)
from hmpc.objective import LossWeights, add_warps, update_ema, world_model_loss
from hmpc.runtime import environment_info
from hmpc.train_log import MetricsLog, plot_training_curves
from hmpc.train_state import (
    TrainState,
    load_training_checkpoint,
    lr_factor,
    restore_rng,
    save_training_checkpoint,
)
from hmpc.world_model import WorldModel, WorldModelSpec, build_world_model

VIDEO_ONLY = ("ignore", "use")


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
    max_bad_steps: int = 20  # consecutive non-finite losses/gradients before stopping
    seed: int = 0
    checkpoint_every: int = 500  # 0: only the final checkpoint
    resume: bool | str = False  # true: <out_dir>/checkpoint; or a checkpoint folder
    tensorboard: bool = True  # scalars under <out_dir>/tb
    plots: bool = True  # training_curves.png at the end (about 1-2 s)
    video_only: str = "ignore"  # "use": also train on windows without actions (see objective)
    labelled_share: float | None = None  # with video_only=use: batch fraction with actions; None: uniform
    video_batch: int = 0  # with video_only=use: video-only windows added to batch_size labelled ones
    probe_dims: tuple[int, ...] = (0, 1)  # observation.state dims the probe R² diagnostics read
    augment: ImageAugment = field(default_factory=ImageAugment)  # of training windows only

    def __post_init__(self) -> None:
        if self.video_only not in VIDEO_ONLY:
            raise ValueError(f"trainer.video_only={self.video_only!r}; use one of {list(VIDEO_ONLY)}")
        if self.labelled_share is not None and not 0.0 < self.labelled_share <= 1.0:
            raise ValueError(f"trainer.labelled_share={self.labelled_share} must be in (0, 1], or "
                             "null to sample windows uniformly")
        if self.video_batch < 0 or self.video_batch and (
                self.labelled_share is not None or self.video_only != "use"):
            raise ValueError(f"trainer.video_batch={self.video_batch} must be >= 0, and > 0 only with "
                             "trainer.video_only=use and trainer.labelled_share=null (it adds "
                             "video-only windows to trainer.batch_size labelled ones; "
                             "labelled_share splits one batch instead)")
        if not self.probe_dims or min(self.probe_dims) < 0:
            raise ValueError(f"trainer.probe_dims={list(self.probe_dims)} must list observation.state "
                             "dims (>= 0), e.g. [0, 1]")  # fmt: skip
        for key in ("steps", "batch_size", "val_every", "val_batches", "log_every", "max_bad_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"trainer.{key}={getattr(self, key)} must be >= 1")
        if self.checkpoint_every < 0:
            raise ValueError(f"trainer.checkpoint_every={self.checkpoint_every} must be >= 0 (0: final only)")


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict[str, float]
    steps: int
    seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # diagnostics.health_warnings


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class _Run:
    """Everything that changes during training (what a checkpoint must restore)."""

    model: WorldModel
    target: WorldModel | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    rng: np.random.Generator
    state: TrainState
    bad: int = 0


def _split(frames: FrameArrays, val_fraction: float, rng: np.random.Generator,
           use_video: bool) -> tuple[np.ndarray, np.ndarray]:
    """Held-out episodes. Mixing video-only episodes in, the labelled and the video-only ones are
    split separately, each by ``val_fraction``: a plain split of 10 % labelled data can hold out
    every labelled episode (it did: the bench's label split and this one drew the same seeded
    permutation), and then no action ever reaches training."""
    n = frames.num_episodes
    starts = frames.episode_starts.astype(np.int64)
    labelled = np.add.reduceat(frames.has_action, starts) > 0 if n else np.zeros(0, bool)
    if not use_video or labelled.all() or not labelled.any():
        return split_episodes(n, val_fraction, rng)
    parts = []
    for ids in (np.flatnonzero(labelled), np.flatnonzero(~labelled)):
        tr, va = split_episodes(len(ids), val_fraction, rng)
        parts.append((ids[tr], ids[va]))
    return (np.sort(np.concatenate([p[0] for p in parts])),
            np.sort(np.concatenate([p[1] for p in parts])))


def _make_samplers(
    data_root: Path, window: int, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[WindowSampler, WindowSampler, LeRobotDataset]:
    """Train windows (video-only ones too when ``video_only=use``) and held-out windows with
    actions (validation scores action-conditioned prediction; falls back to train episodes)."""
    dataset = LeRobotDataset(data_root)
    frames = build_frame_cache(dataset)
    use_video = cfg.video_only == "use"
    train_ids, val_ids = _split(frames, cfg.val_fraction, rng, use_video)
    train = WindowSampler(frames, window, episodes=train_ids, require_actions=not use_video,
                          labelled_share=cfg.labelled_share if use_video else None)
    if use_video and not train.num_labelled:
        raise DatasetError(
            f"dataset {data_root}: no training window of {window} frames has actions, so nothing "
            "trains level 1's predictor; label more (or longer) episodes, or shorten the window "
            "(trainer.top_steps)")
    try:
        val = WindowSampler(frames, window, episodes=val_ids if len(val_ids) else train_ids)
    except DatasetError:  # every held-out episode is video-only
        val = WindowSampler(frames, window, episodes=train_ids)
    return train, val, dataset


def _check_probe_dims(dataset: LeRobotDataset, cfg: TrainConfig) -> None:
    try:
        state = dataset.state_dim
    except KeyError:  # no observation.state feature: no probe diagnostics
        return
    if max(cfg.probe_dims) >= state:
        raise ValueError(f"trainer.probe_dims={list(cfg.probe_dims)} but observation.state of "
                         f"{dataset.root} has {state} dims; use dims in [0, {state - 1}]")  # fmt: skip


def _check_compatible(dataset: LeRobotDataset, spec: WorldModelSpec,
                      samplers: Sequence[WindowSampler] = ()) -> None:
    h = dataset.image_shape[0]
    if h != spec.image_size:
        raise ValueError(
            f"dataset {dataset.root} has {h}x{h} images but the model spec has image_size={spec.image_size}; "
            f"build WorldModelSpec(image_size={h}, ...) (hmpc-train takes it from the dataset)"
        )
    if spec.state_dim:
        try:
            s = dataset.state_dim
        except KeyError:  # no observation.state feature
            s = 0
        if spec.state_dim > s:
            raise ValueError(f"model.state_dim={spec.state_dim} fuses that many observation.state "
                             f"dims but dataset {dataset.root} has {s}; set model.state_dim <= {s}")
        bare = {int(e) for t in samplers for e in t.frames.episode_index[t.starts[~t.frames.has_state[t.starts]]]}
        if bare:
            raise ValueError(f"model.state_dim={spec.state_dim} fuses observation.state into the encoder, but "
                             f"{len(bare)} episodes of {dataset.root} that training reads logged none (imported "
                             "video); set model.state_dim=0 to train on them, or trainer.video_only=ignore")
    if dataset.action_dim != spec.action_dim:
        raise ValueError(
            f"dataset {dataset.root} has action dim {dataset.action_dim} but the model spec has "
            f"action_dim={spec.action_dim}; build WorldModelSpec(action_dim={dataset.action_dim}, ...) "
            "(hmpc-train takes it from the dataset)"
        )


def resolve_probe(spec: WorldModelSpec, weights: LossWeights, dataset: LeRobotDataset) -> WorldModelSpec:
    """``spec`` with ``probe_dim`` taken from the dataset's state size when the probe is trained."""
    if not weights.state_probe:
        if spec.probe_dim:
            raise ValueError(
                f"model.probe_dim={spec.probe_dim} but model.loss.state_probe=0: the probe would "
                "stay untrained; set model.loss.state_probe=1.0 or model.probe_dim=0")
        return spec
    try:
        s = dataset.state_dim
    except KeyError:  # no observation.state feature
        s = 0
    if not s:
        raise ValueError(f"model.loss.state_probe={weights.state_probe} needs observation.state, "
                         f"but dataset {dataset.root} has none; set model.loss.state_probe=0")
    if spec.probe_dim and spec.probe_dim != s:
        raise ValueError(f"model.probe_dim={spec.probe_dim} but dataset {dataset.root} has state "
                         f"size {s}; leave model.probe_dim=0 (it is taken from the dataset)")
    return replace(spec, probe_dim=s)


def _val_batches(
    sampler: WindowSampler, cfg: TrainConfig, weights: LossWeights, device: torch.device
) -> list[dict]:
    rng = np.random.default_rng(10_000 + cfg.seed)  # same validation windows every time ...
    warps = np.random.default_rng(20_000 + cfg.seed)  # ... whether or not warps are drawn too
    return [add_warps(sampler.sample(max(cfg.batch_size, 8), rng, device), weights, warps)
            for _ in range(cfg.val_batches)]


@torch.no_grad()
def validate(
    model: WorldModel, sampler: WindowSampler, weights: LossWeights, cfg: TrainConfig,
    device: torch.device, target: WorldModel | None = None,
) -> dict[str, float]:
    """Mean loss terms and diagnostics over ``cfg.val_batches`` held-out batches (fixed seed)."""
    model.eval()
    sums: dict[str, float] = {}
    batches = _val_batches(sampler, cfg, weights, device)
    views = [rolled_views(model, batch) for batch in batches]  # encoded and rolled out once
    for batch, batch_views in zip(batches, views, strict=True):
        _, m = world_model_loss(model, batch, weights, target)
        m.update(window_diagnostics(model, batch, batch_views))
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v / cfg.val_batches
    sums.update(pooled_probe_r2(model, batches, cfg.probe_dims, views))
    sums.update(pooled_error_ratios(model, views))  # not the mean of the batches' ratios
    model.train()
    return {f"val/{k}": v for k, v in sums.items()}


def _setup(
    out_dir: Path, spec: WorldModelSpec, weights: LossWeights, cfg: TrainConfig,
    device: torch.device, rng: np.random.Generator,
) -> _Run:
    """Fresh model/optimiser/schedule, or the state of ``cfg.resume`` loaded into them."""
    model = build_world_model(spec, cfg.seed, device)
    target = None
    if weights.target == "ema":
        target = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg.steps))
    run = _Run(model, target, opt, sched, rng, TrainState())
    if cfg.resume is False or cfg.resume in ("", "false", None):
        return run
    folder = out_dir / "checkpoint" if cfg.resume is True or cfg.resume == "true" else Path(cfg.resume)
    run.state, _ = load_training_checkpoint(folder, model, opt, sched, target)
    run.rng = restore_rng(run.state.rng)
    run.bad = run.state.bad_steps
    return run


def _train_step(run: _Run, batch: dict[str, torch.Tensor], weights: LossWeights,
                cfg: TrainConfig) -> dict[str, float] | None:
    """One optimiser step; None (and no update) when the loss or gradient is not finite."""
    loss, m = world_model_loss(run.model, batch, weights, run.target)
    run.opt.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return None
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    if not torch.isfinite(norm):
        run.opt.zero_grad(set_to_none=True)
        return None
    run.opt.step()
    run.sched.step()
    if run.target is not None:
        update_ema(run.target, run.model, weights.ema_decay)
    return m


def _checkpoint(run: _Run, out_dir: Path, log: MetricsLog, meta: dict[str, Any], t0: float) -> Path:
    run.state.rng = run.rng.bit_generator.state
    run.state.history = log.rows
    run.state.bad_steps = run.bad
    state = copy.copy(run.state)
    state.seconds = run.state.seconds + time.perf_counter() - t0
    return save_training_checkpoint(out_dir / "checkpoint", run.model, meta, run.opt, run.sched,
                                    state, run.target)


def train_world_model(
    data_root: str | Path,
    out_dir: str | Path,
    spec: WorldModelSpec,
    weights: LossWeights,
    cfg: TrainConfig,
    device: torch.device,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    on_validate: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train (or resume, ``cfg.resume``) and save ``out_dir/checkpoint``.

    ``on_validate(step, row)`` is called after each validation with the logged row (train and
    ``val/...`` metrics), e.g. to report to Ray Tune.

    Also writes ``metrics.csv``, ``tb/`` (TensorBoard), ``diagnostics.json`` and
    ``training_curves.png`` under ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    window = 1 + cfg.top_steps * spec.span(spec.num_levels)
    train_s, val_s, dataset = _make_samplers(Path(data_root), window, cfg, rng)
    _check_compatible(dataset, spec, (train_s, val_s))
    if cfg.augment.active and spec.agent_mask is not None:  # it paints a sharp disc of a fixed colour
        raise ValueError("trainer.augment and model.agent_mask do not mix: the mask paints the agent out "
                         "of the jittered image by its state, leaving its trace; set one of them off")
    _check_probe_dims(dataset, cfg)
    spec = resolve_probe(spec, weights, dataset)
    run = _setup(out_dir, spec, weights, cfg, device, rng)
    meta = {**(meta or {}), "train": asdict(cfg), "loss": asdict(weights), "data": str(data_root),
            "environment": environment_info()}
    log = MetricsLog(out_dir, cfg.tensorboard, run.state.history, run.state.step)
    t0 = time.perf_counter()
    try:
        last = _loop(run, train_s, val_s, weights, cfg, device, log, out_dir, meta, t0, progress,
                     on_validate)
        ckpt = _checkpoint(run, out_dir, log, {**meta, "metrics": last}, t0)
    finally:
        log.close()
    report = representation_report(run.model, _val_batches(val_s, cfg, weights, device), cfg.probe_dims)
    target_std = weights.variance_target if weights.variance else 0.0  # 0: no collapse check
    warnings = health_warnings(report, target_std, log.rows, cfg.augment.window_jitter())
    atomic_write_json(out_dir / "diagnostics.json", {"step": run.state.step, "levels": report,
                                                     "warnings": warnings})
    if cfg.plots:
        plot_training_curves(log.rows, out_dir / "training_curves.png", spec.num_levels)
    seconds = run.state.seconds + time.perf_counter() - t0
    return TrainResult(ckpt, last, run.state.step, seconds, report, warnings)


def _loop(
    run: _Run, train_s: WindowSampler, val_s: WindowSampler, weights: LossWeights,
    cfg: TrainConfig, device: torch.device, log: MetricsLog, out_dir: Path,
    meta: dict[str, Any], t0: float, progress: bool,
    on_validate: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Steps ``run.state.step .. cfg.steps - 1``; returns the last logged row."""
    last: dict[str, float] = dict(log.rows[-1]) if log.rows else {}
    bar = tqdm(range(run.state.step, cfg.steps), desc="train", disable=not progress,
               dynamic_ncols=True, initial=run.state.step, total=cfg.steps)
    for step in bar:
        if cfg.video_batch:  # batch_size labelled windows + video_batch video-only ones
            batch = train_s.sample_split(cfg.batch_size, cfg.video_batch, run.rng, device)
        else:
            batch = train_s.sample(cfg.batch_size, run.rng, device)
        batch = add_warps(augment_batch(batch, cfg.augment, run.rng), weights, run.rng)
        m = _train_step(run, batch, weights, cfg)
        run.state.step = done = step + 1
        if m is None:
            run.bad += 1
            if run.bad >= cfg.max_bad_steps:
                raise NonFiniteLossError(
                    f"loss or gradient was non-finite for {run.bad} consecutive steps (last step "
                    f"{step}); those steps were skipped, and the last checkpoint in "
                    f"{out_dir / 'checkpoint'} (if any) is intact. Lower trainer.lr (now {cfg.lr}) "
                    "or check the dataset with `hmpc-dataset validate`, then resume with "
                    "trainer.resume=true.")
            continue
        run.bad = 0
        if done % cfg.log_every == 0 or step == 0 or done == cfg.steps:
            bar.set_postfix(loss=f"{m['loss']:.3f}", pred=f"{m['l1/pred']:.3f}")
            log.add(done, {"time_s": run.state.seconds + time.perf_counter() - t0, **m})
        if done % cfg.val_every == 0 or done == cfg.steps:
            log.add(done, {"time_s": run.state.seconds + time.perf_counter() - t0, **m,
                           **validate(run.model, val_s, weights, cfg, device, run.target)})
            last = dict(log.rows[-1])
            log.write_csv()
            if on_validate is not None:
                on_validate(done, last)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            log.write_csv()
            _checkpoint(run, out_dir, log, {**meta, "metrics": last}, t0)
    log.write_csv()
    return last
