"""Simulator-oracle MPC: receding-horizon planning with a clone of the env as a perfect model.

The upper bound every learned controller is compared with. Each control step it reads the real
env's state (``env.unwrapped.get_state()``; the real env is never written to), and for every
candidate action sequence restores that state into its *own* simulator clone, rolls the sequence
out without rendering and scores it by the env's own goal distance. Ground truth is used only
inside this oracle's model, never by a learned controller. The simulator is not differentiable,
so the optimiser must be a sampling one (CEM or MPPI).

Cost per candidate (N, H, A) -> (N,): ``goal * d`` with d the goal distance after the last step
(goal_mode "final"), averaged over the horizon ("sum") or both ("mixed"), plus ``smoothness *``
:func:`hmpc.costs.action_smoothness`. ``score`` picks d: "distance" is the env's Euclidean
``info["distance"]`` (cells), which walls can trap behind a short horizon; "path" is
``info["path_distance"] + 0.5 * info["distance"]``, the maze's BFS cell distance with the
Euclidean one as a tie-break (its weight < 1/sqrt(2) so moving one cell along the path always
wins); on tasks without a maze (``env.has_path_distance`` False) "path" falls back to
"distance". "staged" is "path" everywhere, except on tasks where the agent must first reach an
object (the Panda cube tasks: ``task_state()["cube"]`` is not None), where d is the cube's goal
distance plus ``reach *`` the end effector's distance to the cube (metres): the goal distance
alone does not change until the cube moves, so a short horizon gets no signal from it (on
PandaPickPlace the preset solved 0 of 4 with "distance"); once the cube is in the hand the reach
term stays near zero and carrying it lowers the goal distance. Simulation cost: N * H env steps
per optimiser iteration.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np
import torch

from hmpc.costs import CostWeights, action_smoothness, reduce_horizon
from hmpc.mpc import Controller, Obs, deadline_at, run_optimizer, safe_action, shift_plan
from hmpc.optimizers import GradientDescent, Hybrid, Optimizer

SCORES = ("distance", "path", "staged")
_OFF_PATH = 1e3  # path_distance -1: the ball is (numerically) outside the free cells


class Simulator(Protocol):
    """What the oracle needs of an env (``robots.point_maze.PointMazeEnv`` has all of it)."""

    def get_state(self) -> np.ndarray: ...

    def set_state(self, state: np.ndarray) -> None: ...

    def simulate(self, action: np.ndarray) -> tuple[float, int]: ...

    def task_state(self) -> dict[str, Any]: ...  # score "staged" only: "ee" and "cube" (3,)


def clone_simulator(env: Any) -> Simulator:
    """An independent simulator built like ``env`` (its ``unwrapped.clone()``), with the changes
    of every wrapper around ``env`` that has ``apply_to_clone(sim)`` (a dynamics change: the oracle
    plans in the world the episode runs in)."""
    base = getattr(env, "unwrapped", env)
    missing = [m for m in ("get_state", "set_state", "clone") if not callable(getattr(base, m, None))]
    if missing:
        raise ValueError(
            f"the oracle controller needs an env with get_state/set_state/clone; "
            f"{type(base).__name__} lacks {missing}: add them to the env, or drop kind: oracle"
        )
    sim = base.clone()
    if not callable(getattr(sim, "simulate", None)):
        raise ValueError(
            f"{type(sim).__name__} has no simulate(action) -> (distance, path_distance) method"
        )
    layers, layer = [], env
    while layer is not base and hasattr(layer, "env"):  # gymnasium wrappers, outermost first
        layers.append(layer)
        layer = layer.env
    for layer in reversed(layers):  # innermost first, the order the live env applies them in
        apply = getattr(type(layer), "apply_to_clone", None)  # the wrapper's own, not forwarded
        if callable(apply):
            apply(layer, sim)
    return sim


def _has_cube(sim: Any) -> bool:
    """Whether ``sim`` reports an end effector and a cube in ``task_state()`` (Panda push and
    pick-and-place)."""
    task_state = getattr(sim, "task_state", None)
    if not callable(task_state):
        return False
    task = task_state()
    return task.get("cube") is not None and task.get("ee") is not None


class OracleMPC(Controller):
    """MPC whose model is a simulator clone synced from the real env at every step.

    Args:
        env: the real env the episode runs in; only its state is read (``get_state``).
        optimizer: a sampling optimiser (CEM or MPPI); gradient-based ones are rejected.
        horizon: env steps planned per control step.
        candidates: rows of the warm start handed to the optimiser (row 0 is the mean).
        score: "path" (maze BFS distance + Euclidean tie-break), "distance" (Euclidean) or
            "staged" ("path", plus ``reach *`` the end effector's distance to the cube on tasks
            with one).
        reach: weight of the reach term of score "staged" (per metre of goal distance).
        sim: the simulator to plan in; by default ``clone_simulator(env)``.
        deadline_ms: planning budget per step (None: none); see ``hmpc.mpc``.
    """

    def __init__(
        self,
        env: Any,
        optimizer: Optimizer,
        horizon: int = 8,
        candidates: int = 1,
        weights: CostWeights | None = None,
        action_dim: int = 2,
        score: str = "path",
        sim: Simulator | None = None,
        deadline_ms: float | None = None,
        reach: float = 0.5,
    ) -> None:
        if score not in SCORES:
            raise ValueError(f"oracle score={score!r}; use one of {SCORES}")
        if not reach >= 0:
            raise ValueError(f"oracle reach={reach} must be >= 0 (weight of the end effector's "
                             "distance to the cube under score staged)")
        if isinstance(optimizer, (GradientDescent, Hybrid)):
            raise ValueError(
                f"the oracle's simulator is not differentiable; got {type(optimizer).__name__}: "
                "use optimizer: {name: mppi} or {name: cem}"
            )
        self.sim = sim if sim is not None else clone_simulator(env)
        self.env = getattr(env, "unwrapped", env)
        if not callable(getattr(self.env, "get_state", None)):
            raise ValueError(f"oracle env {type(self.env).__name__} has no get_state(); cannot sync")
        self.optimizer = optimizer
        self.horizon = horizon
        self.candidates = max(1, candidates)
        self.weights = weights or CostWeights()
        self.action_dim = action_dim
        # "path" needs a maze; other tasks (Push-T, Panda) report path_distance -1: use distance.
        # "staged" is "path", or "reach" on tasks with a cube to fetch first.
        maze = bool(getattr(self.env, "has_path_distance", False))
        self.score_kind = "path" if maze and score != "distance" else "distance"
        if score == "staged" and not maze and _has_cube(self.sim):
            self.score_kind = "reach"
        self.reach = float(reach)
        self.sim_steps = 0
        self.deadline_ms = deadline_ms

    def close(self) -> None:
        """Release the simulator clone (its PyBullet client); also happens on garbage collection."""
        close = getattr(self.sim, "close", None)
        if callable(close):
            close()

    def reset(self, obs: Obs, goal_obs: Obs) -> None:
        self.plan = torch.zeros(self.horizon, self.action_dim, dtype=torch.float64)
        self.prev = torch.zeros(self.action_dim, dtype=torch.float64)

    def score(self, state: np.ndarray, actions: torch.Tensor) -> torch.Tensor:
        """Cost of candidates (N, H, A) rolled out from simulator ``state`` -> (N,) float64."""
        arr = actions.detach().cpu().to(torch.float64).numpy()
        dist = np.empty(arr.shape[:2])  # (N, H): goal distance after each step
        for i in range(arr.shape[0]):  # the simulator holds one state: loop over candidates
            self.sim.set_state(state)
            for t in range(arr.shape[1]):
                euclid, path = self.sim.simulate(arr[i, t])
                if self.score_kind == "distance":
                    dist[i, t] = euclid
                elif self.score_kind == "reach":
                    task = self.sim.task_state()
                    dist[i, t] = euclid + self.reach * float(np.linalg.norm(task["ee"] - task["cube"]))
                else:
                    dist[i, t] = path + 0.5 * euclid if path >= 0 else _OFF_PATH
        self.sim_steps += dist.size
        d = reduce_horizon(torch.as_tensor(dist), self.weights.goal_mode, self.weights.goal_mix)
        smooth = action_smoothness(actions.detach().cpu().to(torch.float64), self.prev)
        return self.weights.goal * d + self.weights.smoothness * smooth

    def act(self, obs: Obs) -> tuple[np.ndarray, dict[str, Any]]:
        t0 = time.perf_counter()
        state = np.asarray(self.env.get_state()).copy()  # ground truth: read, never written
        steps0 = self.sim_steps
        init = self.plan.unsqueeze(0).repeat(self.candidates, 1, 1)  # (B, H, A) warm start
        best, info, _ = run_optimizer(self.optimizer, lambda a: self.score(state, a), init, -1.0, 1.0,
                                      deadline_at(t0, self.deadline_ms))
        # the stored plan is already shifted: its row 0 is the previous plan's action for this step
        action, fell_back = safe_action(best[0], self.plan[0].numpy())
        # warm start of the next step: the new plan shifted by one, or after a fallback the old one consumed
        self.plan = shift_plan(self.plan if fell_back else best.detach().cpu().to(torch.float64))
        self.prev = torch.as_tensor(action, dtype=torch.float64)
        info = {**info, "fallback": fell_back, "sim_steps": self.sim_steps - steps0}
        info["plan_ms"] = 1000 * (time.perf_counter() - t0)
        return action, info
