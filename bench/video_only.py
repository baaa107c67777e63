"""Learning from video-only episodes: 10 % action-labelled + 90 % video-only vs the 10 % alone.

    python bench/video_only.py --out outputs/bench/video_only      # ~25 min on 2 CPU cores
    python bench/video_only.py --full                              # adds the 100 %-labelled row
    python bench/video_only.py --layout medium --labelled-share 0.5   # a harder maze to plan in
    python bench/video_only.py --layout medium --video-batch 32 --runs labelled,mixed_extra \
        --train-steps 2000                 # video-only windows added to the labelled batch (~35 min)
    python bench/video_only.py --layout medium --video-batch 32 --runs labelled,mixed_extra \
        --train-steps 2000 --seeds 0,1,2,3     # four training seeds and a summary (~65 min)
    python bench/video_only.py --layout medium --video-batch 64 --runs labelled,mixed_extra \
        --train-steps 2000 --seeds 0,1,2,3,4,5,6,7,8,9 --more-pairs 60   # the README's row (~4 h)
    python bench/video_only.py --video-batch 32 --import-video 128 \
        --runs labelled,mixed_extra,imported128_extra   # the video-only part as raw mp4 clips

The demo's setting (U-maze unless ``--layout``, 200 OU-exploration episodes x 100 frames, ``model=small``, 1000
training steps, 20 evaluation episodes on seed 1000). From one collection it writes two datasets
that hold the same 10 % of episodes with their actions:
- ``labelled``: those episodes only;
- ``mixed``: every episode, the other 90 % with their actions removed (video only), trained with
  ``trainer.video_only=use`` (inverse dynamics infers the missing actions and macro codes).
Both models are scored on 40 held-out labelled episodes (other seeds): level-1 and level-2
open-loop prediction error relative to copy-last (window of 1 + 3 x 4 frames), in each model's own
latent units and, for level 2, read through a linear probe of (x, y) fit on the held-out latents
(state units: comparable across models whose latent spaces differ; in brackets the floor, the
same ratio for the encoded final frames); linear-probe R² of (x, y); and on planning success of the hierarchical controller on the same 20 start/goal pairs.
Issue goal: the mixed model beats the 10 % alone on level-2 prediction error and on planning.
``--labelled-share`` splits each batch between labelled and video-only windows (fewer labelled
ones per step than the labelled row); ``--video-batch N`` adds N video-only windows to the
labelled row's batch instead (``trainer.video_batch``). With ``--seeds`` a summary compares each
row with the labelled one over the seeds (exact sign-flip test on the mean difference; planning
paired episode by episode over the 20 pairs and ``--more-pairs N`` more, sign test) and draws
``video_only_<row>_seeds.png`` (``bench/figures/video_only_seeds.png`` is the README row's).
``--full`` adds the model trained on every episode with its actions (the demo's model, plus the
detached state probe, ``model.loss.state_probe=1.0``, so that checkpoint also serves
``bench/guardrails.py`` and ``bench/gd_vs_cem.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from _cli import ci, evaluate, run_cli

from hmpc.checkpoint import load_checkpoint
from hmpc.data import LeRobotDataset
from hmpc.data.lerobot import Episode
from hmpc.data.video import encode_video
from hmpc.data.windows import WindowSampler, build_frame_cache
from hmpc.data.writer import write_episodes
from hmpc.diagnostics import representation_report
from hmpc.plots import plot_paired_seeds
from hmpc.report import paired_runs, sign_flip_test, sign_test


def labelled_ids(n: int, fraction: float, seed: int) -> set[int]:
    """The episodes that keep their actions: a seeded random ``fraction`` of ``n``."""
    return set(np.random.default_rng(seed).permutation(n)[: max(1, round(n * fraction))].tolist())


def split_labels(source: Path, labelled: Path, mixed: Path, fraction: float, seed: int) -> int:
    """Write ``labelled`` (a random ``fraction`` of the episodes, with actions) and ``mixed`` (all
    episodes, the others without actions) from the dataset at ``source``; returns #labelled."""
    ds = LeRobotDataset(source)
    n = ds.num_episodes
    keep = labelled_ids(n, fraction, seed)
    ep_labelled, ep_mixed = [], []
    for i in range(n):
        ep = ds.load_episode(i)
        if i in keep:
            ep_labelled.append(ep)
            ep_mixed.append(ep)
        else:
            ep_mixed.append(Episode(ep.pixels, ep.state, None, ep.task))
    for root, eps in ((labelled, ep_labelled), (mixed, ep_mixed)):
        for start in range(0, len(eps), 50):  # one data/video file per 50 episodes, like collect
            write_episodes(root, eps[start : start + 50], fps=ds.fps)
    return len(keep)


def import_raw_video(source: Path, labelled: Path, imported: Path, raw: Path, fraction: float, seed: int) -> None:
    """``imported``: a copy of ``labelled`` plus the other episodes as raw video through
    ``hmpc-dataset add-video``: rendered at ``source``'s size S (128 or 64 px), letterboxed to
    5S/4 x S, each frame shown for 3 ticks of a 30 fps mp4; the importer crops the centred square
    and area-resizes it to 64 px, with no state and no actions. At 128 px the frames are not the
    64 px render's (mean absolute difference ~3 levels, up to 190 at edges: another camera); at
    64 px they are, up to a second lossy encode."""
    ds = LeRobotDataset(source)
    keep = labelled_ids(ds.num_episodes, fraction, seed)
    raw.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in (i for i in range(ds.num_episodes) if i not in keep):
        pixels = ds.load_episode(i).pixels  # (T, S, S, 3)
        bar = pixels.shape[1] // 8
        wide = np.pad(pixels, ((0, 0), (0, 0), (bar, bar), (0, 0)))  # (T, S, 5S/4, 3): black bars
        encode_video(raw / f"episode_{i:03d}.mp4", np.repeat(wide, 3, axis=0), fps=30)
        clips.append(raw / f"episode_{i:03d}.mp4")
    shutil.copytree(labelled, imported, ignore=shutil.ignore_patterns(".cache"))
    run_cli("dataset", ["add-video", str(imported), *map(str, clips), "--task", "raw video"])


@torch.no_grad()
def score(checkpoint: Path, data: Path, window: int = 13) -> dict[str, float]:
    """Prediction-error ratios and probe R² per level on non-overlapping windows of ``data``."""
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    sampler = WindowSampler(build_frame_cache(LeRobotDataset(data), progress=False), window)
    starts = sampler.starts[::window]
    batches = [sampler.gather(starts[i : i + 64]) for i in range(0, len(starts), 64)]
    report = representation_report(model, batches)
    return {f"l{lv}_{key}": report[f"level_{lv}"][key]
            for lv in (1, 2) for key in ("pred_err_ratio", "probe_r2", "probe_pred_ratio", "probe_floor_ratio")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=200, help="collected episodes (100 frames)")
    parser.add_argument("--fraction", type=float, default=0.1, help="action-labelled share")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--full", action="store_true", help="also train on 100 %% labelled data")
    parser.add_argument("--labelled-share", type=float, default=None,
                        help="adds a mixed row with this fraction of each batch labelled")
    parser.add_argument("--video-batch", type=int, default=None,
                        help="adds a mixed row whose batches hold the labelled row's 32 labelled "
                             "windows plus this many video-only ones")
    parser.add_argument("--runs", default=None,
                        help="comma-separated subset of labelled,mixed,mixed_share,mixed_extra,"
                             "imported<S>_extra,full to train and score")
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="training seeds: every row trained and scored once per seed (trainer.seed), "
                             "then per-seed rows and a summary against the labelled row")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an hmpc-train override for every row, e.g. trainer.seed=1 (repeatable)")
    parser.add_argument("--import-video", type=int, default=None, metavar="S",
                        help="adds the row imported<S>_extra: mixed_extra with the video-only episodes "
                             "imported from S px (128: another render; 64: the same), 30 fps mp4 "
                             "clips without state (needs --video-batch)")
    parser.add_argument("--layout", default="umaze", help="PointMaze layout (e.g. medium: harder)")
    parser.add_argument("--more-pairs", type=int, default=0, metavar="N",
                        help="each model also plans N more start/goal pairs (hmpc-eval seed=2000); the "
                             "multi-seed summary pairs every episode of both rows (sign test)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="hmpc-video-only-"))
    maze = ["env=point_maze", f"env.layout={args.layout}"]
    collect = [*maze, "policy=correlated", "steps=100", f"workers={args.workers}"]
    run_cli("collect", [*collect, f"episodes={args.episodes}", "seed=0", f"output_dir={out / 'full'}"])  # fmt: skip
    run_cli("collect", [*collect, "episodes=40", "seed=777", f"output_dir={out / 'held_out'}"])
    if not (out / "mixed").exists():
        n_lab = split_labels(out / "full", out / "labelled", out / "mixed", args.fraction, seed=0)
        print(f"{n_lab} of {args.episodes} episodes keep their actions", flush=True)
    runs = {"labelled": ("labelled", []), "mixed": ("mixed", ["trainer.video_only=use"])}
    if args.labelled_share is not None:
        runs["mixed_share"] = ("mixed", ["trainer.video_only=use",
                                         f"trainer.labelled_share={args.labelled_share}"])
    if args.video_batch is not None:
        runs["mixed_extra"] = ("mixed", ["trainer.video_only=use",
                                         f"trainer.video_batch={args.video_batch}"])
    size = args.import_video
    if size is not None:
        if args.video_batch is None or size not in (64, 128):
            parser.error("--import-video S adds a row like mixed_extra: give --video-batch too, and S 64 or 128")
        source = out / "full" if size == 64 else out / f"full_{size}"  # the same episodes, rendered at S px
        run_cli("collect", [*collect, f"env.image_size={size}", f"episodes={args.episodes}", "seed=0",
                            f"output_dir={source}"])
        if not (out / f"imported{size}").exists():
            import_raw_video(source, out / "labelled", out / f"imported{size}", out / f"raw{size}",
                             args.fraction, seed=0)
        runs[f"imported{size}_extra"] = (f"imported{size}", runs["mixed_extra"][1])
    if args.full:
        runs["full"] = ("full", ["model.loss.state_probe=1.0"])
    if args.runs:
        chosen = args.runs.split(",")
        unknown = sorted(set(chosen) - set(runs))
        if unknown:
            parser.error(f"--runs {args.runs}: {unknown} not among {list(runs)} (mixed_share needs "
                         "--labelled-share, mixed_extra --video-batch, imported<S>_extra --import-video S, full --full)")
        runs = {name: runs[name] for name in chosen}
    if args.seeds and any(x.startswith("trainer.seed=") for x in args.set):
        parser.error("--seeds sets trainer.seed per run: drop --set trainer.seed=...")
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [None]
    rows = {}
    for seed in seeds:
        tag, pin = ("", []) if seed is None else (f"_seed{seed}", [f"trainer.seed={seed}"])
        for name, (data, extra) in runs.items():
            run = out / f"train_{name}{tag}"
            if not (run / "checkpoint").exists():
                run_cli("train", [f"data={out / data}", "model=small", f"trainer.steps={args.train_steps}",
                               *extra, *args.set, *pin, f"output_dir={run}"])  # fmt: skip
            ev = out / f"eval_{name}{tag}"
            agg = (json.loads((ev / "eval_info.json").read_text())["aggregated"] if (ev / "eval_info.json").exists()
                   else evaluate(run / "checkpoint", ["hierarchical"], [
                       *maze, f"episodes={args.eval_episodes}", "seed=1000", "max_steps=100",
                       "videos=0", f"workers={args.workers}"], ev, name))  # fmt: skip
            episodes = episode_records(ev)
            if args.more_pairs:
                more = out / f"eval{args.more_pairs}_{name}{tag}"
                if not (more / "eval_info.json").exists():
                    evaluate(run / "checkpoint", ["hierarchical"], [
                        *maze, f"episodes={args.more_pairs}", "seed=2000", "max_steps=100", "videos=0",
                        f"workers={args.workers}"], more, name)  # fmt: skip
                episodes += episode_records(more)
            rows[name + tag] = {**score(run / "checkpoint", out / "held_out"), **agg["hierarchical"],
                                "episodes": episodes}
    (out / "video_only.json").write_text(json.dumps(rows, indent=1))
    print(f"\n# Video-only study: PointMaze {args.layout}, {args.episodes} episodes, {args.fraction:.0%} labelled, "
          f"{args.train_steps} steps{' '.join(['', *args.set])}; held-out: 40 labelled episodes; outputs in {out}\n")  # fmt: skip
    print("| training data | l2 err / copy-last | l1 err / copy-last | l2 err in (x, y) / copy-last (floor) | "
          "probe R² l1 | hierarchical success % | 95 % CI |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|")
    names = {"labelled": f"{args.fraction:.0%} labelled alone",
             "mixed": f"{args.fraction:.0%} labelled + {1 - args.fraction:.0%} video-only",
             "mixed_share": f"{args.fraction:.0%} labelled + {1 - args.fraction:.0%} video-only, "
                            f"{args.labelled_share or 0:.0%} of each batch labelled",
             "mixed_extra": f"{args.fraction:.0%} labelled + {1 - args.fraction:.0%} video-only, "
                            f"+{args.video_batch} video-only windows per batch",
             f"imported{size}_extra": f"same, the video-only {1 - args.fraction:.0%} imported from raw "
                                      f"{size} px 30 fps clips (no state)",
             "full": "100 % labelled"}  # fmt: skip
    for seed in seeds:
        for name in runs:
            r = rows[name + ("" if seed is None else f"_seed{seed}")]
            label = names[name] + ("" if seed is None else f", seed {seed}")
            print(f"| {label} | {r['l2_pred_err_ratio']:.3f} | {r['l1_pred_err_ratio']:.3f} | "
                  f"{r['l2_probe_pred_ratio']:.3f} ({r['l2_probe_floor_ratio']:.3f}) | "
                  f"{r['l1_probe_r2']:.3f} | {r['pc_success']:.0f} | {ci(r)} |")
    if len(seeds) > 1 and "labelled" in runs:
        summarise(rows, [n for n in runs if n != "labelled"], seeds, out)


def episode_records(ev: Path) -> list[dict]:
    """The hierarchical controller's episodes in the hmpc-eval output ``ev``, with the fields
    :func:`hmpc.report.paired_runs` matches and counts them by."""
    keep = ("controller", "seed", "success", "start_distance", "error")
    records = json.loads((ev / "eval_info.json").read_text())["per_episode"]
    return [{k: r.get(k) for k in keep} for r in records if r["controller"] == "hierarchical"]


def summarise(rows: dict[str, dict], names: list[str], seeds: list[int], out: Path) -> None:
    """Per row against the labelled one over the seeds: on how many seeds each level-2 error is
    lower, the means with an exact paired permutation test over the seeds, and the episodes solved,
    paired episode by episode (sign test). Writes ``<out>/video_only_<name>_seeds.png``."""
    print(f"\nAgainst the labelled row over {len(seeds)} seeds (lower on k of n; means):")
    for name in names:
        lab = [rows[f"labelled_seed{s}"] for s in seeds]
        mix = [rows[f"{name}_seed{s}"] for s in seeds]
        parts = []
        for key, what in (("l2_pred_err_ratio", "level-2 error, latent units"),
                          ("l2_probe_pred_ratio", "level-2 error, (x, y) units")):
            a, b = [m[key] for m in mix], [lb[key] for lb in lab]
            wins = sum(x < y for x, y in zip(a, b, strict=True))
            parts.append(f"{what}: lower on {wins} of {len(seeds)} ({np.mean(a):.3f} vs {np.mean(b):.3f}, "
                         f"sign-flip p = {sign_flip_test(a, b):.2g})")
        comps = []  # per seed: the mixed row's episodes against the labelled row's, matched by seed
        for seed, m, lb in zip(seeds, mix, lab, strict=True):
            found = paired_runs(lb["episodes"], m["episodes"], "labelled")
            if not found:
                raise ValueError(f"seed {seed}: rows labelled and {name} planned no common start/goal pair")
            comps += found
        lost, gained = sum(c["lost"] for c in comps), sum(c["gained"] for c in comps)
        solved = [[c[k] for c in comps] for k in ("successes", "reference_successes")]
        parts.append(f"planning: {sum(solved[0])} vs {sum(solved[1])} of {sum(c['pairs'] for c in comps)} "
                     f"paired episodes (higher on {sum(a > b for a, b in zip(*solved, strict=True))} seeds; "
                     f"{lost} lost, {gained} gained, sign test p = {sign_test(lost, gained):.2g})")
        print(f"- {name}: " + "; ".join(parts))
        panels = {"level-2 error / copy-last,\nlatent units": "l2_pred_err_ratio",
                  "level-2 error / copy-last,\n(x, y) units": "l2_probe_pred_ratio"}
        solved_title = f"pairs solved of {comps[0]['pairs']}"
        figure = plot_paired_seeds(
            {**{t: ([lb[k] for lb in lab], [m[k] for m in mix]) for t, k in panels.items()},
             solved_title: (solved[1], solved[0])},
            ("labelled", name), seeds, out / f"video_only_{name}_seeds.png", higher_better=[solved_title])
        print(f"  per seed: {figure}")

if __name__ == "__main__":
    main()
