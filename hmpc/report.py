"""Aggregation of per-episode records into the numbers users quote, with 95 % intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a success rate, in percent. (0, 100) when n == 0."""
    if n == 0:
        return 0.0, 100.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def _mean(records: Sequence[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in records])) if records else float("nan")


def _mean_set(records: Sequence[dict[str, Any]], key: str) -> float | None:
    """Mean of ``key`` over the records where it is set (not None); None when none has it."""
    vals = [r[key] for r in records if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def _count_set(records: Sequence[dict[str, Any]], key: str) -> int | None:
    """How many records have ``key`` true; None when none has it set."""
    vals = [bool(r[key]) for r in records if r.get(key) is not None]
    return sum(vals) if vals else None


def aggregate(records: Sequence[dict[str, Any]], controllers: Sequence[str]) -> dict[str, dict]:
    """Per-controller summary: pc_success with its interval, distances, planning time, failures."""
    out: dict[str, dict] = {}
    for name in controllers:
        rs = [r for r in records if r["controller"] == name]
        ok = [r for r in rs if r.get("error") is None]
        wins = sum(bool(r["success"]) for r in rs)
        lo, hi = wilson_interval(wins, len(rs))
        out[name] = {
            "n_episodes": len(rs),
            "pc_success": 100.0 * wins / max(len(rs), 1),
            "pc_success_ci95": [lo, hi],
            "avg_final_distance": _mean(ok, "final_distance"),
            "avg_min_distance": _mean(ok, "min_distance"),
            "plan_ms_mean": _mean(ok, "plan_ms_mean"),
            "plan_ms_p95": float(np.percentile([r["plan_ms_p95"] for r in ok], 95)) if ok else float("nan"),
            "fallbacks": int(sum(r.get("fallbacks", 0) for r in ok)),
            # commanded actions the env had to clip or zero, over all steps (guardrails: 0)
            "actions_out_of_bounds": int(sum(r.get("actions_out_of_bounds", 0) for r in ok)),
            "steps": int(sum(r.get("steps", 0) for r in ok)),
            # guardrails: per-episode mean of violating steps (None: no bounds/regions configured)
            "guardrail_violations_mean": _mean_set(ok, "guardrail_violations"),
            "predicted_violations_mean": _mean_set(ok, "predicted_violations"),
            # episodes that ended with the object where no action can fetch it (None: not reported)
            "object_out_of_reach": _count_set(ok, "object_out_of_reach"),
            "errors": len(rs) - len(ok),
            "eval_s": float(sum(r.get("eval_s", 0.0) for r in rs)),
        }
    return out


def results_table(aggregated: dict[str, dict], task: str) -> str:
    """Markdown table: task x controller, success with 95 % interval, distance, planning time."""
    lines = [
        "| task | controller | episodes | success % | 95 % CI | final dist | plan ms (mean / p95) | fallbacks | errors |",
        "|---|---|---:|---:|---|---:|---|---:|---:|",
    ]
    for name, a in aggregated.items():
        lo, hi = a["pc_success_ci95"]
        lines.append(
            f"| {task} | {name} | {a['n_episodes']} | {a['pc_success']:.1f} | [{lo:.1f}, {hi:.1f}] "
            f"| {a['avg_final_distance']:.2f} | {a['plan_ms_mean']:.1f} / {a['plan_ms_p95']:.1f} "
            f"| {a['fallbacks']} | {a['errors']} |"
        )
    return "\n".join(lines)


def assign_difficulty(records: Sequence[dict[str, Any]], bins: int = 3) -> tuple[list[str], str]:
    """Label each record's start-goal difficulty in ``record["difficulty"]``; returns the labels
    in order and what they measure.

    Mazes (any ``path_distance`` >= 0): the start-goal path distance in cells. Other tasks:
    ``bins`` quantile bins of the start distance in the task's own units (records of the same
    seeds share starts, so every controller gets the same bins).
    """
    if any(int(r.get("path_distance", -1)) >= 0 for r in records):
        for r in records:  # a maze episode without a path distance raised (its error is recorded)
            d = int(r.get("path_distance", -1))
            r["difficulty"] = f"{d} cells" if d >= 0 else "error"
        keys = sorted({int(r.get("path_distance", -1)) for r in records} - {-1})
        labels = [f"{k} cells" for k in keys]
        if any(r["difficulty"] == "error" for r in records):
            labels.append("error")
        return labels, "start-goal path distance (maze cells)"
    starts = np.array([float(r.get("start_distance", np.nan)) for r in records])
    finite = starts[np.isfinite(starts)]
    if finite.size == 0:
        for r in records:
            r["difficulty"] = "all"
        return ["all"], "all episodes"
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
    labels = [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)] or ["all"]
    for r, d in zip(records, starts, strict=True):
        k = int(np.searchsorted(edges, d, "right")) - 1 if np.isfinite(d) else 0
        r["difficulty"] = labels[min(max(k, 0), len(labels) - 1)]
    return labels, "start-goal distance (task units), quantile bins"


def difficulty_table(records: Sequence[dict[str, Any]], controllers: Sequence[str]) -> str:
    """Markdown table of success % per controller by start-goal difficulty (see
    :func:`assign_difficulty`)."""
    labels, what = assign_difficulty(records)
    lines = [f"Success by {what} (episodes in brackets):", "",
             "| controller | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]  # fmt: skip
    for name in controllers:
        cells = []
        for d in labels:
            rs = [r for r in records if r["controller"] == name and r["difficulty"] == d]
            wins = sum(bool(r["success"]) for r in rs)
            cells.append(f"{100.0 * wins / len(rs):.0f} % ({len(rs)})" if rs else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sign_test(lost: int, gained: int) -> float:
    """Exact two-sided sign test (McNemar's exact test) on the discordant pairs: the chance of a
    split at least this uneven if each discordant pair went either way with probability 1/2."""
    d, k = lost + gained, min(lost, gained)
    if d == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(d, i) for i in range(k + 1)) / 2 ** d)


def sign_flip_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided paired permutation test of mean(a - b) = 0 (e.g. one number per training
    seed for two settings): the share of the 2^n sign flips of the differences whose mean is at
    least as far from 0 as the one seen. Distribution-free, unlike a paired t-test; with n pairs
    it cannot go below 2 / 2^n. At most 20 pairs (2^20 flips)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:  # checked before subtracting: numpy would broadcast
        raise ValueError(f"sign_flip_test needs two equal-length sequences; got shapes {x.shape} and {y.shape}")
    d = x - y
    n = d.size
    if n > 20:
        raise ValueError(f"sign_flip_test enumerates 2^n flips: n = {n} pairs is over 20")
    if n == 0:
        return 1.0
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # (2^n, n): every sign pattern
    sums = np.abs(((1 - 2 * bits) * d).sum(axis=1))
    return float(np.mean(sums >= abs(d.sum()) * (1 - 1e-12)))


def fisher_exact(wins_a: int, n_a: int, wins_b: int, n_b: int) -> float:
    """Two-sided Fisher exact test of two success rates from different episodes (two samples, not
    pairs): the chance, given the total successes, of a split at most as likely as the one seen."""
    k, n = wins_a + wins_b, n_a + n_b

    def prob(x: int) -> float:
        return math.comb(n_a, x) * math.comb(n_b, k - x) / math.comb(n, k)

    seen = prob(wins_a)
    return min(1.0, sum(q for x in range(max(0, k - n_b), min(k, n_a) + 1) if (q := prob(x)) <= seen * (1 + 1e-9)))


def paired(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired comparisons on the same start/goal pairs (episode index): each condition against the
    first condition (usually nominal) for every controller, and each controller against the first
    one under the first condition. Per comparison: pairs, successes of reference and this, pairs
    lost (solved by the reference only) and gained (by this only), :func:`sign_test`'s p, and the
    pairs left out because an episode of either row failed with an error. Conditions that move
    the starts (``start_distance`` differs for an episode index, as with ``ood_starts``) are not
    pairs, and are left out."""
    runs: dict[tuple[str, str], dict[Any, _Outcome]] = {}
    labels: dict[tuple[str, str], str] = {}  # the results row of each (controller, condition)
    for r in records:
        key = (r.get("controller_name", r["controller"]), r.get("condition", "nominal"))
        runs.setdefault(key, {})[int(r["episode_index"])] = _outcome(r)
        labels[key] = r["controller"]
    names = list(dict.fromkeys(k[0] for k in runs))
    conds = list(dict.fromkeys(k[1] for k in runs))
    pairs = [((n, conds[0]), (n, c)) for n in names for c in conds[1:]]
    pairs += [((names[0], conds[0]), (n, conds[0])) for n in names[1:]]
    found = (_compare(labels[ref], labels[this], runs[ref], runs[this]) for ref, this in pairs
             if ref in runs and this in runs)
    return [c for c in found if c is not None]


def paired_runs(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]],
                before_name: str) -> list[dict[str, Any]]:
    """Each row (controller label) of the run ``after`` against the same row of the run ``before``
    (e.g. two checkpoints), episodes matched by their seed: :func:`paired`'s fields. Rows missing
    from either run, or whose episodes start elsewhere (another env or seed list), are left out."""
    def by_seed(records: Sequence[dict[str, Any]]) -> dict[str, dict[Any, _Outcome]]:
        out: dict[str, dict[Any, _Outcome]] = {}
        for r in records:
            out.setdefault(r["controller"], {})[int(r["seed"])] = _outcome(r)
        return out

    a, b = by_seed(before), by_seed(after)
    found = (_compare(f"{label} ({before_name})", label, a[label], b[label]) for label in b if label in a)
    return [c for c in found if c is not None]


_Outcome = tuple[bool, Any, bool]  # success, start distance (None: not recorded), failed with an error


def _outcome(r: dict[str, Any]) -> _Outcome:
    return bool(r["success"]), r.get("start_distance"), r.get("error") is not None


def _compare(ref_label: str, label: str, a: dict[Any, _Outcome], b: dict[Any, _Outcome]) -> dict[str, Any] | None:
    """Paired counts of two rows keyed alike, or None when they share no pair or a shared key
    starts elsewhere; pairs with a failed episode on either side are counted apart (``left_out``)."""
    shared = sorted(set(a) & set(b))
    if not shared or any(_moved(a[k][1], b[k][1]) for k in shared if not (a[k][2] or b[k][2])):
        return None
    common = [k for k in shared if not (a[k][2] or b[k][2])]
    lost = sum(a[k][0] and not b[k][0] for k in common)
    gained = sum(b[k][0] and not a[k][0] for k in common)
    return {"reference": ref_label, "compared": label, "pairs": len(common),
            "reference_successes": sum(a[k][0] for k in common), "successes": sum(b[k][0] for k in common),
            "lost": lost, "gained": gained, "p": sign_test(lost, gained), "left_out": len(shared) - len(common)}


def _moved(x: Any, y: Any) -> bool:
    """Whether two recorded start distances differ (beyond float noise across machines)."""
    return x is not None and y is not None and not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)


def earlier_run_section(comparisons: Sequence[dict[str, Any]], rows: Sequence[str], folder: str) -> str:
    """results.md's section on :func:`paired_runs` against the run in ``folder``: the table, and
    the ``rows`` of this run that found no partner there."""
    table = paired_table(comparisons) or (f"No row of {folder} shares episodes with this run (the same "
                                          "controllers, seed and env are needed).")  # fmt: skip
    missing = [r for r in rows if r not in {c["compared"] for c in comparisons}]
    note = f"\n\nNot compared (no such row there, or its episodes start elsewhere): {', '.join(missing)}" if missing else ""
    return (f"Against the earlier run {folder} (rows matched by name: a condition of the same name with other "
            f"settings there is compared as if it were the same):\n\n{table}{note}")


def paired_table(comparisons: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`paired` (empty string when there is nothing to compare)."""
    if not comparisons:
        return ""
    lines = ["Paired on the same start/goal pairs (lost: solved by the reference only; gained: by the "
             "compared only; p: exact two-sided sign test on those):", "",
             "| compared | reference | pairs | success % (reference → compared) | lost | gained | p |",
             "|---|---|---:|---|---:|---:|---:|"]  # fmt: skip
    for c in comparisons:
        n, out = c["pairs"], c.get("left_out", 0)
        pairs = f"{n} ({out} left out: errors)" if out else f"{n}"
        rates = f"{100 * c['reference_successes'] / n:.1f} → {100 * c['successes'] / n:.1f}" if n else "-"
        lines.append(f"| {c['compared']} | {c['reference']} | {pairs} | {rates} | {c['lost']} | {c['gained']} "
                     f"| {c['p']:.3g} |")
    return "\n".join(lines)


CSV_FIELDS = (
    "n_episodes", "pc_success", "ci95_low", "ci95_high", "avg_final_distance", "avg_min_distance",
    "plan_ms_mean", "plan_ms_p95", "fallbacks", "actions_out_of_bounds", "steps", "errors", "eval_s",
    "object_out_of_reach",
)


def _csv_cell(v: Any) -> str:
    """A number as CSV text: floats to 4 significant digits, None (not reported) empty."""
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def results_csv(aggregated: dict[str, dict], task: str) -> str:
    """The aggregated table as CSV, one row per task x controller (x condition)."""
    lines = [",".join(("task", "controller", *CSV_FIELDS))]
    for name, a in aggregated.items():
        a = {**a, "ci95_low": a["pc_success_ci95"][0], "ci95_high": a["pc_success_ci95"][1]}
        lines.append(",".join([task, f'"{name}"', *(_csv_cell(a[k]) for k in CSV_FIELDS)]))
    return "\n".join(lines) + "\n"
