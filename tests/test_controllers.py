"""Controllers on a tiny untrained model: interface, bounds, fallbacks, hierarchy wiring."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from hmpc.controllers import ControllerSpec, build_controller
from hmpc.costs import CostWeights
from hmpc.hierarchy import HierarchicalMPC
from hmpc.mpc import FlatMPC, safe_action
from hmpc.optimizers import GradientDescent
from hmpc.world_model import LevelSpec, WorldModelSpec, build_world_model

SPEC = WorldModelSpec(
    image_size=16, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16,
    levels=(LevelSpec(latent_dim=6, k=2, macro_dim=2, hidden=16),),
)


def obs(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"pixels": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "state": np.zeros(4, np.float32)}


@pytest.fixture(scope="module")
def model():
    return build_world_model(SPEC, seed=0)


class BrokenOptimizer:
    """Returns whatever plan it is given: NaN, inf, huge values."""

    def __init__(self, value: float):
        self.value = value

    def optimize(self, cost_fn, init, low, high):
        return torch.full(init.shape[1:], self.value), {"cost": 0.0, "iters": 0}


def test_safe_action_clips_and_falls_back():
    a, fb = safe_action(torch.tensor([3.0, -0.2]), None)
    assert not fb and np.allclose(a, [1.0, -0.2]) and a.dtype == np.float32
    a, fb = safe_action(torch.tensor([np.nan, 0.1]), np.array([0.5, 0.5]))
    assert fb and np.allclose(a, [0.5, 0.5])
    a, fb = safe_action(np.array([np.inf, 0.0]), np.array([np.nan, 0.0]))
    assert fb and np.allclose(a, [0.0, 0.0])


@pytest.mark.parametrize("kind", ["flat", "hierarchical", "random"])
def test_controllers_return_bounded_actions(model, kind):
    spec = ControllerSpec(name=kind, kind=kind, optimizer={"name": "gd", "iters": 3},
                          high_optimizer={"name": "cem", "iters": 2, "population": 16, "elites": 4},
                          horizon=4, top_horizon=2)
    ctrl = build_controller(spec, model, 2, seed=0)
    ctrl.reset(obs(0), obs(1))
    for t in range(3):
        a, info = ctrl.act(obs(2 + t))
        assert a.shape == (2,) and a.dtype == np.float32
        assert np.all(np.abs(a) <= 1.0) and np.all(np.isfinite(a))
        assert info["plan_ms"] >= 0 and info["fallback"] is False


def test_hierarchical_hands_down_a_subgoal(model):
    opts = [GradientDescent(iters=3), GradientDescent(iters=3)]
    ctrl = HierarchicalMPC(model, opts, top_horizon=3)
    ctrl.reset(obs(0), obs(1))
    _, info = ctrl.act(obs(2))
    assert info["replanned"] and ctrl.subgoals[2].shape == (6,)
    assert set(info["terms"]) == {"subgoal", "smoothness", "action_bound"}
    assert ctrl.plans[1].shape == (2, 2)  # level-1 horizon = k of level 2


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1e3])
def test_planner_garbage_never_reaches_the_env(model, value):
    ctrl = FlatMPC(model, BrokenOptimizer(value), horizon=3)
    ctrl.reset(obs(0), obs(1))
    fallbacks = 0
    for t in range(20):
        a, info = ctrl.act(obs(t))
        assert np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1.0)
        fallbacks += info["fallback"]
    assert fallbacks == (20 if not np.isfinite(value) else 0)


def test_unknown_controller_kind_and_missing_model(model):
    with pytest.raises(ValueError, match="known kinds"):
        ControllerSpec(name="x", kind="mcts")
    with pytest.raises(ValueError, match="checkpoint"):
        build_controller(ControllerSpec(name="f", kind="flat"), None, 2, seed=0)
    with pytest.raises(ValueError, match="known optimizers"):
        build_controller(ControllerSpec(name="f", kind="flat", optimizer={"name": "lbfgs"}), model, 2, 0)


def test_goal_image_of_wrong_shape_is_reported(model):
    ctrl = FlatMPC(model, GradientDescent(iters=1), horizon=2)
    with pytest.raises(ValueError, match="image_size"):
        ctrl.reset(obs(0), {"pixels": np.zeros((32, 32, 3), np.uint8)})


def test_every_controller_config_builds_and_acts(model):
    """configs/controllers/*.yaml -> ControllerSpec -> controller (oracle gets the real env)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from hmpc.landmarks import build_graph
    from robots import make_env

    files = sorted(Path(__file__).parents[1].glob("configs/controllers/*.yaml"))
    assert {f.stem for f in files} >= {"oracle", "flat_mppi", "flat_cem", "flat_gd", "flat_hybrid", "hierarchical"}
    env = make_env("point_maze", layout="open", image_size=16)
    try:
        for f in files:
            (name, cfg), = OmegaConf.to_container(OmegaConf.load(f)).items()
            assert name == f.stem
            if cfg["kind"] == "rllib":  # needs a trained policy: tests/test_rl_baseline.py
                with pytest.raises(ValueError, match="needs a trained policy"):
                    build_controller(ControllerSpec(name=name, **cfg), None, 2, seed=0)
                continue
            if cfg["kind"] == "pose":  # needs a fitted pose model: tests/test_object_pose.py
                with pytest.raises(ValueError, match="hmpc-pose checkpoint="):
                    build_controller(ControllerSpec(name=name, **cfg), model, 2, seed=0)
                continue
            if cfg["kind"] == "cube":  # needs a fitted cube model and a Panda cube task: tests/test_cube.py
                with pytest.raises(ValueError, match="hmpc-cube data="):
                    build_controller(ControllerSpec(name=name, **cfg), None, 4, seed=0)
                continue
            spec = ControllerSpec(name=name, **cfg)
            m = model
            if spec.cost_weights().guardrails.uses_state:  # needs a state probe (point_maze: 4)
                m = build_world_model(replace(SPEC, probe_dim=4), seed=0)
            if spec.cost_weights().goal_dims == "fused_state":  # a keypoint latent with the state
                m = build_world_model(replace(SPEC, latent_dim=10, state_dim=2, keypoints=2,
                                              keypoint_vectors=1), seed=0)
            graphs = None
            if spec.landmarks:  # a graph of random latents: one long episode wandering about
                z = torch.randn(2 * spec.landmarks, m.spec.latent_dim, generator=torch.Generator().manual_seed(0))
                graphs = {spec.landmarks: build_graph(z, np.zeros(len(z), np.int64), spec.landmarks)}
            ctrl = build_controller(spec, m, 2, seed=0, env=env, graphs=graphs)
            o, _ = env.reset(seed=0)
            ctrl.reset(o, env.unwrapped.goal_observation())
            a, info = ctrl.act(o)
            assert np.all(np.abs(a) <= 1.0) and info["fallback"] is False, name
    finally:
        env.close()


def test_goal_modes_on_known_distances():
    from hmpc.costs import CostWeights, goal_distance

    pred = torch.tensor([[[3.0], [1.0], [0.0]]])  # (N=1, H=3, D=1); goal 0: squared d = 9, 1, 0
    goal = torch.zeros(1)
    assert goal_distance(pred, goal, "final").item() == 0.0
    assert goal_distance(pred, goal, "sum").item() == pytest.approx(10 / 3)
    assert goal_distance(pred, goal, "mixed", mix=0.3).item() == pytest.approx(0.3 * 10 / 3)
    with pytest.raises(ValueError, match="goal_mix"):
        CostWeights(goal_mode="mixed", goal_mix=-1.0)


@pytest.mark.parametrize("kind", ["flat", "hierarchical"])
def test_compiled_rollouts_plan_like_eager_ones(model, kind):
    # aot_eager traces the rollout with TorchDynamo and its backward with AOTAutograd (what
    # inductor compiles) in well under a second; "inductor" itself takes tens of seconds
    spec = ControllerSpec(name=kind, kind=kind, optimizer={"name": "gd", "iters": 3},
                          high_optimizer={"name": "cem", "iters": 2, "population": 16, "elites": 4},
                          horizon=4, top_horizon=2)  # fmt: skip
    eager, compiled = (
        build_controller(replace(spec, compile=c), model, 2, seed=0) for c in (None, "aot_eager")
    )
    compiled.reset(obs(0), obs(1))  # also plans one throw-away step, then resets again
    eager.reset(obs(0), obs(1))
    eager.act(obs(0))  # the same throw-away step: it draws from the optimiser's random stream
    eager.reset(obs(0), obs(1))
    assert compiled.rollout is not model.rollout and not compiled._cold
    if kind == "flat":
        assert torch.equal(compiled.plan, torch.zeros_like(compiled.plan))
    for t in range(3):
        a_eager, _ = eager.act(obs(2 + t))
        a_compiled, info = compiled.act(obs(2 + t))
        np.testing.assert_allclose(a_compiled, a_eager, atol=1e-4)
        assert not info["fallback"]


def test_unknown_compile_backend_is_named():
    with pytest.raises(ValueError, match=r"controllers\.g\.compile='fast'.*inductor"):
        ControllerSpec(name="g", kind="flat", compile="fast")


def test_goal_dims_pick_the_latent_dims_the_goal_compares():
    from hmpc.costs import CostWeights

    z = torch.arange(12.0).reshape(2, 6)  # (N=2, D=6)
    assert CostWeights().goal_part(z) is z
    assert torch.equal(CostWeights(goal_dims="0:4").goal_part(z), z[:, :4])
    assert torch.equal(CostWeights(goal_dims=":-2").goal_part(z), z[:, :4])
    assert torch.equal(CostWeights(goal_dims=[5, 0]).goal_part(z), z[:, [5, 0]])
    for bad in ["0-4", "1:2:3", "a:b", [], [1.5], [True], 3]:
        with pytest.raises(ValueError, match="weights.goal_dims"):
            CostWeights(goal_dims=bad)
    with pytest.raises(ValueError, match=r"goal_dims: \[6\] outside.*6 dims"):
        CostWeights(goal_dims=[0, 6]).goal_part(z)
    with pytest.raises(ValueError, match="'4:2' picks no dim"):
        CostWeights(goal_dims="4:2").goal_part(z)


def test_goal_dim_weights_scale_squared_differences_of_their_dims():
    from hmpc.costs import CostWeights, goal_distance

    z, goal = torch.zeros(1, 1, 6), torch.ones(6)  # every dim 1 from the goal
    w = CostWeights(goal_dim_weights={"4:6": 10.0, 0: 0.0})
    part = w.goal_part(z.squeeze(1) + 1.0)
    assert torch.allclose(part, torch.tensor([[0.0, 1, 1, 1, 10**0.5, 10**0.5]]))
    d = goal_distance(w.goal_part(z), w.goal_part(goal), "final")
    assert torch.allclose(d, torch.tensor([0 + 3 * 1 + 2 * 10.0]))
    # with goal_dims the weights apply first, indexed in the full latent
    both = CostWeights(goal_dims="3:6", goal_dim_weights={"4:6": 4.0}).goal_part(torch.ones(1, 6))
    assert torch.equal(both, torch.tensor([[1.0, 2.0, 2.0]]))
    for bad in [[1, 2], {}, {"x": 1.0}, {1: -1.0}, {1: True}, {"1:2:3": 1.0}]:
        with pytest.raises(ValueError, match="goal_dim_weights"):
            CostWeights(goal_dim_weights=bad)
    with pytest.raises(ValueError, match=r"goal_dim_weights: \[7\] outside.*6 dims"):
        CostWeights(goal_dim_weights={7: 2.0}).goal_part(z)


def test_fused_state_weight_finds_the_fused_dims_of_the_model():
    # a keypoint latent [4 coordinates, 4 vectors, 2 fused] (Push-T's preset layout, with 2
    # keypoints instead of 16): the weight lands on dims 8:10, as goal_dim_weights={"8:10": 30} would
    kp = WorldModelSpec(image_size=16, action_dim=2, latent_dim=2 * 2 * 2 + 2, widths=(4, 8),
                        hidden=16, state_dim=2, keypoints=2, keypoint_vectors=1, levels=())
    assert kp.fused_state_dims == slice(8, 10)
    z = torch.ones(1, 10)
    w = CostWeights(fused_state=30.0, goal_dim_weights={0: 4.0}).for_model(kp)
    assert torch.allclose(w.goal_part(z), CostWeights(goal_dim_weights={0: 4.0, "8:10": 30.0}).goal_part(z))
    assert w.fused_state == 1.0 and w.for_model(kp) is w  # resolved once
    model = build_world_model(kp, seed=0)
    ctrl = FlatMPC(model, GradientDescent(iters=1), horizon=2, weights=CostWeights(fused_state=30.0))
    assert torch.allclose(ctrl.weights.goal_part(z)[0, 8:], torch.full((2,), 30.0**0.5))
    # a CNN latent mixes the fused state through its linear head: nothing to weigh
    for spec in (SPEC, replace(SPEC, state_dim=2), replace(kp, latent_dim=12)):
        assert spec.fused_state_dims is None
        with pytest.raises(ValueError, match=r"weights.fused_state=30.0 needs .*state_dim="):
            CostWeights(fused_state=30.0).for_model(spec)
    assert CostWeights().for_model(SPEC) == CostWeights()  # the default needs nothing
    cnn = build_world_model(SPEC, seed=0)
    spec = ControllerSpec(name="flat_cem", kind="flat", optimizer={"name": "cem", "iters": 1},
                          weights={"fused_state": 30.0})
    with pytest.raises(ValueError, match=r"controllers.flat_cem: weights.fused_state"):
        build_controller(spec, cnn, 2, seed=0)
    for bad in (-1.0, True, "30"):
        with pytest.raises(ValueError, match="weights.fused_state"):
            CostWeights(fused_state=bad)


def test_goal_dims_fused_state_compares_only_the_fused_proprioception():
    kp = WorldModelSpec(image_size=16, action_dim=2, latent_dim=2 * 2 * 2 + 2, widths=(4, 8),
                        hidden=16, state_dim=2, keypoints=2, keypoint_vectors=1, levels=())
    z = torch.arange(10.0).view(1, 10)
    only = CostWeights(goal_dims="fused_state")
    with pytest.raises(ValueError, match="for_model"):  # symbolic until a model says which dims
        only.goal_part(z)
    assert torch.equal(only.for_model(kp).goal_part(z), torch.tensor([[8.0, 9.0]]))
    both = CostWeights(goal_dims="fused_state", fused_state=4.0).for_model(kp)
    assert torch.equal(both.goal_part(z), torch.tensor([[16.0, 18.0]]))  # sqrt(4) * (8, 9)
    with pytest.raises(ValueError, match=r"weights.goal_dims='fused_state' needs .*state_dim="):
        only.for_model(SPEC)
    with pytest.raises(ValueError, match=r"weights.fused_state=4.0 and weights.goal_dims="
                       r"'fused_state' need .* set weights.fused_state=1 and weights.goal_dims=null"):
        CostWeights(goal_dims="fused_state", fused_state=4.0).for_model(SPEC)
    with pytest.raises(ValueError, match="weights.goal_dim_weights key") as err:
        CostWeights(goal_dim_weights={"fused_state": 2.0})  # only goal_dims takes the name
    assert "fused_state" not in str(err.value).split(";", 1)[1]  # nor is it offered there
    with pytest.raises(ValueError, match=r"weights.goal_dims=.*or 'fused_state'"):
        CostWeights(goal_dims="fused")
    ctrl = FlatMPC(build_world_model(kp, seed=0), GradientDescent(iters=1), horizon=2,
                   weights=only)
    assert ctrl.weights.goal_dims == slice(8, 10)


def test_goal_term_ignores_the_dims_left_out(model):
    """Flat MPC's goal term is the distance over goal_dims only; a bad goal_dims fails at reset
    (not as a silent fallback), for the hierarchy too."""
    w = CostWeights(goal=1.0, goal_mode="sum", goal_dims=[0, 2])
    ctrl = FlatMPC(model, GradientDescent(iters=1), horizon=3, weights=w)
    ctrl.reset(obs(0), obs(1))
    s = ctrl.encode(obs(2))
    actions = torch.rand(5, 3, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pred = ctrl.rollout(s, actions)  # (5, 3, 8)
    want = (pred[..., [0, 2]] - ctrl.goal[[0, 2]]).pow(2).sum(-1).mean(1)
    torch.testing.assert_close(ctrl.cost_terms(s, actions)["goal"], want)
    full = FlatMPC(model, GradientDescent(iters=1), horizon=3, weights=replace(w, goal_dims=None))
    full.reset(obs(0), obs(1))
    assert not torch.allclose(full.cost_terms(s, actions)["goal"], want)
    bad = replace(w, goal_dims=[8])
    for ctrl in (FlatMPC(model, GradientDescent(iters=1), weights=bad),
                 HierarchicalMPC(model, [GradientDescent(iters=1)] * 2, weights=bad)):
        with pytest.raises(ValueError, match="goal_dims"):
            ctrl.reset(obs(0), obs(1))
