"""Checkpoints: weights in safetensors (never pickle), metadata as JSON, written atomically.

A checkpoint is a folder::

    model.safetensors   weights of the WorldModel
    config.json         {"model": WorldModelSpec dict, "env": {...}, "train": {...}, ...}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hmpc.security import check_safetensors_file
from hmpc.world_model import WorldModel, WorldModelSpec

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def save_checkpoint(folder: str | Path, model: WorldModel, meta: dict[str, Any]) -> Path:
    """Save weights + ``{"model": spec, **meta}``; the JSON is written last (it marks completion)."""
    folder = Path(folder)
    atomic_save_weights(folder / WEIGHTS, model)
    atomic_write_json(folder / CONFIG, {"model": model.spec.to_dict(), **meta})
    return folder


def atomic_save_weights(path: Path, module: torch.nn.Module) -> None:
    """``module``'s state dict as safetensors at ``path``, through a temporary file in its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(
    folder: str | Path, device: torch.device | str = "cpu"
) -> tuple[WorldModel, dict[str, Any]]:
    """Load a world model and its metadata. The JSON is data: nothing in it is instantiated."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"checkpoint folder {folder} does not exist; train one with "
            f"`hmpc-train data=<dataset> output_dir=<dir>` and pass checkpoint=<dir>/checkpoint"
        )
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint {folder} has no {name}; is it a hmpc checkpoint?")
    meta = json.loads((folder / CONFIG).read_text())
    if "model" not in meta:
        raise ValueError(f"{folder / CONFIG} has no 'model' key; is it a hmpc checkpoint?")
    spec = WorldModelSpec.from_dict(meta["model"])
    model = WorldModel(spec)
    check_safetensors_file(folder / WEIGHTS)  # a pickle in disguise fails here, never unpickled
    state = load_file(str(folder / WEIGHTS), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{folder / WEIGHTS} does not match {folder / CONFIG}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.to(device).eval()
    return model, meta
