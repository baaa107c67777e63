"""Exploration policies: shapes, bounds, seeding, temporal correlation, registry errors."""

from __future__ import annotations

import numpy as np
import pytest

from skills import (
    POLICY_REGISTRY,
    CorrelatedNoisePolicy,
    Policy,
    UniformPolicy,
    make_policy,
)

NOISE = ["correlated", "uniform"]  # the env-free policies


def test_registry_lists_noise_policies_and_experts():
    assert set(NOISE) < set(POLICY_REGISTRY) and "waypoints" in POLICY_REGISTRY


def _actions(policy: Policy, seed: int, n: int) -> np.ndarray:
    policy.reset(seed)
    return np.stack([policy.act({}) for _ in range(n)])


def _lag1_autocorr(x: np.ndarray) -> float:
    """Mean over dimensions of the lag-1 autocorrelation of x (T, A)."""
    x = x - x.mean(axis=0)
    return float(np.mean((x[1:] * x[:-1]).sum(0) / (x * x).sum(0)))


@pytest.mark.parametrize("name", NOISE)
def test_shapes_bounds_and_protocol(name):
    policy = make_policy(name, 3, low=-0.5, high=[0.5, 1.0, 2.0])
    assert isinstance(policy, Policy)
    acts = _actions(policy, 0, 500)
    assert acts.shape == (500, 3) and acts.dtype == np.float32
    assert np.all(acts >= -0.5) and np.all(acts <= np.array([0.5, 1.0, 2.0], np.float32))


@pytest.mark.parametrize("name", NOISE)
def test_seeded_determinism(name):
    policy = make_policy(name, 2)
    np.testing.assert_array_equal(_actions(policy, 5, 50), _actions(policy, 5, 50))
    assert not np.array_equal(_actions(policy, 5, 50), _actions(policy, 6, 50))


def test_ou_actions_are_correlated_uniform_are_not():
    ou = _actions(CorrelatedNoisePolicy(2), 0, 4000)
    uni = _actions(UniformPolicy(2), 0, 4000)
    assert _lag1_autocorr(ou) > 0.5
    assert abs(_lag1_autocorr(uni)) < 0.2


def test_ou_spreads_over_the_action_box():
    acts = _actions(CorrelatedNoisePolicy(1), 1, 4000)
    assert acts.min() < -0.9 and acts.max() > 0.9 and abs(acts.mean()) < 0.2


def test_errors():
    with pytest.raises(ValueError, match=r"unknown policy 'brownian'.*correlated.*uniform"):
        make_policy("brownian", 2)
    with pytest.raises(ValueError, match="sigmaa"):
        make_policy("correlated", 2, sigmaa=0.1)
    with pytest.raises(ValueError, match="theta"):
        CorrelatedNoisePolicy(2, theta=1.5)
    with pytest.raises(ValueError, match="action_dim"):
        UniformPolicy(0)
    with pytest.raises(ValueError, match="low < high"):
        UniformPolicy(2, low=1.0, high=-1.0)
    with pytest.raises(ValueError, match="pass the env"):
        make_policy("waypoints", 2)


def test_waypoint_policy_explores_a_large_maze_farther_than_noise():
    """Waypoint following covers many more cells of the large maze than OU noise, and with
    to_goal it is an expert that reaches the goal."""
    from robots import PointMazeEnv

    env = PointMazeEnv(layout="large", image_size=8, max_episode_steps=400)
    try:
        visited = {}
        for name, kwargs in (("waypoints", {}), ("correlated", {})):
            policy = make_policy(name, env, **kwargs)
            obs, _ = env.reset(seed=0)
            policy.reset(0)
            cells = set()
            for _ in range(300):
                obs, *_ = env.step(policy.act(obs))
                cells.add(env.cell_of(obs["state"][:2]))
            visited[name] = len(cells)
        assert visited["waypoints"] > 1.5 * visited["correlated"], visited
        expert = make_policy("waypoints", env, noise=0.0, to_goal=True)
        wins = 0
        for seed in range(5):
            obs, info = env.reset(seed=seed)
            expert.reset(seed)
            for _ in range(400):
                obs, _, _, trunc, info = env.step(expert.act(obs))
                if info["is_success"] or trunc:
                    break
            wins += info["is_success"]
        assert wins == 5
    finally:
        env.close()


def test_mixture_draws_one_component_per_episode_from_the_seed():
    from robots.point_maze import PointMazeEnv

    env = PointMazeEnv(layout="umaze", image_size=16)
    comps = [{"name": "waypoints", "weight": 3, "noise": 0.5}, {"name": "uniform", "weight": 1}]
    mix = make_policy("mixture", env, components=comps)
    picks = []
    for seed in range(200):
        mix.reset(seed)
        picks.append(mix.current)
    share = np.mean(np.asarray(picks) == 0)
    assert 0.65 < share < 0.85, share  # weight 3 : 1
    runs = []
    for _ in range(2):  # same seed, same component and actions
        obs, _ = env.reset(seed=7)
        mix.reset(7)
        runs.append([mix.act(obs) for _ in range(5)])
    assert mix.names[mix.current] in ("waypoints", "uniform")
    np.testing.assert_array_equal(np.stack(runs[0]), np.stack(runs[1]))


@pytest.mark.parametrize("comps, match", [
    ([], "empty"),
    ([{"weight": 1}], "no 'name'"),
    ([{"name": "uniform", "weight": 0}], "weight"),
    ([{"name": "nope"}], "unknown policy"),
    ([{"name": "mixture", "components": []}], "cannot contain"),
])
def test_mixture_config_errors_name_the_component(comps, match):
    from robots.point_maze import PointMazeEnv

    with pytest.raises(ValueError, match=match):
        make_policy("mixture", PointMazeEnv(layout="umaze", image_size=16), components=comps)


def test_pick_place_mixture_preset_draws_failed_grasps():
    """configs/policy/panda_pick_place_mixture.yaml builds, and about a third of its episodes run
    the expert whose first grasp misses on purpose (component weight 1 of 3, miss_prob 0.7)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from robots.panda import PandaPickPlaceEnv

    cfg = OmegaConf.load(Path(__file__).parents[1] / "configs/policy/panda_pick_place_mixture.yaml")
    cfg = OmegaConf.to_container(cfg)
    env = PandaPickPlaceEnv(image_size=8)
    try:
        mix = make_policy(cfg.pop("name"), env, **cfg)
        env.reset(seed=0)
        misses = 0
        for seed in range(300):
            mix.reset(seed)
            misses += bool(getattr(mix.policies[mix.current], "missing", False))
        assert 0.15 < misses / 300 < 0.32, misses  # expected 0.7 / 3 = 0.23
    finally:
        env.close()
