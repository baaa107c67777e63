"""Flat MPC on an object-pose model (``hmpc.object_pose``): controllers of kind "pose".

Each step reads the pose state (agent x, y; the object's place and heading) from the camera image
and the fused agent position, rolls candidate action sequences (N, H, A) through the pose
dynamics and scores the object's predicted distance to the pose read from the goal image (over
the horizon as ``goal_mode`` says, ``hmpc.costs.reduce_horizon``: "final" lets a plan turn the
object the wrong way for a while to set up a push, which "sum" punishes; the model's radius of
gyration weighs heading against place), plus ``agent_weight`` x the agent's
squared distance to the goal image's agent and ``smoothness`` x the action changes. The same
fallbacks as ``hmpc.mpc.FlatMPC``: a failed or late optimisation sends the previous plan's next
action (or zero), clipped to the action box.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from hmpc.costs import GOAL_MODES, action_smoothness, reduce_horizon
from hmpc.mpc import Controller, Obs, image_tensor, receding_step
from hmpc.object_pose import PoseModel
from hmpc.optimizers import Optimizer
from hmpc.pose_dynamics import pose_distance


class PoseMPC(Controller):
    """Receding-horizon planning of real actions (A = 2) on a :class:`PoseModel`."""

    observation_keys = ("pixels", "state")
    state_dims = 2  # the agent's x, y: the images and this are all it sees

    def __init__(self, model: PoseModel, optimizer: Optimizer, horizon: int = 16, candidates: int = 1,
                 agent_weight: float = 0.0, smoothness: float = 0.0, goal_mode: str = "final",
                 goal_mix: float = 0.2, device: torch.device | str = "cpu",
                 deadline_ms: float | None = None) -> None:
        if not (horizon >= 1 and candidates >= 1 and agent_weight >= 0 and smoothness >= 0 and goal_mix >= 0):
            raise ValueError(f"pose controller: horizon={horizon} and candidates={candidates} must be >= 1, "
                             f"agent_weight={agent_weight}, smoothness={smoothness} and goal_mix={goal_mix} >= 0")
        if goal_mode not in GOAL_MODES:
            raise ValueError(f"pose controller: goal_mode={goal_mode!r}; use one of {list(GOAL_MODES)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.optimizer, self.horizon, self.candidates = optimizer, horizon, candidates
        self.agent_weight, self.smoothness = agent_weight, smoothness
        self.goal_mode, self.goal_mix = goal_mode, goal_mix
        self.deadline_ms = deadline_ms
        self.action_dim = 2

    def read(self, obs: Obs) -> torch.Tensor:
        """Pose state (1, 6) of one observation (pixels (H, W, 3), state (>= 2,))."""
        pixels = image_tensor(obs, self.model.encoder.image_size, self.device)
        agent = torch.as_tensor(np.asarray(obs["state"][:2]), device=self.device, dtype=torch.float32)[None]
        return self.model.read(pixels, agent)

    def reset(self, obs: Obs, goal_obs: Obs) -> None:
        self.goal = self.model.dynamics.world_state(self.read(goal_obs))[0]  # (6,) world units
        self.plan = torch.zeros(self.horizon, self.action_dim, device=self.device)
        self.prev = torch.zeros(self.action_dim, device=self.device)

    def cost_terms(self, s: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted term (N,) of the objective for candidates (N, H, 2) from pose state s (1, 6)."""
        dyn = self.model.dynamics
        pred = dyn.world_state(dyn.rollout(s.expand(len(actions), -1), actions))  # (N, H, 6)
        terms = {"goal": reduce_horizon(pose_distance(pred, self.goal, self.model.gyration), self.goal_mode,
                                        self.goal_mix)}
        if self.agent_weight:
            terms["agent"] = self.agent_weight * (pred[..., :2] - self.goal[:2]).pow(2).sum(-1).mean(1)
        if self.smoothness:
            terms["smoothness"] = self.smoothness * action_smoothness(actions, self.prev)
        return terms

    def act(self, obs: Obs) -> tuple[np.ndarray, dict[str, Any]]:
        t0 = time.perf_counter()
        s = self.read(obs)
        action, self.plan, info = receding_step(
            self.optimizer, lambda a: self.cost_terms(s, a), self.plan, self.candidates, t0, self.deadline_ms)
        self.prev = torch.as_tensor(action, device=self.device)
        return action, info
