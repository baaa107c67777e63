"""hmpc-cube: a learned cube model (a cube readout and a dynamics ensemble) for the Panda cube tasks.

    hmpc-cube data=<dataset> env=panda_pick_place output_dir=runs/cube     # ~10 min on 2 CPU cores
    hmpc-eval env=panda_pick_place 'controllers=[cube_cem,oracle]' cube_model=runs/cube

The readout can also learn from the planner's own episodes (``policy=cube_planner``), reusing the
dynamics already fit: ``hmpc-cube data=<dataset> readout_data=[<planner episodes>]
dynamics_from=runs/cube output_dir=runs/cube2`` (about 3.5 min); with ``dynamics_data=[<planner
episodes>]`` instead of ``dynamics_from`` the dynamics are fit anew on them too.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import CONFIG_PATH, env_spec, existing_dir, plain, report_user_errors

_COLLECT = ("collect one with `hmpc-collect env=panda_pick_place policy=panda_pick_place_mixture steps=100 "
            "episodes=450 workers=2 output_dir=<dir>`")


_CUBE_ENVS = ("panda_push", "panda_pick_place")
_PLANNER = ("collect the planner's own episodes with `hmpc-collect env=panda_pick_place policy=cube_planner "
            "policy.cube_model=<a cube model> episodes=50 seed=9000 output_dir=<dir>`")


def _frames(root: Path, key: str, env: str, size: int):
    """The frames of dataset ``root`` (given as ``key``), refused unless collected in ``env`` with
    ``size``-pixel images and the cube tasks' state and action."""
    from hmpc.cube_model import check_cube_frames
    from hmpc.data import LeRobotDataset, build_frame_cache, with_state

    data = LeRobotDataset(root)
    robot = data.info.get("robot_type")
    if robot and robot not in _CUBE_ENVS:
        raise ValueError(f"{key}={root} was collected in {robot!r} (meta/info.json robot_type); hmpc-cube reads "
                         f"data of {' or '.join(_CUBE_ENVS)}: {_COLLECT}")
    if robot and robot != env:
        raise ValueError(f"{key}={root} was collected in {robot!r} (meta/info.json robot_type), not {env!r}; "
                         f"set env={robot}")
    frames = with_state(build_frame_cache(data), f"{key}={root}")  # fits on the logged cube pose
    if frames.pixels.shape[1] != size:
        raise ValueError(f"{key}={root} holds {frames.pixels.shape[1]}-pixel images but env {env!r} renders "
                         f"{size}; set env.image_size={frames.pixels.shape[1]}")
    check_cube_frames(frames, f"{key}={root}")
    return frames


def _members(folder: str, env: str, device):
    """The dynamics members of the cube model in ``folder`` (``dynamics_from=``) and its cube.json, refused
    unless fit for ``env``."""
    from hmpc.cube_model import cube_blob, cube_from_blob

    blob = cube_blob(folder, "dynamics_from")
    fit_for = blob["config"].get("env")
    if fit_for is not None and fit_for != env:
        raise ValueError(f"dynamics_from={folder} was fit for env {fit_for!r}, not {env!r}; set env={fit_for}")
    return list(cube_from_blob(blob, device).members), blob["config"]


def _finite(values: dict[str, float], digits: int) -> dict[str, float | None]:
    """Rounded, with None for NaN (a group that never moved): cube.json stays valid JSON."""
    return {k: round(v, digits) if math.isfinite(v) else None for k, v in values.items()}


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.cube_model import GROUPS, camera_config, fit_cube_model, save_cube_model
    from hmpc.cube_readout import readout_errors
    from hmpc.pose_dynamics import error_ratios
    from hmpc.runtime import resolve_device

    for key in ("readout_data", "dynamics_data"):
        if isinstance(cfg[key], str):
            raise ValueError(f"{key}={cfg[key]}: give a list, {key}=[{cfg[key]}]")
    if cfg.dynamics_from and cfg.dynamics_data:
        raise ValueError(f"dynamics_from={cfg.dynamics_from} reuses fitted dynamics, dynamics_data={list(cfg.dynamics_data)} "
                         "fits new ones on more data: set one of them")
    root = existing_dir(cfg.data, "data", _COLLECT)
    held = existing_dir(cfg.held_out, "held_out", "collect a second, smaller one with another seed") if cfg.held_out else None
    spec = env_spec(cfg)
    env = spec.make()
    try:
        size = env.observation_space["pixels"].shape[0]
        camera = getattr(env.unwrapped, "camera", None)
    finally:
        env.close()
    loaded: dict[Path, Any] = {}  # a dataset in readout_data and dynamics_data is read once

    def frames_of(folder: Path, key: str):
        if folder.resolve() not in loaded:
            loaded[folder.resolve()] = _frames(folder, key, spec.name, size)
        return loaded[folder.resolve()]

    frames = frames_of(root, "data")
    hf = frames_of(held, "held_out") if held is not None else None
    extra_dirs = [existing_dir(d, f"readout_data[{i}]", _PLANNER) for i, d in enumerate(cfg.readout_data or [])]
    extra = [frames_of(d, f"readout_data[{i}]") for i, d in enumerate(extra_dirs)]
    dyn_dirs = [existing_dir(d, f"dynamics_data[{i}]", _PLANNER) for i, d in enumerate(cfg.dynamics_data or [])]
    dyn_extra = [frames_of(d, f"dynamics_data[{i}]") for i, d in enumerate(dyn_dirs)]
    device = resolve_device(cfg.device)
    members, fit = _members(cfg.dynamics_from, spec.name, device) if cfg.dynamics_from else (None, {})
    steps, horizon = fit.get("steps", cfg.steps), fit.get("horizon", cfg.horizon)  # what the members were fit with
    t0 = time.perf_counter()
    model = fit_cube_model(frames, cfg.ensemble, cfg.steps, cfg.horizon, cfg.hidden, cfg.readout_steps,
                           cfg.proprio, cfg.seed, device, readout_extra=extra, readout_share=cfg.readout_share,
                           members=members, dynamics_extra=dyn_extra)
    report = {"fit_min": round((time.perf_counter() - t0) / 60, 1)}
    if hf is not None:
        report["held_out_error_over_copying"] = _finite(error_ratios(model.members[0], hf, GROUPS), 4)
        report["held_out_readout_cm"] = _finite(readout_errors(model.readout, hf), 2)
    out = Path(cfg.output_dir)
    save_cube_model(out, model, {"env": spec.name, "image_size": size, "env_options": plain(cfg.env),
                                 "camera": None if camera is None else camera_config(camera),
                                 "data": str(root), "steps": steps, "horizon": horizon,
                                 "readout_steps": cfg.readout_steps, "seed": cfg.seed,
                                 "readout_data": [str(d) for d in extra_dirs], "readout_share": cfg.readout_share,
                                 "dynamics_from": cfg.dynamics_from, "dynamics_data": [str(d) for d in dyn_dirs],
                                 **report})
    print(json.dumps(report))
    print(f"cube model: {out} (plan with `hmpc-eval env={spec.name} 'controllers=[cube_cem]' cube_model={out}`)")


@hydra.main(config_path=CONFIG_PATH, config_name="cube", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
