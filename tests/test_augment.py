"""Image warps of the keypoint equivariance term: where content goes is where warp_points says."""

import math

import numpy as np
import pytest
import torch

from hmpc.augment import sample_warps, warp_images, warp_points

H = 64


def centre_of_blob(x0: float, y0: float, theta: torch.Tensor) -> list[float]:
    """Intensity-weighted centre, in normalised (x, y), of a warped Gaussian blob at (x0, y0)."""
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    nx, ny = (2 * xs + 1) / H - 1, (2 * ys + 1) / H - 1  # pixel centres, affine_grid's convention
    blob = torch.exp(-((nx - x0) ** 2 + (ny - y0) ** 2) / (2 * 0.05**2)) * 255
    w = warp_images(blob.expand(1, 3, H, H), theta)[0, 0]
    return [float((w * nx).sum() / w.sum()), float((w * ny).sum() / w.sum())]


@pytest.mark.parametrize("deg,shift", [(90.0, 0.0), (30.0, 0.0), (-135.0, 0.1), (0.0, -0.2)])
def test_warped_content_lands_where_warp_points_says(deg, shift):
    a = math.radians(deg)
    theta = torch.tensor([[[math.cos(a), -math.sin(a), shift], [math.sin(a), math.cos(a), -shift]]])
    expected = warp_points(torch.tensor([[[0.3, -0.4]]]), theta)[0, 0].tolist()
    assert centre_of_blob(0.3, -0.4, theta) == pytest.approx(expected, abs=2e-3)


def test_sample_warps_are_seeded_rotations_within_range():
    a = sample_warps(64, np.random.default_rng(5), max_deg=30.0, max_shift=0.1)
    b = sample_warps(64, np.random.default_rng(5), max_deg=30.0, max_shift=0.1)
    assert a.shape == (64, 2, 3) and a.dtype == torch.float32 and torch.equal(a, b)
    rot = a[:, :, :2]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(2).expand(64, 2, 2), atol=1e-6)
    assert (torch.atan2(rot[:, 1, 0], rot[:, 0, 0]).abs() <= math.radians(30.0) + 1e-6).all()
    assert (a[:, :, 2].abs() <= 0.1).all() and a[:, :, 2].abs().max() > 0.05
    assert torch.equal(sample_warps(3, np.random.default_rng(0), 0.0)[:, :, :2], torch.eye(2).expand(3, 2, 2))
    with pytest.raises(ValueError, match="max_deg=-1"):
        sample_warps(2, np.random.default_rng(0), -1.0)
