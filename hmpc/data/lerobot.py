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
import pyarrow.parquet as pq

from hmpc.data import _checks, video
from hmpc.data._meta import (
    CODEBASE_VERSION,
    EpisodeRef,
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
    state: np.ndarray | None  # float32 (T, d), or None when no state was logged (imported video)
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
        self._video_ends: dict[Path, int] = {}  # video file -> end of its last episode's frames
        self._placed: dict[Path, set[int]] = {}  # data file -> the episodes it holds
        for r in self._refs:
            end = max(self._video_ends.get(r.video_path, 0), r.from_frame + r.length)
            self._video_ends[r.video_path] = end
            self._placed.setdefault(r.data_path, set()).add(r.index)

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
        """Decode episode ``i`` (0 <= i < num_episodes) with its state, actions and task.

        Raises DatasetError naming the file, the episode and the first bad frame on any defect
        (schema, frame/timestamp gaps, NaN/inf, truncated or miscounted video); see
        :mod:`hmpc.data._checks`.
        """
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range: {self.root} has {self.num_episodes} episodes")
        ref = self._refs[i]
        rows = self._episode_rows(ref)
        state, action = _checks.episode_arrays(rows, ref.data_path, i)
        # The last episode of a video file must end it: extra frames mean wrong metadata.
        last = ref.from_frame + ref.length == self._video_ends[ref.video_path]
        try:
            pixels = video.decode_frames(ref.video_path, self.fps, ref.from_frame, ref.length,
                                         expect_end=last)
        except video.FrameError as err:
            raise DatasetError(f"{_checks.where(ref.video_path, i, err.frame)}: {err}") from err
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{_checks.where(ref.video_path, i, 0)}: {err}") from err
        if pixels.shape[1:] != self.image_shape:
            raise DatasetError(f"{_checks.where(ref.video_path, i, 0)}: frames are "
                               f"{pixels.shape[1]}x{pixels.shape[2]}, meta/info.json says "
                               f"{self.camera_key} is {self.image_shape[0]}x{self.image_shape[1]}; "
                               "fix the feature's shape in info.json or re-encode the video")
        return Episode(pixels=pixels, state=state, action=action, task=ref.task)

    def data_files(self) -> list[Path]:
        """The parquet and video files the episodes (of the chosen camera) are read from."""
        return sorted({p for r in self._refs for p in (r.data_path, r.video_path)})

    def _episode_rows(self, ref: EpisodeRef) -> pa.Table:
        """The parquet rows of one episode, ordered by frame_index and checked."""
        if self._table_cache is None or self._table_cache[0] != ref.data_path:
            if not ref.data_path.is_file():
                raise FileNotFoundError(f"{_checks.where(ref.data_path, ref.index, 0)}: the data "
                                        "file is missing; re-copy the data/ folder")
            try:
                table = pq.read_table(ref.data_path)
            except (pa.ArrowException, OSError) as err:
                raise DatasetError(f"{_checks.where(ref.data_path, ref.index, 0)}: cannot read the "
                                   f"parquet file ({err}); it is truncated or corrupt: re-copy "
                                   "or re-export it") from err
            _checks.stray_rows(table, ref.data_path, self._placed[ref.data_path])
            self._table_cache = (ref.data_path, table)
        return _checks.episode_rows(self._table_cache[1], ref.data_path, self._info, ref)


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
