"""Controller registry: builds any controller by name from plain, picklable specs.

Specs travel to Ray workers, so they hold only primitives; the CLI layer fills them from config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from hmpc.costs import GOAL_MODES, CostWeights
from hmpc.cube_model import COMBINE, CubeModel
from hmpc.cube_mpc import OBJECTIVE, CubeMPC, bad_objective
from hmpc.guardrails import check_guardrails
from hmpc.hierarchy import HierarchicalMPC
from hmpc.landmarks import LandmarkGraph
from hmpc.mpc import Controller, FlatMPC, RandomController
from hmpc.object_pose import PoseModel
from hmpc.optimizers import make_optimizer
from hmpc.oracle import OracleMPC
from hmpc.pose_mpc import PoseMPC
from hmpc.world_model import WorldModel, WorldModelSpec

KINDS = ("hierarchical", "flat", "pose", "cube", "oracle", "random", "rllib")
NO_MODEL_KINDS = ("cube", "oracle", "random", "rllib")  # kinds that need no world-model checkpoint
POSE_KEYS = ("agent_weight", "smoothness", "goal_mode", "goal_mix")  # kind pose: PoseMPC's objective


@dataclass(frozen=True)
class ControllerSpec:
    """How to build one controller: ``name`` labels its results, ``kind`` picks the class.

    ``optimizer`` plans level 1 (real actions); ``high_optimizer`` the abstract levels.
    ``horizon`` is the flat and oracle planners' horizon in env steps; the hierarchical planner's level-1
    horizon is k (one step of level 2) and its top level plans ``top_horizon`` macro steps.
    ``weights`` are :class:`hmpc.costs.CostWeights` keys, guardrails under ``weights.guardrails``.
    ``deadline_ms`` bounds one control step's planning time (None: no deadline; see hmpc.mpc).
    """

    name: str
    kind: str
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "gd"})
    high_optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "cem"})
    horizon: int = 8
    top_horizon: int = 4
    candidates: int = 4
    replan_every: int = 1
    low_replan_every: int = 1  # kind hierarchical: env steps between level-1 optimisations (1..k)
    subgoal_tolerance: float = 0.0
    goal_switch: float = 0.0  # kind hierarchical: final approach (see hmpc.hierarchy.HierarchicalMPC)
    weights: dict[str, Any] = field(default_factory=dict)
    oracle_score: str = "path"  # kind oracle only: "path", "distance" or "staged" (see hmpc.oracle)
    oracle_reach: float = 0.5  # kind oracle, score staged: weight of the end effector's distance to the cube
    policy: str | None = None  # kind rllib only: folder of an exported policy (hmpc-baseline)
    deadline_ms: float | None = None  # planning budget per control step; None: no deadline
    macro_support: bool = True  # kind hierarchical: abstract plans only realisable macro codes
    compile: str | None = None  # learned kinds: torch.compile backend of the rollouts ("inductor")
    landmarks: int = 0  # kind hierarchical: size of a landmark graph of the training data (0: none)
    landmark_hops: int = 4  # with landmarks: the top level plans toward the route's node this far ahead
    # kind pose (an object-pose model from hmpc-pose in <checkpoint>/pose): the object's goal
    # distance over the horizon as in weights.goal_mode / goal_mix, and the agent's squared
    # distance to the goal image's agent and action changes as extra cost terms (hmpc.pose_mpc)
    pose: dict[str, Any] = field(default_factory=lambda: {"agent_weight": 0.0, "smoothness": 0.0})
    # kind cube: the folder `hmpc-cube` wrote (a cube readout and a dynamics ensemble), and the
    # weights of the hand's distance to the cube, of the members' spread and of the cube leaving
    # reach (hmpc.cube_mpc)
    cube_model: str | None = None
    cube: dict[str, Any] = field(default_factory=lambda: dict(OBJECTIVE))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"controller {self.name!r} has unknown kind {self.kind!r}; known kinds: {list(KINDS)}"
            )
        if self.deadline_ms is not None and not self.deadline_ms > 0:
            raise ValueError(f"controllers.{self.name}.deadline_ms={self.deadline_ms} must be > 0 "
                             "(milliseconds per control step), or null for no deadline")
        if self.landmarks and (self.kind != "hierarchical" or self.landmarks < 2 or self.landmark_hops < 1):
            raise ValueError(f"controllers.{self.name}.landmarks={self.landmarks} needs kind "
                             f"hierarchical (got {self.kind!r}), >= 2 landmarks and landmark_hops >= 1 "
                             f"(got {self.landmark_hops}); e.g. landmarks: 300, landmark_hops: 4")
        bad = {k: v for k, v in self.pose.items()
               if k not in POSE_KEYS or (v not in GOAL_MODES if k == "goal_mode" else
                                         isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0)}
        if bad:
            raise ValueError(f"controllers.{self.name}.pose: {bad} not accepted; keys {list(POSE_KEYS)}, "
                             f"goal_mode one of {list(GOAL_MODES)}, the others numbers >= 0 "
                             "(e.g. pose: {goal_mode: final, agent_weight: 0.0, smoothness: 0.0})")
        if self.kind == "cube" and (self.compile is not None or self.replan_every != 1):
            raise ValueError(f"controllers.{self.name}: kind cube replans every step and compiles nothing; "
                             f"remove compile={self.compile!r} and replan_every={self.replan_every}")
        if bad := bad_objective(self.cube):
            raise ValueError(f"controllers.{self.name}.cube: {bad} not accepted; keys {list(OBJECTIVE)}, "
                             f"members one of {list(COMBINE)}, the others finite numbers >= 0 "
                             "(e.g. cube: {reach: 1.0, disagreement: 2.0, members: mean, keep: 20.0, "
                             "keep_margin: 0.05})")
        if self.compile is not None and self.compile not in torch.compiler.list_backends(()):
            raise ValueError(f"controllers.{self.name}.compile={self.compile!r} is not a "
                             "torch.compile backend; use inductor (or aot_eager to debug), or null")

    def cost_weights(self) -> CostWeights:
        """``weights`` as :class:`CostWeights`; errors name ``controllers.<name>.weights``."""
        try:
            return CostWeights(**self.weights)
        except (TypeError, ValueError) as e:
            raise ValueError(f"controllers.{self.name}.weights: {e}") from e


def _optimizer(cfg: dict[str, Any], seed: int):
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name is None:
        raise ValueError(f"optimizer config {cfg} has no 'name'; use name: gd, cem, mppi or hybrid")
    return make_optimizer(name, **{"seed": seed, **cfg})


def check_spec_guardrails(spec: ControllerSpec, model_spec: WorldModelSpec | None) -> None:
    """Refuse guardrail terms the controller cannot evaluate: any term for the oracle (it plans
    in a simulator clone) and the cube planner (its objective is ``cube:``: ``cube.keep`` keeps the
    cube within reach, ``cube.disagreement`` is its OOD term), state terms without a state probe, OOD without an ensemble."""
    g, key = spec.cost_weights().guardrails, f"controllers.{spec.name}.weights.guardrails"
    why = {"oracle": "the oracle plans in a simulator clone and applies no guardrail costs",
           "cube": "the cube planner takes its guardrails in its own objective (keep the cube within "
                   f"reach: controllers.{spec.name}.cube.keep; out of distribution: "
                   f"controllers.{spec.name}.cube.disagreement)"}.get(spec.kind)  # fmt: skip
    if why and (g.state_bounds or g.forbidden or g.ood):
        raise ValueError(f"{key}: {why}; set their weights to 0 (bounds and regions are still counted "
                         "by the evaluation harness)")
    if spec.kind not in NO_MODEL_KINDS and model_spec is not None:
        check_guardrails(model_spec, g, key)


def build_controller(
    spec: ControllerSpec, model: WorldModel | None, action_dim: int, seed: int,
    device: torch.device | str = "cpu", env: Any | None = None,
    graphs: dict[int, LandmarkGraph] | None = None, pose: PoseModel | None = None,
    cube: CubeModel | None = None,
) -> Controller:
    """Instantiate ``spec``. ``model`` may be None for the ``NO_MODEL_KINDS``; ``env`` (the
    episode's real env, whose state the oracle reads and clones) is required for "oracle" only;
    ``graphs`` (size -> graph, :func:`hmpc.landmarks.landmark_graphs`) for ``spec.landmarks`` > 0;
    ``pose`` (:func:`hmpc.object_pose.load_pose_model`) for kind "pose"; ``cube``
    (:func:`hmpc.cube_model.load_cube_model` of ``spec.cube_model``) for kind "cube"."""
    if spec.kind == "random":
        return RandomController(action_dim, seed)
    if spec.kind == "rllib":
        if not spec.policy:
            raise ValueError(f"controller {spec.name!r} (kind: rllib) needs a trained policy: "
                             f"controllers.{spec.name}.policy=<hmpc-baseline output_dir>")  # fmt: skip
        from hmpc.rl_baseline import RLlibController  # RLlib is an optional extra

        return RLlibController(spec.policy, device)
    if spec.kind == "oracle":
        if env is None:
            raise ValueError(
                f"controller {spec.name!r} (kind: oracle) needs the episode's env: "
                "build_controller(..., env=env)"
            )
        opt = _optimizer(spec.optimizer, seed)
        weights = spec.cost_weights()
        check_spec_guardrails(spec, None)
        return OracleMPC(
            env, opt, spec.horizon, spec.candidates, weights, action_dim, spec.oracle_score,
            deadline_ms=spec.deadline_ms, reach=spec.oracle_reach,
        )
    if spec.kind == "cube":
        if cube is None:
            raise ValueError(f"controller {spec.name!r} (kind: cube) needs a cube model: fit one with `hmpc-cube "
                             f"data=<dataset> env=<env> output_dir=<dir>` and pass cube_model=<dir> "
                             f"(or controllers.{spec.name}.cube_model=<dir>)")
        return CubeMPC(cube, _optimizer(spec.optimizer, seed), spec.horizon, spec.candidates, device=device,
                       deadline_ms=spec.deadline_ms, **spec.cube)
    if model is None:
        raise ValueError(f"controller {spec.name!r} needs a world model checkpoint (checkpoint=...)")
    if spec.kind == "pose":
        if pose is None:
            raise ValueError(f"controller {spec.name!r} (kind: pose) needs an object-pose model in "
                             "<checkpoint>/pose: fit one with `hmpc-pose checkpoint=<checkpoint> env=<env>`")
        return PoseMPC(pose, _optimizer(spec.optimizer, seed), spec.horizon, spec.candidates,
                       device=device, deadline_ms=spec.deadline_ms, **spec.pose)
    weights = spec.cost_weights()
    check_spec_guardrails(spec, model.spec)
    if spec.kind == "hierarchical":
        opts = [_optimizer(spec.optimizer, seed)]
        opts += [_optimizer(spec.high_optimizer, seed + lv) for lv in range(1, model.spec.num_levels)]
        graph = None
        if spec.landmarks:
            graph = (graphs or {}).get(spec.landmarks)
            if graph is None:
                raise ValueError(f"controller {spec.name!r} has landmarks={spec.landmarks} but no graph "
                                 "of that size was built: build_controller(..., graphs="
                                 f"landmark_graphs(model, frames, {{{spec.landmarks}}}))")
        try:
            return HierarchicalMPC(
                model, opts, spec.top_horizon, spec.replan_every, spec.subgoal_tolerance,
                spec.candidates, weights, device, spec.deadline_ms, spec.macro_support, spec.compile,
                spec.goal_switch, graph, spec.landmark_hops if graph is not None else 0,
                spec.low_replan_every,
            )
        except ValueError as e:
            raise ValueError(f"controllers.{spec.name}: {e}") from e
    opt = _optimizer(spec.optimizer, seed)
    try:
        return FlatMPC(
            model, opt, spec.horizon, spec.candidates, weights, device, spec.deadline_ms, spec.compile
        )
    except ValueError as e:
        raise ValueError(f"controllers.{spec.name}: {e}") from e
