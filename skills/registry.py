"""Policy registry: config names -> behaviours, built for a given env.

Noise policies need only the action size; scripted experts and waypoint followers read
privileged state through the env, so their constructors take ``env`` as first argument.
Entry points are imported on use, so one task's expert never loads another's assets.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from skills.exploration import Policy

POLICY_REGISTRY: dict[str, str] = {
    "uniform": "skills.exploration:UniformPolicy",
    "correlated": "skills.exploration:CorrelatedNoisePolicy",
    "waypoints": "skills.waypoints:MazeWaypointPolicy",
    "mixture": "skills.mixture:MixturePolicy",
    "push_t_expert": "skills.push_t_expert:PushTExpert",
    "panda_reach_expert": "skills.panda_experts:PandaReachExpert",
    "panda_push_expert": "skills.panda_experts:PandaPushExpert",
    "panda_pick_place_expert": "skills.panda_experts:PandaPickPlaceExpert",
    "cube_planner": "skills.cube_planner:CubePlannerPolicy",
}


def policy_class(name: str) -> type:
    """The class registered as ``name`` (imports its module)."""
    module, attr = POLICY_REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)


def needs_env(name: str) -> bool:
    """Whether the policy reads the env (experts, waypoints) rather than only the action size."""
    params = list(inspect.signature(policy_class(name)).parameters)
    return bool(params) and params[0] == "env"


def ship_policy(name: str, kwargs: dict[str, Any], key: str = "policy") -> dict[str, Any]:
    """``name``'s constructor arguments as they should travel to workers: a policy class with a
    ``ship(kwargs, key)`` classmethod reads what it names on disk here, in the driver (the cube
    planner's model folder), so workers on other machines need no shared filesystem and a bad
    path fails before any worker starts; errors name the config key under ``key``. Other
    policies' arguments are returned as given."""
    if name not in POLICY_REGISTRY:
        return dict(kwargs)  # make_policy names the known policies
    ship = getattr(policy_class(name), "ship", None)
    return ship(dict(kwargs), key) if ship is not None else dict(kwargs)


def make_policy(name: str, env: Any, **kwargs: Any) -> Policy:
    """Build the policy registered as ``name``.

    Args:
        name: a key of :data:`POLICY_REGISTRY`.
        env: the env it will act in, or for noise policies just the action size (int).
        kwargs: the policy's constructor arguments (from config).

    Raises:
        ValueError: unknown ``name`` (lists the known ones), bad keyword arguments, or an
            env-reading policy given only an action size.
    """
    if name not in POLICY_REGISTRY:
        raise ValueError(
            f"unknown policy {name!r}; known policies: {', '.join(sorted(POLICY_REGISTRY))}"
        )
    if needs_env(name):
        if isinstance(env, int):
            raise ValueError(f"policy {name!r} reads the env's state: pass the env, not an int")
        first = env
    else:
        first = env if isinstance(env, int) else int(env.action_space.shape[0])
    try:
        return policy_class(name)(first, **kwargs)
    except TypeError as err:
        # Re-raised with context: usually a misspelt config key.
        raise ValueError(f"bad arguments {sorted(kwargs)} for policy {name!r}: {err}") from err
