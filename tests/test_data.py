"""Tests for hmpc.data: LeRobot v3.0 round trip, frame cache, window sampler, errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from helpers import assert_frames_match, assert_same_files, mp4_frames

from hmpc.data import (
    DatasetError,
    Episode,
    LeRobotDataset,
    WindowSampler,
    build_frame_cache,
    split_episodes,
    write_episodes,
)
from hmpc.data import video as video_mod
from hmpc.data import writer as writer_mod

FPS = 10
SIZE = 32


def smooth_frames(t: int, seed: int, size: int = SIZE) -> np.ndarray:
    """uint8 (t, size, size, 3): slowly moving gradients, which H.264 keeps nearly exact."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
    k = np.arange(t)[:, None, None]
    chans = [128 + 60 * np.sin(np.pi * (xx + 0.5 * yy) + phase[c] + 0.2 * k) for c in range(3)]
    return np.stack(chans, axis=-1).astype(np.uint8)


def make_episode(ep_id: int, t: int = 12, with_action: bool = True, task: str = "push") -> Episode:
    """State encodes (episode id, frame index) so windows can be checked from state alone."""
    state = np.stack([np.full(t, ep_id), np.arange(t), np.linspace(0, 1, t)], 1).astype(np.float32)
    action = (np.stack([np.arange(t) + 100 * ep_id, -np.arange(t)], 1).astype(np.float32)
              if with_action else None)
    return Episode(pixels=smooth_frames(t, ep_id), state=state, action=action, task=task)


def index_frames(t: int, offset: int) -> np.ndarray:
    """Frames whose flat colour encodes their index (offset + i) * 8, robust to compression."""
    vals = ((np.arange(t) + offset) * 8 % 256).astype(np.uint8)
    return np.broadcast_to(vals[:, None, None, None], (t, SIZE, SIZE, 3)).copy()


@pytest.fixture
def ds_root(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    write_episodes(root, [make_episode(i, t=12 + i) for i in range(3)], fps=FPS)
    return root


def test_round_trip_and_append(ds_root: Path) -> None:
    write_episodes(ds_root, [make_episode(3, t=9, task="reach"), make_episode(4, t=15)], fps=FPS)
    ds = LeRobotDataset(ds_root)
    assert len(ds) == 5 and ds.num_frames == 12 + 13 + 14 + 9 + 15
    assert ds.episode_lengths.tolist() == [12, 13, 14, 9, 15]
    for i, t in enumerate([12, 13, 14, 9, 15]):
        ep, ref = ds.load_episode(i), make_episode(i, t=t)
        assert ep.pixels.shape == (t, SIZE, SIZE, 3) and ep.pixels.dtype == np.uint8
        assert np.abs(ep.pixels.astype(int) - ref.pixels).mean() < 3
        np.testing.assert_array_equal(ep.state, ref.state)
        np.testing.assert_array_equal(ep.action, ref.action)
        assert ep.task == ("reach" if i == 3 else "push")
    # Second call wrote a second data/video file index.
    assert (ds_root / "data/chunk-000/file-001.parquet").is_file()
    assert (ds_root / "videos/observation.images.top/chunk-000/file-001.mp4").is_file()
    stats = json.loads((ds_root / "meta/stats.json").read_text())
    all_state = np.concatenate([make_episode(i, t).state for i, t in enumerate([12, 13, 14, 9, 15])])
    np.testing.assert_allclose(stats["observation.state"]["mean"], all_state.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats["observation.state"]["std"], all_state.std(0), atol=1e-5)
    assert stats["observation.state"]["count"] == [len(all_state)]


def test_info_fields(ds_root: Path) -> None:
    info = json.loads((ds_root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["total_episodes"] == 3 and info["total_frames"] == 39 and info["total_tasks"] == 1
    assert info["splits"] == {"train": "0:3"} and info["fps"] == FPS
    feats = info["features"]
    cam = feats["observation.images.top"]
    assert cam["dtype"] == "video" and cam["shape"] == [SIZE, SIZE, 3]
    assert cam["info"]["video.codec"] == "h264" and cam["info"]["video.fps"] == FPS
    assert feats["observation.state"]["shape"] == [3] and feats["action"]["shape"] == [2]
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert key in feats
    eps = pq.read_table(ds_root / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert eps["length"] == [12, 13, 14] and eps["dataset_to_index"] == [12, 25, 39]
    assert eps["videos/observation.images.top/from_timestamp"] == [0.0, 1.2, 2.5]
    data = pq.read_table(ds_root / "data/chunk-000/file-000.parquet")
    assert data["index"].to_pylist() == list(range(39))
    assert pq.read_table(ds_root / "meta/tasks.parquet").to_pydict() == {
        "task_index": [0], "task": ["push"]}
    ds = LeRobotDataset(ds_root, camera="top")
    assert ds.image_shape == (SIZE, SIZE, 3) and ds.state_dim == 3 and ds.action_dim == 2


def test_yuv444_is_closer(tmp_path: Path) -> None:
    write_episodes(tmp_path / "c444", [make_episode(0)], fps=FPS, pix_fmt="yuv444p")
    ds = LeRobotDataset(tmp_path / "c444")
    assert ds.info["features"]["observation.images.top"]["info"]["video.pix_fmt"] == "yuv444p"
    assert np.abs(ds.load_episode(0).pixels.astype(int) - make_episode(0).pixels).mean() < 1.5


def test_video_only_episodes(tmp_path: Path) -> None:
    root = tmp_path / "vo"
    write_episodes(root, [make_episode(0, with_action=False)], fps=FPS)
    ds = LeRobotDataset(root)
    assert ds.action_dim is None and ds.load_episode(0).action is None
    # Appending acted episodes adds the action feature; old episodes stay video-only.
    write_episodes(root, [make_episode(1), make_episode(2, with_action=False)], fps=FPS)
    ds = LeRobotDataset(root)
    assert ds.action_dim == 2
    assert [ds.load_episode(i).action is None for i in range(3)] == [True, False, True]
    np.testing.assert_array_equal(ds.load_episode(1).action, make_episode(1).action)


def test_frame_accurate_indexing(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    lengths = [7, 20, 11]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    eps = [Episode(index_frames(t, o), np.zeros((t, 1), np.float32), None)
           for t, o in zip(lengths, offsets, strict=True)]
    write_episodes(root, eps, fps=FPS)
    ds = LeRobotDataset(root)
    for i in [2, 0, 1]:  # out of order: each load seeks
        got = ds.load_episode(i).pixels[:, SIZE // 2, SIZE // 2, 0].astype(int)
        want = (np.arange(lengths[i]) + offsets[i]) * 8 % 256
        assert np.abs(got - want).max() <= 2, (i, got, want)


def test_reads_v21_layout(ds_root: Path, tmp_path: Path) -> None:
    """A v2.1 dataset (one parquet + mp4 per episode, episodes.jsonl) reads the same."""
    v3, root = LeRobotDataset(ds_root), tmp_path / "v21"
    info = v3.info | {"codebase_version": "v2.1",
                      "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                      "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
    table = pq.read_table(ds_root / "data/chunk-000/file-000.parquet")
    lines = []
    for i in range(3):
        ep = v3.load_episode(i)
        rows = table.filter(pc.equal(table["episode_index"], i))
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, root / f"data/chunk-000/episode_{i:06d}.parquet")
        video_mod.encode_video(root / f"videos/chunk-000/{v3.camera_key}/episode_{i:06d}.mp4",
                               ep.pixels, FPS)
        lines.append(json.dumps({"episode_index": i, "tasks": [ep.task], "length": len(ep)}))
    (root / "meta").mkdir()
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/episodes.jsonl").write_text("\n".join(lines))
    v21 = LeRobotDataset(root)
    assert v21.episode_lengths.tolist() == [12, 13, 14]
    ep = v21.load_episode(2)
    np.testing.assert_array_equal(ep.state, make_episode(2, t=14).state)
    assert np.abs(ep.pixels.astype(int) - make_episode(2, t=14).pixels).mean() < 3
    with pytest.raises(DatasetError, match="v3.0"):
        write_episodes(root, [make_episode(3)], fps=FPS)


def test_window_sampler(ds_root: Path) -> None:
    frames = build_frame_cache(LeRobotDataset(ds_root), progress=False)
    sampler = WindowSampler(frames, window=4, frameskip=2)
    assert sampler.num_windows == sum(t - 6 for t in (12, 13, 14))
    batch = sampler.sample(64, np.random.default_rng(0))
    assert batch["pixels"].shape == (64, 4, 3, SIZE, SIZE) and batch["pixels"].dtype == torch.uint8
    assert batch["state"].shape == (64, 4, 3) and batch["action"].shape == (64, 3, 4)
    assert batch["has_action"].all()
    st, act = batch["state"].numpy(), batch["action"].numpy()
    assert (st[:, :, 0] == st[:, :1, 0]).all(), "window crosses an episode boundary"
    np.testing.assert_array_equal(np.diff(st[:, :, 1], axis=1), 2)
    # Macro-action t = [a(f_t), a(f_t + 1)], a(f) = (f + 100 e, -f).
    f, e = st[:, :-1, 1], st[:, :-1, 0]
    np.testing.assert_array_equal(act[..., 0], f + 100 * e)
    np.testing.assert_array_equal(act[..., 2], f + 1 + 100 * e)
    np.testing.assert_array_equal(act[..., 3], -(f + 1))
    # Pixels in the batch are the frames of the cache, channels first.
    idx = batch["index"].numpy()
    np.testing.assert_array_equal(batch["pixels"][:, 0].permute(0, 2, 3, 1).numpy(),
                                  frames.pixels[idx])
    only_first = WindowSampler(frames, window=4, frameskip=2, episodes=[0])
    assert (only_first.sample(16, np.random.default_rng(1))["state"][:, :, 0] == 0).all()
    with pytest.raises(DatasetError, match=r"window=8.*frameskip=2.*14 frames"):
        WindowSampler(frames, window=8, frameskip=2)


def test_sampler_video_only(tmp_path: Path) -> None:
    root = tmp_path / "mix"
    write_episodes(root, [make_episode(0), make_episode(1, with_action=False)], fps=FPS)
    frames = build_frame_cache(LeRobotDataset(root), progress=False)
    assert WindowSampler(frames, window=3).num_windows == 10
    loose = WindowSampler(frames, window=3, require_actions=False)
    assert loose.num_windows == 20
    batch = loose.sample(200, np.random.default_rng(0))
    has, ep = batch["has_action"].numpy(), batch["state"][:, 0, 0].numpy()
    np.testing.assert_array_equal(has, ep == 0)
    assert (batch["action"][~batch["has_action"]] == 0).all()
    for share, n_lab in ((0.25, 50), (1.0, 200)):
        mixed = WindowSampler(frames, window=3, require_actions=False, labelled_share=share)
        batch = mixed.sample(200, np.random.default_rng(0))
        assert int(batch["has_action"].sum()) == n_lab  # exactly that share, every batch
        assert (batch["state"][:, 0, 0].numpy() == 0).sum() == n_lab
    with pytest.raises(ValueError, match="labelled_share"):
        WindowSampler(frames, window=3, require_actions=False, labelled_share=0.0)
    split = loose.sample_split(7, 5, np.random.default_rng(0))  # 7 labelled, then 5 video-only
    np.testing.assert_array_equal(split["has_action"].numpy(), [True] * 7 + [False] * 5)
    np.testing.assert_array_equal(split["state"][:, 0, 0].numpy(), [0] * 7 + [1] * 5)
    # the share path draws the same windows as the split it amounts to (training stays reproducible)
    quarter = WindowSampler(frames, window=3, require_actions=False, labelled_share=0.25)
    np.testing.assert_array_equal(quarter.sample(8, np.random.default_rng(3))["index"],
                                  loose.sample_split(2, 6, np.random.default_rng(3))["index"])
    labelled_only = WindowSampler(frames, window=3, episodes=[0])
    assert labelled_only.sample_split(4, 3, np.random.default_rng(0))["has_action"].all()
    video_only = WindowSampler(frames, window=3, require_actions=False, episodes=[1])
    with pytest.raises(DatasetError, match="4 labelled windows asked for"):
        video_only.sample_split(4, 3, np.random.default_rng(0))


def test_frame_cache_reuse_and_rebuild(ds_root: Path) -> None:
    first = build_frame_cache(LeRobotDataset(ds_root), progress=False)
    assert not first.reused and first.num_frames == 39
    mtime = os.stat(first.path).st_mtime_ns
    second = build_frame_cache(LeRobotDataset(ds_root), progress=False)
    assert second.reused and second.path == first.path and os.stat(second.path).st_mtime_ns == mtime
    np.testing.assert_array_equal(second.state, first.state)
    write_episodes(ds_root, [make_episode(3)], fps=FPS)
    third = build_frame_cache(LeRobotDataset(ds_root), progress=False)
    assert not third.reused and third.path != first.path and third.num_frames == 51
    assert not list((ds_root / ".cache").glob(".*tmp"))


def test_split_episodes() -> None:
    rng = np.random.default_rng(0)
    train, val = split_episodes(10, 0.2, rng)
    assert len(val) == 2 and sorted(np.concatenate([train, val]).tolist()) == list(range(10))
    assert len(split_episodes(2, 0.01, rng)[1]) == 1
    assert len(split_episodes(1, 0.5, rng)[1]) == 0


def test_error_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="hmpc-collect") as err:
        LeRobotDataset(missing)
    assert str(missing) in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="info.json"):
        LeRobotDataset(tmp_path / "empty")


def test_error_zero_byte_video(ds_root: Path) -> None:
    path = ds_root / "videos/observation.images.top/chunk-000/file-000.mp4"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="file-000.mp4.*empty"):
        LeRobotDataset(ds_root).load_episode(1)


def test_error_truncated_video(ds_root: Path) -> None:
    path = ds_root / "videos/observation.images.top/chunk-000/file-000.mp4"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="file-000.mp4"):
        LeRobotDataset(ds_root).load_episode(2)


def test_error_missing_column(ds_root: Path) -> None:
    path = ds_root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["observation.state"]), path)
    with pytest.raises(DatasetError, match=r"file-000.parquet.*'observation.state'"):
        LeRobotDataset(ds_root).load_episode(0)


def test_error_nan_action(ds_root: Path) -> None:
    path = ds_root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    actions = table["action"].to_pylist()
    actions[12 + 5][1] = float("nan")  # episode 1, frame 5
    col = table.schema.get_field_index("action")
    table = table.set_column(col, "action", pa.array(actions, type=table.schema.field(col).type))
    pq.write_table(table, path)
    with pytest.raises(DatasetError, match=r"file-000.parquet: episode 1, frame 5: non-finite action"):
        LeRobotDataset(ds_root).load_episode(1)
    bad = make_episode(0)
    bad.state[3, 0] = np.inf
    with pytest.raises(DatasetError, match="state at frame 3"):
        write_episodes(ds_root, [bad], fps=FPS)


def test_error_incompatible_append_and_odd_size(ds_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="new output folder"):
        write_episodes(ds_root, [make_episode(0)], fps=FPS + 1)
    odd = Episode(np.zeros((4, 33, 32, 3), np.uint8), np.zeros((4, 1), np.float32), None)
    with pytest.raises(DatasetError, match="even height and width"):
        write_episodes(tmp_path / "odd", [odd], fps=FPS)
    assert not [p for p in (tmp_path / "odd").rglob("*") if p.is_file()]


@pytest.mark.parametrize("where", ["encoder", "publish"])
def test_no_partial_dataset_on_failure(ds_root: Path, monkeypatch: pytest.MonkeyPatch,
                                       where: str) -> None:
    """A crash while encoding, or after the batch is staged in root/.tmp-* but before the
    commit renames, leaves the dataset byte for byte as it was."""
    before = {p: p.read_bytes() for p in ds_root.rglob("*") if p.is_file()}

    def crash(*args, **kwargs):
        if where == "publish":
            assert list(ds_root.glob(".tmp-*/data/*/*.parquet")), "payload should be staged first"
        raise RuntimeError(f"{where} crashed")

    if where == "encoder":
        monkeypatch.setattr(video_mod.VideoWriter, "write", crash)
    else:
        monkeypatch.setattr(writer_mod, "_write_json", crash)
    with pytest.raises(RuntimeError, match=f"{where} crashed"):
        write_episodes(ds_root, [make_episode(3), make_episode(4)], fps=FPS)
    after = {p: p.read_bytes() for p in ds_root.rglob("*") if p.is_file()}
    assert after == before
    assert not list(ds_root.glob(".tmp-*"))
    assert LeRobotDataset(ds_root).num_episodes == 3


def test_batches_encoded_apart_publish_like_write_episodes(ds_root: Path, tmp_path: Path) -> None:
    """plan -> encode (anywhere, in memory, episode by episode) -> publish writes what
    write_episodes writes (mp4s frame for frame); the mp4 holds the frames of a one-shot
    encode_video of all frames; order is enforced."""
    eps = [make_episode(3 + i, t=10 + i, task="reach" if i == 2 else "push") for i in range(5)]
    ref = tmp_path / "ref"
    shutil.copytree(ds_root, ref)
    write_episodes(ref, eps[:2], fps=FPS)
    write_episodes(ref, eps[2:], fps=FPS)
    plans = writer_mod.plan_batches(ds_root, [[(len(e), e.task) for e in eps[:2]],
                                              [(len(e), e.task) for e in eps[2:]]], fps=FPS)
    first, second = (writer_mod.encode_batch(p, eps[s]) for p, s in
                     zip(plans, [slice(0, 2), slice(2, 5)], strict=True))
    with pytest.raises(DatasetError, match="changed since this batch was planned"):
        writer_mod.publish_batch(ds_root, second)  # batch 1 before batch 0
    writer_mod.publish_batch(ds_root, first)
    writer_mod.publish_batch(ds_root, second)
    assert_same_files(ref, ds_root)  # mp4s frame for frame: libx264 is not always deterministic
    one_shot, batch = tmp_path / "one.mp4", tmp_path / "batch.mp4"
    video_mod.encode_video(one_shot, np.concatenate([e.pixels for e in eps[2:]]), FPS)
    batch.write_bytes(second.files["videos/observation.images.top/chunk-000/file-002.mp4"])
    assert_frames_match(mp4_frames(batch), mp4_frames(one_shot), "batch against one-shot encode")
    with pytest.raises(DatasetError, match="changed since this batch was planned"):
        writer_mod.publish_batch(ds_root, second)  # twice
    short = writer_mod.BatchWriter(writer_mod.plan_batches(ds_root, [[(12, "push")]], fps=FPS)[0])
    with pytest.raises(DatasetError, match="has 11 frames; the batch was planned with 12"):
        short.add(make_episode(9, t=11))
