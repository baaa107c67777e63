"""Simulator-oracle MPC: plans in its own clone of the env, reads but never writes the real env."""

import numpy as np
import pytest
import torch

from hmpc.controllers import ControllerSpec, build_controller
from hmpc.costs import CostWeights
from hmpc.optimizers import CEM, GradientDescent
from hmpc.oracle import OracleMPC
from robots import make_env

START, GOAL = (1.5, 1.5), (1.5, 3.5)  # umaze: 2 cells apart through the spur, 6 cells around it


@pytest.fixture(scope="module")
def env():
    e = make_env("point_maze", layout="umaze", image_size=16, max_episode_steps=200)
    yield e
    e.close()


def test_simulate_matches_step_without_rendering(env):
    env.reset(seed=0, options={"start": START, "goal": GOAL})
    sim = env.unwrapped.clone()
    sim.set_state(env.unwrapped.get_state())
    for a in ([1.0, 0.3], [0.2, -1.0], [-0.5, 0.5]):
        _, _, _, _, info = env.step(np.array(a, np.float32))
        dist, path = sim.simulate(np.array(a, np.float32))
        assert dist == info["distance"] and path == info["path_distance"]
    np.testing.assert_array_equal(sim.get_state(), env.unwrapped.get_state())
    sim.close()


def test_oracle_reaches_the_goal_around_the_wall(env):
    spec = ControllerSpec(name="oracle", kind="oracle", horizon=8, candidates=1,
                          optimizer={"name": "mppi", "iters": 2, "population": 32, "temperature": 0.1})
    ctrl = build_controller(spec, None, 2, seed=0, env=env)
    obs, _ = env.reset(seed=0, options={"start": START, "goal": GOAL})
    ctrl.reset(obs, env.unwrapped.goal_observation())
    steps = 0
    while steps < 40:
        steps += 1
        before = env.unwrapped.get_state()
        a, info = ctrl.act(obs)
        np.testing.assert_array_equal(env.unwrapped.get_state(), before)  # planning wrote nothing
        assert np.all(np.abs(a) <= 1) and not info["fallback"]
        assert info["sim_steps"] == 2 * 32 * 8 + 8  # 2 populations + the scored final mean
        obs, _, _, _, step_info = env.step(a)
        if step_info["is_success"]:
            break
    assert step_info["is_success"], f"oracle ended {step_info['distance']:.2f} cells from the goal"
    assert steps <= 25  # about 6 cells at 0.25 cells/step
    ctrl.close()


def test_oracle_needs_env_and_a_sampling_optimizer(env):
    with pytest.raises(ValueError, match="env=env"):
        build_controller(ControllerSpec(name="o", kind="oracle"), None, 2, seed=0)
    with pytest.raises(ValueError, match="not differentiable"):
        OracleMPC(env, GradientDescent())
    with pytest.raises(ValueError, match="score"):
        OracleMPC(env, CEM(), score="geodesic")
    with pytest.raises(ValueError, match="get_state/set_state/clone"):
        OracleMPC(object(), CEM())


def test_oracle_scores_by_distance_where_there_is_no_maze():
    """Push-T has no maze (path_distance -1): a "path" oracle must rank by the task distance."""
    env = make_env("push_t", image_size=16)
    try:
        env.reset(seed=0)
        spec = ControllerSpec(name="o", kind="oracle", optimizer={"name": "cem", "iters": 1,
                              "population": 4, "elites": 2}, horizon=2, oracle_score="path")  # fmt: skip
        ctrl = build_controller(spec, None, 2, seed=0, env=env)
        try:
            assert ctrl.score_kind == "distance"
            obs, _ = env.reset(seed=0)
            ctrl.reset(obs, env.unwrapped.goal_observation())
            a, info = ctrl.act(obs)
            assert np.all(np.abs(a) <= 1) and not info["fallback"]
        finally:
            ctrl.close()
    finally:
        env.close()
    maze = make_env("point_maze", image_size=16)
    try:
        maze.reset(seed=0)
        ctrl = build_controller(spec, None, 2, seed=0, env=maze)
        assert ctrl.score_kind == "path"
        ctrl.close()
    finally:
        maze.close()


def test_staged_oracle_scores_the_reach_to_the_cube():
    """PandaPickPlace: moving the hand toward the cube leaves the cube's goal distance unchanged
    ("distance" cannot tell the two plans apart), but "staged" adds reach * |ee - cube| and
    prefers it; tasks without a cube keep their score."""
    env = make_env("panda_pick_place", image_size=16)
    try:
        env.reset(seed=0)
        task = env.unwrapped.task_state()
        toward = np.clip((task["cube"] - task["ee"]) / 0.03, -1, 1)  # one max_step per step at most
        plans = torch.tensor(np.array([[[*toward, 1.0]] * 2, [[*-toward, 1.0]] * 2]))  # (2, H=2, 4)
        state = env.unwrapped.get_state()
        costs = {}
        for score in ("distance", "staged"):
            ctrl = OracleMPC(env, CEM(), horizon=2, action_dim=4, score=score, reach=0.5,
                             weights=CostWeights(goal=1.0, goal_mode="final", smoothness=0.0))
            ctrl.reset(None, None)
            costs[score] = ctrl.score(state, plans).numpy()
            sim = ctrl.sim
            sim.set_state(state)
            for a in plans[0].numpy():
                sim.simulate(a)
            moved = sim.task_state()
            ctrl.close()
        np.testing.assert_array_equal(env.unwrapped.get_state(), state)  # the real env untouched
        assert costs["distance"][0] == pytest.approx(costs["distance"][1], abs=1e-9)
        expected = np.linalg.norm(moved["cube"] - moved["goal"]) + 0.5 * np.linalg.norm(moved["ee"] - moved["cube"])
        assert costs["staged"][0] == pytest.approx(expected, rel=1e-9)
        assert costs["staged"][0] < costs["staged"][1] - 0.02
    finally:
        env.close()
    maze = make_env("point_maze", image_size=16)
    try:
        maze.reset(seed=0)
        ctrl = OracleMPC(maze, CEM(), score="staged")
        assert ctrl.score_kind == "path"
        ctrl.close()
    finally:
        maze.close()
    with pytest.raises(ValueError, match="reach"):
        OracleMPC(maze, CEM(), score="staged", reach=-1.0)
