"""Issue 8, item 5: whatever a planner outputs, no command outside [-1, 1] and nothing
non-finite reaches PyBullet; non-finite plans become the fallback action and are counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmpc.hierarchy import HierarchicalMPC
from hmpc.mpc import FlatMPC
from hmpc.world_model import LevelSpec, WorldModelSpec, build_world_model
from robots import make_env

N = 10_000
SIZE = 16
SPEC = WorldModelSpec(
    image_size=SIZE, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16,
    levels=(LevelSpec(latent_dim=6, k=2, macro_dim=2, hidden=16),),
)
SPECIAL = np.array([np.nan, np.inf, -np.inf, 1e3, -1e3, 1.0, -1.0, 0.0, 1.0000001, 3e38])


def garbage_plans(n: int, horizon: int, dim: int, seed: int) -> np.ndarray:
    """(n, horizon, dim) float64: uniform in [-1e3, 1e3], about a third of entries replaced by
    special values (NaN, +-inf, +-1e3, the bounds, just past a bound, near float32 max)."""
    rng = np.random.default_rng(seed)
    plans = rng.uniform(-1e3, 1e3, (n, horizon, dim))
    special = rng.random(plans.shape) < 0.08  # ~a third of plans hold some special entry
    plans[special] = rng.choice(SPECIAL, int(special.sum()))
    plans[rng.random(n) < 0.2] = rng.uniform(-1, 1, (horizon, dim))  # some valid plans too
    return plans


class ScriptedOptimizer:
    """Returns the next pre-made plan, whatever the cost function says."""

    def __init__(self, plans: np.ndarray) -> None:
        self.plans = iter(torch.as_tensor(plans, dtype=torch.float32))

    def optimize(self, cost_fn, init, low, high):
        return next(self.plans), {"cost": 0.0, "iters": 1}


class PhysicsSpy:
    """Wraps the env's BulletClient: records every velocity command sent to PyBullet."""

    def __init__(self, client) -> None:
        self.client = client
        self.velocities: list[tuple[float, ...]] = []

    def resetBaseVelocity(self, body, linear, angular):  # noqa: N802 (PyBullet's name)
        self.velocities.append(tuple(float(v) for v in (*linear, *angular)))
        return self.client.resetBaseVelocity(body, linear, angular)

    def __getattr__(self, name: str):
        return getattr(self.client, name)


class StubWorldModel(torch.nn.Module):
    """Latent model that costs nothing: the test is about the controller's safety path and
    the physics, not about what a network predicts (the real model is used below)."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = SPEC
        self.w = torch.nn.Parameter(torch.zeros(()))

    def encode(self, pixels: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        return pixels.float().mean(dim=(1, 2, 3))[:, None].repeat(1, 8) / 255  # (B, 8)

    def rollout(self, s: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return s[:, None] + actions.cumsum(1).sum(-1, keepdim=True)  # (N, H, 8)


@pytest.fixture(scope="module")
def model():
    return build_world_model(SPEC, seed=0)


@pytest.fixture
def one_thread():
    """Tiny networks on a loaded 2-core machine: one torch thread is several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def drive(controller, plans: np.ndarray, steps: int) -> dict[str, object]:
    """Run ``controller`` in a real PointMaze for ``steps`` steps (resetting when truncated)."""
    env = make_env("point_maze", layout="open", image_size=SIZE, max_episode_steps=500)
    spy = PhysicsSpy(env.unwrapped._client)
    env.unwrapped._client = spy
    try:
        obs, _ = env.reset(seed=0)
        controller.reset(obs, env.unwrapped.goal_observation())
        fallbacks, clipped, actions = 0, 0, []
        for t in range(steps):
            action, info = controller.act(obs)
            actions.append(action)
            fallbacks += int(info["fallback"])
            obs, _, _, truncated, step_info = env.step(action)
            clipped += int(step_info["action_clipped"])
            if truncated:
                obs, _ = env.reset(seed=t)
                controller.reset(obs, env.unwrapped.goal_observation())
        limit = env.unwrapped.max_speed / (env.unwrapped.physics_substeps / 240.0)
    finally:
        env.unwrapped._client = spy.client
        env.close()
    return {"fallbacks": fallbacks, "clipped": clipped, "actions": np.array(actions),
            "velocities": np.array(spy.velocities), "limit": limit}


def test_ten_thousand_garbage_plans_never_exceed_limits(one_thread) -> None:
    horizon = 3
    plans = garbage_plans(N, horizon, 2, seed=0)
    expected_fallbacks = int((~np.isfinite(plans).all(axis=(1, 2))).sum())
    assert 1000 < expected_fallbacks < N - 1000  # both kinds are well represented
    assert (np.abs(plans[:, 0]) > 1).any(axis=1).sum() > 1000  # many first commands out of range
    ctrl = FlatMPC(StubWorldModel(), ScriptedOptimizer(plans), horizon=horizon, candidates=1)
    out = drive(ctrl, plans, N)
    actions, vel = out["actions"], out["velocities"]
    assert actions.shape == (N, 2) and np.isfinite(actions).all()
    assert np.abs(actions).max() <= 1.0
    assert out["clipped"] == 0  # the env never had to clip: the controller's output was in bounds
    assert len(vel) >= N and np.isfinite(vel).all()
    assert np.abs(vel[:, :2]).max() <= out["limit"] * (1 + 1e-9) and not vel[:, 2:].any()
    assert out["fallbacks"] == expected_fallbacks  # every non-finite plan fell back, and only those
    fell = ~np.isfinite(plans).all(axis=(1, 2))
    finite_first = np.clip(plans[~fell, 0], -1, 1).astype(np.float32)
    np.testing.assert_array_equal(actions[~fell], finite_first)  # in-range plans kept as given


def test_hierarchical_garbage_plans_never_exceed_limits(model, one_thread) -> None:
    """Both levels of the real (tiny) model return garbage: the low level's safety path holds."""
    steps = 500
    low = garbage_plans(steps, 2, 2, seed=1)  # level-1 horizon = k = 2
    high = garbage_plans(steps, 2, 2, seed=2)  # top level: macro-actions, top_horizon = 2
    ctrl = HierarchicalMPC(model, [ScriptedOptimizer(low), ScriptedOptimizer(high)], top_horizon=2)
    out = drive(ctrl, low, steps)
    assert np.isfinite(out["actions"]).all() and np.abs(out["actions"]).max() <= 1.0
    assert out["clipped"] == 0 and np.isfinite(out["velocities"]).all()
    assert np.abs(out["velocities"][:, :2]).max() <= out["limit"] * (1 + 1e-9)
    assert out["fallbacks"] > 0
