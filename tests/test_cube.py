"""The learned cube model (hmpc.cube_model), its controller (kind cube) and hmpc-cube."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import random_frames
from torch import nn

from hmpc.controllers import ControllerSpec, build_controller, check_spec_guardrails
from hmpc.cube_model import (
    CubeModel,
    camera_config,
    check_cube_env,
    cube_blob,
    ensemble_terms,
    fit_cube_model,
    load_cube_model,
    outside_box,
)
from hmpc.cube_mpc import CubeMPC
from hmpc.cube_overlay import SCALE, project
from hmpc.cube_readout import CubeReadout
from hmpc.episode_video import compose_frame
from hmpc.evaluate import EvalConfig, evaluate, observation_for
from hmpc.optimizers import CEM
from hmpc.rollout import EnvSpec
from robots import make_env


def test_cube_model_round_trip_and_the_controller_never_sees_the_cube(tiny_cube):
    model, folder, frames = tiny_cube
    loaded = load_cube_model(folder)
    s, a = torch.as_tensor(frames.state[:3]), torch.rand(3, 5, 4) * 2 - 1
    px = torch.as_tensor(frames.pixels[:3])
    with torch.no_grad():
        for fit, back in zip(model.members, loaded.members, strict=True):
            assert torch.equal(fit.rollout(s, a), back.rollout(s, a))
        read = loaded.read(px, s[:, :7])
        assert torch.equal(read, model.read(px, s[:, :7])) and torch.equal(read[:, :7], s[:, :7])
        assert torch.equal(read[:, 7:], loaded.readout(px, s[:, :4]))  # the cube pose, from the image
    assert len(loaded.members) == 2 and not loaded.readout.proprio
    spec = ControllerSpec(name="cube_cem", kind="cube", optimizer={"name": "cem", "iters": 2, "population": 16},
                          horizon=5, candidates=1)
    with pytest.raises(ValueError, match="hmpc-cube data="):
        build_controller(spec, None, 4, seed=0)
    ctrl = build_controller(spec, None, 4, seed=0, cube=loaded)
    assert isinstance(ctrl, CubeMPC)
    seen = observation_for(ctrl, {"pixels": frames.pixels[0], "state": frames.state[0]})  # the harness's cut
    assert set(seen) == {"pixels", "state"} and seen["state"].shape == (7,)  # proprioception, never the cube
    goal = observation_for(ctrl, {"pixels": frames.pixels[5], "state": frames.state[5]})
    ctrl.reset(seen, goal)
    with torch.no_grad():
        assert torch.equal(ctrl.goal, loaded.readout(torch.as_tensor(frames.pixels[5:6]),
                                                     torch.as_tensor(frames.state[5:6, :4]))[0, :3])
    action, info = ctrl.act(seen)
    assert action.shape == (4,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)
    assert not info["fallback"] and set(info["terms"]) == {"goal", "disagreement"}  # keep: off by default
    kept = build_controller(ControllerSpec(name="c", kind="cube", optimizer={"name": "cem", "iters": 1, "population": 8},
                                           horizon=3, cube={"keep": 20.0, "keep_margin": 0.1}), None, 4, seed=0, cube=loaded)  # fmt: skip
    kept.reset(seen, goal)
    assert kept.keep == 20.0 and "keep" in kept.act(seen)[1]["terms"]
    assert torch.allclose(kept.keep_box[0], torch.tensor([0.25, -0.3]))  # the table region grown by 0.1
    drawn = ctrl.plan_image()  # the video's third panel, drawn only when asked
    assert drawn.shape == (32 * SCALE, 32 * SCALE, 3) and "subgoal_image" not in info
    frame = compose_frame(seen["pixels"], goal["pixels"], drawn, "t=0", scale=3)
    assert frame.shape[1] == 3 * 32 * 3  # three panels of the same width
    with pytest.raises(ValueError, match="proprioception"):
        ctrl.act({"pixels": frames.pixels[0], "state": frames.state[0, :4]})


def test_a_readout_with_proprioception_reads_the_goal_with_the_goal_images(tiny_cube):
    _, _, frames = tiny_cube
    model = fit_cube_model(frames, ensemble=1, steps=2, horizon=3, hidden=16, readout_steps=3, proprio=True,
                           progress=False)
    ctrl = CubeMPC(model, CEM(iters=1, population=8, elites=2, seed=0), horizon=3)
    ctrl.reset({"pixels": frames.pixels[0], "state": frames.state[0, :7]},
               {"pixels": frames.pixels[5], "state": frames.state[5, :7]})
    px, goal_seen = torch.as_tensor(frames.pixels[5:6]), torch.as_tensor(frames.state[5:6, :4])
    with torch.no_grad():
        assert torch.equal(ctrl.goal, model.readout(px, goal_seen)[0, :3])  # the goal image's own hand
        assert not torch.equal(ctrl.goal, model.readout(px, torch.as_tensor(frames.state[0:1, :4]))[0, :3])


class _Fixed(nn.Module):
    """A 'member' whose rollout predicts the same state at every step."""

    def __init__(self, state: list[float]) -> None:
        super().__init__()
        self.state = torch.tensor(state)

    def rollout(self, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.state.expand(actions.shape[0], actions.shape[1], -1)


def _state(ee: tuple[float, float, float], cube: tuple[float, float, float]) -> list[float]:
    return [*ee, 0.08, 0.0, 0.0, 0.0, *cube, 0.0, 0.0, 0.0, 1.0]


def test_the_terms_are_the_staged_cost_and_the_members_spread():
    goal, s0, actions = torch.zeros(3), torch.zeros(1, 14), torch.zeros(2, 3, 4)
    far = _Fixed(_state((0, 0, 0), (0.3, 0.4, 0)))  # cube 0.5 from the goal, hand 0.5 from the cube
    holding = _Fixed(_state((0.3, 0.4, 0), (0.3, 0.4, 0)))  # the same cube, in the hand
    terms = ensemble_terms([far, holding], s0, actions, goal, reach=1.0, disagreement=2.0)
    assert torch.allclose(terms["goal"], torch.full((2,), 0.75))  # mean of 1.0 and 0.5
    worst = ensemble_terms([far, holding], s0, actions, goal, reach=1.0, disagreement=2.0, combine="max")
    assert torch.allclose(worst["goal"], torch.full((2,), 1.0))  # the worst member's: the cube not held
    with pytest.raises(ValueError, match=r"combine='median': use one of \['mean', 'max'\]"):
        ensemble_terms([far], s0, actions, goal, 1.0, 2.0, combine="median")
    with pytest.raises(ValueError, match="members one of"):
        ControllerSpec(name="c", kind="cube", cube={"reach": 1.0, "members": "median"})
    assert torch.allclose(terms["disagreement"], torch.zeros(2))  # both put the cube at the same place
    moved = _Fixed(_state((0, 0, 0), (0.5, 0.4, 0)))  # 0.2 m further in x
    terms = ensemble_terms([far, moved], s0, actions, goal, reach=0.0, disagreement=2.0)
    assert torch.allclose(terms["goal"], torch.full((2,), (0.5 + math.hypot(0.5, 0.4)) / 2))
    assert torch.allclose(terms["disagreement"], torch.full((2,), 2.0 * 0.2 / math.sqrt(2)))  # std of {0, 0.2}
    assert set(ensemble_terms([far], s0, actions, goal, 1.0, 2.0)) == {"goal"}  # one member: no spread


def test_the_keep_term_is_how_far_the_predicted_cube_leaves_the_box():
    box = (torch.tensor([0.3, -0.25]), torch.tensor([0.7, 0.25]))
    xy = torch.tensor([[0.5, 0.0], [0.2, 0.4], [0.75, -0.3], [0.3, 0.25]])
    assert torch.allclose(outside_box(xy, *box), torch.tensor([0.0, 0.1 + 0.15, 0.05 + 0.05, 0.0]))
    goal, s0, actions = torch.zeros(3), torch.zeros(1, 14), torch.zeros(2, 3, 4)
    inside, out = _Fixed(_state((0, 0, 0), (0.5, 0.0, 0))), _Fixed(_state((0, 0, 0), (0.2, 0.4, 0)))
    terms = ensemble_terms([inside, out], s0, actions, goal, 1.0, 0.0, keep=20.0, keep_box=box)
    assert torch.allclose(terms["keep"], torch.full((2,), 20.0 * 0.25 / 2))  # the members' mean
    assert "keep" not in ensemble_terms([inside, out], s0, actions, goal, 1.0, 0.0)
    with pytest.raises(ValueError, match="keep=1.0 needs keep_box"):
        ensemble_terms([inside], s0, actions, goal, 1.0, 0.0, keep=1.0)
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"\{{'keep': {bad}\}} not accepted"):
            ControllerSpec(name="c", kind="cube", cube={"keep": bad})
    with pytest.raises(ValueError, match=r"\{'disagreement': nan, 'keep_margin': -0.1\}"):
        CubeMPC(CubeModel(CubeReadout(), [inside]), CEM(seed=0), disagreement=float("nan"), keep_margin=-0.1)


class _Pusher(nn.Module):
    """An exact 'member': the hand pushes the cube 5 cm along x per unit of action x."""

    def rollout(self, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        s = s0.expand(actions.shape[0], -1).clone()
        out = []
        for t in range(actions.shape[1]):
            s = s.clone()
            s[:, 7] = s[:, 7] + 0.05 * actions[:, t, 0]
            s[:, 0] = s[:, 7]  # the hand stays at the cube: reach costs nothing
            out.append(s)
        return torch.stack(out, 1)


def test_keep_stops_the_planner_pushing_the_cube_out_of_reach():
    """A goal past the table region: without ``keep`` the plan pushes the cube on toward it;
    with it, the cube stays within the region grown by ``keep_margin`` (0.70 m in x)."""
    s0 = torch.tensor([_state((0.66, 0.0, 0.02), (0.66, 0.0, 0.02))])
    ends = {}
    for keep in (0.0, 20.0):
        model = CubeModel(CubeReadout(), [_Pusher()])
        ctrl = CubeMPC(model, CEM(iters=6, population=256, elites=16, seed=0), horizon=6, keep=keep)
        ctrl.read = lambda obs: s0  # the test's own state: no image
        ctrl.reset({}, {})
        ctrl.goal = torch.tensor([1.0, 0.0, 0.02])
        action, _ = ctrl.act({"pixels": np.zeros((8, 8, 3), np.uint8)})
        plan = torch.cat([torch.as_tensor(action)[None], ctrl.plan[:-1]])[None]  # the plan just made
        ends[keep] = float(_Pusher().rollout(s0, plan)[0, :, 7].max())  # the furthest the cube goes
    assert ends[0.0] > 0.85  # straight on toward the goal
    assert 0.69 < ends[20.0] < 0.72  # held at the box's edge


def test_nan_dynamics_fall_back_to_the_previous_plan(tiny_cube):
    _, folder, frames = tiny_cube
    broken = load_cube_model(folder)
    ctrl = CubeMPC(broken, CEM(iters=2, population=8, elites=2, seed=0), horizon=4)
    obs = [{"pixels": frames.pixels[i], "state": frames.state[i, :7]} for i in range(3)]
    ctrl.reset(obs[0], obs[2])
    _, info = ctrl.act(obs[0])
    assert not info["fallback"]
    planned = ctrl.plan[0].numpy().copy()  # the plan's action for the next step
    with torch.no_grad():
        broken.members[1].net[-1].bias.fill_(float("nan"))
    action, info = ctrl.act(obs[1])
    assert info["fallback"] and np.array_equal(action, np.clip(planned, -1, 1).astype(np.float32))


def test_hmpc_eval_refuses_a_cube_model_it_cannot_use(tiny_cube, tmp_path):
    _, folder, _ = tiny_cube
    spec = ControllerSpec(name="cube_cem", kind="cube", optimizer={"name": "cem", "iters": 1, "population": 8},
                          horizon=3, candidates=1, cube_model=str(folder))
    cfg = EvalConfig(episodes=2, max_steps=2, workers=0, videos=1, device="cpu")
    info = evaluate(EnvSpec("panda_pick_place", {"image_size": 32}), None, [spec], cfg, tmp_path / "ok", progress=False)
    rows = info["per_episode"]
    assert len(rows) == 2 and all(r["error"] is None for r in rows), rows
    assert all(r["actions_out_of_bounds"] == 0 for r in rows)
    assert all(r["object_out_of_reach"] is False for r in rows)  # the env's word, recorded per episode
    assert info["aggregated"]["cube_cem"]["object_out_of_reach"] == 0
    with pytest.raises(ValueError, match="env.image_size=32"):  # another image size
        evaluate(EnvSpec("panda_pick_place", {"image_size": 48}), None, [spec], cfg, tmp_path / "big", progress=False)
    side = EnvSpec("panda_pick_place", {"image_size": 32, "camera_view": "side"})  # another camera
    with pytest.raises(ValueError, match="camera_view"):
        evaluate(side, None, [spec], cfg, tmp_path / "side", progress=False)
    with pytest.raises(ValueError, match="fit for env 'panda_pick_place', not 'panda_push'"):
        evaluate(EnvSpec("panda_push", {"image_size": 32}), None, [spec], cfg, tmp_path / "push", progress=False)
    unset = ControllerSpec(name="cube_cem", kind="cube")
    with pytest.raises(ValueError, match="controllers.cube_cem.cube_model is not set"):
        evaluate(EnvSpec("panda_pick_place", {"image_size": 32}), None, [unset], cfg, tmp_path / "x", progress=False)
    missing = ControllerSpec(name="cube_cem", kind="cube", cube_model=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="controllers.cube_cem.cube_model=.*nowhere"):
        evaluate(EnvSpec("panda_pick_place", {"image_size": 32}), None, [missing], cfg, tmp_path / "y", progress=False)
    guarded = ControllerSpec(name="cube_cem", kind="cube", weights={"guardrails": {"ood": 1.0}})
    with pytest.raises(ValueError, match="cube.disagreement"):
        check_spec_guardrails(guarded, None)
    for bad in ({"reach": -1.0}, {"raech": 1.0}, {"disagreement": True}):
        with pytest.raises(ValueError, match="controllers.c.cube: "):
            ControllerSpec(name="c", kind="cube", cube=bad)
    env = make_env("panda_pick_place", image_size=32)
    try:
        check_cube_env(cube_blob(folder), env, "panda_pick_place")  # the env it was fit for: accepted
    finally:
        env.close()


def test_hmpc_cube_then_hmpc_plan(tmp_path, capsys):
    from hydra import compose, initialize_config_module

    from hmpc.cli import collect as collect_cli
    from hmpc.cli import cube as cube_cli
    from hmpc.cli import plan as plan_cli

    def cfg(name: str, overrides: list[str]):
        with initialize_config_module("configs", version_base="1.3"):
            return compose(name, overrides=overrides)

    data = tmp_path / "data"
    collect_cli.run(cfg("collect", ["env=panda_pick_place", "env.image_size=32", "episodes=2", "steps=12",
                                    "workers=0", f"output_dir={data}"]))
    small = ["env.image_size=32", "device=cpu", "ensemble=2", "steps=4", "horizon=3", "hidden=16", "readout_steps=4"]
    cube_cli.run(cfg("cube", [*small, f"data={data}", f"held_out={data}", f"output_dir={tmp_path / 'cube'}"]))
    config = json.loads((tmp_path / "cube" / "cube.json").read_text())
    assert config["env"] == "panda_pick_place" and config["image_size"] == 32 and config["ensemble"] == 2
    assert set(config["held_out_error_over_copying"]) == {"end effector", "gripper", "cube"}
    assert "cube model: " in capsys.readouterr().out
    plan_cli.run(cfg("plan", ["env=panda_pick_place", "env.image_size=32", "device=cpu", "controller=cube_cem",
                              f"cube_model={tmp_path / 'cube'}", "max_steps=2", "atlas_size=0",
                              "all_controllers.cube_cem.optimizer.population=8", f"output_dir={tmp_path / 'plan'}"]))
    episode = json.loads((tmp_path / "plan" / "episode.json").read_text())
    assert episode["controller"] == "cube_cem" and episode["steps"] >= 1
    with pytest.raises(SystemExit) as e:  # the dataset's images and the env's size differ: says which
        cube_cli.run(cfg("cube", [*small[1:], f"data={data}", f"output_dir={tmp_path / 'c2'}"]))
    assert e.value.code == 2 and "env.image_size=32" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # collected in another env: says which
        cube_cli.run(cfg("cube", [*small, "env=panda_push", f"data={data}", f"output_dir={tmp_path / 'c3'}"]))
    assert e.value.code == 2 and "set env=panda_pick_place" in capsys.readouterr().err


def test_hmpc_cube_refuses_data_of_a_task_without_a_cube(tmp_path, capsys):
    """Maze data: the error says hmpc-cube reads Panda cube data (not `set env=point_maze`)."""
    from helpers import square_episode
    from hydra import compose, initialize_config_module

    from hmpc.cli import cube as cube_cli
    from hmpc.data.writer import write_episodes

    write_episodes(tmp_path / "maze", [square_episode(0)], fps=10, robot_type="point_maze")
    with initialize_config_module("configs", version_base="1.3"):
        cfg = compose("cube", overrides=[f"data={tmp_path / 'maze'}", f"output_dir={tmp_path / 'cube'}"])
    with pytest.raises(SystemExit) as e:
        cube_cli.run(cfg)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "'point_maze'" in err and "panda_push or panda_pick_place" in err
    assert "set env=" not in err and "hmpc-collect env=panda_pick_place" in err


@pytest.mark.parametrize("view", ["front", "side"])
def test_the_overlay_projects_the_cube_where_the_camera_renders_it(view):
    env = make_env("panda_pick_place", image_size=64, camera_view=view)
    try:
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            px = obs["pixels"].astype(int)
            rows, cols = np.nonzero((px[..., 0] > 150) & (px[..., 1] < 80) & (px[..., 2] < 80))  # the red cube
            col, row = project(obs["state"][7:10], camera_config(env.unwrapped.camera), 64)[0]
            # the visible faces' centroid sits a little above the cube's centre
            assert len(rows) > 5 and abs(col - cols.mean()) < 1.0 and abs(row - rows.mean()) < 1.5
    finally:
        env.close()
    behind = {"eye": (0, 0, 0), "target": (1, 0, 0), "up": (0, 0, 1), "fov_deg": 40.0}
    assert np.isnan(project(np.array([-1.0, 0, 0]), behind, 64)).all()


def test_readout_batches_gather_across_datasets():
    from types import SimpleNamespace

    from hmpc.cube_readout import _batch

    def src(n, first):
        return SimpleNamespace(num_frames=n, pixels=np.arange(first, first + n)[:, None].repeat(3, 1),
                               state=np.arange(first, first + n, dtype=np.float32)[:, None])

    px, st = _batch([src(3, 0), src(4, 100)], np.array([0, 2, 3, 6]))
    np.testing.assert_array_equal(st[:, 0], [0, 2, 100, 103])
    np.testing.assert_array_equal(px[:, 0], [0, 2, 100, 103])


def test_fit_cube_model_refuses_readout_data_of_another_task(tiny_cube):
    from helpers import random_frames as frames_of

    _, _, frames = tiny_cube
    reach = frames_of("panda_reach", 1, 4, image_size=32)
    with pytest.raises(ValueError, match=r"readout_extra\[0\]"):
        fit_cube_model(frames, ensemble=1, steps=1, horizon=2, hidden=8, readout_steps=1, progress=False,
                       readout_extra=[reach])


def test_readout_data_changes_the_readout_and_its_share_is_checked(tiny_cube):
    from hmpc.cube_readout import train_readout

    _, _, frames = tiny_cube
    extra = random_frames("panda_pick_place", 3, 6, image_size=32)
    plain = train_readout(frames, 3, 0, proprio=False, progress=False)
    mixed = train_readout(frames, 3, 0, proprio=False, progress=False, extra=[extra])
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), mixed.state_dict().values(),
                                                      strict=True))
    again = train_readout(frames, 3, 0, proprio=False, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), again.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="readout_share=0.001"):
        fit_cube_model(frames, ensemble=1, steps=1, horizon=2, hidden=8, readout_steps=1, progress=False,
                       readout_extra=[extra], readout_share=0.001)
