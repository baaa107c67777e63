"""Training metrics: one row per logged step to ``metrics.csv``, TensorBoard scalars, and the
``training_curves.png`` plot (matplotlib's object API: no pyplot state, no display needed)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from hmpc.checkpoint import atomic_write_bytes


class MetricsLog:
    """Rows of ``{"step": int, name: float, ...}``; rows of the same step are merged.

    ``rows`` may hold the history of an interrupted run: rows after ``start_step`` are dropped,
    and TensorBoard discards its events after ``start_step`` too (``purge_step``).
    """

    def __init__(self, out_dir: Path, tensorboard: bool, rows: Sequence[dict[str, float]] = (),
                 start_step: int = 0) -> None:
        self.path = Path(out_dir) / "metrics.csv"
        self.rows: list[dict[str, float]] = [dict(r) for r in rows if r["step"] <= start_step]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # torch's module needs the tensorboard package
                raise ValueError(
                    "trainer.tensorboard=true needs the tensorboard package: `pip install "
                    "tensorboard`, or set trainer.tensorboard=false") from e
            self.writer = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=start_step or None)

    def add(self, step: int, values: dict[str, float]) -> None:
        """Merge ``values`` into the row of ``step`` and send them to TensorBoard."""
        if self.rows and self.rows[-1]["step"] == step:
            self.rows[-1].update(values)
        else:
            self.rows.append({"step": step, **values})
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(k, v, step)

    def write_csv(self) -> None:
        """Rewrite ``metrics.csv`` atomically (columns: step first, then sorted names)."""
        keys = sorted({k for r in self.rows for k in r}, key=lambda k: (k != "step", k))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows
           if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training_curves(rows: Sequence[dict[str, Any]], path: Path, num_levels: int) -> Path:
    """Loss terms per level (log scale) and validation diagnostics against step, one PNG."""
    fig = Figure(figsize=(12, 3.2 * num_levels))
    for level in range(1, num_levels + 1):
        ax = fig.add_subplot(num_levels, 3, 3 * level - 2)
        names = sorted({k for r in rows for k in r if k.startswith(f"l{level}/")})
        for key in names:
            xs, ys = _series(rows, key)
            if xs and min(ys) > 0:
                ax.plot(xs, ys, label=key.split("/", 1)[1])
        ax.set_yscale("log")
        ax.set_title(f"level {level}: training loss terms")
        ax.legend(fontsize=7)
        for col, (keys, title) in enumerate([
            ((f"val/l{level}/probe_r2", f"val/l{level}/pred_err_ratio",
              f"val/l{level}/probe_pred_ratio", f"val/l{level}/probe_floor_ratio"),
             "probe R² / pred. error ratios"),
            ((f"val/l{level}/eff_rank", f"val/l{level}/std_mean"), "eff. rank / mean std"),
        ], start=2):
            ax = fig.add_subplot(num_levels, 3, 3 * level - 3 + col)
            for key in keys:
                xs, ys = _series(rows, key)
                ax.plot(xs, ys, marker="o", label=key.rsplit("/", 1)[1])
            ax.set_title(f"level {level}: {title} (val)")
            ax.legend(fontsize=7)
    for ax in fig.axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.94, wspace=0.25, hspace=0.45)
    fig.savefig(path, dpi=80)
    return path
