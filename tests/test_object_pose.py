"""Object pose read out of keypoints, its dynamics, the pose controller and its plumbing."""

import math
import shutil

import numpy as np
import pytest
import torch
from helpers import random_frames

from hmpc.agent_mask import AgentMask
from hmpc.checkpoint import save_checkpoint
from hmpc.controllers import ControllerSpec, build_controller
from hmpc.evaluate import EvalConfig, evaluate, observation_for
from hmpc.object_pose import (
    check_pose_env,
    find_object,
    fit_pose_model,
    load_pose_model,
    pose_blob,
    pose_errors,
    save_pose_model,
    weights_digest,
)
from hmpc.optimizers import CEM
from hmpc.pose_dynamics import PoseDynamics, RelativeDynamics, pose_distance, rotate
from hmpc.pose_mpc import PoseMPC
from hmpc.rollout import EnvSpec
from hmpc.world_model import WorldModelSpec, build_world_model


def _rigid_keypoints(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keypoints and vectors (n, 5, 2): 0-2 sit on one body (0.026 apart: more than copies, less
    than the cluster tolerance), 3 copies 0, 4 wanders elsewhere; the body's place (n, 2) and heading (n,)."""
    g = torch.Generator().manual_seed(seed)
    place = torch.rand(n, 2, generator=g) * 1.2 - 0.6
    theta = torch.rand(n, generator=g) * 2 * math.pi - math.pi
    arms = 0.015 * torch.tensor([[1.0, 0.0], [-0.5, 0.75 ** 0.5], [-0.5, -(0.75 ** 0.5)]])
    cos, sin = theta.cos(), theta.sin()
    points = torch.stack([place + rotate(arms[i].expand(n, 2), cos, sin) for i in range(3)], 1)
    offsets = torch.tensor([0.0, 1.0, -2.0])  # each member's vector turns with the body from its own angle
    vectors = torch.stack([torch.stack([(theta + o).cos(), (theta + o).sin()], -1) for o in offsets], 1)
    points = torch.cat([points, points[:, :1] + 0.001, torch.rand(n, 1, 2, generator=g) * 2 - 1], 1)
    vectors = torch.cat([vectors, vectors[:, :1], torch.randn(n, 1, 2, generator=g)], 1)
    return points, vectors, place, theta


def test_the_object_is_found_and_its_pose_read_without_labels():
    points, vectors, place, theta = _rigid_keypoints()
    readout = find_object(points, vectors, sign=-1.0)
    assert readout.members == (0, 1, 2)  # 3 is a copy of 0, 4 is not on the body
    assert readout.offsets == pytest.approx((0.0, 1.0, -2.0), abs=1e-5)
    got_place, got_angle = readout(points, vectors)
    assert torch.allclose(got_place, points[:, :3].mean(1))
    assert torch.allclose(torch.cos(got_angle + theta), torch.ones_like(theta), atol=1e-5)  # sign -1: -theta
    with pytest.raises(ValueError, match="no two distinct keypoints"):
        find_object(points[:, 3:], vectors[:, 3:], 1.0)
    with pytest.raises(ValueError, match=r"in \[0, 5\)"):
        find_object(points, vectors, 1.0, members=[0, 7])


def test_relative_dynamics_is_the_same_at_every_place_and_heading():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = RelativeDynamics(32, torch.ones(6), rotate=True)
    g = torch.Generator().manual_seed(0)
    s = torch.cat([torch.rand(4, 4, generator=g), torch.nn.functional.normalize(torch.randn(4, 2, generator=g), dim=-1)], 1)
    a = torch.rand(4, 5, 2, generator=g) * 2 - 1
    phi, shift = 0.7, torch.tensor([0.3, -0.2])
    c, si = torch.full((4,), math.cos(phi)), torch.full((4,), math.sin(phi))

    def move(x: torch.Tensor) -> torch.Tensor:  # rotate by phi about the origin, then shift, (4, 6)
        head = torch.atan2(x[:, 5], x[:, 4]) + phi
        return torch.cat([rotate(x[:, :2], c, si) + shift, rotate(x[:, 2:4], c, si) + shift,
                          head.cos()[:, None], head.sin()[:, None]], 1)

    turned = torch.stack([rotate(a[:, t], c, si) for t in range(5)], 1)
    with torch.no_grad():
        direct = torch.stack([move(x) for x in model.rollout(s, a).unbind(1)], 1)
        moved = model.rollout(move(s), turned)
    assert torch.allclose(direct, moved, atol=1e-5)


def test_pose_dynamics_units_and_distance():
    dyn = PoseDynamics(16, torch.ones(6), np.array([[2.0, 0.0, -1.0], [0.0, -2.0, 1.0]]), grid_scale=0.9)
    with torch.no_grad():
        dyn.log_shrink.fill_(math.log(1.1))
    world = torch.tensor([[0.2, 0.7], [0.5, 0.5]])
    assert torch.allclose(dyn.to_world(dyn.to_image(world)), world, atol=1e-6)
    assert torch.allclose(dyn.to_image(torch.tensor([0.5, 0.5])), torch.zeros(2), atol=1e-6)  # the centre
    goal = torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0, 0.0])
    turned = torch.tensor([0.0, 0.0, 0.5, 0.5, -1.0, 0.0])  # half a turn: (2 g)^2
    moved = torch.tensor([0.0, 0.0, 0.8, 0.9, 1.0, 0.0])  # 0.3, 0.4 away: 0.25
    assert pose_distance(turned, goal, 0.1).item() == pytest.approx(0.04, abs=1e-6)
    assert pose_distance(moved, goal, 0.1).item() == pytest.approx(0.25, abs=1e-6)


def test_pose_errors_on_known_readouts():
    rng = np.random.default_rng(0)
    n = 400
    theta = rng.uniform(-np.pi, np.pi, n)
    true = np.stack([rng.uniform(0, 1, n), rng.uniform(0, 1, n), np.cos(theta), np.sin(theta)], 1)
    # read 180 deg off (a constant offset costs nothing), the place 2 cm ahead of the true point
    # on the object and in other units (an affine map costs nothing)
    place = 1.1 * (true[:, :2] + 0.02 * true[:, 2:4]) + 0.3
    assert pose_errors(theta + np.pi, place, true) == pytest.approx((0.0, 0.0), abs=1e-6)
    wobble = np.where(np.arange(n) % 2 == 0, 5.0, -5.0)  # +-5 deg about the offset: 5 deg rms
    angle = np.angle(np.exp(1j * (theta + np.radians(wobble) + 3.0)))  # wrapped across +-pi too
    noise = np.zeros((n, 2))
    noise[:, 0] = np.where(np.arange(n) % 4 < 2, 0.01, -0.01)  # 1 cm, uncorrelated with the pose
    angle_deg, place_cm = pose_errors(angle, place + noise, true)
    assert angle_deg == pytest.approx(5.0, abs=1e-6)
    assert place_cm == pytest.approx(1.0, abs=0.05)
    angle_deg, _ = pose_errors(rng.uniform(-np.pi, np.pi, n), place, true)  # a heading read at random
    assert angle_deg > 90


@pytest.fixture(scope="module")
def tiny_pose(tmp_path_factory):
    """A tiny random keypoint checkpoint with a pose model fit on a few Push-T frames, saved
    where hmpc-eval looks for it (<checkpoint>/pose)."""
    from robots import make_env

    spec = WorldModelSpec(image_size=64, latent_dim=18, widths=(4, 8), hidden=16, state_dim=2,
                          keypoints=4, keypoint_vectors=1)
    model = build_world_model(spec, seed=0)
    env = make_env("push_t")
    image_map, mask = env.unwrapped.image_map(), AgentMask.from_value(env.unwrapped.agent_mask())
    env.close()
    pose = fit_pose_model(model, random_frames("push_t", 3, 12), image_map, mask, 0.05, steps=20, horizon=4,
                          hidden=16, members=[0, 1], progress=False)
    ckpt = tmp_path_factory.mktemp("pose") / "ckpt"
    save_checkpoint(ckpt, model, {})
    save_pose_model(ckpt / "pose", pose, {"steps": 20, "checkpoint_sha256": weights_digest(ckpt)})
    return model, pose, ckpt


def test_pose_model_round_trip_and_controller(tiny_pose):
    model, pose, ckpt = tiny_pose
    assert pose.readout.members == (0, 1) and pose.mask is not None and pose.gyration == 0.05
    loaded = load_pose_model(ckpt / "pose", model)
    s, a = torch.rand(3, 6), torch.rand(3, 5, 2) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.dynamics.rollout(s, a), pose.dynamics.rollout(s, a))
    assert loaded.readout == pose.readout and loaded.mask == pose.mask and loaded.gyration == 0.05
    spec = ControllerSpec(name="pose_cem", kind="pose", optimizer={"name": "cem", "iters": 2, "population": 16},
                          horizon=6, candidates=1, pose={"agent_weight": 0.3, "smoothness": 0.0})
    with pytest.raises(ValueError, match="hmpc-pose checkpoint="):
        build_controller(spec, model, 2, seed=0)
    ctrl = build_controller(spec, model, 2, seed=0, pose=loaded)
    assert isinstance(ctrl, PoseMPC)
    frames = random_frames("push_t", 1, 2)
    seen = observation_for(ctrl, {"pixels": frames.pixels[0], "state": frames.state[0]})  # the harness's cut
    assert set(seen) == {"pixels", "state"} and seen["state"].shape == (2,)  # the pusher only, never the T
    obs = {"pixels": frames.pixels[0], "state": frames.state[0, :2]}
    ctrl.reset(obs, {"pixels": frames.pixels[1], "state": frames.state[1, :2]})
    action, info = ctrl.act(obs)
    assert action.shape == (2,) and np.all(np.abs(action) <= 1) and not info["fallback"]
    assert set(info["terms"]) == {"goal", "agent"}


def test_pose_goal_modes_score_the_horizon_as_configured(tiny_pose):
    model, pose, ckpt = tiny_pose
    frames = random_frames("push_t", 1, 2)
    obs = [{"pixels": frames.pixels[i], "state": frames.state[i, :2]} for i in range(2)]
    s = PoseMPC(pose, CEM(seed=0), horizon=5).read(obs[0])
    actions = torch.rand(3, 5, 2) * 2 - 1
    with torch.no_grad():
        dyn = pose.dynamics
        per_step = pose_distance(dyn.world_state(dyn.rollout(s.expand(3, -1), actions)),
                                 dyn.world_state(PoseMPC(pose, CEM(seed=0)).read(obs[1]))[0], pose.gyration)
        goal = {}
        for mode in ("final", "sum", "mixed"):
            ctrl = PoseMPC(pose, CEM(seed=0), horizon=5, goal_mode=mode, goal_mix=0.5)
            ctrl.reset(obs[0], obs[1])
            goal[mode] = ctrl.cost_terms(s, actions)["goal"]
    assert torch.allclose(goal["final"], per_step[:, -1]) and torch.allclose(goal["sum"], per_step.mean(1))
    assert torch.allclose(goal["mixed"], per_step[:, -1] + 0.5 * per_step.mean(1))
    assert PoseMPC(pose, CEM(seed=0)).goal_mode == "final"  # the default: see hmpc/pose_mpc.py
    with pytest.raises(ValueError, match="goal_mode='last'"):
        PoseMPC(pose, CEM(seed=0), goal_mode="last")
    for bad in ({"goal_mode": "last"}, {"goal_mix": -1.0}, {"agent_weight": "high"}):
        with pytest.raises(ValueError, match=f"controllers.p.pose: .*{next(iter(bad))}"):
            ControllerSpec(name="p", kind="pose", pose=bad)
    assert ControllerSpec(name="p", kind="pose", pose={"goal_mode": "sum", "goal_mix": 0.0}).pose["goal_mode"] == "sum"


def test_nan_dynamics_fall_back_to_the_previous_plan(tiny_pose):
    model, pose, ckpt = tiny_pose
    broken = load_pose_model(ckpt / "pose", model)
    ctrl = PoseMPC(broken, CEM(iters=2, population=8, elites=2, seed=0), horizon=4)
    frames = random_frames("push_t", 1, 3)
    obs = [{"pixels": frames.pixels[i], "state": frames.state[i, :2]} for i in range(3)]
    ctrl.reset(obs[0], obs[2])
    first, info = ctrl.act(obs[0])
    assert not info["fallback"]
    planned = ctrl.plan[0].numpy().copy()  # the plan's action for the next step
    with torch.no_grad():
        broken.dynamics.inner.net[-1].bias.fill_(float("nan"))
    action, info = ctrl.act(obs[1])
    assert info["fallback"] and np.array_equal(action, np.clip(planned, -1, 1).astype(np.float32))
    assert np.all(np.isfinite(action))


def test_hmpc_eval_finds_the_pose_model_next_to_the_checkpoint(tiny_pose, tmp_path):
    model, _, ckpt = tiny_pose
    spec = ControllerSpec(name="pose_cem", kind="pose", optimizer={"name": "cem", "iters": 1, "population": 8},
                          horizon=4, candidates=1)
    env = EnvSpec("push_t", {"goal_mode": "push", "goal_push_steps": 5})
    info = evaluate(env, str(ckpt), [spec], EvalConfig(episodes=2, max_steps=3, workers=0, videos=0, device="cpu"),
                    tmp_path, progress=False)
    rows = info["per_episode"]
    assert len(rows) == 2 and all(r["error"] is None for r in rows), rows
    cfg = EvalConfig(episodes=1, max_steps=2, workers=0, videos=0, device="cpu")
    bare = save_checkpoint(tmp_path / "bare", model, {})  # no pose model: refused before any episode
    with pytest.raises(FileNotFoundError, match="hmpc-pose checkpoint="):
        evaluate(env, str(bare), [spec], cfg, tmp_path / "bare_eval", progress=False)
    stale = save_checkpoint(tmp_path / "stale", build_world_model(model.spec, seed=1), {})
    shutil.copytree(ckpt / "pose", stale / "pose")  # fit on other weights: refused too
    with pytest.raises(ValueError, match="refit it"):
        evaluate(env, str(stale), [spec], cfg, tmp_path / "stale_eval", progress=False)
    with pytest.raises(ValueError, match="controllers.pose_cem.pose"):
        ControllerSpec(name="pose_cem", kind="pose", pose={"agent_wieght": 0.3})
    wider = EnvSpec("push_t", {"goal_mode": "push", "arena_size": 1.2})  # another camera map: refused
    with pytest.raises(ValueError, match="camera map"):
        evaluate(wider, str(ckpt), [spec], cfg, tmp_path / "wider_eval", progress=False)
    blob = pose_blob(ckpt / "pose")
    blob["config"]["env"] = "push_t"
    maze = EnvSpec("point_maze").make()
    try:
        with pytest.raises(ValueError, match="fit for env 'push_t', not 'point_maze'"):
            check_pose_env(blob, maze, "point_maze")
    finally:
        maze.close()


def test_hmpc_pose_then_hmpc_plan(tmp_path, capsys):
    import json

    from hydra import compose, initialize_config_module

    from hmpc.cli import collect as collect_cli
    from hmpc.cli import plan as plan_cli
    from hmpc.cli import pose as pose_cli

    def cfg(name: str, overrides: list[str]):
        with initialize_config_module("configs", version_base="1.3"):
            return compose(name, overrides=overrides)

    data = tmp_path / "data"
    collect_cli.run(cfg("collect", ["env=push_t", "env.image_size=32", "episodes=3", "steps=12", "workers=0",
                                    f"output_dir={data}"]))
    spec = WorldModelSpec(image_size=32, latent_dim=18, widths=(4, 8), hidden=16, state_dim=2,
                          keypoints=4, keypoint_vectors=1)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_world_model(spec, seed=0), {"dataset": {"root": str(data)}})
    common = ["env.image_size=32", "device=cpu", f"checkpoint={ckpt}"]
    pose_cli.run(cfg("pose", [*common, "steps=5", "horizon=3", "hidden=16", "members=[0,1]"]))
    assert json.loads((ckpt / "pose" / "pose.json").read_text())["readout"]["members"] == [0, 1]
    assert "pose model: " in capsys.readouterr().out
    plan_cli.run(cfg("plan", ["env=push_t", *common, "controller=pose_cem", "max_steps=3", "atlas_size=0",
                              "all_controllers.pose_cem.optimizer.population=8", f"output_dir={tmp_path / 'plan'}"]))
    episode = json.loads((tmp_path / "plan" / "episode.json").read_text())
    assert episode["controller"] == "pose_cem" and episode["steps"] >= 1
    with pytest.raises(SystemExit) as e:  # a checkpoint without keypoint vectors says what to train
        plain = save_checkpoint(tmp_path / "plain", build_world_model(WorldModelSpec(image_size=32), seed=0), {})
        pose_cli.run(cfg("pose", ["device=cpu", f"checkpoint={plain}", f"data={data}"]))
    assert e.value.code == 2 and "model.keypoint_vectors >= 1" in capsys.readouterr().err


def test_hmpc_pose_reports_the_readout_against_the_logged_pose(tmp_path, capsys):
    """hmpc-pose fits without labels, then reads the logged pose only to say how far off the
    readout is; a random encoder's heading is read at random, and the warning says what to train."""
    import json

    from hydra import compose, initialize_config_module

    from hmpc.cli import collect as collect_cli
    from hmpc.cli import pose as pose_cli

    def cfg(name: str, overrides: list[str]):
        with initialize_config_module("configs", version_base="1.3"):
            return compose(name, overrides=overrides)

    data = tmp_path / "data"
    collect_cli.run(cfg("collect", ["env=push_t", "episodes=2", "steps=12", "workers=0", f"output_dir={data}"]))
    spec = WorldModelSpec(image_size=64, latent_dim=18, widths=(4, 8), hidden=16, state_dim=2,
                          keypoints=4, keypoint_vectors=1)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, build_world_model(spec, seed=0), {"dataset": {"root": str(data)}})
    small = [f"checkpoint={ckpt}", "steps=3", "horizon=2", "hidden=16", "members=[0,1]", "device=cpu"]
    pose_cli.run(cfg("pose", small))  # check_dims=auto: Push-T's object_pose_dims
    captured = capsys.readouterr()
    check = json.loads((ckpt / "pose" / "pose.json").read_text())["readout_check"]
    assert check["frames"] == 24 and check["angle_deg_rms"] > pose_cli.ANGLE_WARN_DEG  # a random encoder
    assert f"angle {check['angle_deg_rms']:.1f} deg rms" in captured.out
    assert "warning:" in captured.err and "model=push_t_pose" in captured.err
    pose_cli.run(cfg("pose", [*small, "check_dims=null", f"output_dir={tmp_path / 'p2'}"]))
    assert json.loads((tmp_path / "p2" / "pose.json").read_text())["readout_check"] is None
    assert "logged pose" not in capsys.readouterr().out
    for bad in ("[2,3,4,9]", "2"):  # a column the data lacks, not a list: refused before any fitting
        with pytest.raises(SystemExit) as e:
            pose_cli.run(cfg("pose", [*small, f"check_dims={bad}", f"output_dir={tmp_path / 'p3'}"]))
        assert e.value.code == 2 and "check_dims=" in capsys.readouterr().err
        assert not (tmp_path / "p3").exists()
