"""Flat MPC on a learned cube model (``hmpc.cube_model``): controllers of kind "cube".

Each step reads the cube's pose from the camera image (:class:`hmpc.cube_readout.CubeReadout`),
joins it to the proprioception the harness passes (end effector xyz, gripper width, end
effector velocity: ``state_dims`` = 7, never the cube's true state), rolls candidate action
sequences (N, H, 4) through every dynamics member and scores the terms of
:func:`hmpc.cube_model.ensemble_terms`: the members' mean (with ``members="max"``, the worst
member's) staged cost toward the cube read from the goal image (the cube's goal distance +
``reach`` x the hand's distance to the cube, averaged over the horizon) and ``disagreement`` x
the members' spread of the predicted cube, and ``keep`` x how far the predicted cube leaves the
table region where starts and goals lie, grown by ``keep_margin`` (a guardrail: a cube pushed past
the hand's workspace cannot be fetched back; bench/RESULTS.md, "Keeping the cube within reach").
The same fallbacks and per-term report as ``hmpc.mpc.FlatMPC`` (``hmpc.mpc.receding_step``).
Where the model knows its camera, ``plan_image`` draws the camera image with the cube read now,
the sent plan's predicted cube path and the goal's cube (:func:`hmpc.cube_overlay.plan_overlay`):
the third panel of the episode videos.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from hmpc.cube_model import ACTION_DIM, COMBINE, CUBE, SEEN, CubeModel, ensemble_terms
from hmpc.cube_overlay import plan_overlay
from hmpc.mpc import Controller, Obs, receding_step
from hmpc.optimizers import Optimizer

# the objective's defaults: CubeMPC's keyword arguments, the keys of controllers.<name>.cube
OBJECTIVE: dict[str, Any] = {"reach": 1.0, "disagreement": 2.0, "members": "mean", "keep": 0.0, "keep_margin": 0.05}


def bad_objective(objective: dict[str, Any]) -> dict[str, Any]:
    """The entries of a cube objective that :class:`CubeMPC` refuses: keys not in ``OBJECTIVE``,
    ``members`` not one of ``COMBINE``, any other value not a finite number >= 0."""
    def ok(k: str, v: Any) -> bool:
        if k == "members":
            return v in COMBINE
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        return k in OBJECTIVE and number and math.isfinite(v) and v >= 0

    return {k: v for k, v in objective.items() if not ok(k, v)}


class CubeMPC(Controller):
    """Receding-horizon planning of real actions (A = 4) on a :class:`CubeModel`."""

    observation_keys = ("pixels", "state")
    state_dims = SEEN  # proprioception: the cube comes from the image

    def __init__(self, model: CubeModel, optimizer: Optimizer, horizon: int = 12, candidates: int = 1,
                 reach: float = 1.0, disagreement: float = 2.0, members: str = "mean", keep: float = 0.0,
                 keep_margin: float = 0.05, device: torch.device | str = "cpu",
                 deadline_ms: float | None = None) -> None:
        bad = bad_objective({"reach": reach, "disagreement": disagreement, "members": members, "keep": keep,
                             "keep_margin": keep_margin})  # fmt: skip
        if not (horizon >= 1 and candidates >= 1) or bad:
            raise ValueError(f"cube controller: horizon={horizon} and candidates={candidates} must be >= 1, "
                             f"members one of {list(COMBINE)} and the weights finite numbers >= 0; got {bad}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.optimizer, self.horizon, self.candidates = optimizer, horizon, candidates
        self.reach, self.disagreement, self.deadline_ms = reach, disagreement, deadline_ms
        self.combine, self.keep = members, keep
        self.keep_box = None
        if keep > 0:  # robots.panda_scene loads pybullet, so only where it is used
            from robots.panda_scene import TABLE_REGION_HIGH, TABLE_REGION_LOW

            self.keep_box = tuple(torch.as_tensor(b + sign * keep_margin, dtype=torch.float32, device=self.device)
                                  for b, sign in ((TABLE_REGION_LOW, -1), (TABLE_REGION_HIGH, 1)))
        self.action_dim = ACTION_DIM

    def read(self, obs: Obs) -> torch.Tensor:
        """State (1, 14) of one observation: its proprioception (>= 7,) and the cube read from its
        image (H, W, 3)."""
        seen = np.asarray(obs["state"][:SEEN], dtype=np.float32)
        if seen.shape != (SEEN,):
            raise ValueError(f"cube controller: observation state has {seen.shape[0]} dims; it needs the "
                             f"Panda cube tasks' proprioception ({SEEN}: end effector, gripper, velocity)")
        pixels = torch.as_tensor(obs["pixels"], device=self.device)[None]
        return self.model.read(pixels, torch.as_tensor(seen, device=self.device)[None])

    def reset(self, obs: Obs, goal_obs: Obs) -> None:
        self.goal = self.read(goal_obs)[0, CUBE]  # the goal image's cube xyz
        self.plan = torch.zeros(self.horizon, self.action_dim, device=self.device)

    def cost_terms(self, s: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted term (N,) of the objective for candidates (N, H, 4) from state s (1, 14)."""
        return ensemble_terms(self.model.members, s, actions, self.goal, self.reach, self.disagreement,
                              self.combine, self.keep, self.keep_box)

    def act(self, obs: Obs) -> tuple[np.ndarray, dict[str, Any]]:
        t0 = time.perf_counter()
        s = self.read(obs)
        action, self.plan, info = receding_step(
            self.optimizer, lambda a: self.cost_terms(s, a), self.plan, self.candidates, t0, self.deadline_ms)
        self.last = (np.asarray(obs["pixels"]), s, action)  # for plan_image, when a video is recorded
        return action, info

    @torch.no_grad()
    def plan_image(self) -> np.ndarray | None:
        """The last camera image with the cube read from it, the members' mean predicted cube path
        of the plan just sent (its first action and the shifted plan) and the goal's cube; None
        where the model does not know its camera."""
        if self.model.camera is None:
            return None
        pixels, s, action = self.last
        plan = torch.cat([torch.as_tensor(action, dtype=torch.float32, device=self.device)[None],
                          self.plan[:-1]])[None]  # (1, H, 4)
        path = torch.stack([m.rollout(s, plan)[0, :, CUBE] for m in self.model.members]).mean(0)
        return plan_overlay(pixels, self.model.camera, s[0, CUBE].cpu().numpy(),
                            path.cpu().numpy(), self.goal.cpu().numpy())
