"""Issue 8: untrusted files never run code; config targets are allowlisted; kill-safe writes;
Ray stays private; dependency floors hold."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from safetensors import SafetensorError

from hmpc.checkpoint import CONFIG, WEIGHTS, load_checkpoint, save_checkpoint
from hmpc.cli import collect as collect_cli
from hmpc.cli.common import report_user_errors
from hmpc.data import LeRobotDataset, build_frame_cache
from hmpc.data.validate import validate_dataset
from hmpc.evaluate import model_blob
from hmpc.security import (
    UnsafeInputError,
    check_config,
    check_safetensors_file,
    check_target,
    safe_instantiate,
)
from hmpc.world_model import WorldModelSpec, build_world_model

ROOT = Path(__file__).parents[1]
SPEC = WorldModelSpec(image_size=16, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16)


class Payload:
    """Unpickling this calls ``open(marker, "w")``: a file appears if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "ckpt", build_world_model(SPEC, seed=0), {"env": {}})


# -- 1. loading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pickle", "torch.save"])
def test_pickled_weights_fail_to_load_and_never_run(checkpoint: Path, tmp_path: Path, fmt: str) -> None:
    probe = tmp_path / "payload_is_live"
    pickle.loads(pickle.dumps(Payload(probe)))  # the payload really runs code when unpickled
    assert probe.exists()
    marker = tmp_path / "pwned"
    weights = checkpoint / WEIGHTS
    if fmt == "pickle":
        weights.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"w": Payload(marker)}, weights)
    with pytest.raises((SafetensorError, UnsafeInputError)):
        load_checkpoint(checkpoint)
    with pytest.raises((SafetensorError, UnsafeInputError)):
        model_blob(checkpoint)  # the evaluation path
    with pytest.raises(UnsafeInputError, match="pickle.*never unpickles"):
        check_safetensors_file(weights)
    assert not marker.exists()


def test_safetensors_check_accepts_real_and_names_bad_files(checkpoint: Path, tmp_path: Path) -> None:
    check_safetensors_file(checkpoint / WEIGHTS)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(UnsafeInputError, match="empty.safetensors.*0 bytes"):
        check_safetensors_file(empty)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(UnsafeInputError, match="junk.safetensors.*bad header"):
        check_safetensors_file(junk)


def test_checkpoint_config_targets_are_data(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    meta = json.loads((checkpoint / CONFIG).read_text())
    meta["env"] = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    meta["train"] = {"optim": {"_target_": "os.system", "_args_": [f"touch {marker}"]}}
    (checkpoint / CONFIG).write_text(json.dumps(meta))
    _, loaded = load_checkpoint(checkpoint)
    model_blob(checkpoint)
    assert loaded["env"]["_target_"] == "builtins.open"  # kept as a plain string
    assert not marker.exists()
    with pytest.raises(UnsafeInputError, match=r"env\._target_='builtins.open' refused"):
        check_config(loaded, allow=())
    meta["model"]["_target_"] = "os.system"  # inside the model spec: an unknown key, refused
    (checkpoint / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="_target_"):
        load_checkpoint(checkpoint)
    assert not marker.exists()


def test_frame_cache_npz_is_never_unpickled(tmp_path: Path) -> None:
    from hmpc.data import Episode, write_episodes

    rng = np.random.default_rng(0)
    ep = Episode(pixels=rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8),
                 state=np.zeros((6, 4), np.float32), action=np.zeros((6, 2), np.float32), task="t")
    root = tmp_path / "ds"
    write_episodes(root, [ep], fps=10)
    frames = build_frame_cache(LeRobotDataset(root), progress=False)
    marker = tmp_path / "pwned"
    low = frames.path.with_suffix(".npz")
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    with open(low, "wb") as f:
        np.savez(f, state=evil)  # an object array: stored as a pickle inside the npz
    with pytest.raises(ValueError, match="allow_pickle"):
        build_frame_cache(LeRobotDataset(root), progress=False)
    assert not marker.exists()


def test_no_unsafe_deserialisation_in_the_source() -> None:
    """No torch.load / pickle.load(s) / np.load(allow_pickle=True) anywhere in the packages."""
    bad = re.compile(r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|yaml\.load\(|"
                     r"(?<![.\w])eval\(|(?<![.\w])exec\(")
    hits = [f"{p.relative_to(ROOT)}:{i}" for pkg in ("hmpc", "robots", "skills")
            for p in (ROOT / pkg).rglob("*.py") if p.name != "security.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line)]
    assert hits == []


# -- 2. config targets -----------------------------------------------------------------------------
REFUSED = [
    "os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "logging.os.system",
    "posix.system", "pickle.loads", "torch.load",
    "hmpc.parallel.os.system",  # a module alias inside a project package
    "hmpc.checkpoint.load_file",  # a re-exported third-party function
    "hmpc.checkpoint.torch.load",
    "hmpc.security.importlib.import_module",
    "hmpc.__builtins__", "hmpc.mpc.FlatMPC.__init__.__globals__",  # private names
    "hmpc.mpc.np", "hmpc.mpc",  # a module is not a class or function
    "${oc.env:EVIL}", "os.system; rm -rf /", "", None, 3,
]


@pytest.mark.parametrize("target", REFUSED)
def test_unsafe_targets_are_refused(target: object) -> None:
    with pytest.raises(UnsafeInputError, match="refused"):
        check_target(target)


def test_project_targets_and_the_allowlist() -> None:
    assert check_target("hmpc.mpc.FlatMPC") == "hmpc.mpc.FlatMPC"
    assert check_target("hmpc.security.check_target") == "hmpc.security.check_target"
    assert check_target("robots.point_maze.PointMazeEnv") == "robots.point_maze.PointMazeEnv"
    with pytest.raises(UnsafeInputError, match="defined as 'robots.registry.make_env'"):
        check_target("robots.make_env")  # a project re-export: says the canonical path
    assert check_target("torch.optim.AdamW", allow=["torch.optim.AdamW"]) == "torch.optim.AdamW"
    with pytest.raises(UnsafeInputError):
        check_target("torch.optim.SGD", allow=["torch.optim.AdamW"])  # exact names only


def test_safe_instantiate_calls_nothing_when_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    node = {"ok": {"_target_": "hmpc.costs.CostWeights"},
            "deep": [{"x": {"_target_": "logging.os.system", "_args_": ["echo pwned"]}}]}
    with pytest.raises(UnsafeInputError, match=r"deep\[0\]\.x\._target_='logging.os.system'"):
        safe_instantiate(OmegaConf.create(node))
    assert calls == []
    from hmpc.costs import CostWeights

    assert isinstance(safe_instantiate({"_target_": "hmpc.costs.CostWeights"}), CostWeights)


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.Popen",
                                    "logging.os.system"])
def test_cli_refuses_targets_before_running(target: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ran: list[object] = []
    monkeypatch.setattr("hmpc.rollout.collect", lambda *a, **k: ran.append(a))
    with initialize_config_module("configs", version_base="1.3"):
        cfg = compose("collect", overrides=[f"output_dir={tmp_path}", "workers=0",
                                            f"+policy.hook._target_={target}"])
    with pytest.raises(SystemExit) as e:
        collect_cli.run(cfg)
    assert e.value.code == 2 and ran == []
    err = capsys.readouterr().err
    assert f"policy.hook._target_='{target}' refused" in err and "HMPC_ALLOWED_TARGETS" in err
    monkeypatch.setenv("HMPC_ALLOWED_TARGETS", "hmpc.costs.CostWeights")
    with pytest.raises(SystemExit):  # the allowlist names exact paths, not this one
        report_user_errors(lambda c: ran.append(c))(cfg)
    assert ran == []


def test_shipped_configs_hold_no_targets() -> None:
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        check_config(OmegaConf.load(path), allow=(), source=str(path))


# -- 3. atomic writes: a collector killed at random moments leaves a loadable dataset -------------
_CHILD = """
import sys
from hmpc.rollout import EnvSpec, PolicySpec, collect
collect(EnvSpec("point_maze", {"image_size": 16}), PolicySpec(), sys.argv[1], 500, 8,
        seed=3, workers=0, flush_every=1, progress=False)
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_collection_killed_at_random_moment_stays_loadable(tmp_path: Path, seed: int) -> None:
    """Kill the collector at a random time after its first write (so during later writes too)."""
    root = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root)])
    deadline = time.monotonic() + 60
    try:
        while not root.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(random.Random(seed).uniform(0.0, 1.5))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "collection ended before it could be killed"
    # A kill between the renames of one commit leaves an orphan file that no committed episode
    # references (reported as such; a rerun overwrites it); anything else is a broken dataset.
    problems = [p for p in validate_dataset(root) if "interrupted write" not in p.message] \
        if (root / "meta/info.json").is_file() else []
    assert problems == []
    if (root / "meta/info.json").is_file():  # every committed episode loads
        ds = LeRobotDataset(root)
        assert ds.num_episodes >= 1
        for i in range(ds.num_episodes):
            assert len(ds.load_episode(i)) == 8


# -- 6. Ray --------------------------------------------------------------------------------------
def test_init_ray_local_is_private(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from ray._private import ray_constants

    from hmpc.parallel import LOOPBACK_ENV, init_ray

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv(LOOPBACK_ENV, raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    init_ray(num_cpus=2)
    assert calls[-1]["include_dashboard"] is False and calls[-1]["address"] == "local"
    assert os.environ[LOOPBACK_ENV] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    init_ray(address="ray://head:10001")  # a cluster is an explicit choice, dashboard still off
    assert calls[-1] == {"address": "ray://head:10001", "include_dashboard": False,
                         "log_to_driver": True}


_RAY_CHILD = """
import os, re, subprocess, ray
from hmpc.parallel import init_ray
init_ray(num_cpus=1)
ray.get(ray.remote(lambda: 0).remote())
ps = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
parent = {int(a): int(b) for a, b in (line.split() for line in ps.splitlines())}
mine = {os.getpid()}
while new := {p for p, q in parent.items() if q in mine} - mine:
    mine |= new
for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
    if {int(p) for p in re.findall(r"pid=(\\d+)", line)} & mine:
        print("LISTEN", line.split()[3])
print("NODE", ray.util.get_node_ip_address())
ray.shutdown()
"""


@pytest.mark.ray
def test_local_ray_is_private_and_listens_on_loopback_only() -> None:
    if subprocess.run(["which", "ss"], capture_output=True).returncode:
        pytest.skip("needs ss (iproute2) to list listening sockets")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env["RAY_ADDRESS"] = "127.0.0.1:9"  # a cluster set in the environment is not joined: the instance is private
    proc = subprocess.run([sys.executable, "-c", _RAY_CHILD], capture_output=True, text=True, timeout=180, env=env)
    out = proc.stdout + proc.stderr[-2000:]
    listen = [line.split()[1] for line in out.splitlines() if line.startswith("LISTEN")]
    assert "NODE 127.0.0.1" in out and listen, out
    assert all(re.match(r"(\[::ffff:)?127\.0\.0\.1\]?:\d+$", a) for a in listen), listen


# -- 7. dependencies -----------------------------------------------------------------------------
def test_dependency_floors_are_pinned_and_installed() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for name, floor in [("torch", (2, 10)), ("hydra-core", (1, 3, 4)), ("ray", (2, 52))]:
        assert re.search(rf'"{name}(\[[a-z,]+\])?>={re.escape(".".join(map(str, floor)))}', text), name
        installed = tuple(int(x) for x in re.findall(r"\d+", version(name))[: len(floor)])
        assert installed >= floor, (name, version(name))
