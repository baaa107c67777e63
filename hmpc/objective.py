"""The training objective: applies the pure losses of ``hmpc.losses`` to every level of a model.

A batch is a window of L = 1 + n * span(top) frames. Level l sees every span(l)-th frame, so it
has n_l = (L - 1) / span(l) transitions; its actions are real actions at level 1 and macro codes
of the real-action chunks at levels >= 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hmpc import losses
from hmpc.world_model import WorldModel


@dataclass(frozen=True)
class LossWeights:
    """Weights of each term; 0 switches a term off."""

    prediction: float = 1.0
    variance: float = 1.0
    covariance: float = 0.04
    inverse_dynamics: float = 1.0
    smoothness: float = 0.0
    macro_l2: float = 0.01
    rollout_horizon: int = 3  # open-loop steps per level (multi-step, not teacher forcing only)
    detach_lower: bool = True  # abstract levels do not push gradients into the levels below


def multistep_prediction(
    model: WorldModel, s: torch.Tensor, a: torch.Tensor, level: int, horizon: int
) -> torch.Tensor:
    """Open-loop rollouts of ``horizon`` steps from every start in the window.

    s: (B, n + 1, D) encoded latents, a: (B, n, A_l). Returns the mean prediction loss over
    rollout depths 1..horizon: depth j predicts s[:, j:] from s[:, : n + 1 - j].
    """
    n = a.shape[1]
    horizon = max(1, min(horizon, n))
    cur = s[:, :-1]  # (B, n, D): start latents
    total = s.new_zeros(())
    for j in range(horizon):
        # cur[:, t] is the prediction of s[:, t + j + 1] from s[:, t] after j + 1 steps
        cur = model.predict(cur[:, : n - j], a[:, j:n], level)
        total = total + losses.prediction_loss(cur, s[:, j + 1 :])
    return total / horizon


def world_model_loss(
    model: WorldModel, batch: dict[str, torch.Tensor], w: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and per-term metrics for one batch.

    batch: "pixels" uint8 (B, L, 3, H, W), "action" float (B, L - 1, A),
    optional "state" (B, L, d) used only when the encoder fuses state.
    """
    pixels, action = batch["pixels"], batch["action"]
    b, length = pixels.shape[:2]
    spec = model.spec
    top_span = spec.span(spec.num_levels)
    if (length - 1) % top_span:
        raise ValueError(f"window of {length} frames: L - 1 must be a multiple of {top_span}")
    state = batch.get("state") if spec.state_dim else None
    flat_state = state.flatten(0, 1) if state is not None else None
    s1 = model.encode(pixels.flatten(0, 1), flat_state).view(b, length, -1)  # (B, L, D_1)

    metrics: dict[str, float] = {}
    total = s1.new_zeros(())
    s_prev = s1
    for level in range(1, spec.num_levels + 1):
        span = spec.span(level)
        if level == 1:
            s, a = s1, action
        else:
            k = spec.levels[level - 2].k
            below = s_prev.detach() if w.detach_lower else s_prev
            s = model.abstract[level - 2].project(below[:, ::k])  # (B, n_l + 1, D_l)
            chunks = action.reshape(b, (length - 1) // span, span * action.shape[-1])
            a = model.encode_macro(chunks, level)  # (B, n_l, M_l)
        terms = _level_terms(model, s, a, level, w)
        if level > 1 and w.macro_l2:
            terms["macro_l2"] = (w.macro_l2, a.pow(2).mean())
        for name, (weight, value) in terms.items():
            total = total + weight * value
            metrics[f"l{level}/{name}"] = float(value.detach())
        s_prev = s
    metrics["loss"] = float(total.detach())
    return total, metrics


def _level_terms(
    model: WorldModel, s: torch.Tensor, a: torch.Tensor, level: int, w: LossWeights
) -> dict[str, tuple[float, torch.Tensor]]:
    """(weight, value) of each enabled term for one level. s: (B, n+1, D), a: (B, n, A_l)."""
    flat = s.flatten(0, 1)
    terms: dict[str, tuple[float, torch.Tensor]] = {
        "pred": (w.prediction, multistep_prediction(model, s, a, level, w.rollout_horizon))
    }
    if w.variance:
        terms["var"] = (w.variance, losses.variance_loss(flat))
    if w.covariance:
        terms["cov"] = (w.covariance, losses.covariance_loss(flat))
    if w.inverse_dynamics:
        # at level >= 2 the target is the macro code itself: it makes codes recoverable from
        # consecutive abstract states, which is what video-only episodes will rely on
        pred_a = model.infer_action(s[:, :-1], s[:, 1:], level)
        target = a if level == 1 else a.detach()
        terms["idm"] = (w.inverse_dynamics, losses.inverse_dynamics_loss(pred_a, target))
    if w.smoothness:
        terms["smooth"] = (w.smoothness, losses.temporal_smoothness_loss(s))
    return terms
