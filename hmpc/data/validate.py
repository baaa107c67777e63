"""Full-dataset validation: every problem of a LeRobot dataset on disk, each with file, episode, frame.

The loader (:class:`hmpc.data.LeRobotDataset`) stops at the first problem of the episode it
reads; :func:`validate_dataset` scans everything and returns all problems, so a user can see
the extent of the damage before training. Nothing is dropped or repaired here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hmpc.data import video
from hmpc.data._meta import (
    EpisodeRef,
    list_column,
    load_episode_refs,
    read_info,
    video_keys,
)
from hmpc.data._stats import stats_frame_count
from hmpc.data.lerobot import read_json
from hmpc.data.video import DatasetError

__all__ = ["Problem", "validate_dataset"]

TIMESTAMP_TOL_S = 1e-4  # LeRobot's default tolerance_s for timestamp/fps consistency
_REQUIRED = ("episode_index", "frame_index", "timestamp", "observation.state")


@dataclass(frozen=True)
class Problem:
    """One defect: ``file`` is relative to the dataset root; episode/frame are None when the
    defect is not tied to one episode (or one frame)."""

    file: str
    episode: int | None
    frame: int | None
    message: str

    def __str__(self) -> str:
        where = [self.file]
        if self.episode is not None:
            where.append(f"episode {self.episode}")
        if self.frame is not None:
            where.append(f"frame {self.frame}")
        return f"{', '.join(where)}: {self.message}"


def validate_dataset(root: str | Path, decode_video: bool = True) -> list[Problem]:
    """All problems of the dataset at ``root`` (empty list: valid).

    Checks: info.json and episode metadata; per data file the schema (required columns, their
    types, list sizes vs info.json feature shapes), rows per episode vs meta/episodes lengths,
    rows of episodes placed elsewhere, frame_index and global index continuity, timestamps ==
    frame_index / fps, null or NaN/inf state and action (first bad frame per episode); per video
    file (all cameras) missing / zero-byte / truncated (mp4 boxes cut short) / undecodable
    files, decoded frames vs each episode's frame range (missing ones, and extra ones after the
    file's last episode), resolution; totals in info.json and stats.json; data/video files no
    committed episode references; meta/episodes files that differ in schema. Every problem tied
    to an episode names a frame (the first bad one; 0 when the whole episode is affected; its
    length for frames after its end). With
    ``decode_video=False`` videos are only checked for existence, size and truncation.
    The loader raises on the same defects (:mod:`hmpc.data._checks`, :func:`video.decode_frames`).
    """
    root = Path(root)
    try:
        info = read_info(root)
        cams = video_keys(info)
        refs_by_cam = {cam: load_episode_refs(root, info, cam) for cam in cams}
    except DatasetError as err:
        return [Problem("meta", None, None, str(err))]
    if not cams:
        return [Problem("meta/info.json", None, None, "no video feature (dtype 'video'); hmpc "
                        "reads video datasets only")]
    refs = refs_by_cam[cams[0]]
    problems = _check_totals(root, info, refs)
    starts = np.concatenate([[0], np.cumsum([r.length for r in refs])]).astype(int)
    for path, group in _group(refs, "data_path").items():
        problems += _check_data_file(root, info, path, group, starts)
    for cam in cams:
        for path, group in _group(refs_by_cam[cam], "video_path").items():
            problems += _check_video_file(root, info, cam, path, group, decode_video)
    problems += _check_orphans(root, [r for cam in cams for r in refs_by_cam[cam]])
    return problems + _check_episode_schemas(root)


def _check_episode_schemas(root: Path) -> list[Problem]:
    """meta/episodes files whose columns or types differ from the first file's: readers that load
    them as one table (LeRobot's) fail on them."""
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        return []
    first = pq.read_schema(files[0]).remove_metadata()
    out = []
    for f in files[1:]:
        this = pq.read_schema(f).remove_metadata()
        if this.equals(first):
            continue
        lacks = [n for n in first.names if n not in this.names]
        extra = [n for n in this.names if n not in first.names]
        retyped = [n for n in this.names if n in first.names and this.field(n).type != first.field(n).type]
        out.append(Problem(_rel(root, f), None, None, f"columns differ from {_rel(root, files[0])}'s "
                           f"(lacks {lacks}, adds {extra}, other types {retyped}, or another order): "
                           "readers that load meta/episodes as one table (LeRobot's) fail; files from "
                           "several writers differ so (hmpc before 2026-11-28 wrote no per-episode "
                           "stats; before 2026-12-06 it left out the columns of other writers)"))
    return out


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _group(refs: Sequence[EpisodeRef], attr: str) -> dict[Path, list[EpisodeRef]]:
    out: dict[Path, list[EpisodeRef]] = {}
    for r in refs:
        out.setdefault(getattr(r, attr), []).append(r)
    return out


def _check_totals(root: Path, info: dict[str, Any], refs: Sequence[EpisodeRef]) -> list[Problem]:
    """info.json total_frames and stats.json counts vs the episode lengths in meta/episodes."""
    out = []
    frames = int(sum(r.length for r in refs))
    if "total_frames" in info and int(info["total_frames"]) != frames:
        out.append(Problem("meta/info.json", None, None, f"total_frames={info['total_frames']} but "
                           f"meta/episodes lengths sum to {frames}; the metadata disagree"))
    try:
        stats = read_json(root / "meta/stats.json")
    except DatasetError as err:
        return [*out, Problem("meta/stats.json", None, None, str(err))]
    cams = video_keys(info)
    count = stats_frame_count(stats, cams[0] if cams else "observation.state")
    if count and count < frames:
        out.append(Problem("meta/stats.json", None, None, f"the stats count {count} frames "
                           f"but the dataset has {frames} frames: stats.json is behind (left by an "
                           "interrupted write); the next write to this dataset (rerun hmpc-collect) "
                           "catches it up"))
    elif count > frames:
        out.append(Problem("meta/stats.json", None, None, f"the stats count {count} frames "
                           f"but the dataset has {frames} frames; normalisation stats are off: "
                           "the next write to this dataset rebuilds them"))
    return out


def _check_data_file(root: Path, info: dict[str, Any], path: Path, eps: list[EpisodeRef],
                     starts: np.ndarray) -> list[Problem]:
    """Schema, row coverage and per-episode rows of one parquet data file."""
    rel = _rel(root, path)

    def each(msg: str) -> list[Problem]:
        return [Problem(rel, r.index, 0, msg) for r in eps]

    if not path.is_file():
        return each("data file is missing; re-copy the data/ folder or re-record the episode")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        return each(f"cannot read parquet ({err}); the file is truncated or corrupt")
    problems, bad_cols = _check_schema(rel, info, table, eps)
    if any(c not in table.column_names or c in bad_cols for c in ("episode_index", "frame_index")):
        return problems
    ids = {r.index for r in eps}
    stray = sorted(set(table["episode_index"].to_pylist()) - ids)
    if stray:
        first = pc.min(table.filter(pc.equal(table["episode_index"], stray[0]))["frame_index"])
        problems.append(Problem(rel, stray[0], first.as_py(), f"rows of episode(s) {stray[:10]} "
                                "that meta/episodes does not place in this file; re-export it"))
    for ref in eps:
        rows = table.filter(pc.equal(table["episode_index"], ref.index)).sort_by("frame_index")
        problems += _check_rows(rel, info, ref, rows, int(starts[ref.index]), bad_cols)
    return problems


def _check_schema(rel: str, info: dict[str, Any], table: pa.Table,
                  eps: list[EpisodeRef]) -> tuple[list[Problem], set[str]]:
    """Required columns, types and list sizes vs info.json; returns (problems, bad columns)."""
    problems: list[Problem] = []
    bad: set[str] = set()
    feats = {k: f for k, f in info["features"].items() if f.get("dtype") not in ("video", "image")}
    ep_col = table["episode_index"].to_numpy() if "episode_index" in table.column_names else None
    fr_col = table["frame_index"].to_numpy() if "frame_index" in table.column_names else None
    for name in dict.fromkeys([*_REQUIRED, *feats]):
        if name not in table.column_names:
            problems += [Problem(rel, r.index, 0, f"column {name!r} is missing (info.json lists "
                                 f"it; the file has {table.column_names})") for r in eps]
            continue
        shape = list((feats.get(name) or {}).get("shape") or [1])
        col = table[name].combine_chunks()
        dtype = (feats.get(name) or {}).get("dtype")
        if not pa.types.is_list(col.type) and not pa.types.is_fixed_size_list(col.type):
            if shape != [1] or (dtype in _NUMERIC and not _is_number(col.type)):
                bad.add(name)
                problems += [Problem(rel, r.index, 0, f"column {name!r} has type {col.type}, "
                                     f"info.json says {dtype} of shape {shape}") for r in eps]
            continue
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(col.is_valid().to_numpy(zero_copy_only=False)
                               & (np.nan_to_num(lengths, nan=-1) != int(np.prod(shape))))
        if wrong.size:
            bad.add(name)
            for e in np.unique(ep_col[wrong]) if ep_col is not None else [None]:
                first = wrong[ep_col[wrong] == e][0] if ep_col is not None else wrong[0]
                frame = int(fr_col[first]) if fr_col is not None else None
                problems.append(Problem(rel, None if e is None else int(e), frame,
                                        f"column {name!r} has {int(lengths[first])} values per "
                                        f"row, info.json shape is {shape}"))
    return problems, bad


_NUMERIC = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
            "uint32", "uint64")


def _is_number(typ: pa.DataType) -> bool:
    return pa.types.is_floating(typ) or pa.types.is_integer(typ)


def _first_bad(frames: np.ndarray, bad: np.ndarray) -> int:
    """frame_index of the first row where ``bad`` is True."""
    return int(frames[int(np.argmax(bad))])


def _check_rows(rel: str, info: dict[str, Any], ref: EpisodeRef, rows: pa.Table, first_index: int,
                bad_cols: set[str]) -> list[Problem]:
    """Row count, frame_index/index/timestamp continuity and finite state/action of one episode."""
    out: list[Problem] = []
    fps = float(info["fps"])
    frames = rows["frame_index"].to_numpy()
    expect = np.arange(ref.length)
    if len(frames) != ref.length or not np.array_equal(frames, expect):
        n = min(len(frames), ref.length)
        diff = np.flatnonzero(frames[:n] != expect[:n])
        first = int(diff[0]) if diff.size else n
        out.append(Problem(rel, ref.index, first, f"{len(frames)} rows with frame_index "
                           f"{_span(frames)}, meta/episodes says {ref.length} frames 0..{ref.length - 1}"))
        return out
    if "timestamp" in rows.column_names and "timestamp" not in bad_cols:
        ts = rows["timestamp"].to_numpy(zero_copy_only=False).astype(np.float64)
        gap = ~(np.abs(ts - frames / fps) <= TIMESTAMP_TOL_S)
        if gap.any():
            f = _first_bad(frames, gap)
            out.append(Problem(rel, ref.index, f, f"timestamp {ts[f]:.4f}s, expected frame_index/fps "
                               f"= {f / fps:.4f}s (a gap or duplicated frame)"))
    if "index" in rows.column_names:
        idx = rows["index"].to_numpy(zero_copy_only=False)
        off = idx != first_index + frames
        if off.any():
            f = _first_bad(frames, off)
            out.append(Problem(rel, ref.index, f, f"global index {idx[f]}, expected "
                               f"{first_index + f} (episodes must be contiguous, in order)"))
    for name in ("observation.state", "action"):
        if name in rows.column_names and name not in bad_cols:
            out += _check_values(rel, ref, rows, name, frames)
    return out


def _check_values(rel: str, ref: EpisodeRef, rows: pa.Table, name: str,
                  frames: np.ndarray) -> list[Problem]:
    """Nulls on some frames only and NaN/inf of one list column of one episode."""
    values, valid = list_column(rows, name, Path(rel))
    if not valid.any():
        return []  # no actions (video-only) or no state (imported video) at all is allowed
    if not valid.all():
        return [Problem(rel, ref.index, _first_bad(frames, ~valid), f"null {name} on some frames only")]
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        f = _first_bad(frames, ~finite)
        return [Problem(rel, ref.index, f, f"non-finite {name} (NaN/inf): {values[f].tolist()}")]
    return []


def _span(frames: np.ndarray) -> str:
    return f"{frames.min()}..{frames.max()}" if len(frames) else "(none)"


def _check_video_file(root: Path, info: dict[str, Any], cam: str, path: Path,
                      eps: list[EpisodeRef], decode: bool) -> list[Problem]:
    """Existence, size and (with ``decode``) each episode's frame range in one video file."""
    rel = _rel(root, path)
    try:
        if not decode:
            if not path.is_file() or path.stat().st_size == 0:
                raise DatasetError("missing" if not path.is_file() else "empty (0 bytes)")
            cut = video.mp4_truncation(path)
            if cut:
                raise DatasetError(f"{cut} (decode it to see which frames are lost)")
            return []
        probe = video.probe_frames(path, int(info["fps"]))
    except (FileNotFoundError, DatasetError) as err:
        return [Problem(rel, r.index, 0, f"{cam}: {err}; re-record the episode") for r in eps]
    out = []
    vinfo = info["features"][cam].get("info") or {}
    shape = [vinfo.get("video.height"), vinfo.get("video.width")]
    if None in shape:  # no video.* info: the shape, assumed (H, W, C) as LeRobot writes it
        shape = list((info["features"][cam].get("shape") or [])[:2])
    if probe.height and [probe.height, probe.width] != shape:
        out += [Problem(rel, r.index, 0, f"{cam}: frames are {probe.height}x{probe.width}, "
                        f"info.json says {shape[0]}x{shape[1]}") for r in eps]
    present = set(probe.indices.tolist())
    faults = [f"decoder stopped with {probe.error}" if probe.error else "", probe.truncated or ""]
    why = "".join(f"; {f}" for f in faults if f)
    for r in eps:
        missing = [f for f in range(r.length) if r.from_frame + f not in present]
        if missing:
            out.append(Problem(rel, r.index, missing[0], f"{cam}: decoded {r.length - len(missing)} "
                               f"of {r.length} frames (first missing: frame {missing[0]}){why}; the "
                               "file is truncated or the metadata is wrong"))
    last = max(eps, key=lambda r: r.from_frame + r.length)  # frames after it: wrong metadata
    end = last.from_frame + last.length
    n_extra = int((probe.indices >= end).sum())
    if n_extra:
        out.append(Problem(rel, last.index, last.length, f"{cam}: {n_extra} frame(s) after the "
                           f"end of the file's last episode (file frame {end} on); meta/episodes "
                           "does not account for them: re-export the dataset"))
    if why and not out:
        out.append(Problem(rel, last.index, last.length, f"{cam}: all frames decode, but"
                           f"{why[1:]}; the file is corrupt: re-copy or re-record it"))
    return out


def _check_orphans(root: Path, refs: Sequence[EpisodeRef]) -> list[Problem]:
    """data/video files that no committed episode references (left by an interrupted write)."""
    used = {r.data_path for r in refs} | {r.video_path for r in refs}
    files = [*root.glob("data/**/*.parquet"), *root.glob("videos/**/*.mp4")]
    return [Problem(_rel(root, f), None, None, "no committed episode references this file (left "
                    "by an interrupted write); rerun the same hmpc-collect command to resume, "
                    "which overwrites it, or delete it") for f in sorted(files) if f not in used]
