"""Goal-conditioned evaluation of controllers over seeded episodes, in parallel Ray workers.

Every controller sees the same start/goal pairs (episode i uses seed ``episode_seed(seed, i)``
whatever the number of workers). Success is the env's own ``info["is_success"]`` at any step
within ``max_steps``. The goal *state* is used for scoring only; controllers get the goal image.

Guardrails: for a controller whose ``weights.guardrails`` lists bounds or regions, the harness
counts *actual* violations from the env's true ``obs["state"]`` after every step (the controller
never sees it) in ``guardrail_violations``, next to ``predicted_violations`` (steps whose sent
action the controller's own model predicted to violate them). Both are None otherwise.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hmpc.checkpoint import atomic_write_json, load_checkpoint
from hmpc.controllers import (
    NO_MODEL_KINDS,
    ControllerSpec,
    build_controller,
    check_spec_guardrails,
)
from hmpc.costs import Guardrails, guardrail_violated
from hmpc.cube_model import check_cube_env, cube_blob, cube_from_blob
from hmpc.data import LeRobotDataset, build_frame_cache, with_state
from hmpc.episode_video import SubgoalAtlas, build_atlas, compose_frame, video_bytes
from hmpc.landmarks import landmark_graphs
from hmpc.mpc import Controller
from hmpc.object_pose import check_pose_env, pose_blob, pose_from_blob
from hmpc.parallel import parallel_map
from hmpc.plots import plot_success_by_difficulty, plot_success_vs_time
from hmpc.report import (
    aggregate,
    difficulty_table,
    earlier_run_section,
    paired,
    paired_runs,
    paired_table,
    results_csv,
    results_table,
)
from hmpc.rollout import EnvSpec, episode_seed
from hmpc.runtime import environment_info, resolve_device, worker_device
from hmpc.world_model import WorldModel, WorldModelSpec


@dataclass(frozen=True)
class EvalConfig:
    episodes: int = 20
    max_steps: int = 100
    seed: int = 1000  # disjoint from collection seeds by default
    workers: int = 0
    device: str = "auto"
    gpus_per_worker: float = 0.0
    address: str | None = None
    retries: int = 2  # times an episode is retried after its worker process died
    start_timeout_s: float | None = None  # a Ray worker not started by then is replaced (hmpc.parallel)
    videos: int = 2  # episodes per controller saved as mp4 (camera | goal | subgoal)
    video_fps: int = 10
    atlas_size: int = 1024  # dataset frames searched to show a subgoal latent as an image


def observation_for(controller: Controller, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Only the observation keys the controller declares, and of "state" only the prefix it
    declares (``state_dims``: proprioception, not the object poses after it); never info, success
    or goal state."""
    out = {k: obs[k] for k in controller.observation_keys}
    if "state" in out and controller.state_dims is not None:
        out["state"] = out["state"][: controller.state_dims]
    return out


NOMINAL = "nominal"


def condition_specs(base: EnvSpec, conditions: dict[str, dict[str, Any]]) -> dict[str, EnvSpec]:
    """One EnvSpec per named condition: base kwargs + ``env`` overrides, + ``wrappers``."""
    out = {}
    for name, c in conditions.items():
        unknown = set(c) - {"env", "wrappers"}
        if unknown:
            raise ValueError(f"condition {name!r} has unknown keys {sorted(unknown)}; use env, wrappers")
        kwargs = {**base.kwargs, **dict(c.get("env") or {})}
        out[name] = EnvSpec(base.name, kwargs, tuple(dict(w) for w in c.get("wrappers") or ()))
    return out


def violates(state: np.ndarray, guardrails: Guardrails) -> bool:
    """Does a true state (S,) leave ``guardrails.bounds`` or enter one of its regions?"""
    if guardrails.max_dim() >= len(state):
        raise ValueError(f"weights.guardrails refers to state dim {guardrails.max_dim()} but the "
                         f"env's observation.state has {len(state)} dims")
    return bool(guardrail_violated(torch.as_tensor(np.asarray(state, np.float64)), guardrails))


def run_episode(
    env, controller: Controller, seed: int, max_steps: int, atlas: SubgoalAtlas | None = None,
    record_video: bool = False, log_steps: bool = False, guardrails: Guardrails | None = None,
) -> dict[str, Any]:
    """Run one episode; returns the per-episode record (success at any step, timings, costs).

    With ``record_video`` the record carries "frames": camera | goal | subgoal panels per step
    (the subgoal shown as the nearest ``atlas`` frame when the controller reports one); with
    ``log_steps`` it carries "steps_log": per step the action, plan cost and terms, iterations,
    planning ms, fallback and replanning flags, and the distance to the goal after the step.
    With ``guardrails`` (bounds or regions), the record counts the steps after which the true
    ``obs["state"]`` violates them (``guardrail_violations``; ground truth stays in the harness)
    and the steps the controller predicted a violation (``predicted_violations``).
    """
    monitored = guardrails is not None and guardrails.monitored
    violations = predicted = 0
    obs, info = env.reset(seed=seed)
    goal_obs = env.unwrapped.goal_observation()
    controller.reset(observation_for(controller, obs), observation_for(controller, goal_obs))
    start_dist, start_path = float(info["distance"]), int(info.get("path_distance", -1))
    success_step, dists, plan_ms, fallbacks, replans = None, [start_dist], [], 0, 0
    out_of_bounds = 0  # steps whose commanded action the env had to clip or zero (should stay 0)
    frames: list[np.ndarray] = []
    steps_log: list[dict[str, Any]] = []
    subgoal_px, title = None, "subgoal (nearest frame)"
    for t in range(max_steps):
        action, pinfo = controller.act(observation_for(controller, obs))
        if record_video:
            if (drawn := controller.plan_image()) is not None:  # drawn by the controller (kind cube)
                subgoal_px, title = drawn, "plan: cube now, path, goal"
            elif atlas is not None and pinfo.get("subgoal") is not None:
                subgoal_px = atlas.nearest(np.asarray(pinfo["subgoal"], np.float32))
            caption = f"t={t}  dist={dists[-1]:.2f}  plan={pinfo.get('plan_ms', 0.0):.0f} ms"
            frames.append(compose_frame(obs["pixels"], goal_obs["pixels"], subgoal_px, caption, subgoal_title=title))
        obs, _, terminated, truncated, info = env.step(action)
        dists.append(float(info["distance"]))
        out_of_bounds += int(bool(info.get("action_clipped", False)))
        plan_ms.append(float(pinfo.get("plan_ms", 0.0)))
        fallbacks += int(bool(pinfo.get("fallback", False)))
        replans += int(bool(pinfo.get("replanned", False)))
        if monitored:
            violations += violates(obs["state"], guardrails)
            predicted += bool(pinfo.get("predicted_violation", False))
        if log_steps:
            steps_log.append(_step_entry(t, action, pinfo, dists[-1]))
        if info["is_success"] and success_step is None:
            success_step = t + 1
            break  # success is reached; the budget is not spent further
        if terminated or truncated:
            break
    if record_video:
        caption = f"t={len(dists) - 1}  dist={dists[-1]:.2f}  " + ("SUCCESS" if success_step else "end")
        frames.append(compose_frame(obs["pixels"], goal_obs["pixels"], subgoal_px, caption, subgoal_title=title))
    record = {
        "success": success_step is not None,
        "steps": len(dists) - 1,
        "steps_to_success": success_step,
        "start_distance": start_dist,
        "path_distance": start_path,  # start-goal difficulty in maze cells
        "final_distance": dists[-1],
        "min_distance": min(dists),
        "plan_ms_mean": float(np.mean(plan_ms)) if plan_ms else 0.0,
        "plan_ms_p95": float(np.percentile(plan_ms, 95)) if plan_ms else 0.0,
        "fallbacks": fallbacks,
        "replans": replans,
        "actions_out_of_bounds": out_of_bounds,
        "guardrail_violations": violations if monitored else None,
        "predicted_violations": predicted if monitored else None,
        # the env's word at the end (Panda cube tasks: the cube past the hand's reach); None: not reported
        "object_out_of_reach": bool(info["object_out_of_reach"]) if "object_out_of_reach" in info else None,
    }
    if record_video:
        record["frames"] = frames
    if log_steps:
        record["steps_log"] = steps_log
    return record


def _step_entry(t: int, action: np.ndarray, pinfo: dict[str, Any], distance: float) -> dict[str, Any]:
    """JSON-ready per-step planner log (numbers only; the subgoal latent is left out)."""
    keep = ("cost", "iters", "plan_ms", "fallback", "replanned", "terms", "error",
            "predicted_violation", "deadline_hit", "landmark", "final_approach")
    entry = {k: pinfo[k] for k in keep if k in pinfo}
    entry.update({k: v for k, v in pinfo.items() if k.endswith(("_cost", "_iters"))})
    return {"t": t, "action": [float(a) for a in action], "distance_after": distance, **entry}


def model_blob(
    checkpoint: str | Path, atlas_size: int = 0, seed: int = 0, landmarks: set[int] | None = None,
    pose: bool = False,
) -> dict[str, Any]:
    """Checkpoint as plain arrays, so workers on other machines need no shared filesystem.

    With ``atlas_size`` > 0 and the training dataset still on disk, a level-2 ``SubgoalAtlas``
    rides along so videos can show subgoals; ``landmarks`` (graph sizes) add one
    :class:`hmpc.landmarks.LandmarkGraph` of that dataset per size (``blob["landmarks"]``);
    ``pose`` adds the object-pose model of ``<checkpoint>/pose`` (``hmpc-pose``; ``blob["pose"]``).
    """
    model, meta = load_checkpoint(checkpoint, "cpu")
    blob = {"meta": meta, "weights": {k: v.numpy() for k, v in model.state_dict().items()}}
    root = Path(meta.get("dataset", {}).get("root", ""))
    have_data = (root / "meta" / "info.json").is_file()
    if landmarks and not have_data:
        raise FileNotFoundError(
            f"controllers with landmarks > 0 (controllers.<name>.landmarks) build their graph from the checkpoint's training data, "
            f"but {root} (dataset.root in {Path(checkpoint) / 'config.json'}) is not a dataset; "
            "restore it there, or set the controllers' landmarks to 0")
    frames = None
    if have_data and (landmarks or (atlas_size > 0 and model.spec.num_levels >= 2)):
        frames = build_frame_cache(LeRobotDataset(root), progress=False)
        if model.spec.state_dim:  # an encoder that fuses the state reads no imported video
            frames = with_state(frames)
    if frames is not None and atlas_size > 0 and model.spec.num_levels >= 2:
        blob["atlas"] = build_atlas(model, frames, 2, atlas_size, np.random.default_rng(seed))
    if landmarks:
        blob["landmarks"] = landmark_graphs(model, frames, set(landmarks))
    if pose:  # controllers of kind pose: fails here, before any episode, when it is missing or stale
        blob["pose"] = pose_blob(Path(checkpoint) / "pose", checkpoint)
    return blob


def model_from_blob(blob: dict[str, Any], device: torch.device) -> WorldModel:
    model = WorldModel(WorldModelSpec.from_dict(blob["meta"]["model"]))
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in blob["weights"].items()})
    return model.to(device).eval()


Item = tuple[int, int, str, str]  # (episode index, seed, controller name, condition)


def _setup(env_specs: dict[str, EnvSpec], blob: dict[str, Any] | None, device: str,
           cube_blobs: dict[str, dict[str, Any]] | None = None):
    dev = resolve_device(device)
    model = model_from_blob(blob, dev) if blob is not None else None
    atlas = blob.get("atlas") if blob is not None else None
    graphs = blob.get("landmarks") if blob is not None else None
    pose = pose_from_blob(blob["pose"], model, dev) if blob is not None and "pose" in blob else None
    cubes = {name: cube_from_blob(b, dev) for name, b in (cube_blobs or {}).items()}  # controller -> model
    return env_specs, {}, model, dev, atlas, graphs, pose, cubes


def row_label(name: str, condition: str) -> str:
    """Results row of a controller under a condition: "flat_gd", "flat_gd [obs_noise]"."""
    return name if condition == NOMINAL else f"{name} [{condition}]"


def _record(item: Item) -> dict[str, Any]:
    index, seed, name, cond = item
    label = row_label(name, cond)
    return {
        "episode_id": f"{label}/{index:04d}", "episode_index": index, "seed": seed,
        "controller": label, "controller_name": name, "condition": cond,
    }


def _failed(item: Item, reason: str) -> dict[str, Any]:
    """Record of an episode whose worker kept dying: counted as a failure, with the reason."""
    return {**_record(item), "device": None, "success": False, "error": reason, "eval_s": 0.0}


def _run(
    specs: dict[str, ControllerSpec], cfg: EvalConfig, state, item: Item
) -> dict[str, Any]:
    """Evaluate one (episode index, seed, controller name); never raises (errors are recorded).

    The first ``cfg.videos`` episodes of each controller come back with an mp4 as bytes.
    """
    env_specs, envs, model, dev, atlas, graphs, pose, cubes = state
    index, seed, name, cond = item
    record = {**_record(item), "device": str(dev)}  # the torch device of the worker's controllers
    t0 = time.perf_counter()
    try:
        if cond not in envs:  # one env per condition per worker, built on first use
            envs[cond] = env_specs[cond].make()
        env = envs[cond]
        ctrl = build_controller(specs[name], model, env.action_space.shape[0], seed, dev, env=env,
                                graphs=graphs, pose=pose, cube=cubes.get(name))
        try:
            rec = run_episode(env, ctrl, seed, cfg.max_steps, atlas, record_video=index < cfg.videos,
                              guardrails=specs[name].cost_weights().guardrails)
        finally:
            close = getattr(ctrl, "close", None)  # the oracle owns a simulator clone
            if callable(close):
                close()
        if "frames" in rec:
            rec["video_mp4"] = video_bytes(rec.pop("frames"), cfg.video_fps)
        record.update(rec, error=None)
    except Exception as e:  # one episode's failure must not end the evaluation
        record.update(success=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    record["eval_s"] = time.perf_counter() - t0
    return record


def evaluate(
    env_spec: EnvSpec,
    checkpoint: str | Path | None,
    controllers: Sequence[ControllerSpec],
    cfg: EvalConfig,
    output_dir: str | Path,
    progress: bool = True,
    conditions: dict[str, dict[str, Any]] | None = None,
    earlier: tuple[Path, Sequence[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Evaluate every controller on the same episodes; writes eval_info.json and results.md.

    ``conditions`` maps a name to ``{"env": {kwarg overrides}, "wrappers": [...]}``; each
    condition is a separate row per controller (robustness), on the same seeds. ``earlier``
    (an earlier run's folder and per-episode records) adds each row paired with the same row
    there (:func:`hmpc.report.paired_runs`) as ``compared_with`` and a results.md section.
    """
    device, gpus_per_worker = worker_device(cfg.device, cfg.workers, cfg.gpus_per_worker, cfg.address)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_specs = condition_specs(env_spec, conditions or {NOMINAL: {}})
    for spec in env_specs.values():
        spec.check()
    specs = {c.name: c for c in controllers}
    needs_model = any(c.kind not in NO_MODEL_KINDS for c in controllers)
    atlas_size = cfg.atlas_size if cfg.videos > 0 else 0
    sizes = {c.landmarks for c in controllers if c.landmarks}
    pose = any(c.kind == "pose" for c in controllers)
    blob = model_blob(checkpoint, atlas_size, cfg.seed, sizes, pose) if needs_model and checkpoint else None
    if needs_model and blob is None:
        raise ValueError(
            "learned controllers need checkpoint=<folder>; or use controllers=[oracle,random]"
        )
    model_spec = WorldModelSpec.from_dict(blob["meta"]["model"]) if blob is not None else None
    cubes = {c.name: cube_blob(c.cube_model, f"controllers.{c.name}.cube_model") for c in controllers if c.kind == "cube"}
    # the pose and cube models' env and camera, before any episode: a condition that changes the
    # camera (or arena, or image size) refuses the whole run, since the readout would be off there
    if (blob is not None and "pose" in blob) or cubes:
        for spec in env_specs.values():
            env = spec.make()
            try:
                if blob is not None and "pose" in blob:
                    check_pose_env(blob["pose"], env, spec.name)
                for cube in cubes.values():
                    check_cube_env(cube, env, spec.name)
            finally:
                env.close()
    for c in controllers:  # before any episode: a guardrail the model cannot evaluate
        check_spec_guardrails(c, model_spec)
    items = [
        (i, episode_seed(cfg.seed, i), n, c)
        for c in env_specs for n in specs for i in range(cfg.episodes)
    ]
    rows = [row_label(n, c) for c in env_specs for n in specs]
    t0 = time.perf_counter()
    gen = parallel_map(
        functools.partial(_setup, env_specs, blob, device, cubes),
        functools.partial(_run, specs, cfg),
        items, cfg.workers, num_gpus=gpus_per_worker, address=cfg.address,
        retries=cfg.retries, on_failure=_failed, start_timeout_s=cfg.start_timeout_s,
    )
    records = []
    for rec in tqdm(gen, total=len(items), desc="eval", unit="ep", disable=not progress):
        records.append(rec)
    records.sort(key=lambda r: (rows.index(r["controller"]), r["episode_index"]))
    video_paths = []
    for r in records:
        if "video_mp4" in r:
            label = r["controller"].replace(" [", "_").replace("]", "")
            path = out / "videos" / f"{label}_{r['episode_index']:04d}.mp4"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(r.pop("video_mp4"))
            r["video_path"] = str(path)
            video_paths.append(str(path))
    info = {
        "per_episode": records,
        "aggregated": aggregate(records, rows),
        "paired": paired(records),
        "video_paths": video_paths,
        "env": {"name": env_spec.name, "kwargs": env_spec.kwargs},
        "conditions": {c: {"kwargs": e.kwargs, "wrappers": list(e.wrappers)} for c, e in env_specs.items()},
        "checkpoint": str(checkpoint) if checkpoint else None,
        "config": {**cfg.__dict__},
        "eval_s": time.perf_counter() - t0,
        "environment": environment_info(),
    }
    section = ""
    if earlier is not None:
        folder, before = earlier
        comparisons = paired_runs(before, records, folder.name)
        info["compared_with"] = {"folder": str(folder.resolve()), "paired": comparisons}
        section = earlier_run_section(comparisons, rows, str(folder))
    by_difficulty = difficulty_table(records, rows)  # also labels record["difficulty"]
    atomic_write_json(out / "eval_info.json", info)
    table = results_table(info["aggregated"], env_spec.name)
    parts = (table, paired_table(info["paired"]), by_difficulty, section)
    (out / "results.md").write_text("\n\n".join(part for part in parts if part) + "\n")
    (out / "results.csv").write_text(results_csv(info["aggregated"], env_spec.name))
    plot_success_by_difficulty(records, rows, out / "success_by_difficulty.png")
    plot_success_vs_time(info["aggregated"], out / "success_vs_time.png")
    return info
