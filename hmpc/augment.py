"""Image augmentation of training windows (``trainer.augment``), and the image warps of the keypoint
equivariance term; both sampled on the trainer's RNG (so resume stays exact), applied in torch.

A warp is an affine map ``theta`` (B, 2, 3) in ``torch.nn.functional.affine_grid``'s convention:
the warped image at normalised output position p (x right, y down, in [-1, 1]) shows the input at
``theta @ [p, 1]``. Content at input position q therefore appears at ``A^-1 (q - t)`` (A =
theta[:, :, :2], t = theta[:, :, 2]); ``warp_points`` applies that map to keypoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def sample_warps(n: int, rng: np.random.Generator, max_deg: float, max_shift: float = 0.0) -> torch.Tensor:
    """(n, 2, 3) float32 rotations about the image centre by U(-max_deg, max_deg) degrees, then
    shifts by U(-max_shift, max_shift) in normalised units (1.0 = half the image side)."""
    if max_deg < 0 or max_shift < 0:
        raise ValueError(f"warp ranges must be >= 0; got max_deg={max_deg}, max_shift={max_shift}")
    angle = rng.uniform(-1.0, 1.0, n) * math.radians(max_deg)
    shift = rng.uniform(-1.0, 1.0, (n, 2)) * max_shift
    cos, sin = np.cos(angle), np.sin(angle)
    theta = np.stack([np.stack([cos, -sin, shift[:, 0]], -1), np.stack([sin, cos, shift[:, 1]], -1)], 1)
    return torch.from_numpy(theta.astype(np.float32))


def warp_images(pixels: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """pixels (B, C, H, W) uint8 or float -> float (B, C, H, W) warped by theta (B, 2, 3); areas
    outside the input repeat its edge pixels (a plain background stays plain, no black corners)."""
    x = pixels.float()
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def warp_points(points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Where points (B, K, 2) of an image appear after ``warp_images(., theta)``: (B, K, 2)."""
    a, t = theta[:, :, :2], theta[:, :, 2]
    return torch.linalg.solve(a, (points - t[:, None]).transpose(1, 2)).transpose(1, 2)


@dataclass(frozen=True)
class ImageAugment:
    """Jitter of training windows (``trainer.augment``; every 0 turns one off); validation windows
    are never augmented. Blur and contrast/brightness teach the encoder to ignore how a camera
    renders (sharpness, exposure), which matters for video from another camera (``hmpc-dataset
    add-video``); shift is DrQ's random shift.

    By default every frame draws its own jitter (DrQ shifts an observation and the next one apart):
    the jitter is then noise the predictor cannot foresee, so the encoder learns to ignore it. One
    draw per window (``per_frame=False``) is constant within a window and varies between windows,
    which is what the variance term rewards: on PointMaze medium (20 episodes) the encoder read a
    window's shift, or its brightness and contrast, instead of the scene, and its held-out latents
    collapsed (``bench/jitter_shortcut.py``, ``hmpc.diagnostics.health_warnings``)."""

    shift: int = 0  # pixels: pad by repeating the edge, crop back at an offset in [-shift, shift]^2
    per_frame: bool = True  # each frame its own draws; False: one draw per window (see above)
    blur: float = 0.0  # Gaussian blur of std U(0, blur) pixels
    brightness: float = 0.0  # add U(-brightness, brightness) * 255
    contrast: float = 0.0  # scale about each frame's mean level by U(1 - contrast, 1 + contrast)

    def __post_init__(self) -> None:
        if self.shift < 0 or self.blur < 0 or not 0 <= self.brightness <= 1 or not 0 <= self.contrast < 1:
            raise ValueError(f"trainer.augment: shift={self.shift} and blur={self.blur} must be >= 0, "
                             f"brightness={self.brightness} in [0, 1], contrast={self.contrast} in "
                             "[0, 1) (e.g. shift=4 blur=1.0 brightness=0.1 contrast=0.2; 0: off)")

    @property
    def active(self) -> bool:
        return bool(self.shift or self.blur or self.brightness or self.contrast)

    def window_jitter(self) -> str:
        """The jitter drawn once per window, as ``key=value`` words ("" when none is)."""
        if self.per_frame or not self.active:
            return ""
        return " ".join(f"{k}={getattr(self, k)}" for k in ("shift", "blur", "brightness", "contrast")
                        if getattr(self, k))


def augment_batch(batch: dict[str, Any], aug: ImageAugment, rng: np.random.Generator) -> dict[str, Any]:
    """``batch`` with batch["pixels"] (B, L, 3, H, W) uint8 augmented by ``aug`` (draws from ``rng``
    only for the augmentations that are on: with all off the batch and ``rng`` are untouched)."""
    if not aug.active:
        return batch
    return {**batch, "pixels": augment_windows(batch["pixels"], aug, rng)}


def shift_frames(x: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): each image moved by whole pixels, ``off`` (B, 2) int (dy, dx),
    its edge rows and columns repeated (a gather: works on uint8)."""
    h, w = x.shape[-2:]
    off = off.to(x.device)
    rows = (torch.arange(h, device=x.device) + off[:, :1]).clamp(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=x.device) + off[:, 1:]).clamp(0, w - 1)  # (B, W)
    x = x.gather(2, rows[:, None, :, None].expand(x.shape))
    return x.gather(3, cols[:, None, None, :].expand(x.shape))


def augment_windows(pixels: torch.Tensor, aug: ImageAugment, rng: np.random.Generator) -> torch.Tensor:
    """uint8 (B, L, 3, H, W) -> uint8 (B, L, 3, H, W): shift, blur, contrast, brightness, in that
    order, drawn per frame (``aug.per_frame``) or once per window."""
    b, length, c, h, w = pixels.shape
    if 2 * aug.shift >= min(h, w) or 3 * aug.blur >= min(h, w) - 1:
        raise ValueError(f"trainer.augment: shift={aug.shift} and blur={aug.blur} are too large for "
                         f"{h}x{w} frames: use shift < {min(h, w) // 2} and blur < {(min(h, w) - 1) / 3:.1f}")
    if aug.per_frame and length > 1:  # every frame a window of its own, with its own draws
        one = replace(aug, per_frame=False)
        return augment_windows(pixels.reshape(b * length, 1, c, h, w), one, rng).reshape(pixels.shape)
    dev = pixels.device
    x = pixels.reshape(b, length * c, h, w)  # each window's frames and channels as channels
    if aug.shift:  # a whole-pixel move is a gather of rows and columns: done on the uint8 frames
        x = shift_frames(x, torch.from_numpy(rng.integers(-aug.shift, aug.shift + 1, size=(b, 2))))
    if not (aug.blur or aug.contrast or aug.brightness):
        return x.reshape(pixels.shape)
    x = x.float()
    if aug.blur:  # separable, per window: X <- Bh @ X @ Bw^T for each of its frames' channels
        sigma = rng.uniform(0.0, aug.blur, size=b)
        cw = length * c
        x = torch.bmm(x.reshape(b, cw * h, w), _blur_matrix(w, sigma).to(dev).transpose(1, 2))
        x = x.reshape(b, cw, h, w).transpose(1, 2).reshape(b, h, cw * w)  # (B, H, C' W)
        x = torch.bmm(_blur_matrix(h, sigma).to(dev), x).reshape(b, h, cw, w).transpose(1, 2)
    x = x.reshape(b, length, c, h, w)
    if aug.contrast:
        gain = torch.from_numpy(rng.uniform(1 - aug.contrast, 1 + aug.contrast, size=b)).float().to(dev)
        mean = x.mean(dim=(2, 3, 4), keepdim=True)  # (B, L, 1, 1, 1): each frame's mean level
        x = x.sub_(mean).mul_(gain[:, None, None, None, None]).add_(mean)
    if aug.brightness:
        bias = torch.from_numpy(rng.uniform(-aug.brightness, aug.brightness, size=b)).float().to(dev)
        x = x.add_(255.0 * bias[:, None, None, None, None])
    return x.add_(0.5).clamp_(0, 255).to(torch.uint8)  # + 0.5 then truncation: rounding


def _blur_matrix(n: int, sigma: np.ndarray) -> torch.Tensor:
    """(B, n, n) float32: row i holds the Gaussian weights (std sigma[b] pixels) that output pixel i
    takes from the n input pixels, edges reflected; a std under 0.05 px gives the identity."""
    radius = min(n - 1, max(1, math.ceil(3 * float(sigma.max()))))
    t = np.arange(-radius, radius + 1)
    kern = np.exp(-0.5 * (t[None] / np.maximum(sigma[:, None], 1e-6)) ** 2)  # (B, 2r + 1)
    kern[sigma < 0.05] = t == 0
    kern /= kern.sum(1, keepdims=True)
    src = np.arange(n)[:, None] + t[None]  # (n, 2r + 1): the input pixel of each tap
    src = np.abs(src)
    src = np.where(src > n - 1, 2 * (n - 1) - src, src)  # reflected at both edges
    mat = np.zeros((len(sigma), n, n))
    for j in range(len(t)):
        np.add.at(mat, (slice(None), np.arange(n), src[:, j]), kern[:, j, None])
    return torch.from_numpy(mat).float()
