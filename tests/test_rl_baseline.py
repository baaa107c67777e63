"""RLlib PPO baseline: the goal-image env RLlib trains on, a tiny training run exported to
safetensors (never pickle), and its row beside the other controllers in results.md."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hmpc.controllers import ControllerSpec, build_controller
from hmpc.evaluate import EvalConfig, evaluate
from hmpc.rl_baseline import GoalImageEnv, PPOConfig, load_policy, train_ppo
from hmpc.rollout import EnvSpec

ENV = {"env": "point_maze", "kwargs": {"layout": "umaze", "image_size": 64}}


def test_goal_image_env_stacks_goal_and_rewards_success():
    env = GoalImageEnv({**ENV, "reward_scale": 0.5, "success_bonus": 7.0})
    try:
        obs, _ = env.reset(seed=0, options={"start": (1.5, 3.5), "goal": (1.6, 3.5)})
        assert obs.shape == (64, 64, 6) and obs.dtype == np.float32 and obs.max() <= 1.0
        goal = env.env.unwrapped.goal_observation()["pixels"]
        np.testing.assert_allclose(obs[..., 3:], goal / 255.0, atol=1e-6)
        obs, reward, terminated, _, info = env.step(np.zeros(2, np.float32))
        assert terminated and info["is_success"]
        assert reward == pytest.approx(7.0 - 0.5 * 0.1, abs=1e-6)  # distance 0.1 cells
        env.reset(seed=0, options={"start": (1.5, 3.5), "goal": (1.5, 1.5)})
        _, reward, terminated, _, _ = env.step(np.zeros(2, np.float32))
        assert not terminated and reward == pytest.approx(-0.5 * 2.0)
    finally:
        env.close()


@pytest.mark.ray
def test_tiny_ppo_run_exports_a_policy_that_evaluates_beside_the_planners(tmp_path):
    cfg = PPOConfig(env_steps=200, train_batch=100, minibatch=50, epochs=1)
    out = train_ppo(EnvSpec("point_maze", ENV["kwargs"]), cfg, tmp_path / "ppo", progress=False)
    files = {p.name for p in out.iterdir()}
    assert {"policy.safetensors", "policy.json", "ppo_returns.png"} <= files
    assert not any(name.endswith((".pkl", ".pt")) for name in files)
    meta = json.loads((out / "policy.json").read_text())
    assert meta["env_steps"] >= 200 and meta["action_dim"] == 2

    module, _ = load_policy(out)  # rebuilt from JSON + safetensors
    assert sum(p.numel() for p in module.parameters()) > 0
    ctrl = build_controller(ControllerSpec("rllib", "rllib", policy=str(out)), None, 2, 0)
    img = np.zeros((64, 64, 3), np.uint8)
    ctrl.reset({"pixels": img}, {"pixels": img})
    action, info = ctrl.act({"pixels": img})
    assert action.shape == (2,) and np.all(np.abs(action) <= 1) and not info["fallback"]

    specs = [ControllerSpec("rllib", "rllib", policy=str(out)), ControllerSpec("random", "random")]
    evaluate(EnvSpec("point_maze", ENV["kwargs"]), None, specs,
             EvalConfig(episodes=2, max_steps=10, workers=0, videos=0), tmp_path / "eval",
             progress=False)  # fmt: skip
    table = (tmp_path / "eval" / "results.md").read_text()
    assert "| rllib |" in table and "| random |" in table


def test_rllib_controller_errors(tmp_path):
    with pytest.raises(ValueError, match="needs a trained policy"):
        build_controller(ControllerSpec("rl", "rllib"), None, 2, 0)
    with pytest.raises(FileNotFoundError, match="hmpc-baseline"):
        load_policy(tmp_path)
