"""hmpc-sweep: Ray Tune random search over world-model settings, scored by validation diagnostics.

    hmpc-sweep data=DIR                                  # 8 trials around model=small
    hmpc-sweep data=DIR sweep.trials=16 sweep.metric=val/l1/pred_err_ratio sweep.mode=min
    hmpc-sweep data=DIR 'search.model.loss.variance={loguniform: [0.5, 2]}' '~search.trainer'
    hmpc-train data=DIR hydra.searchpath=[file://<sweep output_dir>] model=best trainer.lr=<best>  # as printed
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import (
    CONFIG_PATH,
    build_training,
    existing_dir,
    plain,
    report_user_errors,
    typed,
)


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.sweep import SweepConfig, run_sweep

    root = existing_dir(cfg.data, "data", "collect one with `hmpc-collect output_dir=<dir>`")
    scfg = typed(SweepConfig, plain(cfg.sweep), "sweep.yaml: sweep")
    space = plain(cfg.search) or {}
    if not space:
        raise ValueError("search is empty; add e.g. '+search.model.loss.variance={loguniform: [0.3, 3]}'")
    base = {"model": plain(cfg.model), "trainer": plain(cfg.trainer)}
    run_sweep(root, base, space, build_training, scfg, cfg.output_dir, cfg.address)
    print((Path(cfg.output_dir) / "results.md").read_text())  # ends with the hmpc-train command of the best trial


@hydra.main(config_path=CONFIG_PATH, config_name="sweep", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
