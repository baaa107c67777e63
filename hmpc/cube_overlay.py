"""What the cube planner believes, drawn on the camera image: the third panel of its videos.

A cube model has no decoder and no latent subgoal, so ``hmpc-plan`` / ``hmpc-eval`` videos of
controllers of kind "cube" show the camera image with the cube read from it (green), the path the
sent plan predicts for the cube (blue, darkening toward the horizon's end) and the cube read from
the goal image (yellow), projected with the camera the model was fit with (``cube.json``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

SCALE = 4  # the overlay is drawn on the image upscaled this much, so the marks stay thin


def project(points: np.ndarray, camera: dict[str, Any], size: int) -> np.ndarray:
    """World points (N, 3) -> pixel (column, row) (N, 2) in a ``size`` x ``size`` image of the
    pinhole ``camera`` (``robots.base.Camera`` fields: eye, target, up, fov_deg, aspect; the
    view stretched to a square image, as PyBullet renders it). Points behind the camera are NaN."""
    eye, target, up = (np.asarray(camera[k], np.float64) for k in ("eye", "target", "up"))
    f = (target - eye) / np.linalg.norm(target - eye)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    u = np.cross(r, f)
    d = np.asarray(points, np.float64).reshape(-1, 3) - eye
    depth = d @ f
    t = np.tan(np.radians(float(camera["fov_deg"])) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (d @ r) / (depth * t * float(camera.get("aspect", 1.0)))
        y = (d @ u) / (depth * t)
    px = np.stack([(x + 1) / 2 * size, (1 - y) / 2 * size], axis=-1)
    px[depth <= 0] = np.nan
    return px


def plan_overlay(pixels: np.ndarray, camera: dict[str, Any], now: np.ndarray, path: np.ndarray,
                 goal: np.ndarray) -> np.ndarray:
    """uint8 image (S, S, 3), cube xyz read now (3,), predicted cube path (H, 3), goal cube xyz
    (3,) -> uint8 (S * SCALE, S * SCALE, 3) with the marks drawn."""
    size = pixels.shape[0]
    img = np.ascontiguousarray(cv2.resize(pixels, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST))

    def at(p: np.ndarray) -> tuple[int, int] | None:
        q = project(p, camera, size)[0] * SCALE
        return None if not np.all(np.isfinite(q)) else (int(round(q[0])), int(round(q[1])))

    pts = [at(p) for p in np.asarray(path).reshape(-1, 3)]
    for k, (a, b) in enumerate(zip(pts[:-1], pts[1:], strict=True)):
        if a is not None and b is not None:
            shade = int(255 - 155 * (k + 1) / max(len(pts) - 1, 1))
            cv2.line(img, a, b, (0, 0, shade), 2, cv2.LINE_AA)
    for p, colour in ((goal, (230, 200, 0)), (now, (0, 200, 0))):
        c = at(p)
        if c is not None:
            cv2.circle(img, c, 2 * SCALE, colour, 2, cv2.LINE_AA)
    return img
