"""Datasets in the LeRobot v3.0 layout, a decoded-frame cache and a window sampler."""

from hmpc.data.lerobot import CODEBASE_VERSION, Episode, LeRobotDataset, write_episodes
from hmpc.data.validate import Problem, validate_dataset
from hmpc.data.video import DatasetError
from hmpc.data.windows import FrameArrays, WindowSampler, build_frame_cache, split_episodes

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
    "write_episodes",
]
