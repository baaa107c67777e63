"""Read datasets in the LeRobot v3.0 on-disk layout (and v2.1); :mod:`hmpc.data.writer` writes them.

Layout written by ``write_episodes`` / ``publish_batch`` (one data/video file index per batch)::

    meta/info.json  meta/stats.json  meta/tasks.parquet
    meta/episodes/chunk-CCC/file-FFF.parquet   one file per batch, same index as its data
    data/chunk-CCC/file-FFF.parquet            all frames of one batch
    videos/observation.images.<cam>/chunk-CCC/file-FFF.mp4

Readers trust only ``meta/info.json`` (written last) and the episode rows it counts, so an
interrupted write never shows a partial episode.
"""

from __future__ import annotations

import copy
import json
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
    list_column,
    load_episode_refs,
    read_info,
    video_keys,
)
from hmpc.data.video import DatasetError

__all__ = ["CODEBASE_VERSION", "DatasetError", "Episode", "LeRobotDataset"]


@dataclass
class Episode:
    """One episode of T frames; frame t holds the observation at t and the action taken after it."""

    pixels: np.ndarray  # uint8 (T, H, W, 3)
    state: np.ndarray  # float32 (T, d)
    action: np.ndarray | None  # float32 (T, A), or None for a video-only episode
    task: str = ""

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


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
