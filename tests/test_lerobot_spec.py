"""A dataset written by hmpc-collect's path, read back by an independent LeRobot v3.0 reader.

The reader below follows only the published layout (LeRobot's ``DEFAULT_DATA_PATH`` /
``DEFAULT_VIDEO_PATH`` templates, the ``meta/episodes`` columns its ``load_episodes`` selects, the
``pd.read_parquet`` view of ``meta/tasks.parquet``, and the timestamp-based frame lookup of its
video decoder with ``tolerance_s = 1e-4``) using pyarrow, pandas and PyAV directly: nothing from
``hmpc.data``. Its frames are checked against the frames the env rendered while collecting.
Only the last tests use ``hmpc.data``: to compare its reader with this one bit for bit, and to
write datasets for the writer's own layout checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from hmpc import rollout
from hmpc.rollout import EnvSpec, PolicySpec, collect

CAM = "observation.images.top"
FPS, STEPS, EPISODES = 10, 12, 5
TOL_S = 1e-4  # LeRobot's default tolerance_s between a query timestamp and a decoded frame
# Published templates (lerobot.datasets.utils DEFAULT_DATA_PATH / DEFAULT_VIDEO_PATH).
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODE_COLUMNS = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                   "dataset_from_index", "dataset_to_index", "meta/episodes/chunk_index",
                   "meta/episodes/file_index", f"videos/{CAM}/chunk_index",
                   f"videos/{CAM}/file_index", f"videos/{CAM}/from_timestamp",
                   f"videos/{CAM}/to_timestamp"]
ARROW_SCALARS = {"float32": pa.float32(), "int64": pa.int64()}


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, Any]]:
    """5 episodes x 12 frames (3 data/video files of 2, 2, 1 episodes) and the env's episodes."""
    recorded: dict[int, Any] = {}
    real = rollout._collect_one

    def recording(steps: int, state: Any, item: tuple[int, int]) -> tuple[int, Any]:
        index, ep = real(steps, state, item)
        recorded[index] = ep
        return index, ep

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rollout, "_collect_one", recording)
        root = collect(EnvSpec("point_maze", {"image_size": 32}), PolicySpec(),
                       tmp_path_factory.mktemp("spec") / "ds", EPISODES, STEPS, seed=5,
                       workers=0, fps=FPS, flush_every=2, progress=False)
    assert sorted(recorded) == list(range(EPISODES))
    return root, recorded


# ---- the independent reader ---------------------------------------------------------------
def read_info(root: Path) -> dict[str, Any]:
    return json.loads((root / "meta/info.json").read_text())


def read_episode_rows(root: Path) -> list[dict[str, Any]]:
    """meta/episodes/chunk-*/file-*.parquet, without stats/ columns, by episode_index; each row's
    meta/episodes/chunk_index and file_index must name the file it is in."""
    rows = []
    for path in sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet")):
        table = pq.read_table(path)
        table = table.select([c for c in table.column_names if not c.startswith("stats/")])
        for row in table.to_pylist():
            chunk, file = row["meta/episodes/chunk_index"], row["meta/episodes/file_index"]
            assert path.relative_to(root).as_posix() == \
                f"meta/episodes/chunk-{chunk:03d}/file-{file:03d}.parquet"
            rows.append(row)
    return sorted(rows, key=lambda r: r["episode_index"])


def vid(row: dict[str, Any], field: str) -> Any:
    """A ``videos/<camera>/<field>`` column of a meta/episodes row."""
    return row[f"videos/{CAM}/{field}"]


def read_all_data(root: Path) -> pa.Table:
    """All data files concatenated in path order: LeRobot's dataset_from/to_index are positions
    in this table."""
    files = sorted((root / "data").glob("*/*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def decode_at(path: Path, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames of ``path`` at ``timestamps`` (seconds in the file): seek to the keyframe before
    the first, decode up to the last, match each query to the closest frame (pts * time_base,
    not shifted by the stream's start time). Returns (frames (T, H, W, 3), their times)."""
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(int(timestamps[0] / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(t)
            if t >= timestamps[-1] - TOL_S:
                break
    dist = np.abs(timestamps[:, None] - np.asarray(times)[None, :])
    closest = dist.argmin(axis=1)
    return np.stack(frames)[closest], np.asarray(times)[closest]


def read_episode(root: Path, info: dict[str, Any], row: dict[str, Any],
                 data: pa.Table) -> dict[str, np.ndarray]:
    """One episode: its data rows (checked against its data file) and its decoded frames."""
    ep, start, stop = row["episode_index"], row["dataset_from_index"], row["dataset_to_index"]
    rows = data.slice(start, stop - start)
    own = pq.read_table(root / info["data_path"].format(
        chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]))
    mine = own.filter(pc.equal(own["episode_index"], ep))
    assert mine.equals(rows), f"episode {ep}: rows {start}..{stop} are not its data file's rows"
    video = root / info["video_path"].format(video_key=CAM, chunk_index=vid(row, "chunk_index"),
                                             file_index=vid(row, "file_index"))
    ts = rows["timestamp"].to_numpy().astype(np.float64)
    pixels, times = decode_at(video, vid(row, "from_timestamp") + ts)
    return {"frame_index": rows["frame_index"].to_numpy(), "timestamp": ts,
            "episode_index": rows["episode_index"].to_numpy(), "index": rows["index"].to_numpy(),
            "task_index": rows["task_index"].to_numpy(), "pixels": pixels, "video_times": times,
            "state": np.stack(rows["observation.state"].to_numpy(zero_copy_only=False)),
            "action": np.stack(rows["action"].to_numpy(zero_copy_only=False))}


# ---- tests ----------------------------------------------------------------------------------
def test_info_json_follows_the_published_layout(collected: tuple[Path, dict]) -> None:
    root, _ = collected
    info = read_info(root)
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS
    assert info["data_path"] == DATA_PATH and info["video_path"] == VIDEO_PATH
    assert info["total_episodes"] == EPISODES and info["total_frames"] == EPISODES * STEPS
    assert info["splits"] == {"train": f"0:{EPISODES}"} and info["total_tasks"] == 1
    assert {"chunks_size", "data_files_size_in_mb", "video_files_size_in_mb",
            "robot_type"} <= set(info)
    feats = info["features"]
    cam = feats[CAM]
    assert cam["dtype"] == "video" and cam["shape"] == [32, 32, 3]
    assert cam["names"] == ["height", "width", "channels"]
    assert {"video.height": 32, "video.width": 32, "video.codec": "h264",
            "video.pix_fmt": "yuv420p", "video.fps": FPS, "video.channels": 3}.items() \
        <= cam["info"].items()
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert feats[key]["shape"] == [1]
    # Every data file holds every non-video feature with the arrow type LeRobot loads it as
    # (datasets.Value for shape [1], a fixed-length datasets.Sequence for shape [k]).
    for path in sorted((root / "data").glob("*/*.parquet")):
        schema = pq.read_schema(path)
        for key, feat in feats.items():
            if feat["dtype"] == "video":
                continue
            typ = schema.field(key).type
            if feat["shape"] == [1]:
                assert typ == ARROW_SCALARS[feat["dtype"]], (path, key, typ)
            else:
                assert pa.types.is_fixed_size_list(typ) and typ.list_size == feat["shape"][0]
                assert typ.value_type == ARROW_SCALARS[feat["dtype"]], (path, key, typ)


def test_episode_metadata_tasks_and_stats(collected: tuple[Path, dict]) -> None:
    root, recorded = collected
    info = read_info(root)
    rows = read_episode_rows(root)
    assert [r["episode_index"] for r in rows] == list(range(EPISODES))
    for r in rows:
        assert set(EPISODE_COLUMNS) <= set(r), set(EPISODE_COLUMNS) - set(r)
    # file layout: episodes 0-1, 2-3 and 4 share one data file and one video each
    assert [(r["data/chunk_index"], r["data/file_index"]) for r in rows] == \
        [(0, 0), (0, 0), (0, 1), (0, 1), (0, 2)]
    stops = np.cumsum([r["length"] for r in rows])
    assert [r["dataset_to_index"] for r in rows] == stops.tolist()
    assert [r["dataset_from_index"] for r in rows] == [0, *stops[:-1].tolist()]
    by_video: dict[tuple, list] = {}
    for r in rows:
        assert r["length"] == STEPS
        span = vid(r, "to_timestamp") - vid(r, "from_timestamp")
        assert span == pytest.approx(r["length"] / FPS, abs=TOL_S)
        by_video.setdefault((vid(r, "chunk_index"), vid(r, "file_index")), []).append(r)
    for group in by_video.values():  # episodes of one video back to back from t=0
        assert vid(group[0], "from_timestamp") == 0.0
        for a, b in zip(group, group[1:], strict=False):
            assert vid(b, "from_timestamp") == pytest.approx(vid(a, "to_timestamp"))
    # meta/tasks.parquet as LeRobot reads it: pd.read_parquet, task string = row name (index)
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert tasks.iloc[0].name == rows[0]["tasks"][0] == "explore"
    assert int(tasks.loc["explore", "task_index"]) == 0
    stats = json.loads((root / "meta/stats.json").read_text())
    for key in ("observation.state", "action"):
        values = np.concatenate([getattr(recorded[i], key.split(".")[-1]) for i in range(EPISODES)])
        np.testing.assert_allclose(stats[key]["mean"], values.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats[key]["max"], values.max(0), rtol=1e-6)
        assert stats[key]["count"] == [EPISODES * STEPS]
    pixels = np.concatenate([recorded[i].pixels for i in range(EPISODES)]) / 255.0
    assert np.array(stats[CAM]["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(np.ravel(stats[CAM]["mean"]), pixels.mean((0, 1, 2)), atol=1e-6)
    assert info["total_frames"] == int(stops[-1])
    # per-episode stats columns stats/<feature>/<stat> of meta/episodes, as LeRobot v3.0 writes
    files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    for r in pa.concat_tables([pq.read_table(f) for f in files]).to_pylist():
        env = recorded[r["episode_index"]]
        for key, values in (("observation.state", env.state), ("action", env.action)):
            for stat in ("min", "max", "mean", "std"):
                np.testing.assert_allclose(r[f"stats/{key}/{stat}"], getattr(values, stat)(0),
                                           rtol=1e-5, atol=1e-6)
            assert r[f"stats/{key}/count"] == [STEPS]
        assert np.array(r[f"stats/{CAM}/mean"]).shape == (3, 1, 1)
        np.testing.assert_allclose(np.ravel(r[f"stats/{CAM}/mean"]),
                                   env.pixels.mean((0, 1, 2)) / 255.0, atol=1e-6)


def test_frames_decode_exactly_at_their_timestamps(collected: tuple[Path, dict]) -> None:
    root, recorded = collected
    info = read_info(root)
    data = read_all_data(root)
    np.testing.assert_array_equal(data["index"].to_numpy(), np.arange(EPISODES * STEPS))
    compared = 0
    for row in read_episode_rows(root):
        ep = row["episode_index"]
        got, env = read_episode(root, info, row, data), recorded[ep]
        np.testing.assert_array_equal(got["frame_index"], np.arange(STEPS))
        np.testing.assert_array_equal(got["episode_index"], ep)
        np.testing.assert_allclose(got["timestamp"], np.arange(STEPS) / FPS, atol=TOL_S)
        np.testing.assert_allclose(got["video_times"],
                                   vid(row, "from_timestamp") + np.arange(STEPS) / FPS,
                                   atol=TOL_S)  # every query has its own frame, no gap
        assert len(np.unique(got["video_times"])) == STEPS
        np.testing.assert_array_equal(got["state"], env.state)
        np.testing.assert_array_equal(got["action"], env.action)
        assert got["pixels"].shape == env.pixels.shape == (STEPS, 32, 32, 3)
        err = np.abs(got["pixels"].astype(np.int16) - env.pixels).mean(axis=(1, 2, 3))  # (T,)
        assert err.max() < 2.0, f"episode {ep}: per-frame mean abs error {err.round(2)}"
        compared += _assert_nearest_own_frame(got["pixels"], env.pixels, ep)
    assert compared >= 20, f"only {compared} frame pairs differed enough to check frame-exactness"


def _assert_nearest_own_frame(decoded: np.ndarray, env: np.ndarray, ep: int) -> int:
    """Frame-exactness despite the codec: on the pixels where env frames t and t+-1 differ
    (the moving agent), decoded frame t is far nearer env frame t. Returns the pairs checked."""
    dec, ref = decoded.astype(np.int16), env.astype(np.int16)
    checked = 0
    for t in range(len(ref)):
        for u in (t - 1, t + 1):
            if not 0 <= u < len(ref):
                continue
            moved = (np.abs(ref[t] - ref[u]) > 30).any(axis=-1)  # (H, W)
            if moved.sum() < 4:
                continue
            own = np.abs(dec[t] - ref[t])[moved].mean()
            other = np.abs(dec[t] - ref[u])[moved].mean()
            assert own < other / 2, f"episode {ep}: decoded frame {t} looks like env frame {u}"
            checked += 1
    return checked


def test_each_video_holds_exactly_its_episodes_frames(collected: tuple[Path, dict]) -> None:
    root, _ = collected
    info = read_info(root)
    rows = read_episode_rows(root)
    for path in sorted((root / "videos" / CAM).glob("chunk-*/file-*.mp4")):
        chunk, file = int(path.parent.name[6:]), int(path.stem[5:])
        mine = [r for r in rows if (vid(r, "chunk_index"), vid(r, "file_index")) == (chunk, file)]
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name in ("h264", "libx264")
            assert (stream.width, stream.height) == (32, 32)
            assert stream.codec_context.pix_fmt == info["features"][CAM]["info"]["video.pix_fmt"]
            assert stream.average_rate == FPS
            times = [float(f.pts * stream.time_base) for f in container.decode(stream)]
        n = sum(r["length"] for r in mine)
        np.testing.assert_allclose(times, np.arange(n) / FPS, atol=TOL_S)


def test_hmpc_reader_decodes_the_same_frames(collected: tuple[Path, dict]) -> None:
    """The hmpc reader and validate agree with the independent reader bit for bit."""
    from hmpc.data import LeRobotDataset, validate_dataset

    root, _ = collected
    assert validate_dataset(root) == []
    info, ds = read_info(root), LeRobotDataset(root)
    data = read_all_data(root)
    for row in read_episode_rows(root):
        ours, theirs = ds.load_episode(row["episode_index"]), read_episode(root, info, row, data)
        np.testing.assert_array_equal(ours.pixels, theirs["pixels"])
        np.testing.assert_array_equal(ours.state, theirs["state"])
        np.testing.assert_array_equal(ours.action, theirs["action"])


def test_every_data_file_holds_every_feature_after_actions_arrive(tmp_path: Path) -> None:
    """A video-only dataset that later gets acted episodes: the earlier data files gain an
    all-null action column, so every file matches info.json's features (as LeRobot loads them)."""
    from helpers import square_episode

    from hmpc.data import validate_dataset, write_episodes

    root = tmp_path / "ds"
    write_episodes(root, [square_episode(0, t=6, with_action=False)], fps=FPS)
    write_episodes(root, [square_episode(1, t=6), square_episode(2, t=6, with_action=False)],
                   fps=FPS)
    feats = read_info(root)["features"]
    assert feats["action"]["shape"] == [2]
    for path in sorted((root / "data").glob("*/*.parquet")):
        assert set(pq.read_schema(path).names) == {k for k, f in feats.items()
                                                   if f["dtype"] != "video"}, path
    old = pq.read_table(root / "data/chunk-000/file-000.parquet")["action"]
    assert old.type == pa.list_(pa.float32(), 2) and old.null_count == len(old) == 6
    assert validate_dataset(root) == []


def test_kill_before_info_json_while_adding_actions(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the earlier files gained the null action column but before info.json: the
    dataset still loads and validates (an all-null column is no data), and a rerun completes."""
    import os

    from helpers import square_episode

    from hmpc.data import LeRobotDataset, validate_dataset, write_episodes

    root = tmp_path / "ds"
    write_episodes(root, [square_episode(0, t=6, with_action=False)], fps=FPS)
    real_replace = os.replace

    def killed_before_info(src: str | Path, dst: str | Path) -> None:
        if str(dst).endswith("meta/info.json"):
            raise KeyboardInterrupt("killed before info.json")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_info)
    with pytest.raises(KeyboardInterrupt):
        write_episodes(root, [square_episode(1, t=6)], fps=FPS)
    monkeypatch.setattr(os, "replace", real_replace)
    assert "action" in pq.read_schema(root / "data/chunk-000/file-000.parquet").names
    assert "action" not in read_info(root)["features"]
    assert [p for p in validate_dataset(root) if "interrupted write" not in p.message] == []
    assert LeRobotDataset(root).load_episode(0).action is None
    write_episodes(root, [square_episode(1, t=6)], fps=FPS)
    assert validate_dataset(root) == [] and LeRobotDataset(root).action_dim == 2
