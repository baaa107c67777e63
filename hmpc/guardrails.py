"""Guardrails wired to a world model: the planning terms, the checks, the per-step violation flag.

The pure penalties live in ``hmpc.costs``; this module feeds them model outputs. State terms read
the predicted physical state through the model's state probe (``WorldModel.decode_state``); the
OOD term asks every level-1 ensemble member for the next latent from the states of the plan's own
rollout (member 0's) and scores their variance. Controllers call ``check_guardrails`` when built,
``guardrail_terms`` inside their cost and ``predicted_violation`` for the action they send.

Shapes: N = candidates, H = horizon, D = level-1 latent size, A = action size, S = state size.
"""

from __future__ import annotations

from typing import Any

import torch

from hmpc.costs import (
    Guardrails,
    ensemble_disagreement,
    forbidden_region_penalty,
    guardrail_violated,
    state_bound_penalty,
)


def check_guardrails(spec: Any, g: Guardrails, key: str = "weights.guardrails") -> None:
    """Refuse guardrails the model ``spec`` (a ``WorldModelSpec``) cannot evaluate.

    ``key`` is the config key of ``g`` in error messages, e.g.
    ``controllers.flat_gd.weights.guardrails``.
    """
    probe = int(getattr(spec, "probe_dim", 0))
    if g.uses_state and not probe:
        term = "state_bounds" if g.state_bounds else "forbidden"
        raise ValueError(
            f"{key}.{term}={getattr(g, term)} needs a world model with a state probe head, but "
            "this checkpoint has none (model.probe_dim=0): retrain with model.loss.state_probe=1.0, or "
            f"set {key}.{term}=0")
    if g.uses_state and g.max_dim() >= probe:
        raise ValueError(f"{key}: state dim {g.max_dim()} is out of range; the model's state "
                         f"probe predicts {probe} dims (0..{probe - 1})")
    members = int(getattr(spec, "num_predictors", 1))
    if g.ood and members < 2:
        raise ValueError(
            f"{key}.ood={g.ood} needs an ensemble of level-1 predictors, but this checkpoint has "
            f"model.num_predictors={members}: retrain with model.num_predictors=5 (say), or set "
            f"{key}.ood=0")


def guardrail_terms(
    model: Any, s0: torch.Tensor, pred: torch.Tensor, actions: torch.Tensor, g: Guardrails
) -> dict[str, torch.Tensor]:
    """Weighted guardrail terms (N,) of the enabled guardrails, keyed by name.

    s0: (1, D) or (N, D) current latent; pred: (N, H, D) member-0 rollout of ``actions`` (N, H, A).
    """
    terms: dict[str, torch.Tensor] = {}
    if g.uses_state:
        state = model.decode_state(pred)  # (N, H, S)
        if g.state_bounds:
            b = g.bounds
            terms["state_bounds"] = g.state_bounds * state_bound_penalty(
                state, b.dims, b.low, b.high, b.margin)
        if g.forbidden:
            terms["forbidden"] = g.forbidden * forbidden_region_penalty(state, g.regions)
    if g.ood:
        n, _, d = pred.shape
        starts = torch.cat([s0.expand(n, d).unsqueeze(1), pred[:, :-1]], dim=1)  # (N, H, D)
        terms["ood"] = g.ood * ensemble_disagreement(model.predict_members(starts, actions))
    return terms


@torch.no_grad()
def predicted_violation(
    model: Any, s: torch.Tensor, action: torch.Tensor, g: Guardrails
) -> bool | None:
    """Does the state predicted after ``action`` (A,) from latent s (1, D) violate a guardrail?

    None when nothing is monitored or the model has no state probe to tell.
    """
    if not g.monitored or not getattr(model.spec, "probe_dim", 0):
        return None
    if g.max_dim() >= model.spec.probe_dim:
        return None
    nxt = model.predict(s, action.reshape(1, -1).to(s))  # (1, D)
    return bool(guardrail_violated(model.decode_state(nxt)[0], g))
