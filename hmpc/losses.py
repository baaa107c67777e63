"""Loss functions of the world model: pure functions of tensors, no modules, no state.

Shapes: B = batch, T = time, D = latent size, A = action size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hmpc.augment import warp_points


def prediction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """JEPA loss: mean squared distance between predicted and encoded future latents.

    Args:
        pred: (..., D) latents predicted by the predictor (open-loop rollout).
        target: (..., D) latents of the observed future, same shape as ``pred``.
    Returns:
        scalar: mean over all leading dims of the per-sample squared L2 distance / D.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction_loss: pred {tuple(pred.shape)} != target {tuple(target.shape)}")
    return F.mse_loss(pred, target)


def variance_loss(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg variance term: hinge pushing each dimension's std over the batch up to ``gamma``.

    Args:
        z: (N, D) embeddings; N is the batch (flatten time into it before calling).
    Returns:
        scalar: mean_d relu(gamma - std_d). Zero when every dimension has std >= gamma.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"variance_loss needs (N>=2, D) embeddings, got {tuple(z.shape)}")
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def equivariance_loss(
    points: torch.Tensor, points_of_warped: torch.Tensor, theta: torch.Tensor
) -> torch.Tensor:
    """Keypoints must move with the image: warp the image, and they land where the warp takes them.

    Args:
        points: (B, K, 2) keypoints of the images, (x, y) in [-1, 1].
        points_of_warped: (B, K, 2) keypoints of the same images warped by ``theta``.
        theta: (B, 2, 3) warps in ``affine_grid``'s convention (``hmpc.augment``).
    Returns:
        scalar: mean over B and K of the squared distance between ``points_of_warped`` and
        ``warp_points(points, theta)``. Zero for an exactly equivariant detector.
    """
    if points.shape != points_of_warped.shape or points.shape[-1] != 2:
        raise ValueError(f"equivariance_loss: points {tuple(points.shape)} and points_of_warped "
                         f"{tuple(points_of_warped.shape)} must both be (B, K, 2)")
    return (points_of_warped - warp_points(points, theta)).pow(2).sum(-1).mean()


def vector_equivariance_loss(
    vectors: torch.Tensor, vectors_of_warped: torch.Tensor, theta: torch.Tensor
) -> torch.Tensor:
    """Keypoint vectors must turn with the image: directions, unlike points, ignore the shift.

    Args:
        vectors: (B, K, V, 2) attended vectors of the images, (x, y) components.
        vectors_of_warped: (B, K, V, 2) vectors of the same images warped by ``theta``.
        theta: (B, 2, 3) warps in ``affine_grid``'s convention (``hmpc.augment``); a direction v
            of the image becomes ``A^-1 v`` (A = theta[:, :, :2]), the point map without its shift.
    Returns:
        scalar: mean over B, K and V of the squared distance between ``vectors_of_warped`` and
        the turned ``vectors``. Zero for exactly equivariant vectors.
    """
    if vectors.shape != vectors_of_warped.shape or vectors.dim() != 4 or vectors.shape[-1] != 2:
        raise ValueError(f"vector_equivariance_loss: vectors {tuple(vectors.shape)} and "
                         f"vectors_of_warped {tuple(vectors_of_warped.shape)} must both be (B, K, V, 2)")
    b, k, v, _ = vectors.shape
    still = torch.cat([theta[:, :, :2], torch.zeros_like(theta[:, :, 2:])], dim=-1)  # no shift
    turned = warp_points(vectors.reshape(b, k * v, 2), still).view(b, k, v, 2)
    return (vectors_of_warped - turned).pow(2).sum(-1).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """VICReg covariance term: squared off-diagonal covariance, summed and divided by D.

    Args:
        z: (N, D) embeddings.
    Returns:
        scalar; zero when the dimensions are pairwise uncorrelated over the batch.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"covariance_loss needs (N>=2, D) embeddings, got {tuple(z.shape)}")
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = (zc.T @ zc) / (n - 1)  # (D, D)
    off_diag = cov - torch.diag(torch.diag(cov))
    return off_diag.pow(2).sum() / d


def inverse_dynamics_loss(
    pred_action: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverse-dynamics auxiliary loss: MSE between actions inferred from (s_t, s_t+1) and taken.

    Without it, planning in a JEPA latent can collapse (PLDM ablation).

    Args:
        pred_action, action: (B, ..., A).
        mask: optional (B,) bool; only rows where it is True count (windows with actions).
    Returns:
        scalar: mean squared error over the kept rows; 0 (still differentiable) when none is kept.
    """
    if pred_action.shape != action.shape:
        raise ValueError(f"inverse_dynamics_loss: pred {tuple(pred_action.shape)} != "
                         f"action {tuple(action.shape)}")
    if mask is None:
        return F.mse_loss(pred_action, action)
    err = (pred_action - action).pow(2).flatten(1).mean(dim=1)  # (B,)
    keep = mask.to(err.dtype)
    return (err * keep).sum() / keep.sum().clamp_min(1.0)


def predictive_nce_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Contrastive prediction (CPC / InfoNCE): each prediction must be nearer its own target than
    the other windows' targets at the same time step.

    Logits are negative mean squared distances (the geometry of :func:`prediction_loss` and of
    the planners' costs) divided by ``temperature``. It rewards what tells windows apart, which
    variance/covariance terms do not demand; whatever already does so (on Push-T, the positions:
    the term fell to about 0.01 and the block angle stayed out, README) it leaves alone.

    Args:
        pred: (B, T, D) predicted latents; target: (B, T, D) encoded latents, same shape. B >= 2.
    Returns:
        scalar: mean over t and b of cross-entropy(-||pred[b, t] - target[:, t]||² / (D τ), b).
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[0] < 2:
        raise ValueError(f"predictive_nce_loss needs pred and target (B>=2, T, D) of one shape, "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")
    if temperature <= 0:
        raise ValueError(f"predictive_nce_loss: temperature={temperature} must be > 0")
    p, t = pred.transpose(0, 1), target.transpose(0, 1)  # (T, B, D)
    d2 = (p.unsqueeze(2) - t.unsqueeze(1)).pow(2).mean(-1)  # (T, B, B): [t, i, j] = |p_i - t_j|²/D
    logits = -d2 / temperature
    labels = torch.arange(pred.shape[0], device=pred.device).expand(pred.shape[1], -1)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


def state_probe_loss(pred_state: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """State-probe regression: MSE between probed and observed physical states.

    Args:
        pred_state: (..., S) probe outputs, computed from *detached* latents by the caller so the
            probe reads the representation without shaping it.
        state: (..., S) observation.state, same shape.
    Returns:
        scalar mean squared error.
    """
    if pred_state.shape != state.shape:
        raise ValueError(f"state_probe_loss: pred {tuple(pred_state.shape)} != "
                         f"state {tuple(state.shape)}")
    return F.mse_loss(pred_state, state.to(pred_state.dtype))


def temporal_smoothness_loss(z: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between consecutive latents of a sequence ``z`` (B, T, D)."""
    if z.dim() != 3 or z.shape[1] < 2:
        raise ValueError(f"temporal_smoothness_loss needs (B, T>=2, D), got {tuple(z.shape)}")
    return (z[:, 1:] - z[:, :-1]).pow(2).mean()


@torch.no_grad()
def collapse_metrics(z: torch.Tensor) -> dict[str, float]:
    """Health of a representation (N, D): mean/min per-dim std and effective rank.

    Effective rank = exp(entropy of the normalised singular values) (Roy & Vetterli 2007);
    it is D for isotropic embeddings and 1 for embeddings on a line.
    """
    z = z.float()
    std = z.std(dim=0)
    s = torch.linalg.svdvals(z - z.mean(dim=0))
    p = s / s.sum().clamp_min(1e-12)
    erank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return {"std_mean": float(std.mean()), "std_min": float(std.min()), "eff_rank": float(erank)}
