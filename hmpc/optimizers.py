"""Trajectory optimisers over action sequences: they know a cost callable and bounds, nothing else.

``optimize(cost_fn, init, low, high) -> (best (H, A), info)`` where ``cost_fn`` maps candidates
(N, H, A) to costs (N,), ``init`` (B, H, A) holds B starting sequences (B restarts for gradient
descent; row 0 is the mean of the first sampling distribution for CEM and MPPI; B refined
candidates for the hybrid), and ``low``/``high`` are floats or tensors broadcastable to (H, A).
Receding horizon and warm starts live in ``hmpc.mpc``, not here (the split of mbrl-lib's
trajectory_opt).

Deadline: every ``optimize`` takes ``deadline`` (an absolute ``time.perf_counter()`` time, or
None). The clock is checked between iterations: once it has passed, the optimiser stops and
returns the best plan scored so far. An iteration whose cost evaluation ends after the deadline
came too late and is discarded. ``info["iters"]`` counts the iterations that finished in time and
``info["deadline_hit"]`` says whether the deadline stopped it (key present only with a deadline);
with ``iters == 0`` the plan is only the warm start, and controllers fall back.

Non-finite costs (NaN, +-inf) rank as +inf: such a candidate is never returned as the best, and
``info["cost"]`` is inf when no candidate had a finite cost (controllers treat that as a failed
plan and fall back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from hmpc.noise import sample_around

CostFn = Callable[[torch.Tensor], torch.Tensor]
Bound = float | torch.Tensor
TopK = tuple[torch.Tensor, torch.Tensor]  # sequences (K, H, A), their costs (K,) ascending


class Optimizer(Protocol):
    def optimize(
        self, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound,
        deadline: float | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]: ...


def expired(deadline: float | None, wait_for: torch.Tensor | None = None) -> bool:
    """True once ``time.perf_counter()`` has reached ``deadline`` (never when it is None). With
    ``wait_for`` on a GPU, first waits for its stream's queued work (CUDA kernels run after the
    call that queues them returns), so a late iteration is seen as late."""
    if deadline is None:
        return False
    if wait_for is not None and wait_for.is_cuda:
        torch.cuda.current_stream(wait_for.device).synchronize()
    return time.perf_counter() >= deadline


def _deadline_info(info: dict[str, Any], deadline: float | None, hit: bool) -> dict[str, Any]:
    return {**info, "deadline_hit": hit} if deadline is not None else info


def _check(init: torch.Tensor) -> None:
    if init.dim() != 3:
        raise ValueError(f"init must be (B, H, A) candidate sequences, got {tuple(init.shape)}")


def _rank_cost(cost: torch.Tensor) -> torch.Tensor:
    """Costs (N,) with every non-finite entry replaced by +inf, so ranking never picks them."""
    return torch.where(torch.isfinite(cost), cost, torch.full_like(cost, float("inf")))


def _merge_top(top: TopK | None, x: torch.Tensor, cost: torch.Tensor, k: int) -> TopK:
    """The k lowest-cost sequences among an archive ``top`` and new candidates x (N, H, A), (N,)."""
    if top is not None:
        x, cost = torch.cat([top[0], x]), torch.cat([top[1], cost])
    order = torch.argsort(cost)[:k]  # costs went through _rank_cost: no NaN to mis-sort
    return x[order].clone(), cost[order].clone()


@dataclass
class GradientDescent:
    """Adam on the action sequences through a differentiable cost, with box projection.

    All B rows of ``init`` are optimised together (batched restarts); rows after the first get
    ``restart_noise`` Gaussian noise so restarts explore. When the best cost improves by less than
    ``tol`` (relative) over ``patience`` iterations the step size halves (Adam otherwise orbits the
    optimum at a radius ~lr); it stops early once the step is below ``lr * min_lr_ratio``.

    ``score_final`` scores the iterate after the last step too (one more forward pass) and returns
    the best iterate scored. Off, it returns the last iterate of the row with the lowest last cost,
    unscored (``info["cost"]`` is from before the step): real-time-iteration MPC, one step per
    control step from the shifted previous plan. A deadline-cut run returns the best scored.
    """

    iters: int = 20
    lr: float = 0.1
    min_lr_ratio: float = 0.01
    restart_noise: float = 0.3
    tol: float = 1e-4
    patience: int = 5
    seed: int = 0
    score_final: bool = True

    def __post_init__(self) -> None:
        self._gen = torch.Generator().manual_seed(self.seed)
        # torch's first Adam construction imports lazily (seconds on a busy CPU): pay it when
        # the controller is built, not inside the first control step's deadline
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])

    def optimize(
        self, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound,
        deadline: float | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        _check(init)
        t0 = time.perf_counter()
        x0 = init.detach().clone()
        if x0.shape[0] > 1 and self.restart_noise > 0:
            noise = torch.randn(x0[1:].shape, generator=self._gen).to(x0)
            x0[1:] += self.restart_noise * noise
        x = x0.clamp(low, high).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.lr)
        best_x, best_c = x.detach().clone(), torch.full((x.shape[0],), float("inf"), device=x.device)
        history: list[float] = []
        it, lr, since_plateau, hit = 0, self.lr, 0, False
        for _ in range(self.iters):
            if expired(deadline):
                hit = True
                break
            with torch.enable_grad():
                cost = cost_fn(x)  # (B,)
                opt.zero_grad(set_to_none=True)
                cost.sum().backward()  # candidates are independent: the sum's grad is per-row
            if expired(deadline, cost):  # finished too late: discarded
                hit = True
                break
            it += 1
            with torch.no_grad():
                cost = _rank_cost(cost.detach())
                better = cost < best_c  # track the best iterate per candidate (cost before step)
                best_c = torch.where(better, cost, best_c)
                best_x[better] = x.detach()[better]
                if x.grad is not None:  # a row with a NaN cost/gradient stays where it is
                    x.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            opt.step()
            with torch.no_grad():
                x.clamp_(low, high)  # projection onto the action box
            history.append(float(best_c.min()))
            since_plateau += 1
            if since_plateau > self.patience:
                old = history[-1 - self.patience]
                if old - history[-1] <= self.tol * max(abs(old), 1e-8):
                    lr, since_plateau = lr * 0.5, 0
                    if lr < self.lr * self.min_lr_ratio:
                        break
                    for group in opt.param_groups:
                        group["lr"] = lr
        if not self.score_final and it > 0 and not hit:  # the last step's result, unscored
            i = int(torch.argmin(cost))  # last scored costs, (B,)
            info = {"cost": float(cost[i]), "iters": it, "time_s": time.perf_counter() - t0}
            return x.detach()[i].clone(), _deadline_info(info, deadline, expired(deadline))
        with torch.no_grad():  # score the final iterate too (when there is time for it)
            final = None if hit or expired(deadline) else _rank_cost(cost_fn(x.detach()))
            if final is not None and not expired(deadline, final):
                better = final < best_c
                best_c = torch.where(better, final, best_c)
                best_x[better] = x.detach()[better]
        i = int(torch.argmin(best_c))
        info = {"cost": float(best_c[i]), "iters": it, "time_s": time.perf_counter() - t0}
        return best_x[i], _deadline_info(info, deadline, hit or expired(deadline))


@dataclass
class CEM:
    """Cross-entropy method: Gaussian over sequences refit to the elites each iteration.

    iCEM options (Pinneri et al. 2020): ``noise_beta`` > 0 colours the sampling noise along the
    horizon (:func:`hmpc.noise.colored_noise`; 2-3 for long horizons, where white noise rarely draws a
    sequence that goes anywhere), and ``keep_elites`` carries that many of the previous
    iteration's elites into the next population, so a good sequence found once is not lost.
    """

    iters: int = 5
    population: int = 64
    elites: int = 8
    init_std: float = 0.5
    min_std: float = 0.05
    momentum: float = 0.1
    noise_beta: float = 0.0
    keep_elites: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.noise_beta < 0:
            raise ValueError(f"CEM noise_beta={self.noise_beta} must be >= 0 (0 = white noise)")
        if not 0 <= self.keep_elites <= self.elites:
            raise ValueError(f"CEM keep_elites={self.keep_elites} must be in [0, elites={self.elites}]")
        self._gen = torch.Generator().manual_seed(self.seed)

    @torch.no_grad()
    def search(
        self, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound, keep: int,
        deadline: float | None = None,
    ) -> tuple[TopK, int]:
        """The ``keep`` best sequences ever scored, (keep, H, A) and their costs (keep,), and the
        number of iterations that finished before ``deadline``."""
        _check(init)
        mean = init[0].clone()  # (H, A)
        std = torch.full_like(mean, self.init_std)
        top: TopK | None = None
        kept: TopK | None = None  # the previous iteration's best elites (keep_elites of them)
        done = 0
        for _ in range(self.iters):
            if expired(deadline):
                break
            cand = sample_around(self._gen, mean, std, self.population, self.noise_beta)
            cand = cand.clamp(low, high)  # (N, H, A)
            cost = _rank_cost(cost_fn(cand))
            if expired(deadline, cost):  # finished too late: discarded
                break
            done += 1
            top = _merge_top(top, cand, cost, keep)
            if kept is not None:  # carried elites compete with the new samples (not rescored)
                cand, cost = torch.cat([kept[0], cand]), torch.cat([kept[1], cost])
            order = torch.argsort(cost)[: self.elites]
            elite = cand[order]
            if self.keep_elites:
                kept = elite[: self.keep_elites].clone(), cost[order][: self.keep_elites].clone()
            mean = self.momentum * mean + (1 - self.momentum) * elite.mean(0)
            std = (self.momentum * std + (1 - self.momentum) * elite.std(0)).clamp_min(self.min_std)
        return _or_warm_start(top, init, low, high, keep), done

    def optimize(
        self, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound,
        deadline: float | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        return _best_of_search(self, cost_fn, init, low, high, deadline)


def _or_warm_start(
    top: TopK | None, init: torch.Tensor, low: Bound, high: Bound, keep: int
) -> TopK:
    """``top``, or when nothing was scored (no iteration) the warm start with cost +inf."""
    if top is not None:
        return top
    return init[:keep].clamp(low, high), init.new_full((min(keep, len(init)),), float("inf"))


def _best_of_search(
    opt: CEM | MPPI, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound,
    deadline: float | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``optimize`` of the sampling optimisers: the single best sequence their search scored."""
    t0 = time.perf_counter()
    (x, cost), done = opt.search(cost_fn, init, low, high, keep=1, deadline=deadline)
    info = {"cost": float(cost[0]), "iters": done, "time_s": time.perf_counter() - t0}
    return x[0], _deadline_info(info, deadline, done < opt.iters)


@dataclass
class MPPI:
    """Model-predictive path integral: a Gaussian over sequences whose mean moves to the
    importance-weighted (softmin of cost / ``temperature``) average of its samples.

    ``elites`` > 0 keeps only the best samples before weighting (TD-MPC2's variant); 0 weighs
    all. ``adapt_std`` refits the std to the weighted spread (clamped to [min_std, noise_std]);
    otherwise the noise is the fixed ``noise_std`` of classic MPPI.
    """

    iters: int = 5
    population: int = 64
    temperature: float = 0.5
    noise_std: float = 0.5
    elites: int = 0
    adapt_std: bool = False
    min_std: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"MPPI temperature={self.temperature} must be > 0 (e.g. 0.5)")
        self._gen = torch.Generator().manual_seed(self.seed)

    @torch.no_grad()
    def search(
        self, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound, keep: int,
        deadline: float | None = None,
    ) -> tuple[TopK, int]:
        """The ``keep`` best sequences ever scored (the final mean included), their costs, and
        the number of iterations that finished before ``deadline``."""
        _check(init)
        mean = init[0].clone()  # (H, A): warm start = the shifted previous plan
        std = torch.full_like(mean, self.noise_std)
        top: TopK | None = None
        done = 0
        for _ in range(self.iters):
            if expired(deadline):
                break
            # 1. sample a population around the current mean (row 0 = the mean), inside the box
            cand = sample_around(self._gen, mean, std, self.population).clamp(low, high)  # (N, H, A)
            # 2. score it; non-finite costs get weight exp(-inf) = 0 below
            cost = _rank_cost(cost_fn(cand))
            if expired(deadline, cost):  # finished too late: discarded
                break
            done += 1
            top = _merge_top(top, cand, cost, keep)
            if not torch.isfinite(cost).any():
                continue  # nothing to learn from this population: keep the distribution
            # 3. optionally keep only the elites (TD-MPC2), then softmin importance weights
            if 0 < self.elites < len(cost):
                idx = torch.argsort(cost)[: self.elites]
                cand, cost = cand[idx], cost[idx]
            w = torch.softmax(-(cost - cost.min()) / self.temperature, dim=0)  # (N,)
            # 4. importance-weighted mean (and spread) update
            mean = torch.einsum("n,nha->ha", w, cand)
            if self.adapt_std:
                var = torch.einsum("n,nha->ha", w, (cand - mean).pow(2))
                std = var.sqrt().clamp(self.min_std, self.noise_std)
        # 5. the final mean is the MPPI answer: score it so it competes with the samples
        if not expired(deadline):
            final = mean.clamp(low, high).unsqueeze(0)
            final_cost = _rank_cost(cost_fn(final))
            if not expired(deadline, final_cost):
                top = _merge_top(top, final, final_cost, keep)
        return _or_warm_start(top, init, low, high, keep), done

    def optimize(
        self, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound,
        deadline: float | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        return _best_of_search(self, cost_fn, init, low, high, deadline)


@dataclass
class Hybrid:
    """Sampling to initialise, gradient to refine: a few CEM or MPPI iterations from ``init[0]``,
    then gradient descent on the B = ``init.shape[0]`` best sequences they scored.

    ``sampler`` and ``refine`` are the keyword arguments of the sampling optimiser (with ``name``:
    cem or mppi) and of :class:`GradientDescent`; ``seed`` seeds both.
    """

    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "cem", "iters": 2})
    refine: dict[str, Any] = field(default_factory=lambda: {"iters": 10, "restart_noise": 0.0})
    seed: int = 0

    def __post_init__(self) -> None:
        cfg = dict(self.sampler)
        name = cfg.pop("name", "cem")
        if name not in ("cem", "mppi"):
            raise ValueError(f"hybrid sampler name={name!r}; use sampler: {{name: cem}} or mppi")
        self._sampler = make_optimizer(name, **{"seed": self.seed, **cfg})
        gd = {"restart_noise": 0.0, **self.refine, "seed": self.seed + 1}
        self._gd = make_optimizer("gd", **gd)

    def optimize(
        self, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound,
        deadline: float | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        t0 = time.perf_counter()
        (top, top_c), done = self._sampler.search(
            cost_fn, init, low, high, keep=init.shape[0], deadline=deadline)
        # GD keeps its best iterate; it gets what is left of the deadline
        best, info = self._gd.optimize(cost_fn, top, low, high, deadline)
        if not info["cost"] <= float(top_c[0]):  # never worse than the sampler (NaN-safe)
            best, info["cost"] = top[0], float(top_c[0])
        info.update(
            iters=done + info["iters"], sample_cost=float(top_c[0]),
            time_s=time.perf_counter() - t0,
        )
        if deadline is not None:
            info["deadline_hit"] = done < self._sampler.iters or info["deadline_hit"]
        return best, info


OPTIMIZERS: dict[str, type] = {"gd": GradientDescent, "cem": CEM, "mppi": MPPI, "hybrid": Hybrid}


def make_optimizer(name: str, **kwargs: Any) -> Optimizer:
    """Build an optimiser by config name; unknown names and keys get an actionable error."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known optimizers: {sorted(OPTIMIZERS)}")
    cls = OPTIMIZERS[name]
    bad = set(kwargs) - set(cls.__dataclass_fields__)
    if bad:
        raise ValueError(
            f"unknown keys {sorted(bad)} for optimizer {name!r}; accepted: "
            f"{sorted(cls.__dataclass_fields__)}"
        )
    return cls(**kwargs)
