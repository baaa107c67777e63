"""Every model preset under configs/model builds a world model that encodes, rolls out and plans
its top level; trainer presets compose."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from hmpc.cli.common import model_spec, train_config
from hmpc.world_model import build_world_model

PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "model").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_model_preset_builds_and_rolls_out(preset):
    with initialize_config_module(config_module="configs", version_base=None):
        cfg = compose("train", overrides=[f"model={preset}", "trainer=long_horizon", "data=unused"])
    action_dim = 4 if preset.startswith("panda") else 2
    spec, _ = model_spec(cfg.model, 64, action_dim)
    train_config(cfg.trainer)  # typed: a misspelt trainer key fails here
    assert cfg.trainer.top_steps == 6 and cfg.trainer.lr == 1.0e-3  # long_horizon over default
    model = build_world_model(spec, seed=0)
    with torch.no_grad():
        state = torch.zeros(2, spec.state_dim) if spec.state_dim else None  # fused proprioception
        s1 = model.encode(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), state)
        top = spec.num_levels
        plan = torch.zeros(2, 3, spec.action_size(top))
        pred = model.rollout(model.project(s1, top), plan, top)
    assert pred.shape == (2, 3, spec.latent_size(top)) and torch.isfinite(pred).all()


def test_push_t_pose_is_push_t_with_the_equivariance_term():
    """The pose controller's preset stays the measured recipe: model=push_t plus
    model.loss.equivariance=1.0, nothing else."""
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="configs", version_base=None):
        pose = compose("train", overrides=["model=push_t_pose", "data=unused"])
        plain = compose("train", overrides=["model=push_t", "model.loss.equivariance=1.0", "data=unused"])
    assert pose.model.loss.equivariance == 1.0
    assert OmegaConf.to_container(pose.model) == OmegaConf.to_container(plain.model)


def test_trainer_augment_is_typed_from_the_command_line():
    with initialize_config_module(config_module="configs", version_base=None):
        cfg = compose("train", overrides=["data=unused", "trainer.augment.blur=1.0", "trainer.augment.shift=2"])
        typo = compose("train", overrides=["data=unused", "+trainer.augment.blurr=1.0"])
        bad = compose("train", overrides=["data=unused", "trainer.augment.contrast=1.5"])
    aug = train_config(cfg.trainer).augment
    assert (aug.shift, aug.blur, aug.brightness) == (2, 1.0, 0.0) and aug.active
    assert not train_config(compose_default()).augment.active
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['blurr'\] in trainer.augment"):
        train_config(typo.trainer)
    with pytest.raises(ValueError, match=r"trainer.augment: .*contrast=1.5"):
        train_config(bad.trainer)


def compose_default():
    with initialize_config_module(config_module="configs", version_base=None):
        return compose("train", overrides=["data=unused"]).trainer


def test_trainer_augment_must_be_a_group():
    from omegaconf import OmegaConf

    with pytest.raises(ValueError, match=r"trainer.augment=1.0 must be a group of keys"):
        train_config(OmegaConf.create({"augment": 1.0}))
