"""hmpc-cube: a learned cube model (a cube readout and a dynamics ensemble) for the Panda cube tasks.

    hmpc-cube data=<dataset> env=panda_pick_place output_dir=runs/cube     # ~16 min on 2 CPU cores
    hmpc-eval env=panda_pick_place 'controllers=[cube_cem,oracle]' cube_model=runs/cube
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import CONFIG_PATH, env_spec, existing_dir, plain, report_user_errors

_COLLECT = ("collect one with `hmpc-collect env=panda_pick_place policy=mixture 'policy.components=[{name: "
            "panda_pick_place_expert, weight: 1, noise: 0.3},{name: correlated, weight: 1}]' episodes=300`")


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.cube_model import GROUPS, fit_cube_model, save_cube_model
    from hmpc.cube_readout import readout_errors
    from hmpc.data import LeRobotDataset, build_frame_cache
    from hmpc.pose_dynamics import error_ratios
    from hmpc.runtime import resolve_device

    root = existing_dir(cfg.data, "data", _COLLECT)
    held = existing_dir(cfg.held_out, "held_out", "collect a second, smaller one with another seed") if cfg.held_out else None
    spec = env_spec(cfg)
    env = spec.make()
    try:
        size = env.observation_space["pixels"].shape[0]
    finally:
        env.close()
    frames = build_frame_cache(LeRobotDataset(root))
    if frames.pixels.shape[1] != size:
        raise ValueError(f"data={root} holds {frames.pixels.shape[1]}-pixel images but env {spec.name!r} renders {size}; "
                         f"set env.image_size={frames.pixels.shape[1]}")
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    model = fit_cube_model(frames, cfg.ensemble, cfg.steps, cfg.horizon, cfg.hidden, cfg.readout_steps,
                           cfg.proprio, cfg.seed, device)
    report = {"fit_min": round((time.perf_counter() - t0) / 60, 1)}
    if held is not None:
        hf = build_frame_cache(LeRobotDataset(held))
        report["held_out_error_over_copying"] = {k: round(v, 4) for k, v in error_ratios(model.members[0], hf, GROUPS).items()}
        report["held_out_readout_cm"] = {k: round(v, 2) for k, v in readout_errors(model.readout, hf).items()}
    out = Path(cfg.output_dir)
    save_cube_model(out, model, {"env": spec.name, "image_size": size, "env_options": plain(cfg.env),
                                 "data": str(root), "steps": cfg.steps, "horizon": cfg.horizon,
                                 "readout_steps": cfg.readout_steps, "seed": cfg.seed, **report})
    print(json.dumps(report))
    print(f"cube model: {out} (plan with `hmpc-eval env={spec.name} 'controllers=[cube_cem]' cube_model={out}`)")


@hydra.main(config_path=CONFIG_PATH, config_name="cube", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
