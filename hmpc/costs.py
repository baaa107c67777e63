"""Cost terms for planning: pure functions from predicted latents / action sequences to (N,) costs.

Guardrails are soft constraints on the *predicted physical state* (read off level-1 latents by the
model's state probe): state bounds and forbidden boxes, plus an out-of-distribution term (the
disagreement of an ensemble of level-1 predictors). Their configuration lives in ``Guardrails``,
nested in ``CostWeights`` under ``guardrails``; ``hmpc.guardrails`` wires them to a model.

Shapes: N = candidates, H = horizon, D = latent size, A = action size, S = state size,
M = ensemble members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from hmpc.latent_dims import FUSED_STATE, check_dims, dim_weights, dims_spec, is_weight

GOAL_MODES = ("final", "sum", "mixed")


def _floats(values: Any, key: str, none: float) -> tuple[float, ...]:
    """A list of numbers (None -> ``none``, i.e. unbounded) as a float tuple."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ValueError(f"{key}={values!r} must be a list of numbers, one per entry of dims")
    return tuple(none if v is None else float(v) for v in values)


def _box(d: dict[str, Any], key: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validated {dims, low, high} of an axis-aligned box over state dims (+ ``extra`` keys)."""
    if not isinstance(d, dict):
        raise ValueError(f"{key} must be a mapping {{dims: [...], low: [...], high: [...]}}, "
                         f"got {d!r}")
    unknown = set(d) - {"dims", "low", "high", *extra}
    if unknown or "dims" not in d:
        raise ValueError(f"{key}: unknown or missing keys (got {sorted(d)}); accepted keys: "
                         f"{sorted(['dims', 'low', 'high', *extra])}, dims required")
    dims = tuple(int(i) for i in d["dims"])
    if not dims or min(dims) < 0 or len(set(dims)) != len(dims):
        raise ValueError(f"{key}.dims={list(dims)} must be distinct state indices >= 0")
    low = _floats(d.get("low", [None] * len(dims)), f"{key}.low", float("-inf"))
    high = _floats(d.get("high", [None] * len(dims)), f"{key}.high", float("inf"))
    if not len(low) == len(high) == len(dims):
        raise ValueError(f"{key}: dims, low and high need one entry each; got {len(dims)}, "
                         f"{len(low)}, {len(high)}")
    if any(lo >= hi for lo, hi in zip(low, high, strict=True)):
        raise ValueError(f"{key}: every low must be < high; got low={list(low)} high={list(high)}")
    return {"dims": dims, "low": low, "high": high}


def _margin(d: dict[str, Any], key: str) -> float:
    margin = d.get("margin", 0.0)
    if not isinstance(margin, (int, float)) or margin < 0:
        raise ValueError(f"{key}.margin={margin!r} must be a number >= 0")
    return float(margin)


@dataclass(frozen=True)
class StateBounds:
    """Keep state[dims[i]] in [low[i] + margin, high[i] - margin] (None/inf = unbounded side)."""

    dims: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    margin: float = 0.0  # planning safety margin; violations are still counted against low/high


@dataclass(frozen=True)
class Region:
    """Forbidden axis-aligned box: low[i] <= state[dims[i]] <= high[i] on every listed dim."""

    dims: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    margin: float = 0.0  # planning inflates the box by this much; violations use the box itself


@dataclass(frozen=True)
class Guardrails:
    """Guardrail weights (0 = term off) and the bounds / regions they refer to.

    ``bounds`` and ``regions`` may be given with zero weights: violations are then still measured
    (predicted per step by the controller, actual per episode by the harness) without shaping
    the plan, which is how guarded and unguarded planners are compared.
    """

    state_bounds: float = 0.0  # weight of state_bound_penalty (needs a model with a state probe)
    forbidden: float = 0.0  # weight of forbidden_region_penalty (needs a state probe)
    ood: float = 0.0  # weight of ensemble_disagreement (needs model.num_predictors > 1)
    bounds: StateBounds | None = None
    regions: tuple[Region, ...] = ()

    @classmethod
    def from_config(cls, d: dict[str, Any] | None, key: str = "weights.guardrails") -> Guardrails:
        """Build from a plain config mapping; every error names the offending ``key``."""
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} in {key}; accepted keys: "
                             f"{sorted(f.name for f in fields(cls))}")
        bounds = d.pop("bounds", None)
        if bounds is not None and not isinstance(bounds, StateBounds):
            b = _box(bounds, f"{key}.bounds", ("margin",))
            margin = _margin(bounds, f"{key}.bounds")
            if any(lo + margin >= hi - margin for lo, hi in zip(b["low"], b["high"], strict=True)):
                raise ValueError(f"{key}.bounds.margin={margin} must leave low + margin < "
                                 "high - margin on every dim")
            bounds = StateBounds(margin=margin, **b)
        regions = []
        for i, r in enumerate(d.pop("regions", None) or ()):
            if not isinstance(r, Region):
                rkey = f"{key}.regions[{i}]"
                r = Region(**_box(r, rkey, ("margin",)), margin=_margin(r, rkey))
            regions.append(r)
        regions = tuple(regions)
        weights = {}
        for k, v in d.items():
            try:
                weights[k] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{key}.{k}={v!r} must be a number (a weight, 0 = off)") from None
        return cls(bounds=bounds, regions=regions, **weights)

    def __post_init__(self) -> None:
        for name in ("state_bounds", "forbidden", "ood"):
            if getattr(self, name) < 0:
                raise ValueError(f"weights.guardrails.{name}={getattr(self, name)} must be >= 0")
        if self.state_bounds and self.bounds is None:
            raise ValueError("weights.guardrails.state_bounds > 0 needs weights.guardrails.bounds: "
                             "{dims: [0, 1], low: [...], high: [...]}")
        if self.forbidden and not self.regions:
            raise ValueError("weights.guardrails.forbidden > 0 needs weights.guardrails.regions: "
                             "[{dims: [0, 1], low: [...], high: [...]}]")

    @property
    def uses_state(self) -> bool:
        """True when a planning term reads the predicted state (the model needs a probe)."""
        return bool(self.state_bounds or self.forbidden)

    @property
    def monitored(self) -> bool:
        """True when there is something to count violations of (bounds or regions)."""
        return self.bounds is not None or bool(self.regions)

    def max_dim(self) -> int:
        """Largest state index referred to (-1 when none)."""
        boxes = [*([self.bounds] if self.bounds else []), *self.regions]
        return max((max(b.dims) for b in boxes), default=-1)


@dataclass(frozen=True)
class CostWeights:
    """Weights of the planning objective's terms; each term's value is reported per step."""

    goal: float = 1.0
    goal_mode: str = "sum"  # "sum": averaged over the horizon (reach early, stay); "final": last
    # step; "mixed": final + goal_mix * average (long horizons: "final" alone has no urgency)
    goal_mix: float = 0.2
    smoothness: float = 0.01
    action_bound: float = 1.0
    macro_prior: float = 0.01  # keeps macro codes near the region the encoder produced in training
    guardrails: Guardrails = field(default_factory=Guardrails)  # a mapping in configs
    # level-1 latent dims the goal distance compares: null = all, a list [0, 1, 5], a slice
    # "start:stop" ("0:32": leave out a fused proprioceptive suffix, e.g. Push-T's pusher), or
    # "fused_state": only the fused proprioception (model.state_dim), the planner that ignores the
    # scene, a baseline a model's object predictions must beat
    goal_dims: Any = None
    # extra weight of some level-1 dims in the goal distance: {dims: w}, dims an index or a slice
    # "a:b" as in goal_dims, w >= 0 multiplying their squared differences (e.g. {"64:66": 30}: a
    # fused 2-D state that the image latent's 64 dims would otherwise drown); null = all 1
    goal_dim_weights: Any = None
    # weight of the fused proprioceptive state (model.state_dim) in the goal distance, for
    # latents that hold it verbatim (keypoint encoders with latent_dim = 2K(1 + V) + state_dim):
    # the model-aware form of goal_dim_weights={"64:66": 30} for Push-T's preset; 1 = as the rest
    fused_state: float = 1.0
    # per (latent size, device, dtype): the checked sqrt-weight vector goal_part multiplies by
    _scales: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.goal_mode not in GOAL_MODES:
            raise ValueError(f"goal_mode={self.goal_mode!r}; use one of {GOAL_MODES}")
        if not self.goal_mix >= 0:
            raise ValueError(f"goal_mix={self.goal_mix} must be >= 0 (weight of the horizon "
                             "average in goal_mode 'mixed')")
        if not isinstance(self.guardrails, Guardrails):
            object.__setattr__(self, "guardrails", Guardrails.from_config(self.guardrails))
        object.__setattr__(self, "goal_dims", dims_spec(self.goal_dims))
        if self.goal_dim_weights is not None:
            object.__setattr__(self, "goal_dim_weights", dim_weights(self.goal_dim_weights))
        if not is_weight(self.fused_state):
            raise ValueError(f"weights.fused_state={self.fused_state!r} must be a number >= 0 "
                             "(1 = weigh the fused state like the other dims, e.g. 30)")

    def for_model(self, spec: Any) -> CostWeights:
        """These weights for a model ``spec`` (a ``WorldModelSpec``): ``fused_state`` becomes a
        ``goal_dim_weights`` entry on the dims that hold the fused state (after any given ones),
        and ``goal_dims="fused_state"`` those dims."""
        uses = [k for k, on in (("fused_state", self.fused_state != 1),
                                ("goal_dims", self.goal_dims == FUSED_STATE)) if on]
        if not uses:
            return self
        dims = spec.fused_state_dims
        if dims is None:
            given = {"fused_state": f"{self.fused_state}", "goal_dims": repr(FUSED_STATE)}
            undo = {"fused_state": "1", "goal_dims": "null"}
            raise ValueError(
                f"{' and '.join(f'weights.{k}={given[k]}' for k in uses)} need"
                f"{'s' if len(uses) == 1 else ''} a model whose level-1 latent holds "
                f"the fused state verbatim (a keypoint encoder with latent_dim = 2 * keypoints * "
                f"(1 + keypoint_vectors) + state_dim); this one has state_dim={spec.state_dim}, "
                f"keypoints={spec.keypoints}, latent_dim={spec.latent_dim}: set "
                f"{' and '.join(f'weights.{k}={undo[k]}' for k in uses)}, or pick dims "
                "by index with weights.goal_dims / goal_dim_weights")
        out = replace(self, goal_dims=dims) if self.goal_dims == FUSED_STATE else self
        if self.fused_state == 1:
            return out
        extra = ((dims, float(self.fused_state)),)
        return replace(out, goal_dim_weights=(self.goal_dim_weights or ()) + extra, fused_state=1.0)

    def goal_part(self, z: torch.Tensor) -> torch.Tensor:
        """The ``goal_dims`` of level-1 latents z (..., D) -> (..., D'), each dim scaled by the
        square root of its ``goal_dim_weights`` entry; z itself when both are null."""
        dims, size = self.goal_dims, z.shape[-1]
        if dims == FUSED_STATE:
            raise ValueError(f"weights.goal_dims={FUSED_STATE!r} is resolved by "
                             "CostWeights.for_model(model.spec); call it before planning")
        if self.goal_dim_weights is not None:
            z = z * self._scale(size, z.device, z.dtype)
        if dims is None:
            return z
        check_dims(dims, size, "goal_dims")
        return z[..., dims] if isinstance(dims, slice) else z[..., list(dims)]

    def _scale(self, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(size,) square roots of ``goal_dim_weights`` (1 elsewhere), built and checked once per
        latent size, device and dtype: goal_part runs in every optimiser iteration."""
        key = (size, device, dtype)
        if key not in self._scales:
            scale = torch.ones(size, dtype=dtype, device=device)
            for d, w in self.goal_dim_weights:
                check_dims(d, size, "goal_dim_weights")
                scale[d if isinstance(d, slice) else [d]] = w**0.5
            self._scales[key] = scale
        return self._scales[key]


def goal_distance(
    pred: torch.Tensor, goal: torch.Tensor, mode: str = "final", mix: float = 0.2
) -> torch.Tensor:
    """Squared L2 distance of predicted latents (N, H, D) to a goal latent (D,) or (N, D) -> (N,).

    "final" scores the last step; "sum" averages over the horizon, rewarding reaching it early
    (greedy: in a maze it prefers pressing on a wall near the goal to a detour); "mixed" is the
    final step plus ``mix`` times the average: where the goal is, with a little urgency.
    """
    d = (pred - goal.unsqueeze(-2)).pow(2).sum(-1) if goal.dim() == 2 else (pred - goal).pow(2).sum(-1)
    return reduce_horizon(d, mode, mix)


def reduce_horizon(d: torch.Tensor, mode: str, mix: float = 0.2) -> torch.Tensor:
    """Per-step distances (N, H) -> (N,) as ``goal_distance`` does for ``mode``."""
    if mode == "final":
        return d[:, -1]
    if mode == "sum":
        return d.mean(dim=1)
    if mode == "mixed":
        return d[:, -1] + mix * d.mean(dim=1)
    raise ValueError(f"goal mode {mode!r}; use one of {GOAL_MODES}")


def action_smoothness(actions: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared change between consecutive actions (N, H, A) -> (N,); ``prev`` (A,) is the
    action applied last, so the first planned action is also kept close to it."""
    if prev is not None:
        actions = torch.cat([prev.expand(actions.shape[0], 1, -1), actions], dim=1)
    if actions.shape[1] < 2:
        return actions.new_zeros(actions.shape[0])
    return (actions[:, 1:] - actions[:, :-1]).pow(2).sum(-1).mean(1)


def action_bound_penalty(actions: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    """Squared excess of |a| over ``limit``, summed (N, H, A) -> (N,): 0 for in-bound plans."""
    return torch.relu(actions.abs() - limit).pow(2).sum((1, 2))


def magnitude_prior(codes: torch.Tensor) -> torch.Tensor:
    """Mean squared magnitude of codes (N, H, M) -> (N,)."""
    return codes.pow(2).mean((1, 2))


# -- guardrails -------------------------------------------------------------------------------
def _select(state: torch.Tensor, dims: Sequence[int], low: Sequence[float], high: Sequence[float]):
    """state[..., dims] and low/high as tensors on its device: (..., K), (K,), (K,)."""
    lo = torch.tensor(low, dtype=state.dtype, device=state.device)
    hi = torch.tensor(high, dtype=state.dtype, device=state.device)
    return state[..., list(dims)], lo, hi


def state_bound_penalty(
    state: torch.Tensor, dims: Sequence[int], low: Sequence[float], high: Sequence[float],
    margin: float = 0.0,
) -> torch.Tensor:
    """Squared violation of [low + margin, high - margin] on ``dims``, summed over dims and the
    horizon: predicted states (N, H, S) -> (N,). 0 for a plan that stays inside."""
    x, lo, hi = _select(state, dims, low, high)
    v = torch.relu(lo + margin - x) + torch.relu(x - (hi - margin))  # (N, H, K)
    return v.pow(2).sum((1, 2))


def region_penetration(
    state: torch.Tensor, dims: Sequence[int], low: Sequence[float], high: Sequence[float],
    margin: float = 0.0,
) -> torch.Tensor:
    """Penetration depth into an axis-aligned box grown by ``margin`` on every side: distance to
    its nearest face when inside, 0 outside. state (..., S) -> (...,)."""
    x, lo, hi = _select(state, dims, low, high)
    return torch.relu(torch.minimum(x - (lo - margin), (hi + margin) - x).amin(-1))


def forbidden_region_penalty(state: torch.Tensor, regions: Sequence[Region]) -> torch.Tensor:
    """Squared penetration depth summed over boxes and the horizon: (N, H, S) -> (N,)."""
    total = state.new_zeros(state.shape[0])
    for r in regions:
        total = total + region_penetration(state, r.dims, r.low, r.high, r.margin).pow(2).sum(1)
    return total


def ensemble_disagreement(preds: torch.Tensor) -> torch.Tensor:
    """OOD score: variance across M members of predicted latents (M, N, H, D), summed over D
    (like the squared goal distance) and averaged over the horizon -> (N,). 0 when all agree."""
    if preds.dim() != 4 or preds.shape[0] < 2:
        raise ValueError(f"ensemble_disagreement needs (M>=2, N, H, D) predictions, "
                         f"got {tuple(preds.shape)}")
    return preds.var(dim=0, unbiased=False).sum(-1).mean(-1)


def guardrail_violated(state: torch.Tensor, g: Guardrails) -> torch.Tensor:
    """True where a state (..., S) is outside ``g.bounds`` (margin ignored) or inside any of
    ``g.regions`` (boundary included) -> bool (...,). All False when nothing is monitored."""
    out = torch.zeros(state.shape[:-1], dtype=torch.bool, device=state.device)
    if g.bounds is not None:
        x, lo, hi = _select(state, g.bounds.dims, g.bounds.low, g.bounds.high)
        out |= ((x < lo) | (x > hi)).any(-1)
    for r in g.regions:
        x, lo, hi = _select(state, r.dims, r.low, r.high)
        out |= ((x >= lo) & (x <= hi)).all(-1)
    return out
