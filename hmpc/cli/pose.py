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

ANGLE_WARN_DEG = 30  # a readout this far off its object's heading plans nothing (bench/RESULTS.md)


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.agent_mask import AgentMask
    from hmpc.checkpoint import load_checkpoint
    from hmpc.data import LeRobotDataset, build_frame_cache
    from hmpc.object_pose import (
        encoder_of,
        fit_pose_model,
        readout_check,
        save_pose_model,
        weights_digest,
    )
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
    dims = None if cfg.check_dims is None else [int(d) for d in cfg.check_dims]
    if dims is not None and (len(dims) != 4 or not all(0 <= d < frames.state.shape[1] for d in dims)):
        raise ValueError(f"check_dims={dims}: need the 4 observation.state columns of the object's x, y, cos, sin; "
                         f"{root} has {frames.state.shape[1]} columns. Set check_dims=null for data without the "
                         "object's pose")  # fmt: skip
    pose = fit_pose_model(model, frames, image_map, mask, float(gyration), cfg.steps, cfg.horizon, cfg.hidden,
                          cfg.seed, members, device)
    check = None if dims is None else readout_check(pose, frames, dims, device=device)
    out = Path(cfg.output_dir or Path(ckpt) / "pose")
    save_pose_model(out, pose, {"checkpoint": str(ckpt), "checkpoint_sha256": weights_digest(ckpt),
                                "data": str(root), "steps": cfg.steps, "horizon": cfg.horizon,
                                "seed": cfg.seed, "env": cfg.env.name, "env_options": plain(cfg.env),
                                "readout_check": check})
    print(json.dumps({"members": list(pose.readout.members), "shrink": round(pose.dynamics.shrink, 4),
                      "mask": mask is not None}))
    if check is not None:
        print(f"readout against the logged pose (observation.state{dims}, not used in fitting): "
              f"angle {check['angle_deg_rms']:.1f} deg rms, place {check['place_cm_rms']:.2f} cm rms")
        if check["angle_deg_rms"] > ANGLE_WARN_DEG:
            print(f"warning: the keypoints' vectors do not turn with the object (heading off by more than "
                  f"{ANGLE_WARN_DEG} deg; about 104 is a heading read at random): planning on this pose will "
                  "fail. Train the checkpoint with model.loss.equivariance=1.0 (Push-T: 3.5 deg with it, 103 "
                  "deg and 2 of 40 pairs solved without; README, Object pose controller)")
    print(f"pose model: {out} (plan with controllers=[pose_cem])")


@hydra.main(config_path=CONFIG_PATH, config_name="pose", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
