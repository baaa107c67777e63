"""Feature statistics of LeRobot datasets: meta/stats.json (pooled) and the per-episode
``stats/<feature>/<stat>`` columns of meta/episodes, and what they say about the episodes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hmpc.data._meta import CODEBASE_VERSION

if TYPE_CHECKING:
    from hmpc.data.lerobot import Episode


def stats_columns(stats: Sequence[dict[str, dict[str, Any]]]) -> dict[str, list[Any]]:
    """Per-episode stats (one :func:`episodes_stats` dict per episode) as LeRobot v3.0's
    meta/episodes columns ``stats/<feature>/<stat>``; None where an episode lacks the feature
    (the actions of a video-only episode)."""
    keys = dict.fromkeys((feat, name) for s in stats for feat, d in s.items() for name in d)
    return {f"stats/{feat}/{name}": [s.get(feat, {}).get(name) for s in stats]
            for feat, name in keys}


def typed_stats(table: pa.Table, has_actions: bool) -> pa.Table:
    """``table`` (meta/episodes rows) with the stats/ columns of the state and actions (when the
    dataset has any) present and typed: a batch without a state or actions (imported video) gets
    null ones, not missing or null-typed ones, so every meta/episodes file has one schema (as
    readers that load them as one table, LeRobot's among them, need)."""
    n = table.num_rows
    floats, ints = pa.list_(pa.float64()), pa.list_(pa.int64())
    feats = ["observation.state"] + (["action"] if has_actions else [])
    for feat in feats:
        for stat in ("min", "max", "mean", "std", "count"):
            name, kind = f"stats/{feat}/{stat}", ints if stat == "count" else floats
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(n, kind))
            elif table.schema.field(name).type != kind:
                i = table.column_names.index(name)
                table = table.set_column(i, name, table[name].cast(kind))
    rank = {f: i for i, f in enumerate(feats)}  # the state's, the actions', then the images' stats

    def order(name: str) -> tuple[int, int]:
        feat = name.split("/")[1] if name.startswith("stats/") else None
        return (0, 0) if feat is None else (1, rank.get(feat, len(rank)))

    return table.select(sorted(table.column_names, key=order))  # stable: each group keeps its order


def pixel_histogram(pixels: np.ndarray) -> np.ndarray:
    """int64 (3, 256): per-channel counts of the values of uint8 frames (..., 3)."""
    return np.stack([np.bincount(pixels[..., c].reshape(-1), minlength=256) for c in range(3)])


def episodes_stats(episodes: Sequence[Episode], video_key: str, hist: np.ndarray | None = None,
                   quantiles: bool = False) -> dict[str, dict[str, Any]]:
    """min/max/mean/std/count of state and action (over the frames that have one) and of the image
    channels in [0, 1] (over every frame: their count is the number of frames); with
    ``quantiles`` also LeRobot's q01/q10/q50/q90/q99, which its quantile normalisation reads (hmpc
    writes them to meta/stats.json only; image ones are the lowest level whose cumulative share
    reaches q).

    ``hist``: the summed :func:`pixel_histogram` of the episodes, when their pixels are gone
    (a streaming writer); computed from ``ep.pixels`` when None.
    """
    stats = {}
    states = [ep.state for ep in episodes if ep.state is not None]
    if states:
        stats["observation.state"] = _stats(np.concatenate(states), quantiles)
    acts = [ep.action for ep in episodes if ep.action is not None]
    if acts:
        stats["action"] = _stats(np.concatenate(acts), quantiles)
    # Per-channel image stats in [0, 1] from 256-bin histograms: exact, and ~20x faster than
    # float reductions over N*H*W pixels. LeRobot stores them with shape (3, 1, 1).
    if hist is None:
        hist = np.zeros((3, 256), np.int64)
        for ep in episodes:
            hist += pixel_histogram(ep.pixels)
    levels = np.arange(256) / 255.0
    mean = hist @ levels / hist.sum(1)
    std = np.sqrt(np.maximum(hist @ levels**2 / hist.sum(1) - mean**2, 0.0))
    nonzero = [np.flatnonzero(h) for h in hist]
    img = {"min": [levels[nz[0]] for nz in nonzero], "max": [levels[nz[-1]] for nz in nonzero],
           "mean": mean, "std": std}
    if quantiles:  # from the histogram: the lowest level whose cumulative share reaches q
        cum = np.cumsum(hist, 1) / hist.sum(1, keepdims=True)
        img |= {name: [levels[np.searchsorted(c, q)] for c in cum] for name, q in QUANTILES.items()}
    stats[video_key] = {k: np.asarray(v, np.float64)[:, None, None].tolist() for k, v in img.items()}
    stats[video_key]["count"] = [int(sum(len(ep) for ep in episodes))]
    return stats


QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's


def _stats(x: np.ndarray, quantiles: bool = False) -> dict[str, Any]:
    x = x.astype(np.float64)
    out = {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
           "std": x.std(0).tolist(), "count": [int(x.shape[0])]}
    if quantiles:
        out |= {name: np.quantile(x, q, axis=0).tolist() for name, q in QUANTILES.items()}
    return out


def stats_frame_count(stats: dict[str, Any], video_key: str) -> int:
    """Frames that meta/stats.json covers: the largest of its image, state and action counts.
    hmpc counts every frame's image (not every frame has a state or actions); LeRobot counts
    image *samples* (~100 per episode) and a state on every frame."""
    counts = [(stats.get(key) or {}).get("count") for key in (video_key, "observation.state", "action")]
    return max([int(c[0]) for c in counts if c] or [0])


def logged_episodes(root: Path, info: dict[str, Any]) -> dict[str, int | None] | None:
    """Committed episodes with a state ("observation.state") and with actions ("action"), from
    meta/episodes' per-episode ``stats/<feature>/count`` columns. A file without any stats/
    column comes from a writer that gave every episode a state (hmpc before per-episode stats):
    its episodes count as with a state, and the action count is then None (unknown). None for a
    v2.x dataset."""
    if info["codebase_version"] != CODEBASE_VERSION:
        return None
    total = int(info["total_episodes"])
    out: dict[str, int | None] = {"observation.state": 0, "action": 0}
    for path in sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
        names = pq.read_schema(path).names
        cols = [f"stats/{feat}/count" for feat in out if f"stats/{feat}/count" in names]
        table = pq.read_table(path, columns=["episode_index", *cols])
        committed = np.asarray(table["episode_index"].to_pylist()) < total  # rows past it: unpublished
        for feat, n in out.items():
            col = f"stats/{feat}/count"
            if col in names:  # null for an episode without the feature
                got = int((committed & table[col].is_valid().to_numpy(zero_copy_only=False)).sum())
            elif any(name.startswith("stats/") for name in names):
                got = 0  # a batch without the feature (imported or video-only episodes)
            else:
                got = int(committed.sum()) if feat == "observation.state" else None
            out[feat] = None if n is None or got is None else n + got
    return out


def merge_stats(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Pooled stats of two disjoint sets of frames (exact for mean/std via counts). Quantiles
    both sides have are averaged weighted by count, as LeRobot aggregates them (approximate);
    one that only one side has is dropped, as it would describe only part of the frames."""
    out = dict(old)
    for key, b in new.items():
        a = old.get(key)
        if a is None or not {"min", "max", "mean", "std", "count"} <= set(a):
            out[key] = b
            continue
        na, nb = float(a["count"][0]), float(b["count"][0])
        ma, mb = np.array(a["mean"]), np.array(b["mean"])
        mean = (na * ma + nb * mb) / (na + nb)
        second = (na * (np.array(a["std"]) ** 2 + ma**2) + nb * (np.array(b["std"]) ** 2 + mb**2))
        std = np.sqrt(np.maximum(second / (na + nb) - mean**2, 0.0))
        out[key] = {"min": np.minimum(a["min"], b["min"]).tolist(),
                    "max": np.maximum(a["max"], b["max"]).tolist(),
                    "mean": mean.tolist(), "std": std.tolist(), "count": [int(na + nb)]}
        for q in QUANTILES:
            if q in a and q in b:
                out[key][q] = ((na * np.array(a[q]) + nb * np.array(b[q])) / (na + nb)).tolist()
    return out
