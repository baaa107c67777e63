"""Model-free baseline: RLlib PPO from pixels on the same task, evaluated as one more controller.

The question it answers: with the same number of environment steps as the world model's
dataset, does a model-free goal-conditioned policy do better than planning? The policy sees
exactly what the planners see: the camera image and the goal image (stacked as 6 channels,
scaled to [0, 1]); never the state. Training reward: the env's ``-distance`` times
``reward_scale`` plus ``success_bonus`` on success, which also ends the episode (RLlib needs a
reward; the planners use none).

After training, the policy network's weights are exported to ``policy.safetensors`` with its
architecture in ``policy.json``; evaluation rebuilds the same RLlib module from that JSON and
loads the weights, so no pickle is ever read (RLlib's own checkpoints are pickles). RLlib is an
optional extra: ``pip install -e ".[rllib]"``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from hmpc.checkpoint import atomic_write_json
from hmpc.mpc import Controller, Obs, safe_action
from hmpc.plots import plot_returns
from hmpc.rollout import EnvSpec

POLICY_WEIGHTS = "policy.safetensors"
POLICY_CONFIG = "policy.json"


def _require_rllib() -> None:
    try:
        import ray.rllib  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"the RLlib baseline needs ray[rllib] ({err}); install it with "
            '`pip install -e ".[rllib]"`'
        ) from err


class GoalImageEnv(gymnasium.Env):
    """An hmpc task env seen as RLlib sees it: obs float32 (H, W, 6) = [camera, goal] / 255.

    Args:
        config: ``{"env": EnvSpec name, "kwargs": {...}, "reward_scale": float,
            "success_bonus": float}`` (RLlib passes env configs as dicts).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.env = EnvSpec(config["env"], dict(config.get("kwargs", {}))).make()
        self.reward_scale = float(config.get("reward_scale", 0.1))
        self.success_bonus = float(config.get("success_bonus", 10.0))
        h, w, _ = self.env.observation_space["pixels"].shape
        self.observation_space = spaces.Box(0.0, 1.0, (h, w, 6), np.float32)
        self.action_space = self.env.action_space
        self._goal = np.zeros((h, w, 3), np.uint8)

    def _obs(self, pixels: np.ndarray) -> np.ndarray:
        return goal_stack(pixels, self._goal)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._goal = info["goal_pixels"]
        return self._obs(obs["pixels"]), {}

    def step(self, action):
        obs, reward, _, truncated, info = self.env.step(action)
        success = bool(info["is_success"])
        reward = self.reward_scale * float(reward) + (self.success_bonus if success else 0.0)
        return self._obs(obs["pixels"]), reward, success, truncated, {"is_success": success}

    def close(self) -> None:
        self.env.close()


def goal_stack(pixels: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 camera + (H, W, 3) uint8 goal -> float32 (H, W, 6) in [0, 1]."""
    return np.concatenate([pixels, goal], axis=-1).astype(np.float32) / 255.0


@dataclass(frozen=True)
class PPOConfig:
    """PPO settings; ``env_steps`` is the interaction budget (match the world model's dataset:
    episodes x steps of ``hmpc-collect``)."""

    env_steps: int = 20_000
    train_batch: int = 1000
    minibatch: int = 128
    epochs: int = 4
    lr: float = 3e-4
    gamma: float = 0.97
    entropy_coeff: float = 0.0
    conv_filters: list = field(default_factory=lambda: [[16, [8, 8], 4], [32, [4, 4], 2],
                                                        [64, [8, 8], 1]])  # fmt: skip
    fcnet_hiddens: list = field(default_factory=lambda: [128])
    env_runners: int = 1
    reward_scale: float = 0.1
    success_bonus: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("env_steps", "train_batch", "minibatch", "epochs"):
            if getattr(self, key) < 1:
                raise ValueError(f"ppo.{key}={getattr(self, key)} must be >= 1")
        if self.minibatch > self.train_batch:
            raise ValueError(f"ppo.minibatch={self.minibatch} exceeds ppo.train_batch="
                             f"{self.train_batch}; lower it")  # fmt: skip


def _model_config(cfg: PPOConfig) -> dict[str, Any]:
    return {"conv_filters": cfg.conv_filters, "conv_activation": "relu",
            "fcnet_hiddens": cfg.fcnet_hiddens, "vf_share_layers": True}  # fmt: skip


def train_ppo(
    env_spec: EnvSpec, cfg: PPOConfig, out_dir: str | Path, address: str | None = None,
    progress: bool = True,
) -> Path:
    """Train PPO for ``cfg.env_steps`` env steps; export the policy to ``out_dir``.

    Writes ``policy.safetensors``, ``policy.json`` (architecture, spaces, env, budget, the
    return curve) and ``ppo_returns.png``. Returns ``out_dir``.
    """
    _require_rllib()
    from ray.rllib.algorithms.ppo import PPOConfig as RLlibPPO
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from hmpc.parallel import init_ray

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_config = {"env": env_spec.name, "kwargs": dict(env_spec.kwargs),
                  "reward_scale": cfg.reward_scale, "success_bonus": cfg.success_bonus}  # fmt: skip
    probe = GoalImageEnv(env_config)
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    init_ray(address)
    register_env("hmpc_goal_image", GoalImageEnv)
    algo_cfg = (
        RLlibPPO()
        .environment("hmpc_goal_image", env_config=env_config)
        .env_runners(num_env_runners=cfg.env_runners,
                     rollout_fragment_length=max(1, cfg.train_batch // max(cfg.env_runners, 1)))  # fmt: skip
        .training(train_batch_size_per_learner=cfg.train_batch, minibatch_size=cfg.minibatch,
                  num_epochs=cfg.epochs, lr=cfg.lr, gamma=cfg.gamma,
                  entropy_coeff=cfg.entropy_coeff)  # fmt: skip
        .rl_module(model_config=DefaultModelConfig(**_model_config(cfg)))
        .debugging(seed=cfg.seed)
    )
    algo = algo_cfg.build_algo()
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    try:
        bar = tqdm(total=cfg.env_steps, desc="ppo env steps", disable=not progress)
        steps = 0
        while steps < cfg.env_steps:
            result = algo.train()
            runners = result.get("env_runners", {})
            new = int(runners.get("num_env_steps_sampled_lifetime", steps))
            bar.update(new - steps)
            steps = new
            ret = runners.get("episode_return_mean")
            if ret is not None and np.isfinite(ret):
                curve.append((steps, float(ret)))
                bar.set_postfix(ret=f"{ret:.2f}")
        bar.close()
        module = algo.get_module()
        weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    finally:
        algo.stop()
    save_file(weights, str(out / POLICY_WEIGHTS))
    atomic_write_json(out / POLICY_CONFIG, {
        "algorithm": "PPO (RLlib)", "env": env_spec.name, "env_kwargs": dict(env_spec.kwargs),
        "observation_shape": list(obs_space.shape), "action_dim": int(act_space.shape[0]),
        "model_config": _model_config(cfg), "ppo": asdict(cfg), "env_steps": steps,
        "seconds": time.perf_counter() - t0, "returns": curve,
    })  # fmt: skip
    plot_returns(curve, out / "ppo_returns.png")
    return out


def load_policy(folder: str | Path, device: torch.device | str = "cpu") -> tuple[Any, dict]:
    """Rebuild the exported RLlib module from ``policy.json`` and load ``policy.safetensors``."""
    _require_rllib()
    import json

    from ray.rllib.algorithms.ppo.ppo_catalog import PPOCatalog
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from safetensors.torch import load_file

    from hmpc.security import check_safetensors_file

    folder = Path(folder)
    cfg_path, weights_path = folder / POLICY_CONFIG, folder / POLICY_WEIGHTS
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; train a policy with `hmpc-baseline "
                                    f"output_dir={folder}`")  # fmt: skip
    meta = json.loads(cfg_path.read_text())
    check_safetensors_file(weights_path)
    module = DefaultPPOTorchRLModule(
        observation_space=spaces.Box(0.0, 1.0, tuple(meta["observation_shape"]), np.float32),
        action_space=spaces.Box(-1.0, 1.0, (meta["action_dim"],), np.float32),
        inference_only=True, model_config=meta["model_config"], catalog_class=PPOCatalog,
    )  # fmt: skip
    state = load_file(str(weights_path))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{weights_path} lacks weights {missing[:5]}...; it does not match "
                         f"{cfg_path}")  # fmt: skip
    return module.to(device).eval(), meta


class RLlibController(Controller):
    """The exported PPO policy as a controller: deterministic (mean) action, never planning."""

    def __init__(self, policy: str | Path, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.module, self.meta = load_policy(policy, self.device)
        self.action_dim = int(self.meta["action_dim"])

    def reset(self, obs: Obs, goal_obs: Obs) -> None:
        expected = tuple(self.meta["observation_shape"][:2]) + (3,)
        if goal_obs["pixels"].shape != expected:
            raise ValueError(f"goal image has shape {goal_obs['pixels'].shape}; the policy was "
                             f"trained on {expected}: use the same env image_size")  # fmt: skip
        self.goal = goal_obs["pixels"]

    @torch.no_grad()
    def act(self, obs: Obs) -> tuple[np.ndarray, dict[str, Any]]:
        t0 = time.perf_counter()
        x = torch.as_tensor(goal_stack(obs["pixels"], self.goal), device=self.device)[None]
        out = self.module.forward_inference({"obs": x})
        mean = out["action_dist_inputs"][0, : self.action_dim]  # [mean, log_std]
        action, fell_back = safe_action(mean, None)
        return action, {"plan_ms": 1000 * (time.perf_counter() - t0), "fallback": fell_back}
