"""hmpc-sweep: dotted overrides, search-space validation, and a tiny Ray Tune sweep that
reports the default beside the sampled trials and writes a loadable best preset."""

from __future__ import annotations

import math

import pytest
import yaml
from helpers import SQUARE_SIZE

from hmpc.cli.common import build_training
from hmpc.sweep import SweepConfig, apply_overrides, flat_space, run_sweep, tune_space

SIZE = SQUARE_SIZE
BASE = {
    "model": {"latent_dim": 8, "widths": [4, 8], "hidden": 16, "state_dim": 0,
              "levels": [{"latent_dim": 6, "k": 2, "macro_dim": 2, "hidden": 16}],
              "loss": {"variance": 1.0, "covariance": 0.04, "inverse_dynamics": 1.0}},
    "trainer": {"steps": 12, "lr": 1e-3, "batch_size": 4, "top_steps": 2, "val_every": 4, "val_batches": 1,
                "log_every": 4, "checkpoint_every": 0, "tensorboard": False, "plots": False},
}  # fmt: skip


def test_overrides_and_space_errors():
    tree = apply_overrides(BASE, {"model.loss.variance": 2.0, "model.levels.0.k": 3})
    assert tree["model"]["loss"]["variance"] == 2.0 and tree["model"]["levels"][0]["k"] == 3
    assert BASE["model"]["loss"]["variance"] == 1.0  # base untouched
    with pytest.raises(ValueError, match="model.loss.varianse"):
        apply_overrides(BASE, {"model.loss.varianse": 2.0})
    with pytest.raises(ValueError, match="loguniform"):
        tune_space({"trainer.lr": {"logarithmic": [1, 2]}})
    with pytest.raises(ValueError, match="trials"):
        SweepConfig(trials=1)


def test_search_overrides_as_the_readme_writes_them():
    """Hydra overrides build a nested space; dotted keys (older sweep files) still work."""
    from hydra import compose, initialize_config_module

    from hmpc.cli.common import plain

    with initialize_config_module("configs", version_base="1.3"):
        cfg = compose("sweep", overrides=["data=x", "search.model.loss.variance={loguniform: [0.5, 2]}",
                                          "+search.model.latent_dim={choice: [16, 32]}", "~search.trainer"])
    assert flat_space(plain(cfg.search)) == {
        "model.loss.variance": {"loguniform": [0.5, 2]}, "model.loss.covariance": {"loguniform": [0.013, 0.12]},
        "model.loss.inverse_dynamics": {"loguniform": [0.33, 3.0]}, "model.latent_dim": {"choice": [16, 32]}}
    assert flat_space({"model.levels.0.k": {"randint": [2, 7]}}) == {"model.levels.0.k": {"randint": [2, 7]}}
    assert set(tune_space(plain(cfg.search))) == set(flat_space(plain(cfg.search)))
    with pytest.raises(ValueError, match=r"one sampler per key .*'~search.trainer.lr' '\+search.trainer.lr="):
        tune_space({"trainer": {"lr": {"loguniform": [1e-4, 1e-3], "uniform": [1e-4, 1e-3]}}})


@pytest.mark.ray
def test_tiny_sweep_reports_default_and_writes_best_preset(square_dataset, tmp_path):
    space = {"model": {"loss": {"variance": {"loguniform": [0.33, 3.0]}}}, "trainer.lr": {"choice": [3e-4, 3e-3]}}
    cfg = SweepConfig(trials=3, metric="val/l1/pred_err_ratio", mode="min", scheduler="asha",
                      max_concurrent=2)  # fmt: skip
    report = run_sweep(square_dataset, BASE, space, build_training, cfg, tmp_path / "sweep")
    names = [r["trial"] for r in report["rows"]]
    assert len(names) == 3 and "default" in names
    assert report["default"]["model.loss.variance"] == 1.0
    assert report["best"] is not None and math.isfinite(report["best"]["objective"])
    out = tmp_path / "sweep"
    table = (out / "results.md").read_text()
    assert "| default |" in table and ("Best:" in table or "default config is the best" in table)
    assert (out / "sweep.png").stat().st_size > 0 and (out / "sweep_results.csv").is_file()
    preset = yaml.safe_load((out / "model" / "best.yaml").read_text())
    assert preset["loss"]["variance"] == pytest.approx(report["best"]["model.loss.variance"])
    assert not (out / "trainer").exists()  # a trainer preset would carry the sweep's short training
    assert f"`hmpc-train data={square_dataset.resolve()} 'hydra.searchpath=[file://{out.resolve()}]' model=best " \
           f"trainer.lr={report['best']['trainer.lr']!r}`" in table
    spec, weights, train_cfg = build_training({"model": preset, "trainer": BASE["trainer"]}, SIZE, 2)
    assert weights.variance == pytest.approx(report["best"]["model.loss.variance"])
