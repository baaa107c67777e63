"""Robustness conditions: wrappers, and evaluation rows per condition on the same seeds."""

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from hmpc.cli.common import plain
from hmpc.controllers import ControllerSpec
from hmpc.evaluate import EvalConfig, evaluate
from hmpc.oracle import clone_simulator
from hmpc.rollout import EnvSpec
from robots import make_env
from robots.perturbations import ActionDelay, DynamicsChange, ObservationNoise, apply_perturbations


def test_observation_noise_is_seeded_and_leaves_the_goal_clean():
    env = ObservationNoise(make_env("point_maze", image_size=32), std=10.0)
    a, _ = env.reset(seed=1)
    b, _ = env.reset(seed=1)
    clean = env.unwrapped.render()
    assert np.array_equal(a["pixels"], b["pixels"]) and not np.array_equal(a["pixels"], clean)
    goal = env.unwrapped.goal_observation()["pixels"]
    assert set(np.unique(goal.reshape(-1, 3), axis=0).sum(1)) <= {255 * 3, 63 * 3, 255}  # 3 colours


def test_action_delay_applies_commands_late():
    env = ActionDelay(make_env("point_maze", layout="open", image_size=16), steps=1)
    obs, _ = env.reset(seed=0, options={"start": (3.5, 3.5)})
    obs1, *_ = env.step(np.array([1.0, 0.0], np.float32))
    assert np.allclose(obs1["state"][:2], obs["state"][:2])  # the zero command from the queue
    obs2, *_ = env.step(np.array([0.0, 0.0], np.float32))
    assert obs2["state"][0] > obs1["state"][0] + 0.2  # now the delayed +x command


def _push_episode(env, seed: int, steps: int = 40):
    """Push-T from seed's start with the pusher driven along a fixed path: (goal state, final state)."""
    obs, _ = env.reset(seed=seed)
    goal = env.unwrapped.goal_observation()["state"]
    block = obs["state"][2:4]
    for t in range(steps):  # toward the block, then through it
        towards = block - obs["state"][:2] if t < steps // 2 else np.array([1.0, 0.3])
        obs, *_ = env.step(np.clip(towards / (np.abs(towards).max() + 1e-9), -1, 1).astype(np.float32))
    return goal, obs["state"]


def test_dynamics_change_scales_the_scene_and_leaves_the_goal_nominal():
    kw = {"image_size": 16, "goal_mode": "push"}  # push goals are simulated: they must use nominal dynamics
    nominal = make_env("push_t", **kw)
    same = DynamicsChange(make_env("push_t", **kw))  # factors 1: nothing changes
    slippery = DynamicsChange(make_env("push_t", **kw), mass=1.2, friction=0.5)
    try:
        goal, final = _push_episode(nominal, seed=3)
        goal1, final1 = _push_episode(same, seed=3)
        for _ in range(2):  # the second episode checks the undo before the next goal is sampled
            goal_s, final_s = _push_episode(slippery, seed=3)
            np.testing.assert_array_equal(goal_s, goal)
        np.testing.assert_array_equal(goal1, goal)
        np.testing.assert_array_equal(final1, final)
        assert np.abs(final_s[2:4] - final[2:4]).max() > 1e-3  # the block moved differently
        c, nominal_values = slippery.unwrapped.bullet_client, slippery._nominal
        for (b, link), (mass, _, friction) in nominal_values.items():
            info = c.getDynamicsInfo(b, link)
            if mass > 0:  # movable: heavier, its own friction kept
                assert info[0] == pytest.approx(1.2 * mass) and info[1] == pytest.approx(friction)
            else:  # static surfaces: half the friction
                assert info[0] == 0 and info[1] == pytest.approx(0.5 * friction)
        kinds = {m > 0 for m, _, _ in nominal_values.values()}
        assert kinds == {True, False}  # both kinds were checked
    finally:
        for env in (nominal, same, slippery):
            env.close()
    with pytest.raises(ValueError, match=r"dynamics mass=0.0 must be a finite factor > 0"):
        DynamicsChange(make_env("point_maze", image_size=16), mass=0.0)


@pytest.mark.parametrize("changed", [True, False])
def test_the_oracle_clone_plans_in_the_changed_dynamics(changed):
    """The oracle's simulator replays the perturbed episode exactly; a clone at nominal dynamics
    (what it had before) drifts from it."""
    env = DynamicsChange(make_env("push_t", image_size=16), mass=2.0, friction=0.5)
    obs, _ = env.reset(seed=4)
    sim = clone_simulator(env) if changed else env.unwrapped.clone()
    try:
        sim.set_state(env.unwrapped.get_state())
        block = obs["state"][2:4]
        for t in range(30):  # toward the block, then through it
            towards = block - obs["state"][:2] if t < 15 else np.array([1.0, 0.3])
            action = np.clip(towards / (np.abs(towards).max() + 1e-9), -1, 1).astype(np.float32)
            obs, *_ = env.step(action)
            sim.simulate(action)
        same = np.array_equal(sim.get_state(), env.unwrapped.get_state())
        assert same == changed
        if not changed:  # the block, not only the pusher, moved differently
            assert np.abs(sim.get_state()[4:6] - env.unwrapped.get_state()[4:6]).max() > 1e-4
    finally:
        sim.close()
        env.close()


def test_unknown_perturbation_lists_known():
    with pytest.raises(ValueError, match="obs_noise"):
        apply_perturbations(make_env("point_maze", image_size=16), [{"name": "gravity_flip"}])


def test_conditions_are_rows_on_the_same_seeds(tmp_path):
    spec = EnvSpec("point_maze", {"image_size": 16, "max_episode_steps": 5})
    conds = {"nominal": {}, "obs_noise": {"wrappers": [{"name": "obs_noise", "std": 5}]},
             "slow": {"env": {"max_speed": 0.2}}}
    info = evaluate(spec, None, [ControllerSpec(name="random", kind="random")],
                    EvalConfig(episodes=2, max_steps=5, workers=0, videos=0), tmp_path, False, conds)
    assert list(info["aggregated"]) == ["random", "random [obs_noise]", "random [slow]"]
    ids = [r["episode_id"] for r in info["per_episode"]]
    assert len(ids) == len(set(ids)) == 6
    seeds = {c: [r["seed"] for r in info["per_episode"] if r["condition"] == c] for c in conds}
    assert seeds["nominal"] == seeds["obs_noise"] == seeds["slow"]
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert csv[0].startswith("task,controller,n_episodes,pc_success") and len(csv) == 4
    compared = [(c["compared"], c["reference"], c["pairs"]) for c in info["paired"]]
    assert compared == [("random [obs_noise]", "random", 2), ("random [slow]", "random", 2)]
    assert "| random [slow] | random | 2 |" in (tmp_path / "results.md").read_text()


def test_robustness_preset_composes():
    with initialize_config_module("configs", version_base="1.3"):
        cfg = compose("eval", overrides=["conditions=robustness"])
    assert set(cfg.conditions) == {"nominal", "obs_noise", "action_delay", "speed_-20%", "speed_+20%"}
    with initialize_config_module("configs", version_base="1.3"):
        cfg = compose("eval", overrides=["conditions=dynamics"])
    env = apply_perturbations(make_env("panda_push", image_size=16), plain(cfg.conditions)["friction_-20%"]["wrappers"])
    try:
        assert isinstance(env, DynamicsChange) and env.friction == 0.8 and env.mass == 1.0
    finally:
        env.close()


def test_ood_starts_rows_start_where_their_region_says(tmp_path):
    with initialize_config_module("configs", version_base="1.3"):
        conds = plain(compose("eval", overrides=["conditions=ood_starts"]).conditions)
    spec = EnvSpec("point_maze", {"layout": "medium", "image_size": 16})
    info = evaluate(spec, None, [ControllerSpec(name="random", kind="random")],
                    EvalConfig(episodes=4, max_steps=2, workers=0, videos=0), tmp_path, False, conds)
    assert list(info["aggregated"]) == ["random [in_distribution]", "random [ood_starts]"]
    # start distance is recorded per episode; starts differ between the rows on the same seeds
    rows = {c: [r["start_distance"] for r in info["per_episode"] if r["condition"] == c] for c in conds}
    assert rows["in_distribution"] != rows["ood_starts"]
    assert info["paired"] == []  # other starts: not pairs, so no paired comparison
