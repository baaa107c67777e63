"""hmpc-collect: reward-free exploration episodes into a LeRobot v3.0 dataset (Ray-parallel)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import CONFIG_PATH, env_spec, policy_spec, report_user_errors


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.rollout import collect

    root = collect(
        env_spec(cfg), policy_spec(cfg.policy), cfg.output_dir, cfg.episodes, cfg.steps,
        seed=cfg.seed, workers=cfg.workers, fps=cfg.fps, address=cfg.address,
    )
    print(f"dataset: {root} ({cfg.episodes} episodes x {cfg.steps} frames)")


@hydra.main(config_path=CONFIG_PATH, config_name="collect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
