"""Controllers with one interface: ``reset(obs, goal_obs)``, ``act(obs) -> (action, info)``.

Flat MPC plans real actions on level 1 with any optimiser, receding horizon, warm-started from
the shifted previous plan. Every command passes through ``safe_action``: a non-finite plan falls
back (shifted previous plan, then zero) in the same step and is counted; commands are clipped to
the action box before they leave the controller. ``run_optimizer`` turns an optimiser error or a
plan without a finite cost into a NaN plan, so the same fallback path handles every failure.

Guardrails (``weights.guardrails``, see ``hmpc.costs``) add state-bound, forbidden-region and OOD
terms to the level-1 cost; every term's value is in ``info["terms"]`` and, when bounds or regions
are configured and the model has a state probe, ``info["predicted_violation"]`` says whether the
state predicted after the sent action violates them. ``deadline_ms`` bounds the planning time of
one step (encoding included): the optimiser returns its best plan so far when it runs out, and a
step in which no iteration finished in time falls back with ``info["error"] = "deadline: ..."``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hmpc.costs import CostWeights, action_bound_penalty, action_smoothness, goal_distance
from hmpc.guardrails import check_guardrails, guardrail_terms, predicted_violation
from hmpc.optimizers import Bound, CostFn, Optimizer
from hmpc.world_model import WorldModel

Obs = dict[str, np.ndarray]


class Controller(ABC):
    """Contract: ``reset`` is called once per episode with the first observation and the goal
    observation (its image; never the goal *state*, which is for scoring only); ``act`` returns an
    action in [-1, 1]^A as float32 and an info dict (plan cost, iterations, time, fallback).
    The harness passes only the observation keys listed in ``observation_keys``."""

    observation_keys: tuple[str, ...] = ("pixels",)
    state_dims: int | None = None  # with "state" observed: only its first state_dims dims (None: all)

    @abstractmethod
    def reset(self, obs: Obs, goal_obs: Obs) -> None: ...

    @abstractmethod
    def act(self, obs: Obs) -> tuple[np.ndarray, dict[str, Any]]: ...

    def plan_image(self) -> np.ndarray | None:
        """An image of what the last ``act`` planned, for the videos' third panel (uint8 (S, S, 3),
        any size), or None; called by the harness only when it records a video."""
        return None


def image_tensor(obs: Obs, image_size: int, device: torch.device) -> torch.Tensor:
    """``obs["pixels"]`` (H, W, 3) uint8 as a batch of one (1, 3, H, W) on ``device``; an image of
    another size than the checkpoint's fails with both sizes."""
    px = obs["pixels"]
    expected = (image_size, image_size, 3)
    if px.shape != expected:
        raise ValueError(
            f"observation image has shape {px.shape} but the checkpoint expects {expected}; "
            "use the env settings (image_size) the model was trained with"
        )
    return torch.as_tensor(px, device=device).permute(2, 0, 1).unsqueeze(0)


def safe_action(
    action: torch.Tensor | np.ndarray, fallback: np.ndarray | None, low: float = -1.0, high: float = 1.0
) -> tuple[np.ndarray, bool]:
    """Finite, in-bounds command from a planner output. Returns (action float32 (A,), fell_back)."""
    a = np.asarray(action.detach().cpu() if isinstance(action, torch.Tensor) else action, np.float64)
    fell_back = not np.all(np.isfinite(a))
    if fell_back:
        ok = fallback is not None and np.all(np.isfinite(fallback))
        a = np.asarray(fallback, np.float64) if ok else np.zeros_like(a)
    return np.clip(a, low, high).astype(np.float32), fell_back


def deadline_at(t0: float, deadline_ms: float | None) -> float | None:
    """Absolute ``time.perf_counter()`` deadline of a step that started at ``t0`` (None: none)."""
    return None if deadline_ms is None else t0 + deadline_ms / 1000.0


def shift_plan(plan: torch.Tensor) -> torch.Tensor:
    """(H, A) plan advanced one step: rows 1.. then the last row repeated."""
    return torch.cat([plan[1:], plan[-1:]])


def run_optimizer(
    optimizer: Optimizer, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound,
    deadline: float | None = None,
) -> tuple[torch.Tensor, dict[str, Any], bool]:
    """``optimizer.optimize`` that never raises. Returns (plan (H, A), info, ok).

    Not ok (an exception, no iteration finished before ``deadline`` (an absolute
    ``time.perf_counter()`` time; passed on only when set), a non-finite plan or no finite cost):
    the plan is all NaN, so callers fall back, and ``info["error"]`` says why.
    """
    try:
        if deadline is None:
            best, info = optimizer.optimize(cost_fn, init, low, high)
        else:
            best, info = optimizer.optimize(cost_fn, init, low, high, deadline=deadline)
    except Exception as e:  # any optimiser failure must fall back in this same control step
        best, info = None, {"cost": float("nan"), "iters": 0, "error": f"{type(e).__name__}: {e}"}
    if best is not None and info.get("deadline_hit") and not info.get("iters"):
        late = 1000 * (time.perf_counter() - deadline)
        info = {**info, "error": f"deadline: no optimiser iteration finished in time "
                                 f"({late:.1f} ms past the step's deadline_ms)"}
    elif best is not None and not bool(torch.isfinite(best).all()):
        info = {**info, "error": "optimiser returned a non-finite plan"}
    elif best is not None and not np.isfinite(info.get("cost", float("nan"))):
        info = {**info, "error": f"no candidate had a finite cost (cost={info.get('cost')})"}
    ok = "error" not in info
    if not ok:
        best = torch.full(init.shape[1:], float("nan"), device=init.device)
    return best, info, ok


def receding_step(
    optimizer: Optimizer, cost_terms: Callable[[torch.Tensor], dict[str, torch.Tensor]], plan: torch.Tensor,
    candidates: int, t0: float, deadline_ms: float | None,
) -> tuple[np.ndarray, torch.Tensor, dict[str, Any]]:
    """One receding-horizon step from the stored plan (H, A) (its row 0 is the previous plan's
    action for this step), begun at ``t0`` (``time.perf_counter()``): optimise the sum of
    ``cost_terms(actions (N, H, A)) -> {name: (N,)}`` from the plan as a warm start
    (``candidates`` copies), send the first action or fall back. Returns (action (A,) float32,
    the next stored plan (the result shifted by one step, or the old plan consumed by one), info
    with ``fallback``, ``plan_ms`` and each term's value for the sent plan (``terms``, empty after
    a fallback; computed after ``plan_ms`` is taken: reporting is not planning))."""
    def cost_fn(a: torch.Tensor) -> torch.Tensor:
        return sum(cost_terms(a).values())

    init = plan.unsqueeze(0).repeat(candidates, 1, 1)  # warm start, (B, H, A)
    best, info, _ = run_optimizer(optimizer, cost_fn, init, -1.0, 1.0, deadline_at(t0, deadline_ms))
    action, fell_back = safe_action(best[0], plan[0].cpu().numpy())
    plan_ms = 1000 * (time.perf_counter() - t0)
    if fell_back:
        return action, shift_plan(plan), {**info, "fallback": True, "terms": {}, "plan_ms": plan_ms}
    with torch.no_grad():
        terms = {k: float(v[0]) for k, v in cost_terms(best.unsqueeze(0)).items()}
    return action, shift_plan(best).detach(), {**info, "fallback": False, "terms": terms, "plan_ms": plan_ms}


class RandomController(Controller):
    """Uniform random actions: the floor every learned controller must beat."""

    def __init__(self, action_dim: int, seed: int = 0) -> None:
        self.action_dim = action_dim
        self.rng = np.random.default_rng(seed)

    def reset(self, obs: Obs, goal_obs: Obs) -> None:
        pass

    def act(self, obs: Obs) -> tuple[np.ndarray, dict[str, Any]]:
        a = self.rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)
        return a, {"plan_ms": 0.0, "fallback": False}


class LatentController(Controller):
    """Shared plumbing of controllers that plan in a world model's latent space."""

    def __init__(
        self, model: WorldModel, device: torch.device | str = "cpu", compile: str | None = None
    ) -> None:
        self.model = model.eval()
        self.device = torch.device(device)
        for p in self.model.parameters():
            p.requires_grad_(False)  # planning differentiates w.r.t. actions only
        # proprioception only for models trained to fuse it; for PointMaze it would be the answer
        self.observation_keys = ("pixels", "state") if model.spec.state_dim else ("pixels",)
        self.state_dims = model.spec.state_dim  # the proprioceptive prefix; the rest is withheld
        # compile: a torch.compile backend ("inductor") for the planner's rollouts: GD planning
        # is latency-bound (small batches, one op at a time), which fused kernels cut. Compiled
        # graphs are cached per model, shape and grad mode; the first reset() compiles them.
        # The encoder (one image per step) is compiled with them.
        rollout, encode = model.rollout, model.encode
        self.rollout = rollout if compile is None else torch.compile(rollout, backend=compile)
        self._encode = encode if compile is None else torch.compile(encode, backend=compile)
        self._cold = compile is not None

    def reset(self, obs: Obs, goal_obs: Obs) -> None:
        """Start an episode toward ``goal_obs``. With ``compile``, the first reset also plans one
        throw-away step from ``obs`` (compiling every rollout a step uses outside act()'s timing)."""
        self._reset(obs, goal_obs)
        if self._cold:
            self._cold = False
            self.act(obs)
            self._reset(obs, goal_obs)

    @abstractmethod
    def _reset(self, obs: Obs, goal_obs: Obs) -> None: ...

    @torch.no_grad()
    def encode(self, obs: Obs) -> torch.Tensor:
        """Level-1 latent of one observation dict -> (1, D_1)."""
        pixels = image_tensor(obs, self.model.spec.image_size, self.device)
        state = None
        if self.model.spec.state_dim:
            state = torch.as_tensor(obs["state"], device=self.device, dtype=torch.float32)[None]
        return self._encode(pixels, state)


class FlatMPC(LatentController):
    """Receding-horizon planning of real actions on level 1 toward the goal image's latent."""

    def __init__(
        self,
        model: WorldModel,
        optimizer: Optimizer,
        horizon: int = 8,
        candidates: int = 4,
        weights: CostWeights | None = None,
        device: torch.device | str = "cpu",
        deadline_ms: float | None = None,
        compile: str | None = None,
    ) -> None:
        super().__init__(model, device, compile)
        self.optimizer = optimizer
        self.horizon = horizon
        self.candidates = candidates
        self.weights = (weights or CostWeights()).for_model(model.spec)
        check_guardrails(model.spec, self.weights.guardrails)
        self.deadline_ms = deadline_ms
        self.action_dim = model.spec.action_dim

    def _reset(self, obs: Obs, goal_obs: Obs) -> None:
        self.goal = self.encode(goal_obs)[0]  # (D_1,)
        self.weights.goal_part(self.goal)  # a goal_dims outside the latent fails here, not as a fallback
        self.plan = torch.zeros(self.horizon, self.action_dim, device=self.device)
        self.prev = torch.zeros(self.action_dim, device=self.device)

    def cost_terms(self, s: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted term of the objective for candidates (N, H, A) from latent s (1, D)."""
        w = self.weights
        pred = self.rollout(s, actions)  # (N, H, D_1)
        return {
            "goal": w.goal * goal_distance(w.goal_part(pred), w.goal_part(self.goal), w.goal_mode,
                                           w.goal_mix),
            "smoothness": w.smoothness * action_smoothness(actions, self.prev),
            "action_bound": w.action_bound * action_bound_penalty(actions),
            **guardrail_terms(self.model, s, pred, actions, w.guardrails),
        }

    def act(self, obs: Obs) -> tuple[np.ndarray, dict[str, Any]]:
        t0 = time.perf_counter()
        s = self.encode(obs)
        # self.plan is stored shifted: its row 0 is the previous plan's action for this step.
        action, self.plan, info = receding_step(
            self.optimizer, lambda a: self.cost_terms(s, a), self.plan, self.candidates, t0, self.deadline_ms)
        self.prev = torch.as_tensor(action, device=self.device)
        violated = predicted_violation(self.model, s, self.prev, self.weights.guardrails)
        if violated is not None:
            info["predicted_violation"] = violated
        return action, info
