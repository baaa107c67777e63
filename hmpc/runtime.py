"""Small runtime helpers shared by the CLI layer and the Ray workers: devices, threads, memory,
seeded initialisation."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Within the block, torch's CPU generator starts from ``seed``; after it, the caller's CPU
    generator is as it was and no GPU generator was touched (or initialised). For seeded module
    initialisation: build on CPU in the block, move to the device after."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device={name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use device=auto or cpu")
    return device


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed blocks for reuse instead of handing them back to the
    OS (mallopt: mmap threshold 1 GiB, no trimming), like starting the process with
    ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set. Under glibc's defaults a CPU
    training step's activations page-fault in again at every step (kernel time was about a fifth
    of CPU training on 2 cores); with this, the conv forward + backward of
    ``tests/test_train.py`` faults 0-1025 pages over 6 steps against 32-37k, and
    ``bench/train_throughput.py --malloc keep`` ran +21 % steps/s against ``default`` (model=maze,
    2 CPU cores, 2026-12-03). The process keeps its peak memory instead. Returns whether it took
    effect: False where there is no glibc (macOS, musl), a no-op there."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
    return bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1 and ok)


def worker_device(device: str, workers: int, gpus: float, address: str | None,
                  gpus_key: str = "gpus_per_worker") -> tuple[str, float]:
    """(device each Ray worker runs on, GPUs each asks for; ``gpus_key`` names the latter in
    errors). Ray workers see only the GPUs they ask for, so with ``workers`` > 0 and ``gpus`` = 0:
    ``auto`` on a machine with a GPU and no ``address`` shares its card (1/W each) and otherwise
    runs on CPU; ``cuda`` is refused rather than crowding a card Ray does not know is in use.
    ``cuda:N`` is refused with any ``gpus``: a worker sees only the card Ray assigns it, as cuda:0.
    ``workers=0`` (in-process) takes ``device`` as given."""
    if workers == 0:
        return device, gpus
    if device.startswith("cuda:"):
        raise ValueError(f"device={device} with {workers} Ray workers: each sees only the card Ray assigns it; "
                         f"use device=cuda with {gpus_key} (or workers=0 to pick the card)")
    if gpus > 0 or device not in ("auto", "cuda"):
        return device, gpus
    if device == "auto":
        share = address is None and torch.cuda.is_available()
        return ("cuda", 1 / workers) if share else ("cpu", 0.0)
    raise ValueError(f"device=cuda with {workers} Ray workers needs {gpus_key} > 0 (e.g. {gpus_key}="
                     f"{1 / workers:.3g}: {workers} workers sharing one card), or device=cpu")


# Packages whose version can change results on the same code: numerics (torch, numpy), the data
# path (av bundles the video codecs; pyarrow, opencv-python), the simulator and the parallel runtime.
ENV_PACKAGES = ("torch", "numpy", "av", "pyarrow", "opencv-python", "pybullet", "gymnasium", "ray",
                "safetensors", "hydra-core")


def environment_info() -> dict[str, Any]:
    """What a result depends on beyond the code: Python, platform, package versions, the codec
    libraries av bundles, torch's CPU threads and the CUDA device (or None). Checkpoints and
    ``eval_info.json`` keep it under ``environment``: the same commit gave other CPU numbers in a
    rebuilt virtualenv (README, the demo)."""
    import av

    versions: dict[str, str | None] = {}
    for name in ENV_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "av_libraries": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
