"""Decoded-frame cache and fixed-length window sampling for world-model training.

Video decoding is the slow part of data loading, so every episode is decoded once into a
uint8 memmap under ``<root>/.cache``; training then samples windows by fancy indexing.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hmpc.data.lerobot import LeRobotDataset
from hmpc.data.video import DatasetError

__all__ = ["FrameArrays", "WindowSampler", "build_frame_cache", "split_episodes", "with_state"]

_CACHE_VERSION = b"hmpc-frame-cache-2"  # bump when the cache file layout changes


@dataclass
class FrameArrays:
    """All frames of a dataset, episodes back to back (N frames, E episodes)."""

    pixels: np.ndarray  # uint8 (N, H, W, 3), a read-only np.memmap when built from a cache
    state: np.ndarray  # float32 (N, d), zeros where has_state is False
    action: np.ndarray  # float32 (N, A), zeros where has_action is False (A=0: no actions)
    has_action: np.ndarray  # bool (N,)
    episode_index: np.ndarray  # int64 (N,)
    episode_starts: np.ndarray  # int64 (E,), first frame of each episode
    episode_lengths: np.ndarray  # int64 (E,)
    path: Path | None = None  # the pixel memmap file
    reused: bool = False  # True when loaded from an existing cache instead of decoded
    has_state: np.ndarray | None = None  # bool (N,), False in episodes that logged no state
    # (imported video); None: every frame has one

    def __post_init__(self) -> None:
        if self.has_state is None:
            self.has_state = np.ones(self.num_frames, bool)

    @property
    def num_frames(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_lengths.shape[0])


def state_frames(parts: Sequence[FrameArrays]) -> FrameArrays:
    """The episodes of ``parts`` back to back, states and actions only: ``pixels`` is an empty
    (N, 0, 0, 3) array. For models of the state and actions alone (windows never cross from one
    part to the next: each part's episodes stay episodes)."""
    if not parts:
        raise ValueError("state_frames needs at least one FrameArrays")
    shapes = {(f.state.shape[1], f.action.shape[1]) for f in parts}
    if len(shapes) > 1:
        raise ValueError(f"state_frames: the parts' (state, action) sizes differ: {sorted(shapes)}")
    lengths = np.concatenate([f.episode_lengths for f in parts]).astype(np.int64)
    return FrameArrays(
        pixels=np.zeros((int(lengths.sum()), 0, 0, 3), np.uint8),
        state=np.concatenate([f.state for f in parts]), action=np.concatenate([f.action for f in parts]),
        has_action=np.concatenate([f.has_action for f in parts]),
        has_state=np.concatenate([f.has_state for f in parts]),
        episode_index=np.repeat(np.arange(len(lengths), dtype=np.int64), lengths),
        episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), episode_lengths=lengths)


def with_state(frames: FrameArrays, source: str = "the dataset") -> FrameArrays:
    """The episodes of ``frames`` that logged a state (``frames`` itself when all did): for fits
    that read ``state`` on every frame. Their pixels are a view of ``frames.pixels`` when they are
    one run of frames (imported video appended after the collected episodes), else a copy in
    memory. ``source`` names the data in the error raised when no episode has a state."""
    if frames.has_state.all():
        return frames
    keep = frames.has_state[frames.episode_starts]  # (E,): a state is logged for a whole episode or not at all
    if not keep.any():
        raise DatasetError(f"no episode of {source} has observation.state (all imported video); this step "
                           "needs episodes collected with their state (hmpc-collect)")
    rows = np.repeat(keep, frames.episode_lengths)
    lengths = frames.episode_lengths[keep]
    first, last = np.flatnonzero(rows)[[0, -1]]
    run = int(rows.sum()) == last - first + 1  # one run: a slice of the memory-mapped cache, no copy
    return FrameArrays(
        pixels=frames.pixels[first : last + 1] if run else np.asarray(frames.pixels[rows]),
        state=frames.state[rows], action=frames.action[rows],
        has_action=frames.has_action[rows],
        episode_index=np.repeat(np.arange(len(lengths), dtype=np.int64), lengths),
        episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        episode_lengths=lengths)


def cache_key(dataset: LeRobotDataset) -> str:
    """Hash of info.json + stats.json + camera + size and mtime of every data/video file read:
    changes whenever episodes are added or a file is replaced (so a file corrupted or repaired
    after the cache was built is decoded and checked again, never silently served stale)."""
    h = hashlib.sha256(_CACHE_VERSION)
    for name in ("info.json", "stats.json"):
        path = dataset.root / "meta" / name
        h.update(path.read_bytes() if path.is_file() else b"")
    h.update(dataset.camera_key.encode())
    for path in dataset.data_files():
        st = path.stat() if path.is_file() else None
        rel = os.path.relpath(path, dataset.root)
        h.update(f"{rel}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};".encode())
    return h.hexdigest()[:16]


def build_frame_cache(dataset: LeRobotDataset, cache_dir: str | Path | None = None,
                      progress: bool = True) -> FrameArrays:
    """Decode every episode once into ``cache_dir/frames-<hash>.u8`` (+ ``.npz`` low-dim data).

    Reuses the files when the hash (:func:`cache_key`) matches, so a second call is cheap and
    an append or a replaced file triggers a rebuild. Building decodes and checks every episode
    (:meth:`LeRobotDataset.load_episode`), so a defect stops it with file, episode and frame.
    Files are written to temp names and renamed, the pixel file last, so a crash never leaves a
    cache that looks complete.
    """
    if dataset.num_frames == 0:
        raise DatasetError(f"dataset {dataset.root} has no frames; collect episodes first")
    cache_dir = Path(cache_dir) if cache_dir is not None else dataset.root / ".cache"
    key = cache_key(dataset)
    pix_path = cache_dir / f"frames-{key}.u8"
    low_path = cache_dir / f"frames-{key}.npz"
    shape = (dataset.num_frames, *dataset.image_shape)
    complete = (pix_path.is_file() and low_path.is_file()
                and pix_path.stat().st_size == int(np.prod(shape)))
    if not complete:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _decode_all(dataset, pix_path, low_path, shape, progress)
    with np.load(low_path, allow_pickle=False) as low:  # a cache file is data, never code
        arrays = {k: low[k] for k in low.files}
    pixels = np.memmap(pix_path, dtype=np.uint8, mode="r", shape=shape)
    return FrameArrays(pixels=pixels, path=pix_path, reused=complete, **arrays)


def _decode_all(dataset: LeRobotDataset, pix_path: Path, low_path: Path,
                shape: tuple[int, ...], progress: bool) -> None:
    """Decode all episodes into temp files, then rename them into place (pixels last)."""
    n, lengths = shape[0], dataset.episode_lengths
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    a_dim = dataset.action_dim or 0
    state = np.zeros((n, dataset.state_dim), np.float32)
    action = np.zeros((n, a_dim), np.float32)
    has_action = np.zeros(n, bool)
    has_state = np.zeros(n, bool)
    suffix = uuid.uuid4().hex
    tmp_pix = pix_path.with_name(f".{pix_path.name}.{suffix}.tmp")
    tmp_low = low_path.with_name(f".{low_path.name}.{suffix}.tmp")
    try:
        mm = np.memmap(tmp_pix, dtype=np.uint8, mode="w+", shape=shape)
        for i in tqdm(range(dataset.num_episodes), desc=f"decoding {dataset.root.name}",
                      unit="ep", disable=not progress):
            ep = dataset.load_episode(i)
            sl = slice(starts[i], starts[i] + lengths[i])
            mm[sl] = ep.pixels
            if ep.state is not None:
                state[sl] = ep.state
                has_state[sl] = True
            if ep.action is not None:
                action[sl] = ep.action
                has_action[sl] = True
        mm.flush()
        del mm
        with open(tmp_low, "wb") as f:
            np.savez(f, state=state, action=action, has_action=has_action, has_state=has_state,
                     episode_index=np.repeat(np.arange(len(lengths), dtype=np.int64), lengths),
                     episode_starts=starts, episode_lengths=lengths.astype(np.int64))
        os.replace(tmp_low, low_path)
        os.replace(tmp_pix, pix_path)
    finally:
        for tmp in (tmp_pix, tmp_low):
            tmp.unlink(missing_ok=True)


class WindowSampler:
    """Uniformly samples windows of ``window`` frames spaced ``frameskip`` apart in one episode.

    With frameskip k, the k actions between two kept frames are concatenated into one
    macro-action of size k*A (as DINO-WM does): action[b, t] = a[f_t], ..., a[f_t + k - 1].

    With ``require_actions=False`` windows without actions (video-only) are sampled too; by default
    uniformly over all windows, or with ``labelled_share`` set, that fraction of every batch comes
    from windows with actions and the rest from the others (with 10 % of episodes labelled, uniform
    batches are 90 % video-only, where only the anti-collapse terms train the encoder).
    """

    def __init__(self, frames: FrameArrays, window: int, frameskip: int = 1,
                 require_actions: bool = True, episodes: Sequence[int] | None = None,
                 labelled_share: float | None = None) -> None:
        if window < 1 or frameskip < 1:
            raise DatasetError(f"window ({window}) and frameskip ({frameskip}) must be >= 1")
        if labelled_share is not None and not 0.0 < labelled_share <= 1.0:
            raise ValueError(f"labelled_share={labelled_share} must be in (0, 1] (the fraction of "
                             "each batch with actions), or null to sample windows uniformly")
        self.frames, self.window, self.frameskip = frames, window, frameskip
        self.span = (window - 1) * frameskip + 1  # frames covered by one window
        self.n_actions = (window - 1) * frameskip  # raw actions inside one window
        ids = np.arange(frames.num_episodes) if episodes is None else np.asarray(episodes, int)
        # missing[j] = number of frames without an action before frame j
        missing = np.concatenate([[0], np.cumsum(~frames.has_action)])
        starts = []
        for e in ids:
            s0, length = int(frames.episode_starts[e]), int(frames.episode_lengths[e])
            cand = np.arange(s0, s0 + length - self.span + 1, dtype=np.int64)
            if require_actions:
                cand = cand[missing[cand + self.n_actions] - missing[cand] == 0]
            starts.append(cand)
        self.starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        labelled = missing[self.starts + self.n_actions] - missing[self.starts] == 0
        self._labelled, self._unlabelled = self.starts[labelled], self.starts[~labelled]
        self.labelled_share = labelled_share
        if self.starts.size == 0:
            longest = int(frames.episode_lengths[ids].max()) if len(ids) else 0
            raise DatasetError(
                f"no training window fits: window={window} frames with frameskip={frameskip} "
                f"spans {self.span} frames{' with actions' if require_actions else ''}, but the "
                f"longest of the {len(ids)} selected episodes has {longest} frames; lower "
                "window/frameskip or collect longer episodes")

    @property
    def num_windows(self) -> int:
        return int(self.starts.size)

    @property
    def num_labelled(self) -> int:
        """Windows whose every action is present."""
        return int(self._labelled.size)

    def __len__(self) -> int:
        return self.num_windows

    def sample(self, batch_size: int, rng: np.random.Generator,
               device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Draw ``batch_size`` windows uniformly (with replacement).

        Returns:
            "pixels" uint8 (B, T, 3, H, W), "state" float32 (B, T, d),
            "action" float32 (B, T-1, frameskip*A), "has_action" bool (B,),
            "has_state" bool (B,) (False: the window's episode logged no state, which is zeros),
            "index" int64 (B,) global index of each window's first frame.
        """
        share = self.labelled_share
        if share is None or not len(self._unlabelled) or not len(self._labelled):
            start = self.starts[rng.integers(0, self.num_windows, size=batch_size)]  # (B,)
            return self.gather(start, device)
        n_lab = round(share * batch_size)  # first the windows with actions, then video-only ones
        return self.sample_split(n_lab, batch_size - n_lab, rng, device)

    def sample_split(self, labelled: int, unlabelled: int, rng: np.random.Generator,
                     device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """``labelled`` windows with actions, then ``unlabelled`` video-only ones (with
        replacement; B = labelled + unlabelled, same keys as :meth:`sample`). Without video-only
        windows in the selected episodes the batch has only the labelled ones."""
        if labelled and not len(self._labelled):
            raise DatasetError(f"{labelled} labelled windows asked for, but no window of "
                               f"{self.window} frames in the selected episodes has every action")
        parts = [self._labelled[rng.integers(0, len(self._labelled), size=labelled)]]
        if len(self._unlabelled):
            parts.append(self._unlabelled[rng.integers(0, len(self._unlabelled), size=unlabelled)])
        return self.gather(np.concatenate(parts), device)

    def gather(self, start: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The windows beginning at global frame indices ``start`` (B,); see :meth:`sample`."""
        f, b = self.frames, len(start)
        frame_idx = start[:, None] + np.arange(self.window) * self.frameskip  # (B, T)
        act_idx = start[:, None] + np.arange(self.n_actions)  # (B, (T-1)*k)
        # (B, (T-1)*k, A) -> (B, T-1, k*A): consecutive raw actions become one macro-action
        action = f.action[act_idx].reshape(b, self.window - 1, self.frameskip * f.action.shape[1])
        has_action = f.has_action[act_idx].all(axis=1)  # all() of an empty row is True
        pixels = torch.from_numpy(np.ascontiguousarray(f.pixels[frame_idx])).to(device)
        return {
            "pixels": pixels.permute(0, 1, 4, 2, 3).contiguous(),  # (B,T,H,W,3) -> (B,T,3,H,W)
            "state": torch.from_numpy(f.state[frame_idx]).to(device),
            "action": torch.from_numpy(action).to(device),
            "has_action": torch.from_numpy(has_action).to(device),
            "has_state": torch.from_numpy(f.has_state[start]).to(device),
            "index": torch.from_numpy(start.astype(np.int64)).to(device),
        }


def split_episodes(num_episodes: int, val_fraction: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Randomly hold out whole episodes for validation.

    Returns:
        (train_ids, val_ids), sorted int64 arrays; at least one val episode when
        num_episodes >= 2 and val_fraction > 0, and at least one train episode always.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    n_val = int(round(num_episodes * val_fraction))
    if val_fraction > 0 and num_episodes >= 2:
        n_val = min(max(n_val, 1), num_episodes - 1)
    perm = rng.permutation(num_episodes)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)
