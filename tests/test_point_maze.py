"""PointMazeEnv: gymnasium API, seeding, options, physics, state save/restore, layouts, registry."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robots import (
    ENV_REGISTRY,
    NAMED_LAYOUTS,
    LayoutError,
    PointMazeEnv,
    make_env,
    parse_layout,
    register_gymnasium_envs,
)
from robots.layouts import cell_path_distances, free_cells
from robots.point_maze import BALL_RGB, FLOOR_RGB, WALL_RGB


@pytest.fixture
def env():
    e = PointMazeEnv(layout="umaze", image_size=32)
    yield e
    e.close()


def _ball_mask(pixels: np.ndarray) -> np.ndarray:
    return np.all(pixels == np.array(BALL_RGB, np.uint8), axis=-1)


def _in_wall(e: PointMazeEnv, xy: np.ndarray) -> bool:
    r, c = int(e.n_rows - np.floor(xy[1]) - 1), int(np.floor(xy[0]))
    return not (0 <= r < e.n_rows and 0 <= c < e.n_cols) or bool(e.walls[r, c])


def test_check_env_passes(env):
    with pytest.warns(UserWarning):  # only the infinite state bounds are expected to warn
        check_env(env, skip_render_check=True)


def test_observations_in_space(env):
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["pixels"].dtype == np.uint8 and obs["pixels"].shape == (32, 32, 3)
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (4,)
    assert info["goal_pixels"].shape == (32, 32, 3) and info["goal_pixels"].dtype == np.uint8
    assert info["goal_state"].dtype == np.float32 and info["goal_state"].shape == (4,)
    assert isinstance(info["is_success"], bool) and isinstance(info["path_distance"], int)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert reward == pytest.approx(-info["distance"]) and terminated is False
    assert info["action_clipped"] is False
    colours = {tuple(c) for c in np.unique(obs["pixels"].reshape(-1, 3), axis=0).tolist()}
    assert colours <= {FLOOR_RGB, WALL_RGB, BALL_RGB}
    np.testing.assert_array_equal(env.render(), obs["pixels"])


def test_same_seed_same_episode_and_different_seeds_differ(env):
    actions = np.random.default_rng(0).uniform(-1, 1, (15, 2))

    def run(seed):
        obs, info = env.reset(seed=seed)
        frames = [obs["pixels"]] + [env.step(a)[0]["pixels"] for a in actions]
        return info["goal_state"], np.stack(frames), env.get_state()

    g1, f1, s1 = run(7)
    g2, f2, s2 = run(7)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(s1, s2)
    starts = {tuple(env.reset(seed=s)[0]["state"][:2]) for s in range(5)}
    assert len(starts) == 5


def test_sampled_goal_respects_min_goal_distance():
    e = PointMazeEnv(layout="medium", image_size=16, min_goal_distance=4)
    try:
        for seed in range(10):
            _, info = e.reset(seed=seed)
            assert info["path_distance"] >= 4
    finally:
        e.close()
    with pytest.raises(ValueError, match="min_goal_distance"):
        PointMazeEnv(layout="umaze", min_goal_distance=50)


def test_options_start_goal_and_success(env):
    obs, info = env.reset(seed=0, options={"start": (1.5, 3.5), "goal": (1.5, 1.5)})
    np.testing.assert_allclose(obs["state"][:2], [1.5, 3.5])
    np.testing.assert_allclose(info["goal_state"], [1.5, 1.5, 0, 0])
    assert info["path_distance"] == 6 and not info["is_success"]
    assert info["distance"] == pytest.approx(2.0)
    # Start inside the goal region: success right away and after a zero action.
    _, info = env.reset(seed=0, options={"start": (3.5, 2.5), "goal": (3.6, 2.4)})
    assert info["is_success"] and info["path_distance"] == 0
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["is_success"]


@pytest.mark.parametrize("bad", [(0.5, 0.5), (2.5, 2.5), (-1.0, 3.5), (np.nan, 1.0), (1.0,)])
def test_options_outside_free_cell_raise(env, bad):
    with pytest.raises(ValueError, match="options"):
        env.reset(seed=0, options={"goal": bad})


def test_unknown_option_raises(env):
    with pytest.raises(ValueError, match="accepted"):
        env.reset(options={"gaol": (1.5, 1.5)})


def test_goal_pixels_show_ball_at_goal(env):
    obs, info = env.reset(seed=0, options={"start": (1.5, 3.5), "goal": (1.5, 1.5)})
    goal_img = info["goal_pixels"]
    assert not np.array_equal(goal_img, obs["pixels"])
    rows, cols = np.nonzero(_ball_mask(goal_img))
    assert rows.size > 0
    # Goal (1.5, 1.5) is cell (row 3, col 1) of the 5x5 umaze: image rows/cols 3/5..4/5 of 32.
    assert 32 * 3 / 5 <= rows.mean() <= 32 * 4 / 5 and 32 / 5 <= cols.mean() <= 32 * 2 / 5
    np.testing.assert_array_equal(env.goal_observation()["pixels"], goal_img)
    # Rendering the goal must not move the ball.
    np.testing.assert_allclose(env.get_state()[:2], [1.5, 3.5])


# Start in cell (row 3, col 2) of the umaze; the ball rests one radius (0.25) from the wall
# faces it is pushed into; diagonally it slides along walls into the far corner of the U.
@pytest.mark.parametrize(
    ("direction", "rest"),
    [
        ((0, 1), (2.5, 1.75)),
        ((0, -1), (2.5, 1.25)),
        ((1, 0), (3.75, 1.5)),
        ((-1, 0), (1.25, 1.5)),
        ((1, 1), (3.75, 3.75)),
    ],
)
def test_walls_stop_the_ball(direction, rest):
    e = PointMazeEnv(layout="umaze", image_size=16, max_episode_steps=1000)
    try:
        e.reset(seed=0, options={"start": (2.5, 1.5)})
        for _ in range(200):
            obs, *_ = e.step(np.array(direction, np.float32))
            assert np.all(np.isfinite(obs["state"]))
            assert not _in_wall(e, obs["state"][:2].astype(np.float64))
        np.testing.assert_allclose(obs["state"][:2], rest, atol=1e-3)
        np.testing.assert_allclose(obs["state"][2:], 0.0, atol=1e-3)
    finally:
        e.close()


def test_random_walk_never_enters_walls():
    e = PointMazeEnv(layout="large", image_size=16, max_episode_steps=1000)
    try:
        e.reset(seed=1)
        rng = np.random.default_rng(1)
        for _ in range(300):
            obs, *_ = e.step(rng.uniform(-1, 1, 2))
            assert not _in_wall(e, obs["state"][:2].astype(np.float64))
    finally:
        e.close()


def test_non_finite_and_out_of_range_actions(env):
    env.reset(seed=0, options={"start": (2.5, 1.5)})
    obs, _, _, _, info = env.step(np.array([np.nan, np.inf]))
    assert info["action_clipped"] and np.all(np.isfinite(obs["state"]))
    np.testing.assert_allclose(obs["state"][:2], [2.5, 1.5], atol=1e-6)  # nan/inf -> 0
    obs, _, _, _, info = env.step(np.array([5.0, 0.0]))
    assert info["action_clipped"]
    assert obs["state"][2] == pytest.approx(env.max_speed, abs=1e-4)  # clipped to |a| = 1
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))


def test_truncation_at_max_episode_steps():
    e = PointMazeEnv(image_size=16, max_episode_steps=3)
    try:
        e.reset(seed=0)
        flags = [e.step(np.zeros(2))[3] for _ in range(3)]
        assert flags == [False, False, True]
    finally:
        e.close()


def test_get_set_state_replay_is_bitwise():
    e = PointMazeEnv(layout="medium", image_size=32)
    try:
        e.reset(seed=3)
        rng = np.random.default_rng(3)
        for _ in range(20):
            e.step(rng.uniform(-1, 1, 2))
        saved = e.get_state()
        assert saved.dtype == np.float64 and saved.shape == (8,)
        actions = rng.uniform(-1.2, 1.2, (10, 2))
        first = [e.step(a) for a in actions]
        e.set_state(saved)
        second = [e.step(a) for a in actions]
        for (o1, r1, *_), (o2, r2, *_) in zip(first, second, strict=True):
            np.testing.assert_array_equal(o1["state"], o2["state"])
            np.testing.assert_array_equal(o1["pixels"], o2["pixels"])
            assert r1 == r2
    finally:
        e.close()


def test_set_state_changes_goal_image(env):
    env.reset(seed=0, options={"goal": (1.5, 3.5)})
    state = env.get_state()
    state[4:6] = (3.5, 2.5)
    env.set_state(state)
    goal_obs = env.goal_observation()
    np.testing.assert_allclose(goal_obs["state"][:2], (3.5, 2.5))
    rows, _ = np.nonzero(_ball_mask(goal_obs["pixels"]))
    assert 32 * 2 / 5 <= rows.mean() <= 32 * 3 / 5


# ---------------------------------------------------------------- layouts
def test_named_layouts_parse():
    shapes = {"open": (7, 7), "umaze": (5, 5), "medium": (8, 8), "large": (9, 12)}
    for name, shape in shapes.items():
        walls = parse_layout(name)
        assert walls.shape == shape and walls.dtype == bool
        assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
    assert set(shapes) <= set(NAMED_LAYOUTS)
    np.testing.assert_array_equal(parse_layout("#.#\n#..\n"), parse_layout(["#.#", "#.."]))
    np.testing.assert_array_equal(parse_layout(["# #"]), parse_layout(["#.#"]))


def test_layout_errors():
    with pytest.raises(LayoutError, match=r"'x' at row 1, column 2.*allowed"):
        parse_layout(["###", "#.x"])
    with pytest.raises(LayoutError, match="no free cell"):
        parse_layout(["###", "###"])
    with pytest.raises(LayoutError, match="row 1"):
        parse_layout(["###", "#."])
    with pytest.raises(LayoutError, match="empty"):
        parse_layout([])
    with pytest.raises(LayoutError, match="umaze"):
        parse_layout("mediun")
    assert issubclass(LayoutError, ValueError)


def test_free_cells_and_distances():
    walls = parse_layout("umaze")
    cells = free_cells(walls)
    assert cells.shape == (7, 2)
    dist = cell_path_distances(walls, (1, 1))
    assert dist[3, 1] == 6 and dist[1, 3] == 2 and dist[0, 0] == -1
    with pytest.raises(ValueError, match="free cell"):
        cell_path_distances(walls, (0, 0))


def test_open_boundary_layout_is_closed_by_env():
    e = PointMazeEnv(layout=["...", "..."], image_size=16)
    try:
        e.reset(seed=0, options={"start": (1.5, 1.5)})
        for _ in range(50):
            obs, *_ = e.step(np.array([1.0, 1.0]))
        np.testing.assert_allclose(
            obs["state"][:2], [3 - e.BALL_RADIUS, 2 - e.BALL_RADIUS], atol=1e-3
        )
    finally:
        e.close()


# ---------------------------------------------------------------- registry
def test_make_env_and_errors():
    e = make_env("point_maze", layout="open", image_size=16)
    try:
        assert isinstance(e, PointMazeEnv) and e.walls.shape == (7, 7)
    finally:
        e.close()
    with pytest.raises(ValueError, match=r"unknown env 'nope'.*point_maze"):
        make_env("nope")
    with pytest.raises(ValueError, match=r"'image_szie'.*image_size"):
        make_env("point_maze", image_szie=16)
    assert "point_maze" in ENV_REGISTRY


def test_gymnasium_registration():
    register_gymnasium_envs()
    register_gymnasium_envs()  # idempotent
    e = gymnasium.make("hmpc/PointMaze-v0", image_size=16)
    try:
        obs, info = e.reset(seed=0)
        assert obs["pixels"].shape == (16, 16, 3) and "goal_pixels" in info
    finally:
        e.close()


def test_constructor_validation():
    with pytest.raises(ValueError, match="image_size"):
        PointMazeEnv(image_size=0)
    with pytest.raises(ValueError, match="render_mode"):
        PointMazeEnv(render_mode="human")


def test_start_region_restricts_starts_and_rejects_bad_boxes():
    env = PointMazeEnv(layout="medium", image_size=16, start_region=[0, 0, 4, 8])
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        assert obs["state"][0] <= 4.0, (seed, obs["state"][:2])
    assert env.clone().start_region == (0.0, 0.0, 4.0, 8.0)
    with pytest.raises(ValueError, match="start_region"):
        PointMazeEnv(layout="medium", start_region=[4, 0, 1, 8])
    empty = PointMazeEnv(layout="medium", image_size=16, start_region=[0.1, 0.1, 0.2, 0.2])
    with pytest.raises(ValueError, match="start_region"):
        empty.reset(seed=0)


def test_exclude_regions_keep_starts_and_goals_out_and_reject_bad_boxes():
    # U-maze: the bottom-left free cell spans x, y in [1, 2]; 40 seeds would hit it without exclusion
    env = PointMazeEnv(layout="umaze", image_size=16, exclude_regions=[[1, 1, 2, 2]])
    hits = 0
    plain = PointMazeEnv(layout="umaze", image_size=16)
    for seed in range(40):
        state = env.reset(seed=seed)[0]["state"]
        for xy in (state[:2], env.task_state()["goal"]):
            assert not (xy[0] < 2.0 and xy[1] < 2.0), (seed, xy)
        s, g = plain.reset(seed=seed)[0]["state"][:2], plain.task_state()["goal"]
        hits += sum(bool(p[0] < 2.0 and p[1] < 2.0) for p in (s, g))
    assert hits > 0
    assert env.clone().exclude_regions == ((1.0, 1.0, 2.0, 2.0),)
    with pytest.raises(ValueError, match=r"exclude_regions\[0\]"):
        PointMazeEnv(layout="umaze", exclude_regions=[[2, 1, 1, 2]])
    everything = PointMazeEnv(layout="umaze", image_size=16, exclude_regions=[[0, 0, 5, 5]])
    with pytest.raises(ValueError, match="exclude_regions"):
        everything.reset(seed=0)
