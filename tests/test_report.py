"""Aggregation and the 95 % interval."""

import pytest

from hmpc.report import (
    aggregate,
    difficulty_table,
    fisher_exact,
    paired,
    paired_runs,
    paired_table,
    results_csv,
    results_table,
    sign_flip_test,
    sign_test,
    wilson_interval,
)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(10, 20)
    assert lo == pytest.approx(29.93, abs=0.05) and hi == pytest.approx(70.07, abs=0.05)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 100.0
    assert wilson_interval(0, 0) == (0.0, 100.0)


def test_aggregate_counts_errors_as_failures():
    recs = [
        {"controller": "a", "success": True, "final_distance": 0.1, "min_distance": 0.1,
         "plan_ms_mean": 2.0, "plan_ms_p95": 3.0, "fallbacks": 1, "error": None, "eval_s": 1.0},
        {"controller": "a", "success": False, "error": "RuntimeError: boom", "eval_s": 0.5},
    ]
    agg = aggregate(recs, ["a"])["a"]
    assert agg["n_episodes"] == 2 and agg["pc_success"] == 50.0 and agg["errors"] == 1
    assert agg["fallbacks"] == 1 and agg["avg_final_distance"] == pytest.approx(0.1)
    table = results_table({"a": agg}, "maze")
    assert "| maze | a | 2 | 50.0 |" in table


def test_objects_out_of_reach_are_counted_where_the_env_reports_them():
    base = {"final_distance": 0.1, "min_distance": 0.1, "plan_ms_mean": 2.0, "plan_ms_p95": 3.0, "error": None}
    recs = [{**base, "controller": "a", "success": False, "object_out_of_reach": True},
            {**base, "controller": "a", "success": True, "object_out_of_reach": False},
            {**base, "controller": "b", "success": True, "object_out_of_reach": None}]  # fmt: skip
    agg = aggregate(recs, ["a", "b"])
    assert agg["a"]["object_out_of_reach"] == 1 and agg["b"]["object_out_of_reach"] is None
    rows = results_csv(agg, "pick").splitlines()
    assert rows[0].endswith(",object_out_of_reach") and rows[1].endswith(",1") and rows[2].endswith(",")


def test_difficulty_table_buckets_by_path_distance():
    recs = [
        {"controller": "a", "success": True, "path_distance": 1},
        {"controller": "a", "success": False, "path_distance": 4},
        {"controller": "a", "success": True, "path_distance": 4},
        {"controller": "b", "success": False, "path_distance": 1},
    ]
    table = difficulty_table(recs, ["a", "b"])
    assert "| 1 cells | 4 cells |" in table
    assert "| a | 100 % (1) | 50 % (2) |" in table and "| b | 0 % (1) | - |" in table
    recs.append({"controller": "b", "success": False, "path_distance": -1, "error": "no start/goal pair"})
    table = difficulty_table(recs, ["a", "b"])  # an episode that raised is not a '-1 cells' bucket
    assert "| 1 cells | 4 cells | error |" in table and "| b | 0 % (1) | - | 0 % (1) |" in table


def test_difficulty_without_a_maze_uses_start_distance_quantiles():
    """Push-T / Panda report path_distance -1: buckets are quantile bins of the start distance,
    the same for every controller (same seeds, same starts)."""
    starts = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    recs = [{"controller": c, "success": d < 0.35, "path_distance": -1, "start_distance": d}
            for c in ("a", "b") for d in starts]  # fmt: skip
    table = difficulty_table(recs, ["a", "b"])
    assert "start-goal distance (task units)" in table and "cells" not in table
    assert "| a | 100 % (2) | 50 % (2) | 0 % (2) |" in table
    assert {r["difficulty"] for r in recs if r["controller"] == "a"} == {
        r["difficulty"] for r in recs if r["controller"] == "b"}


def test_sign_test_known_values():
    assert sign_test(0, 0) == 1.0  # no discordant pair: no evidence either way
    assert sign_test(0, 3) == pytest.approx(0.25)  # 2 * (1/2)^3
    assert sign_test(8, 3) == pytest.approx(0.2265625)  # 2 * (1 + 11 + 55 + 165) / 2^11
    assert sign_test(5, 5) == 1.0
    assert sign_test(10, 0) == pytest.approx(2 / 1024)


def test_sign_flip_test_known_values():
    assert sign_flip_test([2, 3, 4], [1, 2, 3]) == pytest.approx(2 / 8)  # all up: only +++ and ---
    assert sign_flip_test([1, 2, 3, 4, 5], [0] * 5) == pytest.approx(2 / 32)
    # -1 against 2, 3, 4, 5: |sum| >= 13 needs the negatives to sum to <= 1 ({} or {1}), both signs
    assert sign_flip_test([-1, 2, 3, 4, 5], [0] * 5) == pytest.approx(4 / 32)
    assert sign_flip_test([1.0, -1.0], [0.0, 0.0]) == 1.0  # mean 0: every flip is as extreme
    assert sign_flip_test([], []) == 1.0
    for short in ([1], [1, 2, 3]):  # one broadcasts, the other would not: both are named
        with pytest.raises(ValueError, match="equal-length"):
            sign_flip_test([1, 2], short)
    with pytest.raises(ValueError, match="n = 21"):
        sign_flip_test([1.0] * 21, [0.0] * 21)


def test_paired_compares_conditions_and_controllers_on_the_same_pairs():
    def rec(name, cond, i, ok):
        label = name if cond == "nominal" else f"{name} [{cond}]"
        return {"controller": label, "controller_name": name, "condition": cond, "episode_index": i, "success": ok}

    a_nom, a_slow = [1, 1, 0, 1, 0], [0, 1, 1, 0, 0]  # a under "slow": lost pairs 0 and 3, gained 2
    b_nom = [1, 1, 1, 1, 1]  # b against a: gained 2 and 4
    recs = ([rec("a", "nominal", i, bool(v)) for i, v in enumerate(a_nom)]
            + [rec("a", "slow", i, bool(v)) for i, v in enumerate(a_slow)]
            + [rec("b", "nominal", i, bool(v)) for i, v in enumerate(b_nom)]
            + [rec("b", "slow", i, True) for i in range(4)])  # one pair missing: 4 common pairs
    got = {(c["compared"], c["reference"]): c for c in paired(recs)}
    assert list(got) == [("a [slow]", "a"), ("b [slow]", "b"), ("b", "a")]
    c = got[("a [slow]", "a")]
    assert (c["pairs"], c["reference_successes"], c["successes"], c["lost"], c["gained"]) == (5, 3, 2, 2, 1)
    assert c["p"] == pytest.approx(1.0)
    c = got[("b [slow]", "b")]
    assert (c["pairs"], c["lost"], c["gained"]) == (4, 0, 0)
    c = got[("b", "a")]
    assert (c["lost"], c["gained"], c["p"]) == (0, 2, pytest.approx(0.5))
    table = paired_table(paired(recs))
    assert "| a [slow] | a | 5 | 60.0 → 40.0 | 2 | 1 | 1 |" in table
    assert paired_table(paired([rec("a", "nominal", 0, True)])) == ""  # one run: nothing to compare
    moved = [{**rec("a", "nominal", 0, True), "start_distance": 1.0},
             {**rec("a", "far", 0, False), "start_distance": 2.5}]  # another start: not a pair
    assert paired(moved) == []
    assert len(paired([{**r, "start_distance": 1.0} for r in moved])) == 1


def test_fisher_exact_known_values():
    assert fisher_exact(51, 60, 44, 60) == pytest.approx(0.17674, abs=1e-5)  # scipy.stats.fisher_exact
    assert fisher_exact(3, 3, 0, 3) == pytest.approx(0.1)  # the classic: 2 * 1/20
    assert fisher_exact(5, 10, 5, 10) == pytest.approx(1.0)
    assert fisher_exact(10, 10, 0, 10) == pytest.approx(2 / 184756)


def test_exact_tests_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")  # dev installs have it (through ray[rllib])
    for wa, na, wb, nb in [(51, 60, 44, 60), (0, 20, 7, 20), (13, 40, 13, 41), (2, 5, 30, 31)]:
        want = stats.fisher_exact([[wa, na - wa], [wb, nb - wb]]).pvalue
        assert fisher_exact(wa, na, wb, nb) == pytest.approx(want, rel=1e-9)
    for lost, gained in [(0, 0), (1, 9), (8, 3), (15, 1), (6, 6)]:
        want = stats.binomtest(min(lost, gained), lost + gained).pvalue if lost + gained else 1.0
        assert sign_test(lost, gained) == pytest.approx(want, rel=1e-9)


def test_hmpc_eval_compare_with_an_earlier_run(tmp_path, capsys):
    """compare_with pairs each row with the same row of an earlier run, episode by episode (seed)."""
    import json

    from hydra import compose, initialize_config_module

    from hmpc.cli import evaluate as eval_cli

    def cfg(out, extra):
        with initialize_config_module("configs", version_base="1.3"):
            return compose("eval", overrides=[f"output_dir={out}", "workers=0", "videos=0", "episodes=3",
                                              "max_steps=3", "env.image_size=16", "controllers=[random]", *extra])

    first, again, other = tmp_path / "first", tmp_path / "again", tmp_path / "other"
    eval_cli.run(cfg(first, []))
    eval_cli.run(cfg(again, [f"compare_with={first}"]))
    capsys.readouterr()
    compared = json.loads((again / "eval_info.json").read_text())["compared_with"]
    assert compared["folder"] == str(first.resolve())
    (c,) = compared["paired"]  # the same seeded random actions: the same outcomes
    assert (c["compared"], c["reference"], c["pairs"], c["lost"], c["gained"]) == ("random", "random (first)", 3, 0, 0)
    assert "Against the earlier run" in (again / "results.md").read_text()
    eval_cli.run(cfg(other, [f"compare_with={first}", "seed=7"]))  # other seeds: no shared episode
    assert "No row of" in (other / "results.md").read_text()
    (tmp_path / "seedless").mkdir()
    (tmp_path / "seedless" / "eval_info.json").write_text(json.dumps({"per_episode": [{"controller": "random"}]}))
    cases = [(tmp_path / "bad", tmp_path / "missing", "no eval_info.json there"),
             (tmp_path / "bad", tmp_path / "seedless", "not an hmpc-eval record"),
             (first, first, "this run's output_dir")]  # it would overwrite the run it compares with
    for out, earlier, why in cases:  # each refused before any episode runs
        with pytest.raises(SystemExit) as e:
            eval_cli.run(cfg(out, [f"compare_with={earlier}"]))
        assert e.value.code == 2 and why in capsys.readouterr().err
    assert not (tmp_path / "bad" / "eval_info.json").exists()
    assert json.loads((first / "eval_info.json").read_text()).get("compared_with") is None  # not overwritten


def test_paired_runs_matches_episodes_by_seed():
    def rec(label, seed, ok, start=1.0, error=None):
        return {"controller": label, "seed": seed, "success": ok, "start_distance": start, "error": error}

    before = [rec("a", s, ok) for s, ok in zip([10, 11, 12, 13, 14], [1, 1, 0, 0, 0], strict=True)]
    before += [rec("b", 10, True), rec("c", 10, True), rec("d", 10, True)]
    after = [rec("a", s, ok) for s, ok in zip([14, 13, 12, 11, 10, 99], [1, 1, 1, 0, 1, 1], strict=True)]  # other order
    after += [rec("b", 10, True, start=2.0),  # starts elsewhere: not a pair
              rec("c", 10, False, error="RuntimeError: worker died")]  # failed: left out, not lost
    got = {c["compared"]: c for c in paired_runs(before, after, "run1")}
    assert set(got) == {"a", "c"}
    a = got["a"]  # seeds 10-14 shared: lost 11, gained 12, 13, 14
    assert (a["reference"], a["pairs"], a["lost"], a["gained"]) == ("a (run1)", 5, 1, 3)
    assert (a["reference_successes"], a["successes"], a["left_out"]) == (2, 4, 0)
    assert (got["c"]["pairs"], got["c"]["lost"], got["c"]["left_out"]) == (0, 0, 1)
    assert "| c | c (run1) | 0 (1 left out: errors) | - |" in paired_table(list(got.values()))
