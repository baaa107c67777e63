"""Scripted-expert success and rendering speed of the Panda tasks, in one process (one core).

    python bench/panda_experts.py [--episodes 50 --image-size 64 --noise 0.0 --seed 0]

Prints a markdown table: per task, the expert's success rate over ``--episodes`` seeded
episodes (seeds ``seed .. seed + episodes - 1``; success = ``info["is_success"]`` at any step,
as hmpc's evaluation scores it; the episode stops there), mean steps to success, env steps/s
during those rollouts (physics + IK + one rendered frame per step) and plain ``render()``
frames/s. Then the rendering speed-up of the low-poly Panda (the envs' own) over the stock
``franka_panda/panda.urdf`` visual meshes in the same scene and camera, and raw PyBullet
``stepSimulation`` calls/s in a Panda scene.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pybullet
from pybullet_utils.bullet_client import BulletClient

from robots.panda import PandaPickPlaceEnv, PandaPushEnv, PandaReachEnv
from robots.panda_scene import PANDA_DIR, make_cube, make_table
from skills.panda_experts import PandaPickPlaceExpert, PandaPushExpert, PandaReachExpert

TASKS = {
    "reach": (PandaReachEnv, PandaReachExpert),
    "push": (PandaPushEnv, PandaPushExpert),
    "pick_place": (PandaPickPlaceEnv, PandaPickPlaceExpert),
}


def run_expert(task: str, episodes: int, size: int, noise: float, seed: int) -> dict[str, float]:
    """Success rate, mean steps to success and env steps/s of the task's expert."""
    env_cls, expert_cls = TASKS[task]
    env = env_cls(image_size=size)
    expert = expert_cls(env, noise=noise)
    wins, steps_to_success, steps = 0, [], 0
    t0 = time.perf_counter()
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        expert.reset(seed + i)
        for t in range(env.max_episode_steps):
            obs, _, _, _, info = env.step(expert.act(obs))
            steps += 1
            if info["is_success"]:
                wins += 1
                steps_to_success.append(t + 1)
                break
    elapsed = time.perf_counter() - t0
    fps = render_fps(env)
    env.close()
    return {
        "success": 100.0 * wins / episodes,
        "steps": float(np.mean(steps_to_success)) if steps_to_success else float("nan"),
        "env_sps": steps / elapsed,
        "render_fps": fps,
    }


def render_fps(env, seconds: float = 1.0) -> float:
    """Frames/s of ``env.render()`` on its current scene."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.render()
        n += 1
    return n / (time.perf_counter() - t0)


def stock_vs_lowpoly(size: int, seconds: float = 1.0) -> tuple[float, float, float]:
    """(stock-mesh frames/s, low-poly frames/s, raw stepSimulation calls/s): the same
    pick-place scene, arm pose and camera, rendered as the envs do."""
    env = PandaPickPlaceEnv(image_size=size)
    env.reset(seed=0)
    lowpoly = render_fps(env, seconds)
    joints = [s[0] for s in env._client.getJointStates(env.robot.body, env.robot.joints)]
    c = BulletClient(connection_mode=pybullet.DIRECT)
    robot = c.loadURDF(os.path.join(PANDA_DIR, "panda.urdf"), [0, 0, 0], useFixedBase=True)
    for j, q in zip(env.robot.joints, joints, strict=True):
        c.resetJointState(robot, j, q)
    make_table(c)
    cube = make_cube(c, env.cube_size, mass=0.1, friction=1.0)
    c.resetBasePositionAndOrientation(cube, *env._client.getBasePositionAndOrientation(env._cube))
    view, proj = env._camera_matrices()
    light = dict(lightAmbientCoeff=1.0, lightDiffuseCoeff=0.0, lightSpecularCoeff=0.0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        c.getCameraImage(size, size, view, proj, renderer=pybullet.ER_TINY_RENDERER, shadow=0,
                         **light)  # fmt: skip
        n += 1
    stock = n / (time.perf_counter() - t0)
    c.disconnect()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env._client.stepSimulation()
        n += 1
    raw = n / (time.perf_counter() - t0)
    env.close()
    return stock, lowpoly, raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--noise", type=float, default=0.0, help="expert action noise std")
    ap.add_argument("--seed", type=int, default=0, help="first episode seed")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    args = ap.parse_args()
    if args.episodes < 1 or args.image_size < 1:
        ap.error("--episodes and --image-size must be >= 1")

    print(f"| task | episodes | expert success % | mean steps to success | env steps/s "
          f"| render fps ({args.image_size}x{args.image_size}) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for task in args.tasks:
        r = run_expert(task, args.episodes, args.image_size, args.noise, args.seed)
        print(f"| {task} | {args.episodes} | {r['success']:.1f} | {r['steps']:.1f} "
              f"| {r['env_sps']:.0f} | {r['render_fps']:.0f} |", flush=True)  # fmt: skip
    stock, lowpoly, raw = stock_vs_lowpoly(args.image_size)
    print(f"\nrender fps at {args.image_size}x{args.image_size}, pick-place scene: stock Panda "
          f"meshes {stock:.0f}, low-poly (envs) {lowpoly:.0f} ({lowpoly / stock:.1f}x); "
          f"raw PyBullet stepSimulation {raw:.0f}/s")  # fmt: skip


if __name__ == "__main__":
    main()
