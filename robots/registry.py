"""Env registry: config names -> env constructors, with actionable errors.

``make_env("point_maze", layout="medium")`` is what configs and rollout workers call;
:func:`register_gymnasium_envs` additionally exposes the envs to ``gymnasium.make`` and is
called explicitly (importing this module registers nothing).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import gymnasium

# Config name (``env=<name>``) -> (gymnasium id or None, entry point "module:attr"). Entry points
# are imported on use, so one task's heavy assets never load for another.
ENV_REGISTRY: dict[str, tuple[str | None, str]] = {
    "point_maze": ("hmpc/PointMaze-v0", "robots.point_maze:PointMazeEnv"),
    "two_rooms": ("hmpc/TwoRooms-v0", "robots.two_rooms:TwoRoomsEnv"),
    "push_t": ("hmpc/PushT-v0", "robots.push_t:PushTEnv"),
    "panda_reach": ("hmpc/PandaReach-v0", "robots.panda:PandaReachEnv"),
    "panda_push": ("hmpc/PandaPush-v0", "robots.panda:PandaPushEnv"),
    "panda_pick_place": ("hmpc/PandaPickPlace-v0", "robots.panda:PandaPickPlaceEnv"),
    # Any installed gymnasium env with rgb_array rendering and Box actions (robots/adapter.py).
    "gymnasium": (None, "robots.adapter:GymnasiumAdapter"),
}


def env_class(name: str) -> Callable[..., gymnasium.Env]:
    """The constructor registered as ``name`` (imports its module)."""
    module, attr = ENV_REGISTRY[name][1].split(":")
    return getattr(importlib.import_module(module), attr)


def env_name(env: Any) -> str | None:
    """The config name an env (or a wrapper of one) is registered under, or None."""
    base = getattr(env, "unwrapped", env)
    path = f"{type(base).__module__}:{type(base).__name__}"
    return next((name for name, (_, entry) in ENV_REGISTRY.items() if entry == path), None)


def _accepted_kwargs(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword names ``factory`` accepts, or None when it takes ``**kwargs``."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def make_env(name: str, **kwargs: Any) -> gymnasium.Env:
    """Build the env registered as ``name`` with constructor keyword arguments ``kwargs``.

    Raises:
        ValueError: unknown ``name`` (lists the known ones) or unknown keyword (lists the
            accepted ones).
    """
    if name not in ENV_REGISTRY:
        raise ValueError(
            f"unknown env {name!r}; known envs: {', '.join(sorted(ENV_REGISTRY))}; "
            f"pick one with env=<name>"
        )
    factory = env_class(name)
    accepted = _accepted_kwargs(factory)
    if accepted is not None:
        bad = sorted(set(kwargs) - set(accepted))
        if bad:
            # Checked up front: a TypeError from deep inside a constructor names no config key.
            raise ValueError(
                f"env {name!r} got unknown argument(s) {bad}; accepted arguments: "
                f"{', '.join(accepted)}"
            )
    return factory(**kwargs)


def register_gymnasium_envs() -> None:
    """Register the hmpc envs with gymnasium (``gymnasium.make("hmpc/PointMaze-v0")``).

    Idempotent: ids already registered are left alone.
    """
    for env_id, entry_point in ENV_REGISTRY.values():
        if env_id is not None and env_id not in gymnasium.registry:
            # No max_episode_steps: the env truncates itself, so no TimeLimit wrapper is added.
            gymnasium.register(id=env_id, entry_point=entry_point)
