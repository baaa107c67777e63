"""Trajectory optimisers over action sequences: they know a cost callable and bounds, nothing else.

``optimize(cost_fn, init, low, high) -> (best (H, A), info)`` where ``cost_fn`` maps candidates
(N, H, A) to costs (N,), ``init`` (B, H, A) holds B starting sequences (B restarts for gradient
descent; row 0 is the mean of the first sampling distribution for CEM), and ``low``/``high``
are floats or tensors broadcastable to (H, A). Receding horizon and warm starts live in
``hmpc.mpc``, not here (the split of mbrl-lib's trajectory_opt).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

CostFn = Callable[[torch.Tensor], torch.Tensor]
Bound = float | torch.Tensor


class Optimizer(Protocol):
    def optimize(
        self, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound
    ) -> tuple[torch.Tensor, dict[str, Any]]: ...


def _check(init: torch.Tensor) -> None:
    if init.dim() != 3:
        raise ValueError(f"init must be (B, H, A) candidate sequences, got {tuple(init.shape)}")


@dataclass
class GradientDescent:
    """Adam on the action sequences through a differentiable cost, with box projection.

    All B rows of ``init`` are optimised together (batched restarts); rows after the first get
    ``restart_noise`` Gaussian noise so restarts explore. When the best cost improves by less than
    ``tol`` (relative) over ``patience`` iterations the step size halves (Adam otherwise orbits the
    optimum at a radius ~lr); it stops early once the step is below ``lr * min_lr_ratio``.
    """

    iters: int = 20
    lr: float = 0.1
    min_lr_ratio: float = 0.01
    restart_noise: float = 0.3
    tol: float = 1e-4
    patience: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        self._gen = torch.Generator().manual_seed(self.seed)

    def optimize(
        self, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound
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
        it, lr, since_plateau = 0, self.lr, 0
        for _ in range(self.iters):
            it += 1
            with torch.enable_grad():
                cost = cost_fn(x)  # (B,)
                opt.zero_grad(set_to_none=True)
                cost.sum().backward()  # candidates are independent: the sum's grad is per-row
            with torch.no_grad():
                better = cost < best_c  # track the best iterate per candidate (cost before step)
                best_c = torch.where(better, cost.detach(), best_c)
                best_x[better] = x.detach()[better]
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
        with torch.no_grad():  # score the final iterate too
            final = cost_fn(x.detach())
            better = final < best_c
            best_c = torch.where(better, final, best_c)
            best_x[better] = x.detach()[better]
        i = int(torch.argmin(best_c))
        info = {"cost": float(best_c[i]), "iters": it, "time_s": time.perf_counter() - t0}
        return best_x[i], info


@dataclass
class CEM:
    """Cross-entropy method: Gaussian over sequences refit to the elites each iteration."""

    iters: int = 5
    population: int = 64
    elites: int = 8
    init_std: float = 0.5
    min_std: float = 0.05
    momentum: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        self._gen = torch.Generator().manual_seed(self.seed)

    @torch.no_grad()
    def optimize(
        self, cost_fn: CostFn, init: torch.Tensor, low: Bound, high: Bound
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        _check(init)
        t0 = time.perf_counter()
        mean = init[0].clone()  # (H, A)
        std = torch.full_like(mean, self.init_std)
        best_x, best_c = mean.clone(), float("inf")
        for _ in range(self.iters):
            eps = torch.randn((self.population, *mean.shape), generator=self._gen).to(mean)
            cand = (mean + std * eps).clamp(low, high)  # (N, H, A)
            cand[0] = mean.clamp(low, high)  # always score the current mean (warm start)
            cost = cost_fn(cand)
            order = torch.argsort(cost)
            elite = cand[order[: self.elites]]
            if float(cost[order[0]]) < best_c:
                best_c, best_x = float(cost[order[0]]), cand[order[0]].clone()
            mean = self.momentum * mean + (1 - self.momentum) * elite.mean(0)
            std = (self.momentum * std + (1 - self.momentum) * elite.std(0)).clamp_min(self.min_std)
        info = {"cost": best_c, "iters": self.iters, "time_s": time.perf_counter() - t0}
        return best_x, info


OPTIMIZERS: dict[str, type] = {"gd": GradientDescent, "cem": CEM}


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
