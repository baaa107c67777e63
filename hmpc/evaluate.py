"""Goal-conditioned evaluation of controllers over seeded episodes, in parallel Ray workers.

Every controller sees the same start/goal pairs (episode i uses seed ``episode_seed(seed, i)``
whatever the number of workers). Success is the env's own ``info["is_success"]`` at any step
within ``max_steps``. The goal *state* is used for scoring only; controllers get the goal image.
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
from hmpc.controllers import ControllerSpec, build_controller
from hmpc.mpc import Controller
from hmpc.parallel import parallel_map
from hmpc.plots import plot_success_by_difficulty, plot_success_vs_time
from hmpc.report import aggregate, difficulty_table, results_table
from hmpc.rollout import EnvSpec, episode_seed
from hmpc.runtime import resolve_device
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


def observation_for(controller: Controller, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Only the observation keys the controller declares; never info, success or goal state."""
    return {k: obs[k] for k in controller.observation_keys}


def run_episode(env, controller: Controller, seed: int, max_steps: int) -> dict[str, Any]:
    """Run one episode; returns the per-episode record (success at any step, timings, costs)."""
    obs, info = env.reset(seed=seed)
    goal_obs = env.unwrapped.goal_observation()
    controller.reset(observation_for(controller, obs), observation_for(controller, goal_obs))
    start_dist, start_path = float(info["distance"]), int(info.get("path_distance", -1))
    success_step, dists, plan_ms, fallbacks, replans = None, [start_dist], [], 0, 0
    for t in range(max_steps):
        action, pinfo = controller.act(observation_for(controller, obs))
        obs, _, terminated, truncated, info = env.step(action)
        dists.append(float(info["distance"]))
        plan_ms.append(float(pinfo.get("plan_ms", 0.0)))
        fallbacks += int(bool(pinfo.get("fallback", False)))
        replans += int(bool(pinfo.get("replanned", False)))
        if info["is_success"] and success_step is None:
            success_step = t + 1
            break  # success is reached; the budget is not spent further
        if terminated or truncated:
            break
    return {
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
    }


def model_blob(checkpoint: str | Path) -> dict[str, Any]:
    """Checkpoint as plain arrays, so workers on other machines need no shared filesystem."""
    model, meta = load_checkpoint(checkpoint, "cpu")
    return {"meta": meta, "weights": {k: v.numpy() for k, v in model.state_dict().items()}}


def _model_from_blob(blob: dict[str, Any], device: torch.device) -> WorldModel:
    model = WorldModel(WorldModelSpec.from_dict(blob["meta"]["model"]))
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in blob["weights"].items()})
    return model.to(device).eval()


def _setup(env_spec: EnvSpec, blob: dict[str, Any] | None, device: str):
    dev = resolve_device(device)
    model = _model_from_blob(blob, dev) if blob is not None else None
    return env_spec.make(), model, dev


def _record(item: tuple[int, int, str]) -> dict[str, Any]:
    index, seed, name = item
    return {"episode_id": f"{name}/{index:04d}", "episode_index": index, "seed": seed, "controller": name}


def _failed(item: tuple[int, int, str], reason: str) -> dict[str, Any]:
    """Record of an episode whose worker kept dying: counted as a failure, with the reason."""
    return {**_record(item), "success": False, "error": reason, "eval_s": 0.0}


def _run(specs: dict[str, ControllerSpec], max_steps: int, state, item) -> dict[str, Any]:
    """Evaluate one (episode index, seed, controller name); never raises (errors are recorded)."""
    env, model, dev = state
    _, seed, name = item
    record = _record(item)
    t0 = time.perf_counter()
    try:
        ctrl = build_controller(specs[name], model, env.action_space.shape[0], seed, dev)
        record.update(run_episode(env, ctrl, seed, max_steps), error=None)
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
) -> dict[str, Any]:
    """Evaluate every controller on the same episodes; writes eval_info.json and results.md."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_spec.check()
    specs = {c.name: c for c in controllers}
    needs_model = any(c.kind != "random" for c in controllers)
    blob = model_blob(checkpoint) if needs_model and checkpoint else None
    if needs_model and blob is None:
        raise ValueError("learned controllers need checkpoint=<folder>; or use controllers=[random]")
    items = [(i, episode_seed(cfg.seed, i), n) for i in range(cfg.episodes) for n in specs]
    t0 = time.perf_counter()
    gen = parallel_map(
        functools.partial(_setup, env_spec, blob, cfg.device),
        functools.partial(_run, specs, cfg.max_steps),
        items, cfg.workers, num_gpus=cfg.gpus_per_worker, address=cfg.address,
        retries=cfg.retries, on_failure=_failed,
    )
    records = []
    for rec in tqdm(gen, total=len(items), desc="eval", unit="ep", disable=not progress):
        records.append(rec)
    records.sort(key=lambda r: (list(specs).index(r["controller"]), r["episode_index"]))
    info = {
        "per_episode": records,
        "aggregated": aggregate(records, list(specs)),
        "video_paths": [],
        "env": {"name": env_spec.name, "kwargs": env_spec.kwargs},
        "checkpoint": str(checkpoint) if checkpoint else None,
        "config": {**cfg.__dict__},
        "eval_s": time.perf_counter() - t0,
    }
    atomic_write_json(out / "eval_info.json", info)
    table = results_table(info["aggregated"], env_spec.name)
    by_difficulty = difficulty_table(records, list(specs))
    (out / "results.md").write_text(
        f"{table}\n\nSuccess by start-goal path distance (episodes in brackets):\n\n{by_difficulty}\n"
    )
    plot_success_by_difficulty(records, list(specs), out / "success_by_difficulty.png")
    plot_success_vs_time(info["aggregated"], out / "success_vs_time.png")
    return info
