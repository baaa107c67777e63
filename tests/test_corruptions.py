"""Every corruption the data issue lists is caught by ``validate`` and by the training loader.

Each case damages a copy of a clean dataset (4 episodes x 12 frames; episodes 0-1 in file-000,
2-3 in file-001), then checks that ``validate_dataset`` reports the defect at the expected
file, episode and frame, and that building the frame cache (what training does first) stops
with an error naming the same file, episode and frame, leaving no cache behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import square_episode

from hmpc.data import (
    DatasetError,
    LeRobotDataset,
    build_frame_cache,
    validate_dataset,
    write_episodes,
)
from hmpc.data.video import encode_video

FPS, T = 10, 12
VID0 = "videos/observation.images.top/chunk-000/file-000.mp4"
VID1 = "videos/observation.images.top/chunk-000/file-001.mp4"
DATA0 = "data/chunk-000/file-000.parquet"
DATA1 = "data/chunk-000/file-001.parquet"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean") / "ds"
    episodes = [square_episode(i, t=T) for i in range(4)]
    write_episodes(root, episodes[:2], fps=FPS)
    write_episodes(root, episodes[2:], fps=FPS)
    assert validate_dataset(root) == []
    return root


# ---- corruptions ------------------------------------------------------------------------------
def _set_column(path: Path, name: str, values: list, type_: pa.DataType | None = None) -> None:
    table = pq.read_table(path)
    i = table.schema.get_field_index(name)
    pq.write_table(table.set_column(i, name, pa.array(values, type_ or table.schema.field(i).type)),
                   path)


def _file1_frames(root: Path) -> np.ndarray:
    ds = LeRobotDataset(root)
    return np.concatenate([ds.load_episode(2).pixels, ds.load_episode(3).pixels])


def zero_byte_video(root: Path) -> None:
    (root / VID0).write_bytes(b"")


def truncated_video(root: Path) -> None:
    path = root / VID0
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def missing_video(root: Path) -> None:
    (root / VID1).unlink()


def fewer_frames_than_metadata(root: Path) -> None:
    encode_video(root / VID1, _file1_frames(root)[:-1], FPS)  # episode 3 loses its last frame


def more_frames_than_metadata(root: Path) -> None:
    frames = _file1_frames(root)
    encode_video(root / VID1, np.concatenate([frames, frames[-1:]]), FPS)


def timestamp_gap(root: Path) -> None:
    ts = pq.read_table(root / DATA1)["timestamp"].to_numpy().copy()
    ts[7:T] += 1 / FPS  # episode 2 skips a frame slot from frame 7 on
    _set_column(root / DATA1, "timestamp", ts.tolist())


def dropped_row(root: Path) -> None:
    table = pq.read_table(root / DATA1)
    pq.write_table(table.take([i for i in range(table.num_rows) if i != 6]), root / DATA1)


def nan_action(root: Path) -> None:
    actions = pq.read_table(root / DATA0)["action"].to_pylist()
    actions[T + 5][1] = float("nan")  # episode 1, frame 5
    _set_column(root / DATA0, "action", actions)


def inf_state(root: Path) -> None:
    state = pq.read_table(root / DATA1)["observation.state"].to_pylist()
    state[T + 4][0] = float("-inf")  # episode 3, frame 4
    _set_column(root / DATA1, "observation.state", state)


def missing_column(root: Path) -> None:
    pq.write_table(pq.read_table(root / DATA0).drop_columns(["action"]), root / DATA0)


def wrong_list_size(root: Path) -> None:
    state = pq.read_table(root / DATA1)["observation.state"].to_pylist()
    state[T + 4] = state[T + 4][:1]  # episode 3, frame 4: 1 value, info.json says 2
    _set_column(root / DATA1, "observation.state", state, pa.list_(pa.float32()))


def scalar_state(root: Path) -> None:
    state = pq.read_table(root / DATA0)["observation.state"].to_pylist()
    _set_column(root / DATA0, "observation.state", [s[0] for s in state], pa.float32())


def text_timestamps(root: Path) -> None:
    ts = pq.read_table(root / DATA1)["timestamp"].to_pylist()
    _set_column(root / DATA1, "timestamp", [f"{t:.3f}" for t in ts], pa.string())


def stray_rows(root: Path) -> None:
    """Rows of episode 3 appended to file-000 too, which holds episodes 0-1 only."""
    rows = pq.read_table(root / DATA1).slice(T, T)
    pq.write_table(pa.concat_tables([pq.read_table(root / DATA0), rows]), root / DATA0)


def video_size_mismatch(root: Path) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    feat = info["features"]["observation.images.top"]
    feat["shape"] = [32, 32, 3]
    feat["info"].update({"video.height": 32, "video.width": 32})
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))


# name -> (corrupt, (file, episode, frame) the loader stops at and validate reports)
CASES: dict[str, tuple[Callable[[Path], None], tuple[str, int, int]]] = {
    "zero-byte video": (zero_byte_video, (VID0, 0, 0)),
    "truncated video": (truncated_video, (VID0, 0, 0)),
    "missing video": (missing_video, (VID1, 2, 0)),
    "decoded frames < metadata": (fewer_frames_than_metadata, (VID1, 3, T - 1)),
    "decoded frames > metadata": (more_frames_than_metadata, (VID1, 3, T)),
    "timestamp gap": (timestamp_gap, (DATA1, 2, 7)),
    "dropped row": (dropped_row, (DATA1, 2, 6)),
    "NaN action": (nan_action, (DATA0, 1, 5)),
    "inf state": (inf_state, (DATA1, 3, 4)),
    "schema: missing column": (missing_column, (DATA0, 0, 0)),
    "schema: list size": (wrong_list_size, (DATA1, 3, 4)),
    "schema: column type": (scalar_state, (DATA0, 0, 0)),
    "schema: timestamp type": (text_timestamps, (DATA1, 2, 0)),
    "schema: video size": (video_size_mismatch, (VID0, 0, 0)),
    "rows the metadata does not place": (stray_rows, (DATA0, 3, 0)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_caught_by_validate_and_loader(case: str, clean: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(clean, tmp_path / "ds"))
    corrupt, (file, episode, frame) = CASES[case]
    corrupt(root)
    problems = validate_dataset(root)
    where = {(p.file, p.episode, p.frame): p for p in problems}
    assert (file, episode, frame) in where, f"validate found only {[str(p) for p in problems]}"
    assert str(where[file, episode, frame]).startswith(f"{file}, episode {episode}, frame {frame}: ")
    with pytest.raises((DatasetError, FileNotFoundError)) as err:
        build_frame_cache(LeRobotDataset(root), progress=False)
    assert f"{root / file}: episode {episode}, frame {frame}: " in str(err.value)
    assert not list((root / ".cache").glob("frames-*")), "a partial frame cache was left"


def test_truncation_at_any_point_is_caught(clean: Path, tmp_path: Path) -> None:
    """Cut the second video anywhere: validate and the loader both report it, never a short
    episode."""
    size = (clean / VID1).stat().st_size
    for keep in (0.1, 0.5, 0.9, 0.99):
        root = Path(shutil.copytree(clean, tmp_path / f"cut{keep}"))
        (root / VID1).write_bytes((clean / VID1).read_bytes()[: int(size * keep)])
        problems = [p for p in validate_dataset(root) if p.file == VID1]
        assert problems and all(p.episode in (2, 3) and p.frame is not None for p in problems)
        with pytest.raises(DatasetError, match=rf"{VID1}: episode [23], frame \d+: "):
            build_frame_cache(LeRobotDataset(root), progress=False)


def test_replaced_file_invalidates_the_cache(clean: Path, tmp_path: Path) -> None:
    """A file corrupted after the cache was built is decoded (and caught) again."""
    root = Path(shutil.copytree(clean, tmp_path / "ds"))
    build_frame_cache(LeRobotDataset(root), progress=False)
    nan_action(root)
    with pytest.raises(DatasetError, match=rf"{DATA0}: episode 1, frame 5: non-finite action"):
        build_frame_cache(LeRobotDataset(root), progress=False)


def test_training_stops_on_a_corrupt_dataset(clean: Path, tmp_path: Path) -> None:
    from test_train import CFG, train

    root = Path(shutil.copytree(clean, tmp_path / "ds"))
    timestamp_gap(root)
    with pytest.raises(DatasetError, match=rf"{DATA1}: episode 2, frame 7: timestamp"):
        train(root, tmp_path / "run", CFG)
