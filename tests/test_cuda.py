"""The same paths on a CUDA GPU: optimisers, deadlines, training with resume, the demo in-process,
and Ray evaluation workers sharing one card. Skipped where torch sees no GPU (CI's CPUs); run on a
GPU machine with ``pytest tests/test_cuda.py`` (``bench/gpu_check.sh`` does, first)."""

import json
from dataclasses import replace

import pytest
import torch
from hydra import compose, initialize_config_module
from safetensors.torch import load_file
from test_end_to_end import TINY
from test_optimizers import _name, all_optimizers, quadratic
from test_train import CFG, DEFAULT_WEIGHTS, SPEC, history, losses_by_step

import hmpc.train as train_mod
from hmpc.cli import demo as demo_cli
from hmpc.cli import evaluate as eval_cli
from hmpc.optimizers import expired
from hmpc.train import train_world_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU = torch.device("cuda")


def cfg(name: str, overrides: list[str]):
    with initialize_config_module("configs", version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.mark.parametrize("i", range(len(all_optimizers())), ids=[_name(o) for o in all_optimizers()])
def test_optimizers_plan_on_the_gpu_and_agree_with_the_cpu(i):
    target = torch.tensor([[0.3, -0.5], [0.1, 0.7], [-0.8, 0.2]])
    best, info = all_optimizers()[i].optimize(quadratic(target.to(GPU)), torch.zeros(4, 3, 2, device=GPU), -1.0, 1.0)
    assert best.device.type == "cuda" and torch.allclose(best.cpu(), target, atol=0.05)
    cpu_best, _ = all_optimizers()[i].optimize(quadratic(target), torch.zeros(4, 3, 2), -1.0, 1.0)
    # fresh optimisers draw their noise from a CPU generator: the same candidates on either device
    assert torch.allclose(best.cpu(), cpu_best, atol=1e-3)


def test_deadline_waits_for_the_queued_gpu_work():
    x = torch.randn(4096, 4096, device=GPU)
    for _ in range(20):
        x = torch.tanh(x @ x)  # queued, not finished, when the loop ends
    assert not expired(None, x)
    assert expired(0.0, x)  # a deadline in the past has expired once the work is done
    torch.cuda.synchronize()


def test_training_on_the_gpu_resumes_where_it_stopped(square_dataset, tmp_path, monkeypatch):
    weights = DEFAULT_WEIGHTS
    full = train_world_model(square_dataset, tmp_path / "full", SPEC, weights, CFG, GPU, progress=False)
    assert torch.isfinite(torch.tensor(full.metrics["loss"]))
    real_loss, calls = train_mod.world_model_loss, {"n": 0}

    def crash_at_step_13(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 14 + 1:  # 13 train steps + 1 validation batch at step 10, then crash
            raise KeyboardInterrupt("simulated crash")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "world_model_loss", crash_at_step_13)
    with pytest.raises(KeyboardInterrupt):
        train_world_model(square_dataset, tmp_path / "resumed", SPEC, weights, CFG, GPU, progress=False)
    monkeypatch.setattr(train_mod, "world_model_loss", real_loss)
    resumed = train_world_model(square_dataset, tmp_path / "resumed", SPEC, weights, replace(CFG, resume=True),
                                GPU, progress=False)
    assert resumed.steps == 20
    a, b = losses_by_step(history(tmp_path / "full")), losses_by_step(history(tmp_path / "resumed"))
    assert a.keys() == b.keys()
    for step in a:  # GPU kernels need not be bit-exact run to run; the trajectory must be the same
        for key, value in a[step].items():
            assert b[step][key] == pytest.approx(value, rel=1e-3, abs=1e-5), (step, key)
    weights_full = load_file(str(tmp_path / "full/checkpoint/model.safetensors"))
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in weights_full.values())


def test_demo_on_the_gpu_then_its_checkpoint_on_cpu_and_on_shared_ray_workers(tmp_path):
    demo_cli.run(cfg("demo", [*[o for o in TINY if o != "device=cpu"], "device=cuda", f"output_dir={tmp_path}"]))
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert all(r["error"] is None and r["device"].startswith("cuda") for r in info["per_episode"])
    checkpoint = tmp_path / "train" / "checkpoint"
    common = [f"checkpoint={checkpoint}", "env.image_size=32", "episodes=2", "max_steps=8", "videos=0",
              "controllers=[flat_gd,flat_cem]", "controllers.flat_gd.optimizer.iters=2",
              "controllers.flat_cem.optimizer.population=16"]
    eval_cli.run(cfg("eval", [*common, "workers=0", "device=cpu", f"output_dir={tmp_path / 'cpu'}"]))
    cpu = json.loads((tmp_path / "cpu" / "eval_info.json").read_text())
    assert all(r["error"] is None and r["device"] == "cpu" for r in cpu["per_episode"])
    # two Ray workers share the card (0.5 each) and plan on it
    eval_cli.run(cfg("eval", [*common, "workers=2", "gpus_per_worker=0.5", f"output_dir={tmp_path / 'ray'}"]))
    ray_info = json.loads((tmp_path / "ray" / "eval_info.json").read_text())
    ids = [r["episode_id"] for r in ray_info["per_episode"]]
    assert len(ids) == len(set(ids)) == 4
    assert all(r["error"] is None and r["device"].startswith("cuda") for r in ray_info["per_episode"])

