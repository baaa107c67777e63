"""hmpc-train: fit the multi-level latent world model on a dataset; writes a checkpoint."""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import (
    CONFIG_PATH,
    existing_dir,
    model_spec,
    report_user_errors,
    train_config,
)


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.data import LeRobotDataset
    from hmpc.runtime import resolve_device
    from hmpc.train import train_world_model

    root = existing_dir(cfg.data, "data", "collect one with `hmpc-collect output_dir=<dir>`")
    ds = LeRobotDataset(root)
    spec, weights = model_spec(cfg.model, ds.image_shape[0], ds.action_dim)
    result = train_world_model(
        root, cfg.output_dir, spec, weights, train_config(cfg.trainer), resolve_device(cfg.device),
        meta={"dataset": {"root": str(root), "robot_type": ds.info.get("robot_type", "")}},
    )
    keys = [k for k in result.metrics if k.startswith("val/") and ("probe" in k or "ratio" in k or "rank" in k)]
    print(json.dumps({k: round(result.metrics[k], 3) for k in keys}, indent=1))
    print(f"checkpoint: {result.checkpoint} ({result.steps} steps, {result.seconds:.0f} s)")


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
