"""PushTEnv (gymnasium API, determinism, bad inputs, success predicate, physics) and its expert."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from helpers import seeded_rollout

from robots.push_t import (
    BLOCK_BOXES,
    BLOCK_GYRATION,
    BLOCK_RADIUS,
    BLOCK_RGB,
    FLOOR_RGB,
    PARK_FRACTION,
    PUSHER_RADIUS,
    PUSHER_RGB,
    PushTEnv,
    distance_to_block,
)
from skills.push_t_expert import PushTExpert, _segments_clear


@pytest.fixture
def env():
    e = PushTEnv(image_size=32)
    yield e
    e.close()


def _mask(pixels: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.all(pixels == np.array(rgb, np.uint8), axis=-1)


def _pixel_centroid(mask: np.ndarray, size: float) -> np.ndarray:
    """World (x, y) of a mask's centroid for the default camera (row 0 = top = y max)."""
    rows, cols = np.nonzero(mask)
    n = mask.shape[0]
    return np.array([(cols.mean() + 0.5) / n * size, (1 - (rows.mean() + 0.5) / n) * size])


def test_check_env_passes(env):
    with pytest.warns(UserWarning):  # only the infinite state bounds are expected to warn
        check_env(env, skip_render_check=True)


def test_observation_layout_and_colours(env):
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (6,)
    st = env.task_state()
    np.testing.assert_allclose(obs["state"][:4], [*st["pusher"][:2], *st["block"][:2]], atol=1e-6)
    np.testing.assert_allclose(obs["state"][4:], [np.cos(st["block"][2]), np.sin(st["block"][2])],
                               atol=1e-6)  # fmt: skip
    g = st["goal"]
    np.testing.assert_allclose(info["goal_state"], [*np.multiply(PARK_FRACTION, 1.0), g[0], g[1],
                                                    np.cos(g[2]), np.sin(g[2])], atol=1e-6)  # fmt: skip
    assert info["goal_pixels"].shape == (32, 32, 3) and info["path_distance"] == -1
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert reward == pytest.approx(-info["distance"]) and not terminated and not truncated
    colours = {tuple(c) for c in np.unique(obs["pixels"].reshape(-1, 3), axis=0).tolist()}
    assert colours == {FLOOR_RGB, BLOCK_RGB, PUSHER_RGB}
    np.testing.assert_array_equal(env.render(), obs["pixels"])


def test_same_seed_same_episode_and_different_seeds_differ(env):
    actions = np.random.default_rng(0).uniform(-1, 1, (12, 2))

    first, second = seeded_rollout(env, 7, actions), seeded_rollout(env, 7, actions)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    starts = {tuple(env.reset(seed=s)[0]["state"]) for s in range(4)}
    assert len(starts) == 4


def test_clone_and_set_state_replay_bitwise_through_contacts(env):
    # Pusher below the stem, pushing up: the replay window starts mid-push, in contact.
    env.reset(seed=1, options={"start": (0.5, 0.45, 0.0), "pusher": (0.5, 0.2)})
    for _ in range(6):
        env.step([0.0, 1.0])
    saved = env.get_state()
    assert saved.dtype == np.float64 and saved.shape == (16,)
    assert distance_to_block(saved[:2], saved[4:7]) < PUSHER_RADIUS + 1e-3  # touching
    actions = np.random.default_rng(1).uniform(-1.2, 1.2, (15, 2))
    actions[:, 1] = np.abs(actions[:, 1])
    first = [env.step(a) for a in actions]
    assert np.linalg.norm(env.get_state()[4:6] - saved[4:6]) > 0.02  # the block was pushed
    env.set_state(saved)
    second = [env.step(a) for a in actions]
    twin = env.clone()
    try:
        twin.set_state(saved)
        third = [twin.step(a) for a in actions]
        np.testing.assert_array_equal(twin.goal_observation()["pixels"],
                                      env.goal_observation()["pixels"])  # fmt: skip
    finally:
        twin.close()
    for run in (second, third):
        for (o1, r1, *_), (o2, r2, *_) in zip(first, run, strict=True):
            np.testing.assert_array_equal(o1["state"], o2["state"])
            np.testing.assert_array_equal(o1["pixels"], o2["pixels"])
            assert r1 == r2


def test_goal_image_shows_t_at_goal_and_pusher_parked(env):
    obs, info = env.reset(seed=0, options={"start": (0.3, 0.3, 0.0), "goal": (0.6, 0.55, 0.0),
                                           "pusher": (0.8, 0.8)})  # fmt: skip
    before = env.get_state()
    goal_img = info["goal_pixels"]
    # The T's pixel centroid is its centre of mass; the pusher sits at the parking spot.
    np.testing.assert_allclose(_pixel_centroid(_mask(goal_img, BLOCK_RGB), 1.0), [0.6, 0.55],
                               atol=1.5 / 32)  # fmt: skip
    np.testing.assert_allclose(_pixel_centroid(_mask(goal_img, PUSHER_RGB), 1.0), PARK_FRACTION,
                               atol=1.5 / 32)  # fmt: skip
    np.testing.assert_allclose(_pixel_centroid(_mask(obs["pixels"], BLOCK_RGB), 1.0), [0.3, 0.3],
                               atol=1.5 / 32)  # fmt: skip
    # Rendering the goal again leaves the simulator exactly as it was.
    np.testing.assert_array_equal(env._render_goal(), goal_img)
    np.testing.assert_array_equal(env.get_state(), before)
    np.testing.assert_array_equal(env.render(), obs["pixels"])


@pytest.mark.parametrize("bad", [(0.05, 0.5, 0.0), (0.5, 0.95, 0.0), (np.nan, 0.5, 0.0),
                                 (0.5, 0.5), (0.5, 0.5, np.inf)])  # fmt: skip
def test_goal_or_start_outside_the_arena_raise(env, bad):
    with pytest.raises(ValueError, match=r"options\['goal'\].*\[0\.161, 0\.839\]"):
        env.reset(seed=0, options={"goal": bad})
    with pytest.raises(ValueError, match=r"options\['start'\]"):
        env.reset(seed=0, options={"start": bad})


def test_bad_pusher_and_unknown_options(env):
    env.reset(seed=0)
    before = env.get_state()
    with pytest.raises(ValueError, match=r"options\['pusher'\].*radius"):
        env.reset(seed=0, options={"start": (0.5, 0.5, 0.0), "pusher": (0.5, 0.5)})
    np.testing.assert_array_equal(env.get_state(), before)  # a rejected reset changes nothing
    with pytest.raises(ValueError, match=r"options\['pusher'\]"):
        env.reset(seed=0, options={"pusher": (-0.1, 0.5)})
    with pytest.raises(ValueError, match="accepted"):
        env.reset(options={"gaol": (0.5, 0.5, 0.0)})


def test_non_finite_wrong_shape_and_out_of_range_actions(env):
    env.reset(seed=0, options={"start": (0.7, 0.7, 0.0), "pusher": (0.3, 0.3)})
    before = env.get_state()
    obs, _, _, _, info = env.step(np.array([np.nan, np.inf]))
    assert info["action_clipped"] and np.all(np.isfinite(obs["state"]))
    np.testing.assert_allclose(obs["state"][:2], before[:2], atol=1e-6)  # nan/inf -> 0
    obs, _, _, _, info = env.step(np.array([5.0, 0.0]))  # clipped to 1: max_speed per tick
    assert info["action_clipped"]
    assert obs["state"][0] - before[0] == pytest.approx(env.max_speed, abs=2e-3)
    _, _, _, _, info = env.step(np.array([0.5, -0.5], np.float32))
    assert info["action_clipped"] is False
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((2, 2)))
    assert np.all(np.isfinite(env.get_state()))


def test_success_predicate_and_distance(env):
    goal = np.array([0.5, 0.5, 0.3])
    tol, atol = env.success_pos_tol, env.success_angle_tol

    def info_at(dx, dth):
        return env.reset(seed=0, options={"goal": goal, "start": goal + [dx, 0.0, dth]})[1]

    info = info_at(0.0, 0.0)
    assert info["is_success"] and info["distance"] == pytest.approx(0.0, abs=1e-9)
    assert info_at(0.8 * tol, 0.8 * atol)["is_success"]
    assert not info_at(1.3 * tol, 0.0)["is_success"]
    assert not info_at(0.0, 1.3 * atol)["is_success"]
    assert not info_at(0.0, -1.3 * atol)["is_success"]
    info = info_at(0.04, 0.5)
    assert info["distance"] == pytest.approx(np.hypot(0.04, 2 * BLOCK_GYRATION * np.sin(0.25)))
    assert info_at(0.0, np.pi)["distance"] == pytest.approx(2 * BLOCK_GYRATION)
    # The block at rest stays a success under zero actions.
    info_at(0.0, 0.0)
    for _ in range(3):
        assert env.step(np.zeros(2))[4]["is_success"]


def test_pushed_block_stays_in_arena_and_stops():
    e = PushTEnv(image_size=16, max_episode_steps=1000)
    try:
        e.reset(seed=0, options={"start": (0.5, 0.5, 0.0), "pusher": (0.5, 0.25)})
        for _ in range(60):  # pushes the T into the top wall and keeps pressing
            obs, *_ = e.step(np.array([0.1, 1.0]))
        block = e.task_state()["block"]
        corners = np.array([[x + sx * hx, y + sy * hy] for x, y, hx, hy in BLOCK_BOXES
                            for sx in (-1, 1) for sy in (-1, 1)])  # fmt: skip
        c, s = np.cos(block[2]), np.sin(block[2])
        world = corners @ np.array([[c, s], [-s, c]]) + block[:2]
        assert np.all(world > -2e-3) and np.all(world < 1 + 2e-3)
        assert distance_to_block(obs["state"][:2].astype(np.float64), block) > PUSHER_RADIUS - 3e-3
        for _ in range(10):  # pusher backs off; the block comes to rest
            e.step(np.array([0.0, -1.0]))
        before = e.task_state()["block"]
        for _ in range(5):
            e.step(np.zeros(2))
        np.testing.assert_allclose(e.task_state()["block"][:3], before[:3], atol=1e-4)
    finally:
        e.close()


def test_truncation_and_constructor_validation():
    e = PushTEnv(image_size=8, max_episode_steps=2)
    try:
        e.reset(seed=0)
        assert [e.step(np.zeros(2))[3] for _ in range(2)] == [False, True]
    finally:
        e.close()
    for kwargs, match in [({"arena_size": 0.5}, "arena_size"), ({"max_speed": 0.2}, "max_speed"),
                          ({"success_pos_tol": 0.0}, "success_pos_tol"),
                          ({"max_goal_rotation_deg": 200}, "max_goal_rotation_deg"),
                          ({"max_goal_offset": 0.05}, "max_goal_offset"),
                          ({"render_mode": "human"}, "render_mode"),
                          ({"camera": {"fovv": 3}}, "camera key")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            PushTEnv(**kwargs)


def test_camera_override_and_bounded_goal_rotation():
    e = PushTEnv(image_size=16, camera={"fov_deg": 1.0}, max_goal_rotation_deg=10.0)
    try:
        obs, info = e.reset(seed=0)
        assert e.camera.fov_deg == 1.0 and obs["pixels"].shape == (16, 16, 3)
        for seed in range(5):
            e.reset(seed=seed)
            st = e.task_state()
            rot = (st["goal"][2] - st["block"][2] + np.pi) % (2 * np.pi) - np.pi
            assert abs(rot) <= np.radians(10.0) + 1e-9
            lo, hi = BLOCK_RADIUS, 1 - BLOCK_RADIUS
            assert np.all((st["goal"][:2] > lo) & (st["goal"][:2] < hi))
    finally:
        e.close()


def test_bounded_goal_offset_keeps_goals_near_the_start():
    near, anywhere = PushTEnv(image_size=8, max_goal_offset=0.1), PushTEnv(image_size=8)
    try:
        gaps = {"near": [], "anywhere": []}
        for seed in range(20):
            for name, e in (("near", near), ("anywhere", anywhere)):
                e.reset(seed=seed)
                st = e.task_state()
                gaps[name].append(float(np.hypot(*(st["goal"][:2] - st["block"][:2]))))
        assert max(gaps["near"]) <= 0.1 + 1e-9, gaps["near"]
        assert max(gaps["anywhere"]) > 0.2  # the default draws goals across the arena
    finally:
        near.close()
        anywhere.close()


# ---------------------------------------------------------------- expert
def test_expert_solves_seeded_episodes():
    e = PushTEnv(image_size=16)
    expert = PushTExpert(e)
    try:
        for seed in range(3):
            obs, _ = e.reset(seed=seed)
            expert.reset(seed=seed)
            for _ in range(e.max_episode_steps):
                obs, _, _, truncated, info = e.step(expert.act(obs))
                if info["is_success"] or truncated:
                    break
            assert info["is_success"], f"seed {seed}: expert failed, {e.task_state()}"
            action = expert.act(obs)  # done: holds still
            assert action.dtype == np.float32 and action.shape == (2,)
    finally:
        e.close()


def test_expert_noise_is_seeded_and_bad_arguments():
    e = PushTEnv(image_size=8)
    try:
        expert = PushTExpert(e, noise=0.5)
        obs, _ = e.reset(seed=3)
        runs = []
        for _ in range(2):
            expert.reset(seed=11)
            runs.append([expert.act(obs) for _ in range(3)])
        np.testing.assert_array_equal(runs[0], runs[1])
        assert np.all(np.abs(runs[0]) <= 1.0)
        with pytest.raises(ValueError, match="noise"):
            PushTExpert(e, noise=-1.0)
    finally:
        e.close()
    with pytest.raises(ValueError, match="PushTEnv"):
        PushTExpert(object())


def test_expert_path_check_matches_dense_sampling():
    rng = np.random.default_rng(0)
    pose = np.array([0.5, 0.5, 0.7])
    a, b = rng.uniform(0.2, 0.8, (400, 2)), rng.uniform(0.2, 0.8, (400, 2))
    points = a + np.linspace(0, 1, 801)[:, None, None] * (b - a)
    expected = distance_to_block(points, pose).min(0) >= 0.034
    np.testing.assert_array_equal(_segments_clear(a, b, pose, 0.034), expected)


# ---------------------------------------------------------------- goal_mode="push"
def test_push_goals_start_at_a_contact_and_show_where_the_push_left_the_pusher():
    e, other = PushTEnv(image_size=32, goal_mode="push"), PushTEnv(image_size=32)
    try:
        for seed in range(6):
            obs, info = e.reset(seed=seed)
            st = e.task_state()
            gap = float(distance_to_block(st["pusher"][:2], st["block"][:3]))
            assert 0.005 + PUSHER_RADIUS <= gap <= PUSHER_RADIUS + 0.0101  # 1 cm off the outline
            assert not info["is_success"] and e._far(st["block"][:3], st["goal"])
            q = info["goal_state"][:2]  # the goal image's pusher, drawn there
            np.testing.assert_allclose(_pixel_centroid(_mask(info["goal_pixels"], PUSHER_RGB), 1.0),
                                       q, atol=1.5 / 32)  # fmt: skip
            # It pushed: it moved on from the start (at most as far as the push's speed allows)
            # and ends at the T's goal pose (a push that slides off ends there).
            moved = np.hypot(*(q - st["pusher"][:2]))
            assert 0.02 < moved <= 25 * 0.6 * 0.025 + 1e-6
            assert distance_to_block(q, st["goal"]) <= PUSHER_RADIUS + 0.02 + 0.025 * 0.6
            # The state (goal-image pusher included) carries over to another env exactly.
            other.reset(seed=100)
            other.set_state(e.get_state())
            np.testing.assert_array_equal(other.render(), obs["pixels"])
            goal = other.goal_observation()
            np.testing.assert_array_equal(goal["pixels"], info["goal_pixels"])
            np.testing.assert_array_equal(goal["state"], info["goal_state"])
        e.reset(seed=1)
        again = e.get_state()
        e.reset(seed=1)
        np.testing.assert_array_equal(e.get_state(), again)
        # A rejected reset changes nothing, though the push was simulated before the check.
        before = e.get_state()
        with pytest.raises(ValueError, match=r"options\['pusher'\]"):
            e.reset(seed=3, options={"pusher": (-1.0, 0.5)})
        np.testing.assert_array_equal(e.get_state(), before)
        # A goal given as an option makes a pose-mode episode: the goal image's pusher is parked.
        _, info = e.reset(seed=0, options={"goal": (0.6, 0.55, 0.0)})
        np.testing.assert_allclose(info["goal_state"][:2], PARK_FRACTION)
    finally:
        e.close()
        other.close()


def test_goal_pusher_option_and_goal_mode_validation(env):
    _, info = env.reset(seed=0, options={"goal": (0.6, 0.55, 0.0), "goal_pusher": (0.2, 0.8)})
    np.testing.assert_allclose(info["goal_state"][:2], [0.2, 0.8])
    with pytest.raises(ValueError, match=r"options\['goal_pusher'\].*goal pose"):
        env.reset(seed=0, options={"goal": (0.6, 0.55, 0.0), "goal_pusher": (0.6, 0.55)})
    for kwargs, match in [({"goal_mode": "expert"}, "goal_mode"),
                          ({"goal_push_steps": 0}, "goal_push_steps")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            PushTEnv(image_size=8, **kwargs)
