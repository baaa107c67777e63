"""Loss functions on hand-made tensors with known values."""

import math

import pytest
import torch

from hmpc import losses


def test_prediction_loss_known_value():
    pred = torch.zeros(2, 3, 4)
    target = torch.full((2, 3, 4), 2.0)
    assert losses.prediction_loss(pred, target).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="pred"):
        losses.prediction_loss(pred, target[:, :2])


def test_variance_loss_zero_for_spread_and_gamma_for_collapsed():
    spread = torch.tensor([[-2.0, 3.0], [2.0, -3.0]])  # std per dim = 2.83, 4.24 >= 1
    assert losses.variance_loss(spread).item() == 0.0
    collapsed = torch.ones(8, 5)
    assert losses.variance_loss(collapsed).item() == pytest.approx(1.0 - math.sqrt(1e-4), abs=1e-6)


def test_variance_loss_partial_hinge():
    # one dim with std 0.5 (values +-0.5 with n=2 -> unbiased std 0.707), one with large std
    z = torch.tensor([[0.5, 10.0], [-0.5, -10.0]])
    std0 = math.sqrt(0.5 + 1e-4)
    assert losses.variance_loss(z).item() == pytest.approx((1 - std0) / 2, abs=1e-6)


def test_covariance_loss_decorrelated_vs_correlated():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # uncorrelated
    assert losses.covariance_loss(z).item() == pytest.approx(0.0, abs=1e-7)
    x = torch.tensor([[1.0], [-1.0], [2.0], [-2.0]])
    corr = torch.cat([x, x], dim=1)  # cov off-diagonal = var = 10/3
    expected = 2 * (10 / 3) ** 2 / 2
    assert losses.covariance_loss(corr).item() == pytest.approx(expected, rel=1e-5)


def test_inverse_dynamics_and_smoothness():
    assert losses.inverse_dynamics_loss(torch.ones(3, 2), torch.zeros(3, 2)).item() == 1.0
    z = torch.arange(4.0).view(1, 4, 1).expand(2, 4, 3)  # steps of 1 in every dim
    assert losses.temporal_smoothness_loss(z).item() == pytest.approx(1.0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="N>=2"):
        losses.variance_loss(torch.ones(1, 3))
    with pytest.raises(ValueError, match="T>=2"):
        losses.temporal_smoothness_loss(torch.ones(2, 1, 3))


def test_collapse_metrics_detects_collapse():
    g = torch.Generator().manual_seed(0)
    healthy = torch.randn(512, 8, generator=g)
    line = torch.randn(512, 1, generator=g) * torch.ones(1, 8)
    h, c = losses.collapse_metrics(healthy), losses.collapse_metrics(line)
    assert h["eff_rank"] > 7.0 and c["eff_rank"] < 1.5
    assert h["std_min"] > 0.8



def test_predictive_nce_loss_known_value_and_ordering():
    a, tau = 1.5, 0.5
    z = torch.eye(2).mul(a).unsqueeze(1)  # (B=2, T=1, D=2): off-diagonal mean sq distance a²
    assert losses.predictive_nce_loss(z, z, tau).item() == pytest.approx(
        math.log(1 + math.exp(-(a**2) / tau)), rel=1e-6)
    swapped = z.flip(0)  # every prediction nearest the *other* target: worse than chance
    assert losses.predictive_nce_loss(swapped, z, tau).item() > math.log(2)
    with pytest.raises(ValueError, match="temperature"):
        losses.predictive_nce_loss(z, z, 0.0)
    with pytest.raises(ValueError, match="B>=2"):
        losses.predictive_nce_loss(z[:1], z[:1])


def test_equivariance_loss_known_value():
    quarter = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])  # 90 degrees: (x, y) -> (y, -x)
    points = torch.tensor([[[0.5, 0.2], [-0.3, 0.0]]])  # (B=1, K=2, 2)
    moved = torch.tensor([[[0.2, -0.5], [0.0, 0.3]]])  # where the warp takes them
    assert losses.equivariance_loss(points, moved, quarter).item() == pytest.approx(0.0, abs=1e-12)
    off = moved + torch.tensor([0.1, 0.0])  # every keypoint 0.1 to the right of where it belongs
    assert losses.equivariance_loss(points, off, quarter).item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="must both be"):
        losses.equivariance_loss(points, moved[:, :1], quarter)


def test_vector_equivariance_loss_turns_directions_and_ignores_the_shift():
    # a quarter turn with a shift: points move by the shift too, directions only turn
    quarter = torch.tensor([[[0.0, -1.0, 0.3], [1.0, 0.0, -0.2]]])  # (x, y) -> (y, -x) for directions
    vecs = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # (B=1, K=2, V=1, 2)
    turned = torch.tensor([[[[0.0, -1.0]], [[2.0, 0.0]]]])
    assert losses.vector_equivariance_loss(vecs, turned, quarter).item() == pytest.approx(0.0, abs=1e-12)
    # not turned at all: |(1, 0) - (0, -1)|^2 = 2 and |(0, 2) - (2, 0)|^2 = 8, mean 5
    assert losses.vector_equivariance_loss(vecs, vecs, quarter).item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match=r"\(B, K, V, 2\)"):
        losses.vector_equivariance_loss(vecs[:, :, 0], turned[:, :, 0], quarter)

