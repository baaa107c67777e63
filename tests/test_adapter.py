"""GymnasiumAdapter: any installed gymnasium env with rgb_array rendering and Box actions
becomes an hmpc task env (pixels + state, actions in [-1, 1], goal keys in info)."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from robots import make_env, register_gymnasium_envs
from robots.adapter import GymnasiumAdapter


class _Slider(gymnasium.Env):
    """A goal-conditioned 1-D slider with actions in [0, 2] (1 = stand still) and 48 px frames."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.action_space = spaces.Box(0.0, 2.0, (1,), np.float32)
        box = spaces.Box(-10, 10, (1,), np.float32)
        self.observation_space = spaces.Dict(
            {"observation": spaces.Box(-10, 10, (2,), np.float32), "achieved_goal": box,
             "desired_goal": box}
        )  # fmt: skip
        self.x, self.goal, self.last = 0.0, 3.0, None

    def _obs(self):
        return {"observation": np.array([self.x, 0.0], np.float32),
                "achieved_goal": np.array([self.x], np.float32),
                "desired_goal": np.array([self.goal], np.float32)}  # fmt: skip

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1, 1))
        return self._obs(), {}

    def step(self, action):
        self.last = float(action[0])
        self.x += self.last - 1.0
        success = abs(self.x - self.goal) < 0.1
        return self._obs(), -abs(self.x - self.goal), False, False, {"is_success": success}

    def render(self):
        img = np.zeros((48, 48, 3), np.uint8)
        img[:, int(np.clip(24 + 4 * self.x, 0, 47))] = 255
        return img


gymnasium.register("test/Slider-v0", entry_point=_Slider, max_episode_steps=20)


def test_goal_env_is_adapted():
    env = make_env("gymnasium", id="test/Slider-v0", image_size=16)
    try:
        obs, info = env.reset(seed=0)
        assert obs["pixels"].shape == (16, 16, 3) and obs["pixels"].dtype == np.uint8
        assert obs["state"].shape == (2,)  # the goal is not in the controller's state
        assert info["distance"] == pytest.approx(abs(obs["state"][0] - 3.0), abs=1e-6)
        x0 = obs["state"][0]
        obs, _, _, _, info = env.step(np.array([1.0]))  # +1 maps to the env's 2.0: move +1
        assert env.unwrapped.env.unwrapped.last == pytest.approx(2.0)
        assert obs["state"][0] == pytest.approx(x0 + 1.0) and info["action_clipped"] is False
        _, _, _, _, info = env.step(np.array([np.nan]))  # nan -> 0 -> the env's 1.0: stand still
        assert env.unwrapped.env.unwrapped.last == pytest.approx(1.0) and info["action_clipped"]
        with pytest.raises(ValueError, match="shape"):
            env.step(np.zeros(2))
        assert env.max_episode_steps == 20
    finally:
        env.close()


def test_goal_image_from_options_and_hmpc_env_through_the_adapter():
    register_gymnasium_envs()
    env = GymnasiumAdapter("hmpc/PointMaze-v0", kwargs={"image_size": 32}, image_size=32)
    native = make_env("point_maze", image_size=32)
    try:
        _, ninfo = native.reset(seed=4)
        obs, info = env.reset(seed=4, options={"goal_pixels": ninfo["goal_pixels"]})
        np.testing.assert_array_equal(info["goal_pixels"], ninfo["goal_pixels"])
        np.testing.assert_array_equal(obs["pixels"], native.render())
        a = np.array([0.5, -0.5], np.float32)
        obs, reward, _, _, info = env.step(a)
        nobs, nreward, _, _, ninfo = native.step(a)
        np.testing.assert_array_equal(obs["state"], nobs["state"])
        assert reward == nreward and info["is_success"] == ninfo["is_success"]
        assert info["distance"] == pytest.approx(ninfo["distance"])
    finally:
        env.close()
        native.close()


def test_adapter_errors():
    with pytest.raises(ValueError, match="env.id='nope/Nope-v0'"):
        GymnasiumAdapter("nope/Nope-v0")
    gymnasium.register("test/Discrete-v0", entry_point=lambda render_mode=None: _DiscreteEnv())
    with pytest.raises(ValueError, match="Box"):
        GymnasiumAdapter("test/Discrete-v0")


class _DiscreteEnv(gymnasium.Env):
    action_space = spaces.Discrete(2)
    observation_space = spaces.Box(0, 1, (1,), np.float32)


def test_adapted_env_passes_check_env():
    import warnings

    from gymnasium.utils.env_checker import check_env

    env = make_env("gymnasium", id="test/Slider-v0", image_size=16)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(infinity|render fps).*")
            check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_env_kwargs_override_as_the_readme_writes_it():
    """`env=gymnasium env.id=... 'env.kwargs={...}'` composes (kwargs defaults to null) and reaches make."""
    from hydra import compose, initialize_config_module

    from hmpc.cli.common import env_spec

    register_gymnasium_envs()
    with initialize_config_module("configs", version_base="1.3"):
        cfg = compose("collect", overrides=["env=gymnasium", "env.id=hmpc/PointMaze-v0", "env.image_size=24",
                                            "env.kwargs={image_size: 24, layout: open}"])
    env, native, umaze = env_spec(cfg).make(), make_env("point_maze", layout="open"), make_env("point_maze")
    try:
        assert env.observation_space["pixels"].shape == (24, 24, 3)
        inner = env.unwrapped.env.unwrapped
        assert (inner.n_rows, inner.n_cols) == (native.unwrapped.n_rows, native.unwrapped.n_cols)
        assert (inner.n_rows, inner.n_cols) != (umaze.unwrapped.n_rows, umaze.unwrapped.n_cols)
    finally:
        for e in (env, native, umaze):
            e.close()
