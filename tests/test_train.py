"""Trainer: bit-identical runs, exact resume, NaN/inf guard, metrics, diagnostics, video-only."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SQUARE_SIZE, square_episode
from safetensors.torch import load_file

import hmpc.train as train_mod
from hmpc.data import write_episodes
from hmpc.objective import LossWeights, world_model_loss
from hmpc.train import NonFiniteLossError, TrainConfig, train_world_model
from hmpc.train_state import NonFiniteWeightsError, find_resumable
from hmpc.world_model import LevelSpec, WorldModelSpec

SIZE = SQUARE_SIZE
SPEC = WorldModelSpec(
    image_size=SIZE, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16,
    levels=(LevelSpec(latent_dim=6, k=2, macro_dim=2, hidden=16),),
)
CFG = TrainConfig(
    steps=20, batch_size=4, top_steps=2, val_every=10, val_batches=1, log_every=1,
    checkpoint_every=10, tensorboard=False, plots=False, seed=3,
)
CPU = torch.device("cpu")
DEFAULT_WEIGHTS = LossWeights()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not stall when the machine is busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train(data: Path, out: Path, cfg: TrainConfig = CFG, weights: LossWeights = DEFAULT_WEIGHTS,
          spec: WorldModelSpec = SPEC, device: torch.device = CPU):
    return train_world_model(data, out, spec, weights, cfg, device, progress=False)


def train_and_crash_at_step_13(data: Path, out: Path, monkeypatch, device: torch.device = CPU) -> None:
    """Train with CFG into ``out`` and crash during step 14, as a killed run would: the last
    checkpoint is step 10's."""
    real_loss, calls = world_model_loss, {"n": 0}

    def crash_at_step_13(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 14 + 1:  # 13 train steps + 1 validation batch at step 10, then crash
            raise KeyboardInterrupt("simulated crash")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "world_model_loss", crash_at_step_13)
    with pytest.raises(KeyboardInterrupt):
        train(data, out, device=device)
    monkeypatch.setattr(train_mod, "world_model_loss", real_loss)
    assert json.loads((out / "checkpoint/train_state.json").read_text())["step"] == 10


def losses_by_step(rows):
    return {r["step"]: {k: v for k, v in r.items() if k != "time_s"} for r in rows}


def history(out: Path) -> list[dict]:
    return json.loads((out / "checkpoint" / "train_state.json").read_text())["history"]


def assert_resume_after_step_3_is_exact(data: Path, tmp_path: Path, monkeypatch, cfg: TrainConfig,
                                        weights: LossWeights = DEFAULT_WEIGHTS, spec: WorldModelSpec = SPEC) -> None:
    """Train ``cfg`` (6 steps, checkpoints every 3) into tmp_path/resumed, crash during step 4,
    resume: its losses equal those of the uninterrupted run already in tmp_path/full."""
    real_loss, calls = world_model_loss, {"n": 0}

    def crash_at_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3 + 1 + 2:  # 3 train steps + 1 validation batch, then step 4 crashes
            raise KeyboardInterrupt("simulated crash")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "world_model_loss", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "resumed", cfg, weights, spec)
    monkeypatch.setattr(train_mod, "world_model_loss", real_loss)
    train(data, tmp_path / "resumed", replace(cfg, resume=True), weights, spec)
    assert losses_by_step(history(tmp_path / "resumed")) == losses_by_step(history(tmp_path / "full"))


def test_fixed_seed_is_bit_identical_and_resume_equals_uninterrupted(square_dataset, tmp_path, monkeypatch):
    full = train(square_dataset, tmp_path / "full")
    again = train(square_dataset, tmp_path / "again")
    assert losses_by_step(history(tmp_path / "full")) == losses_by_step(history(tmp_path / "again"))
    assert full.metrics["loss"] == again.metrics["loss"]

    train_and_crash_at_step_13(square_dataset, tmp_path / "resumed", monkeypatch)
    resumed = train(square_dataset, tmp_path / "resumed", replace(CFG, resume=True))
    assert resumed.steps == 20
    assert losses_by_step(history(tmp_path / "resumed")) == losses_by_step(history(tmp_path / "full"))
    a = load_file(str(tmp_path / "full/checkpoint/model.safetensors"))
    b = load_file(str(tmp_path / "resumed/checkpoint/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    oa = load_file(str(tmp_path / "full/checkpoint/optimizer.safetensors"))
    ob = load_file(str(tmp_path / "resumed/checkpoint/optimizer.safetensors"))
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)
    # no temporary or half-swapped folders are left behind
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir() if p.name.startswith(".")) == []


def test_outputs_diagnostics_plot_and_tensorboard(square_dataset, tmp_path):
    result = train(square_dataset, tmp_path, replace(CFG, steps=4, checkpoint_every=0, tensorboard=True, plots=True))
    diag = json.loads((tmp_path / "diagnostics.json").read_text())
    for level, dim in (("level_1", 8), ("level_2", 6)):
        d = diag["levels"][level]
        assert {"probe_r2", "pred_err_ratio", "probe_pred_ratio", "eff_rank", "std_mean",
                "std_min"} <= set(d)
        assert len(d["std_per_dim"]) == dim
    assert result.diagnostics == diag["levels"]
    assert result.warnings == diag["warnings"]
    assert {"l1/pred", "val/l1/pred"} <= result.metrics.keys()  # what the overfitting check reads
    env = json.loads((tmp_path / "checkpoint" / "config.json").read_text())["environment"]
    assert env["packages"]["torch"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
    assert env["av_libraries"]["libavcodec"] and env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "step" and "l1/pred" in header and "val/l1/probe_r2" in header


def test_resume_errors_name_the_fix(square_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="trainer.resume"):
        train(square_dataset, tmp_path / "none", replace(CFG, resume=True))
    train(square_dataset, tmp_path / "a", replace(CFG, steps=2, checkpoint_every=0))
    other = replace(SPEC, latent_dim=10)
    with pytest.raises(ValueError, match="latent_dim"):
        train(square_dataset, tmp_path / "a", replace(CFG, steps=4, resume=True), spec=other)
    with pytest.raises(ValueError, match="video_only"):
        replace(CFG, video_only="maybe")
    with pytest.raises(ValueError, match=r"trainer.probe_dims=\[0, 2\].*has 2 dims"):
        train(square_dataset, tmp_path / "b", replace(CFG, probe_dims=(0, 2)))


def test_nan_steps_are_skipped_then_training_stops_without_broken_checkpoint(square_dataset, tmp_path, monkeypatch):
    real_loss, calls = world_model_loss, {"n": 0}

    def sometimes_nan(model, batch, w, target=None):
        loss, m = real_loss(model, batch, w, target)
        calls["n"] += 1
        if calls["n"] in (3, 4) or calls["n"] > 13:  # two bad steps, then broken for good
            return loss * float("nan"), m
        return loss, m

    monkeypatch.setattr(train_mod, "world_model_loss", sometimes_nan)
    with pytest.raises(NonFiniteLossError, match="non-finite for 3 consecutive steps"):
        train(square_dataset, tmp_path, replace(CFG, max_bad_steps=3))
    rows = history(tmp_path)
    assert 3 not in {r["step"] for r in rows} and 4 not in {r["step"] for r in rows}
    assert 5 in {r["step"] for r in rows}  # training went on after the two skipped steps
    ckpt = tmp_path / "checkpoint"
    assert json.loads((ckpt / "train_state.json").read_text())["step"] == 10
    assert all(torch.isfinite(v).all() for v in load_file(str(ckpt / "model.safetensors")).values())


def test_checkpoint_with_non_finite_weights_is_refused(square_dataset, tmp_path):
    from hmpc.train_state import TrainState, save_training_checkpoint
    from hmpc.world_model import build_world_model

    m = build_world_model(SPEC, 0)
    opt = torch.optim.AdamW(m.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    folder = tmp_path / "checkpoint"
    save_training_checkpoint(folder, m, {}, opt, sched, TrainState(step=1))
    with torch.no_grad():
        m.predictor.net[0].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match="predictor.net.0.weight"):
        save_training_checkpoint(folder, m, {}, opt, sched, TrainState(step=2))
    assert find_resumable(folder) == folder
    assert json.loads((folder / "train_state.json").read_text())["step"] == 1


def test_ema_target_and_latent_variable_train_and_resume(square_dataset, tmp_path):
    spec = replace(SPEC, latent_var_dim=2)
    weights = LossWeights(target="ema", ema_decay=0.9, variance=0.5)
    cfg = replace(CFG, steps=6, checkpoint_every=3, val_every=3)
    result = train(square_dataset, tmp_path, cfg, weights, spec)
    assert "l1/z_l2" in result.metrics
    ck = tmp_path / "checkpoint"
    online, target = load_file(str(ck / "model.safetensors")), load_file(str(ck / "target.safetensors"))
    assert online.keys() == target.keys() and any(not torch.equal(online[k], target[k]) for k in online)
    from hmpc.checkpoint import load_checkpoint

    model, _ = load_checkpoint(ck)
    s = torch.zeros(3, 8)
    a = torch.zeros(3, 4, 2)
    assert torch.equal(model.rollout(s, a), model.rollout(s, a, z=torch.zeros(3, 4, 2)))
    with pytest.raises(ValueError, match="takes no latent variable"):
        model.predict(torch.zeros(1, 6), torch.zeros(1, 2), level=2, z=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="needs the EMA target model"):
        world_model_loss(model, {"pixels": torch.zeros(1, 5, 3, SIZE, SIZE, dtype=torch.uint8),
                                 "action": torch.zeros(1, 4, 2)}, weights)


def test_video_only_episodes_are_used_or_ignored(tmp_path):
    root = tmp_path / "mixed"
    eps = [square_episode(i, with_action=i < 2) for i in range(6)]  # 2 labelled, 4 video-only
    write_episodes(root, eps, fps=10)
    cfg = replace(CFG, steps=3, checkpoint_every=0, val_fraction=0.0)
    ignore = train(root, tmp_path / "ignore", cfg)
    use = train(root, tmp_path / "use", replace(cfg, video_only="use"))
    assert np.isfinite(ignore.metrics["loss"]) and np.isfinite(use.metrics["loss"])
    assert ignore.metrics["loss"] != use.metrics["loss"]
    extra = train(root, tmp_path / "extra", replace(cfg, video_only="use", video_batch=3))
    assert np.isfinite(extra.metrics["loss"]) and extra.metrics["loss"] != use.metrics["loss"]
    for bad in (dict(video_batch=3), dict(video_batch=-1, video_only="use"),
                dict(video_batch=3, video_only="use", labelled_share=0.5)):
        with pytest.raises(ValueError, match=r"trainer.video_batch=-?\d.*video_only=use"):
            replace(cfg, **bad)


def test_labelled_episodes_are_split_apart_from_video_only_ones(tmp_path):
    """10 % labelled: validation takes its share of each group, so training keeps labelled
    episodes whatever the seed (a plain split could hold out all of them)."""
    from hmpc.data import LeRobotDataset, build_frame_cache
    from hmpc.train import _split

    root = tmp_path / "mixed"
    write_episodes(root, [square_episode(i, with_action=i < 2) for i in range(20)], fps=10)
    frames = build_frame_cache(LeRobotDataset(root), progress=False)
    for seed in range(20):
        tr, va = _split(frames, 0.5, np.random.default_rng(seed), use_video=True)
        assert sorted([*tr, *va]) == list(range(20))
        assert (tr < 2).sum() == 1 and (va < 2).sum() == 1  # one labelled episode each side
        assert len(va) == 10
    plain = _split(frames, 0.5, np.random.default_rng(0), use_video=False)
    assert len(plain[1]) == 10


def test_validation_windows_all_have_actions_when_video_only_episodes_train(tmp_path):
    """Validation scores action-conditioned rollouts: no video-only window is rolled out with
    zero actions into pred_err_ratio / probe_pred_ratio."""
    from hmpc.train import _make_samplers

    root = tmp_path / "mixed"
    write_episodes(root, [square_episode(i, with_action=i < 2) for i in range(20)], fps=10)
    cfg = replace(CFG, val_fraction=0.5, video_only="use")
    train_s, val_s, _ = _make_samplers(root, 3, cfg, np.random.default_rng(0))
    assert train_s.num_windows > train_s.num_labelled > 0
    assert val_s.num_windows == val_s.num_labelled > 0


def test_video_only_windows_train_no_level1_prediction_nor_idm():
    from hmpc.world_model import build_world_model

    m = build_world_model(SPEC, 0)
    g = torch.Generator().manual_seed(0)
    batch = {
        "pixels": torch.randint(0, 256, (4, 5, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
        "action": torch.rand(4, 4, 2, generator=g) * 2 - 1,
        "has_action": torch.tensor([True, True, False, False]),
    }
    _, with_mask = world_model_loss(m, batch, LossWeights())
    garbage = dict(batch, action=batch["action"].clone())
    garbage["action"][2:] = 100.0  # what a video-only window holds must not matter
    _, masked = world_model_loss(m, garbage, LossWeights())
    assert masked == with_mask
    _, labelled = world_model_loss(m, {k: v[:2] for k, v in batch.items()}, LossWeights())
    assert masked["l1/idm"] == pytest.approx(labelled["l1/idm"], rel=1e-5)
    # level 1 predicts the effect of real actions only: video-only windows do not train it
    assert masked["l1/pred"] == pytest.approx(labelled["l1/pred"], rel=1e-5)
    assert masked["l1/var"] != pytest.approx(labelled["l1/var"], rel=1e-5)  # the encoder sees all
    _, none_labelled = world_model_loss(m, {k: v[2:] for k, v in batch.items()}, LossWeights())
    assert none_labelled["l1/pred"] == 0.0 and np.isfinite(none_labelled["loss"])
    # video_vicreg=False: level 1's VICReg terms see the labelled windows only, level 2's all
    own = LossWeights(video_vicreg=False)
    _, off = world_model_loss(m, batch, own)
    _, off_labelled = world_model_loss(m, {k: v[:2] for k, v in batch.items()}, own)
    for key in ("l1/var", "l1/cov", "l1/pred"):
        assert off[key] == pytest.approx(off_labelled[key], rel=1e-5), key
    assert off["l2/var"] == pytest.approx(masked["l2/var"], rel=1e-5)
    assert off["l2/var"] != pytest.approx(off_labelled["l2/var"], rel=1e-5)
    _, off_none = world_model_loss(m, {k: v[2:] for k, v in batch.items()}, own)
    assert off_none["l1/var"] == off_none["l1/cov"] == 0.0 and np.isfinite(off_none["loss"])
    # video_predict=False: level 2's prediction sees the labelled windows only, its VICReg all
    lab = LossWeights(video_predict=False)
    _, vp = world_model_loss(m, batch, lab)
    _, vp_labelled = world_model_loss(m, {k: v[:2] for k, v in batch.items()}, lab)
    assert vp["l2/pred"] == pytest.approx(vp_labelled["l2/pred"], rel=1e-5)
    assert masked["l2/pred"] != pytest.approx(vp_labelled["l2/pred"], rel=1e-5)
    assert vp["l2/var"] == pytest.approx(masked["l2/var"], rel=1e-5)
    _, vp_none = world_model_loss(m, {k: v[2:] for k, v in batch.items()}, lab)
    assert vp_none["l2/pred"] == 0.0 and np.isfinite(vp_none["loss"])


def test_three_level_preset_trains_from_config(square_dataset, tmp_path, capsys):
    from hydra import compose, initialize_config_module

    from hmpc.cli import train as train_cli

    overrides = [
        "model=small3", "model.widths=[4,8]", "model.hidden=16", f"data={square_dataset}",
        f"output_dir={tmp_path}", "device=cpu", "trainer.steps=2", "trainer.batch_size=2",
        "trainer.top_steps=1", "trainer.val_every=2", "trainer.val_batches=1",
        "trainer.tensorboard=false", "trainer.plots=false", "trainer.val_fraction=0.2",
    ]
    with initialize_config_module("configs", version_base="1.3"):
        train_cli.run(compose("train", overrides=overrides))
    diag = json.loads((tmp_path / "diagnostics.json").read_text())
    assert set(diag["levels"]) == {"level_1", "level_2", "level_3"}
    assert "checkpoint:" in capsys.readouterr().out


_FAULTS = """
import resource, sys, torch
from hmpc.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.GELU(), torch.nn.Conv2d(16, 32, 3, 2, 1))
x = torch.randn(64, 3, 64, 64)
for _ in range(3):  # warm-up: the heap grows to the step's peak once
    net(x).sum().backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
    net(x).sum().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_training_steps_refaulting_their_activations():
    """A training-like step (conv forward + backward, MB-sized activations) page-faults its
    activations in again every time under glibc's defaults, hardly at all with keep_freed_memory."""
    import subprocess

    faults = {mode: int(subprocess.run([sys.executable, "-c", _FAULTS, mode], check=True,
                                       capture_output=True, text=True).stdout)
              for mode in ("default", "keep")}
    assert faults["keep"] < 0.25 * faults["default"], faults  # measured: 0-1025 against 32-37k


def test_equivariance_warps_come_from_the_saved_rng_so_resume_is_exact(square_dataset, tmp_path, monkeypatch):
    spec = replace(SPEC, keypoints=2)
    weights = LossWeights(equivariance=1.0, equivariance_deg=90.0, equivariance_shift=0.1)
    cfg = replace(CFG, steps=6, checkpoint_every=3, val_every=3)
    full = train(square_dataset, tmp_path / "full", cfg, weights, spec)
    assert full.metrics["l1/equiv"] > 0 and "val/l1/equiv" in full.metrics
    assert_resume_after_step_3_is_exact(square_dataset, tmp_path, monkeypatch, cfg, weights, spec)


def test_validation_windows_do_not_depend_on_the_equivariance_term(square_dataset):
    from hmpc.data import LeRobotDataset
    from hmpc.data.windows import WindowSampler, build_frame_cache

    sampler = WindowSampler(build_frame_cache(LeRobotDataset(square_dataset), progress=False), 5)
    cfg = replace(CFG, val_batches=3)
    plain = train_mod._val_batches(sampler, cfg, LossWeights(), CPU)
    warped = train_mod._val_batches(sampler, cfg, LossWeights(equivariance=1.0), CPU)
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(plain, warped, strict=True))
    assert "warp" in warped[0] and "warp" not in plain[0]


def test_augmented_windows_come_from_the_saved_rng_so_resume_is_exact(square_dataset, tmp_path, monkeypatch):
    from hmpc.augment import ImageAugment

    cfg = replace(CFG, steps=6, checkpoint_every=3, val_every=3,
                  augment=ImageAugment(shift=1, blur=1.0, brightness=0.1, contrast=0.2))
    full = train(square_dataset, tmp_path / "full", cfg)
    plain = train(square_dataset, tmp_path / "plain", replace(cfg, augment=ImageAugment()))
    assert full.metrics["l1/pred"] != plain.metrics["l1/pred"]  # the jitter reaches the batches
    assert_resume_after_step_3_is_exact(square_dataset, tmp_path, monkeypatch, cfg)


def test_augmentation_with_an_agent_mask_is_refused(square_dataset, tmp_path):
    from hmpc.augment import ImageAugment

    mask = {"image_map": [[1, 0, 0], [0, 1, 0]], "radius": 0.1, "fill": [40, 40, 40]}
    spec = replace(SPEC, state_dim=2, agent_mask=mask)
    with pytest.raises(ValueError, match="trainer.augment and model.agent_mask do not mix"):
        train(square_dataset, tmp_path / "run", replace(CFG, augment=ImageAugment(blur=1.0)), spec=spec)
