"""Datasets in the LeRobot v3.0 layout, a decoded-frame cache and a window sampler.

The frame cache and sampler (:mod:`hmpc.data.windows`) need torch and load on first use, so
processes that only write or read datasets (collection workers) start without importing torch.
"""

from typing import Any

from hmpc.data.lerobot import CODEBASE_VERSION, Episode, LeRobotDataset
from hmpc.data.validate import Problem, validate_dataset
from hmpc.data.video import DatasetError
from hmpc.data.writer import write_episodes

_WINDOWS = ("FrameArrays", "WindowSampler", "build_frame_cache", "split_episodes", "with_state")

__all__ = [
    "CODEBASE_VERSION",
    "DatasetError",
    "Episode",
    "FrameArrays",
    "LeRobotDataset",
    "Problem",
    "WindowSampler",
    "build_frame_cache",
    "split_episodes",
    "validate_dataset",
    "with_state",
    "write_episodes",
]


def __getattr__(name: str) -> Any:
    if name in _WINDOWS:
        from hmpc.data import windows

        return getattr(windows, name)
    raise AttributeError(f"module 'hmpc.data' has no attribute {name!r}")
