"""Issue 8, item 4: every bad input fails with an error naming the file/key/value and the fix.

Covered elsewhere (kept there, listed here so the whole set is in one place):
  truncated / zero-byte video    test_data.py::test_error_zero_byte_video, ::test_error_truncated_video,
                                 test_dataset_tools.py::test_zero_byte_video, ::test_truncated_video
  parquet missing a column       test_data.py::test_error_missing_column,
                                 test_dataset_tools.py::test_missing_column
  NaN / inf in data              test_data.py::test_error_nan_action, test_dataset_tools.py::test_nan_action
  goal image of the wrong shape  test_controllers.py::test_goal_image_of_wrong_shape_is_reported
  unknown env name               test_end_to_end.py::test_unknown_env_name_is_reported
  unknown controller kind /
  unknown optimiser              test_controllers.py::test_unknown_controller_kind_and_missing_model,
                                 test_optimizers.py::test_make_optimizer_errors
  pickled weights / targets      test_security.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.errors import MissingConfigException

from hmpc.checkpoint import save_checkpoint
from hmpc.cli import evaluate as eval_cli
from hmpc.controllers import ControllerSpec
from hmpc.evaluate import EvalConfig, evaluate
from hmpc.rollout import EnvSpec
from hmpc.train import _check_compatible
from hmpc.world_model import WorldModelSpec, build_world_model
from robots import make_env


def spec(image_size: int = 16, action_dim: int = 2) -> WorldModelSpec:
    return WorldModelSpec(image_size=image_size, action_dim=action_dim, latent_dim=8,
                          widths=(4, 8), hidden=16)


def eval_cfg(tmp_path: Path, overrides: list[str]):
    with initialize_config_module("configs", version_base="1.3"):
        return compose("eval", overrides=[f"output_dir={tmp_path}", "workers=0", *overrides])


def run_cli_expecting_error(cfg, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as e:
        eval_cli.run(cfg)
    assert e.value.code == 2
    return capsys.readouterr().err


# -- image size / action dim vs the checkpoint -------------------------------------------------
def test_training_a_model_that_does_not_fit_the_dataset() -> None:
    ds = SimpleNamespace(root=Path("data/maze"), image_shape=(32, 32, 3), action_dim=2)
    with pytest.raises(ValueError, match=r"data/maze has 32x32 images.*image_size=16.*WorldModelSpec\(image_size=32"):
        _check_compatible(ds, spec(image_size=16))
    with pytest.raises(ValueError, match=r"action dim 2.*action_dim=3.*WorldModelSpec\(action_dim=2"):
        _check_compatible(ds, spec(image_size=32, action_dim=3))
    ds.state_dim = 3
    fused = WorldModelSpec(image_size=32, action_dim=2, state_dim=4, latent_dim=8, widths=(4, 8))
    with pytest.raises(ValueError, match=r"model.state_dim=4 .* data/maze has 3; set model.state_dim <= 3"):
        _check_compatible(ds, fused)


@pytest.mark.parametrize("env_size, model_adim, match", [
    (32, 2, r"image has shape \(32, 32, 3\) but the checkpoint expects \(16, 16, 3\).*image_size"),
    (16, 3, r"action has shape \(3,\); expected \(2,\)"),
])
def test_evaluating_a_checkpoint_on_a_mismatched_env(tmp_path: Path, env_size: int,
                                                     model_adim: int, match: str) -> None:
    """Today each episode records the error (the run finishes, every episode failed)."""
    ckpt = save_checkpoint(tmp_path / "ckpt", build_world_model(spec(16, model_adim), 0), {})
    ctrl = ControllerSpec(name="flat", kind="flat", optimizer={"name": "gd", "iters": 1}, horizon=2)
    cfg = EvalConfig(episodes=1, max_steps=2, videos=0, workers=0, device="cpu")
    info = evaluate(EnvSpec("point_maze", {"image_size": env_size}), ckpt, [ctrl], cfg,
                    tmp_path / "eval", progress=False)
    (record,) = info["per_episode"]
    assert record["success"] is False and record["error"] is not None
    assert re.search(match, record["error"]), record["error"]


def test_a_model_size_that_the_data_overrules_is_refused() -> None:
    """`+model.image_size=16` on 32-pixel data must not be dropped silently."""
    from omegaconf import OmegaConf

    from hmpc.cli.common import model_spec

    base = {"latent_dim": 8, "widths": [4, 8], "hidden": 16}
    spec_, _ = model_spec(OmegaConf.create({**base, "image_size": 32}), 32, 2)  # agrees: fine
    assert spec_.image_size == 32
    with pytest.raises(ValueError, match=r"model.image_size=16 but the data has image_size 32.*drop model.image_size, "
                                         r"or collect the data with env.image_size=16"):
        model_spec(OmegaConf.create({**base, "image_size": 16}), 32, 2)
    with pytest.raises(ValueError, match=r"model.action_dim=3 but the data has action_dim 2.*drop model.action_dim$"):
        model_spec(OmegaConf.create({**base, "action_dim": 3}), 32, 2)


def test_multirun_jobs_get_their_own_folders_or_are_refused(tmp_path: Path) -> None:
    """Under -m the default output_dir (outputs/eval/<time>) would be shared by every job."""
    import subprocess
    import sys

    run = ["-m", "controllers=[random]", "episodes=1", "max_steps=2", "workers=0", "videos=0", "seed=1,2"]
    proc = subprocess.run([sys.executable, "-m", "hmpc.cli.evaluate", *run], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "output_dir='${hydra:runtime.output_dir}'" in proc.stderr, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "hmpc.cli.evaluate", *run, "output_dir=${hydra:runtime.output_dir}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.parent.name for p in tmp_path.glob("multirun/*/*/*/eval_info.json")) == ["0", "1"]


def test_hmpc_eval_exits_non_zero_when_episodes_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The results are written, and the exit status and one stderr line say some episodes failed."""
    ckpt = save_checkpoint(tmp_path / "ckpt", build_world_model(spec(16), 0), {})
    cfg = eval_cfg(tmp_path / "eval", [f"checkpoint={ckpt}", "env.image_size=32", "controllers=[flat_gd,random]",
                                       "controllers.flat_gd.optimizer.iters=1", "episodes=1", "max_steps=2",
                                       "videos=0", "device=cpu"])
    with pytest.raises(SystemExit) as e:
        eval_cli.run(cfg)
    err = capsys.readouterr().err
    assert e.value.code == 1 and (tmp_path / "eval" / "eval_info.json").is_file()
    assert re.search(r"error: 1 of 2 episodes failed \(the first, flat_gd/0000: .*expects \(16, 16, 3\)", err), err


# -- unknown names -----------------------------------------------------------------------------
def test_unknown_env_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown env 'ant'; known envs: .*point_maze.*two_rooms"):
        make_env("ant")
    with pytest.raises(ValueError, match=r"got unknown argument\(s\) \['size'\]; accepted.*image_size"):
        make_env("point_maze", size=3)


def test_unknown_controller_config_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(MissingConfigException, match=r"controllers/nope"):
        eval_cfg(tmp_path, ["controllers=[nope]"])
    with pytest.raises(MissingConfigException, match=r"Available options in 'env':[\s\S]*point_maze"):
        eval_cfg(tmp_path, ["env=nope"])


def test_unknown_optimizer_fails_before_any_episode(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = eval_cfg(tmp_path, ["controllers=[flat_gd]", "controllers.flat_gd.optimizer.name=lbfgs"])
    err = run_cli_expecting_error(cfg, capsys)
    assert "controllers/flat_gd.yaml: optimizer: unknown optimizer 'lbfgs'" in err
    assert "known optimizers: ['cem', 'gd', 'hybrid', 'mppi']" in err
    assert not (tmp_path / "eval_info.json").exists()
    cfg = eval_cfg(tmp_path, ["controllers=[hierarchical]",
                              "+controllers.hierarchical.high_optimizer.step=0.1"])
    err = run_cli_expecting_error(cfg, capsys)
    assert "hierarchical.yaml: high_optimizer: unknown keys ['step']" in err and "accepted" in err
    cfg = eval_cfg(tmp_path, ["controllers=[flat_gd]", "+controllers.flat_gd.weights.goals=1"])
    err = run_cli_expecting_error(cfg, capsys)
    assert "flat_gd.yaml: weights" in err and "'goals'" in err and "goal_mode" in err


def test_unknown_controller_kind_lists_known_ones(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = eval_cfg(tmp_path, ["controllers=[flat_gd]", "controllers.flat_gd.kind=mcts"])
    err = run_cli_expecting_error(cfg, capsys)
    assert "unknown kind 'mcts'" in err and "hierarchical" in err


# -- goal images ------------------------------------------------------------------------------
def test_goal_outside_the_maze_is_reported() -> None:
    env = make_env("point_maze", layout="umaze", image_size=16)
    try:
        with pytest.raises(ValueError, match=r"options\['goal'\].*not inside a free cell"):
            env.reset(seed=0, options={"goal": (0.1, 0.1)})
        with pytest.raises(ValueError, match=r"options\['goal'\].*finite \(x, y\) pair"):
            env.reset(seed=0, options={"goal": (np.nan, 1.5)})
    finally:
        env.close()


# -- malformed Hydra override -----------------------------------------------------------------
def test_malformed_override_exits_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "hmpc.cli.evaluate", "episodes=[1,"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "[1," in out and "override_grammar" in out, out
    assert "Traceback" not in out
    assert not (tmp_path / "outputs").exists()  # nothing ran
