"""The training objective: applies the pure losses of ``hmpc.losses`` to every level of a model.

A batch is a window of L = 1 + n * span(top) frames. Level l sees every span(l)-th frame, so it
has n_l = (L - 1) / span(l) transitions; its actions are real actions at level 1 and macro codes
of the real-action chunks at levels >= 2.

Targets: with ``target="online"`` the prediction targets are the online encoder's own latents
(collapse is held off by VICReg and inverse dynamics); with ``target="ema"`` they come from an
exponential-moving-average copy of the model under stop-grad (BYOL / I-JEPA style).

Video-only windows (``batch["has_action"]`` False) train the encoder (VICReg terms; not with
``video_vicreg=False``) and the levels >= 2, whose macro codes are inferred by their own inverse
model (detached); the level-1 prediction and inverse-dynamics terms are scored on action-labelled
windows only.

Optional anti-collapse terms: with ``model.expander_dim`` > 0 the level-1 covariance term acts
on an MLP expander of the latent (VICReg); with ``contrastive`` > 0 every level's one-step
predictions are also scored against the other windows' latents (InfoNCE).

Optional level-1 heads: with ``num_predictors`` > 1 every ensemble member is trained on the same
batch with its own prediction loss (the ``pred`` term is their mean); with ``state_probe`` > 0 the
state probe regresses ``batch["state"]`` from *detached* level-1 latents (term ``state_probe``),
so it never shapes the representation. With ``equivariance`` > 0 (keypoint encoders) the
keypoints of a randomly rotated frame must be the rotated keypoints (term ``equiv``): a detector
that follows image content, so keypoints on a rigid body turn with it; their attended vectors
(``model.keypoint_vectors``), if any, must turn by the same angle (and ignore the shift).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hmpc import losses
from hmpc.augment import sample_warps, warp_images
from hmpc.world_model import WorldModel

TARGETS = ("online", "ema")


@dataclass(frozen=True)
class LossWeights:
    """Weights of each term; 0 switches a term off."""

    prediction: float = 1.0
    variance: float = 1.0
    variance_target: float = 1.0  # std the variance hinge asks of each latent dim (expander: 1)
    covariance: float = 0.04
    inverse_dynamics: float = 1.0
    smoothness: float = 0.0
    macro_l2: float = 0.01
    latent_l2: float = 0.1  # L2 prior on the level-1 latent variable z (latent_var_dim > 0)
    rollout_horizon: int = 3  # open-loop steps per level (multi-step, not teacher forcing only)
    detach_lower: bool = True  # abstract levels do not push gradients into the levels below
    target: str = "online"  # "online" | "ema": where prediction targets come from
    ema_decay: float = 0.996  # target <- decay * target + (1 - decay) * online, every step
    state_probe: float = 0.0  # > 0 trains the state probe head (detached latents -> state)
    contrastive: float = 0.0  # > 0: InfoNCE of one-step predictions against the batch's targets
    temperature: float = 0.1  # of the contrastive term's logits (negative mean squared distances)
    video_vicreg: bool = True  # video-only windows enter level 1's variance / covariance terms
    video_predict: bool = True  # video-only windows train the predictors of levels >= 2 (inferred codes)
    equivariance: float = 0.0  # > 0: keypoints must follow random rotations of the image
    equivariance_deg: float = 180.0  # rotations drawn from U(-deg, deg)
    equivariance_shift: float = 0.0  # and shifts from U(-shift, shift) (1.0 = half the image)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"model.loss.target={self.target!r}; use one of {list(TARGETS)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"model.loss.ema_decay={self.ema_decay} must be in [0, 1), e.g. 0.996")
        if self.rollout_horizon < 1:
            raise ValueError(f"model.loss.rollout_horizon={self.rollout_horizon} must be >= 1")
        if self.contrastive < 0 or self.temperature <= 0:
            raise ValueError(f"model.loss.contrastive={self.contrastive} must be >= 0 and "
                             f"model.loss.temperature={self.temperature} > 0 (e.g. 1.0 and 0.1)")
        if self.variance_target <= 0:
            raise ValueError(f"model.loss.variance_target={self.variance_target} must be > 0 "
                             "(1.0 is VICReg's; e.g. 0.3 when the latent is keypoint coordinates "
                             "in [-1, 1])")
        if self.equivariance < 0 or self.equivariance_deg < 0 or self.equivariance_shift < 0:
            raise ValueError(f"model.loss.equivariance={self.equivariance}, equivariance_deg="
                             f"{self.equivariance_deg}, equivariance_shift={self.equivariance_shift}"
                             " must be >= 0 (e.g. 1.0, 180.0, 0.0)")
        if self.state_probe < 0:
            raise ValueError(f"model.loss.state_probe={self.state_probe} must be >= 0 "
                             "(0 = no probe, e.g. 1.0 to train one)")


def multistep_prediction(
    model: WorldModel, s: torch.Tensor, a: torch.Tensor, level: int, horizon: int,
    target: torch.Tensor | None = None, z: torch.Tensor | None = None, member: int = 0,
) -> torch.Tensor:
    """Open-loop rollouts of ``horizon`` steps from every start in the window.

    s: (B, n + 1, D) encoded latents (starts), a: (B, n, A_l), target: (B, n + 1, D) latents to
    predict (default ``s``), z: (B, n, Z) level-1 latent variables or None. Returns the mean
    prediction loss over rollout depths 1..horizon: depth j predicts target[:, j:] from
    s[:, : n + 1 - j]. ``member`` picks the level-1 ensemble member that predicts.
    """
    target = s if target is None else target
    n = a.shape[1]
    horizon = max(1, min(horizon, n))
    cur = s[:, :-1]  # (B, n, D): start latents
    total = s.new_zeros(())
    for j in range(horizon):
        # cur[:, t] is the prediction of s[:, t + j + 1] from s[:, t] after j + 1 steps
        zj = None if z is None else z[:, j:n]
        cur = model.predict(cur[:, : n - j], a[:, j:n], level, zj, member=member)
        total = total + losses.prediction_loss(cur, target[:, j + 1 :])
    return total / horizon


def _action_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """(B,) bool of action-labelled windows, or None when every window has actions."""
    has = batch.get("has_action")
    if has is None or bool(has.all()):
        return None
    return has.bool()


def _fill_unlabelled(
    model: WorldModel, s: torch.Tensor, a: torch.Tensor, level: int, has: torch.Tensor | None
) -> torch.Tensor:
    """Replace the macro codes of video-only windows by inverse-dynamics ones, detached."""
    if has is None:
        return a
    inferred = model.infer_action(s[:, :-1], s[:, 1:], level).detach().clamp(-1.0, 1.0)
    return torch.where(has[:, None, None], a, inferred)  # (B, n, A_l)


def world_model_loss(
    model: WorldModel, batch: dict[str, torch.Tensor], w: LossWeights,
    target_model: WorldModel | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and per-term metrics for one batch.

    batch: "pixels" uint8 (B, L, 3, H, W), "action" float (B, L - 1, A), optional "state"
    (B, L, d) used only when the encoder fuses state, optional "has_action" bool (B,).
    ``target_model``: the EMA copy used for targets when ``w.target == "ema"`` (required then).
    """
    action = batch["action"]
    length = batch["pixels"].shape[1]
    spec = model.spec
    top_span = spec.span(spec.num_levels)
    if (length - 1) % top_span:
        raise ValueError(f"window of {length} frames: L - 1 must be a multiple of {top_span}")
    if w.target == "ema" and target_model is None:
        raise ValueError("model.loss.target='ema' needs the EMA target model; pass target_model")
    use_ema = w.target == "ema"
    has = _action_mask(batch)
    s1 = model.encode_window(batch["pixels"], batch.get("state"))  # (B, L, D_1)
    with torch.no_grad():
        t1 = target_model.encode_window(batch["pixels"], batch.get("state")) if use_ema else None

    metrics: dict[str, float] = {}
    total = s1.new_zeros(())
    s_prev, t_prev = s1, t1
    for level in range(1, spec.num_levels + 1):
        if level == 1:
            s, t, a = s1, t1, action
        else:
            k = spec.levels[level - 2].k
            below = s_prev.detach() if w.detach_lower else s_prev
            s = model.abstract[level - 2].project(below[:, ::k])  # (B, n_l + 1, D_l)
            with torch.no_grad():
                t = target_model.abstract[level - 2].project(t_prev[:, ::k]) if use_ema else None
            a = model.macro_codes(action, level)  # (B, n_l, M_l)
            # video-only windows: macro codes inferred from consecutive abstract states (level 1
            # needs none: its prediction and inverse-dynamics terms skip those windows)
            a = _fill_unlabelled(model, s, a, level, has)
        terms = _level_terms(model, s, a, level, w, t, has)
        if level > 1 and w.macro_l2:
            terms["macro_l2"] = (w.macro_l2, a.pow(2).mean())
        for name, (weight, value) in terms.items():
            total = total + weight * value
            metrics[f"l{level}/{name}"] = float(value.detach())
        s_prev, t_prev = s, t
    if w.equivariance:
        eq = equivariance_term(model, batch)
        total = total + w.equivariance * eq
        metrics["l1/equiv"] = float(eq.detach())
    if w.state_probe:
        probe = state_probe_term(model, s1, batch)
        total = total + w.state_probe * probe
        metrics["l1/state_probe"] = float(probe.detach())
    metrics["loss"] = float(total.detach())
    return total, metrics


def _level_terms(
    model: WorldModel, s: torch.Tensor, a: torch.Tensor, level: int, w: LossWeights,
    target: torch.Tensor | None = None, has: torch.Tensor | None = None,
) -> dict[str, tuple[float, torch.Tensor]]:
    """(weight, value) of each enabled term for one level.

    s: (B, n+1, D) online latents, a: (B, n, A_l), target: (B, n+1, D) EMA latents or None
    (targets are then ``s``), has: (B,) bool action mask or None (all labelled).
    """
    # (N, D) latents of the VICReg terms; at level 1 without ``video_vicreg`` labelled windows only
    flat = (s if level > 1 or has is None or w.video_vicreg else s[has]).flatten(0, 1)
    tgt = s if target is None else target
    terms: dict[str, tuple[float, torch.Tensor]] = {}
    z = None
    if level == 1 and model.posterior is not None:
        z = model.infer_latent(s[:, :-1], tgt[:, 1:])  # (B, n, Z)
        terms["z_l2"] = (w.latent_l2, z.pow(2).mean())
    members = model.spec.num_predictors if level == 1 else 1
    ps, pa, pt, pz = s, a, tgt, z
    if has is not None and (level == 1 or not w.video_predict):
        # level 1 predicts the effect of *real* actions: video-only windows do not train it (with
        # inferred actions it learned the inverse model's bias and planning collapsed, 100 % ->
        # 5 % success on U-maze with 90 % video-only data); they still shape the encoder (VICReg)
        # and the levels above (inferred macro codes)
        ps, pa, pt = s[has], a[has], tgt[has]
        pz = None if z is None else z[has]
    if ps.shape[0]:
        pred = sum(multistep_prediction(model, ps, pa, level, w.rollout_horizon, pt, pz, member=i)
                   for i in range(members)) / members  # each ensemble member's own loss, averaged
    else:  # no labelled window in this batch
        pred = s.sum() * 0.0
    terms["pred"] = (w.prediction, pred)
    if w.contrastive and ps.shape[0] > 1:
        one = model.predict(ps[:, :-1], pa, level, pz)  # (B', n, D)
        terms["nce"] = (w.contrastive, losses.predictive_nce_loss(one, pt[:, 1:], w.temperature))
    # with an expander (level 1, model.expander_dim > 0) covariance is decorrelated in its wider,
    # nonlinear space, as in VICReg; the variance hinge holds on both, so the latent cannot shrink
    # under the prediction loss. ``variance_target`` sets the std asked of the latent (not of the
    # expander): keypoint coordinates lie in [-1, 1] and cannot give std 1. Nothing decorrelates the latent itself: its effective rank can
    # fall (about 3.4 of 64 on Push-T, bench/probe.py), which the diagnostics report
    wide = model.expand(flat) if level == 1 and model.expander is not None else None
    empty = flat.shape[0] < 2  # no labelled window in this batch (video_vicreg off): terms are 0
    if w.variance:
        var = s.sum() * 0.0 if empty else losses.variance_loss(flat, gamma=w.variance_target)
        if wide is not None and not empty:
            var = 0.5 * (var + losses.variance_loss(wide))
        terms["var"] = (w.variance, var)
    if w.covariance:
        cov = losses.covariance_loss(flat if wide is None else wide) if not empty else s.sum() * 0.0
        terms["cov"] = (w.covariance, cov)
    if w.inverse_dynamics:
        # at level >= 2 the target is the macro code itself: it makes codes recoverable from
        # consecutive abstract states, which is what video-only episodes rely on
        pred_a = model.infer_action(s[:, :-1], s[:, 1:], level)
        goal = a if level == 1 else a.detach()
        terms["idm"] = (w.inverse_dynamics, losses.inverse_dynamics_loss(pred_a, goal, has))
    if w.smoothness:
        terms["smooth"] = (w.smoothness, losses.temporal_smoothness_loss(s))
    return terms


def equivariance_term(model: WorldModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Keypoint equivariance on the first frame of each window: batch["pixels"] (B, L, 3, H, W),
    batch["warp"] (B, 2, 3) from ``hmpc.augment.sample_warps`` (the trainer adds it)."""
    if not hasattr(model.encoder, "keypoints"):
        raise ValueError("model.loss.equivariance > 0 needs a keypoint encoder: set model.keypoints "
                         "> 0 (e.g. 16), or model.loss.equivariance=0")
    theta = batch.get("warp")
    state = batch.get("state")
    frames = model.visible(batch["pixels"][:, 0], None if state is None else state[:, 0])  # (B, 3, H, W)
    if theta is None or theta.shape != (frames.shape[0], 2, 3):
        got = None if theta is None else tuple(theta.shape)
        raise ValueError(f"model.loss.equivariance needs batch['warp'] ({frames.shape[0]}, 2, 3) "
                         f"from hmpc.augment.sample_warps; got {got}")
    points, vecs = model.encoder.parts(frames)
    warped_points, warped_vecs = model.encoder.parts(warp_images(frames, theta))
    loss = losses.equivariance_loss(points, warped_points, theta)
    if vecs.shape[2]:  # model.keypoint_vectors > 0: the vectors turn with the frame too
        loss = loss + losses.vector_equivariance_loss(vecs, warped_vecs, theta)
    return loss


def add_warps(
    batch: dict[str, torch.Tensor], w: LossWeights, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """``batch`` with batch["warp"] drawn from ``rng`` when the equivariance term is on."""
    if not w.equivariance:
        return batch
    n = batch["pixels"].shape[0]
    theta = sample_warps(n, rng, w.equivariance_deg, w.equivariance_shift)
    return {**batch, "warp": theta.to(batch["pixels"].device)}


def state_probe_term(
    model: WorldModel, s1: torch.Tensor, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Probe loss on detached level-1 latents s1 (B, L, D_1) vs batch["state"] (B, L, S)."""
    if model.probe is None:
        raise ValueError("model.loss.state_probe > 0 needs a state probe head: model.probe_dim > 0 "
                         "(hmpc-train sets it from the dataset's observation.state size)")
    state = batch.get("state")
    if state is None or state.shape[-1] != model.spec.probe_dim:
        got = None if state is None else tuple(state.shape)
        raise ValueError(f"model.loss.state_probe needs batch['state'] (B, L, "
                         f"{model.spec.probe_dim}); got {got}")
    pred = model.decode_state(s1.detach())
    has_state = batch.get("has_state")
    if has_state is not None and not bool(has_state.all()):  # windows of imported video log no state
        return losses.state_probe_loss(pred[has_state], state[has_state]) if bool(has_state.any()) \
            else pred.sum() * 0.0
    return losses.state_probe_loss(pred, state)


@torch.no_grad()
def update_ema(target: WorldModel, online: WorldModel, decay: float) -> None:
    """target <- decay * target + (1 - decay) * online, parameter by parameter (in place)."""
    for pt, po in zip(target.parameters(), online.parameters(), strict=True):
        pt.lerp_(po, 1.0 - decay)
    for bt, bo in zip(target.buffers(), online.buffers(), strict=True):
        bt.copy_(bo)
