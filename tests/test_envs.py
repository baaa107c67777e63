"""The contract every registered task env keeps (robots/base.py): gymnasium API, determinism,
exact state save/restore for the oracle, and bad actions that never corrupt the simulator."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robots import ENV_REGISTRY, make_env, register_gymnasium_envs
from robots.registry import env_name

TASKS = sorted(name for name, (env_id, _) in ENV_REGISTRY.items() if env_id is not None)
SMALL = {"image_size": 24}


@pytest.fixture(params=TASKS)
def env(request):
    e = make_env(request.param, **SMALL)
    yield e
    e.close()


def test_check_env(env):
    with warnings.catch_warnings():
        # The only expected warning: state bounds are infinite (positions, velocities).
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env, skip_render_check=True)


def test_contract_keys_and_types(env):
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for key in ("goal_pixels", "goal_state", "is_success", "distance", "path_distance"):
        assert key in info, key
    assert info["goal_pixels"].shape == obs["pixels"].shape
    assert isinstance(info["is_success"], bool) and np.isfinite(info["distance"])
    goal = env.goal_observation()
    np.testing.assert_array_equal(goal["pixels"], info["goal_pixels"])
    assert env.action_space.low.min() == -1 and env.action_space.high.max() == 1
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and isinstance(info["action_clipped"], bool)
    assert reward == pytest.approx(-info["distance"])


def _rollout(e, seed: int, actions: np.ndarray):
    obs, info = e.reset(seed=seed)
    frames, states = [obs["pixels"]], [obs["state"]]
    for a in actions:
        obs, *_ = e.step(a)
        frames.append(obs["pixels"])
        states.append(obs["state"])
    return info["goal_pixels"], np.stack(frames), np.stack(states), e.get_state()


def test_same_seed_same_actions_identical(env):
    actions = np.random.default_rng(0).uniform(-1, 1, (12, *env.action_space.shape))
    first = _rollout(env, 3, actions)
    second = _rollout(env, 3, actions)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    other = make_env(_name(env), **SMALL)
    try:  # a fresh env (another PyBullet client) gives the same episode too
        for a, b in zip(first, _rollout(other, 3, actions), strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        other.close()


def _name(e) -> str:
    name = env_name(e)
    assert name is not None, type(e)
    return name


def test_clone_set_state_replays_exactly(env):
    """The oracle's model: a clone synced with set_state follows the real env step for step."""
    rng = np.random.default_rng(1)
    env.reset(seed=5)
    for a in rng.uniform(-1, 1, (6, *env.action_space.shape)):
        env.step(a)
    sim = env.clone()
    try:
        saved = env.get_state()
        sim.set_state(saved)
        np.testing.assert_array_equal(sim.get_state(), saved)
        np.testing.assert_array_equal(sim.render(), env.render())
        for a in rng.uniform(-1.5, 1.5, (8, *env.action_space.shape)):
            _, _, _, _, info = env.step(a)
            distance, path = sim.simulate(a)
            assert distance == info["distance"] and path == info["path_distance"]
        np.testing.assert_array_equal(sim.get_state(), env.get_state())
        env.set_state(saved)  # and the real env can go back too
        np.testing.assert_array_equal(env.get_state(), saved)
    finally:
        sim.close()


def test_bad_actions_never_corrupt_the_simulator(env):
    env.reset(seed=2)
    dim = env.action_space.shape[0]
    for bad in (np.full(dim, np.nan), np.full(dim, np.inf), np.full(dim, -1e9)):
        obs, _, _, _, info = env.step(bad)
        assert info["action_clipped"] is True
        assert np.all(np.isfinite(obs["state"])) and np.all(np.isfinite(env.get_state()))
    for wrong in (np.zeros(dim + 1), np.zeros((2, dim)), np.zeros(0)):
        with pytest.raises(ValueError, match="shape"):
            env.step(wrong)
    obs, _, _, _, info = env.step(np.zeros(dim))
    assert info["action_clipped"] is False and np.all(np.isfinite(obs["state"]))


def test_gymnasium_make_every_task():
    register_gymnasium_envs()
    for name in TASKS:
        env_id = ENV_REGISTRY[name][0]
        e = gymnasium.make(env_id, **SMALL)
        try:
            obs, info = e.reset(seed=0)
            assert obs["pixels"].shape == (24, 24, 3) and "is_success" in info
        finally:
            e.close()


def test_camera_is_configurable(env):
    name = _name(env)
    base = dict(env.camera.__dict__)
    moved = make_env(name, image_size=16, camera={"fov_deg": base["fov_deg"] * 0.5})
    try:
        obs, _ = moved.reset(seed=0)
        assert obs["pixels"].shape == (16, 16, 3)
    finally:
        moved.close()
    with pytest.raises(ValueError, match="camera"):
        make_env(name, image_size=16, camera={"zoom": 2})
