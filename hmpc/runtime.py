"""Small runtime helpers shared by the CLI layer and the Ray workers: devices, threads, memory,
seeded initialisation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
