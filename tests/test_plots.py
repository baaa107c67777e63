"""Plots that results pages embed: files written, content that follows the data, bad input named."""

import cv2
import numpy as np
import pytest

from hmpc.plots import plot_paired_seeds


def _has_colour(png, bgr, tol=30) -> bool:
    img = cv2.imread(str(png))
    return bool((np.abs(img.astype(int) - np.array(bgr)).max(axis=2) < tol).any())


def test_paired_seeds_draws_better_blue_and_worse_red(tmp_path):
    red, blue = (40, 39, 214), (180, 119, 31)  # matplotlib's tab:red, tab:blue in BGR
    falls = plot_paired_seeds({"err": ([3.0, 2.0], [1.0, 0.5])}, ("a", "b"), [0, 1], tmp_path / "f.png")
    assert _has_colour(falls, blue) and not _has_colour(falls, red)
    mixed = plot_paired_seeds({"err": ([3.0, 2.0], [1.0, 2.5]), "succ": ([1, 2], [2, 3])}, ("a", "b"),
                              [4, 7], tmp_path / "m.png")
    assert _has_colour(mixed, red) and _has_colour(mixed, blue)
    assert cv2.imread(str(mixed)).shape[1] > cv2.imread(str(falls)).shape[1]  # one panel per measure
    rises = plot_paired_seeds({"succ": ([1, 2], [2, 3])}, ("a", "b"), [0, 1], tmp_path / "r.png",
                              higher_better=["succ"])
    assert _has_colour(rises, blue) and not _has_colour(rises, red)  # higher is better here


def test_paired_seeds_names_the_panel_with_too_few_values(tmp_path):
    with pytest.raises(ValueError, match="panel 'err': 1 and 2 values for 2 seeds"):
        plot_paired_seeds({"err": ([1.0], [1.0, 2.0])}, ("a", "b"), [0, 1], tmp_path / "x.png")
