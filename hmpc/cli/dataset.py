"""hmpc-dataset: inspect, validate and view LeRobot datasets (v3.0 / v2.1) on disk.

    hmpc-dataset info DIR
    hmpc-dataset validate DIR [--no-decode]
    hmpc-dataset view DIR --episode 3 --out ep3.png   (contact sheet; .mp4 for a video)
    hmpc-dataset add-video DIR clip.mp4 [...] [--episode-seconds 20] [--crop X Y W H]

Plain argparse (no Hydra): these are file tools, not experiments.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hmpc.data.video import DatasetError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 validation problems, 2 bad input)."""
    parser = argparse.ArgumentParser(prog="hmpc-dataset", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="episodes, frames, fps, features, action range, size")
    p.add_argument("root", type=Path)
    p = sub.add_parser("validate", help="report every problem with file, episode and frame")
    p.add_argument("root", type=Path)
    p.add_argument("--no-decode", action="store_true", help="skip decoding videos (faster)")
    p = sub.add_parser("view", help="contact sheet PNG (or .mp4) of one episode")
    p.add_argument("root", type=Path)
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="FILE.png (contact sheet) or FILE.mp4")
    p.add_argument("--camera", default=None, help="camera name or video key (default: first)")
    p.add_argument("--max-frames", type=int, default=64, help="frames on the contact sheet")
    p.add_argument("--scale", type=int, default=0, help="pixel upscale (0: to >= 128 px)")
    p = sub.add_parser("add-video", help="append video files as video-only episodes (no actions, "
                       "no state) at the dataset's fps and image size")
    p.add_argument("root", type=Path, help="a dataset with action-labelled episodes")
    p.add_argument("videos", type=Path, nargs="+", help="video files PyAV reads (mp4, mov, mkv, ...)")
    p.add_argument("--episode-seconds", type=float, default=None,
                   help="cut each video into episodes this long (default: one episode per file)")
    p.add_argument("--min-frames", type=int, default=2, help="drop pieces (a clip's tail) shorter than this")
    p.add_argument("--crop", type=int, nargs=4, metavar=("X", "Y", "W", "H"), default=None,
                   help="square box of the frames as a player shows them (default: the centred square)")
    p.add_argument("--start", type=float, default=0.0, help="seconds skipped at each file's start")
    p.add_argument("--end", type=float, default=None, help="seconds after which each file is cut")
    p.add_argument("--task", default="", help="task string of the new episodes")
    args = parser.parse_args(argv)
    try:
        code = {"info": _info, "validate": _validate, "view": _view,
                "add-video": _add_video}[args.cmd](args)
    except (DatasetError, FileNotFoundError, IndexError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    return code


def _info(args: argparse.Namespace) -> int:
    """Print a summary of the dataset at ``args.root``."""
    from hmpc.data._meta import load_episode_refs, read_info, video_keys
    from hmpc.data._stats import logged_episodes
    from hmpc.data.lerobot import read_json

    root: Path = args.root
    info = read_info(root)
    cams = video_keys(info)
    lengths = np.array([r.length for r in load_episode_refs(root, info, cams[0])]) if cams else []
    fps = int(info["fps"])
    n = int(np.sum(lengths))
    print(f"dataset   {root}")
    print(f"version   {info['codebase_version']}   robot_type {info.get('robot_type') or '-'}")
    print(f"episodes  {len(lengths)}   frames {n}   fps {fps}   duration {n / fps:.1f}s")
    if len(lengths):
        print(f"length    min {lengths.min()}  mean {lengths.mean():.1f}  max {lengths.max()}")
        logged = logged_episodes(root, info)
        if logged is not None:
            acts, states = logged["action"], logged["observation.state"]
            others = len(lengths) - max(states or 0, acts or 0)
            print(f"labels    {'?' if acts is None else acts} episodes with actions   {states} with state"
                  + (f"   {others} video only" if others and acts is not None else ""))
    stats = read_json(root / "meta/stats.json")
    print("features:")
    for key, feat in info["features"].items():
        extra = feat.get("info") or {}
        codec = f"  codec {extra['video.codec']}" if "video.codec" in extra else ""
        print(f"  {key:32s} {feat.get('dtype', '?'):8s} {feat.get('shape')}{codec}")
    for key in ("action", "observation.state"):
        if key in stats and "min" in stats[key]:
            print(f"{key} range: min {_fmt(stats[key]['min'])}  max {_fmt(stats[key]['max'])}")
    if "action" not in info["features"]:
        print("action: none (video-only dataset)")
    data, cache = _disk_size(root)
    print(f"size      {data / 2**20:.2f} MiB on disk ({data / max(n, 1):.0f} B/frame)"
          f"   frame cache {cache / 2**20:.2f} MiB")
    return 0


def _add_video(args: argparse.Namespace) -> int:
    """Append ``args.videos`` to ``args.root`` as video-only episodes; one line per file."""
    from tqdm import tqdm

    from hmpc.data.import_video import Crop, add_videos

    crop = Crop(*args.crop) if args.crop else None
    with tqdm(total=len(args.videos), desc="importing", unit="file", disable=len(args.videos) < 2) as bar:
        def done(name: str, eps: int, frames: int) -> None:
            bar.write(f"{name}: {eps} episodes, {frames} frames" + ("" if eps else (
                f" (warning: nothing imported; the clip is shorter than --min-frames {args.min_frames} "
                "at the dataset's fps, or --start/--end leave too little)")))
            bar.update()

        report = add_videos(args.root, args.videos, args.task, crop, args.episode_seconds, args.min_frames,
                            args.start, args.end, on_file=done)
    total = [sum(r[1] for r in report), sum(r[2] for r in report)]
    print(f"added {total[0]} video-only episodes ({total[1]} frames) to {args.root}; train on them with "
          f"`hmpc-train data={args.root} trainer.video_only=use` (model.state_dim=0: they log no state)")
    return 0


def _fmt(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):.3g}" for v in np.ravel(values)) + "]"


def _disk_size(root: Path) -> tuple[int, int]:
    """(bytes of the dataset without caches/temp folders, bytes of root/.cache)."""
    data = cache = 0
    for f in root.rglob("*"):
        if not f.is_file():
            continue
        top = f.relative_to(root).parts[0]
        if top == ".cache":
            cache += f.stat().st_size
        elif not top.startswith(".tmp-"):
            data += f.stat().st_size
    return data, cache


def _validate(args: argparse.Namespace) -> int:
    """Print every problem; 1 if any, else 0 with a one-line summary."""
    from hmpc.data._meta import load_episode_refs, read_info, video_keys
    from hmpc.data.validate import validate_dataset

    problems = validate_dataset(args.root, decode_video=not args.no_decode)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {args.root}", file=sys.stderr)
        return 1
    info = read_info(args.root)
    refs = load_episode_refs(args.root, info, video_keys(info)[0])
    print(f"ok: {len(refs)} episodes, {sum(r.length for r in refs)} frames")
    return 0


def _view(args: argparse.Namespace) -> int:
    """Write one episode as a contact sheet PNG or an mp4 (by the extension of ``args.out``)."""
    from hmpc.data import LeRobotDataset
    from hmpc.data.video import encode_video

    ds = LeRobotDataset(args.root, camera=args.camera)
    ep = ds.load_episode(args.episode)
    h = ep.pixels.shape[1]
    scale = args.scale or max(1, math.ceil(128 / h))
    frames = np.repeat(np.repeat(ep.pixels, scale, axis=1), scale, axis=2)  # (T, sH, sW, 3)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".mp4":
        encode_video(out, frames, ds.fps, crf=18)
    elif suffix in (".png", ".jpg", ".jpeg"):
        _write_sheet(out, frames, args.max_frames, ds.fps)
    else:
        raise ValueError(f"--out {out}: use a .png (contact sheet) or .mp4 (video) file name")
    print(f"wrote {out}: episode {args.episode} of {args.root}, {len(ep)} frames "
          f"({'actions' if ep.action is not None else 'no actions'}, task {ep.task!r})")
    return 0


def _write_sheet(out: Path, frames: np.ndarray, max_frames: int, fps: int) -> None:
    """Grid of up to ``max_frames`` evenly spaced frames (T, H, W, 3), each labelled with t."""
    import cv2

    t, h, w, _ = frames.shape
    keep = np.unique(np.linspace(0, t - 1, min(t, max(max_frames, 1))).round().astype(int))
    cols = math.ceil(math.sqrt(len(keep)))
    rows = math.ceil(len(keep) / cols)
    sheet = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for k, i in enumerate(keep):
        tile = np.ascontiguousarray(frames[i])
        cv2.putText(tile, f"{i}", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
        r, c = divmod(k, cols)
        sheet[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = tile
    if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"cv2 could not write {out}; check the folder is writable")


if __name__ == "__main__":
    sys.exit(main())
