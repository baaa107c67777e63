"""hmpc-demo: the whole path on one machine: collect -> train -> evaluate, under one folder.

    hmpc-demo                       # default maze, sized for 2 CPU cores (< 20 min)
    hmpc-demo trainer.steps=500 eval.episodes=20 workers=2 output_dir=outputs/quick
    hmpc-demo baseline=true         # also RLlib PPO on the same env-step budget (+ ~8 min)
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import (
    CONFIG_PATH,
    controller_specs,
    env_spec,
    eval_config,
    model_spec,
    plain,
    policy_spec,
    report_user_errors,
    train_config,
    typed,
)


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.data import LeRobotDataset
    from hmpc.evaluate import evaluate
    from hmpc.rollout import collect
    from hmpc.runtime import resolve_device
    from hmpc.train import train_world_model

    out, t0 = Path(cfg.output_dir), time.perf_counter()
    env, c = env_spec(cfg), cfg.collect
    print(f"[1/3] collecting {c.episodes} episodes x {c.steps} frames of {env.name} -> {out / 'dataset'}")
    data = collect(
        env, policy_spec(c.policy), out / "dataset", c.episodes, c.steps, seed=c.seed,
        workers=cfg.workers, fps=c.fps, address=cfg.address,
    )
    ds = LeRobotDataset(data)
    spec, weights = model_spec(cfg.model, ds.image_shape[0], ds.action_dim)
    print(f"[2/3] training a {spec.num_levels}-level world model for {cfg.trainer.steps} steps")
    result = train_world_model(
        data, out / "train", spec, weights, train_config(cfg.trainer), resolve_device(cfg.device),
        meta={"env": {"name": env.name, **env.kwargs}, "dataset": {"root": str(Path(data).resolve())}},
    )
    m = result.metrics
    print(
        f"      level-1 probe R2 {m.get('val/l1/probe_r2', float('nan')):.3f}, "
        f"level-2 probe R2 {m.get('val/l2/probe_r2', float('nan')):.3f}, "
        f"level-1 eff. rank {m.get('val/l1/eff_rank', float('nan')):.1f}"
    )
    for warning in result.warnings:
        print(f"      warning: {warning}")
    specs = controller_specs(cfg.controllers)
    if cfg.baseline:
        from hmpc.controllers import ControllerSpec
        from hmpc.rl_baseline import PPOConfig, train_ppo

        budget = int(c.episodes * c.steps)  # the world model's interaction budget
        print(f"      + model-free baseline: RLlib PPO from pixels for {budget} env steps")
        ppo = typed(PPOConfig, {**plain(cfg.ppo), "env_steps": budget}, "demo.yaml: ppo")
        policy = train_ppo(env, ppo, out / "ppo", address=cfg.address)
        specs.append(ControllerSpec("rllib", "rllib", policy=str(policy)))
    ecfg = eval_config(cfg.eval, cfg.workers, cfg.device, cfg.address)
    print(f"[3/3] evaluating {[s.name for s in specs]} on {ecfg.episodes} episodes each")
    evaluate(env, result.checkpoint, specs, ecfg, out / "eval")
    print((out / "eval" / "results.md").read_text())
    print(f"everything is under {out} ({(time.perf_counter() - t0) / 60:.1f} min)")


@hydra.main(config_path=CONFIG_PATH, config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
