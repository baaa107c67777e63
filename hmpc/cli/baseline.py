"""hmpc-baseline: train the model-free RLlib PPO baseline from pixels on the same task.

    hmpc-baseline env=point_maze ppo.env_steps=20000 output_dir=runs/ppo
    hmpc-eval checkpoint=runs/wm/checkpoint 'controllers=[hierarchical,flat_gd,rllib]' \\
        controllers.rllib.policy=runs/ppo

Give it the world model's interaction budget: ``ppo.env_steps`` = episodes x steps of the
``hmpc-collect`` run the model was trained on. Needs ``pip install -e ".[rllib]"``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import CONFIG_PATH, env_spec, plain, report_user_errors, typed


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.rl_baseline import PPOConfig, train_ppo

    spec = env_spec(cfg)
    spec.check()
    ppo = typed(PPOConfig, plain(cfg.ppo), "baseline.yaml: ppo")
    out = train_ppo(spec, ppo, cfg.output_dir, address=cfg.address)
    print(f"policy: {out} (policy.safetensors + policy.json, curve: {out}/ppo_returns.png)")
    print(f"evaluate it: hmpc-eval ... 'controllers=[...,rllib]' controllers.rllib.policy={out}")


@hydra.main(config_path=CONFIG_PATH, config_name="baseline", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
