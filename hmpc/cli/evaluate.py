"""hmpc-eval: controllers on the same seeded episodes -> eval_info.json, results.md, a table."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hmpc.cli.common import (
    CONFIG_PATH,
    controller_specs,
    env_spec,
    plain,
    report_user_errors,
    typed,
)
from hmpc.evaluate import EvalConfig


@report_user_errors
def run(cfg: DictConfig) -> None:
    from hmpc.evaluate import evaluate

    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    ecfg = typed(EvalConfig, {k: v for k, v in plain(cfg).items() if k in fields}, "eval.yaml")
    conditions = plain(cfg.get("conditions")) or {"nominal": {}}
    before = _earlier_run(cfg.get("compare_with"), cfg.output_dir)  # checked before any episode runs
    info = evaluate(
        env_spec(cfg), cfg.checkpoint, controller_specs(cfg.controllers, cfg.cube_model), ecfg, cfg.output_dir,
        conditions=conditions, earlier=before,
    )
    print((Path(cfg.output_dir) / "results.md").read_text())
    print(f"eval_info: {cfg.output_dir}/eval_info.json ({info['eval_s']:.0f} s)")
    failed = [r for r in info["per_episode"] if r.get("error")]
    if failed:  # the results are written; the exit status says they are incomplete
        first = str(failed[0]["error"]).strip().splitlines()[-1][:300]
        print(f"error: {len(failed)} of {len(info['per_episode'])} episodes failed (the first, "
              f"{failed[0]['episode_id']}: {first}); every error is in eval_info.json", file=sys.stderr)
        sys.exit(1)


def _earlier_run(folder: str | None, output_dir: str) -> tuple[Path, list[dict]] | None:
    """``compare_with``'s folder and its per-episode records, or a ValueError naming what is wrong."""
    if folder is None:
        return None
    path = Path(folder) / "eval_info.json"
    if not path.is_file():
        raise ValueError(f"compare_with={folder}: no eval_info.json there; give the output_dir of an earlier hmpc-eval")
    if Path(folder).resolve() == Path(output_dir).resolve():
        raise ValueError(f"compare_with={folder} is this run's output_dir, which the run would overwrite; "
                         "give this run another output_dir")
    try:
        records = json.loads(path.read_text())["per_episode"]
        if not all({"controller", "seed", "success"} <= set(r) for r in records):
            raise KeyError("a per-episode record without controller, seed or success")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"compare_with={folder}: {path} is not an hmpc-eval record ({e!r})") from e
    return Path(folder), records


@hydra.main(config_path=CONFIG_PATH, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
