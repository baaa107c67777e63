"""Maze families: the giant layout, seeded random layouts per episode, TwoRooms' moving door,
and start/goal sampling by path-distance bucket."""

from __future__ import annotations

import numpy as np
import pytest

from robots import PointMazeEnv, parse_layout
from robots.layouts import LayoutError, all_pairs_cell_distances, random_maze, two_rooms
from robots.two_rooms import TwoRoomsEnv


def test_giant_layout_is_connected_and_long():
    walls = parse_layout("giant")
    assert walls.shape == (12, 16)
    _, dist = all_pairs_cell_distances(walls)
    assert (dist >= 0).all() and dist.max() >= 20


def test_random_maze_is_seeded_connected_and_varied():
    a, b = random_maze(9, 11, seed=1), random_maze(9, 11, seed=1)
    np.testing.assert_array_equal(a, b)
    mazes = {random_maze(9, 11, seed=s).tobytes() for s in range(20)}
    assert len(mazes) == 20
    for s in range(20):
        walls = random_maze(9, 11, seed=s)
        _, dist = all_pairs_cell_distances(walls)
        assert (dist >= 0).all() and walls[0].all() and walls[:, -1].all()
    with pytest.raises(LayoutError, match="odd"):
        random_maze(8, 9, seed=0)


def test_random_layout_per_episode_from_the_seed_range():
    env = PointMazeEnv(layout="random", random_size=(7, 7), layout_seeds=(100, 110), image_size=16)
    try:
        ids = set()
        for seed in range(12):
            env.reset(seed=seed)
            ids.add(env.layout_id)
            assert 100 <= env.layout_id < 110
            np.testing.assert_array_equal(env.walls, random_maze(7, 7, seed=env.layout_id))
        assert len(ids) > 3
        _, info = env.reset(seed=0, options={"layout_id": 5000})
        assert env.layout_id == 5000  # an unseen layout, chosen explicitly
        # A clone built with the constructor's layout picks the episode's layout from the state.
        sim = env.clone()
        try:
            sim.set_state(env.get_state())
            np.testing.assert_array_equal(sim.walls, env.walls)
            np.testing.assert_array_equal(sim.render(), env.render())
        finally:
            sim.close()
    finally:
        env.close()
    fixed = PointMazeEnv(layout="umaze", image_size=16)
    try:
        with pytest.raises(ValueError, match="layout_id"):
            fixed.reset(seed=0, options={"layout_id": 3})
    finally:
        fixed.close()


@pytest.mark.parametrize("bucket", [(1, 2), (5, 7), (12, 30)])
def test_path_distance_buckets(bucket):
    env = PointMazeEnv(layout="large", image_size=16)
    try:
        for seed in range(8):
            _, info = env.reset(seed=seed, options={"path_distance": bucket})
            assert bucket[0] <= info["path_distance"] <= bucket[1]
        with pytest.raises(ValueError, match="no start/goal pair"):
            env.reset(seed=0, options={"path_distance": (90, 99)})
    finally:
        env.close()
    capped = PointMazeEnv(layout="large", image_size=16, min_goal_distance=3, max_goal_distance=4)
    try:
        for seed in range(8):
            assert 3 <= capped.reset(seed=seed)[1]["path_distance"] <= 4
    finally:
        capped.close()
    with pytest.raises(ValueError, match="max_goal_distance"):
        PointMazeEnv(min_goal_distance=3, max_goal_distance=2)


def test_two_rooms_door_moves_with_the_seed_and_pairs_cross_rooms():
    env = TwoRoomsEnv(image_size=16)
    try:
        doors = set()
        mid = env.n_cols // 2
        for seed in range(15):
            obs, info = env.reset(seed=seed)
            doors.add(env.layout_id)
            np.testing.assert_array_equal(env.walls, two_rooms(7, 11, env.layout_id))
            start_col = int(np.floor(obs["state"][0]))
            goal_col = int(np.floor(info["goal_state"][0]))
            assert (start_col - mid) * (goal_col - mid) < 0  # opposite rooms
            assert info["path_distance"] >= 2
        assert len(doors) >= 4
        env.reset(seed=0, options={"layout_id": 1})
        assert not env.walls[1, mid] and env.walls[2:-1, mid].all()
    finally:
        env.close()
    with pytest.raises(LayoutError, match="door_width"):
        TwoRoomsEnv(door_width=9)
