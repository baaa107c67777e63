"""Guardrails (state bounds, forbidden regions, ensemble OOD), the state probe, violation
counting in the harness, and the planning deadline."""

import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import square_episode
from safetensors.torch import load_file
from torch import nn

from hmpc.checkpoint import load_checkpoint, save_checkpoint
from hmpc.cli.common import check_controller_spec
from hmpc.controllers import ControllerSpec, build_controller
from hmpc.costs import (
    CostWeights,
    Guardrails,
    ensemble_disagreement,
    forbidden_region_penalty,
    guardrail_violated,
    region_penetration,
    state_bound_penalty,
)
from hmpc.evaluate import EvalConfig, evaluate, run_episode
from hmpc.hierarchy import HierarchicalMPC
from hmpc.mpc import Controller, FlatMPC, run_optimizer
from hmpc.objective import LossWeights, world_model_loss
from hmpc.optimizers import CEM, MPPI, GradientDescent, Hybrid
from hmpc.report import aggregate
from hmpc.rollout import EnvSpec
from hmpc.train import TrainConfig, train_world_model
from hmpc.world_model import LevelSpec, WorldModel, WorldModelSpec, build_world_model

SPEC = WorldModelSpec(
    image_size=16, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16,
    levels=(LevelSpec(latent_dim=6, k=2, macro_dim=2, hidden=16),),
)
STEP, GOAL = 0.5, (4.0, 0.0)
BOX = {"dims": [0, 1], "low": [1.5, -0.5], "high": [2.5, 3.0]}  # across the straight path to GOAL


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- pure functions -------------------------------------------------------------------------
def test_state_bound_penalty_values():
    state = torch.tensor([[[0.5, 3.0], [-1.0, 0.0]]])  # (N=1, H=2, S=2)
    assert float(state_bound_penalty(state, [0], [0.0], [1.0])) == pytest.approx(1.0)
    penalty = state_bound_penalty(state, [0], [0.0], [1.0], margin=0.25)
    assert float(penalty) == pytest.approx(1.25**2)
    inf = float("inf")
    assert float(state_bound_penalty(state, [0, 1], [-inf, -inf], [inf, 2.0])) == pytest.approx(1.0)
    inside = torch.tensor([[[0.5, 0.5]]])
    assert float(state_bound_penalty(inside, [0, 1], [0.0, 0.0], [1.0, 1.0])) == 0.0


def test_forbidden_region_penetration_values():
    pts = torch.tensor([[1.0, 1.0], [0.5, 1.0], [3.0, 1.0], [2.0, 2.0]])
    depth = region_penetration(pts, [0, 1], [0.0, 0.0], [2.0, 2.0])
    assert depth.tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    grown = region_penetration(pts, [0, 1], [0.0, 0.0], [2.0, 2.0], margin=0.5)
    assert grown.tolist() == pytest.approx([1.5, 1.0, 0.0, 0.5])
    g = Guardrails.from_config({"regions": [{"dims": [0, 1], "low": [0, 0], "high": [2, 2]}]})
    traj = pts.unsqueeze(0)  # (N=1, H=4, S=2): squared depths summed over the horizon
    assert float(forbidden_region_penalty(traj, g.regions)) == pytest.approx(1.0 + 0.25)
    assert guardrail_violated(pts, g).tolist() == [True, True, False, True]  # boundary counts


def test_ensemble_disagreement_values():
    same = torch.ones(3, 2, 4, 5)  # (M, N, H, D)
    assert ensemble_disagreement(same).tolist() == [0.0, 0.0]
    two = torch.zeros(2, 1, 2, 1)
    two[1, 0, 0, 0] = 2.0  # members 0 and 2 at step 0: variance 1; agree at step 1
    assert float(ensemble_disagreement(two)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="M>=2"):
        ensemble_disagreement(torch.ones(1, 2, 3, 4))


@pytest.mark.parametrize("cfg, match", [
    ({"bounds": {"dims": [0], "low": [0, 1], "high": [1]}}, r"guardrails.bounds: dims, low"),
    ({"regions": [{"dims": [0], "low": [1], "high": [0]}]}, r"regions\[0\]: every low must be <"),
    ({"state_bounds": 1.0}, r"needs weights.guardrails.bounds"),
    ({"forbidden": 1.0}, r"needs weights.guardrails.regions"),
    ({"typo": 1.0}, r"unknown key\(s\) \['typo'\] in weights.guardrails"),
    ({"bounds": {"dims": [0], "low": [0], "high": [1], "margin": 0.6}}, r"bounds.margin"),
])
def test_bad_guardrail_configs_name_the_key(cfg, match):
    with pytest.raises(ValueError, match=match):
        CostWeights(guardrails=cfg)
    spec = ControllerSpec(name="g", kind="flat", weights={"guardrails": cfg})
    with pytest.raises(ValueError, match="controllers/g.yaml"):
        check_controller_spec(spec)


# -- an exact planar model: latent = state, the probe is the identity -----------------------
class Plane(nn.Module):
    """WorldModel stand-in: s' = s + STEP * a on the (x, y) plane, probe = identity."""

    spec = WorldModelSpec(image_size=1, action_dim=2, state_dim=2, latent_dim=2, levels=(),
                          probe_dim=2)
    rollout = WorldModel.rollout
    delay = 0.0  # seconds per predict call (deadline tests)

    def encode(self, pixels, state):
        return state

    def predict(self, s, a, level=1):
        if self.delay:
            time.sleep(self.delay)
        return s + STEP * a

    def decode_state(self, s):
        return s


def plane_obs(p) -> dict:
    return {"pixels": np.zeros((1, 1, 3), np.uint8), "state": np.asarray(p, np.float32)}


class PlaneEnv:
    """Gym-like env with the exact planar dynamics, for ``run_episode``."""

    def __init__(self):
        self.unwrapped, self.goal_observation = self, lambda: plane_obs(GOAL)

    def _info(self):
        d = float(np.hypot(*(self.p - GOAL)))
        return {"distance": d, "is_success": d < 0.1}

    def reset(self, seed=None):
        self.p = np.zeros(2)
        return plane_obs(self.p), self._info()

    def step(self, a):
        self.p = self.p + STEP * np.clip(a, -1, 1)
        return plane_obs(self.p), 0.0, False, False, self._info()


def plane_mpc(guardrails: dict, model=None) -> FlatMPC:
    w = CostWeights(goal=1.0, goal_mode="sum", smoothness=0.01, guardrails=guardrails)
    return FlatMPC(model or Plane(), GradientDescent(iters=20, lr=0.3), horizon=8, candidates=4,
                   weights=w)


@pytest.mark.parametrize("term, g", [
    ("forbidden", {"forbidden": 100.0, "regions": [{**BOX, "margin": 0.2}]}),
    ("state_bounds", {"state_bounds": 100.0,
                      "bounds": {"dims": [0], "low": [None], "high": [2.0], "margin": 0.2}}),
])
def test_guarded_planner_avoids_what_the_unguarded_one_crosses(term, g):
    measure_only = {k: v for k, v in g.items() if k != term}  # same bounds/regions, weight 0
    guards = Guardrails.from_config(g)
    unguarded = run_episode(PlaneEnv(), plane_mpc(measure_only), 0, 25, guardrails=guards)
    guarded = run_episode(PlaneEnv(), plane_mpc(g), 0, 25, guardrails=guards, log_steps=True)
    assert unguarded["guardrail_violations"] >= 2 and unguarded["predicted_violations"] >= 1
    assert guarded["guardrail_violations"] == 0 and guarded["predicted_violations"] == 0
    assert all(term in s["terms"] and s["predicted_violation"] is False
               for s in guarded["steps_log"])
    if term == "forbidden":  # it went around, not just stopped in front
        assert guarded["success"], guarded["final_distance"]


class Straight(Controller):
    """Moves +x at full speed; claims a predicted violation on odd steps. Sees pixels only."""

    def reset(self, obs, goal_obs):
        self.t, self.seen = 0, [obs, goal_obs]

    def act(self, obs):
        self.seen.append(obs)
        self.t += 1
        return np.array([1.0, 0.0], np.float32), {"predicted_violation": self.t % 2 == 1}


def test_harness_counts_actual_violations_from_the_true_state():
    g = Guardrails.from_config({"bounds": {"dims": [0], "low": [None], "high": [2.0]}})
    ctrl = Straight()
    rec = run_episode(PlaneEnv(), ctrl, 0, 10, guardrails=g)
    # x = 0.5 t after step t, success at x = 4 (t = 8): above 2.0 for t = 5..8 (2.0 is inside)
    assert rec["steps"] == 8 and rec["success"]
    assert rec["guardrail_violations"] == 4 and rec["predicted_violations"] == 4
    assert all(set(o) == {"pixels"} for o in ctrl.seen)  # the true state stays in the harness
    plain = run_episode(PlaneEnv(), Straight(), 0, 10)
    assert plain["guardrail_violations"] is None
    recs = [{**rec, "controller": "a", "error": None}, {**rec, "controller": "a", "error": None,
                                                        "guardrail_violations": 2}]
    agg = aggregate(recs + [{**plain, "controller": "b", "error": None}], ["a", "b"])
    assert agg["a"]["guardrail_violations_mean"] == 3.0  # (4 + 2) / 2
    assert agg["b"]["guardrail_violations_mean"] is None


# -- real (tiny) models: probe, ensemble, terms in flat and hierarchical info ---------------
def obs16(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"pixels": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
            "state": np.zeros(4, np.float32)}


ALL_TERMS = {"state_bounds": 1.0, "forbidden": 1.0, "ood": 1.0,
             "bounds": {"dims": [0, 1], "low": [-0.1, -0.1], "high": [0.1, 0.1]},
             "regions": [{"dims": [2], "low": [-5.0], "high": [5.0]}]}


@pytest.mark.parametrize("kind", ["flat", "hierarchical"])
def test_every_guardrail_term_is_reported(kind):
    model = build_world_model(replace(SPEC, probe_dim=4, num_predictors=2), seed=0)
    spec = ControllerSpec(name="g", kind=kind, optimizer={"name": "gd", "iters": 2},
                          high_optimizer={"name": "cem", "iters": 1, "population": 8, "elites": 2},
                          horizon=3, top_horizon=2, weights={"guardrails": ALL_TERMS})
    ctrl = build_controller(spec, model, 2, seed=0)
    ctrl.reset(obs16(0), obs16(1))
    _, info = ctrl.act(obs16(2))
    assert {"state_bounds", "forbidden", "ood"} <= set(info["terms"]), info["terms"]
    assert info["terms"]["ood"] > 0 and isinstance(info["predicted_violation"], bool)


def test_guardrails_the_model_cannot_evaluate_are_refused():
    plain = build_world_model(SPEC, seed=0)
    spec = ControllerSpec(name="gg", kind="flat", weights={"guardrails": ALL_TERMS})
    with pytest.raises(ValueError, match=r"controllers.gg.weights.guardrails.state_bounds=1.0 "
                                         r"needs .* model.loss.state_probe=1.0"):
        build_controller(spec, plain, 2, seed=0)
    probe_only = build_world_model(replace(SPEC, probe_dim=4), seed=0)
    with pytest.raises(ValueError, match=r"weights.guardrails.ood=1.0 .* model.num_predictors=1"):
        build_controller(spec, probe_only, 2, seed=0)
    measure = ControllerSpec(name="m", kind="flat",
                             weights={"guardrails": {"bounds": ALL_TERMS["bounds"]}})
    ctrl = build_controller(measure, plain, 2, seed=0)  # bounds with weight 0, no probe: fine
    ctrl.reset(obs16(0), obs16(1))
    _, info = ctrl.act(obs16(2))
    assert "predicted_violation" not in info
    assert set(info["terms"]) == {"goal", "smoothness", "action_bound"}


def test_ensemble_disagreement_is_zero_for_identical_members_only():
    model = build_world_model(replace(SPEC, num_predictors=3), seed=0)
    s, a = torch.randn(5, 8), torch.rand(5, 2)
    with torch.no_grad():
        preds = model.predict_members(s, a)  # (M, N, D)
    assert preds.shape == (3, 5, 8)
    assert torch.equal(preds[0], model.predict(s, a))  # member 0 is what planners roll out
    assert torch.equal(preds[1], model.predict(s, a, member=1))
    assert float(ensemble_disagreement(preds.unsqueeze(2)).min()) > 0
    for m in model.ensemble:
        m.load_state_dict(model.predictor.state_dict())
    with torch.no_grad():
        assert float(ensemble_disagreement(model.predict_members(s, a).unsqueeze(2)).max()) == 0.0


def batch_of(episodes, length: int = 5) -> dict:
    px = np.stack([e.pixels[:length] for e in episodes])
    return {"pixels": torch.from_numpy(px).permute(0, 1, 4, 2, 3).contiguous(),
            "state": torch.from_numpy(np.stack([e.state[:length] for e in episodes])),
            "action": torch.from_numpy(np.stack([e.action[: length - 1] for e in episodes]))}


def test_probe_never_shapes_the_representation_and_ensemble_members_all_train():
    model = build_world_model(replace(SPEC, probe_dim=2, num_predictors=2), seed=1)
    batch = batch_of([square_episode(i) for i in range(4)])
    grads = []
    for probe_weight in (0.0, 1.0):
        model.zero_grad()
        loss, m = world_model_loss(model, batch, LossWeights(state_probe=probe_weight))
        loss.backward()
        grads.append({k: None if p.grad is None else p.grad.clone()
                      for k, p in model.named_parameters()})
    for k, g in grads[0].items():
        if not k.startswith("probe."):
            assert torch.equal(g, grads[1][k]), k  # identical: the probe sees detached latents
    assert grads[0]["probe.weight"] is None and grads[1]["probe.weight"].abs().sum() > 0
    assert grads[1]["ensemble.0.net.0.weight"].abs().sum() > 0  # member 1 has its own loss
    assert "l1/state_probe" in m


def test_probe_loss_decreases_and_round_trips_through_a_checkpoint(square_dataset, tmp_path):
    episodes = [square_episode(i) for i in range(6)]
    model = build_world_model(replace(SPEC, probe_dim=2), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch, seen = batch_of(episodes), []
    for _ in range(40):
        loss, m = world_model_loss(model, batch, LossWeights(state_probe=1.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(m["l1/state_probe"])
    assert seen[-1] < 0.7 * seen[0], seen

    cfg = TrainConfig(steps=4, batch_size=4, top_steps=2, val_every=4, val_batches=1, log_every=1,
                      checkpoint_every=0, tensorboard=False, plots=False, seed=0)
    res = train_world_model(square_dataset, tmp_path / "run", SPEC, LossWeights(state_probe=1.0),
                            cfg, torch.device("cpu"), progress=False)
    assert json.loads((res.checkpoint / "config.json").read_text())["model"]["probe_dim"] == 2
    assert "probe.weight" in load_file(str(res.checkpoint / "model.safetensors"))
    assert "l1/state_probe" in res.metrics
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "ck", model, {}))
    with torch.no_grad():
        s = model.encode(batch["pixels"][:, 0])
        assert torch.equal(loaded.decode_state(s), model.decode_state(s))
    with pytest.raises(ValueError, match=r"model.probe_dim=2 but model.loss.state_probe=0"):
        train_world_model(square_dataset, tmp_path / "bad", replace(SPEC, probe_dim=2),
                          LossWeights(), cfg, torch.device("cpu"), progress=False)


def test_old_checkpoints_load_and_evaluate_refuses_guardrails_they_cannot_serve(tmp_path):
    folder = save_checkpoint(tmp_path / "old", build_world_model(SPEC, seed=0), {})
    cfg = json.loads((folder / "config.json").read_text())
    for key in ("probe_dim", "probe_hidden", "num_predictors"):
        del cfg["model"][key]  # what a checkpoint written before these keys holds
    (folder / "config.json").write_text(json.dumps(cfg))
    loaded, _ = load_checkpoint(folder)
    assert loaded.probe is None and loaded.spec.num_predictors == 1
    with pytest.raises(ValueError, match="model.loss.state_probe=1.0"):
        loaded.decode_state(torch.zeros(1, 8))
    guarded = ControllerSpec(name="gd", kind="flat", weights={"guardrails": ALL_TERMS})
    env = EnvSpec("point_maze", {"image_size": 16})
    with pytest.raises(ValueError, match=r"controllers.gd.weights.guardrails.state_bounds"):
        evaluate(env, folder, [guarded], EvalConfig(episodes=1, videos=0), tmp_path / "ev",
                 progress=False)  # refused before any episode runs
    assert not (tmp_path / "ev" / "eval_info.json").exists()


# -- deadline ---------------------------------------------------------------------------------
def optimizers():
    return [GradientDescent(iters=50, lr=0.1), CEM(iters=50, population=8, elites=2),
            MPPI(iters=50, population=8),
            Hybrid(sampler={"name": "cem", "iters": 2, "population": 8}, refine={"iters": 50})]


@pytest.mark.parametrize("opt", optimizers(), ids=lambda o: type(o).__name__)
def test_deadline_returns_the_best_plan_so_far(opt):
    evals: list[tuple[float, float]] = []  # (time the evaluation ended, its best cost)

    def slow_cost(x):
        time.sleep(0.03)
        c = (x - 0.5).pow(2).sum((1, 2))
        evals.append((time.perf_counter(), float(c.detach().min())))
        return c

    deadline = time.perf_counter() + 0.2
    best, info = opt.optimize(slow_cost, torch.zeros(2, 3, 2), -1.0, 1.0, deadline=deadline)
    assert info["deadline_hit"] and 1 <= info["iters"] < 40
    in_time = [c for t, c in evals if t < deadline - 0.002]
    assert info["cost"] <= min(in_time) and info["cost"] in [c for _, c in evals]
    assert torch.isfinite(best).all()


@pytest.mark.parametrize("opt", optimizers(), ids=lambda o: type(o).__name__)
def test_no_iteration_in_time_is_a_failed_plan(opt):
    def slow_cost(x):
        time.sleep(0.02)
        return x.pow(2).sum((1, 2))

    init = torch.zeros(2, 3, 2)
    best, info, ok = run_optimizer(opt, slow_cost, init, -1.0, 1.0, time.perf_counter() + 0.005)
    assert not ok and info["iters"] == 0 and info["error"].startswith("deadline")
    assert torch.isnan(best).all()


def test_controller_falls_back_when_the_deadline_leaves_no_iteration():
    model = Plane()
    ctrl = plane_mpc({}, model=model)
    ctrl.reset(plane_obs([0, 0]), plane_obs(GOAL))
    _, info = ctrl.act(plane_obs([0, 0]))  # no deadline: a full plan
    assert not info["fallback"] and "deadline_hit" not in info
    # The stored plan is already shifted: row 0 is the previous plan's action for this step,
    # row 1 the one after (consumed by a second fallback in a row).
    expected = np.clip(ctrl.plan[:2].numpy(), -1, 1)
    model.delay, ctrl.deadline_ms = 0.004, 2.0  # one cost evaluation: 8 predicts = 32 ms
    for k in range(2):
        a, info = ctrl.act(plane_obs([0.5, 0]))
        assert info["fallback"] and info["error"].startswith("deadline") and info["iters"] == 0
        np.testing.assert_allclose(a, expected[k], atol=1e-6)
    ctrl.deadline_ms = 120.0  # a few iterations fit: best so far, no fallback
    _, info = ctrl.act(plane_obs([1.0, 0]))
    assert not info["fallback"] and info["deadline_hit"] and 1 <= info["iters"] < 20


def test_hierarchical_deadline_falls_back_and_spec_is_validated():
    model = build_world_model(SPEC, seed=0)
    ctrl = HierarchicalMPC(model, [GradientDescent(iters=2), CEM(iters=2, population=8)],
                           top_horizon=2, deadline_ms=1e-3)
    ctrl.reset(obs16(0), obs16(1))
    a, info = ctrl.act(obs16(2))
    assert info["fallback"] and info["error"].startswith("deadline (level 2)")
    assert np.all(a == 0)
    with pytest.raises(ValueError, match=r"controllers.x.deadline_ms=0 must be > 0"):
        ControllerSpec(name="x", kind="flat", deadline_ms=0)
    spec = ControllerSpec(name="x", kind="flat", deadline_ms=50.0)
    assert build_controller(spec, model, 2, seed=0).deadline_ms == 50.0
