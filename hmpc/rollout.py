"""Acting in envs: reward-free data collection and scored goal-conditioned episodes.

Envs are built inside each worker from an ``EnvSpec`` (name + kwargs), so every Ray actor owns
its PyBullet client. Episode seeds are fixed per episode index, so the data and the start/goal
pairs do not depend on the number of workers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hmpc.collect_schedule import CollectScheduler
from hmpc.data import Episode
from hmpc.data._meta import read_info
from hmpc.data._stats import logged_episodes
from hmpc.data.writer import (
    BatchPlan,
    BatchWriter,
    EncodedBatch,
    plan_batches,
    remove_stale_staging,
)
from hmpc.parallel import make_pool
from robots import make_env
from robots.perturbations import apply_perturbations
from skills import make_policy, ship_policy


@dataclass(frozen=True)
class EnvSpec:
    """An env by registry name + constructor kwargs, optionally wrapped by perturbations
    (``[{"name": "obs_noise", "std": 8}, ...]``, see ``robots.perturbations``)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    wrappers: tuple[dict[str, Any], ...] = ()

    def make(self):
        return apply_perturbations(make_env(self.name, **self.kwargs), list(self.wrappers))

    def check(self) -> None:
        """Build and close the env once here, so bad names/keys fail before any worker starts."""
        self.make().close()


@dataclass(frozen=True)
class PolicySpec:
    name: str = "correlated"
    kwargs: dict[str, Any] = field(default_factory=dict)


def episode_seed(base_seed: int, index: int) -> int:
    """Independent, reproducible seed of episode ``index`` (SeedSequence spawn keys)."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


# -- collection -----------------------------------------------------------------------------------
# Collection runs on a worker pool (hmpc.parallel), scheduled by hmpc.collect_schedule: each
# batch's encoder lives in one worker (its owner), which feeds it its own episodes directly and
# the episodes other workers collected for it (through Ray's object store), in index order; the
# last feed returns the encoded batch (parquet + mp4 bytes, ~1/50 of the raw frames) and the
# driver only publishes. See collect() for the trade-offs.
TASK = "explore"


@dataclass
class _WorkerState:
    """One worker: its env, its policy, and the open encoders of the batches it owns."""

    env: Any
    policy: Any
    writers: dict[int, BatchWriter] = field(default_factory=dict)


def _collect_setup(env_spec: EnvSpec, policy_spec: PolicySpec) -> _WorkerState:
    env = env_spec.make()
    return _WorkerState(env, make_policy(policy_spec.name, env, **policy_spec.kwargs))


def _collect_one(steps: int, state: _WorkerState, item: tuple[int, int]) -> tuple[int, Episode]:
    """Run one exploration episode of ``steps`` frames; returns (index, Episode)."""
    env, policy = state.env, state.policy
    index, seed = item
    obs, _ = env.reset(seed=seed)
    policy.reset(seed)
    pixels, states, actions = [], [], []
    for _ in range(steps):
        a = np.asarray(policy.act(obs), np.float32)
        pixels.append(obs["pixels"])
        states.append(obs["state"])
        actions.append(a)
        obs, _, _, _, _ = env.step(a)
    return index, Episode(
        pixels=np.stack(pixels), state=np.stack(states).astype(np.float32),
        action=np.stack(actions), task=TASK,
    )


def _episode_task(steps: int, state: _WorkerState, item: tuple[int, int],
                  plan: BatchPlan | None = None) -> tuple[tuple[bool, EncodedBatch | None], Any]:
    """Pool task: collect episode ``item[0]``. Given its batch's ``plan``, feed it to this
    worker's encoder when it is next in line there (or opens the batch): returns ((True, the
    EncodedBatch after the batch's last episode, else None), None). Otherwise ((False, None),
    the Episode), the Episode staying in the object store for a later feed."""
    index, ep = _collect_one(steps, state, item)
    if plan is not None:
        k = index - plan.first_ep
        writer = state.writers.get(plan.first_ep)
        if k == 0 or (writer is not None and writer.count == k):
            encoded, _ = _feed_task(state, plan, k, ep)
            return (True, encoded), None
    return (False, None), ep


def _feed_task(state: _WorkerState, plan: BatchPlan, start: int,
               *episodes: Episode) -> tuple[EncodedBatch | None, None]:
    """Pool task: encode episodes ``start, start+1, ...`` of ``plan``'s batch with this worker's
    encoder for it (opened at ``start == 0``); returns the EncodedBatch after the last one."""
    writer = BatchWriter(plan) if start == 0 else state.writers.get(plan.first_ep)
    if writer is None or writer.count != start:
        raise RuntimeError(f"encoder of the batch at episode {plan.first_ep} holds "
                           f"{None if writer is None else writer.count} episodes, expected {start}; "
                           "the collection scheduler lost track (a bug: please report it)")
    state.writers[plan.first_ep] = writer
    try:
        for ep in episodes:
            writer.add(ep)
    except BaseException:
        state.writers.pop(plan.first_ep).abort()
        raise
    if writer.count < len(plan.lengths):
        return None, None
    return state.writers.pop(plan.first_ep).finish(), None


def batch_bounds(done: int, episodes: int, flush_every: int) -> list[tuple[int, int]]:
    """Episode ranges [start, stop) of the batches that take ``done`` to ``episodes`` episodes:
    batch b holds episodes [b*flush_every, (b+1)*flush_every) (the first one starts at ``done``),
    whatever the number of workers."""
    if flush_every < 1:
        raise ValueError(f"flush_every={flush_every}: give at least 1 episode per published batch")
    stops = [*range((done // flush_every + 1) * flush_every, episodes, flush_every), episodes]
    return [(start, stop) for start, stop in zip([done, *stops[:-1]], stops, strict=True) if stop > start]


def collected_episodes(root: Path) -> int:
    """Episodes of the dataset at ``root`` that a collector wrote: all but those without a state
    (video imported with ``hmpc-dataset add-video``, which collection seeds do not count)."""
    if not (root / "meta/info.json").is_file():
        return 0
    info = read_info(root)
    logged = logged_episodes(root, info)
    return int(info["total_episodes"]) if logged is None else int(logged["observation.state"] or 0)


def collect(
    env_spec: EnvSpec,
    policy_spec: PolicySpec,
    output_dir: str | Path,
    episodes: int,
    steps: int,
    seed: int = 0,
    workers: int = 0,
    fps: int = 10,
    flush_every: int = 50,
    address: str | None = None,
    progress: bool = True,
    retries: int = 2,
    start_timeout_s: float | None = None,
) -> Path:
    """Make ``output_dir`` hold ``episodes`` reward-free episodes of ``steps`` frames (LeRobot v3.0).

    Episodes are published in batches (batch b = episodes [b*flush_every, (b+1)*flush_every), one
    data file + one mp4), each atomically and in order, so a crash never shows a partial episode
    and the dataset is the same for any number of ``workers``.

    Resume and append: ``episodes`` is the *total*. If ``output_dir`` already holds a dataset
    with n collected episodes (:func:`collected_episodes`: video imported into it is not
    counted), only episodes n..episodes-1 are collected (episode i always uses seed
    ``episode_seed(seed, i)``), so rerunning a killed or crashed command yields exactly the
    dataset of an uninterrupted run, and raising ``episodes`` appends new episodes. Nothing is
    collected when n >= episodes. Only one collector may write to ``output_dir`` at a time.

    Parallelism: the workers collect *and* encode; the driver only publishes (renames + meta/).
    Each batch's encoder lives in one worker, which mostly collects that batch's episodes itself
    and encodes each as it finishes (raw frames never leave the worker). Episodes are dealt over
    the W lowest unfinished batches, so with fewer batches than workers (200 episodes,
    flush_every=50, W=8) the spare workers collect episodes of those batches and pass them,
    through Ray's object store, to the batch's encoder. Trade-offs: one mp4 per batch means one
    sequential encoder per batch, so a batch whose encoding alone outlasts the run (huge
    flush_every, many workers) bounds the run: lower flush_every then. Up to W batches are open at
    once, so the first one is published after about W batches' worth of episodes, and an
    interruption loses up to W partly collected batches (nothing partial is visible; a rerun
    collects them again). A worker death loses the batches it owns: their episodes are collected
    again (the same seeds give the same episodes), up to ``retries`` deaths per task.
    See :mod:`hmpc.collect_schedule`.
    """
    root = Path(output_dir)
    done = collected_episodes(root)
    bounds = batch_bounds(done, episodes, flush_every)
    if not bounds:
        return root
    plans = plan_batches(root, [[(steps, TASK)] * (stop - start) for start, stop in bounds],
                         fps=fps, robot_type=env_spec.name)
    remove_stale_staging(root)
    # The scheduler and the workers number episodes as the dataset does (plan.first_ep); video
    # imported into the dataset shifts that numbering from the collected one the seeds follow.
    off = plans[0].first_ep - done
    bounds = [(start + off, stop + off) for start, stop in bounds]
    seeds = {i + off: episode_seed(seed, i) for i in range(done, episodes)}
    # files the policy names are read here, so workers on other machines need no shared filesystem
    policy_spec = PolicySpec(policy_spec.name, ship_policy(policy_spec.name, policy_spec.kwargs))
    fns = {"episode": functools.partial(_episode_task, steps), "feed": _feed_task}
    pool = make_pool(functools.partial(_collect_setup, env_spec, policy_spec), fns,
                     min(workers, episodes - done), address=address, start_timeout_s=start_timeout_s)
    bar = tqdm(total=(episodes - done) * steps, unit="frame", desc="collect", disable=not progress)
    try:
        CollectScheduler(pool, plans, bounds, seeds, retries).run(root, bar)
    finally:
        pool.close()
        bar.close()
    return root
