"""Dynamics of an agent pushing one rigid object, learned on low-dimensional pose states.

A state (B, 6) is ``[agent x, y, object x, y, cos, sin of its heading]``. ``RelativeDynamics``
sees nothing absolute: the agent's place relative to the object and the action, turned into the
object's own frame (``rotate=True``), so a push learned at one place and heading holds at every
place and heading. ``PoseDynamics`` runs it on poses read out of keypoints (``hmpc.object_pose``):
the object's place in keypoint coordinates, put into world units by the camera's map and one
learned scale (the spatial-softmax keypoints' shrink toward the image centre). ``fit_dynamics``
trains either on multi-step open-loop rollouts of logged episodes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm import trange

from hmpc.data.windows import FrameArrays, WindowSampler

__all__ = ["PoseDynamics", "RelativeDynamics", "error_ratios", "fit_dynamics", "gelu_mlp", "pose_distance", "rotate",
           "step_rollout"]


def gelu_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Three GELU layers of width ``hidden``, then a linear head."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


def rotate(v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Vectors (N, 2) rotated by the angles whose cosine and sine are ``cos``, ``sin`` (N,)."""
    return torch.stack([cos * v[:, 0] - sin * v[:, 1], sin * v[:, 0] + cos * v[:, 1]], dim=-1)


def step_rollout(step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], s0: torch.Tensor,
                 actions: torch.Tensor) -> torch.Tensor:
    """Open-loop rollout of a one-step model ``step(states (N, S), actions (N, A)) -> (N, S)``
    from ``s0`` (N, S) through ``actions`` (N, H, A) -> the states after each action (N, H, S)."""
    s, out = s0, []
    for t in range(actions.shape[1]):
        s = step(s, actions[:, t])
        out.append(s)
    return torch.stack(out, dim=1)


class RelativeDynamics(nn.Module):
    """An MLP seeing the agent's place relative to the object, the action and (``rotate=False``)
    the object's heading as (cos, sin); it predicts the displacements of object and agent and the
    object's turn. ``rotate=True`` turns inputs and outputs into the object's frame. ``std`` (6,)
    only scales the training loss. Units: metres (relative places are divided by 0.1)."""

    _OUT_SCALE = (0.01, 0.01, 0.05, 0.01, 0.01)  # object dx, dy (m), turn (rad), agent dx, dy (m)

    def __init__(self, hidden: int, std: torch.Tensor, rotate: bool) -> None:
        super().__init__()
        self.rotate = rotate
        self.net = gelu_mlp(4 if rotate else 6, hidden, 5)
        self.register_buffer("std", std)
        self.register_buffer("out_scale", torch.tensor(self._OUT_SCALE))

    def step(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """States (N, 6) and actions (N, 2) -> next states (N, 6)."""
        agent, obj = s[:, 0:2], s[:, 2:4]
        theta = torch.atan2(s[:, 5], s[:, 4])
        if self.rotate:
            cos, sin = torch.cos(theta), torch.sin(theta)
            x = torch.cat([rotate(agent - obj, cos, -sin) / 0.1, rotate(a, cos, -sin)], dim=-1)
        else:
            cos, sin = torch.ones_like(theta), torch.zeros_like(theta)  # outputs in the world frame
            x = torch.cat([(agent - obj) / 0.1, a, s[:, 4:6]], dim=-1)
        d = self.net(x) * self.out_scale
        theta = theta + d[:, 2]
        return torch.cat([agent + rotate(d[:, 3:5], cos, sin), obj + rotate(d[:, 0:2], cos, sin),
                          torch.cos(theta)[:, None], torch.sin(theta)[:, None]], dim=-1)

    def rollout(self, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """States (N, 6) and actions (N, H, 2) -> predicted states (N, H, 6)."""
        return step_rollout(self.step, s0, actions)


class PoseDynamics(nn.Module):
    """``RelativeDynamics`` (the object's frame) on pose states (N, 6) whose object place is in
    keypoint coordinates: ``image_map`` (2, 3) is the camera's map of world x, y into image
    coordinates, ``grid_scale`` the keypoint grid's scale on them (``keypoint_grid_scale``), and
    the learned ``shrink`` the keypoints' pull toward the centre; ``std`` (6,) scales the loss."""

    def __init__(self, hidden: int, std: torch.Tensor, image_map: np.ndarray | torch.Tensor,
                 grid_scale: float) -> None:
        super().__init__()
        self.inner = RelativeDynamics(hidden, std, rotate=True)
        self.register_buffer("map", torch.as_tensor(image_map, dtype=torch.float32))
        self.register_buffer("map_inv", torch.linalg.inv(self.map[:, :2]))
        self.grid_scale = float(grid_scale)
        self.log_shrink = nn.Parameter(torch.zeros(()))

    @property
    def std(self) -> torch.Tensor:
        return self.inner.std

    @property
    def shrink(self) -> float:
        return float(self.log_shrink.detach().exp())

    def to_world(self, place: torch.Tensor) -> torch.Tensor:
        """Keypoint coordinates (..., 2) -> world x, y (..., 2)."""
        image = place * self.log_shrink.exp() / self.grid_scale - self.map[:, 2]
        return image @ self.map_inv.T

    def to_image(self, world: torch.Tensor) -> torch.Tensor:
        """World x, y (..., 2) -> keypoint coordinates (..., 2): :meth:`to_world`'s inverse."""
        return (world @ self.map[:, :2].T + self.map[:, 2]) * self.grid_scale / self.log_shrink.exp()

    def world_state(self, s: torch.Tensor) -> torch.Tensor:
        """Pose states (..., 6) -> states in world units (..., 6)."""
        return torch.cat([s[..., :2], self.to_world(s[..., 2:4]), s[..., 4:6]], -1)

    def rollout(self, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Pose states (N, 6) and actions (N, H, 2) -> predicted pose states (N, H, 6)."""
        world = self.inner.rollout(self.world_state(s0), actions)
        return torch.cat([world[..., :2], self.to_image(world[..., 2:4]), world[..., 4:6]], -1)


def pose_distance(pred: torch.Tensor, goal: torch.Tensor, gyration: float) -> torch.Tensor:
    """Squared distance of object poses in world states (..., 6) to ``goal`` (6,): the squared
    place error plus (2 g sin(dtheta / 2))^2, the mean squared displacement of the points of a
    body of radius of gyration g (Push-T's ``info["distance"]^2``)."""
    dp2 = (pred[..., 2:4] - goal[2:4]).pow(2).sum(-1)
    dth = torch.atan2(pred[..., 5], pred[..., 4]) - torch.atan2(goal[5], goal[4])
    return dp2 + (2 * gyration * torch.sin(dth / 2)).pow(2)


def fit_dynamics(model: nn.Module, frames: FrameArrays, steps: int, horizon: int, seed: int,
                 batch: int = 256, progress: bool = True) -> nn.Module:
    """Fits ``model`` (``rollout(s0 (N, S), actions (N, H, A)) -> (N, H, S)`` and a ``std`` (S,)
    buffer) to ``frames.state`` with ``horizon``-step open-loop rollouts of windows inside
    action-labelled episodes: AdamW, cosine schedule, batches drawn from ``seed`` alone."""
    device = next(model.parameters()).device
    state = torch.from_numpy(frames.state).float().to(device)
    action = torch.from_numpy(frames.action).float().to(device)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    starts = WindowSampler(frames, horizon + 1).starts
    if not len(starts):
        raise ValueError(f"no {horizon + 1}-frame window with actions in the data; use shorter "
                         "windows (horizon) or action-labelled episodes")
    for _ in trange(steps, desc="dynamics", mininterval=5, disable=not progress):
        idx = torch.as_tensor(starts[rng.integers(0, len(starts), batch)][:, None] + np.arange(horizon + 1),
                              device=device)
        pred = model.rollout(state[idx[:, 0]], action[idx[:, :-1]])
        loss = ((pred - state[idx[:, 1:]]) / model.std).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def error_ratios(model: nn.Module, frames: FrameArrays, groups: dict[str, list[int]],
                 steps: int = 10) -> dict[str, float]:
    """Per state group (name -> state dims): squared error of ``model``'s ``steps``-step open-loop
    prediction from every other window of ``frames`` / that of copying the start (1: no better
    than assuming nothing moves; NaN for a group that never moved in these windows)."""
    device = next(model.parameters()).device
    state = torch.from_numpy(frames.state).float().to(device)
    action = torch.from_numpy(frames.action).float().to(device)
    idx = torch.as_tensor(WindowSampler(frames, steps + 1).starts[::2, None] + np.arange(steps + 1), device=device)
    pred, y, s0 = model.rollout(state[idx[:, 0]], action[idx[:, :-1]])[:, -1], state[idx[:, -1]], state[idx[:, 0]]
    out = {}
    for name, d in groups.items():
        copying = float((s0[:, d] - y[:, d]).pow(2).sum())
        out[name] = float((pred[:, d] - y[:, d]).pow(2).sum()) / copying if copying > 0 else float("nan")
    return out
