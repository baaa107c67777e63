"""hmpc-collect: reward-free exploration episodes into a LeRobot v3.0 dataset (Ray-parallel)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import CONFIG_PATH, env_spec, policy_spec, report_user_errors


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.data._meta import read_info
    from hmpc.rollout import collect, collected_episodes

    info = Path(cfg.output_dir) / "meta/info.json"
    held = int(read_info(info.parents[1])["total_episodes"]) if info.is_file() else 0
    before = collected_episodes(Path(cfg.output_dir))
    imported = f" (and {held - before} imported, not counted)" if held > before else ""
    if before >= cfg.episodes:
        print(f"{cfg.output_dir} already holds {before} collected episodes{imported} "
              f"(episodes={cfg.episodes} is the total); nothing to collect")
    elif before:
        print(f"{cfg.output_dir} holds {before} collected episodes{imported}; collecting episodes "
              f"{before}..{cfg.episodes - 1} (episodes= is the total)")
    root = collect(
        env_spec(cfg), policy_spec(cfg.policy), cfg.output_dir, cfg.episodes, cfg.steps,
        seed=cfg.seed, workers=cfg.workers, fps=cfg.fps, flush_every=cfg.flush_every,
        address=cfg.address, start_timeout_s=cfg.get("start_timeout_s"),
    )
    total = int(read_info(root)["total_episodes"])
    print(f"dataset: {root} ({total} episodes, {collected_episodes(root) - before} collected now)")


@hydra.main(config_path=CONFIG_PATH, config_name="collect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
