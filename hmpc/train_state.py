"""Training checkpoints for exact resume: everything a run needs to continue bit for bit.

A training checkpoint is a normal model checkpoint (``model.safetensors`` + ``config.json``, what
``hmpc-eval`` loads) plus::

    optimizer.safetensors   the optimiser's per-parameter tensors (Adam moments, step counts)
    target.safetensors      the EMA target model (only with model.loss.target=ema)
    train_state.json        step, numpy RNG state, scheduler and optimiser hyper-parameters,
                            metrics history; written last, it marks the checkpoint complete

Nothing is pickled. Every file is first written into a temporary sibling folder, which then
replaces ``checkpoint/`` by two renames (old -> ``.checkpoint.old``, new -> ``checkpoint``), so a
crash at any moment leaves one complete checkpoint that :func:`find_resumable` finds. Training
uses no torch RNG (no dropout, no sampling), so the numpy Generator is the only RNG state.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hmpc.checkpoint import atomic_write_json, save_checkpoint
from hmpc.world_model import WorldModel, WorldModelSpec

TRAIN_STATE = "train_state.json"
OPTIMIZER = "optimizer.safetensors"
TARGET = "target.safetensors"


class NonFiniteWeightsError(RuntimeError):
    """Raised instead of writing a checkpoint whose weights contain NaN or inf."""


@dataclass
class TrainState:
    """The mutable, non-tensor part of a run."""

    step: int = 0  # optimiser steps attempted so far (skipped non-finite steps included)
    rng: dict[str, Any] = field(default_factory=dict)  # numpy bit_generator.state
    history: list[dict[str, float]] = field(default_factory=list)  # metrics rows
    seconds: float = 0.0  # training time of earlier sessions of this run
    bad_steps: int = 0  # consecutive non-finite steps just before this point


def optimizer_to_safe(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors ("<param id>.<name>") and JSON-able settings."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_safe(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_to_safe`; loads into ``opt`` (tensors follow its params)."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in [*tensors.items(), *meta["scalars"].items()]:
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of parameters/buffers that contain NaN or inf (empty when all are finite)."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]


def save_training_checkpoint(
    folder: Path, model: WorldModel, meta: dict[str, Any], opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler, state: TrainState,
    target: WorldModel | None = None,
) -> Path:
    """Write a complete training checkpoint to ``folder`` atomically; refuse broken weights."""
    for name, m in (("model", model), ("EMA target", target)):
        bad = non_finite_tensors(m) if m is not None else []
        if bad:
            raise NonFiniteWeightsError(
                f"refusing to write a checkpoint at step {state.step}: the {name} has non-finite "
                f"values in {bad[:5]}; the previous checkpoint in {folder} is kept. Lower "
                "trainer.lr (or trainer.grad_clip) and resume from it.")
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        save_checkpoint(tmp, model, meta)
        opt_tensors, opt_meta = optimizer_to_safe(opt)
        save_file(opt_tensors, str(tmp / OPTIMIZER))
        if target is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in target.state_dict().items()},
                      str(tmp / TARGET))
        atomic_write_json(tmp / TRAIN_STATE, {
            "step": state.step, "rng": state.rng, "history": state.history,
            "seconds": state.seconds, "bad_steps": state.bad_steps, "scheduler": sched.state_dict(),
            "optimizer": opt_meta,
        })
        _swap_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _swap_in(new: Path, folder: Path) -> None:
    """Replace ``folder`` by the complete folder ``new``; ``.<name>.old`` bridges the gap."""
    old = folder.parent / f".{folder.name}.old"
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.replace(old)
    new.replace(folder)
    shutil.rmtree(old, ignore_errors=True)


def find_resumable(folder: Path) -> Path:
    """The complete training checkpoint at ``folder`` (or the one a crash left beside it)."""
    folder = Path(folder)
    for cand in (folder, folder.parent / f".{folder.name}.old"):
        if (cand / TRAIN_STATE).is_file():
            return cand
    raise FileNotFoundError(
        f"no resumable checkpoint at {folder} (no {TRAIN_STATE}); with trainer.resume=true also "
        "pass output_dir=<the interrupted run's folder>, or pass trainer.resume=<run>/checkpoint; "
        "trainer.resume=false starts fresh")


def load_training_checkpoint(
    folder: Path, model: WorldModel, opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler, target: WorldModel | None = None,
) -> tuple[TrainState, dict[str, Any]]:
    """Load weights, optimiser, scheduler (and EMA target) in place; returns (state, config)."""
    folder = find_resumable(folder)
    config = json.loads((folder / "config.json").read_text())
    saved = WorldModelSpec.from_dict(config.get("model", {})).to_dict()
    now = model.spec.to_dict()
    if saved != now:
        diff = sorted(k for k in now if saved.get(k) != now[k])
        raise ValueError(
            f"cannot resume from {folder}: its model config differs in {diff} (checkpoint "
            f"{[saved.get(k) for k in diff]}, now {[now[k] for k in diff]}); "
            "use the same model= preset and overrides as the interrupted run")
    raw = json.loads((folder / TRAIN_STATE).read_text())
    device = model.device
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(device)))
    # loaded on CPU: load_state_dict moves the moments to the parameters' device and keeps Adam's
    # step counters on CPU, as in a fresh run (on a GPU they would cost a sync per parameter per step)
    optimizer_from_safe(opt, load_file(str(folder / OPTIMIZER), device="cpu"), raw["optimizer"])
    sched.load_state_dict(dict(raw["scheduler"]))
    if target is not None:
        if not (folder / TARGET).is_file():
            raise ValueError(f"{folder} has no {TARGET}: it was trained with model.loss.target=online")
        target.load_state_dict(load_file(str(folder / TARGET), device=str(device)))
    state = TrainState(raw["step"], raw["rng"], raw["history"], raw.get("seconds", 0.0),
                       raw.get("bad_steps", 0))
    return state, config


def restore_rng(state: dict[str, Any]) -> np.random.Generator:
    """A numpy Generator continuing exactly where ``bit_generator.state`` was saved."""
    bit_gen = getattr(np.random, state["bit_generator"])()
    bit_gen.state = state
    return np.random.Generator(bit_gen)


def lr_factor(steps: int) -> Callable[[int], float]:
    """The learning-rate factor at step i: linear warm-up over 100 steps, then cosine decay to 0 at
    ``steps`` (a pure function of i, so a resumed schedule continues exactly)."""
    def factor(i: int) -> float:
        return min(1.0, (i + 1) / 100) * 0.5 * (1 + math.cos(math.pi * i / steps))
    return factor
