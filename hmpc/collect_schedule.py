"""The driver loop of :func:`hmpc.rollout.collect`: which worker does what, and when to publish.

Tasks on the pool (:mod:`hmpc.parallel`), two kinds:

- ``episode`` i: collect episode i. Each batch has an *owner*, the worker holding its encoder
  (:class:`hmpc.data.writer.BatchWriter`). If this worker owns i's batch (or i opens it) and
  i is next in line, it feeds i to the encoder itself ("inline"); otherwise the Episode stays
  in Ray's object store (a payload ref here) until a feed.
- ``feed`` b: hand the next finished episodes of batch b, in index order, to b's owner.
The feed (inline or not) that adds a batch's last episode returns the encoded batch (parquet +
mp4 bytes), which is published here.

An idle worker first feeds a batch it owns, then takes ownership of the lowest batch whose
next episode is ready, then collects an episode: the next of a batch it owns (inline: no
object store), else the next of one of the ``window`` (= number of workers) lowest batches with
episodes left, taken in turn. Publication is in batch order, so the files and their bytes do
not depend on the number or timing of workers.

Why a window: one encoder consumes episodes about 3x faster than one worker collects them
(64x64 point_maze), so W > 3 workers all collecting the *same* batch outrun its encoder, which
then finishes long after the last episode. Dealing episodes over W batches keeps every encoder
in step (simulated with this class: 0.97 of W-fold at W=8, 0.95 at W=16 with 200 episodes in 4
batches, vs 0.83 and 0.62 when episodes go out in index order). The cost: up to W batches are
collected at once, so the first batch is published after about W batches' worth of episodes
and an interruption loses up to W partly collected batches (nothing partial is ever visible,
and a rerun collects them again).
A dead worker's slot gets a fresh worker: its task is retried, and each batch it owned restarts
from its first episode (episodes already fed are re-collected: the same seeds give the same
episodes), up to ``retries`` deaths per task.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hmpc.data.writer import BatchPlan, EncodedBatch, publish_batch
from hmpc.parallel import ActorPool, Done, LocalPool


class CollectScheduler:
    """Runs the episodes of ``plans`` (batch b = episodes ``bounds[b]``) on ``pool``."""

    def __init__(self, pool: ActorPool | LocalPool, plans: Sequence[BatchPlan],
                 bounds: Sequence[tuple[int, int]], seeds: dict[int, int], retries: int) -> None:
        self.pool, self.plans, self.bounds, self.seeds = pool, list(plans), list(bounds), seeds
        self.retries = retries
        self._starts = [start for start, _ in self.bounds]
        self.window = max(1, pool.size)  # batches collected at once
        self.pending = {b: [i for i in range(*self.bounds[b]) if i in seeds]  # heaps
                        for b in range(len(self.plans))}
        self.open = [b for b, todo in self.pending.items() if todo]  # sorted: batches with some
        self._turn = 0
        self.ready: dict[int, Any] = {}  # collected, not yet fed: episode -> payload
        self.fed = [0] * len(self.plans)  # episodes of batch b inside its owner's encoder
        self.owner: list[int | None] = [None] * len(self.plans)  # slot holding b's encoder
        self.feeding: dict[int, list[tuple[int, Any]]] = {}  # b -> its feed in flight
        self.inline = 0  # episodes fed by the worker that collected them
        self.encoded: dict[int, EncodedBatch] = {}
        self.published = 0
        self.deaths: Counter[tuple[str, int]] = Counter()
        self._counted: set[int] = set()

    def run(self, root: Path, bar: Any = None) -> None:
        """Collect, encode and publish every batch into ``root``, in order."""
        while self.published < len(self.plans):
            self._dispatch()
            if not self.pool.busy():
                raise RuntimeError(f"collection stalled with {len(self.plans) - self.published} "
                                   "batches unpublished and nothing running (a bug: please report it)")
            done = self.pool.wait()
            kind, x = done.key
            if done.error is not None:
                self._worker_died(done)
            elif kind == "episode":
                b = self._batch_of(x)
                if bar is not None and x not in self._counted:  # re-collections count once
                    bar.update(self.plans[b].lengths[x - self.bounds[b][0]])
                self._counted.add(x)
                fed_inline, encoded = done.value
                if fed_inline:
                    self.inline += 1
                    self._fed(root, b, 1, encoded)
                else:
                    self.ready[x] = done.payload
            else:
                self._fed(root, x, len(self.feeding.pop(x)), done.value)

    def _fed(self, root: Path, b: int, count: int, encoded: EncodedBatch | None) -> None:
        """``count`` more episodes of batch b are in its encoder; publish what is complete."""
        self.fed[b] += count
        if encoded is not None:
            self.encoded[b], self.owner[b] = encoded, None
        while self.published in self.encoded:
            publish_batch(root, self.encoded.pop(self.published))
            self.published += 1

    def _dispatch(self) -> None:
        """Give every idle worker its most urgent task (see the module docstring)."""
        for slot in self.pool.idle_slots():
            task = self._feed_for(slot) or self._next_episode(slot)
            if task is not None:
                self.pool.submit(slot, *task)

    def _feed_for(self, slot: int) -> tuple | None:
        """A feed for ``slot``: of a batch it owns, else of an unowned batch it then owns."""
        for b in sorted({self._batch_of(i) for i in self.ready}):
            if b in self.feeding or self.owner[b] not in (None, slot):
                continue
            first, stop = self.bounds[b][0] + self.fed[b], self.bounds[b][1]
            run = []
            while first + len(run) < stop and first + len(run) in self.ready:
                run.append(first + len(run))
            if not run:
                continue
            self.owner[b] = slot
            self.feeding[b] = [(i, self.ready.pop(i)) for i in run]
            return ("feed", b), "feed", self.plans[b], self.fed[b], *(p for _, p in self.feeding[b])
        return None

    def _batch_of(self, episode: int) -> int:
        return bisect.bisect_right(self._starts, episode) - 1

    def _next_episode(self, slot: int) -> tuple | None:
        """The lowest undispatched episode of a batch ``slot`` owns in the window, else of the
        next batch, in turn, of the window; with the batch's plan when ``slot`` may feed it
        inline (it owns the batch, or the episode opens an unowned one: ``slot`` then owns it)."""
        if not self.open:
            return None
        window = self.open[:self.window]
        own = [b for b in window if self.owner[b] == slot]
        if own:
            b = own[0]
        else:
            b = window[self._turn % len(window)]
            self._turn += 1
        i = heapq.heappop(self.pending[b])
        if not self.pending[b]:
            self.open.remove(b)
        if self.owner[b] is None and self.fed[b] == 0 and i == self.bounds[b][0]:
            self.owner[b] = slot
        plan = self.plans[b] if self.owner[b] == slot else None
        return ("episode", i), "episode", (i, self.seeds[i]), plan

    def _collect_again(self, i: int) -> None:
        b = self._batch_of(i)
        if not self.pending[b]:
            bisect.insort(self.open, b)
        heapq.heappush(self.pending[b], i)

    def _worker_died(self, done: Done) -> None:
        """Retry the task; restart every batch the dead worker owned (its encoders are gone)."""
        self.deaths[done.key] += 1
        kind, x = done.key
        if self.deaths[done.key] > self.retries:
            raise RuntimeError(f"a collection worker died {self.deaths[done.key]} times on {kind} "
                               f"{x}; last error: {done.error}")
        if kind == "episode":
            self._collect_again(x)
        for b, owner in enumerate(self.owner):
            if owner != done.slot:
                continue
            for i, payload in self.feeding.pop(b, []):  # still in the object store
                self.ready[i] = payload
            for i in range(self.bounds[b][0], self.bounds[b][0] + self.fed[b]):
                self._collect_again(i)  # were inside the lost encoder
            self.fed[b], self.owner[b] = 0, None
