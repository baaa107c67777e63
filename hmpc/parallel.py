"""Ray plumbing shared by collection and evaluation: safe init, and an ordered parallel map.

``workers=0`` runs everything in this process (tests, debugging); otherwise each worker is a Ray
actor that builds its own env (and PyBullet client) inside the actor, once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a local Ray instance (loopback only, no dashboard) or connect to ``address``.

    Connecting to an existing cluster is an explicit choice: pass ``address`` (``auto`` or
    ``ray://host:10001``). Local instances never listen beyond 127.0.0.1.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
        return
    # keep a local instance on loopback and quiet about usage stats
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address="127.0.0.1", **kwargs)


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
) -> Iterator[R]:
    """Yield ``run(state, item)`` for each item, in completion order, with ``state = setup()``
    built once per worker. ``setup`` and ``run`` must be picklable (module-level functions or
    ``functools.partial`` of them). Actors restart once and retry their task if a process dies.
    """
    items = list(items)
    if workers <= 0:
        state = setup()
        for item in items:
            yield run(state, item)
        return
    import ray
    from ray.util import ActorPool

    init_ray(address, num_cpus=None if address else max(workers, 1))
    actor_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=1, max_task_retries=1)(
        _Worker
    )
    actors = [actor_cls.remote(setup, run) for _ in range(min(workers, len(items)) or 1)]
    pool = ActorPool(actors)
    try:
        yield from pool.map_unordered(lambda a, item: a.run.remote(item), items)
    finally:
        for a in actors:
            ray.kill(a)
