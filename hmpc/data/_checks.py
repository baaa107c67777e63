"""Checks the loader runs on the parquet rows of each episode it reads (vectorised, cheap).

:func:`hmpc.data.validate.validate_dataset` reports every problem of a dataset; these checks
stop the loader (and so training, when the frame cache is built) at the first one, with an
error naming the file, the episode and the first bad frame. Nothing is dropped or repaired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hmpc.data._meta import EpisodeRef, list_column
from hmpc.data.video import DatasetError

__all__ = ["TIMESTAMP_TOL_S", "episode_arrays", "episode_rows", "stray_rows", "where"]

TIMESTAMP_TOL_S = 1e-4  # LeRobot's default tolerance_s for timestamp/fps consistency
_REQUIRED = ("episode_index", "frame_index", "timestamp", "observation.state")


def where(path: Path | str, episode: int, frame: int) -> str:
    """The location prefix of every loader error: ``<file>: episode E, frame F``."""
    return f"{path}: episode {episode}, frame {frame}"


def episode_rows(table: pa.Table, path: Path, info: dict[str, Any], ref: EpisodeRef) -> pa.Table:
    """The rows of episode ``ref`` in ``table`` (read from ``path``), ordered by frame_index.

    Raises DatasetError on a missing column, rows that do not cover frames 0..length-1,
    timestamps off frame_index / fps, or list columns whose type or size disagrees with
    info.json.
    """
    ep = ref.index
    features = info["features"]
    required = [*_REQUIRED, *(["action"] if "action" in features else [])]
    for col in required:
        if col not in table.column_names:
            raise DatasetError(f"{where(path, ep, 0)}: column {col!r} is missing (the file has "
                               f"{table.column_names}); info.json lists it: re-export this file, "
                               "or drop the feature from meta/info.json if the data has none")
    for col in ("episode_index", "frame_index"):
        if not pa.types.is_integer(table.schema.field(col).type):
            raise DatasetError(f"{where(path, ep, 0)}: column {col!r} has type "
                               f"{table.schema.field(col).type}, LeRobot stores int64: re-export "
                               "this file")
    rows = table.filter(pc.equal(table["episode_index"], ep)).sort_by("frame_index")
    frames = rows["frame_index"].to_numpy(zero_copy_only=False)
    expect = np.arange(ref.length)
    if len(frames) != ref.length or not np.array_equal(frames, expect):
        n = min(len(frames), ref.length)
        diff = np.flatnonzero(frames[:n] != expect[:n])
        first = int(diff[0]) if diff.size else n
        span = f"{frames.min()}..{frames.max()}" if len(frames) else "(none)"
        raise DatasetError(f"{where(path, ep, first)}: {len(frames)} rows with frame_index {span}, "
                           f"meta/episodes says {ref.length} frames 0..{ref.length - 1}; the data "
                           "file and the metadata disagree: re-export or drop this episode")
    _check_timestamps(rows, path, ep, frames, float(info["fps"]))
    for name in ("observation.state", "action"):
        if name in rows.column_names:
            _check_list_column(rows[name].combine_chunks(), name, features.get(name), path, ep)
    return rows


def stray_rows(table: pa.Table, path: Path, placed: set[int]) -> None:
    """DatasetError if ``table`` holds rows of episodes that the metadata does not place in it
    (they would be silently skipped). Missing or mistyped columns are left to
    :func:`episode_rows`."""
    cols = ("episode_index", "frame_index")
    if not all(c in table.column_names and pa.types.is_integer(table.schema.field(c).type)
               for c in cols):
        return
    ids = np.unique(table["episode_index"].to_numpy(zero_copy_only=False))
    stray = sorted(set(ids.tolist()) - placed)
    if stray:
        frames = table.filter(pc.equal(table["episode_index"], stray[0]))["frame_index"]
        raise DatasetError(f"{where(path, stray[0], pc.min(frames).as_py())}: rows of episode(s) "
                           f"{stray[:10]} that meta/episodes does not place in this file; the "
                           "data and the metadata disagree: re-export the dataset")


def _check_timestamps(rows: pa.Table, path: Path, ep: int, frames: np.ndarray, fps: float) -> None:
    ts_col = rows["timestamp"]
    if not (pa.types.is_floating(ts_col.type) or pa.types.is_integer(ts_col.type)):
        raise DatasetError(f"{where(path, ep, 0)}: column 'timestamp' has type {ts_col.type}, "
                           "LeRobot stores float32 seconds: re-export this file")
    ts = ts_col.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN -> flagged
    bad = ~(np.abs(ts - frames / fps) <= TIMESTAMP_TOL_S)
    if bad.any():
        f = int(np.argmax(bad))
        raise DatasetError(f"{where(path, ep, f)}: timestamp {ts[f]:.4f}s, expected frame_index/fps "
                           f"= {f / fps:.4f}s (a timestamp gap or a duplicated frame); frames were "
                           "dropped or re-timed while recording: re-record or drop this episode")


def _check_list_column(col: pa.Array, name: str, feature: dict[str, Any] | None, path: Path,
                       ep: int) -> None:
    """Type and per-row size of a list column against its info.json feature."""
    if feature is None:  # e.g. an all-null action column left by an interrupted append
        if col.null_count < len(col):
            raise DatasetError(f"{where(path, ep, 0)}: column {name!r} holds values but info.json "
                               f"lists no {name!r} feature; add the feature to meta/info.json")
        return
    want = int(np.prod(feature.get("shape") or [1]))
    list_types = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if not any(is_list(col.type) for is_list in list_types) or not (
            pa.types.is_floating(col.type.value_type) or pa.types.is_integer(col.type.value_type)):
        raise DatasetError(f"{where(path, ep, 0)}: column {name!r} has type {col.type}, info.json "
                           f"says {want} numbers per frame: re-export this file")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    bad = valid & (np.nan_to_num(lengths.astype(np.float64), nan=-1) != want)
    if bad.any():
        f = int(np.argmax(bad))
        raise DatasetError(f"{where(path, ep, f)}: column {name!r} has {int(lengths[f])} values, "
                           f"info.json shape is {feature.get('shape')}: re-export this file or fix "
                           "the feature's shape in meta/info.json")


def episode_arrays(rows: pa.Table, path: Path,
                   ep: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(state (T, d) or None for imported video, action (T, A) or None for a video-only episode)
    of checked rows.

    Raises DatasetError on a state or actions on some frames only, or NaN/inf values.
    """
    state, valid = list_column(rows, "observation.state", path)
    if not valid.any():
        state = None  # no state logged (video imported with hmpc-dataset add-video)
    elif not valid.all():
        raise DatasetError(f"{where(path, ep, int(np.argmin(valid)))}: null observation.state on "
                           "some frames only (first null here); store it on all frames or none")
    action = None
    if "action" in rows.column_names:
        values, valid = list_column(rows, "action", path)
        if valid.all():
            action = values
        elif valid.any():
            raise DatasetError(f"{where(path, ep, int(np.argmin(valid)))}: null action on some "
                               "frames only (first null here); store actions on all frames or none")
    for name, arr in (("observation.state", state), ("action", action)):
        if arr is not None and not np.isfinite(arr).all():
            frame = int(np.argmin(np.isfinite(arr).all(axis=1)))
            raise DatasetError(f"{where(path, ep, frame)}: non-finite {name} (NaN/inf): "
                               f"{arr[frame].tolist()}; fix or drop this episode")
    return state, action
