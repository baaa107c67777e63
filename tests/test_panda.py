"""Panda tasks (reach, push, pick-and-place) and their scripted experts: gymnasium API,
determinism and exact state save/restore, bad inputs, joint limits, goal images, experts."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from helpers import seeded_rollout

from robots.panda import PandaPickPlaceEnv, PandaPushEnv, PandaReachEnv
from robots.panda_scene import CUBE_RGBA, WORKSPACE_HIGH, WORKSPACE_LOW
from skills.panda_experts import PandaPickPlaceExpert, PandaPushExpert, PandaReachExpert

ENVS = [PandaReachEnv, PandaPushEnv, PandaPickPlaceEnv]
EXPERTS = {PandaReachEnv: PandaReachExpert, PandaPushEnv: PandaPushExpert,
           PandaPickPlaceEnv: PandaPickPlaceExpert}  # fmt: skip
IDS = ["reach", "push", "pick_place"]


@pytest.fixture(params=ENVS, ids=IDS)
def env(request):
    e = request.param(image_size=24)
    yield e
    e.close()


def _joint_positions(e) -> np.ndarray:
    return np.array([s[0] for s in e._client.getJointStates(e.robot.body, e.robot.joints)])


def _cube_mask(pixels: np.ndarray) -> np.ndarray:
    red = np.array(CUBE_RGBA[:3]) * 255
    return np.all(np.abs(pixels.astype(float) - red) < 30, axis=-1)


def _expert_actions(e, seed: int, n: int) -> list[np.ndarray]:
    """n expert actions from a reset(seed) episode (contacts and grasps included)."""
    obs, _ = e.reset(seed=seed)
    expert = EXPERTS[type(e)](e)
    expert.reset(seed)
    actions = []
    for _ in range(n):
        actions.append(expert.act(obs))
        obs, *_ = e.step(actions[-1])
    return actions


def test_check_env_passes(env):
    with pytest.warns(UserWarning):  # only the infinite state bounds are expected to warn
        check_env(env, skip_render_check=True)


def test_observation_layout(env):
    obs, info = env.reset(seed=0)
    d = 14 if env.HAS_CUBE else 7
    assert env.observation_space.contains(obs)
    assert obs["pixels"].shape == (24, 24, 3) and obs["state"].shape == (d,)
    assert info["goal_state"].shape == (d,) and info["goal_state"].dtype == np.float32
    ts = env.task_state()
    np.testing.assert_allclose(obs["state"][:3], ts["ee"], atol=1e-6)
    assert obs["state"][3] == pytest.approx(ts["gripper_width"], abs=1e-6)
    if env.HAS_CUBE:
        np.testing.assert_allclose(obs["state"][7:10], ts["cube"], atol=1e-6)
        assert obs["state"][9] == pytest.approx(env.cube_size / 2, abs=1e-6)  # on the table
    n = env.GOAL_DIM
    first = 7 if env.HAS_CUBE else 0
    np.testing.assert_allclose(info["goal_state"][first : first + n], ts["goal"], atol=1e-6)
    assert not info["is_success"] and info["distance"] >= env.min_goal_distance - 1e-9
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert reward == pytest.approx(-info["distance"]) and terminated is False
    assert info["action_clipped"] is False and info["path_distance"] == -1
    np.testing.assert_array_equal(env.render(), obs["pixels"])


def test_same_seed_same_pixels_and_states(env):
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 4))

    g1, f1, s1 = seeded_rollout(env, 3, actions)
    g2, f2, s2 = seeded_rollout(env, 3, actions)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(seeded_rollout(env, 4, actions)[2], s1)


@pytest.mark.parametrize("cls", ENVS, ids=IDS)
def test_clone_and_set_state_replay_bitwise(cls):
    """Mid-episode (with the cube pushed or grasped) a clone synced by set_state, and the env
    itself after set_state, continue bitwise like the original."""
    e = cls(image_size=24)
    try:
        _expert_actions(e, seed=1, n=18)
        saved = e.get_state()
        actions = np.random.default_rng(1).uniform(-1, 1, (6, 4))
        first = [e.step(a)[0] for a in actions]
        twin = e.clone()
        try:
            twin.reset(seed=99)  # a different history first
            for a in actions[:3]:
                twin.step(-a)
            twin.set_state(saved)
            np.testing.assert_array_equal(
                twin.goal_observation()["pixels"], e.goal_observation()["pixels"]
            )  # noqa: E501
            for a, o1 in zip(actions, first, strict=True):
                o2 = twin.step(a)[0]
                np.testing.assert_array_equal(o1["state"], o2["state"])
                np.testing.assert_array_equal(o1["pixels"], o2["pixels"])
            np.testing.assert_array_equal(twin.get_state(), e.get_state())
        finally:
            twin.close()
        e.set_state(saved)
        np.testing.assert_array_equal(e.get_state(), saved)
        for a, o1 in zip(actions, first, strict=True):
            np.testing.assert_array_equal(e.step(a)[0]["state"], o1["state"])
        end = e.get_state()
        e.set_state(saved)  # simulate() is step() without rendering
        for a in actions:
            distance, path = e.simulate(a)
        np.testing.assert_array_equal(e.get_state(), end)
        assert distance == e._goal_distance() and path == -1
    finally:
        e.close()


def test_goal_image_shows_goal_and_leaves_state_alone(env):
    obs, info = env.reset(seed=2)
    before = env.get_state()
    assert not np.array_equal(info["goal_pixels"], obs["pixels"])
    new_goal = {PandaReachEnv: [0.6, 0.2, 0.3], PandaPushEnv: [0.4, -0.2],
                PandaPickPlaceEnv: [0.6, 0.2, 0.2]}[type(env)]  # fmt: skip
    state = before.copy()
    state[-1 - env.GOAL_DIM : -1] = new_goal
    env.set_state(state)
    after = env.get_state()
    np.testing.assert_array_equal(after[: -1 - env.GOAL_DIM], before[: -1 - env.GOAL_DIM])
    goal_obs = env.goal_observation()
    assert not np.array_equal(goal_obs["pixels"], info["goal_pixels"])
    first = 7 if env.HAS_CUBE else 0
    goal_part = goal_obs["state"][first : first + env.GOAL_DIM]
    np.testing.assert_allclose(goal_part, new_goal, atol=1e-6)
    # Reaching the goal through the real robot gives (nearly) the goal image, not a marker.
    e2 = type(env)(image_size=24)
    try:
        _, info2 = e2.reset(seed=5, options={"goal": new_goal})
        np.testing.assert_array_equal(info2["goal_pixels"], goal_obs["pixels"])
    finally:
        e2.close()


def test_push_goal_image_has_cube_at_goal():
    e = PandaPushEnv(image_size=48)
    try:
        obs, info = e.reset(seed=0, options={"goal": (0.4, -0.2)})
        now, goal = _cube_mask(obs["pixels"]), _cube_mask(info["goal_pixels"])
        assert now.sum() > 0 and goal.sum() > 0
        # The front camera looks along -x: world +y is image right, so y = -0.2 is left.
        assert np.nonzero(goal)[1].mean() < 24
        assert not np.array_equal(now, goal)
    finally:
        e.close()


@pytest.mark.parametrize(
    "goal", [(2.0, 0.0, 0.2), (0.5, 0.0, -0.1), (0.5, 0.0, 1.0), (np.nan, 0, 0.2), (0.5, 0.0)]
)
def test_bad_goals_raise(goal):
    e = PandaReachEnv(image_size=16)
    try:
        with pytest.raises(ValueError, match=r"options\['goal'\]"):
            e.reset(seed=0, options={"goal": goal})
        with pytest.raises(ValueError, match="accepted"):
            e.reset(seed=0, options={"gaol": (0.5, 0.0, 0.2)})
        obs, _ = e.reset(seed=0, options={"goal": (0.5, 0.0, 0.2)})  # still usable
        assert np.all(np.isfinite(obs["state"]))
    finally:
        e.close()


def test_goal_bounds_in_error_message():
    e = PandaPickPlaceEnv(image_size=16)
    try:
        with pytest.raises(ValueError, match=r"outside the workspace.*<= goal <="):
            e.reset(options={"goal": (0.5, 0.0, 0.0)})  # below a resting cube's centre
        e.reset(options={"goal": (0.5, 0.0, e.cube_size / 2)})  # resting on the table is fine
    finally:
        e.close()


def test_bad_actions_do_not_corrupt_the_sim(env):
    env.reset(seed=0)
    twin = env.clone()
    try:
        twin.reset(seed=0)
        obs, _, _, _, info = env.step(np.array([np.nan, np.inf, -np.inf, np.nan]))
        assert info["action_clipped"] and np.all(np.isfinite(obs["state"]))
        ref = twin.step(np.zeros(4))[0]  # non-finite entries act as 0
        np.testing.assert_array_equal(obs["state"], ref["state"])
        obs, _, _, _, info = env.step(np.array([50.0, -1e9, 3.0, 7.0]))
        assert info["action_clipped"]
        np.testing.assert_array_equal(
            obs["state"], twin.step(np.array([1.0, -1, 1, 1]))[0]["state"]
        )
        saved = env.get_state()
        for bad in (np.zeros(3), np.zeros(5), np.zeros((2, 4)), np.zeros((4, 1, 2))):
            with pytest.raises(ValueError, match="shape"):
                env.step(bad)
        np.testing.assert_array_equal(env.get_state(), saved)
        with pytest.raises(ValueError, match="get_state"):
            env.set_state(saved[:-1])
        np.testing.assert_array_equal(
            env.step(np.zeros(4))[0]["state"], twin.step(np.zeros(4))[0]["state"]
        )  # noqa: E501
    finally:
        twin.close()


@pytest.mark.parametrize("cls", ENVS, ids=IDS)
def test_joint_limits_and_workspace_hold_under_random_actions(cls):
    e = cls(image_size=8, max_episode_steps=1000)
    try:
        e.reset(seed=4)
        rng = np.random.default_rng(4)
        lim = e.robot.limits
        for t in range(60):
            # Saturated pushes towards the box corners for a while, then huge random ones.
            a = np.sign(rng.normal(size=4)) if t % 20 < 10 else rng.normal(0, 1e6, 4)
            obs, *_ = e.step(a)
            q = _joint_positions(e)
            assert np.all(q >= lim.lower - 1e-4) and np.all(q <= lim.upper + 1e-4), (t, q)
            ee = obs["state"][:3]
            assert np.all(ee >= WORKSPACE_LOW - 0.03) and np.all(ee <= WORKSPACE_HIGH + 0.03), ee
            assert np.all(np.isfinite(obs["state"]))
    finally:
        e.close()


def test_push_ignores_gripper_command():
    e = PandaPushEnv(image_size=8)
    try:
        e.reset(seed=0)
        for g in (1.0, -1.0, 1.0):
            obs, *_ = e.step(np.array([0.0, 0.0, 0.0, g]))
            assert obs["state"][3] < 1e-3  # width stays shut
    finally:
        e.close()


@pytest.mark.parametrize("cls", ENVS, ids=IDS)
def test_info_says_when_the_cube_is_past_the_hands_reach(cls):
    e = cls(image_size=8)
    try:
        _, info = e.reset(seed=0)
        if not cls.HAS_CUBE:
            assert "object_out_of_reach" not in info
            return
        assert info["object_out_of_reach"] is False  # sampled in the table region
        half = e.cube_size / 2
        for xy, lost in [((0.30, 0.0), False), ((WORKSPACE_LOW[0] - 0.01, 0.0), True),
                         ((0.5, WORKSPACE_HIGH[1] + 0.02), True), ((WORKSPACE_HIGH[0] - 0.01, 0.1), False)]:
            e._place_cube(np.array([*xy, half]))
            assert e._info()["object_out_of_reach"] is lost, xy
    finally:
        e.close()


@pytest.mark.parametrize("cls", ENVS, ids=IDS)
def test_expert_succeeds(cls):
    e = cls(image_size=8)
    expert = EXPERTS[cls](e)
    try:
        for seed in range(5):
            obs, _ = e.reset(seed=seed)
            expert.reset(seed)
            success = False
            for _ in range(e.max_episode_steps):
                obs, _, _, _, info = e.step(expert.act(obs))
                if info["is_success"]:
                    success = True
                    break
            assert success, (cls.__name__, seed, info["distance"], expert.phase)
    finally:
        e.close()


def test_pick_place_expert_misses_on_purpose_then_succeeds():
    """miss_prob=1: the first grasp closes off the cube and lifts without it (the cube stays on
    the table while the closed hand rises), then the expert grasps for real and succeeds."""
    e = PandaPickPlaceEnv(image_size=8)
    try:
        for seed in range(3):
            obs, _ = e.reset(seed=seed)
            expert = PandaPickPlaceExpert(e, miss_prob=1.0, miss_offset=(0.03, 0.05))
            expert.reset(seed)
            assert expert.missing and 0.03 <= np.linalg.norm(expert._aim) <= 0.05
            half = e.cube_size / 2
            phases, lift, success = [], [], False
            for _ in range(e.max_episode_steps):
                obs, _, _, _, info = e.step(expert.act(obs))
                phases.append(expert.phase)
                ts = e.task_state()
                if expert.phase == "misslift":
                    lift.append((ts["ee"][2], ts["cube"][2], ts["gripper_width"]))
                if info["is_success"]:
                    success = True
                    break
            # the last closing step already names the next phase, then miss_lift_steps lifts
            assert len(lift) == expert.miss_lift_steps + 1, (seed, phases)
            ee_z, cube_z, width = np.array(lift).T
            assert ee_z[-1] - ee_z[0] > 0.05, (seed, ee_z)  # the closed hand rose...
            assert np.all(cube_z < half + 0.01), (seed, cube_z)  # ...without the cube
            assert np.all(width < e.cube_size), (seed, width)  # closed (on nothing)
            assert not expert.missing and "carry" in phases[phases.index("misslift"):]
            assert success, (seed, info["distance"], expert.phase)
    finally:
        e.close()


def test_pick_place_expert_miss_draw_leaves_the_noise_alone():
    e = PandaPickPlaceEnv(image_size=8)
    try:
        e.reset(seed=4)
        plain, miss = PandaPickPlaceExpert(e, noise=0.3), PandaPickPlaceExpert(e, noise=0.3, miss_prob=1.0)
        plain.reset(11)
        miss.reset(11)
        assert not plain.missing and miss.missing
        np.testing.assert_array_equal(plain._rng.normal(size=8), miss._rng.normal(size=8))
        for bad, match in [({"miss_prob": 1.5}, "miss_prob"), ({"miss_offset": (0.05, 0.03)}, "miss_offset"),
                           ({"miss_lift_steps": 0}, "miss_lift_steps")]:
            with pytest.raises(ValueError, match=match):
                PandaPickPlaceExpert(e, **bad)
    finally:
        e.close()


def test_expert_noise_is_seeded():
    e = PandaReachEnv(image_size=8)
    try:
        expert = PandaReachExpert(e, noise=0.3)
        obs, _ = e.reset(seed=0)
        expert.reset(7)
        a1 = expert.act(obs)
        expert.reset(7)
        np.testing.assert_array_equal(a1, expert.act(obs))
        assert a1.dtype == np.float32 and a1.shape == (4,) and np.all(np.abs(a1) <= 1)
        with pytest.raises(ValueError, match="noise"):
            PandaReachExpert(e, noise=-1.0)
        with pytest.raises(ValueError, match="task_state"):
            PandaReachExpert(object())
    finally:
        e.close()


def test_truncation_and_cameras():
    e = PandaReachEnv(image_size=16, max_episode_steps=2, camera_view="side")
    front = PandaReachEnv(image_size=16)
    try:
        e.reset(seed=0)
        assert [e.step(np.zeros(4))[3] for _ in range(2)] == [False, True]
        front.reset(seed=0)
        e.reset(seed=0)
        assert not np.array_equal(front.render(), e.render())
    finally:
        e.close()
        front.close()


def test_constructor_validation():
    with pytest.raises(ValueError, match="camera_view"):
        PandaReachEnv(camera_view="top")
    with pytest.raises(ValueError, match="unknown camera key"):
        PandaReachEnv(camera={"eyes": (1, 0, 1)})
    with pytest.raises(ValueError, match="max_step"):
        PandaReachEnv(max_step=0.5)
    with pytest.raises(ValueError, match="cube_size"):
        PandaPushEnv(cube_size=0.1)
    with pytest.raises(ValueError, match="air_goal_prob"):
        PandaPickPlaceEnv(air_goal_prob=2.0)
    with pytest.raises(ValueError, match="image_size"):
        PandaReachEnv(image_size=0)
    e = PandaReachEnv(image_size=8, camera={"fov_deg": 60.0})
    try:
        assert e.camera.fov_deg == 60.0 and e.camera.eye == (1.3, 0.0, 0.85)
    finally:
        e.close()
