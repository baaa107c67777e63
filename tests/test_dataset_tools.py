"""Tests for dataset validation, the hmpc-dataset CLI and kill-safe (resumable) collection."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hmpc import collect_schedule
from hmpc.cli.dataset import main
from hmpc.data import LeRobotDataset
from hmpc.data.validate import Problem, validate_dataset
from hmpc.data.video import encode_video
from hmpc.rollout import EnvSpec, PolicySpec, collect

ENV = EnvSpec("point_maze", {"image_size": 32})
STEPS = 12
VID0 = "videos/observation.images.top/chunk-000/file-000.mp4"
VID1 = "videos/observation.images.top/chunk-000/file-001.mp4"
DATA0 = "data/chunk-000/file-000.parquet"
DATA1 = "data/chunk-000/file-001.parquet"


def _collect(root: Path, episodes: int, flush_every: int = 2) -> Path:
    return collect(ENV, PolicySpec(), root, episodes, STEPS, seed=3, workers=0,
                   flush_every=flush_every, progress=False)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 episodes x 12 frames: episodes 0-1 in file-000, 2-3 in file-001."""
    return _collect(tmp_path_factory.mktemp("clean") / "ds", 4)


@pytest.fixture
def ds(clean: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clean, tmp_path / "ds"))


def _where(problems: list[Problem]) -> set[tuple[str, int | None, int | None]]:
    return {(p.file, p.episode, p.frame) for p in problems}


def _set_column(path: Path, name: str, values: list, type_: pa.DataType | None = None) -> None:
    table = pq.read_table(path)
    col = table.schema.get_field_index(name)
    arr = pa.array(values, type=type_ or table.schema.field(col).type)
    pq.write_table(table.set_column(col, name, arr), path)


def test_collected_dataset_is_valid(clean: Path) -> None:
    assert validate_dataset(clean) == []
    assert main(["validate", str(clean)]) == 0


def test_zero_byte_video(ds: Path) -> None:
    (ds / VID0).write_bytes(b"")
    problems = validate_dataset(ds)
    assert _where(problems) == {(VID0, 0, 0), (VID0, 1, 0)}
    assert all("empty" in p.message for p in problems)
    assert main(["validate", str(ds)]) == 1


def test_missing_video(ds: Path) -> None:
    (ds / VID1).unlink()
    assert _where(validate_dataset(ds)) == {(VID1, 2, 0), (VID1, 3, 0)}


def test_truncated_video(ds: Path) -> None:
    path = ds / VID0
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    problems = validate_dataset(ds)
    assert problems and all(p.file == VID0 for p in problems)
    assert 1 in {p.episode for p in problems}  # the second half of the file is gone
    assert all(p.frame is not None for p in problems if p.episode is not None)


def test_frame_count_mismatch(ds: Path) -> None:
    frames = LeRobotDataset(ds).load_episode(2).pixels
    rest = LeRobotDataset(ds).load_episode(3).pixels
    encode_video(ds / VID1, np.concatenate([frames, rest[:-1]]), fps=10)  # one frame short
    problems = validate_dataset(ds)
    assert _where(problems) == {(VID1, 3, STEPS - 1)}
    assert f"decoded {STEPS - 1} of {STEPS}" in problems[0].message


def test_missing_column(ds: Path) -> None:
    table = pq.read_table(ds / DATA0)
    pq.write_table(table.drop_columns(["action"]), ds / DATA0)
    problems = validate_dataset(ds)
    assert _where(problems) == {(DATA0, 0, 0), (DATA0, 1, 0)}
    assert all("'action' is missing" in p.message for p in problems)


def test_wrong_list_size(ds: Path) -> None:
    state = pq.read_table(ds / DATA1)["observation.state"].to_pylist()
    state[STEPS + 4] = state[STEPS + 4][:3]  # episode 3, frame 4: 3 values instead of 4
    _set_column(ds / DATA1, "observation.state", state, pa.list_(pa.float32()))
    problems = validate_dataset(ds)
    assert _where(problems) == {(DATA1, 3, 4)}
    assert "3 values per row" in problems[0].message


def test_nan_action(ds: Path) -> None:
    actions = pq.read_table(ds / DATA0)["action"].to_pylist()
    actions[STEPS + 5][1] = float("nan")  # episode 1, frame 5
    actions[STEPS + 8][0] = float("inf")  # same episode: only the first bad frame is reported
    _set_column(ds / DATA0, "action", actions)
    problems = validate_dataset(ds)
    assert _where(problems) == {(DATA0, 1, 5)}
    assert "non-finite action" in problems[0].message


def test_timestamp_gap(ds: Path) -> None:
    ts = pq.read_table(ds / DATA1)["timestamp"].to_numpy().copy()
    ts[7:STEPS] += 0.1  # episode 2 skips one frame slot from frame 7 on
    _set_column(ds / DATA1, "timestamp", ts.tolist())
    problems = validate_dataset(ds)
    assert _where(problems) == {(DATA1, 2, 7)}
    assert "timestamp" in problems[0].message


def test_episode_length_mismatch(ds: Path) -> None:
    path = ds / "meta/episodes/chunk-000/file-001.parquet"
    lengths = pq.read_table(path)["length"].to_pylist()
    lengths[1] += 3  # meta says episode 3 has 15 frames; data and video hold 12
    _set_column(path, "length", lengths)
    where = _where(validate_dataset(ds))
    assert (DATA1, 3, STEPS) in where and (VID1, 3, STEPS) in where
    assert ("meta/info.json", None, None) in where  # total_frames no longer matches


def test_orphan_file_reported(ds: Path) -> None:
    shutil.copy(ds / DATA1, ds / "data/chunk-000/file-002.parquet")
    assert _where(validate_dataset(ds)) == {("data/chunk-000/file-002.parquet", None, None)}


def test_info_and_view(clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "episodes  4   frames 48   fps 10" in out and "action range" in out and "v3.0" in out
    png, mp4 = tmp_path / "sheet.png", tmp_path / "ep.mp4"
    assert main(["view", str(clean), "--episode", "2", "--out", str(png)]) == 0
    import cv2

    sheet = cv2.imread(str(png))
    assert sheet is not None and sheet.shape[0] >= 128 and sheet.std() > 0
    assert main(["view", str(clean), "--episode", "1", "--out", str(mp4)]) == 0
    assert mp4.stat().st_size > 0
    assert main(["view", str(clean), "--episode", "9", "--out", str(png)]) == 2
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "info.json" in capsys.readouterr().err


def _episodes(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    ds = LeRobotDataset(root)
    return [(ep.state, ep.action) for ep in map(ds.load_episode, range(len(ds)))]


def _assert_same(a: Path, b: Path) -> None:
    ea, eb = _episodes(a), _episodes(b)
    assert len(ea) == len(eb)
    for (sa, aa), (sb, ab) in zip(ea, eb, strict=True):
        np.testing.assert_array_equal(sa, sb)
        np.testing.assert_array_equal(aa, ab)
    idx = pa.concat_tables([pq.read_table(p, columns=["index"])
                            for p in sorted(a.glob("data/*/*.parquet"))])["index"].to_numpy()
    np.testing.assert_array_equal(idx, np.arange(len(idx)))  # no duplicated frame or episode


def test_collect_resumes_after_crash(clean: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = collect_schedule.publish_batch, []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill during the 2nd batch")
        return real(*args, **kwargs)

    monkeypatch.setattr(collect_schedule, "publish_batch", crash_on_second)
    root = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        _collect(root, 4)
    assert LeRobotDataset(root).num_episodes == 2
    (root / ".tmp-stale").mkdir()  # what a SIGKILL during a write leaves behind
    monkeypatch.setattr(collect_schedule, "publish_batch", real)
    _collect(root, 4)
    assert not list(root.glob(".tmp-*"))
    assert validate_dataset(root) == []
    _assert_same(root, clean)
    _collect(root, 4)  # complete: a rerun adds nothing
    assert LeRobotDataset(root).num_episodes == 4


_CHILD = """
import sys
from hmpc.rollout import EnvSpec, PolicySpec, collect
collect(EnvSpec("point_maze", {"image_size": 32}), PolicySpec(), sys.argv[1], 500, STEPS,
        seed=3, workers=0, flush_every=1, progress=False)
""".replace("STEPS", str(STEPS))


def test_sigkill_mid_collection_then_rerun(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root)])
    info, done, deadline = root / "meta/info.json", 0, time.monotonic() + 60
    try:
        while done < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
            if info.is_file():
                done = json.loads(info.read_text())["total_episodes"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "collection ended before it could be killed"
    done = LeRobotDataset(root).num_episodes
    assert 3 <= done < 500
    total = done + 2
    _collect(root, total, flush_every=1)
    assert validate_dataset(root) == []
    _assert_same(root, _collect(tmp_path / "ref", total, flush_every=1))


def test_stats_left_behind_by_a_kill_are_caught_up(tmp_path):
    """A kill between the info.json and stats.json renames: the next write repairs the stats."""
    import json

    from hmpc.data import Episode, validate_dataset, write_episodes

    rng = np.random.default_rng(0)

    def eps(n):
        return [Episode(rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8),
                        rng.normal(size=(6, 4)).astype(np.float32),
                        rng.uniform(-1, 1, (6, 2)).astype(np.float32)) for _ in range(n)]

    root = tmp_path / "ds"
    write_episodes(root, eps(2), fps=10)
    stale = (root / "meta/stats.json").read_text()
    write_episodes(root, eps(2), fps=10)
    (root / "meta/stats.json").write_text(stale)  # as if killed before the stats rename
    assert any("interrupted write" in p.message for p in validate_dataset(root))
    write_episodes(root, eps(1), fps=10)
    assert validate_dataset(root) == []
    stats = json.loads((root / "meta/stats.json").read_text())
    assert stats["observation.state"]["count"] == [30]
