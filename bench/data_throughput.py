"""Data-path throughput, measured in one run (ratios compare within this run only).

    python bench/data_throughput.py [--episodes 64 --steps 100 --flush-every 16 --workers 2 ...]

Prints one markdown table and a headline line:
- collection frames/s end to end (episodes -> published LeRobot dataset: collection, H.264
  encoding and parquet writing on the workers, publishing on the driver) in-process
  (workers=0), with 1 Ray worker and with W Ray workers; ratio vs 1 Ray worker. Ray is started
  before timing; actor start-up (imports, env build) is inside each timing, as it is for a real
  hmpc-collect run. With ``--repeats R`` the Ray runs alternate 1, W, 1, W, ... and each row
  keeps its best run (least disturbed by other load); every run's time is printed.
- the same episodes without writing, steady state (after W episodes arrived), which is
  the scaling of the actors themselves.
- loader windows/s from the decoded-frame cache (WindowSampler.sample) vs decoding the episode's
  video for every window (LeRobotDataset.load_episode); frames/s from the cache.
- frame-cache disk footprint per 100k frames at the benchmark's image size (and the video
  dataset's, for comparison).

W workers scale only on W idle cores (the driver needs little CPU now): check the load average
printed with the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _dir_bytes(root: Path, skip_cache: bool = True) -> int:
    return sum(f.stat().st_size for f in root.rglob("*")
               if f.is_file() and not (skip_cache and ".cache" in f.parts))


def bench_collect(out: Path, episodes: int, steps: int, size: int, workers: int,
                  flush_every: int) -> tuple[float, float, float]:
    """(frames/s, seconds, driver CPU seconds) of one collect() into a fresh folder. The
    driver's CPU time (this process only, not Ray's) does not depend on other load."""
    from hmpc.rollout import EnvSpec, PolicySpec, collect

    root = out / f"collect-w{workers}"
    shutil.rmtree(root, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    collect(EnvSpec("point_maze", {"image_size": size}), PolicySpec(), root, episodes, steps,
            seed=0, workers=workers, flush_every=flush_every, progress=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return episodes * steps / dt, dt, cpu


def bench_collect_scaling(out: Path, episodes: int, steps: int, size: int, workers: int,
                          flush_every: int, repeats: int) -> dict[int, list[tuple[float, float]]]:
    """(seconds, driver CPU seconds) of every collect() run with 1 and with ``workers`` Ray
    workers, alternating."""
    times: dict[int, list[tuple[float, float]]] = {1: [], workers: []}
    for _ in range(repeats):
        for w in times:
            times[w].append(bench_collect(out, episodes, steps, size, w, flush_every)[1:])
    return times


def bench_rollout(episodes: int, steps: int, size: int, workers: int) -> float:
    """Steady-state episode frames/s (no writing): from the W-th finished episode to the last,
    so actor start-up is excluded. Uses the same setup/episode functions as collect()."""
    import functools

    from hmpc.parallel import parallel_map
    from hmpc.rollout import EnvSpec, PolicySpec, _collect_one, _collect_setup, episode_seed

    spec = EnvSpec("point_maze", {"image_size": size})
    items = [(i, episode_seed(0, i)) for i in range(episodes)]
    gen = parallel_map(functools.partial(_collect_setup, spec, PolicySpec()),
                       functools.partial(_collect_one, steps), items, workers)
    for _ in range(max(workers, 1)):  # roughly: every actor has started and finished one
        next(gen)
    t0 = time.perf_counter()
    n = sum(1 for _ in gen)
    return n * steps / (time.perf_counter() - t0)


def bench_loader(root: Path, window: int, batch: int, cache_batches: int,
                 decode_samples: int) -> dict[str, float]:
    """Windows/s from the memmap cache vs decoding per window; cache size per frame."""
    from hmpc.data import LeRobotDataset, WindowSampler, build_frame_cache

    ds = LeRobotDataset(root)
    t0 = time.perf_counter()
    frames = build_frame_cache(ds, progress=False)
    build_s = time.perf_counter() - t0
    sampler = WindowSampler(frames, window)
    rng = np.random.default_rng(0)
    sampler.sample(batch, rng)  # warm the page cache
    t0 = time.perf_counter()
    for _ in range(cache_batches):
        sampler.sample(batch, rng)
    cache_sps = cache_batches * batch / (time.perf_counter() - t0)
    lengths = ds.episode_lengths
    t0 = time.perf_counter()
    for _ in range(decode_samples):
        e = int(rng.integers(len(lengths)))
        s = int(rng.integers(lengths[e] - window + 1))
        ep = ds.load_episode(e)
        _ = ep.pixels[s:s + window], ep.state[s:s + window], ep.action[s:s + window - 1]
    decode_sps = decode_samples / (time.perf_counter() - t0)
    cache_bytes = frames.path.stat().st_size + frames.path.with_suffix(".npz").stat().st_size
    return {"cache_sps": cache_sps, "decode_sps": decode_sps, "build_fps": ds.num_frames / build_s,
            "cache_b_per_frame": cache_bytes / ds.num_frames,
            "video_b_per_frame": _dir_bytes(root) / ds.num_frames}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--flush-every", type=int, default=16,
                   help="episodes per published batch (64/16 = 4 batches: fewer than 8 workers)")
    p.add_argument("--workers", type=int, default=2, help="the W of the W-worker Ray row")
    p.add_argument("--repeats", type=int, default=2,
                   help="Ray collect runs per worker count (alternating); the best is kept")
    p.add_argument("--window", type=int, default=4, help="frames per training window")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--cache-batches", type=int, default=200)
    p.add_argument("--decode-samples", type=int, default=100)
    p.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = p.parse_args()
    from hmpc.parallel import init_ray

    out = args.out or Path(tempfile.mkdtemp(prefix="hmpc-bench-"))
    load_before = os.getloadavg()
    init_ray(num_cpus=max(args.workers, 1))  # started before timing: not part of any row
    rows = []
    fps0, *_ = bench_collect(out, args.episodes, args.steps, args.image_size, 0, args.flush_every)
    n = args.episodes * args.steps
    times = bench_collect_scaling(out, args.episodes, args.steps, args.image_size, args.workers,
                                  args.flush_every, max(args.repeats, 1))
    fps1, fpsw = (n / min(t for t, _ in times[w]) for w in (1, args.workers))
    rows += [("collect, in-process (workers=0)", fps0, "frames/s", fps0 / fps1),
             ("collect, Ray 1 worker", fps1, "frames/s", 1.0),
             (f"collect, Ray {args.workers} workers", fpsw, "frames/s", fpsw / fps1)]
    st = {w: bench_rollout(args.episodes, args.steps, args.image_size, w)
          for w in (0, 1, args.workers)}
    rows += [("episodes only, steady state, in-process", st[0], "frames/s", st[0] / st[1]),
             ("episodes only, steady state, Ray 1 worker", st[1], "frames/s", 1.0),
             (f"episodes only, steady state, Ray {args.workers} workers", st[args.workers],
              "frames/s", st[args.workers] / st[1])]
    lo = bench_loader(out / "collect-w0", args.window, args.batch, args.cache_batches,
                      args.decode_samples)
    rows += [(f"loader, decode video per window (T={args.window})", lo["decode_sps"], "windows/s", 1.0),
             (f"loader, frame cache WindowSampler (T={args.window}, B={args.batch})",
              lo["cache_sps"], "windows/s", lo["cache_sps"] / lo["decode_sps"]),
             ("loader, frame cache", lo["cache_sps"] * args.window, "frames/s", float("nan")),
             ("frame cache build (decode once)", lo["build_fps"], "frames/s", float("nan")),
             (f"frame cache on disk per 100k frames ({args.image_size}x{args.image_size})",
              lo["cache_b_per_frame"] * 1e5 / 2**30, "GiB", float("nan")),
             ("video dataset on disk per 100k frames", lo["video_b_per_frame"] * 1e5 / 2**30,
              "GiB", float("nan"))]
    print(f"\n{args.episodes} episodes x {args.steps} frames = {n} frames at "
          f"{args.image_size}x{args.image_size}, point_maze, flush_every={args.flush_every}; "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before / "
          f"{os.getloadavg()[0]:.2f} after; scratch {out}\n")
    print("| measure | value | unit | ratio |\n|---|---:|---|---:|")
    for name, value, unit, ratio in rows:
        r = "" if np.isnan(ratio) else f"{ratio:.2f}x"
        print(f"| {name} | {value:,.{3 if unit == 'GiB' else 0}f} | {unit} | {r} |")
    print("\nratio: collect rows vs Ray 1 worker; cache loader vs decoding per window")
    runs = "; ".join(f"{w} worker(s): " + ", ".join(f"{t:.1f} / {c:.1f}" for t, c in ts)
                     for w, ts in times.items())
    print(f"collect runs, wall / driver CPU seconds ({runs})")
    print(f"\nend-to-end collection, {args.workers} Ray workers vs 1: {fpsw / fps1:.2f}x "
          f"({fpsw:,.0f} vs {fps1:,.0f} frames/s; {fpsw / fps1 / args.workers:.2f} x W)")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
