"""Episode videos: camera | goal | current subgoal, with the planner's numbers underneath.

The world model has no decoder, so a subgoal latent is shown as the *nearest dataset frame*
in that latent space (a ``SubgoalAtlas`` built once from the training data).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from hmpc.data import FrameArrays
from hmpc.data.video import encode_video
from hmpc.landmarks import encode_frames
from hmpc.world_model import WorldModel


@dataclass
class SubgoalAtlas:
    """Dataset frames with their latents at one level, for nearest-neighbour display."""

    pixels: np.ndarray  # uint8 (N, H, W, 3)
    latents: np.ndarray  # float32 (N, D_level)
    level: int

    def nearest(self, latent: np.ndarray) -> np.ndarray:
        """The frame whose latent is closest (L2) to ``latent`` (D,) -> uint8 (H, W, 3)."""
        d = ((self.latents - latent[None]) ** 2).sum(1)
        return self.pixels[int(np.argmin(d))]


@torch.no_grad()
def build_atlas(
    model: WorldModel, frames: FrameArrays, level: int, size: int, rng: np.random.Generator,
    batch: int = 256,
) -> SubgoalAtlas:
    """Encode ``size`` random dataset frames to ``level``'s latent space."""
    idx = np.sort(rng.choice(frames.num_frames, size=min(size, frames.num_frames), replace=False))
    latents = model.project(encode_frames(model, frames, batch, idx), level)  # (N, D_level)
    return SubgoalAtlas(np.ascontiguousarray(frames.pixels[idx]), latents.float().cpu().numpy(), level)


def _panel(img: np.ndarray, title: str, scale: int, like: np.ndarray | None = None) -> np.ndarray:
    """Upscale (nearest, so pixels stay sharp; to ``like``'s size x ``scale`` when given: an
    overlay drawn at a higher resolution) and put a title bar above."""
    if like is not None and img.shape[:2] != like.shape[:2]:
        size = (like.shape[1] * scale, like.shape[0] * scale)
        big = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    else:
        big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    bar = np.full((18, big.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, big], axis=0)


def compose_frame(
    camera: np.ndarray, goal: np.ndarray, subgoal: np.ndarray | None, caption: str, scale: int = 3,
    subgoal_title: str = "subgoal (nearest frame)",
) -> np.ndarray:
    """Side-by-side panels (camera, goal, subgoal or blank) and a caption row -> uint8 (H', W', 3).
    ``subgoal`` may be larger than the camera image (an overlay); it is resized to match.

    Output height and width are even, as yuv420p video requires.
    """
    blank = np.full_like(camera, 230)
    panels = [
        _panel(camera, "camera", scale),
        _panel(goal, "goal", scale),
        _panel(subgoal if subgoal is not None else blank, subgoal_title, scale, like=camera),
    ]
    row = np.concatenate(panels, axis=1)
    cap = np.full((20, row.shape[1], 3), 255, np.uint8)
    cv2.putText(cap, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    out = np.concatenate([row, cap], axis=0)
    return out[: out.shape[0] // 2 * 2, : out.shape[1] // 2 * 2]


def video_bytes(frames: list[np.ndarray], fps: int) -> bytes:
    """H.264 mp4 of the frames, as bytes (workers on other machines send videos back this way)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "episode.mp4"
        encode_video(path, frames, fps=fps, crf=23)
        return path.read_bytes()
