"""Neural building blocks of the world model: image encoder, predictors, macro-action encoder.

Shapes: B = batch, D = latent size, A = action size, H/W = image height/width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int, depth: int = 2) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden`` with LayerNorm + GELU, then a linear head."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.GELU()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """CNN from uint8 images (B, 3, H, W) to latents (B, D), optionally fused with proprio state.

    Each conv halves the resolution; a final linear maps the flattened feature map to D.
    """

    def __init__(
        self,
        image_size: int = 64,
        latent_dim: int = 32,
        widths: Sequence[int] = (16, 32, 64, 64),
        state_dim: int = 0,
    ) -> None:
        super().__init__()
        if image_size % (2 ** len(widths)) != 0:
            raise ValueError(
                f"image_size={image_size} must be divisible by 2**len(widths)={2 ** len(widths)}; "
                "change model.widths or env.image_size"
            )
        self.image_size = image_size
        self.state_dim = state_dim
        convs: list[nn.Module] = []
        c_in = 3
        for c in widths:
            convs += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.GroupNorm(1, c), nn.GELU()]
            c_in = c
        self.convs = nn.Sequential(*convs)
        side = image_size // (2 ** len(widths))
        self.head = nn.Linear(c_in * side * side + state_dim, latent_dim)

    def forward(self, pixels: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """pixels: uint8 or float in [0, 255], (B, 3, H, W); state: (B, state_dim) or None."""
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            raise ValueError(
                f"encoder expects {self.image_size}x{self.image_size} images, got "
                f"{tuple(pixels.shape[-2:])}; the checkpoint was trained at image_size={self.image_size}"
            )
        x = pixels.float() / 255.0 - 0.5
        h = self.convs(x).flatten(1)  # (B, C * side * side)
        if self.state_dim:
            if state is None:
                raise ValueError("this encoder fuses observation.state; pass state (B, state_dim)")
            h = torch.cat([h, state.float()], dim=-1)
        return self.head(h)


class ResidualPredictor(nn.Module):
    """s_{t+1} = s_t + MLP([s_t, a_t]): action-conditioned one-step latent dynamics.

    The residual form makes "nothing changes" the easy default and keeps long rollouts stable.
    """

    def __init__(self, latent_dim: int, action_dim: int, hidden: int = 128, depth: int = 2) -> None:
        super().__init__()
        self.net = mlp(latent_dim + action_dim, hidden, latent_dim, depth)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """s: (..., D), a: (..., A) -> (..., D)."""
        return s + self.net(torch.cat([s, a], dim=-1))


class InverseDynamics(nn.Module):
    """Infers the action (or macro code) that led from s_t to s_{t+1}: (..., 2D) -> (..., A)."""

    def __init__(self, latent_dim: int, action_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = mlp(2 * latent_dim, hidden, action_dim, depth=2)

    def forward(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([s, s_next], dim=-1))


class MacroActionEncoder(nn.Module):
    """Compresses a chunk of low-level actions (..., span * A) into a macro code in [-1, 1]^M.

    The tanh bound gives the planner a box to search; a small L2 prior (in the losses) keeps
    codes spread inside it rather than saturated at the corners.
    """

    def __init__(self, chunk_dim: int, macro_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = mlp(chunk_dim, hidden, macro_dim, depth=2)

    def forward(self, chunk: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(chunk))


class LatentPosterior(nn.Module):
    """q(z | s_t, s_t+1): the latent variable that explains what the action does not, (..., Z).

    Deterministic and tanh-bounded to [-1, 1]^Z: with an L2 penalty toward 0 (the prior mean)
    and a small Z, it can carry only the little information the action leaves open, and the
    planner can search it in a box or leave it at 0.
    """

    def __init__(self, latent_dim: int, z_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = mlp(2 * latent_dim, hidden, z_dim, depth=1)

    def forward(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(torch.cat([s, s_next], dim=-1)))
