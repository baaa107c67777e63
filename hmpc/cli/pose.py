"""hmpc-pose: an object's pose read out of a keypoint checkpoint without labels, and its dynamics.

    hmpc-pose checkpoint=<run>/train/checkpoint env=push_t     # writes <checkpoint>/pose
    hmpc-eval checkpoint=<run>/train/checkpoint env=push_t 'controllers=[pose_cem]'
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import CONFIG_PATH, env_spec, existing_dir, plain, report_user_errors


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.agent_mask import AgentMask
    from hmpc.checkpoint import load_checkpoint
    from hmpc.data import LeRobotDataset, build_frame_cache
    from hmpc.object_pose import encoder_of, fit_pose_model, save_pose_model, weights_digest
    from hmpc.runtime import resolve_device

    ckpt = existing_dir(cfg.checkpoint, "checkpoint", "train one with `hmpc-train data=<dir> model=push_t "
                        "model.loss.equivariance=1.0`")
    device = resolve_device(cfg.device)
    model, meta = load_checkpoint(ckpt, device)
    encoder_of(model)  # fails early, naming what to train, before any data is read
    data = cfg.data or meta.get("dataset", {}).get("root")
    root = existing_dir(data, "data", f"pass the dataset the checkpoint was trained on (dataset.root in {ckpt}/config.json)")
    env = env_spec(cfg).make()
    try:
        image_map = env.unwrapped.image_map()
        if cfg.mask not in ("auto", "none"):
            raise ValueError(f"mask={cfg.mask!r}: use auto (the checkpoint's model.agent_mask, else the env's) or none")
        if cfg.mask == "none" and model.spec.agent_mask is not None:
            raise ValueError(f"mask=none: {ckpt} was trained with model.agent_mask, so its encoder never "
                             "saw the agent; use mask=auto")
        mask = None
        if cfg.mask == "auto":
            try:
                mask = model.spec.agent_mask or AgentMask.from_value(env.unwrapped.agent_mask())
            except ValueError as e:
                raise ValueError(f"mask=auto: {e.args[0].split(';')[0]}; use mask=none") from e
        gyration = cfg.gyration if cfg.gyration is not None else getattr(env.unwrapped, "object_gyration", None)
        if gyration is None:
            raise ValueError(f"env {cfg.env.name} has no object_gyration; set gyration=<the object's radius of gyration, m>")
    finally:
        env.close()
    frames = build_frame_cache(LeRobotDataset(root))
    members = None if cfg.members is None else [int(i) for i in cfg.members]
    pose = fit_pose_model(model, frames, image_map, mask, float(gyration), cfg.steps, cfg.horizon, cfg.hidden,
                          cfg.seed, members, device)
    out = Path(cfg.output_dir or Path(ckpt) / "pose")
    save_pose_model(out, pose, {"checkpoint": str(ckpt), "checkpoint_sha256": weights_digest(ckpt),
                                "data": str(root), "steps": cfg.steps, "horizon": cfg.horizon,
                                "seed": cfg.seed, "env": cfg.env.name, "env_options": plain(cfg.env)})
    print(json.dumps({"members": list(pose.readout.members), "shrink": round(pose.dynamics.shrink, 4),
                      "mask": mask is not None}))
    print(f"pose model: {out} (plan with controllers=[pose_cem])")


@hydra.main(config_path=CONFIG_PATH, config_name="pose", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
