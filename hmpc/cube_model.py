"""A learned cube model for the Panda cube tasks: what ``hmpc-cube`` fits and controllers of kind
"cube" (``hmpc.cube_mpc``) plan with.

- :class:`hmpc.cube_readout.CubeReadout` reads the cube's pose from the camera image (and from the
  goal image for the goal), trained on the dataset's logged cube labels;
- an ensemble of :class:`CubeDynamics` MLPs, seeds ``seed .. seed + K - 1``, predicts how the
  actions move the hand, the gripper and the cube, trained on ``observation.state`` with
  open-loop rollouts (:func:`hmpc.pose_dynamics.fit_dynamics`); their spread is the planner's
  out-of-distribution penalty.

States (N, 14) are PandaPush / PandaPickPlace's ``observation.state``: end effector xyz, gripper
width, end effector velocity (the proprioception a controller sees), cube xyz and quaternion (read
from the image). Folder: ``cube.safetensors`` (readout ``readout.*``, members ``members.K.*``) and
``cube.json`` (sizes, the env and image size it was fit for), written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from hmpc.checkpoint import atomic_save_weights, atomic_write_json
from hmpc.cube_readout import PROPRIO, CubeReadout, extra_per_batch, train_readout
from hmpc.data.windows import FrameArrays, state_frames
from hmpc.pose_dynamics import fit_dynamics, gelu_mlp, step_rollout
from hmpc.runtime import seeded
from hmpc.security import check_safetensors_file

WEIGHTS, CONFIG = "cube.safetensors", "cube.json"
STATE_DIM, ACTION_DIM = 14, 4
EE, CUBE, CUBE_XY = slice(0, 3), slice(7, 10), slice(7, 9)
SEEN = 7  # the state's proprioceptive prefix: end effector xyz, gripper width, end effector velocity
COMBINE = ("mean", "max")  # how ensemble_terms combines the members' staged costs
GROUPS = {"end effector": [0, 1, 2], "gripper": [3], "cube": [7, 8, 9]}  # state dims, for reports


class CubeDynamics(nn.Module):
    """Translation-invariant in x, y away from the workspace's walls: an MLP sees the cube's place
    relative to the end effector, the end effector's height and its distance to each face of the
    workspace box (saturating at 5 cm: where the commanded target is clipped), gripper width,
    velocity, the cube's quaternion and the action, and predicts the change of every state entry
    (``_OUT_SCALE`` units). Far from the hand every place looks alike, so the cube is not learned
    to drift where nothing touches it. ``std`` (14,) only scales the training loss (at least 1 mm:
    an entry that never moved in the data must not divide by zero)."""

    _OUT_SCALE = (0.03,) * 3 + (0.02,) + (0.1,) * 3 + (0.03,) * 3 + (0.05,) * 4

    def __init__(self, hidden: int, std: torch.Tensor) -> None:
        # the workspace box; robots.panda_scene loads pybullet, so not at import
        from robots.panda_scene import WORKSPACE_HIGH, WORKSPACE_LOW

        super().__init__()
        self.net = gelu_mlp(3 + 1 + 6 + 1 + 3 + 4 + ACTION_DIM, hidden, STATE_DIM)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3))
        self.register_buffer("low", torch.as_tensor(WORKSPACE_LOW, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(WORKSPACE_HIGH, dtype=torch.float32))
        self.register_buffer("out_scale", torch.tensor(self._OUT_SCALE))

    def step(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """States (N, 14) and actions (N, 4) -> next states (N, 14)."""
        ee = s[:, EE]
        walls = torch.cat([ee - self.low, self.high - ee], dim=-1).div(0.05).clamp(0.0, 1.0)
        x = torch.cat([(s[:, CUBE] - ee) / 0.1, s[:, 2:3] / 0.1, walls, s[:, 3:4] / 0.04,
                       s[:, 4:7] / 0.3, s[:, 10:14], a], dim=-1)  # fmt: skip
        return s + self.net(x) * self.out_scale

    def rollout(self, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """States (N, 14) and actions (N, H, 4) -> predicted states (N, H, 14)."""
        return step_rollout(self.step, s0, actions)


def staged_cost(pred: torch.Tensor, goal: torch.Tensor, reach: float) -> torch.Tensor:
    """Predicted states (N, H, 14), goal cube xyz (3,) -> (N,): per step the cube's goal distance
    + ``reach`` x the end effector's distance to the cube (metres), averaged over the horizon:
    the simulator oracle's "staged" score, so the search sees progress before the cube moves."""
    cube = pred[..., CUBE]
    d = (cube - goal).norm(dim=-1) + reach * (pred[..., EE] - cube).norm(dim=-1)
    return d.mean(1)


def outside_box(xy: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """How far points (..., 2) lie outside the box [low, high] (2,) each: the x and y excesses
    summed (metres), 0 inside."""
    return (torch.relu(low - xy) + torch.relu(xy - high)).sum(-1)


def ensemble_terms(members: nn.ModuleList | list[nn.Module], s0: torch.Tensor, actions: torch.Tensor,
                   goal: torch.Tensor, reach: float, disagreement: float, combine: str = "mean",
                   keep: float = 0.0, keep_box: tuple[torch.Tensor, torch.Tensor] | None = None,
                   ) -> dict[str, torch.Tensor]:
    """Candidates (N, H, 4) from state (1, 14) -> terms (N,) each: ``goal``, the members'
    :func:`staged_cost`, their mean (``combine="mean"``) or the worst member's (``"max"``: a plan
    scores only what every member believes); ``disagreement`` x the spread of their predicted
    cube (the norm of the per-axis std across members, metres, averaged over the horizon), with
    two or more members: where the data never showed what happens the members disagree, and a
    plan that needs the cube to move there pays for it; ``keep`` x how far the predicted cube's
    xy leaves ``keep_box`` (low (2,), high (2,); :func:`outside_box`, the members' mean averaged
    over the horizon): a guardrail that keeps the cube where the hand can still get behind it
    (a cube pushed past the hand's workspace is lost for the episode)."""
    if combine not in COMBINE:
        raise ValueError(f"combine={combine!r}: use one of {list(COMBINE)}")
    preds = torch.stack([m.rollout(s0.expand(len(actions), -1), actions) for m in members])  # (K, N, H, 14)
    costs = torch.stack([staged_cost(p, goal, reach) for p in preds])  # (K, N)
    terms = {"goal": costs.mean(0) if combine == "mean" else costs.max(0).values}
    if len(members) > 1 and disagreement > 0:
        terms["disagreement"] = disagreement * preds[..., CUBE].std(0).norm(dim=-1).mean(-1)
    if keep > 0:
        if keep_box is None:
            raise ValueError(f"keep={keep} needs keep_box (low (2,), high (2,)): the cube's allowed xy")
        terms["keep"] = keep * outside_box(preds[..., CUBE_XY], *keep_box).mean((0, 2))
    return terms


class CubeModel(nn.Module):
    """A :class:`CubeReadout` and an ensemble of :class:`CubeDynamics`."""

    def __init__(self, readout: CubeReadout, members: list[CubeDynamics],
                 camera: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.readout, self.members = readout, nn.ModuleList(members)
        self.camera = camera  # the camera it was fit with (cube.json), for the videos' overlay

    @torch.no_grad()
    def read(self, pixels: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, H, W, 3), proprioception (N, 7) -> states (N, 14): the proprioception
        and the cube's pose read from the image."""
        return torch.cat([seen, self.readout(pixels, seen[:, PROPRIO])], dim=-1)


def check_cube_frames(frames: FrameArrays, where: str) -> None:
    """Refuse frames without the cube tasks' 14-dim state and 4-dim action, naming ``where``."""
    if frames.state.shape[1] != STATE_DIM or frames.action.shape[1] != ACTION_DIM:
        raise ValueError(f"{where}: observation.state has {frames.state.shape[1]} dims and action "
                         f"{frames.action.shape[1]}; a cube model reads PandaPush / PandaPickPlace data "
                         f"({STATE_DIM} and {ACTION_DIM})")


def fit_members(frames: FrameArrays, ensemble: int, steps: int, horizon: int, hidden: int, seed: int = 0,
                device: torch.device | str = "cpu", progress: bool = True) -> list[CubeDynamics]:
    """``ensemble`` :class:`CubeDynamics` fit on ``frames`` (``steps`` each, ``horizon``-step
    open-loop windows); member k initialised and batched from ``seed + k`` alone."""
    std = torch.from_numpy(frames.state).float().std(0)
    members = []
    for k in range(ensemble):
        with seeded(seed + k):  # the global generator left as it was
            member = CubeDynamics(hidden, std).to(device)
        members.append(fit_dynamics(member, frames, steps, horizon, seed + k, progress=progress))
    return members


def fit_cube_model(frames: FrameArrays, ensemble: int = 4, steps: int = 2500, horizon: int = 8,
                   hidden: int = 512, readout_steps: int = 3000, proprio: bool = False, seed: int = 0,
                   device: torch.device | str = "cpu", progress: bool = True,
                   readout_extra: Sequence[FrameArrays] = (), readout_share: float = 0.25,
                   members: Sequence[CubeDynamics] | None = None,
                   dynamics_extra: Sequence[FrameArrays] = ()) -> CubeModel:
    """Fit the readout (``readout_steps``, seed ``seed``; with the image's proprioception as input
    when ``proprio``; ``readout_share`` of each batch from ``readout_extra`` where given, for
    example the planner's own episodes) and ``ensemble`` dynamics members (``steps`` each,
    ``horizon``-step open-loop windows; member k seeded ``seed + k``) on ``frames`` (pixels,
    14-dim state, 4-dim actions), and on ``dynamics_extra``'s episodes too (states and actions
    only: for example the planner's own episodes, whose states the data never showed).
    ``members``: reuse these dynamics instead of fitting new ones."""
    check_cube_frames(frames, "fit_cube_model frames")
    for key, extra in (("readout_extra", readout_extra), ("dynamics_extra", dynamics_extra)):
        for i, f in enumerate(extra):
            check_cube_frames(f, f"fit_cube_model {key}[{i}]")
    if members is not None and dynamics_extra:
        raise ValueError("fit_cube_model: give members (reused dynamics) or dynamics_extra (data to fit new "
                         "ones on), not both")
    if readout_extra:
        extra_per_batch(readout_share, key="readout_share")  # refused before any fitting
    if members is None:
        if ensemble < 1:
            raise ValueError(f"ensemble={ensemble}: use >= 1 dynamics members (2 or more give the disagreement term)")
        dyn_frames = state_frames([frames, *dynamics_extra]) if dynamics_extra else frames
        members = fit_members(dyn_frames, ensemble, steps, horizon, hidden, seed, device, progress)
    readout = train_readout(frames, readout_steps, seed, proprio=proprio, device=device, progress=progress,
                            extra=readout_extra, extra_share=readout_share)
    return CubeModel(readout, [m.to(device) for m in members]).eval()


def save_cube_model(folder: str | Path, model: CubeModel, meta: dict[str, Any]) -> Path:
    """Weights, then ``cube.json`` (written last: it marks completion) with the sizes and ``meta``."""
    folder = Path(folder)
    atomic_save_weights(folder / WEIGHTS, model)
    r = model.readout
    config = {"ensemble": len(model.members), "hidden": model.members[0].net[0].out_features,
              "readout": {"channels": r.conv[2].out_channels, "keypoints": r.conv[6].out_channels,
                          "proprio": r.proprio}, **meta}  # fmt: skip
    atomic_write_json(folder / CONFIG, config)
    return folder


def cube_blob(folder: str | Path | None, key: str = "cube_model") -> dict[str, Any]:
    """The cube model in ``folder`` (:func:`save_cube_model`) as plain config and arrays, to travel
    to workers with no shared filesystem; errors name the config ``key`` that gave the folder."""
    fit = "fit a cube model with `hmpc-cube data=<dataset> env=<its env> output_dir=<dir>`"
    if folder in (None, ""):
        raise ValueError(f"{key} is not set: {fit} and set {key}=<dir>")
    folder = Path(folder)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{key}={folder}: no {CONFIG} and {WEIGHTS} there; {fit}")
    config = json.loads((folder / CONFIG).read_text())
    check_safetensors_file(folder / WEIGHTS)
    weights = {k: v.numpy() for k, v in load_file(str(folder / WEIGHTS)).items()}
    return {"config": config, "weights": weights, "folder": str(folder)}


def check_cube_env(blob: dict[str, Any], env: Any, env_name: str) -> None:
    """Refuse to plan with :func:`cube_blob`'s model in an env, camera or image size it was not fit
    for (the readout would read another scene)."""
    cfg, where = blob["config"], Path(blob["folder"]) / CONFIG
    if cfg.get("env") is not None and cfg["env"] != env_name:
        raise ValueError(f"{where} was fit for env {cfg['env']!r}, not {env_name!r}: refit it with "
                         f"`hmpc-cube data=<{env_name} dataset> env={env_name}`")
    size = env.observation_space["pixels"].shape[0]
    if cfg.get("image_size") is not None and int(cfg["image_size"]) != size:
        raise ValueError(f"{where} was fit on {cfg['image_size']}-pixel images; env {env_name!r} here renders "
                         f"{size}: evaluate with env.image_size={cfg['image_size']}, or refit")
    camera = getattr(env.unwrapped, "camera", None)
    if cfg.get("camera") is not None and camera is not None and camera_config(camera) != cfg["camera"]:
        raise ValueError(f"{where} was fit with the camera {cfg['camera']}; env {env_name!r} here has "
                         f"{camera_config(camera)} (another camera_view or camera option): evaluate with the "
                         f"env options it was fit with ({cfg.get('env_options')}), or refit")


def camera_config(camera: Any) -> dict[str, Any]:
    """An env's camera (a dataclass) as the plain JSON values ``cube.json`` keeps."""
    return json.loads(json.dumps(asdict(camera)))


def cube_from_blob(blob: dict[str, Any], device: torch.device | str = "cpu") -> CubeModel:
    """:func:`cube_blob`'s model, on ``device``."""
    cfg = blob["config"]
    weights = {k: torch.from_numpy(v.copy()) for k, v in blob["weights"].items()}
    r = cfg["readout"]
    readout = CubeReadout(int(r["channels"]), int(r["keypoints"]), bool(r["proprio"]))
    members = [CubeDynamics(int(cfg["hidden"]), weights["members.0.std"]) for _ in range(int(cfg["ensemble"]))]
    model = CubeModel(readout, members, cfg.get("camera"))
    model.load_state_dict(weights)
    return model.to(device).eval()


def load_cube_model(folder: str | Path, device: torch.device | str = "cpu") -> CubeModel:
    """The cube model saved in ``folder``."""
    return cube_from_blob(cube_blob(folder), device)

