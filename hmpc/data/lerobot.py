"""Write and read datasets in the LeRobot v3.0 on-disk layout (reads v2.1 too).

Layout written by :func:`write_episodes` (one data/video file index per call)::

    meta/info.json  meta/stats.json  meta/tasks.parquet
    meta/episodes/chunk-CCC/file-FFF.parquet   one file per call, same index as its data
    data/chunk-CCC/file-FFF.parquet            all frames of one call
    videos/observation.images.<cam>/chunk-CCC/file-FFF.mp4

Readers trust only ``meta/info.json`` (written last) and the episode rows it counts, so an
interrupted write never shows a partial episode.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import uuid
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
    CODEBASE_VERSION,
    EpisodeRef,
    build_info,
    data_table,
    episode_rows,
    episodes_stats,
    list_column,
    load_episode_refs,
    merge_stats,
    next_file_index,
    read_info,
    validate_batch,
    video_keys,
)
from hmpc.data.video import DatasetError

__all__ = ["CODEBASE_VERSION", "DatasetError", "Episode", "LeRobotDataset", "write_episodes"]


@dataclass
class Episode:
    """One episode of T frames; frame t holds the observation at t and the action taken after it."""

    pixels: np.ndarray  # uint8 (T, H, W, 3)
    state: np.ndarray  # float32 (T, d)
    action: np.ndarray | None  # float32 (T, A), or None for a video-only episode
    task: str = ""

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def write_episodes(
    root: str | Path,
    episodes: Sequence[Episode],
    fps: int,
    camera: str = "top",
    robot_type: str = "",
    codec: str = "libx264",
    crf: int = 10,
    chunks_size: int = 1000,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Create the dataset at ``root`` or append ``episodes`` to it; returns ``root``.

    All episodes of one call go into one parquet file and one mp4 (back to back), under the
    next free chunk/file index. Everything is written to ``root/.tmp-<uuid>`` first and then
    moved into place with ``meta/info.json`` last, so a crash leaves the dataset as it was.
    Only one writer may write to ``root`` at a time: ``.tmp-*`` folders left by a killed writer
    are removed when the next write starts.
    ``pix_fmt="yuv420p"`` (LeRobot's default, plays everywhere) halves colour resolution;
    "yuv444p" keeps it (mean abs error ~1 instead of ~3 on colourful 32x32 frames).
    """
    root = Path(root)
    if not episodes:
        raise DatasetError(f"write_episodes({root}): no episodes given; pass at least one Episode")
    video_key = f"observation.images.{camera}"
    old_info = read_info(root) if (root / "meta" / "info.json").is_file() else None
    old_refs = load_episode_refs(root, old_info, video_key) if old_info else []
    dims = validate_batch(episodes, old_info, video_key, fps, root)
    chunk, file = next_file_index(root, old_info, old_refs, chunks_size)
    tasks = _read_tasks(root) if old_info else []
    for ep in episodes:
        if ep.task not in tasks:
            tasks.append(ep.task)

    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a hard-killed writer (one writer at a time)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    try:
        first_ep = len(old_refs)
        first_index = sum(r.length for r in old_refs)
        rel_data = f"data/chunk-{chunk:03d}/file-{file:03d}.parquet"
        rel_video = f"videos/{video_key}/chunk-{chunk:03d}/file-{file:03d}.mp4"
        rel_eps = f"meta/episodes/chunk-{chunk:03d}/file-{file:03d}.parquet"
        table = data_table(episodes, first_ep, first_index, tasks, fps, dims.action_dim)
        _write_parquet(tmp / rel_data, table)
        video.encode_video(tmp / rel_video, (f for ep in episodes for f in ep.pixels), fps,
                           codec=codec, crf=crf, pix_fmt=pix_fmt)
        rows = episode_rows(episodes, first_ep, first_index, fps, chunk, file, video_key)
        _write_parquet(tmp / rel_eps, pa.table(rows))
        _write_parquet(tmp / "meta/tasks.parquet", pa.table(
            {"task_index": pa.array(range(len(tasks)), pa.int64()), "task": tasks}))
        old_stats = _stats_caught_up(root, first_index, video_key) if old_info else {}
        stats = merge_stats(old_stats, episodes_stats(episodes, video_key))
        _write_json(tmp / "meta/stats.json", stats)
        info = build_info(old_info, dims, video_key, fps, robot_type, codec, pix_fmt, chunks_size,
                          total_episodes=first_ep + len(episodes),
                          total_frames=first_index + table.num_rows, total_tasks=len(tasks))
        _write_json(tmp / "meta/info.json", info)
        # Commit: payload first, then info.json (what readers trust), then stats.json: a kill
        # between the two leaves stats one batch behind, which the next write catches up on.
        for rel in (rel_data, rel_video, rel_eps, "meta/tasks.parquet", "meta/info.json",
                    "meta/stats.json"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, root / rel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _stats_caught_up(root: Path, total_frames: int, video_key: str) -> dict[str, Any]:
    """stats.json covering exactly the ``total_frames`` committed frames.

    A writer killed between its info.json and stats.json renames leaves stats behind by the
    episodes of that commit: fold them in from the committed files. Stats that cover more frames
    than info.json (written by an older, stats-first commit order) are rebuilt from scratch.
    """
    stats = read_json(root / "meta/stats.json") if (root / "meta/stats.json").is_file() else {}
    count = int(((stats.get("observation.state") or {}).get("count") or [0])[0])
    if count == total_frames:
        return stats
    ds = LeRobotDataset(root)
    starts = np.concatenate([[0], np.cumsum(ds.episode_lengths)])
    behind = count < total_frames and count in starts
    first = int(np.searchsorted(starts, count)) if behind else 0
    missing = [ds.load_episode(i) for i in range(first, ds.num_episodes)]
    return merge_stats(stats if behind else {}, episodes_stats(missing, video_key))


def _write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict ({} when absent); DatasetError naming the file when invalid."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); restore it from a backup") from err


def _read_tasks(root: Path) -> list[str]:
    """Task strings ordered by task_index from meta/tasks.parquet (v3.0) or tasks.jsonl (v2.1)."""
    path = root / "meta/tasks.parquet"
    if path.is_file():
        table = pq.read_table(path)
        # LeRobot writes the task string as the pandas index, which pyarrow reads as a column.
        name = "task" if "task" in table.column_names else "__index_level_0__"
        if name not in table.column_names or "task_index" not in table.column_names:
            raise DatasetError(f"{path} lacks the columns 'task_index' and 'task'; "
                               f"found {table.column_names}")
        order = np.argsort(table["task_index"].to_numpy())
        return [table[name].to_pylist()[i] for i in order]
    path = root / "meta/tasks.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r["task"] for r in sorted(rows, key=lambda r: r["task_index"])]
    return []


class LeRobotDataset:
    """Read-only view of a LeRobot v3.0 (or v2.1) dataset with one camera.

    ``load_episode(i)`` decodes episode ``i`` into an :class:`Episode`; pixels are
    uint8 (T, H, W, 3), state float32 (T, d), action float32 (T, A) or None.
    """

    def __init__(self, root: str | Path, camera: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset folder {self.root} does not exist; create one with "
                f"`hmpc-collect output_dir={self.root}` or point data= at an existing LeRobot dataset")
        self._info = read_info(self.root)
        self.camera_key = _pick_camera(self._info, camera, self.root)
        self._refs: list[EpisodeRef] = load_episode_refs(self.root, self._info, self.camera_key)
        self._table_cache: tuple[Path, pa.Table] | None = None

    # ---- metadata -------------------------------------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        """A copy of meta/info.json."""
        return copy.deepcopy(self._info)

    @property
    def stats(self) -> dict[str, Any]:
        """meta/stats.json (feature -> {min, max, mean, std, count}), or {} when absent."""
        return read_json(self.root / "meta/stats.json")

    @property
    def fps(self) -> int:
        return int(self._info["fps"])

    @property
    def num_episodes(self) -> int:
        return len(self._refs)

    @property
    def num_frames(self) -> int:
        return int(sum(r.length for r in self._refs))

    @property
    def episode_lengths(self) -> np.ndarray:
        """int64 (num_episodes,)."""
        return np.array([r.length for r in self._refs], dtype=np.int64)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the chosen camera."""
        feat = self._info["features"][self.camera_key]
        extra = feat.get("info") or {}
        if "video.height" in extra and "video.width" in extra:
            return int(extra["video.height"]), int(extra["video.width"]), 3
        names = list(feat.get("names") or ["height", "width", "channels"])
        shape = dict(zip(names, feat["shape"], strict=False))
        return int(shape["height"]), int(shape["width"]), 3

    @property
    def state_dim(self) -> int:
        return int(self._info["features"]["observation.state"]["shape"][0])

    @property
    def action_dim(self) -> int | None:
        """A, or None when the dataset has no action feature (video only)."""
        feat = self._info["features"].get("action")
        return int(feat["shape"][0]) if feat else None

    def __len__(self) -> int:
        return self.num_episodes

    # ---- episodes -------------------------------------------------------------------------
    def load_episode(self, i: int) -> Episode:
        """Decode episode ``i`` (0 <= i < num_episodes) with its state, actions and task."""
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range: {self.root} has {self.num_episodes} episodes")
        ref = self._refs[i]
        rows = self._episode_rows(ref)
        state, valid = list_column(rows, "observation.state", ref.data_path)
        if not valid.all():
            raise DatasetError(f"{ref.data_path}: episode {i} has null observation.state at frame "
                               f"{int(np.argmin(valid))}; re-record the episode")
        action = None
        if "action" in rows.column_names:
            values, valid = list_column(rows, "action", ref.data_path)
            if valid.all():
                action = values
            elif valid.any():
                raise DatasetError(f"{ref.data_path}: episode {i} has actions on some frames only "
                                   f"(first null at frame {int(np.argmin(valid))}); store all or none")
        for name, arr in (("observation.state", state), ("action", action)):
            if arr is not None and not np.isfinite(arr).all():
                frame = int(np.argmin(np.isfinite(arr).all(axis=1)))
                raise DatasetError(f"{ref.data_path}: non-finite {name} (NaN/inf) in episode {i} at "
                                   f"frame {frame}; fix or drop this episode")
        try:
            pixels = video.decode_frames(ref.video_path, self.fps, ref.from_frame, ref.length)
        except DatasetError as err:
            raise DatasetError(f"episode {i}: {err}") from err
        return Episode(pixels=pixels, state=state, action=action, task=ref.task)

    def _episode_rows(self, ref: EpisodeRef) -> pa.Table:
        """The parquet rows of one episode, ordered by frame_index and checked for gaps."""
        if self._table_cache is None or self._table_cache[0] != ref.data_path:
            if not ref.data_path.is_file():
                raise FileNotFoundError(f"data file {ref.data_path} of episode {ref.index} is "
                                        "missing; re-copy the data/ folder")
            self._table_cache = (ref.data_path, pq.read_table(ref.data_path))
        table = self._table_cache[1]
        for col in ("episode_index", "frame_index", "observation.state"):
            if col not in table.column_names:
                raise DatasetError(f"{ref.data_path} lacks required column {col!r} "
                                   f"(has {table.column_names}); the file is not LeRobot data")
        rows = table.filter(pc.equal(table["episode_index"], ref.index))
        rows = rows.sort_by("frame_index")
        frames = rows["frame_index"].to_numpy()
        if len(frames) != ref.length or not np.array_equal(frames, np.arange(ref.length)):
            raise DatasetError(f"{ref.data_path}: episode {ref.index} has {len(frames)} rows, "
                               f"metadata says {ref.length} frames 0..{ref.length - 1}; "
                               "the data file and meta/episodes disagree")
        return rows


def _pick_camera(info: dict[str, Any], camera: str | None, root: Path) -> str:
    """Resolve ``camera`` ("top" or "observation.images.top") to a video feature key."""
    keys = video_keys(info)
    if not keys:
        raise DatasetError(f"{root}/meta/info.json has no video feature; hmpc reads video "
                           "datasets only (image-in-parquet datasets are not supported)")
    if camera is None:
        return keys[0]
    for key in (camera, f"observation.images.{camera}"):
        if key in keys:
            return key
    raise DatasetError(f"camera {camera!r} not in {root}; available: {keys}")
