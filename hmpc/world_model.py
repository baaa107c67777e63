"""Multi-level latent world model (H-JEPA): verbs only (encode, predict, rollout), no losses.

Level 1 works at the env's time step with real actions. Level l >= 2 sees every ``k``-th state of
level l-1 through a projector (its own, more abstract space) and acts through *macro-actions*:
latent codes of the chunk of real actions that spans one of its steps.

Optional heads on level 1: a VICReg expander (``expand``, used by the training objective only),
an ensemble of ``num_predictors`` predictors (member 0 is the one planners roll out; the others
exist only to measure their disagreement, an out-of-distribution signal) and a state probe
(``decode_state``) that reads the physical state off a latent. The probe is trained on detached
latents, so it never shapes the representation: the JEPA stays video-only.

Shapes: B = batch, D_l = latent size of level l, A = real action size, M_l = macro code size,
S = probe size (``probe_dim``, the dataset's observation.state size), M = ensemble members.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from hmpc.agent_mask import AgentMask
from hmpc.models import (
    InverseDynamics,
    LatentPosterior,
    MacroActionEncoder,
    ResidualPredictor,
    check_predictor,
    keypoint_features,
    make_encoder,
    make_predictor,
    mlp,
)
from hmpc.runtime import seeded


@dataclass(frozen=True)
class LevelSpec:
    """One abstract level (l >= 2): ``k`` steps of the level below per step of this one."""

    latent_dim: int = 16
    k: int = 4
    macro_dim: int = 4
    hidden: int = 128


@dataclass(frozen=True)
class WorldModelSpec:
    """Everything needed to rebuild a world model; stored as JSON next to its weights."""

    image_size: int = 64
    action_dim: int = 2
    state_dim: int = 0  # > 0 fuses the first state_dim dims of observation.state (proprioception)
    latent_dim: int = 32
    widths: tuple[int, ...] = (16, 32, 64, 64)
    hidden: int = 128
    levels: tuple[LevelSpec, ...] = field(default_factory=lambda: (LevelSpec(),))
    latent_var_dim: int = 0  # > 0 adds a latent variable z (what actions do not determine) to level 1
    probe_dim: int = 0  # > 0: state probe head level-1 latent -> observation.state (S = probe_dim)
    probe_hidden: int = 0  # 0: linear probe; > 0: an MLP with one hidden layer of this width
    num_predictors: int = 1  # level-1 predictor ensemble size; > 1 enables the OOD guardrail
    expander_dim: int = 0  # > 0: level-1 covariance on an MLP expander this wide (variance on both)
    keypoints: int = 0  # > 0: a spatial-softmax keypoint encoder with this many keypoints
    keypoint_vectors: int = 0  # > 0: attended 2-D vectors per keypoint, in the latent after the coordinates
    predictor: str = "residual"  # level 1: "residual" MLP, or "relative" (keypoints seen relative to the agent)
    # predictor=relative with fused state: the camera's affine map (2 rows of 3) of the agent's
    # x, y into image coordinates in [-1, 1] (x right, y down): env.unwrapped.image_map()
    anchor_map: tuple[tuple[float, ...], ...] | None = None
    # paint the agent's disc out of the images before encoding, at the fused state's first two
    # dims (world x, y): hmpc.agent_mask.AgentMask (a mapping in configs and JSON); needs state_dim >= 2
    agent_mask: AgentMask | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent_mask", AgentMask.from_value(self.agent_mask))
        if self.agent_mask is not None and self.state_dim < 2:
            raise ValueError(f"model.agent_mask needs the agent's x, y fused: model.state_dim >= 2 "
                             f"(got {self.state_dim}); set model.state_dim=2 or model.agent_mask=null")
        if self.num_predictors < 1:
            raise ValueError(f"model.num_predictors={self.num_predictors} must be >= 1 "
                             "(1 = a single level-1 predictor, e.g. 5 for an ensemble)")
        if self.expander_dim < 0:
            raise ValueError(f"model.expander_dim={self.expander_dim} must be >= 0 "
                             "(0 = VICReg on the latent itself, e.g. 512 for an expander head)")
        if self.keypoints < 0:
            raise ValueError(f"model.keypoints={self.keypoints} must be >= 0 (0 = the flat CNN "
                             "encoder, e.g. 16 for a spatial-softmax keypoint encoder)")
        if self.keypoint_vectors < 0 or (self.keypoint_vectors and not self.keypoints):
            raise ValueError(f"model.keypoint_vectors={self.keypoint_vectors} must be >= 0 and needs "
                             f"model.keypoints > 0 (got {self.keypoints}); e.g. keypoints=16 "
                             "keypoint_vectors=1, or keypoint_vectors=0")
        check_predictor(self.predictor, self.latent_dim, self.keypoints, self.keypoint_vectors,
                        self.state_dim, self.anchor_map)
        if self.anchor_map is not None:  # JSON and configs give lists: keep it hashable and exact
            object.__setattr__(self, "anchor_map",
                               tuple(tuple(float(v) for v in row) for row in self.anchor_map))
        if self.probe_dim < 0 or self.probe_hidden < 0:
            raise ValueError(f"model.probe_dim={self.probe_dim} and model.probe_hidden="
                             f"{self.probe_hidden} must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WorldModelSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown world-model keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        d["widths"] = tuple(d.get("widths", cls.widths))
        d["levels"] = tuple(LevelSpec(**lv) for lv in d.get("levels", ()))
        return cls(**d)

    @property
    def num_levels(self) -> int:
        return 1 + len(self.levels)

    def span(self, level: int) -> int:
        """Number of real env steps covered by one step of ``level`` (1-based)."""
        return math.prod(lv.k for lv in self.levels[: level - 1])

    @property
    def fused_state_dims(self) -> slice | None:
        """Level-1 latent dims that hold observation.state[:state_dim] verbatim (the last ones of
        a keypoint latent without a linear head), or None: no fused state, or a linear head mixes it."""
        features = keypoint_features(self.keypoints, self.keypoint_vectors)
        if not (self.state_dim and self.keypoints and self.latent_dim == features + self.state_dim):
            return None
        return slice(features, self.latent_dim)

    def latent_size(self, level: int) -> int:
        return self.latent_dim if level == 1 else self.levels[level - 2].latent_dim

    def action_size(self, level: int) -> int:
        """Size of what ``level``'s predictor takes: real actions at level 1, macro codes above."""
        return self.action_dim if level == 1 else self.levels[level - 2].macro_dim


@dataclass(frozen=True)
class MacroSupport:
    """Region of realisable macro codes of one level (see ``WorldModel.macro_support``): the box
    [low, high] (M,) intersected with the ball of ``radius`` around ``center`` (M,)."""

    center: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    radius: float

    def project(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (..., M) moved into the region: clamped to the box, then pulled radially onto the
        ball where they lie outside it. Differentiable; identity inside the region."""
        x = torch.maximum(torch.minimum(codes, self.high), self.low)
        offset = x - self.center
        norm = offset.norm(dim=-1, keepdim=True)
        shrink = torch.clamp(self.radius / norm.clamp_min(1e-12), max=1.0)
        return self.center + offset * shrink


class AbstractLevel(nn.Module):
    """Projector from the level below, macro-action encoder, predictor and macro inverse model."""

    def __init__(self, below_dim: int, chunk_dim: int, spec: LevelSpec) -> None:
        super().__init__()
        self.project = mlp(below_dim, spec.hidden, spec.latent_dim, depth=1)
        self.macro = MacroActionEncoder(chunk_dim, spec.macro_dim, spec.hidden)
        self.predictor = ResidualPredictor(spec.latent_dim, spec.macro_dim, spec.hidden)
        self.inverse = InverseDynamics(spec.latent_dim, spec.macro_dim, spec.hidden)


class WorldModel(nn.Module):
    """Encoder + level-1 predictor + any number of abstract levels, batched over candidates."""

    def __init__(self, spec: WorldModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = make_encoder(
            spec.image_size, spec.latent_dim, spec.widths, spec.state_dim, spec.keypoints,
            spec.keypoint_vectors,
        )
        z_dim = spec.latent_var_dim
        self.predictor = self._level1_predictor()
        self.inverse = InverseDynamics(spec.latent_dim, spec.action_dim, spec.hidden)
        # posterior q(z | s_t, s_t+1), deterministic and tanh-bounded; absent when z_dim == 0
        self.posterior = LatentPosterior(spec.latent_dim, z_dim, spec.hidden) if z_dim else None
        below = spec.latent_dim
        abstract = []
        for i, lv in enumerate(spec.levels):
            chunk = spec.span(i + 2) * spec.action_dim
            abstract.append(AbstractLevel(below, chunk, lv))
            below = lv.latent_dim
        self.abstract = nn.ModuleList(abstract)
        # built last, so a model without them initialises exactly as before they existed
        self.ensemble = nn.ModuleList(  # members 1..M-1; member 0 is self.predictor
            self._level1_predictor() for _ in range(spec.num_predictors - 1)
        )
        self.probe = None
        if spec.probe_dim:
            d, h, out = spec.latent_dim, spec.probe_hidden, spec.probe_dim
            self.probe = nn.Linear(d, out) if h == 0 else mlp(d, h, out, depth=1)
        e = spec.expander_dim
        self.expander = mlp(spec.latent_dim, e, e, depth=2) if e else None

    def _level1_predictor(self) -> nn.Module:
        s = self.spec
        return make_predictor(s.predictor, s.latent_dim, s.action_dim + s.latent_var_dim, s.hidden,
                              s.keypoints, s.keypoint_vectors, s.state_dim, s.anchor_map,
                              s.image_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- encode -------------------------------------------------------------------------------
    def visible(self, pixels: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """What the encoder sees of uint8 images (B, 3, H, W): with ``spec.agent_mask``, the agent
        painted out at ``state[:, :2]`` (B, >= 2; required then); else the images themselves."""
        mask = self.spec.agent_mask
        if mask is None:
            return pixels
        if state is None:
            raise ValueError("model.agent_mask paints the agent out at the fused state: pass "
                             "observation.state with the images")
        return mask(pixels, state[:, :2])

    def encode(self, pixels: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Level-1 latent of images. pixels: uint8 (B, 3, H, W) -> (B, D_1)."""
        return self.encoder(self.visible(pixels, state), state)

    def encode_window(self, pixels: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Level-1 latents of every frame of a window: pixels uint8 (B, L, 3, H, W) -> (B, L, D_1).

        ``state`` (B, L, d) is used only when the encoder fuses proprioception.
        """
        b, length = pixels.shape[:2]
        fused = state.flatten(0, 1) if state is not None and self.spec.state_dim else None
        return self.encode(pixels.flatten(0, 1), fused).view(b, length, -1)

    def project(self, s1: torch.Tensor, level: int) -> torch.Tensor:
        """Map level-1 latents (..., D_1) up to ``level``'s space (..., D_level)."""
        self._check_level(level)
        s = s1
        for lv in self.abstract[: level - 1]:
            s = lv.project(s)
        return s

    def project_from(self, s: torch.Tensor, from_level: int, to_level: int) -> torch.Tensor:
        """Map latents of ``from_level`` (..., D_from) up to ``to_level`` >= from_level."""
        for lv in self.abstract[from_level - 1 : to_level - 1]:
            s = lv.project(s)
        return s

    def encode_macro(self, chunk: torch.Tensor, level: int) -> torch.Tensor:
        """Macro code of a real-action chunk (..., span(level) * A) -> (..., M_level)."""
        self._check_level(level, abstract=True)
        return self.abstract[level - 2].macro(chunk)

    def macro_codes(self, action: torch.Tensor, level: int) -> torch.Tensor:
        """Macro codes of consecutive real-action chunks: (B, T, A) -> (B, T / span, M_level)."""
        b, t, a = action.shape
        span = self.spec.span(level)
        if t % span:
            raise ValueError(f"{t} actions do not split into level-{level} chunks of {span}")
        return self.encode_macro(action.reshape(b, t // span, span * a), level)

    @torch.no_grad()
    def macro_support(self, level: int, samples: int = 4096, seed: int = 0) -> MacroSupport:
        """Where level ``level``'s macro codes can be: the image of the action box [-1, 1]^(span*A)
        under the macro encoder, estimated from ``samples`` chunks (box vertices, constant
        chunks and uniform ones; seeded, the caller's RNG untouched).

        Planners must stay inside it: a code no chunk of real actions produces has never been
        seen by the predictor, and level 1 cannot carry it out. tanh bounds codes to [-1, 1]^M,
        but the image is usually much smaller (a disc of radius ~0.9 for a 2-D code of 2-D
        actions), and a box planner's favourite corners lie outside it, where the predictor
        extrapolates through walls.
        """
        self._check_level(level, abstract=True)
        width = self.spec.span(level) * self.spec.action_dim
        gen = torch.Generator().manual_seed(seed)
        third = max(1, samples // 3)
        vertices = torch.randint(0, 2, (third, width), generator=gen).float() * 2 - 1
        direction = torch.rand(third, self.spec.action_dim, generator=gen) * 2 - 1
        direction = direction / direction.abs().amax(-1, keepdim=True).clamp_min(1e-6)
        constant = direction.repeat(1, self.spec.span(level))  # one action held for the chunk
        uniform = torch.rand(third, width, generator=gen) * 2 - 1
        chunks = torch.cat([vertices, constant, uniform, torch.zeros(1, width)]).to(self.device)
        codes = self.encode_macro(chunks, level)  # (n, M); the last row is the zero chunk's code
        center = codes[-1]
        return MacroSupport(
            center=center, low=codes.amin(0), high=codes.amax(0),
            radius=float((codes - center).norm(dim=-1).max()),
        )

    # -- predict ------------------------------------------------------------------------------
    def predict(
        self, s: torch.Tensor, a: torch.Tensor, level: int = 1, z: torch.Tensor | None = None,
        member: int = 0,
    ) -> torch.Tensor:
        """One step of ``level``: s (..., D_l), a (..., A_l), z (..., Z) or None -> (..., D_l).

        ``z`` is the level-1 latent variable (``spec.latent_var_dim`` > 0); None means zeros,
        the prior mean, which is what a planner that ignores z uses. Levels >= 2 take no z.
        ``member`` picks the level-1 ensemble member (0, the default, is what planners use).
        """
        self._check_level(level)
        if level > 1:
            if z is not None or member:
                raise ValueError(f"level {level} takes no latent variable z and has one "
                                 "predictor; pass z=None, member=0")
            return self.abstract[level - 2].predictor(s, a)
        if not 0 <= member < self.spec.num_predictors:
            raise ValueError(f"member {member} out of range: model.num_predictors="
                             f"{self.spec.num_predictors}")
        return self._members[member](s, self._with_z(a, z))

    def predict_members(
        self, s: torch.Tensor, a: torch.Tensor, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One level-1 step by every ensemble member: s (..., D_1), a (..., A) -> (M, ..., D_1)."""
        a = self._with_z(a, z)
        return torch.stack([m(s, a) for m in self._members])

    @property
    def _members(self) -> list[nn.Module]:
        return [self.predictor, *self.ensemble]

    def decode_state(self, s1: torch.Tensor) -> torch.Tensor:
        """State probe: level-1 latents (..., D_1) -> predicted observation.state (..., S)."""
        if self.probe is None:
            raise ValueError("this world model has no state probe head (model.probe_dim=0); "
                             "retrain with model.loss.state_probe=1.0 to get one")
        return self.probe(s1)

    def expand(self, s1: torch.Tensor) -> torch.Tensor:
        """VICReg expander: level-1 latents (..., D_1) -> (..., E), E = ``expander_dim``."""
        if self.expander is None:
            raise ValueError("this world model has no expander head (model.expander_dim=0)")
        return self.expander(s1)

    def _with_z(self, a: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Level-1 predictor input: actions (..., A) with z (or zeros) appended -> (..., A + Z)."""
        z_dim = self.spec.latent_var_dim
        if z_dim:
            z = a.new_zeros(*a.shape[:-1], z_dim) if z is None else z.expand(*a.shape[:-1], z_dim)
            return torch.cat([a, z], dim=-1)
        if z is not None:
            raise ValueError("this model has latent_var_dim=0; pass z=None or retrain with "
                             "model.latent_var_dim > 0")
        return a

    def rollout(
        self, s0: torch.Tensor, actions: torch.Tensor, level: int = 1, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Open-loop rollout. s0: (B, D_l), actions: (B, H, A_l), z: (B, H, Z) or None (zeros)
        -> predicted (B, H, D_l).

        Entry h is the latent after applying actions[:, : h + 1]. Level 1 rolls out ensemble
        member 0 (planners use one consistent model; the others only measure disagreement).
        """
        if s0.shape[0] != actions.shape[0] and s0.shape[0] == 1:
            s0 = s0.expand(actions.shape[0], -1)
        out = []
        s = s0
        for t in range(actions.shape[1]):  # loop over time only; batched over candidates
            # z only when given: stand-in models with predict(s, a, level) can borrow this method
            if z is None:
                s = self.predict(s, actions[:, t], level)
            else:
                s = self.predict(s, actions[:, t], level, z[:, t])
            out.append(s)
        return torch.stack(out, dim=1)

    def infer_latent(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        """Posterior level-1 latent variable from (s_t, s_t+1): (..., D_1) x2 -> (..., Z)."""
        if self.posterior is None:
            raise ValueError("this model has latent_var_dim=0: it has no latent variable")
        return self.posterior(s, s_next)

    def infer_action(self, s: torch.Tensor, s_next: torch.Tensor, level: int = 1) -> torch.Tensor:
        """Inverse dynamics: the action (level 1) or macro code (level >= 2) from s to s_next."""
        self._check_level(level)
        if level == 1:
            return self.inverse(s, s_next)
        return self.abstract[level - 2].inverse(s, s_next)

    def _check_level(self, level: int, abstract: bool = False) -> None:
        lo = 2 if abstract else 1
        if not lo <= level <= self.spec.num_levels:
            raise ValueError(f"level {level} out of range [{lo}, {self.spec.num_levels}] for this world model")


def build_world_model(spec: WorldModelSpec, seed: int, device: torch.device | str = "cpu") -> WorldModel:
    """Construct with seeded initialisation without touching the caller's global RNG state."""
    with seeded(seed):
        model = WorldModel(spec)
    return model.to(device)
