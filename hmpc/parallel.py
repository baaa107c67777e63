"""Ray plumbing shared by collection and evaluation: safe init, and a fault-tolerant parallel map.

``workers=0`` runs everything in this process (tests, debugging); otherwise each worker is a Ray
actor that builds its own env (and PyBullet client) inside the actor, once. A worker process that
dies is replaced and its item retried up to ``retries`` times; after that the item is reported
through ``on_failure`` (or the error is raised when no ``on_failure`` is given).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


# Ray 2.60 turns a 127.0.0.1 node address into the machine's reachable IP, so its servers
# listen on the network, unless ray_constants.ENABLE_RAY_CLUSTER is False (read from this
# variable when ray is imported); then the node IP is loopback and every server binds 127.0.0.1.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a private local Ray instance (dashboard off, 127.0.0.1 only) or connect to ``address``.

    Connecting to an existing cluster is an explicit choice: pass ``address`` (``auto`` or
    ``ray://host:10001``) and protect that cluster with Ray's token authentication
    (``RAY_AUTH_MODE=token``; see SECURITY.md). A local instance listens on loopback only
    (set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` to opt out) and Ray's token authentication,
    on by default for local instances since Ray 2.59, stays on.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a private instance phones no one
    _loopback_only()
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)


def _loopback_only() -> None:
    """Make the next local instance bind 127.0.0.1 (unless the user set LOOPBACK_ENV).

    The variable reaches Ray's child processes; the module constant covers a driver that had
    imported ray before the variable was set.
    """
    os.environ.setdefault(LOOPBACK_ENV, "0")
    from ray._private import ray_constants

    if hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        ray_constants.ENABLE_RAY_CLUSTER = os.environ[LOOPBACK_ENV].lower() in ("1", "true")


class _Worker:
    """Generic actor body: ``setup()`` builds heavy state once, ``run(item)`` processes one item."""

    def __init__(self, setup: Callable[[], Any], run: Callable[[Any, Any], Any]) -> None:
        self.state = setup()
        self.fn = run

    def run(self, item: Any) -> Any:
        return self.fn(self.state, item)


def parallel_map(
    setup: Callable[[], Any],
    run: Callable[[Any, T], R],
    items: Iterable[T],
    workers: int,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    address: str | None = None,
    retries: int = 2,
    on_failure: Callable[[T, str], R] | None = None,
) -> Iterator[R]:
    """Yield ``run(state, item)`` for each item, in completion order, with ``state = setup()``
    built once per worker. ``setup`` and ``run`` must be picklable (module-level functions or
    ``functools.partial`` of them).
    """
    items = list(items)
    if workers <= 0:
        state = setup()
        for item in items:
            yield run(state, item)
        return
    yield from _ray_map(setup, run, items, workers, num_cpus, num_gpus, address, retries, on_failure)


def _ray_map(setup, run, items, workers, num_cpus, num_gpus, address, retries, on_failure):
    import ray
    from ray.exceptions import RayActorError

    init_ray(address, num_cpus=None if address else max(workers, 1))
    actor_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)(_Worker)
    setup_ref, run_ref = ray.put(setup), ray.put(run)  # shipped once, shared by replacements
    idle = [actor_cls.remote(setup_ref, run_ref) for _ in range(min(workers, len(items)) or 1)]
    queue = deque(enumerate(items))
    attempts = [0] * len(items)
    inflight: dict[Any, tuple[int, Any]] = {}  # future -> (item index, actor)
    try:
        while queue or inflight:
            while idle and queue:  # one item in flight per actor: a dead actor loses one item
                actor, (i, item) = idle.pop(), queue.popleft()
                inflight[actor.run.remote(item)] = (i, actor)
            (future,), _ = ray.wait(list(inflight), num_returns=1)
            i, actor = inflight.pop(future)
            try:
                result = ray.get(future)
            except RayActorError as e:  # the worker process died: replace it, retry the item
                if e.actor_init_failed:  # setup() raised: deterministic, retrying cannot help
                    raise RuntimeError(f"worker setup failed: {e}") from e
                ray.kill(actor)
                idle.append(actor_cls.remote(setup_ref, run_ref))
                attempts[i] += 1
                if attempts[i] <= retries:
                    queue.appendleft((i, items[i]))
                    continue
                reason = f"worker died {attempts[i]} times on this item; last error: {e}"
                if on_failure is None:
                    raise RuntimeError(reason) from e
                result = on_failure(items[i], reason)
            else:
                idle.append(actor)
            yield result
    finally:
        for actor in [*idle, *(a for _, a in inflight.values())]:
            ray.kill(actor)
