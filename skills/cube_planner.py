"""The cube planner as a data-collection behaviour: episodes where the learned controller acts.

A readout trained on the dataset reads the cube well where the dataset went (about 1 cm on
held-out episodes) and badly where the planner goes (bench/RESULTS.md: 4.3 cm on the frames the
cube planner visits, the hand low beside the cube), because the planner reaches states the expert
and the noise never did. Collecting the planner's own episodes, with the simulator's cube pose
logged as every dataset's label, and training the readout on them too (``hmpc-cube
readout_data=[...]``) is DAgger for perception; the same episodes show the dynamics the states
the planner reaches (``hmpc-cube dynamics_data=[...]``):

    hmpc-collect env=panda_pick_place policy=cube_planner policy.cube_model=runs/cube episodes=50 seed=9000 output_dir=<dir>

The policy sees what ``hmpc-eval`` gives the ``cube_cem`` controller: the camera image, the 7
proprioceptive dims and the episode's goal image (``env.unwrapped.goal_observation()``, the task's
input); never the cube's true state.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


class CubePlannerPolicy:
    """:class:`hmpc.cube_mpc.CubeMPC` with CEM on the cube model in ``cube_model`` (a folder
    ``hmpc-cube`` wrote), replanned every step toward the goal image, reseeded per episode.

    Args:
        env: a PandaPush / PandaPickPlace env (its goal image is read at ``reset``).
        cube_model: the cube model's folder, or that folder as :meth:`ship` read it (what
            ``hmpc-collect`` passes to its workers).
        horizon, population, iters, elites: the CEM planner (the ``cube_cem`` preset's defaults).
        reach, disagreement, keep, keep_margin: the objective (as ``controllers.cube_cem.cube``).
        noise: N(0, noise^2) added to every action component (then clipped to [-1, 1]).
    """

    def __init__(self, env: Any, cube_model: str | dict[str, Any], horizon: int = 12, population: int = 128, iters: int = 3,
                 elites: int = 16, reach: float = 1.0, disagreement: float = 2.0, keep: float = 0.0,
                 keep_margin: float = 0.05, noise: float = 0.0) -> None:
        from hmpc.cube_model import check_cube_env, cube_blob, cube_from_blob
        from hmpc.cube_mpc import bad_objective
        from robots.registry import env_name

        base = getattr(env, "unwrapped", env)
        if not hasattr(base, "goal_observation"):
            raise ValueError(f"cube_planner needs an env with goal_observation(); got {type(base).__name__}")
        if not (np.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise={noise!r} must be a finite number >= 0")
        objective = {"reach": reach, "disagreement": disagreement, "keep": keep, "keep_margin": keep_margin}
        if bad := bad_objective(objective):  # checked here: the controller is built at each reset
            raise ValueError(f"cube_planner: {bad} must be finite numbers >= 0 (as controllers.cube_cem.cube)")
        self._base = base
        blob = cube_model if isinstance(cube_model, dict) else cube_blob(cube_model, "policy.cube_model")
        # the env, image size and camera it was fit for, as hmpc-eval checks
        check_cube_env(blob, env, env_name(env) or type(base).__name__)
        self.model = cube_from_blob(blob)
        self.planner = {"name": "cem", "iters": iters, "population": population, "elites": elites}
        self.horizon, self.noise, self.objective = horizon, float(noise), objective
        self._rng = np.random.default_rng()
        self.controller = None

    @classmethod
    def ship(cls, kwargs: dict[str, Any], key: str = "policy") -> dict[str, Any]:
        """``kwargs`` with the ``cube_model`` folder read into plain config and arrays
        (:func:`hmpc.cube_model.cube_blob`), in the driver: workers on other machines of a Ray
        cluster need no shared filesystem. Errors name ``<key>.cube_model``."""
        from hmpc.cube_model import cube_blob

        if isinstance(kwargs.get("cube_model"), dict):
            return kwargs
        return {**kwargs, "cube_model": cube_blob(kwargs.get("cube_model"), f"{key}.cube_model")}

    def reset(self, seed: int | None = None) -> None:
        """Start an episode (after ``env.reset``): a planner seeded by ``seed``, aimed at the goal image."""
        from hmpc.cube_mpc import CubeMPC
        from hmpc.evaluate import observation_for
        from hmpc.optimizers import make_optimizer

        self._rng = np.random.default_rng(seed)
        planner = dict(self.planner)
        optimizer = make_optimizer(planner.pop("name"), seed=seed, **planner)
        self.controller = CubeMPC(self.model, optimizer, self.horizon, **self.objective)
        self._observe = functools.partial(observation_for, self.controller)  # image and proprioception only
        goal = self._observe(self._base.goal_observation())
        self.controller.reset(goal, goal)  # CubeMPC reads only the goal here; the start comes with act

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """float32 (4,) in [-1, 1]: the planner's first action for this observation."""
        if self.controller is None:
            raise RuntimeError("cube_planner: call reset(seed) after env.reset before act")
        action, _ = self.controller.act(self._observe(obs))
        if self.noise > 0:
            action = action + self._rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
