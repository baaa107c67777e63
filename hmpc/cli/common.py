"""The only place that reads Hydra configs: turns them into the typed objects the library takes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from hmpc.augment import ImageAugment
from hmpc.controllers import ControllerSpec, check_spec_guardrails
from hmpc.evaluate import EvalConfig
from hmpc.objective import LossWeights
from hmpc.rollout import EnvSpec, PolicySpec
from hmpc.security import check_config
from hmpc.train import TrainConfig
from hmpc.world_model import LevelSpec, WorldModelSpec

CONFIG_PATH = "pkg://configs"
D = TypeVar("D")


def plain(cfg: Any) -> Any:
    """Resolved plain Python containers (dict/list) of a config node."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def typed(cls: type[D], values: dict[str, Any], where: str) -> D:
    """``cls(**values)`` with an error naming the config key and the accepted keys."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - fields
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in {where}; accepted keys: {sorted(fields)}")
    return cls(**values)


def env_spec(cfg: DictConfig) -> EnvSpec:
    env = dict(plain(cfg.env))
    name = env.pop("name", None)
    if not name:
        raise ValueError("env config has no 'name'; pick one with env=point_maze")
    return EnvSpec(name, env)


def policy_spec(cfg: DictConfig) -> PolicySpec:
    policy = dict(plain(cfg))
    return PolicySpec(policy.pop("name", "correlated"), policy)


def model_spec(cfg: DictConfig, image_size: int, action_dim: int) -> tuple[WorldModelSpec, LossWeights]:
    """Model and loss settings from ``model=<preset>``; sizes of data come from the dataset."""
    m = dict(plain(cfg))
    for key, value in (("image_size", image_size), ("action_dim", action_dim)):
        if key in m and m[key] != value:  # never silently overruled
            also = f", or collect the data with env.image_size={m[key]}" if key == "image_size" else ""
            raise ValueError(f"model.{key}={m[key]} but the data has {key} {value}: the model takes it from the "
                             f"data; drop model.{key}{also}")
    loss = typed(LossWeights, m.pop("loss", {}), "model.loss")
    levels = tuple(typed(LevelSpec, lv, f"model.levels[{i}]") for i, lv in enumerate(m.pop("levels", [])))
    m["widths"] = tuple(m.get("widths", WorldModelSpec.widths))
    spec = typed(WorldModelSpec, {**m, "levels": levels, "image_size": image_size, "action_dim": action_dim}, "model")
    return spec, loss


def train_config(cfg: DictConfig | dict[str, Any]) -> TrainConfig:
    """``trainer`` settings (a config node or a plain dict) as a TrainConfig."""
    values = dict(plain(cfg))
    augment = values.get("augment") or {}
    if not isinstance(augment, dict):
        raise ValueError(f"trainer.augment={augment!r} must be a group of keys, e.g. "
                         "trainer.augment.blur=1.0 trainer.augment.shift=4")
    values["augment"] = typed(ImageAugment, augment, "trainer.augment")
    return typed(TrainConfig, values, "trainer")


def controller_specs(cfg: DictConfig, cube_model: str | None = None) -> list[ControllerSpec]:
    """One spec per entry of ``controllers`` (the config group selected as a list); a top-level
    ``cube_model`` (the CLI's key) is the folder of every controller of kind cube."""
    if cfg is None or not len(cfg):
        raise ValueError("no controllers selected; use controllers=[hierarchical,flat_gd,random]")
    specs = [typed(ControllerSpec, {"name": n, **plain(c)}, f"controllers/{n}.yaml") for n, c in cfg.items()]
    for i, s in enumerate(specs):
        if cube_model and s.kind == "cube":
            if s.cube_model and s.cube_model != str(cube_model):
                raise ValueError(f"cube_model={cube_model} and controllers.{s.name}.cube_model={s.cube_model} "
                                 "differ; set one of them")
            specs[i] = dataclasses.replace(s, cube_model=str(cube_model))
    for spec in specs:
        check_controller_spec(spec)
    return specs


def check_controller_spec(spec: ControllerSpec) -> None:
    """Build the spec's optimisers and cost weights once here, so an unknown optimiser name or
    key fails before any episode runs (inside workers it would only fail every episode)."""
    from hmpc.costs import CostWeights
    from hmpc.optimizers import make_optimizer

    where = f"controllers/{spec.name}.yaml"
    if spec.kind == "random":
        return
    if spec.kind == "rllib":
        existing_dir(spec.policy, f"controllers.{spec.name}.policy",
                     "train a policy with `hmpc-baseline output_dir=<dir>` and pass that folder")  # fmt: skip
        return
    levels = [("optimizer", spec.optimizer)]
    if spec.kind == "hierarchical":
        levels.append(("high_optimizer", spec.high_optimizer))
    for key, opt in levels:
        opt = dict(opt)
        name = opt.pop("name", None)
        if name is None:
            raise ValueError(f"{where}: {key} has no 'name'; use name: gd, cem, mppi or hybrid")
        try:
            make_optimizer(name, **opt)
        except ValueError as e:
            raise ValueError(f"{where}: {key}: {e}") from e
    try:
        typed(CostWeights, spec.weights, f"{where}: weights")
    except ValueError as e:  # nested guardrail errors name their key below weights
        raise ValueError(str(e) if where in str(e) else f"{where}: {e}") from e
    check_spec_guardrails(spec, None)  # the model-dependent checks run once it is loaded


def eval_config(cfg: DictConfig, workers: int, device: str, address: str | None) -> EvalConfig:
    values = {**plain(cfg), "workers": workers, "device": device, "address": address}
    return typed(EvalConfig, values, "eval")


def existing_dir(path: str | None, key: str, hint: str) -> Path:
    if path in (None, "", "???"):
        raise ValueError(f"{key} is required: {hint}")
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{key}={path}: folder does not exist; {hint}")
    return p


def refuse_shared_multirun_folder(cfg: DictConfig) -> None:
    """Under Hydra's multirun (-m), refuse a default ``output_dir`` outside the job's own folder:
    every job would resolve the same ``outputs/<command>/<time>`` and write over the others."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if "output_dir" not in cfg or not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    overridden = any(o.split("=", 1)[0].lstrip("+~") == "output_dir" for o in hc.overrides.task)
    inside = Path(str(cfg.output_dir)).resolve().is_relative_to(Path(hc.runtime.output_dir).resolve())
    if hc.mode == RunMode.MULTIRUN and not overridden and not inside:
        raise ValueError(f"multirun (-m): every job would write to output_dir={cfg.output_dir}; give each its own "
                         "folder with output_dir='${hydra:runtime.output_dir}' (multirun/<date>/<time>/<job>)")


def refuse_unsafe_targets(cfg: DictConfig) -> None:
    """Refuse a composed config holding a ``_target_`` outside the project's own packages.

    hmpc builds everything from typed specs and never instantiates ``_target_`` entries; one in
    a config is either a mistake or an attempt to run code, so it is refused up front unless
    the user allowed it with ``HMPC_ALLOWED_TARGETS`` (see ``hmpc.security``).
    """
    check_config(cfg, source="config")


def report_user_errors(fn):
    """Refuse unsafe ``_target_`` entries in the config, then run ``fn``; print input errors
    (bad names, keys, paths, files, refused targets) as one clear line and exit 2."""
    import functools
    import sys

    from robots.layouts import LayoutError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            for cfg in (*args, *kwargs.values()):
                if isinstance(cfg, DictConfig):
                    refuse_unsafe_targets(cfg)  # before anything runs
                    refuse_shared_multirun_folder(cfg)
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, LayoutError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def build_training(tree: dict[str, Any], image_size: int, action_dim: int):
    """(WorldModelSpec, LossWeights, TrainConfig) from a plain ``{"model", "trainer"}`` tree
    (sweep trials build theirs from one, on Ray workers)."""
    spec, weights = model_spec(tree["model"], image_size, action_dim)
    return spec, weights, train_config(tree["trainer"])
