"""Parallel collection: batch layout, the scheduler under any completion order and worker deaths.

The scheduler tests run in-process on :class:`ShuffledPool`, a pool of several slots whose tasks
finish in a seeded random order and that can "kill" a slot mid-task (its state is rebuilt), so
every interleaving a Ray run could produce is reachable without Ray. The Ray test kills a real
worker process while it holds a batch's encoder.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle
from helpers import assert_same_files

from hmpc.collect_schedule import CollectScheduler
from hmpc.data import LeRobotDataset
from hmpc.data.writer import plan_batches
from hmpc.parallel import Done, make_pool
from hmpc.rollout import (
    TASK,
    EnvSpec,
    PolicySpec,
    _collect_setup,
    _episode_task,
    _feed_task,
    batch_bounds,
    collect,
    episode_seed,
)

# functions defined here run inside Ray workers, which cannot import this test module
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ENV = EnvSpec("point_maze", {"image_size": 32})
STEPS, EPISODES, FLUSH = 6, 8, 3  # batches [0, 3), [3, 6), [6, 8)


@pytest.fixture
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The in-process (workers=0) dataset, built anew for each test (under a second). Compared with
    ``helpers.assert_same_files``: data and meta byte for byte, mp4s frame for frame, since
    libx264 now and then encodes the same frames differently, and a process can keep doing so (a
    byte comparison failed every rerun in CI, 2026-12-06)."""
    root = tmp_path_factory.mktemp("ref") / "ds"
    collect(ENV, PolicySpec(), root, EPISODES, STEPS, seed=1, flush_every=FLUSH, progress=False)
    return root


def test_batch_bounds_are_aligned_and_resume_on_them() -> None:
    assert batch_bounds(0, 8, 3) == [(0, 3), (3, 6), (6, 8)]
    assert batch_bounds(3, 8, 3) == [(3, 6), (6, 8)]  # a resumed run: the same batches
    assert batch_bounds(4, 10, 3) == [(4, 6), (6, 9), (9, 10)]  # appended after a short batch
    assert batch_bounds(8, 8, 3) == [] and batch_bounds(9, 8, 3) == []
    with pytest.raises(ValueError, match="flush_every=0"):
        batch_bounds(0, 8, 0)


class ShuffledPool:
    """The pool interface with ``slots`` in-process workers; ``wait`` finishes a random in-flight
    task (seeded). ``kill(key, args, state)`` True makes that task's worker die instead of
    finishing: the slot gets a fresh ``setup()`` state, as a replaced Ray actor would."""

    def __init__(self, setup, fns, slots: int, seed: int, kill=lambda key, args, state: False) -> None:
        self.setup, self.fns, self.kill = setup, fns, kill
        self.states = [setup() for _ in range(slots)]
        self.size = slots
        self.inflight: dict[int, tuple] = {}
        self.rng = np.random.default_rng(seed)
        self.killed: list = []
        self.lost_episodes = 0  # episodes inside the encoders of killed slots
        self.max_busy = 0

    def idle_slots(self) -> list[int]:
        return [s for s in range(len(self.states)) if s not in self.inflight]

    def busy(self) -> bool:
        return bool(self.inflight)

    def submit(self, slot: int, key, name: str, *args) -> None:
        assert slot not in self.inflight
        self.inflight[slot] = (key, name, args)
        self.max_busy = max(self.max_busy, len(self.inflight))

    def wait(self) -> Done:
        slot = int(self.rng.choice(sorted(self.inflight)))
        key, name, args = self.inflight.pop(slot)
        if self.kill(key, args, self.states[slot]):
            self.killed.append(key)
            self.lost_episodes += sum(w.count for w in self.states[slot].writers.values())
            self.states[slot] = self.setup()
            return Done(key, slot, None, None, "killed")
        value, payload = self.fns[name](self.states[slot], *args)
        return Done(key, slot, value, payload)

    def close(self) -> None:
        self.inflight.clear()


def _run(root: Path, pool_factory, retries: int = 2):
    """collect()'s body with a custom pool (same plans, seeds, task functions)."""
    bounds = batch_bounds(0, EPISODES, FLUSH)
    plans = plan_batches(root, [[(STEPS, TASK)] * (b - a) for a, b in bounds], fps=10,
                         robot_type=ENV.name)
    setup = functools.partial(_collect_setup, ENV, PolicySpec())
    fns = {"episode": functools.partial(_episode_task, STEPS), "feed": _feed_task}
    pool = pool_factory(setup, fns)
    seeds = {i: episode_seed(1, i) for i in range(EPISODES)}
    try:
        CollectScheduler(pool, plans, bounds, seeds, retries).run(root)
    finally:
        pool.close()
    return pool


def _kill_once(victims: set):
    """A kill rule: the first task matching each victim dies. Victims: ("episode", i);
    ("opening", b): the task (feed, or episode fed inline) that opens batch b's encoder;
    ("holding", b): any task of a worker whose encoder of batch b holds episodes."""
    seen: set = set()

    def kill(key, args, state) -> bool:
        if key[0] == "episode":  # args = ((i, seed), plan or None)
            names, plan = {key}, args[1]
            k = None if plan is None else args[0][0] - plan.first_ep
        else:  # args = (plan, start, *episodes)
            names, plan, k = set(), args[0], args[1]
        if k == 0:
            names.add(("opening", plan.first_ep // FLUSH))
        names |= {("holding", b // FLUSH) for b, w in state.writers.items() if w.count}
        for name in sorted(names - seen):
            if name in victims:
                seen.add(name)
                return True
        return False

    return kill


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_completion_order_and_worker_deaths_give_the_same_dataset(
        reference: Path, tmp_path: Path, seed: int) -> None:
    kill = _kill_once({("episode", 4), ("holding", 1), ("opening", 2)})
    pool = _run(tmp_path / "ds", lambda s, f: ShuffledPool(s, f, 3, seed, kill))
    assert pool.max_busy == 3, "all workers should be busy at some point"
    assert len(pool.killed) == 3 and ("episode", 4) in pool.killed
    assert pool.lost_episodes > 0, "no owner died holding episodes: the restart path is untested"
    assert_same_files(reference, tmp_path / "ds")


def test_fewer_batches_than_workers_keeps_workers_busy(tmp_path: Path) -> None:
    """One batch, four workers: episodes still run on all four (the batch is not one task)."""
    busy = []

    def factory(setup, fns):
        pool = ShuffledPool(setup, fns, 4, seed=0)
        busy.append(pool)
        return pool

    bounds = [(0, EPISODES)]
    plans = plan_batches(tmp_path / "ds", [[(STEPS, TASK)] * EPISODES], fps=10, robot_type=ENV.name)
    fns = {"episode": functools.partial(_episode_task, STEPS), "feed": _feed_task}
    pool = factory(functools.partial(_collect_setup, ENV, PolicySpec()), fns)
    CollectScheduler(pool, plans, bounds, {i: episode_seed(1, i) for i in range(EPISODES)},
                     retries=0).run(tmp_path / "ds")
    assert busy[0].max_busy == 4
    assert LeRobotDataset(tmp_path / "ds").num_episodes == EPISODES


def test_worker_dying_every_time_gives_up(tmp_path: Path) -> None:
    always = lambda key, args, state: key == ("episode", 2)  # noqa: E731
    with pytest.raises(RuntimeError, match=r"died 2 times on episode 2"):
        _run(tmp_path / "ds", lambda s, f: ShuffledPool(s, f, 2, 0, always), retries=1)
    assert not (tmp_path / "ds/meta/info.json").exists()  # episode 2 is in the first batch


class VirtualTimePool:
    """The pool interface in virtual time, no real work: an episode takes 1 unit, feeding k
    episodes ``encode * k`` units; ``wait`` finishes the task that ends first."""

    def __init__(self, slots: int, encode: float) -> None:
        self.size, self.encode, self.now = slots, encode, 0.0
        self.held = [dict() for _ in range(slots)]  # slot -> {batch: episodes in its encoder}
        self.inflight: dict[int, tuple] = {}

    def idle_slots(self) -> list[int]:
        return [s for s in range(self.size) if s not in self.inflight]

    def busy(self) -> bool:
        return bool(self.inflight)

    def submit(self, slot: int, key, name: str, *args) -> None:
        if name == "episode":  # fed inline (as _episode_task decides) or not
            (i, _), plan = args
            k = None if plan is None else i - plan.first_ep
            inline = k is not None and (k == 0 or self.held[slot].get(plan.first_ep) == k)
            took, args = 1.0 + self.encode * inline, (plan, k, None) if inline else ()
        else:
            took = self.encode * (len(args) - 2)
        self.inflight[slot] = (self.now + took, key, name, args)

    def wait(self) -> Done:
        slot = min(self.inflight, key=lambda s: self.inflight[s][0])
        self.now, key, name, args = self.inflight.pop(slot)
        if name == "episode" and not args:
            return Done(key, slot, (False, None), None)
        plan, start, n = args[0], args[1], len(args) - 2
        assert self.held[slot].get(plan.first_ep, 0) == start, "fed out of order"
        self.held[slot][plan.first_ep] = start + n
        complete = plan if start + n == len(plan.lengths) else None
        return Done(key, slot, (True, complete) if name == "episode" else complete, None)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("episodes", "flush", "workers", "floor"),
                         [(200, 50, 2, 0.97), (200, 50, 8, 0.95), (200, 50, 16, 0.9),
                          (2000, 50, 16, 0.97), (64, 16, 8, 0.9)])
def test_scheduling_scales_with_few_batches(monkeypatch: pytest.MonkeyPatch, episodes: int,
                                            flush: int, workers: int, floor: float) -> None:
    """Encoding at 0.3 episode-times per episode (64x64 point_maze): the makespan stays near
    the ideal episodes * 1.3 / W even with fewer batches than workers."""
    import hmpc.collect_schedule as schedule

    monkeypatch.setattr(schedule, "publish_batch", lambda root, batch: None)
    bounds = batch_bounds(0, episodes, flush)
    plans = [type("Plan", (), {"first_ep": a, "lengths": (1,) * (b - a)}) for a, b in bounds]
    pool = VirtualTimePool(workers, encode=0.3)
    CollectScheduler(pool, plans, bounds, {i: i for i in range(episodes)}, 0).run(Path("."))
    assert episodes * 1.3 / workers / pool.now >= floor


def _die_holding(marker_dir: str, real, state, *args):
    """Run the real task, but first SIGKILL this worker process, once, if its encoder of batch 1
    holds episodes (so the batch must be restarted and those episodes collected again)."""
    marker = Path(marker_dir) / "killed"
    writer = state.writers.get(FLUSH)
    if writer is not None and writer.count and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(state, *args)


@pytest.mark.ray
def test_ray_worker_killed_while_holding_an_encoder(reference: Path, tmp_path: Path) -> None:
    def factory(setup, fns):
        fns = {name: functools.partial(_die_holding, str(tmp_path), fn) for name, fn in fns.items()}
        return make_pool(setup, fns, 2)

    _run(tmp_path / "ds", factory)
    assert (tmp_path / "killed").exists()
    assert_same_files(reference, tmp_path / "ds")
