"""Appending to a dataset LeRobot wrote: new files take the dataset's schema, so it still loads
as one table; a camera hmpc does not record is refused before anything is written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import square_episode

from hmpc.data import LeRobotDataset, write_episodes
from hmpc.data._schema import conform
from hmpc.data.video import DatasetError

HF_META = {b"huggingface": b'{"info": {"features": "as LeRobot writes them"}}'}


def lerobot_style(root: Path) -> None:
    """Rewrite an hmpc dataset the way LeRobot writes one: reward and done columns, plain list
    columns, HF metadata in the data files, stats of every feature in meta/episodes."""
    for path in sorted(root.glob("data/chunk-*/file-*.parquet")):
        t = pq.read_table(path)
        n = t.num_rows
        t = t.set_column(t.column_names.index("observation.state"), "observation.state",
                         t["observation.state"].cast(pa.list_(pa.float32())))
        t = t.set_column(t.column_names.index("action"), "action", t["action"].cast(pa.list_(pa.float32())))
        t = t.append_column("next.reward", pa.array(np.arange(n, dtype=np.float32)))
        t = t.append_column("next.done", pa.array(np.arange(n) % 16 == 15))
        pq.write_table(t.replace_schema_metadata(HF_META), path)
    for path in sorted(root.glob("meta/episodes/chunk-*/file-*.parquet")):
        t = pq.read_table(path)
        n = t.num_rows
        for stat in ("min", "max", "mean", "std"):
            t = t.append_column(f"stats/timestamp/{stat}", pa.array([[0.5]] * n, pa.list_(pa.float64())))
        t = t.append_column("stats/next.reward/count", pa.array([[16]] * n, pa.list_(pa.int64())))
        pq.write_table(t, path)
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["features"]["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    info["features"]["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    info_path.write_text(json.dumps(info, indent=4))


@pytest.fixture()
def foreign(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    write_episodes(root, [square_episode(i) for i in range(3)], fps=10)
    write_episodes(root, [square_episode(3)], fps=10)
    lerobot_style(root)
    return root


def test_appended_files_take_the_datasets_schema_and_load_as_one_table(foreign: Path):
    video_only = replace(square_episode(5), action=None, state=None)
    write_episodes(foreign, [square_episode(4)], fps=10)
    write_episodes(foreign, [video_only], fps=10)
    data = sorted(foreign.glob("data/chunk-*/file-*.parquet"))
    metas = sorted(foreign.glob("meta/episodes/chunk-*/file-*.parquet"))
    assert len(data) == len(metas) == 4
    for files in (data, metas):
        schemas = [pq.read_schema(f) for f in files]
        assert all(s.equals(schemas[0], check_metadata=True) for s in schemas), files
    table = pa.concat_tables([pq.read_table(f) for f in data])  # one table, as LeRobot loads it
    new = table.filter(pa.compute.greater_equal(table["episode_index"], 4))
    assert new["next.reward"].null_count == new.num_rows == 32  # unknown for the new episodes
    assert new["next.done"].null_count == 32
    assert table.filter(pa.compute.less(table["episode_index"], 4))["next.reward"].null_count == 0
    eps = pa.concat_tables([pq.read_table(f) for f in metas])
    assert eps["stats/timestamp/mean"].null_count == 2 and eps["stats/next.reward/count"].null_count == 2
    ds = LeRobotDataset(foreign)
    assert ds.num_episodes == 6
    got, want = ds.load_episode(4), square_episode(4)
    np.testing.assert_allclose(got.action, want.action)
    np.testing.assert_allclose(got.state, want.state)
    assert ds.load_episode(5).action is None and ds.load_episode(5).state is None
    np.testing.assert_allclose(ds.load_episode(0).state, square_episode(0).state)


def test_a_second_camera_is_refused_before_anything_is_written(foreign: Path):
    info_path = foreign / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["features"]["observation.images.wrist"] = dict(info["features"]["observation.images.top"])
    info_path.write_text(json.dumps(info, indent=4))
    before = sorted(p.relative_to(foreign) for p in foreign.rglob("*"))
    with pytest.raises(DatasetError, match=r"camera\(s\) \['observation.images.wrist'\].*new output folder"):
        write_episodes(foreign, [square_episode(4)], fps=10)
    assert sorted(p.relative_to(foreign) for p in foreign.rglob("*")) == before


def test_conform_fills_casts_orders_and_keeps_new_columns():
    schema = pa.schema([("b", pa.list_(pa.float32())), ("a", pa.int64()), ("gone", pa.bool_())],
                       metadata={b"k": b"v"})
    fixed = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0, 3.0, 4.0], pa.float32()), 2)
    table = pa.table({"a": pa.array([1, 2], pa.int32()), "b": fixed, "new": [7, 8]})
    out = conform(table, schema)
    assert out.column_names == ["b", "a", "gone", "new"]
    assert out.schema.field("b").type == pa.list_(pa.float32()) and out.schema.field("a").type == pa.int64()
    assert out["gone"].null_count == 2 and out["new"].to_pylist() == [7, 8]
    assert out.schema.metadata is None  # the schema's metadata would describe other columns
    same = conform(table.select(["a", "b"]).append_column("gone", pa.array([True, False])), schema)
    assert same.schema.equals(schema, check_metadata=True)
    assert conform(table, None) is table


def test_stats_json_carries_lerobots_quantiles_pooled_by_count(tmp_path: Path):
    first, second = [square_episode(i) for i in range(3)], [square_episode(i) for i in range(3, 5)]
    root = write_episodes(tmp_path / "ds", first, fps=10)
    stats = json.loads((root / "meta/stats.json").read_text())
    state = np.concatenate([ep.state for ep in first]).astype(np.float64)
    for q, p in (("q01", 0.01), ("q50", 0.5), ("q99", 0.99)):
        np.testing.assert_allclose(stats["observation.state"][q], np.quantile(state, p, axis=0))
    pixels = np.concatenate([ep.pixels for ep in first]).reshape(-1, 3) / 255.0
    want = np.quantile(pixels, 0.9, axis=0, method="inverted_cdf")
    np.testing.assert_allclose(np.ravel(stats["observation.images.top"]["q90"]), want)
    write_episodes(root, second, fps=10)
    pooled = json.loads((root / "meta/stats.json").read_text())["action"]["q10"]
    a1, a2 = (np.concatenate([ep.action for ep in eps]).astype(np.float64) for eps in (first, second))
    want = (len(a1) * np.quantile(a1, 0.1, axis=0) + len(a2) * np.quantile(a2, 0.1, axis=0)) / (len(a1) + len(a2))
    np.testing.assert_allclose(pooled, want)
    # stats without quantiles (an older hmpc): a pooled quantile would describe part of the frames
    old = json.loads((root / "meta/stats.json").read_text())
    old["action"] = {k: v for k, v in old["action"].items() if not k.startswith("q")}
    (root / "meta/stats.json").write_text(json.dumps(old))
    write_episodes(root, [square_episode(6)], fps=10)
    after = json.loads((root / "meta/stats.json").read_text())
    assert "q10" not in after["action"] and "q10" in after["observation.state"]


def test_validate_flags_meta_episodes_files_of_another_schema(foreign: Path):
    from hmpc.data import validate_dataset

    assert validate_dataset(foreign, decode_video=False) == []
    write_episodes(foreign, [square_episode(4)], fps=10)
    assert validate_dataset(foreign, decode_video=False) == []
    last = sorted(foreign.glob("meta/episodes/chunk-*/file-*.parquet"))[-1]
    pq.write_table(pq.read_table(last).drop_columns(["stats/timestamp/mean"]), last)
    (problem,) = validate_dataset(foreign, decode_video=False)
    assert problem.file == last.relative_to(foreign).as_posix()
    assert "lacks ['stats/timestamp/mean']" in problem.message


def test_first_actions_after_an_interrupted_publish_commit_on_the_first_try(tmp_path: Path):
    """A state-only publish killed after moving its payload, before info.json, leaves files at the
    next batch's paths; a batch that brings the first actions backfills the dataset's files but
    not those (they are replaced by its own)."""
    from hmpc.data.writer import encode_batch, plan_batches

    root = tmp_path / "ds"
    write_episodes(root, [replace(square_episode(0), action=None)], fps=10)
    (plan,) = plan_batches(root, [[(16, "")]], fps=10)
    for rel, data in encode_batch(plan, [replace(square_episode(1), action=None)]).files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)  # left by the killed publish
    write_episodes(root, [square_episode(2)], fps=10)
    ds = LeRobotDataset(root)
    assert ds.num_episodes == 2 and ds.load_episode(0).action is None
    np.testing.assert_allclose(ds.load_episode(1).action, square_episode(2).action)
    from hmpc.data import validate_dataset

    assert validate_dataset(root, decode_video=False) == []


def test_a_column_that_cannot_be_cast_names_both_types():
    schema = pa.schema([("a", pa.int8())])
    with pytest.raises(DatasetError, match=r"column 'a': the dataset's files hold int8, the new episodes int64"):
        conform(pa.table({"a": pa.array([1000], pa.int64())}), schema)


def test_a_meta_index_ahead_of_the_data_is_not_reused(tmp_path: Path):
    """LeRobot numbers meta/episodes files on their own: the committed rows in meta file-001 while
    data and video are in file-000 must survive an append (it wrote file-001 over them)."""
    root = tmp_path / "ds"
    write_episodes(root, [square_episode(i) for i in range(2)], fps=10)
    meta = root / "meta/episodes/chunk-000"
    (meta / "file-000.parquet").rename(meta / "file-001.parquet")
    write_episodes(root, [square_episode(2)], fps=10)
    ds = LeRobotDataset(root)
    assert ds.num_episodes == 3
    for i in range(3):
        np.testing.assert_array_equal(ds.load_episode(i).state, square_episode(i).state)
    assert sorted(p.name for p in meta.iterdir()) == ["file-001.parquet", "file-002.parquet"]


def test_a_stray_file_in_meta_episodes_is_named(tmp_path: Path):
    root = tmp_path / "ds"
    write_episodes(root, [square_episode(0)], fps=10)
    meta = root / "meta/episodes/chunk-000"
    (meta / "file-000 (1).parquet").write_bytes((meta / "file-000.parquet").read_bytes())
    with pytest.raises(DatasetError, match=r"file-000 \(1\)\.parquet: not a chunk-CCC/file-FFF file"):
        LeRobotDataset(root)
