"""Cost terms for planning: pure functions from predicted latents / action sequences to (N,) costs.

Shapes: N = candidates, H = horizon, D = latent size, A = action size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GOAL_MODES = ("final", "sum")


@dataclass(frozen=True)
class CostWeights:
    """Weights of the planning objective's terms; each term's value is reported per step."""

    goal: float = 1.0
    goal_mode: str = "sum"  # "sum": averaged over the horizon (reach early, stay); "final": last step
    smoothness: float = 0.01
    action_bound: float = 1.0
    macro_prior: float = 0.01  # keeps macro codes near the region the encoder produced in training

    def __post_init__(self) -> None:
        if self.goal_mode not in GOAL_MODES:
            raise ValueError(f"goal_mode={self.goal_mode!r}; use one of {GOAL_MODES}")


def goal_distance(pred: torch.Tensor, goal: torch.Tensor, mode: str = "final") -> torch.Tensor:
    """Squared L2 distance of predicted latents (N, H, D) to a goal latent (D,) or (N, D) -> (N,).

    "final" scores the last step; "sum" averages over the horizon, rewarding reaching it early.
    """
    d = (pred - goal.unsqueeze(-2)).pow(2).sum(-1) if goal.dim() == 2 else (pred - goal).pow(2).sum(-1)
    if mode == "final":
        return d[:, -1]
    if mode == "sum":
        return d.mean(dim=1)
    raise ValueError(f"goal mode {mode!r}; use one of {GOAL_MODES}")


def action_smoothness(actions: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared change between consecutive actions (N, H, A) -> (N,); ``prev`` (A,) is the
    action applied last, so the first planned action is also kept close to it."""
    if prev is not None:
        actions = torch.cat([prev.expand(actions.shape[0], 1, -1), actions], dim=1)
    if actions.shape[1] < 2:
        return actions.new_zeros(actions.shape[0])
    return (actions[:, 1:] - actions[:, :-1]).pow(2).sum(-1).mean(1)


def action_bound_penalty(actions: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    """Squared excess of |a| over ``limit``, summed (N, H, A) -> (N,): 0 for in-bound plans."""
    return torch.relu(actions.abs() - limit).pow(2).sum((1, 2))


def magnitude_prior(codes: torch.Tensor) -> torch.Tensor:
    """Mean squared magnitude of codes (N, H, M) -> (N,)."""
    return codes.pow(2).mean((1, 2))
