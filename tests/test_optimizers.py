"""Optimisers on a known quadratic: they must find its (box-constrained) minimum."""

import pytest
import torch

from hmpc.optimizers import CEM, GradientDescent, make_optimizer


def quadratic(target: torch.Tensor):
    def cost(x: torch.Tensor) -> torch.Tensor:  # (N, H, A) -> (N,)
        return (x - target).pow(2).sum((1, 2))

    return cost


@pytest.mark.parametrize("opt", [GradientDescent(iters=200, lr=0.1), CEM(iters=30, population=256, elites=16)])
def test_finds_minimum_inside_box(opt):
    target = torch.tensor([[0.3, -0.5], [0.1, 0.7], [-0.8, 0.2]])  # (H=3, A=2)
    best, info = opt.optimize(quadratic(target), torch.zeros(4, 3, 2), -1.0, 1.0)
    assert best.shape == (3, 2)
    assert torch.allclose(best, target, atol=0.05)
    assert info["cost"] < 0.01 and info["iters"] >= 1


@pytest.mark.parametrize("opt", [GradientDescent(iters=100, lr=0.2), CEM(iters=10, population=128)])
def test_respects_bounds_when_minimum_is_outside(opt):
    target = torch.full((2, 2), 3.0)
    best, _ = opt.optimize(quadratic(target), torch.zeros(2, 2, 2), -1.0, 1.0)
    assert best.max() <= 1.0 + 1e-6 and best.min() >= -1.0 - 1e-6
    assert torch.allclose(best, torch.ones(2, 2), atol=0.05)


def test_gd_early_stop_and_warm_start():
    target = torch.tensor([[0.5, 0.5]])
    opt = GradientDescent(iters=500, lr=0.05, patience=3, tol=1e-3)
    _, info = opt.optimize(quadratic(target), target.unsqueeze(0).repeat(2, 1, 1), -1.0, 1.0)
    assert info["iters"] < 100  # started at the optimum: plateaus, halves its step, stops early
    assert info["cost"] == pytest.approx(0.0, abs=1e-8)


def test_gd_is_seeded():
    target = torch.tensor([[0.2, -0.4], [0.6, 0.1]])
    a, _ = GradientDescent(iters=3, seed=1).optimize(quadratic(target), torch.zeros(4, 2, 2), -1, 1)
    b, _ = GradientDescent(iters=3, seed=1).optimize(quadratic(target), torch.zeros(4, 2, 2), -1, 1)
    assert torch.equal(a, b)


def test_make_optimizer_errors():
    with pytest.raises(ValueError, match="known optimizers"):
        make_optimizer("adamw")
    with pytest.raises(ValueError, match="accepted"):
        make_optimizer("gd", step_size=0.1)
    with pytest.raises(ValueError, match=r"\(B, H, A\)"):
        GradientDescent().optimize(quadratic(torch.zeros(2)), torch.zeros(3, 2), -1, 1)
