"""Plain helpers shared by several test files (imported as ``from helpers import ...``).

Fixtures built on them live in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hmpc.data import Episode, write_episodes
from hmpc.data.windows import FrameArrays

SQUARE_SIZE = 16  # image side of the moving-square episodes, pixels

# libx264 (through PyAV, one thread) gives different bytes for the same frames in up to 2 of 1000
# encodes, varying by process (bench/encode_determinism.py); the cause is not found. The
# tests that compare mp4 bytes of separate encodes rerun on a failed assertion: a real difference
# (frame order, batching, a lost episode) fails every run.
ENCODER_RERUN = pytest.mark.flaky(reruns=2, only_rerun=["AssertionError"])


def square_episode(
    seed: int, t: int = 16, size: int = SQUARE_SIZE, with_action: bool = True
) -> Episode:
    """A bright 4x4 square on a dark background driven by the actions: the state is its position.

    Returns an episode of ``t`` frames: pixels ``(t, size, size, 3)`` uint8, state ``(t, 2)``
    float32 (the square's top-left corner, x then y), action ``(t, 2)`` float32 in [-1, 1]
    (``None`` when ``with_action`` is false: a video-only episode).
    """
    rng = np.random.default_rng(seed)
    action = rng.uniform(-1, 1, (t, 2)).astype(np.float32)
    pos = np.clip(4 + np.cumsum(np.vstack([[0, 0], action[:-1]]), axis=0), 0, size - 4)
    pixels = np.full((t, size, size, 3), 40, np.uint8)
    for i, (x, y) in enumerate(pos.astype(int)):
        pixels[i, y : y + 4, x : x + 4] = 220
    return Episode(pixels, pos.astype(np.float32), action if with_action else None)


def write_square_dataset(root: Path, episodes: int = 6, fps: int = 10) -> Path:
    """Write ``square_episode(0..episodes-1)`` as a LeRobot dataset at ``root``; returns ``root``."""
    write_episodes(root, [square_episode(i) for i in range(episodes)], fps=fps)
    return root


def seeded_rollout(
    env: Any, seed: int, actions: Sequence[np.ndarray] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``env.reset(seed=seed)`` then one ``env.step`` per action.

    Returns the goal image ``(H, W, 3)``, the frames ``(len(actions) + 1, H, W, 3)`` (the reset
    frame first) and ``env.get_state()`` at the end, for bitwise same-seed comparisons.
    """
    obs, info = env.reset(seed=seed)
    frames = [obs["pixels"]] + [env.step(a)[0]["pixels"] for a in actions]
    return info["goal_pixels"], np.stack(frames), env.get_state()


def random_frames(env_name: str, episodes: int, steps: int, **env_kwargs: Any) -> FrameArrays:
    """``episodes`` episodes (reset seeds 0..) of ``steps`` uniform random actions (seed 0) in
    ``env_name``, as the frame arrays the trainers read (every frame with its action)."""
    from robots import make_env

    env = make_env(env_name, **env_kwargs)
    rng = np.random.default_rng(0)
    dim = env.action_space.shape[0]
    pixels, state, action, index = [], [], [], []
    try:
        for e in range(episodes):
            obs, _ = env.reset(seed=e)
            for _ in range(steps):
                a = rng.uniform(-1, 1, dim).astype(np.float32)
                pixels.append(obs["pixels"])
                state.append(obs["state"])
                action.append(a)
                index.append(e)
                obs, *_ = env.step(a)
    finally:
        env.close()
    n = episodes * steps
    return FrameArrays(np.stack(pixels), np.stack(state), np.stack(action), np.ones(n, bool),
                       np.asarray(index, np.int64), np.arange(0, n, steps, dtype=np.int64),
                       np.full(episodes, steps, np.int64))
