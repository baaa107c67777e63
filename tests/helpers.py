"""Plain helpers shared by several test files (imported as ``from helpers import ...``).

Fixtures built on them live in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hmpc.data import Episode, write_episodes
from hmpc.data.windows import FrameArrays

SQUARE_SIZE = 16  # image side of the moving-square episodes, pixels

# libx264 (through PyAV, one thread) gives different bytes for the same frames in up to 2 of 1000
# encodes, varying by process (bench/encode_determinism.py); the cause is not found. Differing
# encodes moved decoded pixels by at most 8 levels (mean 0.45; bench frames, 2026-12-06) and 25
# (mean 0.40; a collection test's maze frames). Reruns did not cover it: a process can keep
# encoding differently (one CI run failed all three tries). So tests that need "the same frames,
# in order" compare decoded frames within these bounds instead of mp4 bytes; a frame one step out
# of order (the agent a step away) differs by 255 levels.
FRAME_MAX_DIFF, FRAME_MEAN_DIFF = 96, 2.0


def assert_frames_match(a: np.ndarray, b: np.ndarray, where: str = "") -> None:
    """uint8 frames (T, H, W, 3) of two encodes of the same frames: equal up to encoder noise."""
    assert a.shape == b.shape, f"{where}: {a.shape} != {b.shape}"
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert d.max() <= FRAME_MAX_DIFF and d.mean() <= FRAME_MEAN_DIFF, \
        f"{where}: decoded frames differ by up to {int(d.max())} levels (mean {float(d.mean()):.3f})"


def mp4_frames(path: Path) -> np.ndarray:
    """Every frame of an mp4, uint8 (T, H, W, 3)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def assert_same_files(a: Path, b: Path) -> None:
    """The same relative files under a and b: byte for byte, mp4s frame for frame (encoder noise)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        if rel.suffix == ".mp4":
            assert_frames_match(mp4_frames(a / rel), mp4_frames(b / rel), str(rel))
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel} differs"


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
