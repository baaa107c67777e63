"""World-model sweeps with Ray Tune: random search around a known-good preset, early stopping.

Each trial trains a world model (``hmpc.train.train_world_model``) with some config keys
replaced, reports its validation diagnostics to Tune at every validation, and may be stopped
early by ASHA. Trial 0 is always the unmodified base config, so the report can say whether the
best trial beats the default on the chosen objective (or honestly that it does not).

Search space entries, by dotted key into ``{"model": ..., "trainer": ...}``, or nested
(``{model: {loss: {variance: {...}}}}``, what ``search.model.loss.variance=...`` overrides)::

    model.loss.variance: {loguniform: [0.33, 3.0]}
    model.latent_dim: {choice: [16, 32, 64]}
    trainer.lr: {uniform: [3.0e-4, 3.0e-3]}
    model.levels.0.k: {randint: [2, 7]}          # high exclusive

Outputs under ``out_dir``: ``sweep_results.csv``, ``results.md``, ``sweep.png`` (objective
against training step per trial), ``model/best.yaml`` as a preset (searched trainer keys are
given by value in results.md's hmpc-train command: :func:`train_overrides`), and Tune's own
trial folders under ``tune/``.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmpc.plots import plot_sweep

SAMPLERS = ("loguniform", "uniform", "choice", "randint")
Build = Callable[[dict[str, Any], int, int], tuple[Any, Any, Any]]


@dataclass(frozen=True)
class SweepConfig:
    trials: int = 8
    metric: str = "val/l1/probe_r2"
    mode: str = "max"
    scheduler: str = "asha"  # asha | fifo
    grace_period: int = 1  # validations before ASHA may stop a trial
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"sweep mode={self.mode!r}; use max or min")
        if self.scheduler not in ("asha", "fifo"):
            raise ValueError(f"sweep scheduler={self.scheduler!r}; use asha or fifo")
        if self.trials < 2:
            raise ValueError(f"sweep trials={self.trials}: need >= 2 (trial 0 is the default)")


def get_path(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"search key {dotted!r}: {part!r} not found in the base config; "
                             f"keys look like model.loss.variance or trainer.lr") from err  # fmt: skip
    return node


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = get_path(tree, ".".join(parents)) if parents else tree
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with each dotted key of ``overrides`` replaced."""
    tree = copy.deepcopy(base)
    for key, value in overrides.items():
        get_path(tree, key)  # must exist: a typo must not silently add a key
        set_path(tree, key, value)
    return tree


def flat_space(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A search space written nested (``{model: {loss: {variance: {loguniform: [...]}}}}``, as Hydra
    overrides like ``search.model.loss.variance=...`` build it), dotted, or both -> dotted keys.
    A leaf is a dict that names a sampler (or anything that is not a dict)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) & set(SAMPLERS):
            out.update(flat_space(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def tune_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Our search-space dict -> Tune sampling domains (keys keep their dots)."""
    from ray import tune

    out = {}
    for key, spec in flat_space(space).items():
        if isinstance(spec, dict) and len(spec) > 1 and set(spec) <= set(SAMPLERS):
            raise ValueError(f"search.{key}={spec!r}: one sampler per key (an override merges into the "
                             f"preset's); to change it: '~search.{key}' '+search.{key}={{uniform: [0.3, 3.0]}}'")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise ValueError(f"search.{key}={spec!r}: use one of {list(SAMPLERS)}, e.g. "
                             f"{{loguniform: [0.3, 3.0]}}")  # fmt: skip
        kind, args = next(iter(spec.items()))
        out[key] = tune.choice(list(args)) if kind == "choice" else getattr(tune, kind)(*args)
    return out


def _trial(config: dict[str, Any], *, base: dict[str, Any], data: str, build: Build,
           image_size: int, action_dim: int, threads: int, device: str) -> None:  # fmt: skip
    """One Tune trial: train with the overrides in ``config`` on ``device``
    (:func:`hmpc.parallel.worker_device`); report each validation."""
    import torch
    from ray import tune

    from hmpc.runtime import resolve_device
    from hmpc.train import train_world_model

    torch.set_num_threads(max(1, threads))
    tree = apply_overrides(base, config)
    spec, weights, train_cfg = build(tree, image_size, action_dim)
    out = Path(tune.get_context().get_trial_dir()) / "train"

    def report(step: int, row: dict[str, float]) -> None:
        tune.report({k: v for k, v in row.items() if isinstance(v, (int, float))} | {"step": step})

    train_world_model(data, out, spec, weights, train_cfg, resolve_device(device),
                      progress=False, on_validate=report)  # fmt: skip


def run_sweep(
    data: str | Path, base: dict[str, Any], space: dict[str, dict[str, Any]], build: Build,
    cfg: SweepConfig, out_dir: str | Path, address: str | None = None,
) -> dict[str, Any]:
    """Run the sweep; write the reports; return ``{"best": row, "default": row, "rows": [...]}``.

    ``base`` is the plain config tree ``{"model": ..., "trainer": ...}``; ``build(tree,
    image_size, action_dim)`` turns a tree into (WorldModelSpec, LossWeights, TrainConfig).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from hmpc.data import LeRobotDataset, build_frame_cache
    from hmpc.parallel import init_ray
    from hmpc.runtime import worker_device

    space = flat_space(space)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ds = LeRobotDataset(data)
    build_frame_cache(ds)  # once here: trials must not race to build it
    defaults = {key: get_path(base, key) for key in space}
    build(base, ds.image_shape[0], ds.action_dim)  # bad base config: fail before any trial
    # trials are Ray actors: a local GPU is shared by the concurrent trials unless sweep.gpus_per_trial says otherwise
    device, gpus = worker_device("auto", cfg.max_concurrent, cfg.gpus_per_trial, address, "sweep.gpus_per_trial")
    init_ray(address)
    scheduler = FIFOScheduler()
    if cfg.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", grace_period=cfg.grace_period,
                                  reduction_factor=2)  # fmt: skip
    trainable = tune.with_parameters(
        _trial, base=base, data=str(Path(data).resolve()), build=build,
        image_size=ds.image_shape[0], action_dim=ds.action_dim, threads=int(cfg.cpus_per_trial),
        device=device,
    )  # fmt: skip
    resources = {"cpu": cfg.cpus_per_trial, "gpu": gpus}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=tune_space(space),
        tune_config=tune.TuneConfig(
            metric=cfg.metric, mode=cfg.mode, num_samples=cfg.trials, scheduler=scheduler,
            search_alg=BasicVariantGenerator(points_to_evaluate=[defaults], random_state=cfg.seed),
            max_concurrent_trials=cfg.max_concurrent,
        ),
        run_config=tune.RunConfig(storage_path=str(out / "tune"), name="sweep", verbose=1),
    )  # fmt: skip
    grid = tuner.fit()
    rows, curves = [], {}
    for i, result in enumerate(grid):
        hist = result.metrics_dataframe
        values = [] if hist is None or cfg.metric not in hist else list(hist[cfg.metric])
        steps = [] if hist is None or "step" not in hist else list(hist["step"])
        trial_config = {k: result.config.get(k) for k in space}
        name = "default" if trial_config == defaults else f"trial {i}"
        curves[name] = (steps, values)
        rows.append({"trial": name, **trial_config, "objective": values[-1] if values else math.nan,
                     "steps": steps[-1] if steps else 0,
                     "error": str(result.error) if result.error else ""})  # fmt: skip
    return _report(rows, curves, base, space, cfg, out, Path(data))


def _report(rows: list[dict[str, Any]], curves: dict[str, tuple[list, list]], base: dict[str, Any],
            space: dict[str, Any], cfg: SweepConfig, out: Path, data: Path) -> dict:  # fmt: skip
    """Write sweep_results.csv, results.md (with the hmpc-train command of the best trial on
    ``data``), sweep.png and the best model preset."""
    sign = 1 if cfg.mode == "max" else -1
    full = max((r["steps"] for r in rows), default=0)
    done = [r for r in rows if r["steps"] == full and math.isfinite(r["objective"])]
    best = max(done, key=lambda r: sign * r["objective"]) if done else None
    default = next((r for r in rows if r["trial"] == "default"), None)
    ranked = sorted(rows, key=lambda r: -sign * r["objective"] if math.isfinite(r["objective"])
                    else math.inf)  # fmt: skip
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(ranked)
    (out / "sweep_results.csv").write_text(buf.getvalue())
    keys = list(space)
    lines = [f"# Sweep: {cfg.metric} ({cfg.mode}), {len(rows)} trials, scheduler {cfg.scheduler}",
             "", "| trial | " + " | ".join(keys) + f" | {cfg.metric} | steps |",
             "|---|" + "---:|" * (len(keys) + 2)]  # fmt: skip
    for r in ranked:
        vals = " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys)
        lines.append(f"| {r['trial']} | {vals} | {r['objective']:.4f} | {r['steps']} |")
    lines += ["", _verdict(best, default, cfg, full, curves)]
    found = None if best is None else {k: best[k] for k in keys}
    if found is not None:
        command = " ".join(shlex.quote(o) for o in ["hmpc-train", f"data={data.resolve()}", *train_overrides(found, out)])
        lines += ["", f"Train with it: `{command}`"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    if found is not None:
        _write_presets(base, found, out)
    plot_sweep(curves, cfg.metric, cfg.mode, out / "sweep.png")
    return {"best": best, "default": default, "rows": ranked}


def _verdict(best: dict | None, default: dict | None, cfg: SweepConfig, full: int,
             curves: dict[str, tuple[list, list]]) -> str:  # fmt: skip
    if best is None:
        return "No trial finished all steps with a finite objective: no best config."
    if default is None or default["steps"] < full or not math.isfinite(default["objective"]):
        text = (f"Best: {best['trial']} with {cfg.metric} = {best['objective']:.4f}; the default "
                f"was stopped early or failed, so it was not measured at {full} steps.")  # fmt: skip
        steps, values = curves.get(best["trial"], ([], []))
        if default is not None and default["steps"] in steps:  # same-step comparison
            at = values[steps.index(default["steps"])]
            text += (f" At step {default['steps']}, where ASHA stopped it: default "
                     f"{default['objective']:.4f} vs best {at:.4f}.")  # fmt: skip
        return text
    gain = best["objective"] - default["objective"]
    if best["trial"] == "default":
        return (f"The default config is the best ({cfg.metric} = {default['objective']:.4f}): "
                "no sampled config beat it.")  # fmt: skip
    return (f"Best: {best['trial']} with {cfg.metric} = {best['objective']:.4f} vs the default's "
            f"{default['objective']:.4f} ({gain:+.4f}).")  # fmt: skip


def train_overrides(best: dict[str, Any], out: Path) -> list[str]:
    """hmpc-train's overrides for the best trial: the model preset written to ``out/model/best.yaml``
    and each searched trainer key by value (a trainer preset would carry the sweep's short training)."""
    trainer = [f"{k}={best[k]!r}" for k in best if k.startswith("trainer.")]
    return [f"hydra.searchpath=[file://{out}]", "model=best", *trainer]


def _write_presets(base: dict[str, Any], best: dict[str, Any], out: Path) -> None:
    from omegaconf import OmegaConf

    tree = apply_overrides(base, best)
    (out / "model").mkdir(exist_ok=True)
    header = f"# Best model preset of the sweep in {out}; values found: {best}\n"
    (out / "model" / "best.yaml").write_text(header + OmegaConf.to_yaml(tree["model"]))
