"""The same paths on a CUDA GPU: optimisers, deadlines, image augmentation, training with resume, the demo in-process,
and Ray evaluation workers sharing one card. Skipped where torch sees no GPU (CI's CPUs); run on a
GPU machine with ``pytest tests/test_cuda.py`` (``bench/gpu_check.sh`` does, first)."""

import json
import time
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from test_end_to_end import TINY, cfg
from test_optimizers import _name, all_optimizers, quadratic
from test_train import CFG, history, losses_by_step, train, train_and_crash_at_step_13

from hmpc.cli import demo as demo_cli
from hmpc.cli import evaluate as eval_cli
from hmpc.optimizers import expired

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU = torch.device("cuda")


def errors(info: dict) -> list:
    """The failed episodes of an eval_info, with why: the assertion message when any failed."""
    return [(r["episode_id"], r["error"], r.get("traceback")) for r in info["per_episode"] if r["error"]]


@pytest.mark.parametrize("i", range(len(all_optimizers())), ids=[_name(o) for o in all_optimizers()])
def test_optimizers_plan_on_the_gpu_and_agree_with_the_cpu(i):
    target = torch.tensor([[0.3, -0.5], [0.1, 0.7], [-0.8, 0.2]])
    best, _ = all_optimizers()[i].optimize(quadratic(target.to(GPU)), torch.zeros(4, 3, 2, device=GPU), -1.0, 1.0)
    assert best.device.type == "cuda"
    torch.testing.assert_close(best.cpu(), target, atol=0.05, rtol=0)
    cpu_best, _ = all_optimizers()[i].optimize(quadratic(target), torch.zeros(4, 3, 2), -1.0, 1.0)
    # fresh optimisers draw their noise from a CPU generator: the same candidates on either device
    torch.testing.assert_close(best.cpu(), cpu_best, atol=1e-3, rtol=0)


def test_augmentation_on_the_gpu_matches_the_cpu():
    import numpy as np

    from hmpc.augment import ImageAugment, augment_windows

    px = torch.randint(0, 256, (4, 3, 3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = ImageAugment(shift=2, blur=1.5, brightness=0.1, contrast=0.2)
    gpu = augment_windows(px.to(GPU), aug, np.random.default_rng(5))
    assert gpu.device.type == "cuda" and gpu.dtype == torch.uint8
    assert (gpu.cpu().int() - augment_windows(px, aug, np.random.default_rng(5)).int()).abs().max() <= 1


def test_deadline_waits_for_the_queued_gpu_work():
    x = torch.randn(4096, 4096, device=GPU)
    for _ in range(50):
        x = torch.tanh(x @ x)  # ~0.1 s of queued float32 matrix products on an H100
    done = torch.cuda.Event()
    done.record()
    assert not done.query(), "the products finished before the check; queue more work"
    assert not expired(time.perf_counter() + 3600, x)  # a far deadline: not expired...
    assert done.query()  # ...decided only once the queued work had finished


def test_training_on_the_gpu_resumes_where_it_stopped(square_dataset, tmp_path, monkeypatch):
    full = train(square_dataset, tmp_path / "full", device=GPU)
    assert torch.isfinite(torch.tensor(full.metrics["loss"]))
    train_and_crash_at_step_13(square_dataset, tmp_path / "resumed", monkeypatch, GPU)
    assert train(square_dataset, tmp_path / "resumed", replace(CFG, resume=True), device=GPU).steps == 20
    a, b = losses_by_step(history(tmp_path / "full")), losses_by_step(history(tmp_path / "resumed"))
    assert a.keys() == b.keys()
    for step in a:  # GPU kernels need not be bit-exact run to run; the trajectory must be the same
        for key, value in a[step].items():
            assert b[step][key] == pytest.approx(value, rel=1e-3, abs=1e-5), (step, key)
    for name in ("model.safetensors", "optimizer.safetensors"):
        fa, fb = (load_file(str(tmp_path / run_dir / "checkpoint" / name)) for run_dir in ("full", "resumed"))
        assert fa.keys() == fb.keys()
        for k in fa:
            torch.testing.assert_close(fb[k], fa[k], rtol=1e-3, atol=1e-5, msg=f"{name}: {k}")


@pytest.mark.ray
def test_demo_on_the_gpu_then_its_checkpoint_on_cpu_and_on_shared_ray_workers(tmp_path):
    demo_cli.run(cfg("demo", [*[o for o in TINY if o != "device=cpu"], "device=cuda", f"output_dir={tmp_path}"]))
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert not errors(info), errors(info)
    assert {r["device"] for r in info["per_episode"]} == {"cuda"}
    checkpoint = tmp_path / "train" / "checkpoint"
    common = [f"checkpoint={checkpoint}", "env.image_size=32", "episodes=2", "max_steps=8", "videos=0",
              "controllers=[flat_gd,flat_cem]", "controllers.flat_gd.optimizer.iters=2",
              "controllers.flat_cem.optimizer.population=16"]
    eval_cli.run(cfg("eval", [*common, "workers=0", "device=cpu", f"output_dir={tmp_path / 'cpu'}"]))
    cpu = json.loads((tmp_path / "cpu" / "eval_info.json").read_text())
    assert not errors(cpu), errors(cpu)
    assert {r["device"] for r in cpu["per_episode"]} == {"cpu"}
    # two Ray workers share the card (0.5 each) and plan on it
    eval_cli.run(cfg("eval", [*common, "workers=2", "gpus_per_worker=0.5", f"output_dir={tmp_path / 'ray'}"]))
    ray_info = json.loads((tmp_path / "ray" / "eval_info.json").read_text())
    ids = [r["episode_id"] for r in ray_info["per_episode"]]
    assert len(ids) == len(set(ids)) == 4
    assert not errors(ray_info), errors(ray_info)
    assert {r["device"] for r in ray_info["per_episode"]} == {"cuda"}
