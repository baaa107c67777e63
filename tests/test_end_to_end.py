"""The whole path, tiny: collect -> train -> evaluate through the demo's own entry point."""

import json
from pathlib import Path

import pytest
from helpers import assert_frames_match, assert_same_files
from hydra import compose, initialize_config_module

from hmpc.cli import collect as collect_cli
from hmpc.cli import demo as demo_cli
from hmpc.cli import train as train_cli

TINY = [
    "env.image_size=32", "env.max_episode_steps=30", "model=tiny",
    "collect.episodes=6", "collect.steps=30",
    "trainer.steps=15", "trainer.batch_size=8", "trainer.val_every=15", "trainer.val_batches=1",
    "eval.episodes=2", "eval.max_steps=8", "workers=0", "device=cpu",
    "controllers.hierarchical.optimizer.iters=2", "controllers.hierarchical.high_optimizer.population=16",
    "controllers.flat_gd.optimizer.iters=2", "controllers.flat_gd.horizon=4",
    "controllers.flat_cem.optimizer.population=16", "controllers.flat_cem.horizon=4",
    "controllers.oracle.optimizer.population=8", "controllers.oracle.horizon=4",
]


def cfg(name: str, overrides: list[str]):
    with initialize_config_module("configs", version_base="1.3"):
        return compose(name, overrides=overrides)


def test_demo_end_to_end(tmp_path, capsys, monkeypatch):
    # the hierarchical planner routes by a landmark graph of the demo's data (built in the driver)
    monkeypatch.chdir(tmp_path.parent)  # a relative output_dir, as the default is
    demo_cli.run(cfg("demo", [*TINY, "controllers.hierarchical.landmarks=8", f"output_dir={tmp_path.name}"]))
    config = json.loads((tmp_path / "train" / "checkpoint" / "config.json").read_text())
    assert config["dataset"]["root"] == str(tmp_path / "dataset")  # absolute: evaluations elsewhere find it
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert set(info["aggregated"]) == {"hierarchical", "flat_gd", "flat_cem", "oracle", "random"}
    # what the numbers depend on beyond the code (the same commit gave others in a rebuilt venv)
    assert info["environment"]["packages"]["av"] == config["environment"]["packages"]["av"]
    ids = [r["episode_id"] for r in info["per_episode"]]
    assert len(ids) == len(set(ids)) == 10
    assert all(r["error"] is None for r in info["per_episode"]), info["per_episode"]
    for agg in info["aggregated"].values():
        assert 0.0 <= agg["pc_success"] <= 100.0 and agg["n_episodes"] == 2
    # the same seeds give the same start/goal pairs for every controller
    starts: dict[str, list[float]] = {}
    for r in info["per_episode"]:
        starts.setdefault(r["controller"], []).append(r["start_distance"])
    assert len(starts) == 5 and len({tuple(v) for v in starts.values()}) == 1
    assert (tmp_path / "train" / "checkpoint" / "model.safetensors").is_file()
    assert (tmp_path / "train" / "metrics.csv").is_file()
    for name in ("results.md", "success_by_difficulty.png", "success_vs_time.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    assert len(info["video_paths"]) == 10  # the first 2 episodes of each controller
    assert all(Path(p).stat().st_size > 0 for p in info["video_paths"])
    out = capsys.readouterr().out
    assert "| point_maze | hierarchical | 2 |" in out
    # collecting into a complete dataset again collects nothing and says so
    collect_cli.run(cfg("collect", ["env.image_size=32", "episodes=6", "steps=30", "workers=0",
                                    f"output_dir={tmp_path / 'dataset'}"]))
    out = capsys.readouterr().out
    assert "already holds 6 collected episodes (episodes=6 is the total); nothing to collect" in out
    assert "6 episodes, 0 collected now" in out


def run_expecting_error(module, name: str, overrides: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        module.run(cfg(name, overrides))
    assert e.value.code == 2
    return capsys.readouterr().err


def test_unknown_env_name_is_reported(tmp_path, capsys):
    err = run_expecting_error(collect_cli, "collect", ["env.name=mujoco_ant", f"output_dir={tmp_path}", "workers=0"], capsys)
    assert "mujoco_ant" in err and "point_maze" in err


def test_bad_layout_is_reported(tmp_path, capsys):
    err = run_expecting_error(collect_cli, "collect", ["env.layout=['#####','#.X.#','#####']", f"output_dir={tmp_path}", "workers=0"], capsys)
    assert "'X'" in err and "row 1" in err
    err = run_expecting_error(collect_cli, "collect", ["env.layout=['###','###']", f"output_dir={tmp_path}", "workers=0"], capsys)
    assert "no free cell" in err


def test_missing_dataset_folder_is_reported(tmp_path, capsys):
    err = run_expecting_error(train_cli, "train", [f"data={tmp_path / 'nope'}", f"output_dir={tmp_path}"], capsys)
    assert str(tmp_path / "nope") in err and "hmpc-collect" in err


@pytest.mark.ray
def test_ray_collection_matches_in_process(tmp_path):
    """Episode seeds are fixed per index and batches are encoded on the workers: 2 Ray workers
    write the same files as 0 workers (parquet data and meta byte for byte; mp4 frame for frame,
    up to libx264's rare nondeterminism: ``helpers.assert_frames_match``), also when the run is
    interrupted and resumed or appended to with another worker count."""
    import numpy as np
    import pyarrow.parquet as pq

    from hmpc.data import LeRobotDataset
    from hmpc.rollout import EnvSpec, PolicySpec, collect

    env = EnvSpec("point_maze", {"image_size": 32})

    def run(name, episodes, workers):
        return collect(env, PolicySpec(), tmp_path / name, episodes=episodes, steps=10,
                       workers=workers, flush_every=3, progress=False)

    a, b = run("a", 7, 0), run("b", 7, 2)
    da, db = LeRobotDataset(a), LeRobotDataset(b)
    assert da.num_episodes == db.num_episodes == 7
    for i in range(7):
        ea, eb = da.load_episode(i), db.load_episode(i)
        assert np.array_equal(ea.state, eb.state) and np.array_equal(ea.action, eb.action)
        assert_frames_match(ea.pixels, eb.pixels, f"episode {i}")
    for data in sorted(a.glob("data/*/*.parquet")):
        assert pq.read_table(data).equals(pq.read_table(b / data.relative_to(a)))
    assert_same_files(a, b)
    run("c", 4, 2)  # as if killed after batches [0, 3) and [3, 4) ... (here: episodes=4)
    c = run("c", 7, 0)  # ... then resumed with another worker count: the same episodes
    dc = LeRobotDataset(c)
    assert dc.num_episodes == 7
    for key, stats in da.stats.items():  # pooled over other batches: equal up to rounding ...
        for name, value in stats.items():
            if name.startswith("q"):  # ... but quantiles, pooled as LeRobot does (count-weighted)
                assert np.all(np.array(dc.stats[key][name]) >= np.array(stats["min"])), key
                assert np.all(np.array(dc.stats[key][name]) <= np.array(stats["max"])), key
                continue
            np.testing.assert_allclose(dc.stats[key][name], value, rtol=1e-12, err_msg=key)
    for i in range(7):
        ea, ec = da.load_episode(i), dc.load_episode(i)
        assert np.array_equal(ea.state, ec.state) and np.array_equal(ea.action, ec.action)


def test_plan_writes_video_and_step_log(tmp_path, capsys):
    from hmpc.cli import plan as plan_cli

    overrides = ["env.image_size=32", "controller=oracle", "max_steps=4", "device=cpu",
                 "all_controllers.oracle.optimizer.population=8", f"output_dir={tmp_path}"]
    plan_cli.run(cfg("plan", overrides))
    steps = (tmp_path / "steps.jsonl").read_text().splitlines()
    episode = json.loads((tmp_path / "episode.json").read_text())
    assert len(steps) == episode["steps"] >= 1
    first = json.loads(steps[0])
    assert {"t", "action", "plan_ms", "cost", "fallback", "distance_after"} <= set(first)
    assert (tmp_path / "episode.mp4").stat().st_size > 0
    assert "oracle:" in capsys.readouterr().out
    err = run_expecting_error(plan_cli, "plan", ["controller=mcts", f"output_dir={tmp_path}"], capsys)
    assert "mcts" in err and "hierarchical" in err
