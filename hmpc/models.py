"""Neural building blocks of the world model: image encoder, predictors, macro-action encoder.

Shapes: B = batch, D = latent size, A = action size, H/W = image height/width.
"""

from __future__ import annotations

import math
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


def conv_stack(widths: Sequence[int], strided: int) -> nn.Sequential:
    """Conv + GroupNorm + GELU per width, from RGB: the first ``strided`` convs are 4x4 with
    stride 2 (each halves the resolution), the rest 3x3 with stride 1 (resolution kept)."""
    layers: list[nn.Module] = []
    c_in = 3
    for i, c in enumerate(widths):
        conv = nn.Conv2d(c_in, c, 4, stride=2, padding=1) if i < strided else nn.Conv2d(c_in, c, 3, padding=1)
        layers += [conv, nn.GroupNorm(1, c), nn.GELU()]
        c_in = c
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
        self.convs = conv_stack(widths, strided=len(widths))
        side = image_size // (2 ** len(widths))
        self.head = nn.Linear(widths[-1] * side * side + state_dim, latent_dim)

    def forward(self, pixels: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """pixels: uint8 or float in [0, 255], (B, 3, H, W); state: (B, state_dim) or None."""
        h = self.convs(_normalised(pixels, self.image_size)).flatten(1)  # (B, C * side * side)
        return self.head(_fuse(h, state, self.state_dim))


def _normalised(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 or float [0, 255] images (B, 3, S, S) -> float in [-0.5, 0.5]; checks S."""
    if pixels.shape[-1] != image_size or pixels.shape[-2] != image_size:
        raise ValueError(
            f"encoder expects {image_size}x{image_size} images, got "
            f"{tuple(pixels.shape[-2:])}; the checkpoint was trained at image_size={image_size}"
        )
    return pixels.float() / 255.0 - 0.5


def _fuse(h: torch.Tensor, state: torch.Tensor | None, state_dim: int) -> torch.Tensor:
    """Append the first ``state_dim`` dims of observation.state (B, S >= state_dim) to features
    (B, F) when the encoder fuses it: the proprioceptive prefix (Push-T's pusher, the Panda's
    end effector), never what follows it (the block or cube pose, which is the task's answer)."""
    if not state_dim:
        return h
    if state is None or state.shape[-1] < state_dim:
        got = None if state is None else tuple(state.shape)
        raise ValueError(f"this encoder fuses the first model.state_dim={state_dim} dims of "
                         f"observation.state; pass state (B, >= {state_dim}), got {got}")
    return torch.cat([h, state[..., :state_dim].float()], dim=-1)


def keypoint_features(keypoints: int, vectors: int) -> int:
    """Size of a keypoint encoder's features: 2-D coordinates and ``vectors`` 2-D vectors each."""
    return 2 * keypoints * (1 + vectors)


class KeypointEncoder(nn.Module):
    """CNN with a spatial-softmax keypoint bottleneck: images (B, 3, H, W) -> latents (B, D).

    Two stride-2 convs (``widths[0]``, ``widths[1]``) bring the image to a quarter of its side,
    3x3 stride-1 convs (``widths[2:]``) widen the receptive field at that resolution, a 1x1 conv
    makes ``keypoints`` heat maps, and each map's softmax-weighted mean (x, y) in [-1, 1] is one
    keypoint (Finn et al. 2016, "Deep spatial autoencoders"). The latent is a linear map of the
    2K coordinates: positions of what moves are linear in it, and so is a rigid body's
    orientation when two keypoints sit on different parts of it (the difference of their
    positions is (cos, sin) times their distance). With ``latent_dim == 2 * keypoints`` and no
    fused state the latent *is* the coordinates (x1, y1, x2, ...), with no linear map between,
    so regularisers on the latent act on the keypoints themselves.

    With ``vectors`` = V > 0 each keypoint also carries V attended 2-D vectors: a 1x1 conv makes
    2V feature maps per keypoint and its heat map averages them, (B, K, V, 2). The latent is
    then a map of the 2K coordinates followed by the 2KV vector components (the identity when
    ``latent_dim == 2K(1 + V)``, or ``2K(1 + V) + state_dim`` with fused proprioception
    appended). Coordinates say where a part is; a vector can say which way it points (a T's
    orientation as (cos, sin)), which a softmax mean over a symmetric blob cannot.
    The equivariance term (``model.loss.equivariance``) asks them to turn with the image.
    """

    def __init__(
        self,
        image_size: int = 64,
        latent_dim: int = 32,
        widths: Sequence[int] = (16, 32, 64, 64),
        state_dim: int = 0,
        keypoints: int = 16,
        vectors: int = 0,
    ) -> None:
        super().__init__()
        if vectors < 0:
            raise ValueError(f"model.keypoint_vectors={vectors} must be >= 0 (0 = coordinates only)")
        if len(widths) < 2 or image_size % 4 != 0:
            raise ValueError(f"a keypoint encoder needs >= 2 widths (got {list(widths)}) and an "
                             f"image_size divisible by 4 (got {image_size})")
        self.image_size, self.state_dim = image_size, state_dim
        self.convs = conv_stack(widths, strided=2)
        self.maps = nn.Conv2d(widths[-1], keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        side = image_size // 4
        grid = torch.linspace(-1.0, 1.0, side)
        self.register_buffer("grid_x", grid.repeat(side), persistent=False)  # (side*side,)
        self.register_buffer("grid_y", grid.repeat_interleave(side), persistent=False)
        features = keypoint_features(keypoints, vectors)
        identity = latent_dim == features + state_dim  # the latent is [coordinates, vectors, state]
        self.head = nn.Identity() if identity else nn.Linear(features + state_dim, latent_dim)
        self.num_vectors = vectors
        # built last, so an encoder without vectors initialises exactly as before they existed
        self.vector_maps = nn.Conv2d(widths[-1], keypoints * vectors * 2, 1) if vectors else None

    def parts(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (B, K, 2), (x, y) in [-1, 1] (x to the right, y down), and their attended
        vectors (B, K, V, 2) (V = 0: an empty tensor), from one pass of the convs."""
        h = self.convs(_normalised(pixels, self.image_size))  # (B, C, h, w)
        maps = self.maps(h).flatten(2)  # (B, K, h*w)
        attn = torch.softmax(maps / self.log_temperature.exp(), dim=-1)
        points = torch.stack([attn @ self.grid_x, attn @ self.grid_y], dim=-1)
        b, k = attn.shape[:2]
        if self.vector_maps is None:
            return points, points.new_zeros(b, k, 0, 2)
        feats = self.vector_maps(h).flatten(2).view(b, k, 2 * self.num_vectors, -1)  # (B, K, 2V, h*w)
        vecs = torch.einsum("bkp,bkfp->bkf", attn, feats).view(b, k, self.num_vectors, 2)
        return points, vecs

    def keypoints(self, pixels: torch.Tensor) -> torch.Tensor:
        """Keypoint coordinates (B, K, 2), (x, y) in [-1, 1] (x to the right, y down)."""
        return self.parts(pixels)[0]

    def forward(self, pixels: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """pixels: uint8 or float in [0, 255], (B, 3, H, W); state: (B, state_dim) or None."""
        points, vecs = self.parts(pixels)
        flat = torch.cat([points.flatten(1), vecs.flatten(1)], dim=-1)  # (B, 2K(1 + V))
        return self.head(_fuse(flat, state, self.state_dim))


def make_encoder(
    image_size: int, latent_dim: int, widths: Sequence[int], state_dim: int = 0, keypoints: int = 0,
    vectors: int = 0,
) -> nn.Module:
    """The level-1 encoder of ``model.*`` settings: keypoints > 0 a KeypointEncoder (with
    ``vectors`` attended vectors per keypoint), else a ConvEncoder."""
    if keypoints:
        return KeypointEncoder(image_size, latent_dim, widths, state_dim, keypoints, vectors)
    if vectors:
        raise ValueError(f"model.keypoint_vectors={vectors} needs a keypoint encoder: set "
                         "model.keypoints > 0 (e.g. 16), or model.keypoint_vectors=0")
    return ConvEncoder(image_size, latent_dim, widths, state_dim)


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


class RelativePredictor(nn.Module):
    """Translation-equivariant one-step dynamics of a keypoint latent: s_{t+1} = s_t + MLP(x_t),
    where x_t holds no absolute position.

    The latent is [coordinates (2K), vectors (2KV), fused state (P)], a keypoint encoder's with no
    linear head. The MLP sees the keypoints relative to an *anchor*: with fused state, the agent's
    place in keypoint coordinates, ``anchor_map`` (the camera's affine map (2, 3) of the fused
    state's first two dims, the agent's x, y, into image coordinates in [-1, 1], x right and y
    down: ``robots``' ``env.unwrapped.image_map()``) scaled by ``grid_scale`` onto the keypoint
    grid; without fused state, the keypoints' centroid. Its other inputs are the vectors, the
    fused state after its first two dims, and the action; the absolute coordinates and the
    anchor's own place are left out. A scene shifted in the image therefore predicts the same
    change, shifted: what is learned about a push at one place holds at every place (walls
    excepted, which only the keypoints' relations can show). On Push-T's true state this symmetry
    took learned dynamics from 72.5 % to 92.5 % of 80 push goals (same data and planner).

    The map is given, not learned: a learned affine anchor (the first version) stayed far from the
    camera's map in every Push-T run (bench/RESULTS.md, "A calibrated anchor"), so its
    "relative" inputs still mixed absolute places.
    """

    def __init__(self, keypoints: int, vectors: int, state_dim: int, action_dim: int,
                 hidden: int = 128, depth: int = 2,
                 anchor_map: Sequence[Sequence[float]] | None = None, grid_scale: float = 1.0) -> None:
        super().__init__()
        if keypoints < 1:
            raise ValueError(f"a relative predictor needs keypoints (got model.keypoints={keypoints})")
        self.coords, self.features = 2 * keypoints, keypoint_features(keypoints, vectors)
        self.anchored = state_dim >= 2
        if self.anchored:
            if anchor_map is None:
                raise ValueError(_NEEDS_MAP)
            self.register_buffer("anchor_map", grid_scale * torch.tensor(anchor_map, dtype=torch.float32))
        rest = state_dim - 2 if self.anchored else state_dim  # fused dims after the anchor's
        self.net = mlp(self.features + rest + action_dim, hidden, self.features + state_dim, depth)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """s: (..., 2K(1 + V) + P), a: (..., A) -> (..., 2K(1 + V) + P)."""
        points = s[..., : self.coords].unflatten(-1, (-1, 2))  # (..., K, 2)
        state = s[..., self.features :]
        if self.anchored:
            m = self.anchor_map
            origin, rest = state[..., :2] @ m[:, :2].T + m[:, 2], state[..., 2:]
        else:
            origin, rest = points.mean(-2), state
        relative = (points - origin.unsqueeze(-2)).flatten(-2)
        x = torch.cat([relative, s[..., self.coords : self.features], rest, a], dim=-1)
        return s + self.net(x)


_NEEDS_MAP = ("model.predictor=relative with fused state (model.state_dim >= 2) needs "
              "model.anchor_map: the camera's map of the agent's x, y into image coordinates, "
              "[[a, b, c], [d, e, f]] (x_img = a x + b y + c, y_img = d x + e y + f, both in "
              "[-1, 1], y down); print it with `python -c \"from robots import make_env; "
              "print(make_env('<env>').unwrapped.image_map().tolist())\"`")


def check_predictor(kind: str, latent_dim: int, keypoints: int, vectors: int, state_dim: int,
                    anchor_map: Sequence[Sequence[float]] | None = None) -> None:
    """Raise, naming the ``model.*`` keys, unless ``kind`` is a level-1 predictor this latent can
    have: "residual" (any latent) or "relative" (a keypoint latent without a linear head, and
    with fused state an ``anchor_map`` of 2 rows of 3 finite numbers)."""
    if kind not in ("residual", "relative"):
        raise ValueError(f"model.predictor={kind!r}; use 'residual' or 'relative'")
    size = keypoint_features(keypoints, vectors) + state_dim
    if kind == "relative" and (latent_dim != size or not keypoints):
        raise ValueError(
            f"model.predictor=relative needs a keypoint latent with no linear head: "
            f"model.latent_dim={latent_dim} must equal 2 * keypoints * (1 + keypoint_vectors) "
            f"+ state_dim = {size} with model.keypoints > 0 (got {keypoints}); or use "
            "model.predictor=residual")
    anchored = kind == "relative" and state_dim >= 2
    if anchor_map is None:
        if anchored:
            raise ValueError(_NEEDS_MAP)
        return
    if not anchored:
        raise ValueError(f"model.anchor_map is used only by model.predictor=relative with "
                         f"model.state_dim >= 2 (got predictor={kind!r}, state_dim={state_dim}); "
                         "set model.anchor_map=null")
    rows = [list(r) for r in anchor_map] if isinstance(anchor_map, (list, tuple)) else []
    if len(rows) != 2 or any(len(r) != 3 for r in rows) or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for r in rows for v in r):
        raise ValueError(f"model.anchor_map={anchor_map!r} must be 2 rows of 3 finite numbers, "
                         "[[a, b, c], [d, e, f]]")


def make_predictor(kind: str, latent_dim: int, action_dim: int, hidden: int, keypoints: int = 0,
                   vectors: int = 0, state_dim: int = 0,
                   anchor_map: Sequence[Sequence[float]] | None = None,
                   image_size: int = 64) -> nn.Module:
    """Level-1 predictor of ``model.predictor``: "residual" (:class:`ResidualPredictor`, any
    latent) or "relative" (:class:`RelativePredictor`, keypoint latents without a linear head;
    ``anchor_map`` in image coordinates is put onto the keypoint grid of an ``image_size`` image,
    see :func:`keypoint_grid_scale`)."""
    check_predictor(kind, latent_dim, keypoints, vectors, state_dim, anchor_map)
    if kind == "residual":
        return ResidualPredictor(latent_dim, action_dim, hidden)
    return RelativePredictor(keypoints, vectors, state_dim, action_dim, hidden,
                             anchor_map=anchor_map, grid_scale=keypoint_grid_scale(image_size))


def keypoint_grid_scale(image_size: int) -> float:
    """Image coordinates -> :class:`KeypointEncoder` coordinates: its softmax grid puts -1 and 1
    on the centres of the first and last of the side = image_size / 4 feature cells, so a point
    at image coordinate u (-1 and 1 at the image's edges) is at keypoint coordinate
    u * side / (side - 1)."""
    side = image_size // 4
    return side / (side - 1)


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
