"""Training killed with SIGKILL at random moments (during saves too) leaves a loadable checkpoint,
and resuming continues from it."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hmpc.checkpoint import load_checkpoint
from hmpc.rollout import EnvSpec, PolicySpec, collect
from hmpc.train_state import TRAIN_STATE, find_resumable

_CHILD = """
import sys, torch
from hmpc.objective import LossWeights
from hmpc.train import TrainConfig, train_world_model
from hmpc.world_model import LevelSpec, WorldModelSpec
spec = WorldModelSpec(image_size=16, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16,
                      levels=(LevelSpec(6, 2, 2, 16),))
cfg = TrainConfig(steps=int(sys.argv[4]), batch_size=4, top_steps=2, val_every=10**6,
                  val_batches=1, log_every=1, checkpoint_every=1, tensorboard=False, plots=False,
                  resume=sys.argv[3] == "1")
train_world_model(sys.argv[1], sys.argv[2], spec, LossWeights(), cfg, torch.device("cpu"),
                  progress=False)
"""


def _child(data: Path, out: Path, resume: bool, steps: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(data), str(out), str(int(resume)), str(steps)], env=env)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill") / "ds"
    return collect(EnvSpec("point_maze", {"image_size": 16}), PolicySpec(), root, episodes=4, steps=12,
                   workers=0, progress=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_training_killed_at_random_moment_resumes(dataset: Path, tmp_path: Path, seed: int) -> None:
    out = tmp_path / "run"
    proc = _child(dataset, out, resume=False, steps=10**6)  # checkpoints every step: kills land in saves
    deadline = time.monotonic() + 90
    try:
        while not (out / "checkpoint" / TRAIN_STATE).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.Random(seed).uniform(0.0, 1.0))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    folder = find_resumable(out / "checkpoint")  # checkpoint/, or the .old one a kill mid-swap left
    model, meta = load_checkpoint(folder)
    step = json.loads((folder / TRAIN_STATE).read_text())["step"]
    assert step >= 1 and model.spec.latent_dim == 8
    resumed = _child(dataset, out, resume=True, steps=step + 2)
    assert resumed.wait(timeout=120) == 0
    final = json.loads((out / "checkpoint" / TRAIN_STATE).read_text())
    assert final["step"] == step + 2
