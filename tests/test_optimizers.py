"""Optimisers on analytic problems: a quadratic, an optimum on the bound, a multimodal cost where
restarts matter, and NaN costs that must never be returned as the best."""

import pytest
import torch

from hmpc.noise import colored_noise
from hmpc.optimizers import CEM, MPPI, GradientDescent, Hybrid, make_optimizer


def quadratic(target: torch.Tensor):
    def cost(x: torch.Tensor) -> torch.Tensor:  # (N, H, A) -> (N,)
        return (x - target).pow(2).sum((1, 2))

    return cost


def two_wells(x: torch.Tensor) -> torch.Tensor:
    """Per element: a shallow well (-1) at -0.5 and a deep one (-2) at +0.5; (N, H, A) -> (N,)."""
    shallow = torch.exp(-((x + 0.5) ** 2) / (2 * 0.2**2))
    deep = 2.0 * torch.exp(-((x - 0.5) ** 2) / (2 * 0.2**2))
    return -(shallow + deep).sum((1, 2))


def _name(opt) -> str:
    return type(opt).__name__ + ("-icem" if getattr(opt, "noise_beta", 0) else "")


def all_optimizers() -> list:
    return [
        GradientDescent(iters=200, lr=0.1),
        CEM(iters=30, population=256, elites=16),
        CEM(iters=30, population=256, elites=16, noise_beta=2.0, keep_elites=4),  # iCEM
        MPPI(iters=30, population=256, temperature=0.05, adapt_std=True),
        Hybrid(sampler={"name": "mppi", "iters": 3, "population": 64, "temperature": 0.1},
               refine={"iters": 100, "lr": 0.05}),
    ]


@pytest.mark.parametrize("opt", all_optimizers(), ids=_name)
def test_finds_minimum_inside_box(opt):
    target = torch.tensor([[0.3, -0.5], [0.1, 0.7], [-0.8, 0.2]])  # (H=3, A=2)
    best, info = opt.optimize(quadratic(target), torch.zeros(4, 3, 2), -1.0, 1.0)
    assert best.shape == (3, 2)
    assert torch.allclose(best, target, atol=0.05)
    assert info["cost"] < 0.01 and info["iters"] >= 1


@pytest.mark.parametrize("opt", all_optimizers(), ids=_name)
def test_respects_bounds_when_minimum_is_outside(opt):
    target = torch.full((2, 2), 3.0)
    best, _ = opt.optimize(quadratic(target), torch.zeros(2, 2, 2), -1.0, 1.0)
    assert best.max() <= 1.0 + 1e-6 and best.min() >= -1.0 - 1e-6
    assert torch.allclose(best, torch.ones(2, 2), atol=0.05)


@pytest.mark.parametrize("opt", all_optimizers(), ids=_name)
def test_per_element_bounds_optimum_on_the_bound(opt):
    """Tensor bounds (H, A): the first action's optimum is on its own (tighter) bound."""
    target = torch.tensor([[0.9, -0.9], [0.2, -0.3]])
    low = torch.tensor([[-1.0, -0.5], [-1.0, -1.0]])
    high = torch.tensor([[0.5, 1.0], [1.0, 1.0]])
    best, _ = opt.optimize(quadratic(target), torch.zeros(2, 2, 2), low, high)
    assert torch.all(best <= high + 1e-6) and torch.all(best >= low - 1e-6)
    expected = torch.tensor([[0.5, -0.5], [0.2, -0.3]])
    assert torch.allclose(best, expected, atol=0.05)


def test_multimodal_restarts_matter():
    """From an init inside the shallow well, one gradient candidate stays there; restarts find
    the deep well. Sampling optimisers and the hybrid find it from the same init."""
    init = torch.full((1, 2, 1), -0.4)  # (B=1, H=2, A=1), in the shallow well's basin
    deep, shallow = torch.full((2, 1), 0.5), torch.full((2, 1), -0.5)
    best, info = GradientDescent(iters=100, lr=0.05).optimize(two_wells, init, -1.0, 1.0)
    assert torch.allclose(best, shallow, atol=0.05) and info["cost"] > -2.1
    restarts = init.repeat(32, 1, 1)
    gd = GradientDescent(iters=100, lr=0.05, restart_noise=1.0)
    for opt in [gd, CEM(iters=10, population=64, init_std=0.7), MPPI(iters=10, population=64,
                temperature=0.1, noise_std=0.7, adapt_std=True), Hybrid()]:
        best, info = opt.optimize(two_wells, restarts, -1.0, 1.0)
        assert torch.allclose(best, deep, atol=0.05), type(opt).__name__
        assert info["cost"] < -3.9, type(opt).__name__


@pytest.mark.parametrize("opt", all_optimizers(), ids=_name)
def test_nan_costs_are_never_the_best(opt):
    """NaN for every candidate whose first entry is > 0: the best is the bounded optimum at 0."""
    target = torch.tensor([[0.5, 0.2]])

    def cost(x: torch.Tensor) -> torch.Tensor:
        c = quadratic(target)(x)
        return torch.where(x[:, 0, 0] > 0, torch.full_like(c, float("nan")), c)

    best, info = opt.optimize(cost, torch.full((4, 1, 2), -0.5), -1.0, 1.0)
    assert torch.isfinite(best).all() and best[0, 0] <= 0
    assert info["cost"] == pytest.approx(float(quadratic(target)(best[None])[0]))
    assert info["cost"] < 0.4  # init: 1.49; NaN-free optimum (0, 0.2): 0.25


@pytest.mark.parametrize("opt", all_optimizers(), ids=_name)
def test_all_nan_costs_report_infinite_cost(opt):
    best, info = opt.optimize(lambda x: x.sum((1, 2)) * float("nan"), torch.zeros(4, 2, 2), -1.0, 1.0)
    assert torch.isfinite(best).all() and info["cost"] == float("inf")


def test_gd_early_stop_and_warm_start():
    target = torch.tensor([[0.5, 0.5]])
    opt = GradientDescent(iters=500, lr=0.05, patience=3, tol=1e-3)
    _, info = opt.optimize(quadratic(target), target.unsqueeze(0).repeat(2, 1, 1), -1.0, 1.0)
    assert info["iters"] < 100  # started at the optimum: plateaus, halves its step, stops early
    assert info["cost"] == pytest.approx(0.0, abs=1e-8)


def test_gd_without_final_scoring_returns_the_stepped_plan_after_one_forward():
    """score_final=False (real-time iteration): one cost call per iteration, none after the last
    step, and the result is the last iterate of the row whose last cost was lowest."""
    target = torch.tensor([[0.5, -0.5]])
    calls = []

    def cost(x):
        calls.append(x.shape[0])
        return quadratic(target)(x)

    init = torch.zeros(2, 1, 2)
    init[1] = 0.9  # row 1 starts farther: row 0 is chosen (no restart noise on row 0)
    best, info = GradientDescent(iters=1, lr=0.1, score_final=False).optimize(cost, init, -1, 1)
    assert len(calls) == 1 and info["iters"] == 1
    # Adam's first step moves every coordinate by lr against its gradient's sign
    assert torch.allclose(best, torch.tensor([[0.1, -0.1]]), atol=1e-6)
    assert info["cost"] == pytest.approx(0.5)  # row 0's cost before the step
    calls.clear()
    scored, info = GradientDescent(iters=1, lr=0.1).optimize(cost, init, -1, 1)
    assert len(calls) == 2 and torch.allclose(scored, best) and info["cost"] == pytest.approx(0.32)
    # many iterations without final scoring still converge, and stay in the box
    far = torch.tensor([[2.0, -0.3]])
    best, _ = GradientDescent(iters=200, lr=0.1, score_final=False).optimize(
        quadratic(far), torch.zeros(1, 1, 2), -1, 1)
    assert torch.allclose(best, torch.tensor([[1.0, -0.3]]), atol=0.05)  # the last iterate orbits


@pytest.mark.parametrize("cls", [GradientDescent, CEM, MPPI, Hybrid])
def test_optimizers_are_seeded(cls):
    target = torch.tensor([[0.2, -0.4], [0.6, 0.1]])
    a, _ = cls(seed=1).optimize(quadratic(target), torch.zeros(4, 2, 2), -1, 1)
    b, _ = cls(seed=1).optimize(quadratic(target), torch.zeros(4, 2, 2), -1, 1)
    assert torch.equal(a, b)


def test_mppi_warm_start_is_scored():
    """The warm start (init[0]) is scored first: started at the optimum, MPPI keeps it."""
    target = torch.tensor([[0.3, -0.2], [0.1, 0.4]])
    best, info = MPPI(iters=2, population=8).optimize(quadratic(target), target[None], -1, 1)
    assert torch.equal(best, target) and info["cost"] == 0.0


def test_make_optimizer_errors():
    with pytest.raises(ValueError, match="known optimizers"):
        make_optimizer("adamw")
    with pytest.raises(ValueError, match="accepted"):
        make_optimizer("gd", step_size=0.1)
    with pytest.raises(ValueError, match="accepted"):
        make_optimizer("mppi", elite_ratio=0.1)
    with pytest.raises(ValueError, match="accepted"):
        make_optimizer("hybrid", sampler={"name": "cem", "iterations": 2})
    with pytest.raises(ValueError, match="sampler"):
        make_optimizer("hybrid", sampler={"name": "gd"})
    with pytest.raises(ValueError, match="temperature"):
        make_optimizer("mppi", temperature=0.0)
    assert isinstance(make_optimizer("mppi", iters=2), MPPI)
    assert isinstance(make_optimizer("hybrid", refine={"iters": 3}), Hybrid)
    with pytest.raises(ValueError, match=r"\(B, H, A\)"):
        GradientDescent().optimize(quadratic(torch.zeros(2)), torch.zeros(3, 2), -1, 1)


def _lag1(x: torch.Tensor) -> float:
    """Mean lag-1 autocorrelation along time of noise (n, H, A)."""
    x = x - x.mean(1, keepdim=True)
    return float(((x[:, 1:] * x[:, :-1]).sum(1) / x.pow(2).sum(1)).mean())


def test_colored_noise_is_standard_normal_per_step_and_correlated_in_time():
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    white = colored_noise(gen(), 2000, 16, 2, 0.0)
    assert torch.equal(white, torch.randn((2000, 16, 2), generator=gen()))  # beta 0: plain randn
    for horizon in (16, 15):  # even and odd lengths (the Nyquist term exists only for even)
        pink = colored_noise(gen(), 2000, horizon, 2, 2.0)
        assert pink.shape == (2000, horizon, 2) and torch.isfinite(pink).all()
        assert torch.allclose(pink.std(0), torch.ones(horizon, 2), atol=0.08)  # N(0, 1) per step
        assert pink.mean().abs() < 0.05
        assert _lag1(pink) > 0.5 > 0.1 > abs(_lag1(white))
    # coloured noise goes somewhere: the sum over the horizon spreads far wider than white's
    assert colored_noise(gen(), 2000, 16, 2, 2.0).sum(1).std() > 1.4 * white.sum(1).std()
    assert torch.equal(colored_noise(gen(), 8, 16, 2, 2.0), colored_noise(gen(), 8, 16, 2, 2.0))


def test_icem_options_are_checked():
    with pytest.raises(ValueError, match="noise_beta"):
        CEM(noise_beta=-1.0)
    with pytest.raises(ValueError, match="keep_elites"):
        CEM(elites=4, keep_elites=5)



def test_a_deadline_check_waits_for_queued_gpu_work(monkeypatch):
    """On a GPU, expired(deadline, tensor) first synchronises the tensor's stream (kernels run
    after the call that queues them), so late work is seen as late; without a deadline, or for a
    CPU tensor, it never synchronises."""
    import hmpc.optimizers as opt

    synced = []

    class Stream:
        def synchronize(self):
            synced.append(True)

    class OnGpu:
        is_cuda, device = True, "cuda:0"

    monkeypatch.setattr(opt.torch.cuda, "current_stream", lambda device: synced.append(device) or Stream())
    assert not opt.expired(None, OnGpu()) and synced == []
    assert not opt.expired(opt.time.perf_counter() + 60, torch.zeros(2)) and synced == []
    assert not opt.expired(opt.time.perf_counter() + 60, OnGpu()) and synced == ["cuda:0", True]
    assert opt.expired(opt.time.perf_counter() - 1, OnGpu())


@pytest.mark.parametrize("name", ["gd", "cem", "mppi"])
def test_each_optimiser_waits_for_the_evaluation_it_times(name, monkeypatch):
    """After each evaluation, GD, CEM and MPPI ask expired() with the cost they just computed, so
    on a GPU the check waits for that work."""
    import hmpc.optimizers as opt

    waited, check = [], opt.expired
    monkeypatch.setattr(opt, "expired", lambda d, t=None: waited.append(t) or check(d, t))
    kwargs = {"gd": {"iters": 3}, "cem": {"iters": 3, "population": 8, "elites": 2}, "mppi": {"iters": 3, "population": 8}}
    make_optimizer(name, **kwargs[name]).optimize(lambda x: x.pow(2).sum((1, 2)), torch.zeros(2, 3, 2), -1.0, 1.0,
                                                  deadline=opt.time.perf_counter() + 60)
    assert sum(isinstance(t, torch.Tensor) for t in waited) >= 3
