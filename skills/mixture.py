"""A mixture of data-collection behaviours, one drawn per episode (D4RL-style data diversity).

One behaviour rarely gives a world model everything it needs. In PointMaze large, waypoint
following covers the maze but almost never presses on a wall (1.3 % of its steps are blocked),
so a model trained on it predicts the ball straight through walls; Ornstein-Uhlenbeck noise
presses on walls often (18 % of steps) but stays near its start. A mixture gets both:

    policy=maze_mixture        # configs/policy/maze_mixture.yaml
    policy=mixture 'policy.components=[{name: waypoints, weight: 4, noise: 0.5}, {name: correlated, weight: 3}]'

The component of an episode is drawn from the episode seed alone, so a dataset is the same for
any number of workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from skills.exploration import Policy


class MixturePolicy:
    """Per episode, act as one of ``components``, drawn with probability ∝ its ``weight``.

    Args:
        env: the env the components act in.
        components: one mapping per behaviour: ``name`` (a policy registry key), optional
            ``weight`` (default 1, must be > 0) and that policy's own arguments.
    """

    def __init__(self, env: Any, components: Sequence[Mapping[str, Any]]) -> None:
        from skills.registry import make_policy  # the registry lists this class: import on use

        if not components:
            raise ValueError("policy.components is empty; give at least one "
                             "{name: <policy>, weight: <w>, ...<its arguments>}")
        self.names: list[str] = []
        self.policies: list[Policy] = []
        weights = []
        for i, comp in enumerate(components):
            comp = dict(comp)
            if "name" not in comp:
                raise ValueError(f"policy.components[{i}] has no 'name'; e.g. {{name: correlated}}")
            name, weight = comp.pop("name"), float(comp.pop("weight", 1.0))
            if name == "mixture":
                raise ValueError(f"policy.components[{i}]: a mixture cannot contain a mixture")
            if not weight > 0:
                raise ValueError(f"policy.components[{i}].weight={weight} must be > 0")
            self.names.append(name)
            self.policies.append(make_policy(name, env, **comp))
            weights.append(weight)
        self.probs = np.asarray(weights) / sum(weights)
        self.current = 0

    @classmethod
    def ship(cls, kwargs: dict[str, Any], key: str = "policy") -> dict[str, Any]:
        """Each component's arguments as :func:`skills.registry.ship_policy` ships them (errors
        name ``<key>.components[i]``)."""
        from skills.registry import ship_policy

        components = kwargs.get("components")
        if not isinstance(components, Sequence) or isinstance(components, str):
            return kwargs  # the constructor says what is wrong
        shipped = []
        for i, comp in enumerate(components):
            comp = dict(comp) if isinstance(comp, Mapping) else comp
            if isinstance(comp, dict) and isinstance(comp.get("name"), str):
                name = comp.pop("name")
                comp = {"name": name, **ship_policy(name, comp, f"{key}.components[{i}]")}
            shipped.append(comp)
        return {**kwargs, "components": shipped}

    def reset(self, seed: int | None = None) -> None:
        """Draw this episode's component from ``seed`` and reset it with the same seed."""
        rng = np.random.default_rng(None if seed is None else [seed, 0x6D6978])  # "mix" stream
        self.current = int(rng.choice(len(self.policies), p=self.probs))
        self.policies[self.current].reset(seed)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The current component's action, float32 (A,)."""
        return self.policies[self.current].act(obs)
