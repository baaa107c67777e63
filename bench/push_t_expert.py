"""PushT: the scripted expert's success rate, and rendered frames/s next to raw PyBullet.

    python bench/push_t_expert.py [--episodes 50 --image-size 64 --fps-steps 2000]

Prints one markdown table:
- expert success over ``--episodes`` seeded episodes (seeds 0..N-1, ``reset(seed=i)``,
  ``PushTExpert.reset(seed=i)``): success at any step (what the evaluation harness scores) and
  10 steps after the first success (does the T stay put? the expert holds still once done),
  steps to success;
- env frames/s: ``env.step`` with uniform random actions, one rendered frame per step;
- raw PyBullet frames/s: the same client, bodies, motor commands, physics steps and
  ``getCameraImage`` call, without the env's bookkeeping (state read-back, planar projection,
  contact-cache reset, observation/info dicts). The env can be *faster* than this: dropping
  the contact caches every tick (needed for exact replay) leaves the solver fewer persistent
  contact points than a plain loop accumulates;
- the raw loop plus the env's per-tick state write-back (the same physics as the env), whose
  ratio is the env's pure Python / gymnasium overhead.
Timings are single-process, single-thread, wall clock; best of 3 interleaved rounds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pybullet

from robots.base import TIME_STEP
from robots.push_t import PUSHER_MAX_FORCE, PushTEnv
from skills.push_t_expert import PushTExpert


def bench_expert(episodes: int, image_size: int) -> dict[str, float]:
    env = PushTEnv(image_size=image_size)
    expert = PushTExpert(env)
    limit = env.max_episode_steps
    any_ok, last_ok, steps_to = [], [], []
    t0 = time.perf_counter()
    total_steps = 0
    try:
        for seed in range(episodes):
            obs, info = env.reset(seed=seed)
            expert.reset(seed=seed)
            first = None
            for k in range(env.max_episode_steps):
                obs, _, _, truncated, info = env.step(expert.act(obs))
                total_steps += 1
                if info["is_success"] and first is None:
                    first = k + 1
                if truncated or (first is not None and k + 1 >= first + 10):
                    break  # 10 steps after success: enough to see that it stays
            any_ok.append(first is not None)
            last_ok.append(bool(info["is_success"]))
            if first is not None:
                steps_to.append(first)
    finally:
        env.close()
    dt = time.perf_counter() - t0
    return {
        "success_any": 100 * float(np.mean(any_ok)),
        "success_last": 100 * float(np.mean(last_ok)),
        "steps_mean": float(np.mean(steps_to)) if steps_to else float("nan"),
        "steps_max": float(np.max(steps_to)) if steps_to else float("nan"),
        "steps_per_s": total_steps / dt,
        "limit": float(limit),
    }


def _raw_loop(env: PushTEnv, actions: np.ndarray, write_back: bool) -> float:
    """Frames/s of plain PyBullet calls on ``env``'s client and bodies: motor command, physics
    steps, camera image; with ``write_back`` also the env's per-tick state read/write."""
    c, body, s = env._client, env._pusher_body, env.image_size
    view, proj = env._camera_matrices()
    scale = env.max_speed / (env.physics_substeps * TIME_STEP)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for a in actions:
        c.setJointMotorControlArray(body, [0, 1], pybullet.VELOCITY_CONTROL,
                                    targetVelocities=(a * scale).tolist(),
                                    forces=[PUSHER_MAX_FORCE] * 2)  # fmt: skip
        for _ in range(env.physics_substeps):
            c.stepSimulation()
        if write_back:
            env._read()
            env._write()
        _, _, rgba, _, _ = c.getCameraImage(
            s, s, view, proj, renderer=pybullet.ER_TINY_RENDERER, shadow=0,
            lightAmbientCoeff=1.0, lightDiffuseCoeff=0.0, lightSpecularCoeff=0.0)  # fmt: skip
        np.asarray(rgba, dtype=np.uint8).reshape(s, s, 4)[..., :3].copy()
    return len(actions) / (time.perf_counter() - t0)


def bench_fps(steps: int, image_size: int) -> tuple[float, float, float]:
    """(env, raw PyBullet, raw + state write-back) frames/s for the same actions; the three
    are interleaved over 3 rounds and the best of each is kept (the machine may be shared)."""
    env = PushTEnv(image_size=image_size)
    best = [0.0, 0.0, 0.0]
    try:
        actions = np.random.default_rng(0).uniform(-1, 1, (steps, 2)).astype(np.float32)
        env.reset(seed=0)
        env.step(actions[0])  # warm-up
        for _ in range(3):
            env.reset(seed=0)
            t0 = time.perf_counter()
            for a in actions:
                env.step(a)
            best[0] = max(best[0], steps / (time.perf_counter() - t0))
            best[1] = max(best[1], _raw_loop(env, actions, write_back=False))
            best[2] = max(best[2], _raw_loop(env, actions, write_back=True))
    finally:
        env.close()
    return best[0], best[1], best[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--fps-steps", type=int, default=2000)
    args = parser.parse_args()
    if args.episodes < 1 or args.image_size < 1 or args.fps_steps < 1:
        parser.error("--episodes, --image-size and --fps-steps must be >= 1")

    ex = bench_expert(args.episodes, args.image_size)
    env_fps, raw_fps, raw_wb_fps = bench_fps(args.fps_steps, args.image_size)
    n, s = args.episodes, args.image_size
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| expert success, any step ({n} seeded episodes) | {ex['success_any']:.1f} % |")
    print(f"| expert success 10 steps after first success | {ex['success_last']:.1f} % |")
    print(f"| steps to success, mean / max (limit {ex['limit']:.0f}) | "
          f"{ex['steps_mean']:.1f} / {ex['steps_max']:.0f} |")  # fmt: skip
    print(f"| expert episodes, env steps/s (expert + env at {s}x{s}) | {ex['steps_per_s']:.0f} |")
    print(f"| env frames/s at {s}x{s} (step + render) | {env_fps:.0f} |")
    print(f"| raw PyBullet frames/s at {s}x{s} (same stepping + render) | {raw_fps:.0f} |")
    print(f"| ratio env / raw | {env_fps / raw_fps:.2f} |")
    print(f"| raw PyBullet + the env's per-tick state write-back, frames/s | {raw_wb_fps:.0f} |")
    print(f"| ratio env / (raw + write-back): Python/gymnasium overhead | "
          f"{env_fps / raw_wb_fps:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
