"""Guards for untrusted inputs: config ``_target_`` entries and weight files.

hmpc builds its objects from typed specs (see ``hmpc.cli.common``); it never calls
``hydra.utils.instantiate`` on a config today. A config is still untrusted data (it may come
with a downloaded checkpoint or be copied from somewhere), so:

* :func:`check_config` refuses any ``_target_`` anywhere in a config unless it is a function or
  class *defined* in the project's own packages (``hmpc``, ``robots``, ``skills``) at exactly that
  dotted path, or is named verbatim in an explicit allowlist. The check looks at the string first;
  only project modules are ever imported to resolve it, and nothing is called.
  ``os.system``, ``builtins.eval``, ``subprocess.Popen`` and aliases such as
  ``logging.os.system`` or ``hmpc.parallel.os.system`` are all refused.
* :func:`safe_instantiate` is the only sanctioned way to instantiate a config node.
* :func:`check_safetensors_file` tells a safetensors file from a pickle (``torch.save``) before
  anything parses it, so the error says what the file is and what to do.

The allowlist comes from the caller (``allow=``) or, for the command-line tools, from the
environment variable ``HMPC_ALLOWED_TARGETS`` (comma-separated exact dotted paths): the person
running the command decides, never the config file.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

PROJECT_PACKAGES = ("hmpc", "robots", "skills")
ALLOW_ENV = "HMPC_ALLOWED_TARGETS"
TARGET_KEY = "_target_"
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2; zip (torch.save since 1.6)


class UnsafeInputError(ValueError):
    """An input (config, weight file) that hmpc refuses to act on; the message says why."""


def allowed_targets_from_env() -> tuple[str, ...]:
    """Exact dotted paths the user allowed via ``HMPC_ALLOWED_TARGETS`` (comma-separated)."""
    raw = os.environ.get(ALLOW_ENV, "")
    return tuple(t.strip() for t in raw.split(",") if t.strip())


def find_targets(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(key path, raw value)`` of every ``_target_`` in a config tree.

    ``node`` may be an OmegaConf container or plain dicts/lists. Interpolations are *not*
    resolved: ``_target_: ${oc.env:X}`` is reported as the literal string (and then refused).
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key == TARGET_KEY:
                yield path, value
            else:
                yield from find_targets(value, path)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from find_targets(value, f"{where}[{i}]")


def check_target(target: Any, allow: Iterable[str] = (), where: str = TARGET_KEY) -> str:
    """Return ``target`` if it may be instantiated, else raise :class:`UnsafeInputError`.

    Allowed: a literal dotted path that is in ``allow`` verbatim, or that names a class or
    function defined in a project package at exactly that path (``obj.__module__ + "." +
    obj.__qualname__ == target``), so re-exports and module aliases are refused.
    """
    allow = tuple(allow)
    fix = (f"hmpc only instantiates classes and functions defined in {list(PROJECT_PACKAGES)}; "
           f"if you wrote this config and trust the target, allow it explicitly with "
           f"{ALLOW_ENV}=<dotted.path>")
    if not isinstance(target, str) or not _DOTTED.match(target):
        raise UnsafeInputError(
            f"{where}={target!r} refused: a _target_ must be a literal dotted path "
            f"(no interpolation, no spaces); {fix}"
        )
    if target in allow:
        return target
    if target.split(".")[0] not in PROJECT_PACKAGES:
        raise UnsafeInputError(f"{where}={target!r} refused: not a project package; {fix}")
    obj = _resolve_in_project(target, where, fix)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        raise UnsafeInputError(f"{where}={target!r} refused: not a class or function; {fix}")
    canonical = f"{obj.__module__}.{obj.__qualname__}"
    if canonical != target:
        where_defined = (f"it is defined as {canonical!r}"
                         if obj.__module__.split(".")[0] in PROJECT_PACKAGES
                         else f"it is an alias of {canonical!r}, outside the project")
        raise UnsafeInputError(f"{where}={target!r} refused: {where_defined}; {fix}")
    return target


def _resolve_in_project(target: str, where: str, fix: str) -> Any:
    """Walk ``target`` from its (project) top package: import only project submodules, read
    only public attributes, call nothing. Any module met on the way must be a project one."""
    parts = target.split(".")
    obj: Any = importlib.import_module(parts[0])
    name = parts[0]
    for part in parts[1:]:
        if part.startswith("_"):
            raise UnsafeInputError(f"{where}={target!r} refused: private name {part!r}; {fix}")
        sub = f"{name}.{part}"
        if isinstance(obj, ModuleType) and hasattr(obj, "__path__") and _has_submodule(sub):
            obj = importlib.import_module(sub)
        elif hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            raise UnsafeInputError(f"{where}={target!r} refused: {name!r} has no {part!r}; {fix}")
        name = sub
        if isinstance(obj, ModuleType) and obj.__name__.split(".")[0] not in PROJECT_PACKAGES:
            raise UnsafeInputError(
                f"{where}={target!r} refused: {name!r} is the module {obj.__name__!r}, "
                f"outside the project; {fix}"
            )
    return obj


def _has_submodule(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_config(node: Any, allow: Iterable[str] | None = None, source: str = "config") -> None:
    """Refuse a config holding any ``_target_`` that :func:`check_target` would refuse.

    ``allow=None`` takes the allowlist from ``HMPC_ALLOWED_TARGETS``.
    """
    allowed = allowed_targets_from_env() if allow is None else tuple(allow)
    for path, value in find_targets(node):
        check_target(value, allowed, where=f"{source}: {path}")


def safe_instantiate(node: Any, allow: Iterable[str] = (), **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` after every ``_target_`` in ``node`` (and in
    ``kwargs``) passed :func:`check_target`; nothing is instantiated when any is refused."""
    from hydra.utils import instantiate

    allowed = tuple(allow)
    check_config(node, allowed, source="safe_instantiate")
    check_config(kwargs, allowed, source="safe_instantiate kwargs")
    return instantiate(node, **kwargs)


def check_safetensors_file(path: str | Path) -> None:
    """Raise :class:`UnsafeInputError` unless ``path`` starts like a safetensors file.

    A safetensors file is an 8-byte little-endian header length N, then N bytes of JSON
    object, then raw tensor bytes. Only the header is read; pickles are never parsed.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UnsafeInputError(
                f"{path} is not a safetensors file ({size} bytes: empty or truncated); "
                f"re-copy or re-train the checkpoint"
            )
        (n,) = struct.unpack("<Q", head)
        header = f.read(n) if 2 <= n <= size - 8 else b""
    try:
        if isinstance(json.loads(header.decode("utf-8")), dict):
            return
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass
    if head.startswith(_PICKLE_MAGIC):
        raise UnsafeInputError(
            f"{path} is a pickle / torch.save file, not safetensors; hmpc never unpickles "
            f"weights (unpickling runs code). If you trust the file, convert it yourself with "
            f"torch.load(..., weights_only=True) and safetensors.torch.save_file"
        )
    raise UnsafeInputError(
        f"{path} is not a safetensors file (bad header: first bytes {head!r}); "
        f"hmpc checkpoints hold model.safetensors written by hmpc-train"
    )
