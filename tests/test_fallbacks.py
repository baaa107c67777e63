"""Injected NaN costs and optimiser errors trigger the same-step fallback of FlatMPC and
HierarchicalMPC, are counted in info["fallback"], and never reach the env."""

import numpy as np
import pytest
import torch

from hmpc.hierarchy import HierarchicalMPC
from hmpc.mpc import FlatMPC
from hmpc.optimizers import CEM, MPPI, GradientDescent, Hybrid
from hmpc.oracle import OracleMPC
from hmpc.world_model import LevelSpec, WorldModelSpec, build_world_model
from robots import make_env

SPEC = WorldModelSpec(
    image_size=16, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16,
    levels=(LevelSpec(latent_dim=6, k=2, macro_dim=2, hidden=16),),
)
NAN = float("nan")


@pytest.fixture(scope="module")
def model():
    return build_world_model(SPEC, seed=0)


@pytest.fixture(scope="module")
def env():
    e = make_env("point_maze", layout="open", image_size=16, max_episode_steps=1000)
    yield e
    e.close()


class NaNCosts:
    """Wraps an optimiser: its cost callable returns NaN for "all" candidates or "some" (odd
    rows), from call number ``after`` on."""

    def __init__(self, inner, which: str, after: int = 0):
        self.inner, self.which, self.after, self.calls = inner, which, after, 0

    def optimize(self, cost_fn, init, low, high):
        self.calls += 1
        if self.calls <= self.after:
            return self.inner.optimize(cost_fn, init, low, high)

        def poisoned(x: torch.Tensor) -> torch.Tensor:
            c = cost_fn(x)
            bad = torch.ones_like(c, dtype=torch.bool)
            if self.which == "some":
                bad = torch.arange(len(c)) % 2 == 1
            return torch.where(bad, torch.full_like(c, NAN), c)

        return self.inner.optimize(poisoned, init, low, high)


class Raises:
    def optimize(self, cost_fn, init, low, high):
        raise RuntimeError("solver exploded")


def closed_loop(env, ctrl, steps: int = 6) -> list[dict]:
    """Run ``ctrl`` in the real env; every command must arrive finite and inside the box."""
    obs, _ = env.reset(seed=0)
    ctrl.reset(obs, env.unwrapped.goal_observation())
    infos = []
    for _ in range(steps):
        a, info = ctrl.act(obs)
        assert a.shape == (2,) and a.dtype == np.float32
        assert np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1.0)
        obs, _, _, _, step_info = env.step(a)
        assert not step_info["action_clipped"]  # the env saw exactly what was commanded
        infos.append(info)
    return infos


def inner_optimizers():
    return [GradientDescent(iters=3), CEM(iters=2, population=16, elites=4),
            MPPI(iters=2, population=16), Hybrid(sampler={"name": "cem", "iters": 1, "population": 16},
                                                 refine={"iters": 2})]


@pytest.mark.parametrize("inner", inner_optimizers(), ids=lambda o: type(o).__name__)
def test_flat_all_nan_costs_fall_back_every_step(model, env, inner):
    infos = closed_loop(env, FlatMPC(model, NaNCosts(inner, "all"), horizon=3))
    assert sum(i["fallback"] for i in infos) == len(infos)
    assert all("finite cost" in i["error"] for i in infos)


@pytest.mark.parametrize("inner", inner_optimizers(), ids=lambda o: type(o).__name__)
def test_flat_some_nan_costs_are_ignored(model, env, inner):
    """NaN for some candidates: the optimiser ranks them last and plans with the rest."""
    infos = closed_loop(env, FlatMPC(model, NaNCosts(inner, "some"), horizon=3))
    assert not any(i["fallback"] for i in infos)
    assert all(np.isfinite(i["cost"]) and "error" not in i for i in infos)


def test_flat_optimizer_error_falls_back_in_the_same_step(model, env):
    infos = closed_loop(env, FlatMPC(model, Raises(), horizon=3))
    assert all(i["fallback"] and "solver exploded" in i["error"] for i in infos)


def test_hierarchical_level1_nan_costs_fall_back(model, env):
    opts = [NaNCosts(GradientDescent(iters=2), "all"), CEM(iters=2, population=16, elites=4)]
    infos = closed_loop(env, HierarchicalMPC(model, opts, top_horizon=2))
    assert all(i["fallback"] and i["error"].startswith("level 1") for i in infos)


def test_hierarchical_top_level_failure_keeps_the_old_subgoal(model, env):
    """The top level fails from its 3rd call on: the first two steps are clean, later steps
    reuse the last subgoal (level 1 still plans) and report the fallback."""
    top = NaNCosts(CEM(iters=2, population=16, elites=4), "all", after=2)
    ctrl = HierarchicalMPC(model, [GradientDescent(iters=2), top], top_horizon=2)
    infos = closed_loop(env, ctrl)
    assert [i["fallback"] for i in infos] == [False, False] + [True] * 4
    assert all(i["error"].startswith("level 2") and i["terms"] for i in infos[2:])


@pytest.mark.parametrize("top", [Raises(), NaNCosts(CEM(iters=1, population=8), "all")],
                         ids=["raises", "nan"])
def test_hierarchical_without_any_subgoal_falls_back(model, env, top):
    ctrl = HierarchicalMPC(model, [GradientDescent(iters=2), top], top_horizon=2)
    infos = closed_loop(env, ctrl)
    assert all(i["fallback"] and i["error"].startswith("level 2") for i in infos)


class Scripted:
    """Returns a fixed plan (all candidates) on the first call, then raises."""

    def __init__(self, plan: torch.Tensor):
        self.plan, self.calls = plan, 0

    def optimize(self, cost_fn, init, low, high):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("solver exploded")
        return self.plan.clone(), {"cost": 0.0, "iters": 1}


def test_fallback_plays_the_previous_plan_in_order(model, env):
    """After a plan p is made at step t (p[0] sent), failures at t+1, t+2 send p[1], p[2]."""
    plan = torch.tensor([[0.1, -0.1], [0.2, -0.2], [0.3, -0.3], [0.4, -0.4]])
    ctrl = FlatMPC(model, Scripted(plan), horizon=4)
    obs, _ = env.reset(seed=0)
    ctrl.reset(obs, env.unwrapped.goal_observation())
    sent = [ctrl.act(obs)[0] for _ in range(4)]
    np.testing.assert_allclose(np.stack(sent), plan.numpy(), atol=1e-7)
    oracle = OracleMPC(env, Scripted(plan), horizon=4)  # the oracle's fallback plays it in order too
    try:
        oracle.reset(obs, env.unwrapped.goal_observation())
        sent = [oracle.act(obs) for _ in range(4)]
        np.testing.assert_allclose(np.stack([a for a, _ in sent]), plan.numpy(), atol=1e-7)
        assert [i["fallback"] for _, i in sent] == [False, True, True, True]
    finally:
        oracle.close()
