"""Shared by the bench scripts: run an hmpc CLI in a subprocess (printed first, timed) and read
back hmpc-eval's aggregated results. Import as ``from _cli import ...``: running
``python bench/<script>.py`` puts this folder on sys.path."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_cli(module: str, overrides: list[str], label: str = "") -> float:
    """``python -m hmpc.cli.<module> <overrides>``; raises when it fails; returns its seconds."""
    cmd = [sys.executable, "-m", f"hmpc.cli.{module}", *overrides]
    print(f"[{label}] " if label else "", "running: ", " ".join(cmd), sep="", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def evaluate(checkpoint: str | Path, controllers: list[str], overrides: list[str], out: Path,
             label: str = "") -> dict[str, dict[str, Any]]:
    """hmpc-eval of ``controllers`` into ``out`` -> its ``aggregated`` results per controller."""
    run_cli("evaluate", [f"checkpoint={checkpoint}", f"controllers=[{','.join(controllers)}]",
                         *overrides, f"output_dir={out}"], label)  # fmt: skip
    return json.loads((out / "eval_info.json").read_text())["aggregated"]


def ci(a: dict[str, Any]) -> str:
    """An aggregated row's 95 % success interval as "[lo, hi]"."""
    lo, hi = a["pc_success_ci95"]
    return f"[{lo:.0f}, {hi:.0f}]"
