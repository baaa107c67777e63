"""A LeRobot v2.1 dataset with AV1 video, written the way LeRobot v2.1 writes it, loads and trains.

The layout follows LeRobot v2.1 (``LEGACY_DEFAULT_PARQUET_PATH`` / ``LEGACY_DEFAULT_VIDEO_PATH``,
``meta/episodes.jsonl``, ``meta/tasks.jsonl``, ``meta/episodes_stats.jsonl``, no stats.json), and
the video is encoded as LeRobot's ``encode_video_frames`` does: PyAV, ``libsvtav1``, g=2,
crf=30, preset 12, yuv420p, frames without pts (the encoder numbers them). PyAV decodes it with
libdav1d.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SQUARE_SIZE, square_episode
from test_train import CFG, train  # the tiny-model training helper

from hmpc.data import Episode, LeRobotDataset, build_frame_cache, validate_dataset

FPS, EPISODES, T = 10, 6, 16
CAM = "observation.images.top"
TASK = "push the square"
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


def lerobot_encode_av1(path: Path, frames: np.ndarray, fps: int) -> None:
    """LeRobot's encode_video_frames (PyAV backend) with its defaults for AV1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"g": "2", "crf": "30", "preset": "12"}
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libsvtav1", fps, options=options)
        stream.pix_fmt, stream.width, stream.height = "yuv420p", frames.shape[2], frames.shape[1]
        for image in frames:
            packet = stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24"))
            if packet:
                output.mux(packet)
        packet = stream.encode()
        if packet:
            output.mux(packet)


def _stats(x: np.ndarray) -> dict[str, list]:
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "count": [len(x)]}


def write_lerobot_v21(root: Path, episodes: list[Episode], fps: int) -> None:
    """One parquet + one AV1 mp4 per episode and the v2.1 meta/ files."""
    state_dim, action_dim = episodes[0].state.shape[1], episodes[0].action.shape[1]
    h, w = episodes[0].pixels.shape[1:3]
    features: dict[str, Any] = {
        CAM: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
              "info": {"video.fps": float(fps), "video.height": h, "video.width": w,
                       "video.channels": 3, "video.codec": "av1", "video.pix_fmt": "yuv420p",
                       "video.is_depth_map": False, "has_audio": False}},
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": [action_dim], "names": ["vx", "vy"]},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    index, ep_lines, stat_lines = 0, [], []
    for i, ep in enumerate(episodes):
        t = len(ep)
        loc = {"episode_chunk": 0, "episode_index": i}
        table = pa.table({  # column types as HF datasets stores LeRobot features
            "observation.state": pa.array(list(ep.state), pa.list_(pa.float32(), state_dim)),
            "action": pa.array(list(ep.action), pa.list_(pa.float32(), action_dim)),
            "next.done": pa.array(np.arange(t) == t - 1),
            "timestamp": pa.array((np.arange(t) / fps).astype(np.float32)),
            "frame_index": pa.array(np.arange(t, dtype=np.int64)),
            "episode_index": pa.array(np.full(t, i, np.int64)),
            "index": pa.array(np.arange(index, index + t, dtype=np.int64)),
            "task_index": pa.array(np.zeros(t, np.int64)),
        })
        (root / DATA_PATH.format(**loc)).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / DATA_PATH.format(**loc))
        lerobot_encode_av1(root / VIDEO_PATH.format(video_key=CAM, **loc), ep.pixels, fps)
        ep_lines.append({"episode_index": i, "tasks": [TASK], "length": t})
        img = ep.pixels.reshape(-1, 3) / 255.0
        stat_lines.append({"episode_index": i, "stats": {
            "observation.state": _stats(ep.state), "action": _stats(ep.action),
            CAM: {k: np.asarray(v)[:, None, None].tolist() if k != "count" else v
                  for k, v in _stats(img).items()}}})
        index += t
    info = {"codebase_version": "v2.1", "robot_type": "square", "total_episodes": len(episodes),
            "total_frames": index, "total_tasks": 1, "total_videos": len(episodes),
            "total_chunks": 1, "chunks_size": 1000, "fps": fps,
            "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH, "features": features}
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": TASK}) + "\n")
    for name, lines in (("episodes.jsonl", ep_lines), ("episodes_stats.jsonl", stat_lines)):
        (root / "meta" / name).write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture(scope="module")
def v21(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Episode]]:
    root = tmp_path_factory.mktemp("v21") / "ds"
    episodes = [square_episode(i, t=T) for i in range(EPISODES)]
    write_lerobot_v21(root, episodes, FPS)
    return root, episodes


def test_av1_v21_dataset_loads_frame_exactly(v21: tuple[Path, list[Episode]]) -> None:
    root, source = v21
    with av.open(str(root / VIDEO_PATH.format(episode_chunk=0, video_key=CAM, episode_index=0))) as c:
        assert c.streams.video[0].codec_context.codec_tag == "av01"  # really AV1
    ds = LeRobotDataset(root)
    assert ds.info["codebase_version"] == "v2.1" and ds.camera_key == CAM
    assert ds.episode_lengths.tolist() == [T] * EPISODES and ds.image_shape == (SQUARE_SIZE, SQUARE_SIZE, 3)
    assert ds.state_dim == 2 and ds.action_dim == 2
    assert validate_dataset(root) == []
    checked = 0
    for i, src in enumerate(source):
        ep = ds.load_episode(i)
        assert ep.task == TASK and ep.pixels.shape == src.pixels.shape
        np.testing.assert_array_equal(ep.state, src.state)
        np.testing.assert_array_equal(ep.action, src.action)
        dec, ref = ep.pixels.astype(np.int16), src.pixels.astype(np.int16)
        err = np.abs(dec - ref).mean(axis=(1, 2, 3))
        assert err.max() < 6, f"episode {i}: per-frame mean abs error {err.round(1)} (crf 30)"
        for t in range(T - 1):  # decoded frame t is frame t, not a neighbour (the square moved)
            moved = (np.abs(ref[t] - ref[t + 1]) > 60).any(axis=-1)
            if moved.sum() >= 4:
                for a, b in ((t, t + 1), (t + 1, t)):
                    own = np.abs(dec[a] - ref[a])[moved].mean()
                    assert own < np.abs(dec[a] - ref[b])[moved].mean() / 2, (i, a, b)
                checked += 1
    assert checked >= 10, f"only {checked} frame pairs differed enough to check"


def test_av1_v21_dataset_trains(v21: tuple[Path, list[Episode]], tmp_path: Path) -> None:
    root, _ = v21
    frames = build_frame_cache(LeRobotDataset(root), progress=False)
    assert frames.num_frames == EPISODES * T and frames.has_action.all()
    cfg = replace(CFG, steps=4, val_every=2, checkpoint_every=4)
    result = train(root, tmp_path / "run", cfg)
    assert result.steps == 4 and np.isfinite(result.metrics["loss"])
    assert (tmp_path / "run/checkpoint/model.safetensors").is_file()
