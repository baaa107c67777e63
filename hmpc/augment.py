"""Image warps for the keypoint equivariance term: sampled on the trainer's RNG, applied in torch.

A warp is an affine map ``theta`` (B, 2, 3) in ``torch.nn.functional.affine_grid``'s convention:
the warped image at normalised output position p (x right, y down, in [-1, 1]) shows the input at
``theta @ [p, 1]``. Content at input position q therefore appears at ``A^-1 (q - t)`` (A =
theta[:, :, :2], t = theta[:, :, 2]); ``warp_points`` applies that map to keypoints.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def sample_warps(n: int, rng: np.random.Generator, max_deg: float, max_shift: float = 0.0) -> torch.Tensor:
    """(n, 2, 3) float32 rotations about the image centre by U(-max_deg, max_deg) degrees, then
    shifts by U(-max_shift, max_shift) in normalised units (1.0 = half the image side)."""
    if max_deg < 0 or max_shift < 0:
        raise ValueError(f"warp ranges must be >= 0; got max_deg={max_deg}, max_shift={max_shift}")
    angle = rng.uniform(-1.0, 1.0, n) * math.radians(max_deg)
    shift = rng.uniform(-1.0, 1.0, (n, 2)) * max_shift
    cos, sin = np.cos(angle), np.sin(angle)
    theta = np.stack([np.stack([cos, -sin, shift[:, 0]], -1), np.stack([sin, cos, shift[:, 1]], -1)], 1)
    return torch.from_numpy(theta.astype(np.float32))


def warp_images(pixels: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """pixels (B, C, H, W) uint8 or float -> float (B, C, H, W) warped by theta (B, 2, 3); areas
    outside the input repeat its edge pixels (a plain background stays plain, no black corners)."""
    x = pixels.float()
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def warp_points(points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Where points (B, K, 2) of an image appear after ``warp_images(., theta)``: (B, K, 2)."""
    a, t = theta[:, :, :2], theta[:, :, 2]
    return torch.linalg.solve(a, (points - t[:, None]).transpose(1, 2)).transpose(1, 2)
