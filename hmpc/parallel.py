"""Ray plumbing shared by collection and evaluation: safe init, a worker pool, a parallel map.

``workers=0`` runs everything in this process (tests, debugging); otherwise each worker is a Ray
actor that builds its own env (and PyBullet client) inside the actor, once.

- :func:`parallel_map`: one function over items. A worker process that dies is replaced and its
  item retried up to ``retries`` times; after that the item is reported through ``on_failure``
  (or the error is raised when no ``on_failure`` is given).
- :class:`ActorPool` / :class:`LocalPool` (:func:`make_pool`): several named functions, tasks
  sent to chosen worker slots, results kept in Ray's object store until a later task needs them
  (collection streams episodes into per-batch video encoders this way).
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


# Ray 2.60 turns a 127.0.0.1 node address into the machine's reachable IP, so its servers
# listen on the network, unless ray_constants.ENABLE_RAY_CLUSTER is False (read from this
# variable when ray is imported); then the node IP is loopback and every server binds 127.0.0.1.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

# Seconds an actor may take to run setup() (seconds in practice); Ray once leased a process that
# never ran the constructor (cf. ray-project/ray#45822), and the pool waited on it for ever.
START_TIMEOUT_S = 120.0
_started_here = False  # True while the running instance is one init_ray started


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a private local Ray instance (dashboard off, 127.0.0.1 only) or connect to ``address``.

    Without ``address`` the instance is new and private even where ``RAY_ADDRESS`` is set or another
    cluster runs on this machine; ``address=auto`` joins those.

    Connecting to an existing cluster is an explicit choice: pass ``address`` (``auto`` or
    ``ray://host:10001``) and protect that cluster with Ray's token authentication
    (``RAY_AUTH_MODE=token``; see SECURITY.md). A local instance listens on loopback only
    (set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` to opt out) and Ray's token authentication,
    on by default for local instances since Ray 2.59, stays on.
    """
    global _started_here
    import ray

    if ray.is_initialized():
        return
    _started_here = False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if address:
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as e:
            raise ValueError(_connection_advice(address, e)) from e
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a private instance phones no one
    _loopback_only()
    # "local": a new instance even where RAY_ADDRESS is set or `ray start` left a cluster (live or
    # crashed) in /tmp/ray/ray_current_cluster, which ray.init() would otherwise join
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    _started_here = True


def _connection_advice(address: str, error: BaseException) -> str:
    """What to do when ``ray.init(address=...)`` could not connect: Ray sends its auth token only
    where ``RAY_AUTH_MODE=token`` says so (``address=auto`` finds a local token by itself)."""
    chain, cause = [], error
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    said = " ".join(chain)
    mode = os.environ.get("RAY_AUTH_MODE", "unset")
    token = ("the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH "
             "(see SECURITY.md)")
    if "InvalidAuthToken" in said or "Authentication" in said:
        if mode == "token":
            return (f"address={address}: the Ray cluster there refused this process's token: it does not "
                    f"match the cluster's; put {token}")
        return (f"address={address}: the Ray cluster there asks for token authentication (the default of "
                f"`ray start` since Ray 2.59) and RAY_AUTH_MODE is {mode} here: run with RAY_AUTH_MODE=token "
                f"and {token}")
    if address.startswith("ray://"):
        check = "check that the head's Ray client server listens there (`ray start --head` opens port 10001)"
    else:
        check = f"check it with `ray status --address {address}`"
    hint = "" if mode == "token" or address == "auto" else (
        "; a cluster with token authentication (the default of `ray start` since Ray 2.59; a ray:// client "
        f"then only times out) also needs RAY_AUTH_MODE=token here and {token}")
    return (f"address={address}: no Ray cluster answered there ({error}); {check}, or leave address unset "
            f"to start a private local instance{hint}")


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
    """Generic actor body: ``setup()`` builds heavy state once; ``call(name, *args)`` runs
    ``fns[name](state, *args)``, which returns a pair (see :class:`ActorPool`)."""

    def __init__(self, setup: Callable[[], Any], fns: dict[str, Callable[..., tuple[Any, Any]]]) -> None:
        self.state = setup()
        self.fns = fns

    def call(self, name: str, *args: Any) -> tuple[Any, Any]:
        return self.fns[name](self.state, *args)


@dataclass
class Done:
    """One finished task of a pool."""

    key: Any  # what submit() was given
    slot: int  # the worker that ran it
    value: Any  # the task's first return value (fetched)
    payload: Any  # its second: an ObjectRef under Ray (not fetched), the object itself in-process
    error: str | None = None  # the worker process died running it (its slot has a fresh worker)


class ActorPool:
    """``workers`` Ray actors in numbered slots, each running one task at a time.

    ``fns[name](state, *args)`` returns ``(value, payload)``: ``value`` (small) comes back to
    this process; ``payload`` stays in Ray's object store and can be passed, as an argument, to
    a later task (Ray resolves it there), so big objects never pass through this process.
    Tasks go to a chosen idle slot, so a slot can keep per-task state in its ``state``. A worker
    process that dies is replaced in its slot (its state is lost) and its task is reported with
    ``error`` set: retrying is the caller's choice. ``setup()`` raising raises RuntimeError.

    An actor that has not started ``start_timeout_s`` seconds after it was asked for (Ray leased
    it a process that never ran its constructor, or ``setup()`` hangs) is replaced, and the task
    waiting on it goes to the replacement unchanged: nothing had run, so nothing is lost or
    counted as a failure (an actor that started just as its time ran out may run that task twice:
    tasks here are deterministic and keep state only in their actor). After ``start_attempts``
    such starts of one slot, RuntimeError. The default (None) is :data:`START_TIMEOUT_S` on a
    private instance :func:`init_ray` started, whose resources are all the pool's, and no limit on
    a cluster (``address``) or an instance the caller started, where an actor may wait for
    resources that other jobs hold or an autoscaler is adding.
    """

    def __init__(self, setup: Callable[[], Any], fns: dict[str, Callable[..., tuple[Any, Any]]],
                 workers: int, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 address: str | None = None, start_timeout_s: float | None = None,
                 start_attempts: int = 3) -> None:
        import ray

        if (start_timeout_s is not None and start_timeout_s <= 0) or start_attempts < 1:
            raise ValueError(f"start_timeout_s={start_timeout_s} and start_attempts={start_attempts}: "
                             "both must be positive (start_timeout_s null: the default)")
        init_ray(address, num_cpus=None if address else max(workers, 1))
        if start_timeout_s is None:
            private = not address and _started_here
            start_timeout_s = START_TIMEOUT_S if private else float("inf")
        have = ray.cluster_resources().get("GPU", 0.0) if num_gpus > 0 and not address else num_gpus
        if have < num_gpus:  # its actors would wait forever (a cluster may add GPU nodes: not checked)
            raise ValueError(
                f"workers ask for {num_gpus} GPU each but the local Ray instance has {have:g}: set the "
                "gpus_per_worker (or gpus_per_trial) key to 0 and device=cpu, or check that nvidia-smi "
                "and torch.cuda.is_available() see the card (and CUDA_VISIBLE_DEVICES)"
            )
        self._cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)(_Worker)
        self._args = (ray.put(setup), ray.put(fns))  # shipped once, shared by replacements
        self._resources = f"num_cpus={num_cpus:g}, num_gpus={num_gpus:g}"
        self._start_timeout_s, self._start_attempts = start_timeout_s, start_attempts
        self._actors: list[Any] = [None] * max(workers, 1)
        self._starting: dict[int, tuple[Any, float, int]] = {}  # slot -> (ready ref, deadline, attempt)
        for slot in range(len(self._actors)):
            self._start(slot, attempt=1)
        self._idle = set(range(len(self._actors)))
        # value ref -> (slot, key, payload ref, name, args)
        self._inflight: dict[Any, tuple[int, Any, Any, str, tuple[Any, ...]]] = {}

    def _start(self, slot: int, attempt: int) -> None:
        """Ask Ray for a fresh actor in ``slot`` and note when it must have started."""
        actor = self._cls.remote(*self._args)
        self._actors[slot] = actor
        deadline = time.monotonic() + self._start_timeout_s
        self._starting[slot] = (actor.__ray_ready__.remote(), deadline, attempt)

    def _restart_stalled(self) -> None:
        """Replace every actor past its start deadline; resend the task waiting on it."""
        import ray

        now = time.monotonic()
        for slot, (_, deadline, attempt) in list(self._starting.items()):
            if deadline > now:
                continue
            if attempt >= self._start_attempts:
                raise RuntimeError(
                    f"a Ray worker ({self._resources}) did not start within start_timeout_s="
                    f"{self._start_timeout_s:g} s, {attempt} times: check that the cluster has those "
                    "resources free (`ray status`) and that the worker's setup does not hang, or "
                    "allow a slower start with a larger start_timeout_s")
            warnings.warn(f"Ray worker in slot {slot} did not start within {self._start_timeout_s:g} s; "
                          f"replacing it (start {attempt + 1} of {self._start_attempts})",
                          RuntimeWarning, stacklevel=3)
            ray.kill(self._actors[slot])
            self._start(slot, attempt + 1)
            for ref, (s, key, _, name, args) in list(self._inflight.items()):
                if s == slot:  # it never ran: the replacement runs it as if nothing happened
                    del self._inflight[ref]
                    self._send(slot, key, name, args)

    @property
    def size(self) -> int:
        """Number of worker slots."""
        return len(self._actors)

    def idle_slots(self) -> list[int]:
        return sorted(self._idle)

    def busy(self) -> bool:
        """Whether any task is in flight."""
        return bool(self._inflight)

    def submit(self, slot: int, key: Any, name: str, *args: Any) -> None:
        """Run ``fns[name](state, *args)`` on idle ``slot``; ObjectRef args arrive resolved."""
        self._idle.remove(slot)
        self._send(slot, key, name, args)

    def _send(self, slot: int, key: Any, name: str, args: tuple[Any, ...]) -> None:
        value, payload = self._actors[slot].call.options(num_returns=2).remote(name, *args)
        self._inflight[value] = (slot, key, payload, name, args)

    def wait(self) -> Done:
        """Block until a task finishes; a task that raised re-raises its error here."""
        import ray
        from ray.exceptions import RayActorError

        while True:
            ready_refs = {ref: slot for slot, (ref, _, _) in self._starting.items()}
            first = min((deadline for _, deadline, _ in self._starting.values()), default=float("inf"))
            timeout = None if first == float("inf") else max(first - time.monotonic(), 0.0)
            done, _ = ray.wait(list(self._inflight) + list(ready_refs), num_returns=1, timeout=timeout)
            if not done:
                self._restart_stalled()
                continue
            (ref,) = done
            if ref in ready_refs:  # an actor started (or died trying: its task reports that)
                del self._starting[ready_refs[ref]]
                try:
                    ray.get(ref)
                except RayActorError as e:
                    if e.actor_init_failed:
                        raise RuntimeError(f"worker setup failed: {e}") from e
                continue
            break
        slot, key, payload, _, _ = self._inflight.pop(ref)
        try:
            value = ray.get(ref)
        except RayActorError as e:  # the worker process died: replace it
            if e.actor_init_failed:  # setup() raised: deterministic, retrying cannot help
                raise RuntimeError(f"worker setup failed: {e}") from e
            ray.kill(self._actors[slot])
            self._start(slot, attempt=1)
            self._idle.add(slot)
            return Done(key, slot, None, None, str(e))
        self._idle.add(slot)
        return Done(key, slot, value, payload)

    def close(self) -> None:
        """Kill every worker (tasks in flight are dropped)."""
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._inflight, self._idle, self._starting = {}, set(), {}


class LocalPool:
    """The :class:`ActorPool` interface with one worker in this process (``workers=0``): tasks
    run one at a time, in submission order, inside :meth:`wait`."""

    def __init__(self, setup: Callable[[], Any], fns: dict[str, Callable[..., tuple[Any, Any]]]) -> None:
        self.state = setup()
        self.fns = fns
        self._todo: deque[tuple[Any, str, tuple[Any, ...]]] = deque()

    size = 1

    def idle_slots(self) -> list[int]:
        return [] if self._todo else [0]

    def busy(self) -> bool:
        return bool(self._todo)

    def submit(self, slot: int, key: Any, name: str, *args: Any) -> None:
        self._todo.append((key, name, args))

    def wait(self) -> Done:
        key, name, args = self._todo.popleft()
        value, payload = self.fns[name](self.state, *args)
        return Done(key, 0, value, payload)

    def close(self) -> None:
        self._todo.clear()


def make_pool(setup: Callable[[], Any], fns: dict[str, Callable[..., tuple[Any, Any]]],
              workers: int, address: str | None = None, **options: Any) -> ActorPool | LocalPool:
    """:class:`LocalPool` for ``workers <= 0``, else an :class:`ActorPool` of ``workers`` actors
    (``options``: its keyword arguments)."""
    if workers <= 0:
        return LocalPool(setup, fns)
    return ActorPool(setup, fns, workers, address=address, **options)


def _pair(run: Callable[[Any, Any], Any], state: Any, item: Any) -> tuple[Any, None]:
    return run(state, item), None


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
    start_timeout_s: float | None = None,
) -> Iterator[R]:
    """Yield ``run(state, item)`` for each item, in completion order, with ``state = setup()``
    built once per worker. ``setup`` and ``run`` must be picklable (module-level functions or
    ``functools.partial`` of them). ``start_timeout_s``: see :class:`ActorPool`.
    """
    items = list(items)
    if workers <= 0:
        state = setup()
        for item in items:
            yield run(state, item)
        return
    yield from _ray_map(setup, run, items, workers, num_cpus, num_gpus, address, retries, on_failure,
                        start_timeout_s)


def _ray_map(setup, run, items, workers, num_cpus, num_gpus, address, retries, on_failure, start_timeout_s):
    pool = ActorPool(setup, {"run": functools.partial(_pair, run)}, min(workers, len(items)) or 1,
                     num_cpus=num_cpus, num_gpus=num_gpus, address=address, start_timeout_s=start_timeout_s)
    queue = deque(enumerate(items))
    attempts = [0] * len(items)
    try:
        while queue or pool.busy():
            for slot in pool.idle_slots():  # one item per actor: a dead actor loses one item
                if not queue:
                    break
                i, item = queue.popleft()
                pool.submit(slot, i, "run", item)
            done = pool.wait()
            i = done.key
            if done.error is None:
                yield done.value
                continue
            attempts[i] += 1
            if attempts[i] <= retries:
                queue.appendleft((i, items[i]))
                continue
            reason = f"worker died {attempts[i]} times on this item; last error: {done.error}"
            if on_failure is None:
                raise RuntimeError(reason)
            yield on_failure(items[i], reason)
    finally:
        pool.close()
