"""Hierarchical MPC: the top level plans macro-actions toward the goal, each level hands its first
predicted latent down as the subgoal of the level below, and level 1 plans real actions with its
own optimiser (gradient descent by default) to reach that subgoal. All levels replan.

With levels 1..L, level l < L plans exactly one step of level l+1 (k_{l+1} of its own steps) and
is scored in level l+1's space: || project(rollout_l(s_l, plan)[-1]) - subgoal_{l+1} ||².

A failed abstract level (optimiser error, non-finite plan or cost) keeps the subgoals it handed
down before; with none yet, or when level 1 fails, the command falls back (shifted previous plan,
then zero) in the same step. Either way ``info["fallback"]`` is True and ``info["error"]`` says why.

Guardrails (``weights.guardrails``) apply to level 1's plan, exactly as in flat MPC (terms in
``info["terms"]``, ``info["predicted_violation"]``). ``deadline_ms`` is one budget for the whole
step, shared by all levels from the top down: a level that finds it spent stops with its best plan
so far, and one in which no iteration finished in time counts as failed (``"deadline ..."``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hmpc.costs import (
    CostWeights,
    action_bound_penalty,
    action_smoothness,
    goal_distance,
    magnitude_prior,
)
from hmpc.guardrails import check_guardrails, guardrail_terms, predicted_violation
from hmpc.landmarks import LandmarkGraph
from hmpc.mpc import LatentController, Obs, deadline_at, run_optimizer, safe_action, shift_plan
from hmpc.optimizers import Optimizer
from hmpc.world_model import WorldModel


class HierarchicalMPC(LatentController):
    """Cascade of planners from the top level down to real actions.

    Args:
        optimizers: one per level, index 0 = level 1 (real actions) ... index L-1 = top level.
        top_horizon: macro steps planned at the top level.
        replan_every: env steps between replans of the abstract levels; they also replan as soon
            as level 1 comes within ``subgoal_tolerance`` (squared latent distance) of the subgoal.
        low_replan_every: env steps between level-1 optimisations (1..k). In between, the step
            executes the next action of level 1's current plan (already optimised under every cost
            term, guardrails included); level 1 also replans whenever an abstract level did, and
            after a fallback. The observation is still encoded every step (subgoal tolerance,
            predicted violations).
        candidates: parallel restarts / warm-start copies per level.
        macro_support: keep abstract plans inside the region of realisable macro codes
            (``WorldModel.macro_support``: codes some chunk of real actions produces). Off, they
            range over tanh's whole box [-1, 1]^M, where CEM finds shortcuts through walls.
        compile: a ``torch.compile`` backend for every level's rollouts, or None (see
            :class:`hmpc.mpc.LatentController`).
        goal_switch: the final approach. Once level 2's subgoal lies within this squared level-2
            distance of the goal, level 1 plans toward the goal image's own level-1 latent
            (``weights.goal_mode`` over its k steps) instead of the subgoal: the finest latent
            tells positions apart that the coarser one merges. 0 never switches.
        landmarks, landmark_hops: with a :class:`hmpc.landmarks.LandmarkGraph` of the training
            data and hops > 0, the top level plans toward the landmark ``landmark_hops`` nodes
            ahead on the graph's shortest route to the goal (the goal itself once the route is
            that short; routes start at the nearest landmark that has one), re-read at every
            abstract replan. While it heads for a waypoint the final approach (``goal_switch``)
            stays off.
    """

    def __init__(
        self,
        model: WorldModel,
        optimizers: Sequence[Optimizer],
        top_horizon: int = 4,
        replan_every: int = 1,
        subgoal_tolerance: float = 0.0,
        candidates: int = 4,
        weights: CostWeights | None = None,
        device: torch.device | str = "cpu",
        deadline_ms: float | None = None,
        macro_support: bool = True,
        compile: str | None = None,
        goal_switch: float = 0.0,
        landmarks: LandmarkGraph | None = None,
        landmark_hops: int = 0,
        low_replan_every: int = 1,
    ) -> None:
        super().__init__(model, device, compile)
        if landmark_hops < 0 or (landmark_hops > 0 and landmarks is None):
            raise ValueError(f"landmark_hops={landmark_hops} must be >= 0, and > 0 needs a landmark "
                             "graph of the training data (controllers.<name>.landmarks > 0)")
        self.landmarks = landmarks if landmark_hops > 0 else None
        self.landmark_hops = landmark_hops
        if not goal_switch >= 0:
            raise ValueError(f"goal_switch={goal_switch} must be >= 0 (0: never plan level 1 "
                             "toward the goal itself)")
        self.goal_switch = goal_switch
        spec = model.spec
        if spec.num_levels < 2:
            raise ValueError("hierarchical MPC needs a world model with >= 2 levels (model.levels)")
        if len(optimizers) != spec.num_levels:
            raise ValueError(f"need {spec.num_levels} optimisers (one per level), got {len(optimizers)}")
        self.optimizers = list(optimizers)
        self.top = spec.num_levels
        self.top_horizon = top_horizon
        self.replan_every = max(1, replan_every)
        k = spec.levels[0].k
        if not 1 <= low_replan_every <= k:
            raise ValueError(f"low_replan_every={low_replan_every} must be in 1..{k} (level 1 "
                             f"plans k = {k} steps: one step of level 2); 1 replans every step")
        self.low_replan_every = low_replan_every
        self.subgoal_tolerance = subgoal_tolerance
        self.candidates = candidates
        self.weights = (weights or CostWeights()).for_model(model.spec)
        check_guardrails(spec, self.weights.guardrails)
        self.deadline_ms = deadline_ms
        self.deadline: float | None = None  # absolute time of the current step's deadline
        self.supports = (
            {lv: model.macro_support(lv) for lv in range(2, self.top + 1)} if macro_support else {}
        )

    def _horizon(self, level: int) -> int:
        return self.top_horizon if level == self.top else self.model.spec.levels[level - 1].k

    def _reset(self, obs: Obs, goal_obs: Obs) -> None:
        self.goal_1 = self.encode(goal_obs)[0]  # (D_1,)
        self.weights.goal_part(self.goal_1)  # a goal_dims outside the latent fails here
        self.goal_top = self.model.project(self.goal_1[None], self.top)[0]  # (D_top,)
        self.goal_2 = self.model.project(self.goal_1[None], 2)[0]  # (D_2,), for goal_switch
        self.target_top = self.goal_top  # what the top level plans toward: goal or waypoint
        if self.landmarks is not None:  # the goal's landmark: the nearest one some edge leads into
            g = self.landmarks
            self.goal_mark = int(g.nearest(self.goal_1[None].detach().cpu().numpy(), g.entered)[0])
            self.to_goal = g.distances_to(self.goal_mark)  # (M,) route lengths, inf: no route
            self.reachable = np.isfinite(self.to_goal)  # (M,) holds goal_mark at least
        self.final_approach = False  # level 1 plans toward goal_1 (see goal_switch)
        spec = self.model.spec
        self.plans = {
            lv: torch.zeros(self._horizon(lv), spec.action_size(lv), device=self.device)
            for lv in range(1, self.top + 1)
        }
        self.subgoals: dict[int, torch.Tensor] = {}
        self.elapsed = {lv: 0 for lv in range(2, self.top + 1)}  # env steps since the level planned
        self.prev = torch.zeros(spec.action_dim, device=self.device)
        self.since_replan = self.replan_every  # force a replan on the first step
        self.since_low = self.low_replan_every  # likewise level 1
        self.low_cost = float("nan")  # cost of level 1's last optimisation

    def _level_cost(self, level: int, s: torch.Tensor, plan: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted terms for candidates ``plan`` (N, H, A_l) from latent s (1, D_l)."""
        w = self.weights
        pred = self.rollout(s, plan, level)  # (N, H, D_l)
        if level == self.top:
            terms = {"goal": w.goal * goal_distance(pred, self.target_top, w.goal_mode, w.goal_mix)}
        elif level == 1 and self.final_approach:
            terms = {"goal": w.goal * goal_distance(w.goal_part(pred), w.goal_part(self.goal_1),
                                                    w.goal_mode, w.goal_mix)}
        else:
            up = self.model.project_from(pred[:, -1:], level, level + 1)  # (N, 1, D_{l+1})
            terms = {"subgoal": w.goal * goal_distance(up, self.subgoals[level + 1], "final")}
        if level == 1:
            terms["smoothness"] = w.smoothness * action_smoothness(plan, self.prev)
            terms["action_bound"] = w.action_bound * action_bound_penalty(plan)
            terms.update(guardrail_terms(self.model, s, pred, plan, w.guardrails))
        else:
            terms["macro_prior"] = w.macro_prior * magnitude_prior(plan)
        return terms

    def _plan_level(self, level: int, s: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any], bool]:
        """Optimise ``level``'s plan from latent s (1, D_l) -> (plan (H_l, A_l), info, ok)."""

        support = self.supports.get(level)
        low, high = (-1.0, 1.0) if support is None else (support.low, support.high)

        def cost_fn(x: torch.Tensor) -> torch.Tensor:
            if support is not None:  # the box alone still holds unrealisable codes
                x = support.project(x)
            return sum(self._level_cost(level, s, x).values())

        init = self.plans[level].unsqueeze(0).repeat(self.candidates, 1, 1)
        best, info, ok = run_optimizer(
            self.optimizers[level - 1], cost_fn, init, low, high, self.deadline)
        if ok and support is not None:
            best = support.project(best)
        if ok:
            self.plans[level] = best.detach()
        return best, info, ok

    def _replan_abstract(self, s1: torch.Tensor) -> dict[str, Any]:
        """Plan levels top..2 and refresh the subgoals they hand down (kept when a level fails)."""
        info: dict[str, Any] = {}
        if self.landmarks is not None:
            info["landmark"] = self._route_target(s1)
        for level in range(self.top, 1, -1):
            s = self.model.project(s1, level)  # (1, D_l)
            self._align_warm_start(level)
            best, linfo, ok = self._plan_level(level, s)
            info[f"l{level}_cost"], info[f"l{level}_iters"] = linfo["cost"], linfo["iters"]
            if not ok:
                info["fallback"], info["error"] = True, _level_error(level, linfo["error"])
                if level not in self.subgoals:
                    return info  # no subgoal to keep: act() falls back
                continue  # keep the previous subgoal of this level
            with torch.no_grad():
                first = self.model.predict(s, best[:1], level)  # (1, D_l)
            self.subgoals[level] = first[0]
        routing = info.get("landmark", -1) >= 0  # heading for a waypoint, not for the goal
        if self.goal_switch > 0 and 2 in self.subgoals and not routing:
            self.final_approach = float((self.subgoals[2] - self.goal_2).pow(2).sum()) < self.goal_switch
        info["final_approach"] = self.final_approach
        return info

    def _route_target(self, s1: torch.Tensor) -> int:
        """Point the top level at the landmark ``landmark_hops`` ahead on the route from s1
        (1, D_1) to the goal; returns its index, or -1 when it plans toward the goal itself
        (the route is that short)."""
        here = int(self.landmarks.nearest(s1.detach().cpu().numpy(), self.reachable)[0])
        route = self.landmarks.route(here, self.to_goal, self.landmark_hops)
        if len(route) < self.landmark_hops or route[-1] == self.goal_mark:  # the goal is near
            self.target_top = self.goal_top
            return -1
        mark = torch.tensor(self.landmarks.latents[route[-1]], device=self.device)  # a copy
        with torch.no_grad():
            self.target_top = self.model.project(mark[None], self.top)[0]
        return route[-1]

    def _align_warm_start(self, level: int) -> None:
        """Advance ``level``'s previous plan by the macro steps the env has lived through since it
        was made (rounded), so the warm start begins at the current state, not in the past."""
        shift = round(self.elapsed[level] / self.model.spec.span(level))
        for _ in range(min(shift, self._horizon(level))):
            self.plans[level] = shift_plan(self.plans[level])
        self.elapsed[level] = 0

    def _near_subgoal(self, s1: torch.Tensor) -> bool:
        if self.subgoal_tolerance <= 0 or 2 not in self.subgoals:
            return False
        with torch.no_grad():
            d = (self.model.project(s1, 2)[0] - self.subgoals[2]).pow(2).sum()
        return float(d) < self.subgoal_tolerance

    def act(self, obs: Obs) -> tuple[np.ndarray, dict[str, Any]]:
        t0 = time.perf_counter()
        self.deadline = deadline_at(t0, self.deadline_ms)
        s1 = self.encode(obs)
        info: dict[str, Any] = {"replanned": False}
        if self.since_replan >= self.replan_every or self._near_subgoal(s1):
            info.update(self._replan_abstract(s1))
            info["replanned"], self.since_replan = True, 0
        self.since_replan += 1
        for level in self.elapsed:
            self.elapsed[level] += 1
        old = self.plans[1]
        self.since_low += 1
        if 2 in self.subgoals and (info["replanned"] or self.since_low > self.low_replan_every):
            best, linfo, ok = self._plan_level(1, s1)
            self.low_cost = linfo["cost"]
            self.since_low = 1 if ok else self.low_replan_every  # a failed plan is redone next step
        elif 2 in self.subgoals:  # between level-1 replans: the current plan's next action
            best, linfo = old, {"cost": self.low_cost, "iters": 0}
        else:  # the abstract levels never produced a subgoal: nothing to plan toward
            best, linfo = torch.full_like(old, float("nan")), {"cost": float("nan"), "iters": 0}
        # plans[1] is stored shifted: its row 0 is the previous plan's action for this step.
        action, fell_back = safe_action(best[0], old[0].cpu().numpy())
        plan_ms = 1000 * (time.perf_counter() - t0)  # the per-term report below is not planning
        terms: dict[str, float] = {}
        if not fell_back:
            self.plans[1] = shift_plan(best).detach()
            with torch.no_grad():
                terms = {k: float(v[0]) for k, v in self._level_cost(1, s1, best.unsqueeze(0)).items()}
        else:  # consumed one step of the previous plan
            self.plans[1] = shift_plan(old)
            if "error" in linfo:
                info["error"] = _level_error(1, linfo["error"])
        self.prev = torch.as_tensor(action, device=self.device)
        violated = predicted_violation(self.model, s1, self.prev, self.weights.guardrails)
        if violated is not None:
            info["predicted_violation"] = violated
        fell_back = fell_back or bool(info.get("fallback", False))
        info.update(cost=linfo["cost"], iters=linfo["iters"], terms=terms, fallback=fell_back)
        if "deadline_hit" in linfo:
            info["deadline_hit"] = linfo["deadline_hit"]
        if 2 in self.subgoals:  # the latent handed to level 1, for display (nearest dataset frame)
            info["subgoal"] = self.subgoals[2].detach().cpu().numpy()
        info["plan_ms"] = plan_ms
        return action, info


def _level_error(level: int, error: str) -> str:
    """Error of one level, tagged; a missed deadline keeps its "deadline" prefix."""
    if error.startswith("deadline"):
        return f"deadline (level {level}){error[len('deadline'):]}"
    return f"level {level}: {error}"
