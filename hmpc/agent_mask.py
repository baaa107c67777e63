"""Paint the agent out of camera images before they are encoded (``model.agent_mask``).

A disc-shaped agent (the Push-T pusher) is known to the controller twice: as pixels and as its
fused proprioception (``observation.state[:2]``, world x, y). The pixels add
nothing, and a learned encoder lets them leak into what it reads of the rest of the scene (the
Push-T block's angle followed the pusher's bearing around it, bench/RESULTS.md). With the camera's
map (calibration, not state) the agent's disc can be painted over with the background before
encoding, from the fused state alone, in training and in control alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_HOW = ("e.g. model.agent_mask={image_map:[[2,0,-1],[0,-2,1]],radius:0.03,fill:[255,255,255]} "
        "for push_t (print(make_env('<env>').unwrapped.agent_mask()) gives an env's), or null")


@dataclass(frozen=True)
class AgentMask:
    """``image_map`` (2 rows of 3): the camera's affine map of world x, y into image coordinates
    in [-1, 1], x right and y down (``env.unwrapped.image_map()``); ``radius``: the agent's disc
    (world units); ``fill``: the background's RGB; ``margin``: pixels painted beyond the disc
    (anti-aliased edges)."""

    image_map: tuple[tuple[float, float, float], tuple[float, float, float]]
    radius: float
    fill: tuple[int, int, int] = (255, 255, 255)
    margin: float = 1.0

    def __post_init__(self) -> None:
        rows = [list(r) for r in self.image_map] if isinstance(self.image_map, (list, tuple, np.ndarray)) else []
        if len(rows) != 2 or any(len(r) != 3 for r in rows):
            raise ValueError(f"model.agent_mask.image_map={self.image_map!r} must be 2 rows of 3 numbers; {_HOW}")
        m = tuple(tuple(float(v) for v in r) for r in rows)
        det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
        if not all(math.isfinite(v) for r in m for v in r) or abs(det) < 1e-12:
            raise ValueError(f"model.agent_mask.image_map={self.image_map!r} must be finite and invertible; {_HOW}")
        fill = tuple(self.fill) if isinstance(self.fill, (list, tuple)) else ()
        if len(fill) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in fill):
            raise ValueError(f"model.agent_mask.fill={self.fill!r} must be 3 integers in [0, 255] "
                             f"(the background's RGB); {_HOW}")
        if not (self.radius > 0 and self.margin >= 0):
            raise ValueError(f"model.agent_mask.radius={self.radius} must be > 0 (world units) and "
                             f"margin={self.margin} >= 0 (pixels); {_HOW}")
        object.__setattr__(self, "image_map", m)
        object.__setattr__(self, "fill", fill)
        object.__setattr__(self, "radius", float(self.radius))
        object.__setattr__(self, "margin", float(self.margin))

    @classmethod
    def from_value(cls, value: AgentMask | Mapping[str, Any] | None) -> AgentMask | None:
        """A config or JSON value (a mapping, or None) as an ``AgentMask``; errors name the key."""
        if value is None or isinstance(value, AgentMask):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"model.agent_mask={value!r} must be a mapping or null; {_HOW}")
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown or not {"image_map", "radius"} <= set(value):
            raise ValueError(f"model.agent_mask has keys {sorted(value)}; it needs image_map and radius "
                             f"and may have fill and margin; {_HOW}")
        return cls(**value)

    def __call__(self, pixels: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) and the agent's world x, y (B, 2) -> the images with every
        pixel whose centre lies within the disc (plus ``margin`` pixels) set to ``fill``."""
        if xy.shape != (pixels.shape[0], 2):
            raise ValueError(f"agent mask: images {tuple(pixels.shape)} need the agent's x, y as "
                             f"({pixels.shape[0]}, 2); got {tuple(xy.shape)}")
        h, w = pixels.shape[-2:]
        m = torch.tensor(self.image_map, dtype=torch.float32, device=pixels.device)
        centre = xy.float() @ m[:, :2].T + m[:, 2]  # (B, 2) image coordinates
        v, u = torch.meshgrid((torch.arange(h, device=pixels.device) + 0.5) * (2 / h) - 1,
                              (torch.arange(w, device=pixels.device) + 0.5) * (2 / w) - 1, indexing="ij")
        offset = torch.stack([u, v], -1)[None] - centre[:, None, None]  # (B, H, W, 2)
        world = offset @ torch.linalg.inv(m[:, :2]).T  # the same offsets in world units
        # a pixel is 2 / size image units; the margin in world units along the map's weakest axis
        margin = self.margin * 2 / min(h, w) / torch.linalg.svdvals(m[:, :2]).min()
        inside = world.norm(dim=-1) <= self.radius + margin  # (B, H, W)
        fill = torch.tensor(self.fill, dtype=pixels.dtype, device=pixels.device)[None, :, None, None]
        return torch.where(inside[:, None], fill, pixels)
