"""hmpc-plan: one episode with one controller -> episode.mp4 with the subgoal shown, steps.jsonl.

    hmpc-plan checkpoint=outputs/demo/<run>/train/checkpoint controller=hierarchical seed=3
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import (
    CONFIG_PATH,
    controller_specs,
    env_spec,
    existing_dir,
    report_user_errors,
)


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.controllers import NO_MODEL_KINDS, build_controller
    from hmpc.cube_model import check_cube_env, cube_blob, cube_from_blob
    from hmpc.episode_video import video_bytes
    from hmpc.evaluate import model_blob, model_from_blob, run_episode
    from hmpc.object_pose import check_pose_env, pose_from_blob
    from hmpc.runtime import resolve_device

    specs = {s.name: s for s in controller_specs(cfg.all_controllers, cfg.cube_model)}
    if cfg.controller not in specs:
        raise ValueError(f"unknown controller {cfg.controller!r}; known controllers: {sorted(specs)}")
    spec, device = specs[cfg.controller], resolve_device(cfg.device)
    model = atlas = graphs = pose = cube = None
    if spec.kind not in NO_MODEL_KINDS:
        ckpt = existing_dir(cfg.checkpoint, "checkpoint", "train one with `hmpc-train` or `hmpc-demo`")
        blob = model_blob(ckpt, cfg.atlas_size, cfg.seed, {spec.landmarks} - {0}, spec.kind == "pose")
        model, atlas = model_from_blob(blob, device), blob.get("atlas")
        graphs = blob.get("landmarks")
        pose = pose_from_blob(blob["pose"], model, device) if "pose" in blob else None
    if spec.kind == "cube":
        cblob = cube_blob(spec.cube_model, "cube_model")
        cube = cube_from_blob(cblob, device)
    espec = env_spec(cfg)
    env = espec.make()
    if pose is not None:
        check_pose_env(blob["pose"], env, espec.name)
    if cube is not None:
        check_cube_env(cblob, env, espec.name)
    ctrl = build_controller(spec, model, env.action_space.shape[0], cfg.seed, device, env=env,
                            graphs=graphs, pose=pose, cube=cube)
    rec = run_episode(env, ctrl, cfg.seed, cfg.max_steps, atlas, record_video=True, log_steps=True,
                      guardrails=spec.cost_weights().guardrails)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "episode.mp4").write_bytes(video_bytes(rec.pop("frames"), cfg.fps))
    with (out / "steps.jsonl").open("w") as f:
        for entry in rec.pop("steps_log"):
            f.write(json.dumps(entry) + "\n")
    (out / "episode.json").write_text(json.dumps({"controller": spec.name, "seed": cfg.seed, **rec}, indent=2))
    status = "success" if rec["success"] else "no success"
    unit = "cells" if getattr(env.unwrapped, "has_path_distance", False) else "(task units)"
    print(
        f"{spec.name}: {status} after {rec['steps']} steps; final distance {rec['final_distance']:.3f} "
        f"{unit}; planning {rec['plan_ms_mean']:.1f} ms/step (p95 {rec['plan_ms_p95']:.1f}); "
        f"fallbacks {rec['fallbacks']}\nwrote {out / 'episode.mp4'}, {out / 'steps.jsonl'}"
    )


@hydra.main(config_path=CONFIG_PATH, config_name="plan", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
