"""Selections of level-1 latent dims in planner configs (``weights.goal_dims``,
``weights.goal_dim_weights``): parsed from YAML values, checked against a latent's size, with
errors that name the key and say what to write instead."""

from __future__ import annotations

from typing import Any

FUSED_STATE = "fused_state"  # goal_dims: the dims that hold the model's fused state (its spec says which)


def check_dims(dims: slice | tuple[int, ...] | int, size: int, key: str) -> None:
    """Raise naming ``weights.<key>`` when ``dims`` picks nothing or indexes outside ``size``."""
    if isinstance(dims, slice):
        if len(range(size)[dims]) == 0:
            raise ValueError(f"weights.{key}: {slice_text(dims)!r} picks no dim of the "
                             f"level-1 latent of {size} dims; e.g. '0:{size - 1}'")  # fmt: skip
        return
    bad = [i for i in (dims if isinstance(dims, tuple) else (dims,)) if not -size <= i < size]
    if bad:
        raise ValueError(f"weights.{key}: {bad} outside the level-1 latent of {size} dims; use "
                         f"indices in [0, {size})")  # fmt: skip


def dim_weights(value: Any) -> tuple[tuple[slice | int, float], ...]:
    """``goal_dim_weights`` from a config: {index or "a:b": weight >= 0} -> ((dims, w), ...)."""
    hint = "use a mapping like {'64:66': 30.0} or {3: 2.0} (dims: an index or a slice 'a:b')"
    if isinstance(value, tuple):
        return value
    if not hasattr(value, "items") or not value:
        raise ValueError(f"weights.goal_dim_weights={value!r}; {hint}")
    out = []
    for key, w in value.items():
        if isinstance(key, str) and ":" in key:
            dims = dims_spec(key, "goal_dim_weights key")
        elif isinstance(key, int) or (isinstance(key, str) and key.lstrip("-").isdigit()):
            dims = int(key)
        else:
            raise ValueError(f"weights.goal_dim_weights key {key!r}; {hint}")
        if not is_weight(w):
            raise ValueError(f"weights.goal_dim_weights[{key!r}]={w!r} must be a number >= 0")
        out.append((dims, float(w)))
    return tuple(out)


def is_weight(w: Any) -> bool:
    """A config weight: a real number >= 0 (not a bool, not NaN)."""
    return not isinstance(w, bool) and isinstance(w, int | float) and w >= 0


def slice_text(dims: slice) -> str:
    return ":".join("" if b is None else str(b) for b in (dims.start, dims.stop))


def dims_spec(value: Any, key: str = "goal_dims") -> slice | tuple[int, ...] | str | None:
    """``goal_dims`` from a config: None, a list of ints -> tuple, "a:b" -> slice(a, b), or
    "fused_state" (kept as is: the model's spec says which dims, see ``CostWeights.for_model``)."""
    hint = "use null (all dims), a list of latent indices like [0, 1, 5], a slice like '0:32'"
    if key == "goal_dims":
        hint += f", or '{FUSED_STATE}' (the dims holding the fused proprioception)"
        if isinstance(value, str) and value == FUSED_STATE:
            return value
    if value is None or isinstance(value, slice):
        return value
    if isinstance(value, str):
        parts = value.split(":")
        try:
            if len(parts) != 2:
                raise ValueError(value)
            return slice(*(int(p) if p.strip() else None for p in parts))
        except ValueError:
            raise ValueError(f"weights.{key}={value!r} is not a slice; {hint}") from None
    try:
        dims = tuple(value)
    except TypeError:
        raise ValueError(f"weights.{key}={value!r}; {hint}") from None
    if not dims or not all(isinstance(i, int) and not isinstance(i, bool) for i in dims):
        raise ValueError(f"weights.{key}={value!r}; {hint}")
    return dims
