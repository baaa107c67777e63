"""Where a keypoint encoder looks: its keypoints drawn on frames of the env it was trained on.

    python bench/keypoints.py --checkpoint <run>/train/checkpoint --out keypoints.png

Needs a model trained with ``model.keypoints`` > 0 (see :class:`hmpc.models.KeypointEncoder`).
Each panel is one episode's frame after a few seeded random actions, scaled up 4x; each keypoint
is a circle in its own colour (the same colour is the same keypoint in every panel), at the
softmax-weighted mean of its heat map. A keypoint between two objects means its map has mass
on both. With ``model.keypoint_vectors`` > 0 each keypoint's first attended vector is drawn as a
line from it (scaled to the largest vector in the panel), to see whether it turns with what the
keypoint sits on.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from hmpc.checkpoint import load_checkpoint
from robots import make_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--env", default=None, help="env name; default: the training data's robot")
    parser.add_argument("--panels", type=int, default=6)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--out", default="keypoints.png")
    args = parser.parse_args()
    model, meta = load_checkpoint(args.checkpoint)
    if not hasattr(model.encoder, "keypoints"):
        raise SystemExit(f"{args.checkpoint}: this model has no keypoint encoder (model.keypoints=0); "
                         "train one with model.keypoints=16")
    name = args.env or meta["dataset"]["robot_type"]
    env = make_env(name, image_size=model.spec.image_size)
    env.action_space.seed(0)
    side = model.spec.image_size * args.scale
    panels = []
    for ep in range(args.panels):
        obs, _ = env.reset(seed=ep)
        for _ in range(5 * ep):
            obs, *_ = env.step(env.action_space.sample())
        pixels = torch.as_tensor(obs["pixels"]).permute(2, 0, 1)[None]  # (1, 3, H, W)
        with torch.no_grad():
            kp, vecs = (t[0].numpy() for t in model.encoder.parts(pixels))  # (K, 2) in [-1, 1], (K, V, 2)
        img = cv2.resize(obs["pixels"], (side, side), interpolation=cv2.INTER_NEAREST)
        hues = np.uint8([[[180 * k // len(kp), 255, 220] for k in range(len(kp))]])
        colours = cv2.cvtColor(hues, cv2.COLOR_HSV2RGB)[0]
        reach = side / 8 / max(float(np.linalg.norm(vecs[:, :1], axis=-1).max(initial=0.0)), 1e-6)
        for k, ((x, y), c) in enumerate(zip(kp, colours, strict=True)):
            centre = (int((x + 1) / 2 * (side - 1)), int((y + 1) / 2 * (side - 1)))
            colour = tuple(int(v) for v in c)
            cv2.circle(img, centre, args.scale + 1, colour, 2)
            if vecs.shape[1]:
                tip = (int(centre[0] + reach * vecs[k, 0, 0]), int(centre[1] + reach * vecs[k, 0, 1]))
                cv2.line(img, centre, tip, colour, 2)
        panels.append(img)
    cols = min(3, len(panels))
    while len(panels) % cols:
        panels.append(np.full_like(panels[0], 255))
    grid = np.concatenate([np.concatenate(panels[r:r + cols], 1) for r in range(0, len(panels), cols)], 0)
    cv2.imwrite(args.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}: {len(kp)} keypoints on {args.panels} {name} frames")


if __name__ == "__main__":
    main()
