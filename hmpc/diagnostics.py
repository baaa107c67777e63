"""Representation health checks run at every validation: collapse, probes, prediction error.

All functions take tensors and return plain floats, so they log to CSV/TensorBoard unchanged.
"""

from __future__ import annotations

import torch

from hmpc.losses import collapse_metrics
from hmpc.world_model import WorldModel


def linear_probe_r2(
    z_train: torch.Tensor, y_train: torch.Tensor, z_test: torch.Tensor, y_test: torch.Tensor,
    ridge: float = 1e-3,
) -> float:
    """R² of a ridge-regression probe fit on (z_train, y_train), scored on held-out data.

    z: (N, D) latents, y: (N, d) simulator state. R² is averaged over the d state dims; 1 means
    the state is linearly decodable from the latent, 0 means no better than the mean.
    """
    def with_bias(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, torch.ones_like(z[:, :1])], dim=1).double()

    x, xt = with_bias(z_train), with_bias(z_test)
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(x.T @ x + ridge * eye, x.T @ y_train.double())
    pred = xt @ w
    yt = y_test.double()
    ss_res = (pred - yt).pow(2).sum(0)
    ss_tot = (yt - yt.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    return float((1 - ss_res / ss_tot).mean())


@torch.no_grad()
def window_diagnostics(
    model: WorldModel, batch: dict[str, torch.Tensor], probe_dims: int = 2
) -> dict[str, float]:
    """Collapse metrics, probe R² (first ``probe_dims`` state dims) and k-step error ratios.

    The error ratio divides the open-loop prediction error over the whole window by the error of
    the "nothing moves" baseline (s_T predicted as s_0): < 1 means the predictor learned dynamics.
    Probes are fit on the first half of the batch and scored on the second half.
    """
    pixels, action, state = batch["pixels"], batch["action"], batch["state"]
    b, length = pixels.shape[:2]
    spec = model.spec
    fused = state.flatten(0, 1) if spec.state_dim else None
    s1 = model.encode(pixels.flatten(0, 1), fused).view(b, length, -1)
    out: dict[str, float] = {}
    half = b // 2
    s_prev = s1
    for level in range(1, spec.num_levels + 1):
        span = spec.span(level)
        if level == 1:
            s, a, y = s1, action, state
        else:
            k = spec.levels[level - 2].k
            s = model.abstract[level - 2].project(s_prev[:, ::k])
            chunks = action.reshape(b, (length - 1) // span, span * action.shape[-1])
            a, y = model.encode_macro(chunks, level), state[:, ::span]
        for name, v in collapse_metrics(s.flatten(0, 1)).items():
            out[f"l{level}/{name}"] = v
        if half >= 1:
            zt, yt = s[:half].flatten(0, 1), y[:half, :, :probe_dims].flatten(0, 1)
            zv, yv = s[half:].flatten(0, 1), y[half:, :, :probe_dims].flatten(0, 1)
            out[f"l{level}/probe_r2"] = linear_probe_r2(zt, yt, zv, yv)
        pred = model.rollout(s[:, 0], a, level)[:, -1]
        err = (pred - s[:, -1]).pow(2).mean()
        base = (s[:, 0] - s[:, -1]).pow(2).mean().clamp_min(1e-12)
        out[f"l{level}/pred_err_ratio"] = float(err / base)
        s_prev = s
    return out
