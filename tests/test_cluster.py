"""hmpc-eval on an existing Ray cluster (``address=``): a head node started with ``ray start``, as on
a user's cluster, with token authentication, and the same results as an in-process run."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hmpc.checkpoint import save_checkpoint
from hmpc.world_model import WorldModelSpec, build_world_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_env(token: Path) -> dict[str, str]:
    """The environment of the head and of the hmpc process: the cluster's token, and loopback only
    (Ray 2.60 would otherwise turn 127.0.0.1 into the machine's network address)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return env


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, dict[str, str], Path]]:
    """(address, environment with its token, temp dir) of a one-node cluster started by `ray start`."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.is_file():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    tmp = Path(tempfile.mkdtemp(prefix="hr", dir="/tmp"))  # short: Ray's socket paths live under it
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = _cluster_env(token)
    port = _free_port()
    log = (tmp / "head.log").open("w")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp / 'ray'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (tmp / "head.log").read_text():
            assert head.poll() is None and time.monotonic() < deadline, (tmp / "head.log").read_text()[-3000:]
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env, tmp
    finally:
        head.terminate()  # `ray start --block` stops the processes it started (in 2 s; 33 s if all get SIGTERM)
        try:
            head.wait(60)
        finally:
            try:
                os.killpg(head.pid, signal.SIGKILL)  # anything left of its process group
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _eval(checkpoint: Path, out: Path, env: dict[str, str], *overrides: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "hmpc.cli.evaluate", f"checkpoint={checkpoint}", "env.image_size=32",
         "controllers=[flat_cem,random]", "controllers.flat_cem.optimizer.population=16",
         "episodes=3", "max_steps=8", "videos=0", f"output_dir={out}", *overrides],
        capture_output=True, text=True, env=env, cwd=out.parent, timeout=300)  # Hydra's record stays in tmp
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "eval_info.json").read_text())
    info["stderr"] = proc.stderr
    return info


@pytest.mark.ray
def test_eval_on_an_existing_cluster_equals_an_in_process_run(ray_head, tmp_path: Path) -> None:
    address, env, head_dir = ray_head
    spec = WorldModelSpec(image_size=32, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16)
    checkpoint = save_checkpoint(tmp_path / "ck", build_world_model(spec, seed=0), {})
    here = _eval(checkpoint, tmp_path / "here", env, "workers=0", "device=cpu")
    there = _eval(checkpoint, tmp_path / "there", env, "workers=2", f"address={address}")
    assert "Connected to Ray cluster" in there["stderr"], there["stderr"][-3000:]
    assert any(head_dir.glob("ray/session_*/logs/worker-*")), "the episodes did not run on the cluster's workers"
    keys = ("episode_id", "success", "final_distance", "steps")
    assert [tuple(r[k] for k in keys) for r in there["per_episode"]] == [
        tuple(r[k] for k in keys) for r in here["per_episode"]]
    assert {r["device"] for r in there["per_episode"]} == {"cpu"}  # a cluster's GPUs are not assumed


@pytest.mark.ray
def test_collect_on_an_existing_cluster_equals_an_in_process_run(ray_head, tmp_path: Path) -> None:
    """Episodes run on the cluster's workers; the driver writes the dataset, the same as in-process."""
    import numpy as np

    from hmpc.data import LeRobotDataset

    address, env, _ = ray_head
    runs = {}
    for name, overrides in (("here", ["workers=0"]), ("there", ["workers=2", f"address={address}"])):
        proc = subprocess.run(
            [sys.executable, "-m", "hmpc.cli.collect", "env.image_size=32", "episodes=4", "steps=6", "flush_every=2",
             f"output_dir={tmp_path / name}", *overrides], capture_output=True, text=True, env=env, cwd=tmp_path,
            timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("Connected to Ray cluster" in proc.stderr) == (name == "there"), proc.stderr[-3000:]
        runs[name] = LeRobotDataset(tmp_path / name)
    assert runs["here"].num_episodes == runs["there"].num_episodes == 4
    for i in range(4):
        a, b = runs["here"].load_episode(i), runs["there"].load_episode(i)
        np.testing.assert_array_equal(a.action, b.action)
        np.testing.assert_array_equal(a.state, b.state)


def test_a_refused_token_names_the_address_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from hmpc.parallel import init_ray

    def refuse(**_kw):
        try:
            raise RuntimeError("Failed to connect to GCS: ... InvalidAuthToken: Authentication token is missing")
        except RuntimeError as e:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379") from e

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(ValueError, match=r"address=10\.0\.0\.5:6379: .*RAY_AUTH_MODE is unset here: run with "
                                         r"RAY_AUTH_MODE=token and the cluster's token"):
        init_ray(address="10.0.0.5:6379")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(ValueError, match=r"refused this process's token: it does not match the cluster's"):
        init_ray(address="10.0.0.5:6379")
    monkeypatch.delenv("RAY_AUTH_MODE")

    def absent(**_kw):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379")

    monkeypatch.setattr(ray, "init", absent)
    with pytest.raises(ValueError, match=r"no Ray cluster answered there .*ray status --address 10\.0\.0\.5:6379.*"
                       r"token authentication .*RAY_AUTH_MODE=token"):
        init_ray(address="10.0.0.5:6379")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # already set: no hint about it
    with pytest.raises(ValueError, match=r"private local instance$"):
        init_ray(address="10.0.0.5:6379")
    with pytest.raises(ValueError, match=r"client server listens there .*private local instance$"):
        init_ray(address="ray://10.0.0.5:10001")  # `ray status` takes no ray:// address
    monkeypatch.delenv("RAY_AUTH_MODE")
    with pytest.raises(ValueError, match=r"address=auto: .*private local instance$"):
        init_ray(address="auto")  # auto finds a local token by itself: no hint about it
