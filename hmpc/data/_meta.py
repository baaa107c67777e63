"""Metadata helpers for :mod:`hmpc.data.lerobot`: info.json, episode rows, validation (stats:
:mod:`hmpc.data._stats`)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hmpc.data.video import DatasetError

if TYPE_CHECKING:
    from hmpc.data.lerobot import Episode

CODEBASE_VERSION = "v3.0"
SUPPORTED_VERSIONS = ("v3.0", "v2.1", "v2.0")
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
_CODEC_NAMES = {"libx264": "h264", "libx265": "hevc", "libsvtav1": "av1", "libaom-av1": "av1"}
_INDEX_FEATURES = {
    "timestamp": "float32", "frame_index": "int64", "episode_index": "int64",
    "index": "int64", "task_index": "int64",
}


@dataclass(frozen=True)
class Dims:
    """Shapes shared by every episode of a dataset."""

    height: int
    width: int
    state_dim: int | None  # None: no episode of the batch has a state (imported video)
    action_dim: int | None  # None: no episode (old or new) has actions


META_FILE = "_meta_file"  # the (chunk, file) a v3.0 meta/episodes row was read from


@dataclass(frozen=True)
class EpisodeRef:
    """Where one episode lives: its rows in ``data_path``, frames from ``from_frame`` in ``video_path``."""

    index: int
    length: int
    task: str
    data_path: Path
    video_path: Path
    from_frame: int
    meta_file: tuple[int, int] | None = None  # (chunk, file) of its meta/episodes row (v3.0)


def read_info(root: Path) -> dict[str, Any]:
    """Load and sanity-check ``root/meta/info.json``."""
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DatasetError(f"{root} is not a LeRobot dataset: {path} is missing; "
                           "point data= at a folder written by hmpc-collect or LeRobot")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not valid JSON ({err})") from err
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise DatasetError(f"{path}: codebase_version {version!r} is not supported (supported: "
                           f"{list(SUPPORTED_VERSIONS)}); convert it with LeRobot's "
                           "convert_dataset_v21_to_v30 script")
    for key in ("fps", "features", "data_path", "total_episodes"):
        if key not in info:
            raise DatasetError(f"{path} lacks the key {key!r}; the file is incomplete")
    if "observation.state" not in info["features"]:
        raise DatasetError(f"{path}: no 'observation.state' feature; hmpc needs proprio state")
    return info


def video_keys(info: dict[str, Any]) -> list[str]:
    """The video feature keys of info.json (``observation.images.<cam>``), in file order."""
    return [k for k, f in info["features"].items() if f.get("dtype") == "video"]


def load_episode_refs(root: Path, info: dict[str, Any], video_key: str) -> list[EpisodeRef]:
    """Episode locations for episodes 0..total_episodes-1 (rows past that are uncommitted)."""
    total = int(info["total_episodes"])
    if info["codebase_version"] == CODEBASE_VERSION:
        rows = _read_v3_episode_rows(root)
    else:
        path = root / "meta" / "episodes.jsonl"
        if not path.is_file():
            raise DatasetError(f"{path} is missing; a {info['codebase_version']} dataset needs it")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = sorted((r for r in rows if int(r["episode_index"]) < total),
                  key=lambda r: int(r["episode_index"]))
    if [int(r["episode_index"]) for r in rows] != list(range(total)):
        raise DatasetError(f"{root}/meta: episode rows do not cover episodes 0..{total - 1} "
                           f"listed by info.json total_episodes; the metadata is incomplete")
    try:
        return [_episode_ref(root, info, video_key, r) for r in rows]
    except KeyError as err:
        raise DatasetError(f"{root}/meta: episode metadata lacks the column {err} for camera "
                           f"{video_key!r}; the metadata is incomplete or names another camera") from err


def _episode_ref(root: Path, info: dict[str, Any], video_key: str, r: dict[str, Any]) -> EpisodeRef:
    """One meta/episodes row (v3.0) or episodes.jsonl line (v2.x) -> EpisodeRef."""
    idx = int(r["episode_index"])
    if info["codebase_version"] == CODEBASE_VERSION:
        loc = {"chunk_index": r["data/chunk_index"], "file_index": r["data/file_index"]}
        data = info["data_path"].format(**loc)
        loc = {"chunk_index": r[f"videos/{video_key}/chunk_index"],
               "file_index": r[f"videos/{video_key}/file_index"]}
        vid = info["video_path"].format(video_key=video_key, **loc)
        start = int(round(float(r[f"videos/{video_key}/from_timestamp"]) * info["fps"]))
        meta = r.get(META_FILE)
    else:  # v2.x: one file per episode
        loc = {"episode_chunk": idx // int(info.get("chunks_size", 1000)), "episode_index": idx}
        data = info["data_path"].format(**loc)
        vid = info["video_path"].format(video_key=video_key, **loc)
        start, meta = 0, None
    tasks = r.get("tasks") or [""]
    return EpisodeRef(idx, int(r["length"]), str(tasks[0]), root / data, root / vid, start, meta)


def file_location(path: Path) -> tuple[int, int]:
    """(chunk, file) of a v3.0 ``.../chunk-CCC/file-FFF.<ext>`` path; DatasetError for another name."""
    chunk = re.fullmatch(r"chunk-(\d+)", path.parent.name)
    file = re.fullmatch(r"file-(\d+)", path.stem)
    if not (chunk and file):
        raise DatasetError(f"{path}: not a chunk-CCC/file-FFF file of a LeRobot v3.0 dataset; move it "
                           "out of the dataset folder")
    return int(chunk[1]), int(file[1])


def _read_v3_episode_rows(root: Path) -> list[dict[str, Any]]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"{root}/meta/episodes/ holds no parquet file; the dataset metadata "
                           "is incomplete")
    rows: list[dict[str, Any]] = []
    for f in files:
        table = pq.read_table(f)
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        for col in ("episode_index", "length", "data/chunk_index", "data/file_index"):
            if col not in keep:
                raise DatasetError(f"{f} lacks required column {col!r}; has {keep}")
        where = file_location(f)
        rows.extend({**row, META_FILE: where} for row in table.select(keep).to_pylist())
    return rows


def next_file_index(root: Path, info: dict[str, Any] | None, refs: Sequence[EpisodeRef],
                    chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) index after the last one used by committed episodes: by their data, their
    video or their meta/episodes rows (LeRobot numbers each kind of file on its own, so a meta
    index can run ahead of the others; reusing it would overwrite committed episodes' rows)."""
    if not refs:
        return 0, 0
    if info is not None and info["codebase_version"] != CODEBASE_VERSION:
        raise DatasetError(f"{root} is a {info['codebase_version']} dataset; appending needs v3.0: "
                           "convert it with LeRobot first or write to a new folder")
    used = set()
    for ref in refs:
        for path in (ref.data_path, ref.video_path):
            used.add(file_location(path))
        if ref.meta_file is not None:
            used.add(ref.meta_file)
    chunk, file = max(used)
    return (chunk + 1, 0) if file >= chunks_size - 1 else (chunk, file + 1)


def episode_dims(episodes: Sequence[Episode], first: int = 0) -> Dims:
    """Check dtypes, shapes and finiteness of episodes (``first``: the batch position of
    ``episodes[0]``, for messages); their shared Dims (state_dim / action_dim None when no episode
    has a state / actions)."""
    ep0 = episodes[0]
    h, w = ep0.pixels.shape[1:3] if ep0.pixels.ndim == 4 else (0, 0)
    with_state = [ep.state for ep in episodes if ep.state is not None]
    d = (with_state[0].shape[1] if with_state[0].ndim == 2 else 0) if with_state else None
    act_dims = {ep.action.shape[-1] for ep in episodes if ep.action is not None}
    for i, ep in enumerate(episodes, start=first):
        t = ep.pixels.shape[0]
        if ep.pixels.dtype != np.uint8 or ep.pixels.shape[1:] != (h, w, 3) or t == 0:
            raise DatasetError(f"episode {i} of this batch: pixels must be uint8 (T>0, {h}, {w}, 3) "
                               f"like episode {first}; got {ep.pixels.dtype} {ep.pixels.shape}")
        if ep.state is not None and ep.state.shape != (t, d):
            raise DatasetError(f"episode {i} of this batch: state must be (T={t}, {d}) or None; "
                               f"got {ep.state.shape}")
        if ep.state is None and ep.action is not None:
            raise DatasetError(f"episode {i} of this batch has actions but no state; an episode without "
                               "observation.state is imported video (no actions): log the state")
        if ep.action is not None and (ep.action.ndim != 2 or ep.action.shape[0] != t):
            raise DatasetError(f"episode {i} of this batch: action must be (T={t}, A) or None; "
                               f"got {ep.action.shape}")
        for name, arr in (("state", ep.state), ("action", ep.action)):
            if arr is not None and not np.isfinite(arr).all():
                frame = int(np.argmin(np.isfinite(arr).all(axis=1)))
                raise DatasetError(f"episode {i} of this batch: non-finite {name} at frame {frame}; "
                                   "fix the collector (NaN/inf cannot be trained on)")
    if len(act_dims) > 1:
        raise DatasetError(f"episodes of this batch have different action sizes {sorted(act_dims)}")
    return Dims(h, w, d, act_dims.pop() if act_dims else None)


def compatible_dims(dims: Dims, info: dict[str, Any] | None, video_key: str, fps: int,
                    root: Path) -> Dims:
    """``dims`` of new episodes checked against the dataset's ``info`` (None: a new dataset);
    the Dims the dataset has after adding them (action_dim kept from the dataset if new has none)."""
    if info is None:
        if dims.state_dim is None:
            raise DatasetError(f"cannot create {root} from episodes without observation.state: "
                               "a new dataset takes its state size from its first episodes; add "
                               "imported video to a dataset that has action-labelled episodes")
        return dims
    h, w, a = dims.height, dims.width, dims.action_dim
    feats = info["features"]
    old = None
    if video_key in feats:
        old_h, old_w = (int(x) for x in feats[video_key]["shape"][:2])
        old_a = int(feats["action"]["shape"][0]) if "action" in feats else None
        old = Dims(old_h, old_w, int(feats["observation.state"]["shape"][0]), old_a)
    d = dims.state_dim if dims.state_dim is not None or old is None else old.state_dim
    if old is None or int(info["fps"]) != fps or (old.height, old.width, old.state_dim) != (h, w, d) \
            or (a is not None and old.action_dim not in (None, a)):
        raise DatasetError(
            f"cannot append to {root}: it holds {video_key if old else 'other cameras'} "
            f"{old} at fps={info['fps']}, the new episodes are {dims} at fps={fps}; "
            "write them to a new output folder")
    return Dims(h, w, d, a if a is not None else old.action_dim)


def fixed_list(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """float32 (N, k) -> fixed_size_list<float32>[k], null where ``valid`` is False."""
    n, k = values.shape
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    mask = None if valid is None or valid.all() else pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(flat, k, mask=mask)


def data_table(episodes: Sequence[Episode], first_ep: int, first_index: int, tasks: list[str],
               fps: int, action_dim: int | None, state_dim: int) -> pa.Table:
    """The parquet table of one call: one row per frame, episodes back to back (null state rows
    for episodes without a state, null action rows for those without actions)."""
    lengths = np.array([len(ep) for ep in episodes])
    frame_index = np.concatenate([np.arange(t) for t in lengths])
    states = [ep.state if ep.state is not None else np.zeros((len(ep), state_dim)) for ep in episodes]
    has_state = np.repeat([ep.state is not None for ep in episodes], lengths)
    cols: dict[str, pa.Array] = {"observation.state": fixed_list(np.concatenate(states), has_state)}
    if action_dim is not None:
        acts = [ep.action if ep.action is not None else np.zeros((len(ep), action_dim))
                for ep in episodes]
        valid = np.repeat([ep.action is not None for ep in episodes], lengths)
        cols["action"] = fixed_list(np.concatenate(acts), valid)
    cols["timestamp"] = pa.array((frame_index / fps).astype(np.float32))
    cols["frame_index"] = pa.array(frame_index.astype(np.int64))
    cols["episode_index"] = pa.array(np.repeat(np.arange(len(episodes)) + first_ep, lengths))
    cols["index"] = pa.array(np.arange(lengths.sum(), dtype=np.int64) + first_index)
    cols["task_index"] = pa.array(np.repeat([tasks.index(ep.task) for ep in episodes], lengths)
                                  .astype(np.int64))
    return pa.table(cols)


def episode_rows(episodes: Sequence[Episode], first_ep: int, first_index: int, fps: int,
                 chunk: int, file: int, video_key: str) -> dict[str, list[Any]]:
    """meta/episodes columns for the episodes of one call (all in data/video file chunk/file)."""
    lengths = [len(ep) for ep in episodes]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
    n = len(episodes)
    vk = f"videos/{video_key}"
    return {
        "episode_index": [first_ep + i for i in range(n)],
        "tasks": [[ep.task] for ep in episodes],
        "length": lengths,
        "data/chunk_index": [chunk] * n, "data/file_index": [file] * n,
        "dataset_from_index": [first_index + s for s in starts],
        "dataset_to_index": [first_index + s + t for s, t in zip(starts, lengths, strict=True)],
        f"{vk}/chunk_index": [chunk] * n, f"{vk}/file_index": [file] * n,
        f"{vk}/from_timestamp": [s / fps for s in starts],
        f"{vk}/to_timestamp": [(s + t) / fps for s, t in zip(starts, lengths, strict=True)],
        "meta/episodes/chunk_index": [chunk] * n, "meta/episodes/file_index": [file] * n,
    }


def build_info(old: dict[str, Any] | None, dims: Dims, video_key: str, fps: int, robot_type: str,
               codec: str, pix_fmt: str, chunks_size: int, total_episodes: int, total_frames: int,
               total_tasks: int) -> dict[str, Any]:
    """meta/info.json content after this call (features of ``old`` kept, action added if new)."""
    features = dict(old["features"]) if old else {
        video_key: {
            "dtype": "video", "shape": [dims.height, dims.width, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.height": dims.height, "video.width": dims.width,
                     "video.codec": _CODEC_NAMES.get(codec, codec), "video.pix_fmt": pix_fmt,
                     "video.is_depth_map": False, "video.fps": fps, "video.channels": 3,
                     "has_audio": False}},
        "observation.state": {"dtype": "float32", "shape": [dims.state_dim], "names": None},
    }
    if dims.action_dim is not None and "action" not in features:
        features["action"] = {"dtype": "float32", "shape": [dims.action_dim], "names": None}
    for key, dtype in _INDEX_FEATURES.items():
        features.setdefault(key, {"dtype": dtype, "shape": [1], "names": None})
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": (old or {}).get("robot_type") or robot_type,
        "total_episodes": total_episodes, "total_frames": total_frames, "total_tasks": total_tasks,
        "chunks_size": chunks_size, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
        "fps": fps, "splits": {"train": f"0:{total_episodes}"},
        "data_path": DATA_PATH, "video_path": VIDEO_PATH, "features": features,
    }


def list_column(table: pa.Table, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """list<float> column -> (float32 (N, k) with zeros at nulls, bool valid (N,))."""
    arr = table[name].combine_chunks()
    n = len(arr)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    n_valid = int(valid.sum())
    if n_valid == 0:  # e.g. a video-only episode: its size is only known from a fixed-size type
        return np.zeros((n, getattr(arr.type, "list_size", 0)), np.float32), valid
    flat = arr.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
    k = flat.size // n_valid
    if flat.size != k * n_valid:
        raise DatasetError(f"{path}: column {name!r} has rows of different lengths")
    out = np.zeros((n, k), dtype=np.float32)
    out[valid] = flat.reshape(-1, k)
    return out, valid
