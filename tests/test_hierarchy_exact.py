"""Hierarchical vs flat MPC on a hand-built, exact two-level latent model of a 1-D corridor.

The ball moves x' = clip(x + a, 0, L), |a| <= 1. Level 1 encodes x as Gaussian bumps on a grid
(a place-cell code): exact and invertible, but its goal distance saturates a few cells from the
goal, so beyond that the cost is flat to float precision. Level 2 projects to x / 10 (a coarse
position) and each macro action m moves it k * m cells. Both controllers use the same cost
definition (squared latent distance to the goal image's latent); the flat planner simply cannot
see the goal from where it starts, even with the hierarchy's whole lookahead (top_horizon * k).
"""

import numpy as np
import pytest
import torch
from torch import nn

from hmpc.costs import CostWeights
from hmpc.hierarchy import HierarchicalMPC
from hmpc.mpc import FlatMPC
from hmpc.optimizers import CEM, GradientDescent
from hmpc.world_model import LevelSpec, MacroSupport, WorldModel, WorldModelSpec

LENGTH, GOAL, K, SCALE = 24.0, 20.0, 4, 10.0
CENTRES = torch.arange(-8.0, LENGTH + 9.0)  # bump centres, 1 cell apart, beyond both ends


class CorridorModel(nn.Module):
    """Exact WorldModel stand-in: encode / project / project_from / predict / rollout."""

    spec = WorldModelSpec(
        image_size=1, action_dim=1, state_dim=1, latent_dim=len(CENTRES),
        levels=(LevelSpec(latent_dim=1, k=K, macro_dim=1),),
    )
    rollout = WorldModel.rollout  # loops predict over time; nothing model-specific in it

    @staticmethod
    def bumps(x: torch.Tensor) -> torch.Tensor:
        """Place code (..., ) -> (..., C): unit-width Gaussian bumps on the cell grid."""
        return torch.exp(-((x.unsqueeze(-1) - CENTRES) ** 2) / 2)

    @staticmethod
    def position(s1: torch.Tensor) -> torch.Tensor:
        """Exact inverse of ``bumps`` on the corridor: the bump-weighted mean (..., C) -> (...,)."""
        return (s1 * CENTRES).sum(-1) / s1.sum(-1)

    def encode(self, pixels: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.bumps(state[:, 0])

    def project(self, s1: torch.Tensor, level: int) -> torch.Tensor:
        return s1 if level == 1 else (self.position(s1) / SCALE).unsqueeze(-1)

    def project_from(self, s: torch.Tensor, from_level: int, to_level: int) -> torch.Tensor:
        return s if from_level == to_level else self.project(s, to_level)

    def __init__(self, code_range: float = 1.0) -> None:
        super().__init__()
        self.code_range = code_range  # |macro code| a chunk of real actions can produce

    def macro_support(self, level: int) -> MacroSupport:
        r = self.code_range
        return MacroSupport(center=torch.zeros(1), low=torch.tensor([-r]), high=torch.tensor([r]), radius=r)

    def predict(self, s: torch.Tensor, a: torch.Tensor, level: int = 1) -> torch.Tensor:
        if level == 1:
            return self.bumps((self.position(s) + a[..., 0]).clamp(0.0, LENGTH))
        return (s + K * a / SCALE).clamp(0.0, LENGTH / SCALE)


def obs(x: float) -> dict:
    return {"pixels": np.zeros((1, 1, 3), np.uint8), "state": np.array([x], np.float32)}


def run(ctrl, steps: int = 30) -> tuple[bool, float]:
    """Closed loop with the exact dynamics as the environment; returns (reached, final x)."""
    x = 0.0
    ctrl.reset(obs(x), obs(GOAL))
    for _ in range(steps):
        a, info = ctrl.act(obs(x))
        assert np.all(np.abs(a) <= 1.0) and not info["fallback"]
        x = float(np.clip(x + a[0], 0.0, LENGTH))
        if abs(x - GOAL) < 0.5:
            return True, x
    return False, x


def test_level1_cost_is_flat_beyond_the_horizon_and_level2_is_not():
    m = CorridorModel()
    goal1, goal2 = m.bumps(torch.tensor(GOAL)), torch.tensor([GOAL / SCALE])
    near = [float((m.bumps(torch.tensor(x)) - goal1).pow(2).sum()) for x in (0.0, 4.0, 12.0)]
    assert near[0] == pytest.approx(near[1], rel=1e-6) == pytest.approx(near[2], rel=1e-6)
    far = [float((m.project(m.bumps(torch.tensor(x)), 2) - goal2).pow(2).sum()) for x in (0.0, 4.0)]
    assert far[1] < far[0]
    s = m.bumps(torch.tensor([3.0]))
    assert float(m.position(m.predict(s, torch.tensor([[0.7]])))) == pytest.approx(3.7, abs=1e-4)


def test_hierarchy_reaches_a_goal_the_flat_planner_cannot_see():
    model, weights = CorridorModel(), CostWeights(goal_mode="sum", smoothness=0.01, macro_prior=0.01)
    hier = HierarchicalMPC(
        model, [GradientDescent(iters=15, lr=0.3), CEM(iters=3, population=32, elites=6)],
        top_horizon=3, candidates=4, weights=weights,
    )
    reached, x = run(hier)
    assert reached, f"hierarchical MPC stopped at x={x:.2f}, goal {GOAL}"
    lookahead = 3 * K  # the hierarchy's lookahead in env steps
    flat = [(GradientDescent(iters=15, lr=0.3), K), (GradientDescent(iters=15, lr=0.3), lookahead),
            (CEM(iters=3, population=32, elites=6), lookahead)]
    for opt, horizon in flat:  # same cost, same step budget; sees at most `horizon` cells ahead
        reached, x = run(FlatMPC(model, opt, horizon=horizon, candidates=4, weights=weights))
        assert not reached and x < GOAL - 5, f"flat {type(opt).__name__} H={horizon}: x={x:.2f}"


def test_abstract_warm_start_is_shifted_by_the_macro_steps_lived_through():
    """Replanning every k env steps, the top level's warm start is its previous plan advanced by
    one macro step (its row 0 is the macro step that starts now), not the stale plan."""
    model, weights = CorridorModel(), CostWeights(goal_mode="sum", macro_prior=0.01)
    hier = HierarchicalMPC(
        model, [GradientDescent(iters=3, lr=0.3), CEM(iters=2, population=16, elites=4)],
        top_horizon=3, candidates=2, weights=weights, replan_every=K,
    )
    seen: list[torch.Tensor] = []
    plan_level = hier._plan_level

    def spy(level, s):
        if level == 2:
            seen.append(hier.plans[2].clone())  # the warm start handed to the optimiser
        best, info, ok = plan_level(level, s)
        if level == 2:
            seen.append(best.detach().clone())
        return best, info, ok

    hier._plan_level = spy
    hier.reset(obs(0.0), obs(GOAL))
    x = 0.0
    for _ in range(K + 1):  # replans at step 0 and at step K
        a, _ = hier.act(obs(x))
        x = float(np.clip(x + a[0], 0.0, LENGTH))
    first_plan, second_init = seen[1], seen[2]
    assert torch.equal(second_init, torch.cat([first_plan[1:], first_plan[-1:]]))


@pytest.mark.parametrize("use_support", [True, False])
def test_abstract_plans_stay_in_the_realisable_macro_codes(use_support):
    """The stand-in's chunks can only produce codes in [-0.5, 0.5]: with ``macro_support`` the
    top level never plans (or hands down a subgoal of) a code outside it; without, it does, since
    the goal is far and the box allows 1."""
    model = CorridorModel(code_range=0.5)
    hier = HierarchicalMPC(
        model, [GradientDescent(iters=5, lr=0.3), CEM(iters=3, population=32, elites=6)],
        top_horizon=3, candidates=2, weights=CostWeights(goal_mode="sum", macro_prior=0.0),
        macro_support=use_support,
    )
    hier.reset(obs(0.0), obs(GOAL))
    largest = 0.0
    for _ in range(3):
        hier.act(obs(0.0))
        largest = max(largest, float(hier.plans[2].abs().max()))
    assert (largest <= 0.5 + 1e-6) == use_support, largest


class CoarseNearGoal(CorridorModel):
    """Level 2 cannot tell positions beyond x = SAT apart (it saturates there), so a subgoal
    handed down near the goal is met anywhere past SAT: only level 1 sees the goal itself."""

    SAT = GOAL - 2.0

    def project(self, s1: torch.Tensor, level: int) -> torch.Tensor:
        return s1 if level == 1 else (self.position(s1).clamp(max=self.SAT) / SCALE).unsqueeze(-1)

    def predict(self, s: torch.Tensor, a: torch.Tensor, level: int = 1) -> torch.Tensor:
        if level == 1:
            return super().predict(s, a, level)
        return (s + K * a / SCALE).clamp(0.0, self.SAT / SCALE)


@pytest.mark.parametrize("goal_switch", [0.0, 1e-3])
def test_final_approach_plans_level1_toward_the_goal_itself(goal_switch):
    """Without the switch the hierarchy ends wherever level 2 stops telling positions apart; with
    it, level 1 plans toward the goal's own latent once the subgoal handed down is at the goal."""
    weights = CostWeights(goal_mode="sum", smoothness=0.01, macro_prior=0.01)
    hier = HierarchicalMPC(
        CoarseNearGoal(), [GradientDescent(iters=15, lr=0.3), CEM(iters=3, population=32, elites=6)],
        top_horizon=3, candidates=4, weights=weights, goal_switch=goal_switch,
    )
    x = 0.0
    hier.reset(obs(x), obs(GOAL))
    for _ in range(40):  # no early stop: the goal must be held, not passed through
        a, _ = hier.act(obs(x))
        x = float(np.clip(x + a[0], 0.0, LENGTH))
    if goal_switch > 0:
        assert abs(x - GOAL) < 0.5 and hier.final_approach, f"ended at x={x:.2f}, goal {GOAL}"
    else:  # any x past SAT meets the subgoal: nothing holds the ball at the goal
        assert abs(x - GOAL) > 1.0 and x >= CoarseNearGoal.SAT - 1.0, f"ended at x={x:.2f}"


def test_goal_switch_must_be_non_negative():
    with pytest.raises(ValueError, match="goal_switch=-1"):
        HierarchicalMPC(CoarseNearGoal(), [GradientDescent(), CEM()], goal_switch=-1.0)


def test_level1_replans_every_low_replan_every_steps_and_after_every_abstract_replan():
    """low_replan_every=3 with the top level replanned every k=4 steps: level 1 optimises on steps
    0, 3 (its period), 4 (a new subgoal), 7, ...; in between the command is the next action of the
    plan it made, and the controller still reaches the goal."""
    weights = CostWeights(goal_mode="sum", smoothness=0.01, macro_prior=0.01)
    hier = HierarchicalMPC(
        CorridorModel(), [GradientDescent(iters=15, lr=0.3), CEM(iters=3, population=32, elites=6)],
        top_horizon=3, candidates=4, weights=weights, replan_every=K, low_replan_every=3,
    )
    planned: list[torch.Tensor] = []
    plan_level = hier._plan_level

    def spy(level, s):
        best, info, ok = plan_level(level, s)
        if level == 1:
            planned.append(best.detach().clone())
        return best, info, ok

    hier._plan_level = spy
    x, low, iters, top, age = 0.0, [], [], [], 0
    hier.reset(obs(x), obs(GOAL))
    for _ in range(8):
        n = len(planned)
        a, info = hier.act(obs(x))
        low.append(len(planned) > n)
        iters.append(info["iters"] > 0)
        top.append(info["replanned"])
        age = 0 if low[-1] else age + 1  # steps since level 1's last plan
        assert float(a[0]) == pytest.approx(float(planned[-1][age, 0].clamp(-1, 1)))
        x = float(np.clip(x + a[0], 0.0, LENGTH))
    assert low == iters == [True, False, False, True, True, False, False, True]
    assert top == [True, False, False, False] * 2
    hier._plan_level = plan_level
    assert run(hier)[0]


@pytest.mark.parametrize("bad", [0, K + 1])
def test_low_replan_every_is_checked(bad):
    with pytest.raises(ValueError, match=f"low_replan_every={bad} must be in 1..{K}"):
        HierarchicalMPC(CorridorModel(), [GradientDescent(), CEM()], low_replan_every=bad)
