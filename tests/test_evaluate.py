"""Evaluation harness: fault tolerance with Ray workers, and no ground truth for controllers."""

import functools
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle

import hmpc.evaluate as ev
from hmpc.controllers import ControllerSpec
from hmpc.evaluate import EvalConfig, evaluate, run_episode
from hmpc.mpc import Controller
from hmpc.parallel import parallel_map
from hmpc.rollout import EnvSpec
from hmpc.runtime import worker_device
from robots import make_env

# functions defined here run inside Ray workers, which cannot import this test module
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ENV = EnvSpec("point_maze", {"image_size": 32, "max_episode_steps": 15})


class Spy(Controller):
    """Records everything the harness hands it."""

    def __init__(self):
        self.seen: list[dict] = []
        self.rng = np.random.default_rng(0)

    def reset(self, obs, goal_obs):
        self.seen += [obs, goal_obs]

    def act(self, obs):
        self.seen.append(obs)
        return self.rng.uniform(-1, 1, 2).astype(np.float32), {}


def test_controller_never_receives_ground_truth():
    env = make_env("point_maze", image_size=32)
    spy = Spy()
    rec = run_episode(env, spy, seed=3, max_steps=10)
    assert rec["steps"] >= 1 and len(spy.seen) == 2 + rec["steps"]
    goal_state = env.unwrapped.goal_observation()["state"]
    for obs in spy.seen:
        assert set(obs) == {"pixels"}  # no state, no info, no success flag, no goal state
        assert obs["pixels"].shape == (32, 32, 3) and obs["pixels"].dtype == np.uint8
        assert not any(np.array_equal(v, goal_state) for v in obs.values())


def test_a_controller_that_fuses_proprioception_gets_only_the_state_prefix():
    """Push-T's state is [pusher x, y, block x, y, cos, sin]: a controller declaring
    state_dims=2 sees the pusher (in its observations and the goal's) and never the block."""
    env = make_env("push_t", image_size=32)
    spy = Spy()
    spy.observation_keys, spy.state_dims = ("pixels", "state"), 2
    rec = run_episode(env, spy, seed=0, max_steps=3)
    full = env.unwrapped.goal_observation()["state"]
    assert len(spy.seen) == 2 + rec["steps"] and full.shape == (6,)
    for obs in spy.seen:
        assert set(obs) == {"pixels", "state"} and obs["state"].shape == (2,)
    assert np.array_equal(spy.seen[1]["state"], full[:2])  # the goal's pusher, not its block pose


class Wild(Controller):
    """Commands out-of-range and non-finite actions on alternate steps."""

    def reset(self, obs, goal_obs):
        self.t = 0

    def act(self, obs):
        self.t += 1
        a = np.array([3.0, np.nan] if self.t % 2 else [0.5, -0.5], np.float32)
        return a, {}


def test_out_of_bounds_commands_are_counted():
    env = make_env("point_maze", image_size=32)
    rec = run_episode(env, Wild(), seed=3, max_steps=6)
    assert rec["actions_out_of_bounds"] == (rec["steps"] + 1) // 2
    rec = run_episode(env, Spy(), seed=3, max_steps=6)
    assert rec["actions_out_of_bounds"] == 0 and rec["object_out_of_reach"] is None  # a maze has no object


def _square(_state, x: int) -> int:
    return x * x


def _die_once(marker_dir: str, victim: int, _state, x: int) -> int:
    """SIGKILL this worker the first time it sees ``victim`` (a marker file remembers)."""
    marker = Path(marker_dir) / f"killed-{x}"
    if x == victim and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


@pytest.mark.ray
def test_parallel_map_replaces_dead_worker_and_retries(tmp_path):
    run = functools.partial(_die_once, str(tmp_path), 3)
    out = sorted(parallel_map(lambda: None, run, range(8), workers=2))
    assert out == [x * x for x in range(8)]
    assert (tmp_path / "killed-3").exists()


def _stalling_setup(marker_dir: str, hangs: int) -> None:
    """The first ``hangs`` actors to start hang in setup (as an actor Ray never started would)."""
    (Path(marker_dir) / f"setup-{os.getpid()}").touch()
    for k in range(hangs):
        try:  # claim hang k atomically: two actors starting together cannot both take it
            os.close(os.open(Path(marker_dir) / f"hang-{k}", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        time.sleep(3600)


@pytest.mark.ray
def test_an_actor_that_never_starts_is_replaced_and_its_item_still_runs_once(tmp_path):
    """A CI run once waited for ever on an actor whose process never ran its constructor. The
    limit leaves room for a worker process to start on a busy 2-core machine (5 s did not)."""
    setup = functools.partial(_stalling_setup, str(tmp_path), 1)
    with pytest.warns(RuntimeWarning, match="did not start within 8 s; replacing it"):
        out = sorted(parallel_map(setup, lambda _state, x: x * x, range(6), workers=2, retries=0,
                                  start_timeout_s=8.0))
    assert out == [x * x for x in range(6)]  # retries=0: the stalled start cost no item a retry
    assert (tmp_path / "hang-0").exists() and len(list(tmp_path.glob("setup-*"))) >= 3


@pytest.mark.ray
def test_an_actor_that_never_starts_gives_up_naming_the_key(tmp_path):
    setup = functools.partial(_stalling_setup, str(tmp_path), 99)
    with (pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match=r"did not start within "
                                                      r"start_timeout_s=1 s, 3 times.*ray status")):
        list(parallel_map(setup, lambda _state, x: x, range(2), workers=1, start_timeout_s=1.0))


@pytest.mark.ray
def test_workers_asking_for_more_gpus_than_ray_has_fail_at_once():
    """Their actors would wait for the GPUs forever; the error names the key to change."""
    with pytest.raises(ValueError, match=r"ask for 2.0 GPU each but the local Ray instance has .* gpus_per_worker"):
        list(parallel_map(lambda: None, lambda _state, x: x, range(2), workers=1, num_gpus=2.0))


@pytest.mark.ray
def test_parallel_map_gives_up_after_retries(tmp_path):
    def always_die(_state, x):
        if x == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    out = list(parallel_map(lambda: None, always_die, [0, 1, 2], workers=2, retries=1,
                            on_failure=lambda x, why: ("failed", x, why)))
    failed = [o for o in out if isinstance(o, tuple)]
    assert sorted(o for o in out if not isinstance(o, tuple)) == [0, 2]
    assert len(failed) == 1 and failed[0][1] == 1 and "worker died 2 times" in failed[0][2]


def _run_killing_once(marker_dir: str, victim: str, real_run, *args):
    index, _, name, _ = args[-1]  # args = (specs, cfg, state, item)
    marker = Path(marker_dir) / "killed"
    if f"{name}/{index}" == victim and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-evaluation
    return real_run(*args)


@pytest.mark.ray
def test_killed_worker_mid_evaluation_changes_nothing(tmp_path, monkeypatch):
    specs = [ControllerSpec(name="random", kind="random"), ControllerSpec(name="random2", kind="random")]
    cfg = EvalConfig(episodes=4, max_steps=15, workers=2, device="cpu")
    calm = evaluate(ENV, None, specs, cfg, tmp_path / "calm", progress=False)
    monkeypatch.setattr(ev, "_run", functools.partial(_run_killing_once, str(tmp_path), "random2/1", ev._run))
    hit = evaluate(ENV, None, specs, cfg, tmp_path / "hit", progress=False)
    assert (tmp_path / "killed").exists()
    ids = [r["episode_id"] for r in hit["per_episode"]]
    assert len(ids) == len(set(ids)) == 8
    assert [r["device"] for r in calm["per_episode"]] == ["cpu"] * 8  # where each episode planned
    assert ids == [r["episode_id"] for r in calm["per_episode"]]
    for a, b in zip(calm["per_episode"], hit["per_episode"], strict=True):
        assert (a["success"], a["final_distance"], a["steps"]) == (b["success"], b["final_distance"], b["steps"])
    assert {k: v["pc_success"] for k, v in calm["aggregated"].items()} == {
        k: v["pc_success"] for k, v in hit["aggregated"].items()
    }


def test_subgoal_atlas_of_a_state_fusing_model_reads_the_frames_state():
    """The atlas (nearest dataset frame to a subgoal, for videos) encodes frames as the model
    does: with their proprioception when the encoder fuses it."""
    from types import SimpleNamespace

    import torch

    from hmpc.episode_video import build_atlas
    from hmpc.world_model import WorldModelSpec, build_world_model

    spec = WorldModelSpec(image_size=16, action_dim=2, state_dim=2, latent_dim=8, widths=(4, 8), hidden=16)
    model = build_world_model(spec, seed=0)
    rng = np.random.default_rng(0)
    frames = SimpleNamespace(pixels=rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8),
                             state=rng.normal(size=(6, 5)).astype(np.float32), num_frames=6)
    atlas = build_atlas(model, frames, level=1, size=6, rng=np.random.default_rng(1))
    with torch.no_grad():
        want = model.encode(torch.as_tensor(frames.pixels).permute(0, 3, 1, 2), torch.as_tensor(frames.state))
    assert np.allclose(atlas.latents, want.numpy(), atol=1e-5)  # all 6 frames, in order


def test_ray_workers_plan_on_the_gpus_they_ask_for(monkeypatch):
    """Ray workers see only the GPUs they request: with workers and no gpus_per_worker, device=auto
    shares a local card (1/W each) or plans on CPU, and device=cuda is refused naming the fix."""
    def resources(cuda: bool, **kw):
        monkeypatch.setattr(ev.torch.cuda, "is_available", lambda: cuda)
        cfg = EvalConfig(**kw)
        return worker_device(cfg.device, cfg.workers, cfg.gpus_per_worker, cfg.address)

    assert resources(True, workers=0, device="auto") == ("auto", 0.0)  # in-process: sees every GPU
    assert resources(True, workers=2, device="cuda", gpus_per_worker=0.5) == ("cuda", 0.5)
    assert resources(True, workers=0, device="cuda:1") == ("cuda:1", 0.0)
    with pytest.raises(ValueError, match="device=cuda:1 with 2 Ray workers: each sees only the card"):
        resources(True, workers=2, device="cuda:1", gpus_per_worker=0.5)
    assert resources(True, workers=4, device="auto") == ("cuda", 0.25)
    assert resources(True, workers=4, device="auto", address="auto") == ("cpu", 0.0)  # the cluster's GPUs are unknown here
    assert resources(False, workers=2, device="auto") == ("cpu", 0.0)
    assert resources(False, workers=2, device="cpu") == ("cpu", 0.0)
    with pytest.raises(ValueError, match=r"device=cuda with 2 Ray workers needs gpus_per_worker > 0 \(e.g. gpus_per_worker=0.5"):
        resources(True, workers=2, device="cuda")
