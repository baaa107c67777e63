"""policy=cube_planner: the cube planner as a data-collection behaviour (DAgger for the readout)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from hmpc.cube_model import load_cube_model
from robots import make_env


def test_cube_planner_episodes_train_the_readout_and_reuse_the_dynamics(tiny_cube, tmp_path, capsys):
    """policy=cube_planner collects the planner's own episodes (seeded, in bounds, the cube's state
    never passed to the planner); hmpc-cube trains the readout on them too (readout_data) and keeps
    the dynamics of dynamics_from bit for bit."""
    from hydra import compose, initialize_config_module

    from hmpc.cli import collect as collect_cli
    from hmpc.cli import cube as cube_cli
    from skills.registry import make_policy

    model, folder, _ = tiny_cube
    env = make_env("panda_pick_place", image_size=32)
    try:
        policy = make_policy("cube_planner", env, cube_model=str(folder), population=8, iters=1, elites=2)
        runs = []
        for _ in range(2):
            obs, _ = env.reset(seed=3)
            policy.reset(3)
            runs.append(np.stack([policy.act(obs) for _ in range(3)]))
        np.testing.assert_array_equal(runs[0], runs[1])
        assert runs[0].dtype == np.float32 and np.all(np.abs(runs[0]) <= 1)
        seen = []
        policy.controller.read = lambda obs: seen.append(obs["state"].shape) or model.read(  # record what it reads
            torch.as_tensor(obs["pixels"])[None], torch.as_tensor(obs["state"])[None])
        policy.act(obs)
        assert seen == [(7,)]  # proprioception only
    finally:
        env.close()

    def cfg(name: str, overrides: list[str]):
        with initialize_config_module("configs", version_base="1.3"):
            return compose(name, overrides=overrides)

    data, planner = tmp_path / "data", tmp_path / "planner"
    base = ["env=panda_pick_place", "env.image_size=32", "episodes=2", "steps=6", "workers=0"]
    collect_cli.run(cfg("collect", [*base, f"output_dir={data}"]))
    collect_cli.run(cfg("collect", [*base, "policy=cube_planner", f"policy.cube_model={folder}",
                                    "policy.population=8", "policy.iters=1", "policy.elites=2", "seed=9",
                                    f"output_dir={planner}"]))
    out = tmp_path / "cube"
    cube_cli.run(cfg("cube", ["env.image_size=32", "device=cpu", "readout_steps=4", f"data={data}",
                              f"readout_data=[{planner}]", f"dynamics_from={folder}", f"output_dir={out}"]))
    config = json.loads((out / "cube.json").read_text())
    assert config["readout_data"] == [str(planner)] and config["dynamics_from"] == str(folder)
    refit = load_cube_model(out)
    for a, b in zip(refit.members, model.members, strict=True):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb), ka

    # dynamics_data: the dynamics are fit anew on the planner's episodes too; not with dynamics_from
    small = ["env.image_size=32", "device=cpu", "readout_steps=2", "steps=3", "horizon=2", "hidden=8", "ensemble=2",
             f"data={data}", f"dynamics_data=[{planner}]"]
    cube_cli.run(cfg("cube", [*small, f"readout_data=[{planner}]", f"output_dir={tmp_path / 'dyn'}"]))
    config = json.loads((tmp_path / "dyn" / "cube.json").read_text())
    assert config["dynamics_data"] == [str(planner)] and config["readout_data"] == [str(planner)]
    with pytest.raises(SystemExit):
        cube_cli.run(cfg("cube", [*small, f"dynamics_from={folder}", f"output_dir={tmp_path / 'both'}"]))
    assert "fits new ones on more data: set one of them" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cube_cli.run(cfg("cube", [*small[:-1], f"dynamics_data={planner}", f"output_dir={tmp_path / 'str'}"]))
    assert f"dynamics_data={planner}: give a list, dynamics_data=[{planner}]" in capsys.readouterr().err


def test_cube_planner_refuses_a_model_it_cannot_use_and_passes_its_objective_on(tiny_cube):
    from skills.registry import make_policy

    _, folder, _ = tiny_cube
    env = make_env("panda_pick_place", image_size=64)
    try:
        with pytest.raises(ValueError, match="32-pixel images"):
            make_policy("cube_planner", env, cube_model=str(folder))
        with pytest.raises(ValueError, match=r"\{'keep': -1.0\} must be finite numbers >= 0"):
            make_policy("cube_planner", env, cube_model=str(folder), keep=-1.0)
    finally:
        env.close()
    env = make_env("panda_pick_place", image_size=32)
    try:
        policy = make_policy("cube_planner", env, cube_model=str(folder), population=8, iters=1, keep=20.0)
        env.reset(seed=0)
        policy.reset(0)
        assert policy.controller.keep == 20.0 and policy.controller.keep_box is not None  # passed on
    finally:
        env.close()


def test_cube_planner_ships_its_model_so_workers_need_no_shared_filesystem(tiny_cube, tmp_path, monkeypatch):
    """ship_policy reads policy.cube_model in the driver (a mixture's components too); a policy
    built from the shipped arguments acts as one built from the folder after the folder is gone,
    and hmpc-collect's workers get the shipped model, not the path."""
    import hmpc.rollout
    from hmpc.rollout import EnvSpec, PolicySpec, collect
    from skills.registry import make_policy, ship_policy

    _, folder, _ = tiny_cube
    copy = shutil.copytree(folder, tmp_path / "moved")
    args = {"cube_model": str(copy), "population": 8, "iters": 1, "elites": 2}
    shipped = ship_policy("cube_planner", args)
    assert isinstance(shipped["cube_model"], dict) and args["cube_model"] == str(copy)  # args untouched
    assert ship_policy("cube_planner", shipped)["cube_model"] is shipped["cube_model"]  # shipped once only
    mix = ship_policy("mixture", {"components": [{"name": "cube_planner", "weight": 2, **args}, {"name": "uniform"}]})
    assert isinstance(mix["components"][0]["cube_model"], dict) and mix["components"][0]["weight"] == 2
    assert mix["components"][1] == {"name": "uniform"}
    with pytest.raises(FileNotFoundError, match="policy.cube_model="):
        ship_policy("cube_planner", {"cube_model": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match=r"policy.components\[1\].cube_model="):
        ship_policy("mixture", {"components": [{"name": "uniform"}, {"name": "cube_planner", "cube_model": "nowhere"}]})

    env = make_env("panda_pick_place", image_size=32)
    try:
        runs = []
        for kwargs in (args, shipped):
            policy = make_policy("cube_planner", env, **kwargs)
            shutil.rmtree(copy, ignore_errors=True)  # the shipped policy never reads the folder
            obs, _ = env.reset(seed=5)
            policy.reset(5)
            runs.append(np.stack([policy.act(obs) for _ in range(2)]))
        np.testing.assert_array_equal(runs[0], runs[1])
    finally:
        env.close()

    seen = []
    setup = hmpc.rollout._collect_setup
    monkeypatch.setattr(hmpc.rollout, "_collect_setup", lambda e, p: seen.append(p.kwargs) or setup(e, p))
    collect(EnvSpec("panda_pick_place", {"image_size": 32}), PolicySpec("cube_planner", {**args, "cube_model": str(folder)}),
            tmp_path / "data", episodes=1, steps=2, workers=0, progress=False)
    assert len(seen) == 1 and isinstance(seen[0]["cube_model"], dict)


def test_dynamics_extra_fits_the_members_on_both_datasets_episode_by_episode(tiny_cube):
    """fit_cube_model(dynamics_extra=...) fits the members on state_frames([frames, *extra]): the
    episodes of both back to back (no window across them), pixels not copied."""
    from hmpc.cube_model import fit_cube_model, fit_members
    from hmpc.data.windows import WindowSampler, state_frames

    _, _, frames = tiny_cube
    more = replace(frames, state=frames.state[::-1].copy(), action=frames.action[::-1].copy())
    both = state_frames([frames, more])
    n = frames.num_frames
    assert both.pixels.shape == (2 * n, 0, 0, 3) and both.num_episodes == 2 * frames.num_episodes
    np.testing.assert_array_equal(both.state, np.concatenate([frames.state, more.state]))
    np.testing.assert_array_equal(both.episode_starts, np.concatenate([frames.episode_starts, n + frames.episode_starts]))
    np.testing.assert_array_equal(both.episode_index[n:], frames.num_episodes + frames.episode_index)
    starts = WindowSampler(both, 4).starts
    assert all(both.episode_index[s] == both.episode_index[s + 3] for s in starts)  # inside one episode
    with pytest.raises(ValueError, match="sizes differ"):
        state_frames([frames, replace(frames, state=frames.state[:, :7])])

    sizes = {"ensemble": 1, "steps": 3, "horizon": 2, "hidden": 8, "readout_steps": 1, "progress": False}
    fit = fit_cube_model(frames, dynamics_extra=[more], **sizes)
    alone = fit_cube_model(frames, **sizes)
    ref = fit_members(both, 1, 3, 2, 8, progress=False)[0]
    for (k, a), b in zip(fit.members[0].state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert not torch.equal(fit.members[0].net[0].weight, alone.members[0].net[0].weight)
    with pytest.raises(ValueError, match="not both"):
        fit_cube_model(frames, members=list(alone.members), dynamics_extra=[more], **sizes)
