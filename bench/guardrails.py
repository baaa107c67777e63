"""Guardrail costs on and off: violation rates of the soft constraints, success, planning time.

    python bench/guardrails.py --checkpoint <run>/checkpoint     # ~4 min on 2 CPU cores

The checkpoint must carry a state probe (``hmpc-train ... model.loss.state_probe=1.0`` on U-maze
data): the guardrails read the *predicted* state through it. ``flat_gd_guarded``
(``configs/controllers/flat_gd_guarded.yaml``: workspace bounds on (x, y) and a forbidden box, the
U's bottom-left cell) runs twice on the same seeded episodes: with its guardrail weights, and
with both weights 0 (the same bounds and box are only monitored). The harness counts violations
from the true state, which the controller never sees, and commanded actions outside [-1, 1].
Starts and goals are never drawn in the forbidden cell (``env.exclude_regions``): a goal inside
it would pit the goal cost against the guardrail, and no controller could satisfy both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _cli import ci, evaluate

CTRL = "flat_gd_guarded"
FORBIDDEN = "[[1,1,2,2]]"  # the forbidden box of flat_gd_guarded.yaml (x, y in cells)
ROWS = {
    "guardrails on": [],
    "guardrails off (monitored)": [f"controllers.{CTRL}.weights.guardrails.state_bounds=0",
                                   f"controllers.{CTRL}.weights.guardrails.forbidden=0"],  # fmt: skip
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="hmpc-guardrails-"))
    results = {}
    for i, (name, overrides) in enumerate(ROWS.items()):
        results[name] = evaluate(args.checkpoint, [CTRL], [
            "env=point_maze", f"env.exclude_regions={FORBIDDEN}", f"episodes={args.episodes}",
            "seed=1000", "max_steps=100", "videos=0", f"workers={args.workers}", *overrides,
        ], out / f"row{i}", name)[CTRL]  # fmt: skip
    (out / "guardrails.json").write_text(json.dumps(results, indent=1))
    print(f"\n# Guardrails, U-maze, {args.episodes} episodes, {CTRL}, checkpoint {args.checkpoint}; "
          f"outputs in {out}\n")  # fmt: skip
    print("| row | success % | 95 % CI | steps violating (true state) | predicted violating | "
          "commands out of bounds | plan ms |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, a in results.items():
        steps = max(a["steps"], 1)
        viol = a["guardrail_violations_mean"] * a["n_episodes"] / steps
        pred = a["predicted_violations_mean"] * a["n_episodes"] / steps
        print(f"| {name} | {a['pc_success']:.0f} | {ci(a)} | {100 * viol:.1f} % | "
              f"{100 * pred:.1f} % | {a['actions_out_of_bounds']} of {a['steps']} | "
              f"{a['plan_ms_mean']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
