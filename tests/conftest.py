"""Fixtures shared by several test files (plain helpers are in ``tests/helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_square_dataset


@pytest.fixture(scope="module")
def square_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 16-frame moving-square episodes (16x16 px, 10 fps) as a LeRobot dataset.

    Built once per test module, so a module's tests share the dataset (and its frame cache)
    while modules stay independent of each other.
    """
    return write_square_dataset(tmp_path_factory.mktemp("square") / "ds")
