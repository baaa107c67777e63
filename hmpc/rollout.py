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

from hmpc.data import Episode, write_episodes
from hmpc.data._meta import read_info
from hmpc.parallel import parallel_map
from robots import make_env
from robots.perturbations import apply_perturbations
from skills import make_policy


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
def _collect_setup(env_spec: EnvSpec, policy_spec: PolicySpec):
    env = env_spec.make()
    policy = make_policy(policy_spec.name, env, **policy_spec.kwargs)
    return env, policy


def _collect_one(steps: int, state, item: tuple[int, int]) -> tuple[int, Episode]:
    """Run one exploration episode of ``steps`` frames; returns (index, Episode)."""
    env, policy = state
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
        action=np.stack(actions), task="explore",
    )


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
) -> Path:
    """Make ``output_dir`` hold ``episodes`` reward-free episodes of ``steps`` frames (LeRobot v3.0).

    Episodes are written in batches of ``flush_every`` (each batch is published atomically, in
    episode-index order, so the dataset is identical for any number of workers).

    Resume and append: ``episodes`` is the *total*. If ``output_dir`` already holds a dataset
    with n episodes, only episodes n..episodes-1 are collected (episode i always uses seed
    ``episode_seed(seed, i)``), so rerunning a killed or crashed command yields exactly the
    dataset of an uninterrupted run, and raising ``episodes`` appends new episodes. Nothing is
    collected when n >= episodes. Only one collector may write to ``output_dir`` at a time.
    """
    root = Path(output_dir)
    done = int(read_info(root)["total_episodes"]) if (root / "meta/info.json").is_file() else 0
    items = [(i, episode_seed(seed, i)) for i in range(done, episodes)]
    if not items:
        return root
    gen = parallel_map(
        functools.partial(_collect_setup, env_spec, policy_spec),
        functools.partial(_collect_one, steps),
        items, workers, address=address,
    )
    bar = tqdm(total=len(items) * steps, unit="frame", desc="collect", disable=not progress)
    pending: dict[int, Episode] = {}
    next_index = done
    for index, ep in gen:
        pending[index] = ep
        bar.update(steps)
        # publish complete batches of the contiguous index prefix, in order
        while next_index < episodes:
            ids = range(next_index, min(next_index + flush_every, episodes))
            if any(i not in pending for i in ids):
                break
            write_episodes(root, [pending.pop(i) for i in ids], fps=fps, robot_type=env_spec.name)
            next_index = ids.stop
    bar.close()
    return root
