"""Evaluation plots (matplotlib's object API: no pyplot state, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hmpc.report import assign_difficulty, wilson_interval


def _save_success_axes(fig: Figure, ax, path: Path) -> Path:
    """Shared finish of the success plots: y axis in %, legend, tight layout, PNG."""
    ax.set_ylabel("success % (95 % CI)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_success_by_difficulty(
    records: Sequence[dict[str, Any]], controllers: Sequence[str], path: Path
) -> Path:
    """Grouped bars: success % (with 95 % intervals) per start-goal difficulty, per controller."""
    dists, what = assign_difficulty(records)
    fig = Figure(figsize=(max(5.0, 1.2 * len(dists) + 2), 3.5))
    ax = fig.add_subplot()
    width = 0.8 / max(len(controllers), 1)
    for i, name in enumerate(controllers):
        rates, lo, hi = [], [], []
        for d in dists:
            rs = [r for r in records if r["controller"] == name and r["difficulty"] == d]
            wins = sum(bool(r["success"]) for r in rs)
            p = 100.0 * wins / len(rs) if rs else 0.0
            a, b = wilson_interval(wins, len(rs))
            rates.append(p)
            lo.append(max(p - a, 0.0))
            hi.append(max(b - p, 0.0))
        x = np.arange(len(dists)) + (i - (len(controllers) - 1) / 2) * width
        ax.bar(x, rates, width, yerr=[lo, hi], capsize=2, label=name)
    ax.set_xticks(np.arange(len(dists)), [d.replace(" cells", "") for d in dists])
    ax.set_xlabel(what)
    return _save_success_axes(fig, ax, path)


def plot_success_vs_time(aggregated: dict[str, dict], path: Path) -> Path:
    """Each controller as a point: mean planning ms per step against success %."""
    fig = Figure(figsize=(4.5, 3.5))
    ax = fig.add_subplot()
    for name, a in aggregated.items():
        lo, hi = a["pc_success_ci95"]
        y = a["pc_success"]
        err = [[max(y - lo, 0.0)], [max(hi - y, 0.0)]]
        ax.errorbar([a["plan_ms_mean"]], [y], yerr=err, fmt="o", capsize=3, label=name)
    ax.set_xlabel("planning ms per control step (mean)")
    return _save_success_axes(fig, ax, path)


def plot_returns(curve: Sequence[tuple[int, float]], path: Path) -> Path:
    """PPO training curve: mean episode return against env steps sampled, one PNG.

    ``curve`` holds ``(env_steps, mean_return)`` pairs in training order; an empty curve gives
    empty (but labelled) axes.
    """
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    if curve:
        ax.plot(*zip(*curve, strict=True), marker="o")
    ax.set(xlabel="env steps", ylabel="mean episode return", title="PPO training")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_sweep(
    curves: dict[str, tuple[Sequence[int], Sequence[float]]], metric: str, mode: str, path: Path
) -> Path:
    """Sweep objective against training step, one line per trial, one PNG.

    ``curves`` maps a trial name to ``(steps, values)`` of equal length; the trial named
    ``"default"`` is drawn bold black, trials without values are skipped. ``metric`` labels the
    y axis and ``mode`` (``"max"`` or ``"min"``) says in the title which direction is better.
    """
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    for name, (steps, values) in curves.items():
        style = {"color": "black", "lw": 2.5, "zorder": 3} if name == "default" else {"alpha": 0.7}
        if values:
            ax.plot(steps, values, marker="o", label=name, **style)
    ax.set(xlabel="training step", ylabel=metric, title=f"sweep ({mode} is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_paired_seeds(
    panels: dict[str, tuple[Sequence[float], Sequence[float]]], names: tuple[str, str],
    seeds: Sequence[int], path: Path, higher_better: Sequence[str] = (),
) -> Path:
    """One panel per measure: each training seed's value under two settings joined by a line
    (a slope chart), so a gain on most seeds and the seeds that go the other way read at a glance.

    ``panels`` maps a measure (the panel title) to ``(values of names[0], values of names[1])``,
    one per seed in ``seeds`` order; lower is better except in the panels named in
    ``higher_better``. A seed's line is blue where ``names[1]`` is better, red where it is worse.
    """
    fig = Figure(figsize=(3.2 * len(panels), 3.6))
    for i, (title, (a, b)) in enumerate(panels.items()):
        if len(a) != len(seeds) or len(b) != len(seeds):
            raise ValueError(f"panel {title!r}: {len(a)} and {len(b)} values for {len(seeds)} seeds")
        ax = fig.add_subplot(1, len(panels), i + 1)
        for seed, x, y in zip(seeds, a, b, strict=True):
            worse = y < x if title in higher_better else y > x
            ax.plot([0, 1], [x, y], marker="o", color="tab:red" if worse else "tab:blue", alpha=0.7)
            ax.annotate(str(seed), (1, y), xytext=(4, 0), textcoords="offset points", fontsize=7,
                        va="center")
        ax.plot([0, 1], [float(np.mean(a)), float(np.mean(b))], color="black", lw=2.5, label="mean")
        ax.set_xticks([0, 1], list(names))
        ax.set_xlim(-0.2, 1.25)
        ax.set_title(f"{title} ({'higher' if title in higher_better else 'lower'} is better)", fontsize=8)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
