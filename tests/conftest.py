"""Fixtures shared by several test files (plain helpers are in ``tests/helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import random_frames, write_square_dataset


@pytest.fixture(scope="module")
def square_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 16-frame moving-square episodes (16x16 px, 10 fps) as a LeRobot dataset.

    Built once per test module, so a module's tests share the dataset (and its frame cache)
    while modules stay independent of each other.
    """
    return write_square_dataset(tmp_path_factory.mktemp("square") / "ds")


@pytest.fixture(scope="module")
def tiny_cube(tmp_path_factory: pytest.TempPathFactory):
    """A cube model fit for a few steps on a few PandaPickPlace frames (32 pixels), saved:
    (model, folder, frames). Used by test_cube.py and test_cube_planner.py."""
    from hmpc.cube_model import camera_config, fit_cube_model, save_cube_model
    from robots import make_env

    frames = random_frames("panda_pick_place", 2, 6, image_size=32)
    model = fit_cube_model(frames, ensemble=2, steps=5, horizon=3, hidden=16, readout_steps=5, progress=False)
    env = make_env("panda_pick_place", image_size=32)
    camera = camera_config(env.unwrapped.camera)
    env.close()
    folder = save_cube_model(tmp_path_factory.mktemp("cube") / "cube", model,
                             {"env": "panda_pick_place", "image_size": 32, "camera": camera})
    return model, folder, frames
