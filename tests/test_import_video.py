"""Raw video imported as video-only episodes: resampling, cropping, the dataset it joins (state and
actions null), and training next to the labelled episodes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import SQUARE_SIZE, square_episode

from hmpc.cli.dataset import main as dataset_main
from hmpc.data import (
    DatasetError,
    Episode,
    LeRobotDataset,
    WindowSampler,
    build_frame_cache,
    validate_dataset,
    with_state,
    write_episodes,
)
from hmpc.data.import_video import Crop, add_videos, read_video, split_episode
from hmpc.data.video import encode_video
from hmpc.diagnostics import pooled_probe_r2
from hmpc.objective import state_probe_term
from hmpc.train import TrainConfig, train_world_model
from hmpc.world_model import LevelSpec, WorldModelSpec, build_world_model

SPEC = WorldModelSpec(image_size=SQUARE_SIZE, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16,
                      levels=(LevelSpec(latent_dim=6, k=2, macro_dim=2, hidden=16),))
CFG = TrainConfig(steps=3, batch_size=4, top_steps=2, val_every=10, val_batches=1, log_every=1,
                  checkpoint_every=0, tensorboard=False, plots=False, seed=3, val_fraction=0.0)


def ramp_video(path: Path, frames: int = 45, fps: int = 30, size: tuple[int, int] = (80, 96)) -> Path:
    """Grey frames whose level is 5 x the frame number: a decoded frame tells which source frame it is."""
    encode_video(path, [np.full((*size, 3), 5 * k, np.uint8) for k in range(frames)], fps=fps)
    return path


def square_video(path: Path, seconds: float = 2.0, fps: int = 30) -> Path:
    """A 48 x 64 clip (wider than tall) of a bright square sliding across a dark floor."""
    frames = []
    for k in range(round(seconds * fps)):
        f = np.full((48, 64, 3), 40, np.uint8)
        x = 8 + k % 36
        f[18:30, x : x + 12] = 220
        frames.append(f)
    encode_video(path, frames, fps=fps)
    return path


def test_read_video_resamples_by_time_crops_and_resizes(tmp_path):
    src = ramp_video(tmp_path / "ramp.mp4")  # 1.5 s at 30 fps
    v = read_video(src, fps=10, size=16)
    assert v.shape == (15, 16, 16, 3) and v.dtype == np.uint8  # ticks 0, 0.1, ..., 1.4 s
    np.testing.assert_allclose(v[:, 8, 8, 0], 15 * np.arange(15), atol=3)  # source frame 3j at tick j
    part = read_video(src, fps=10, size=16, start_s=0.5, end_s=1.0)
    np.testing.assert_allclose(part[:, 8, 8, 0], 5 * np.arange(15, 30, 3), atol=3)
    slow = read_video(src, fps=7, size=8)  # ticks that fall between source frames
    np.testing.assert_allclose(slow[:, 4, 4, 0], 5 * np.floor(np.arange(11) * 30 / 7), atol=3)
    assert len(read_video(src, fps=60, size=8)) == 90  # each source frame shown twice

    halves = np.zeros((40, 80, 3), np.uint8)
    halves[:, 40:] = 255  # dark left, white right
    encode_video(tmp_path / "halves.mp4", [halves] * 3, fps=10)
    right = read_video(tmp_path / "halves.mp4", fps=10, size=8, crop=Crop(40, 0, 40, 40))
    assert right.min() > 240
    centre = read_video(tmp_path / "halves.mp4", fps=10, size=8)  # the centred 40 x 40 square
    assert centre[0, :, 0].max() < 15 and centre[0, :, -1].min() > 240
    with pytest.raises(DatasetError, match=r"crop 60 0 40 40 .* 80x40"):
        read_video(tmp_path / "halves.mp4", fps=10, size=8, crop=Crop(60, 0, 40, 40))
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4", fps=10, size=8)
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(DatasetError, match="notes.mp4"):
        read_video(tmp_path / "notes.mp4", fps=10, size=8)
    with pytest.raises(DatasetError, match="no frame between 3.0 s"):
        read_video(src, fps=10, size=8, start_s=3.0)


def test_read_video_turns_rotated_clips_and_times_frames_without_pts(tmp_path):
    import av

    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display rotation")
    half = np.zeros((48, 64, 3), np.uint8)
    half[:, :32] = 255  # stored: white left half
    with av.open(str(tmp_path / "phone.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)  # shown turned a quarter counterclockwise: 48 wide, 64 tall
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(half, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    shown = read_video(tmp_path / "phone.mp4", fps=10, size=8)[0, :, :, 0]
    assert shown[5:].min() > 240 and shown[:3].max() < 15  # the stored left half is now at the bottom
    with pytest.raises(DatasetError, match=r"crop 16 0 48 48 .* 48x64"):  # fits the stored 64 x 48 frames
        read_video(tmp_path / "phone.mp4", fps=10, size=8, crop=Crop(16, 0, 48, 48))

    src = ramp_video(tmp_path / "ramp.mp4", frames=20, fps=20)
    with av.open(str(src)) as inp, av.open(str(tmp_path / "raw.h264"), "w", format="h264") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    raw = read_video(tmp_path / "raw.h264", fps=10, size=8)  # no pts: timed by index at 20 fps
    np.testing.assert_allclose(raw[:, 4, 4, 0], 10 * np.arange(10), atol=3)
    with pytest.raises(ValueError, match="not square; .* 0 0 40 40"):
        read_video(src, fps=10, size=8, crop=Crop(0, 0, 40, 60))


def test_split_episode_drops_short_tails():
    frames = np.arange(25)
    assert [len(p) for p in split_episode(frames, 10, 2)] == [10, 10, 5]
    assert [len(p) for p in split_episode(frames, 10, 6)] == [10, 10]
    assert [len(p) for p in split_episode(frames, None, 2)] == [25]
    with pytest.raises(ValueError, match="episode length 0"):
        split_episode(frames, 0, 2)


@pytest.fixture()
def imported(tmp_path) -> Path:
    """4 labelled square episodes (state and actions), then two 2 s clips cut into 1 s episodes."""
    root = tmp_path / "data"
    write_episodes(root, [square_episode(i) for i in range(4)], fps=10)
    clips = [square_video(tmp_path / "a.mp4"), square_video(tmp_path / "b.mp4", seconds=2.05)]
    assert dataset_main(["add-video", str(root), *map(str, clips), "--episode-seconds", "1",
                         "--task", "slide"]) == 0
    return root


def test_added_video_is_a_valid_dataset_without_state_or_actions(imported, capsys):
    ds = LeRobotDataset(imported)
    assert ds.num_episodes == 8 and list(ds.episode_lengths) == [16] * 4 + [10] * 4  # b: 21 frames, its 1-frame tail dropped
    assert validate_dataset(imported) == []
    old, new = ds.load_episode(0), ds.load_episode(5)
    np.testing.assert_array_equal(old.state, square_episode(0).state)
    assert old.action is not None and new.state is None and new.action is None and new.task == "slide"
    assert new.pixels.shape == (10, SQUARE_SIZE, SQUARE_SIZE, 3)
    assert new.pixels[0].max() > 180 and np.median(new.pixels[0]) < 60  # the square, on the floor
    stats = json.loads((imported / "meta/stats.json").read_text())
    assert stats["observation.state"]["count"] == [64]  # the labelled frames only
    assert stats["observation.images.top"]["count"] == [104]  # every frame
    write_episodes(imported, [square_episode(9)], fps=10)  # appending after imported video
    ds = LeRobotDataset(imported)
    assert ds.load_episode(8).state is not None and validate_dataset(imported) == []
    assert json.loads((imported / "meta/stats.json").read_text())["observation.state"]["count"] == [80]

    schemas = {pq.read_schema(f) for f in (imported / "meta/episodes").glob("chunk-*/file-*.parquet")}
    assert len(schemas) == 1  # one schema: readers that load meta/episodes as one table (LeRobot's) can
    frames = build_frame_cache(ds, progress=False)
    assert frames.has_state.tolist() == [True] * 64 + [False] * 40 + [True] * 16
    assert not frames.state[64:104].any()
    kept = with_state(frames)
    assert kept.num_episodes == 5 and kept.has_state.all()
    np.testing.assert_array_equal(kept.pixels[:64], frames.pixels[:64])
    first = replace(frames, has_state=np.arange(frames.num_frames) < 64)
    assert np.shares_memory(with_state(first).pixels, frames.pixels)  # one run of frames: a view
    np.testing.assert_array_equal(kept.pixels[64:], frames.pixels[104:])
    np.testing.assert_array_equal(kept.state[64:], frames.state[104:])
    assert dataset_main(["info", str(imported)]) == 0
    out = capsys.readouterr().out
    assert "episodes  9" in out and "5 episodes with actions   5 with state   4 video only" in out


def test_add_video_refuses_what_it_cannot_join(tmp_path):
    clip = square_video(tmp_path / "a.mp4", seconds=0.5)
    with pytest.raises(FileNotFoundError, match="hmpc-collect"):
        add_videos(tmp_path / "none", [clip])
    with pytest.raises(DatasetError, match="without observation.state"):
        write_episodes(tmp_path / "new", [Episode(np.zeros((3, 8, 8, 3), np.uint8), None, None)], fps=10)
    assert dataset_main(["add-video", str(tmp_path / "none"), str(clip)]) == 2
    with pytest.raises(DatasetError, match="has actions but no state"):
        write_episodes(tmp_path / "new", [Episode(np.zeros((3, 8, 8, 3), np.uint8), None,
                                                  np.zeros((3, 2), np.float32))], fps=10)
    root = write_episodes(tmp_path / "data", [square_episode(0)], fps=10)
    (tmp_path / "notes.txt").write_text("not a video")
    for bad in (tmp_path / "missing.mp4", tmp_path / "notes.txt"):
        with pytest.raises((FileNotFoundError, DatasetError), match=bad.name):
            add_videos(root, [clip, bad])  # the good clip first: still nothing is written
        assert LeRobotDataset(root).num_episodes == 1
    for seconds in (0, -3, 0.04):
        with pytest.raises(ValueError, match=f"--episode-seconds {seconds}: .*>= 0.1 s"):
            add_videos(root, [clip], episode_seconds=seconds)
    with pytest.raises(ValueError, match="--episode-seconds 0.1 gives 1-frame episodes .* --min-frames 2"):
        add_videos(root, [clip], episode_seconds=0.1)


def test_stats_count_frames_by_the_largest_count(tmp_path):
    """LeRobot counts image *samples* (~100 per episode), hmpc every frame's image: the frames that
    stats.json covers are its largest count, so a LeRobot-written dataset is neither flagged as
    behind nor re-counted on append."""
    root = write_episodes(tmp_path / "data", [square_episode(i) for i in range(4)], fps=10)
    path = root / "meta/stats.json"
    stats = json.loads(path.read_text())
    for count in (40, 32):  # 32: an episode boundary, where a stale count would fold episodes 2-3 in again
        stats["observation.images.top"]["count"] = [count]
        path.write_text(json.dumps(stats))
        assert validate_dataset(root) == []
    write_episodes(root, [square_episode(4)], fps=10)
    assert json.loads(path.read_text())["observation.state"]["count"] == [80]


def test_collection_resumes_past_imported_video(tmp_path):
    """``episodes`` counts collected episodes: video imported between two collections is not one,
    the collected episodes keep their seeds, and batches of several episodes after the imported
    ones are encoded in order (the workers number episodes as the dataset does)."""
    from hmpc.rollout import EnvSpec, PolicySpec, collect, collected_episodes

    env = EnvSpec("point_maze", {"image_size": SQUARE_SIZE})
    root, straight = tmp_path / "data", tmp_path / "straight"
    collect(env, PolicySpec(), root, 2, 8, seed=5, workers=0, flush_every=3, progress=False)
    add_videos(root, [square_video(tmp_path / "a.mp4", seconds=1.0)])
    assert collected_episodes(root) == 2
    collect(env, PolicySpec(), root, 6, 8, seed=5, workers=0, flush_every=3, progress=False)
    collect(env, PolicySpec(), straight, 6, 8, seed=5, workers=0, flush_every=3, progress=False)
    ds, ref = LeRobotDataset(root), LeRobotDataset(straight)
    assert ds.num_episodes == 7 and ds.load_episode(2).state is None and collected_episodes(root) == 6
    for mine, theirs in ((0, 0), (1, 1), *((i + 1, i) for i in range(2, 6))):
        np.testing.assert_array_equal(ds.load_episode(mine).state, ref.load_episode(theirs).state)


def test_datasets_without_per_episode_stats_still_count(tmp_path, capsys):
    """meta/episodes files written before per-episode stats: their episodes have a state (nothing
    could write one without), their actions are unknown, and new batches do not hide them."""
    from hmpc.data._meta import read_info
    from hmpc.data._stats import logged_episodes
    from hmpc.rollout import collected_episodes

    root = write_episodes(tmp_path / "data", [square_episode(i) for i in range(3)], fps=10)
    for path in (root / "meta/episodes").glob("chunk-*/file-*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.select([c for c in table.column_names if not c.startswith("stats/")]), path)
    add_videos(root, [square_video(tmp_path / "a.mp4", seconds=1.0)])
    write_episodes(root, [square_episode(7)], fps=10)
    assert logged_episodes(root, read_info(root)) == {"observation.state": 4, "action": None}
    assert collected_episodes(root) == 4
    assert dataset_main(["info", str(root)]) == 0
    assert "? episodes with actions   4 with state" in capsys.readouterr().out


def test_meta_episodes_keep_one_schema_when_actions_arrive_late(tmp_path):
    root = write_episodes(tmp_path / "data", [square_episode(0, with_action=False)], fps=10)
    add_videos(root, [square_video(tmp_path / "a.mp4", seconds=1.0)])
    write_episodes(root, [square_episode(1)], fps=10)  # the first actions: earlier files backfilled
    files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    assert len(files) == 3 and len({pq.read_schema(f) for f in files}) == 1
    assert validate_dataset(root) == []


def test_training_reads_imported_video_only_where_it_can(imported, tmp_path):
    use = replace(CFG, video_only="use")
    result = train_world_model(imported, tmp_path / "use", SPEC, _weights(), use, torch.device("cpu"),
                               progress=False)
    assert np.isfinite(result.metrics["loss"])
    fused = replace(SPEC, state_dim=2)
    with pytest.raises(ValueError, match=r"model.state_dim=2 fuses .* 4 episodes .* logged none"):
        train_world_model(imported, tmp_path / "fused", fused, _weights(), use, torch.device("cpu"),
                          progress=False)
    ignore = train_world_model(imported, tmp_path / "ignore", fused, _weights(), CFG, torch.device("cpu"),
                               progress=False)  # video_only=ignore: the imported episodes stay out
    assert np.isfinite(ignore.metrics["loss"])


def _weights():
    from hmpc.objective import LossWeights

    return LossWeights(state_probe=1.0)


def test_state_probe_and_probe_r2_leave_out_windows_without_state(imported):
    model = build_world_model(replace(SPEC, probe_dim=2), 0)
    s1 = torch.randn(2, 3, SPEC.latent_dim)
    state = torch.randn(2, 3, 2)
    pred = model.decode_state(s1)
    both = state_probe_term(model, s1, {"state": state, "has_state": torch.tensor([True, False])})
    torch.testing.assert_close(both, torch.nn.functional.mse_loss(pred[:1], state[:1]))
    none = state_probe_term(model, s1, {"state": state, "has_state": torch.tensor([False, False])})
    assert float(none.detach()) == 0.0 and none.requires_grad

    frames = build_frame_cache(LeRobotDataset(imported), progress=False)
    sampler = WindowSampler(frames, 5, require_actions=False)
    rng = np.random.default_rng(0)
    labelled = sampler.gather(rng.choice(sampler.starts[frames.has_state[sampler.starts]], 16))
    video = sampler.gather(rng.choice(sampler.starts[~frames.has_state[sampler.starts]], 16))
    assert labelled["has_state"].all() and not video["has_state"].any()
    model = build_world_model(SPEC, 0).eval()
    with torch.no_grad():
        alone = pooled_probe_r2(model, [labelled])
        mixed = pooled_probe_r2(model, [labelled, video])
    assert alone and mixed == alone
