"""Env speed: steps/s and rendered frames/s per task env, next to raw PyBullet doing the same
physics stepping and rendering in the same client, measured in one run on one core.

    python bench/env_speed.py                  # every registered task, 64x64
    python bench/env_speed.py --envs point_maze panda_reach --seconds 3

Columns: ``env steps/s`` (env.step: control + physics + render + bookkeeping), ``raw steps/s``
(the same number of stepSimulation calls and one getCameraImage with the env's camera, straight
on the PyBullet client), ``overhead`` = raw / env (goal <= 1.3), ``render fps`` (env.render()
alone; goals: >= 500 for simple scenes, >= 60 for Panda scenes).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pybullet

from robots import ENV_REGISTRY, make_env


def _rate(fn, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def measure(name: str, image_size: int, seconds: float) -> dict[str, float]:
    env = make_env(name, image_size=image_size)
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        actions = rng.uniform(-1, 1, (4096, *env.action_space.shape)).astype(np.float32)
        i = [0]

        def env_step():
            _, _, _, truncated, _ = env.step(actions[i[0] % len(actions)])
            i[0] += 1
            if truncated:
                env.reset(seed=i[0])

        client = env._client
        view, proj = env._camera_matrices()
        ticks = env.action_repeat * env.physics_substeps
        light = dict(lightAmbientCoeff=1.0, lightDiffuseCoeff=0.0, lightSpecularCoeff=0.0)

        def raw_step():
            for _ in range(ticks):
                client.stepSimulation()
            client.getCameraImage(image_size, image_size, view, proj, shadow=0,
                                  renderer=pybullet.ER_TINY_RENDERER, **light)  # fmt: skip

        # Interleaved rounds, best of each: other load on the machine hits both alike.
        steps = raw = fps = 0.0
        for _ in range(3):
            env.reset(seed=0)
            steps = max(steps, _rate(env_step, seconds / 3))
            raw = max(raw, _rate(raw_step, seconds / 3))
            fps = max(fps, _rate(env.render, seconds / 3))
        return {"env": steps, "raw": raw, "overhead": raw / steps, "fps": fps}
    finally:
        env.close()


def main() -> None:
    tasks = [n for n, (env_id, _) in ENV_REGISTRY.items() if env_id is not None]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=tasks, choices=tasks)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    print(f"# env speed, {args.image_size}x{args.image_size}, one process, "
          f"{os.cpu_count()} cores on the machine\n")  # fmt: skip
    print("| env | env steps/s | raw steps/s | overhead (raw/env) | render fps |")
    print("|---|---:|---:|---:|---:|")
    for name in args.envs:
        r = measure(name, args.image_size, args.seconds)
        print(f"| {name} | {r['env']:.0f} | {r['raw']:.0f} | {r['overhead']:.2f}x | {r['fps']:.0f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
