"""Raw video files (a lab camera, a phone, a robot's own logs) as video-only episodes of a dataset.

Each file is decoded with PyAV, turned upright by its display rotation (phone clips), resampled to
the dataset's fps by presentation time (frame ``k`` is the last source frame shown at ``k / fps``
s), cropped to a square (the centre, or a box you give) and resized to the dataset's image size
with OpenCV's area filter. The episodes carry
neither actions nor ``observation.state``; ``hmpc-train trainer.video_only=use`` trains the
encoder and the abstract levels on them next to the action-labelled episodes already there.

    hmpc-dataset add-video DIR clip1.mp4 clip2.mov --episode-seconds 20 --crop 80 0 480 480
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from hmpc.data.lerobot import Episode, LeRobotDataset
from hmpc.data.video import DatasetError
from hmpc.data.writer import write_episodes

__all__ = ["Crop", "add_videos", "read_video", "split_episode"]


@dataclass(frozen=True)
class Crop:
    """A box of the source frames in pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    def check(self, width: int, height: int, path: Path) -> None:
        if self.x < 0 or self.y < 0 or self.w < 1 or self.h < 1 \
                or self.x + self.w > width or self.y + self.h > height:
            raise DatasetError(f"{path}: crop {self.x} {self.y} {self.w} {self.h} (x y w h) does not fit "
                               f"its {width}x{height} frames; pick a box inside them")


def _square(width: int, height: int) -> Crop:
    """The largest centred square of a width x height frame."""
    side = min(width, height)
    return Crop((width - side) // 2, (height - side) // 2, side, side)


def _source_frames(path: Path) -> Iterator[tuple[float, float | None, av.VideoFrame]]:
    """(seconds since the first frame, seconds on screen (None: unknown), the decoded frame) of
    every frame, in order. Frames without a pts (raw elementary streams) start when the frame
    before them leaves the screen (by its duration, else the stream's frame rate)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path} has no video stream; give video files (mp4, mov, mkv, ...)")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or 0)
            first, after = None, 0.0  # the first frame's time; when the last one leaves the screen
            for frame in container.decode(stream):
                duration = getattr(frame, "duration", None)  # PyAV >= 14.4
                shown = float(duration * stream.time_base) if duration else 1 / rate if rate else None
                if frame.pts is not None:
                    t = float(frame.pts * stream.time_base)
                elif shown is not None:
                    t = after
                else:
                    raise DatasetError(f"{path}: its frames carry no timestamps and the stream no frame "
                                       "rate; remux it into mp4 first (ffmpeg -i IN -c copy OUT.mp4)")
                first = t if first is None else first
                after = t + (shown or 0.0)
                yield t - first, shown, frame
    except av.FFmpegError as err:
        raise DatasetError(f"{path}: the decoder failed ({type(err).__name__}: {err}); the file is "
                           "not a video or is corrupt") from err


def _turns(frame: av.VideoFrame) -> int:
    """Counterclockwise quarter turns of the stream's display matrix (phones store portrait clips
    as landscape frames plus a rotation)."""
    return round(getattr(frame, "rotation", 0) / 90) % 4


def _displayed_size(frame: av.VideoFrame) -> tuple[int, int]:
    """(width, height) of ``frame`` as a player shows it, without decoding it to RGB."""
    return (frame.height, frame.width) if _turns(frame) % 2 else (frame.width, frame.height)


def _displayed(frame: av.VideoFrame) -> np.ndarray:
    """RGB uint8 (H, W, 3) as a player shows it (turned by the display matrix)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = _turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def read_video(path: str | Path, fps: int, size: int, crop: Crop | None = None,
               start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """The frames of ``path`` from ``start_s`` to ``end_s`` (seconds; None: the end) at ``fps``,
    each the crop (default: the centred square; in displayed pixels) resized to ``size`` x ``size``.

    Tick k (time ``start_s + k / fps``) shows the last source frame that starts at or before it;
    ticks run while a frame is on screen (a 1 s clip at 30 fps gives 10 frames at fps=10). Only
    the frames shown at some tick are converted to RGB.

    Returns:
        uint8 (T, size, size, 3), RGB.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} does not exist")
    if fps < 1 or size < 1 or start_s < 0 or (end_s is not None and end_s <= start_s):
        raise ValueError(f"read_video({path}): need fps={fps} >= 1, size={size} >= 1 and "
                         f"0 <= start_s={start_s} < end_s={end_s}")
    if crop is not None and crop.w != crop.h:
        raise ValueError(f"crop {crop.x} {crop.y} {crop.w} {crop.h} (x y w h) is not square; the dataset's "
                         f"images are, so give a square box, e.g. {crop.x} {crop.y} {min(crop.w, crop.h)} "
                         f"{min(crop.w, crop.h)}")
    out: list[np.ndarray] = []
    box: Crop | None = None
    size0 = (0, 0)  # (width, height) of the first frame, displayed
    held: av.VideoFrame | None = None  # the source frame on screen at the next tick
    until, last_t = 0.0, 0.0  # when it leaves the screen if no frame follows; the last frame's start
    stop = float("inf") if end_s is None else end_s

    def tick() -> float:
        return start_s + len(out) / fps

    def emit_until(t: float) -> None:
        """Emit ``held`` for every tick before ``t`` (and before ``stop``)."""
        part = None
        while held is not None and tick() < min(t, stop) - 1e-9:
            if part is None:
                if _displayed_size(held) != size0:
                    w, h = _displayed_size(held)
                    raise DatasetError(f"{path}: frames change size from {size0[0]}x{size0[1]} to {w}x{h} "
                                       "mid-stream; split the file there")
                rgb = _displayed(held)[box.y : box.y + box.h, box.x : box.x + box.w]
                part = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
            out.append(part)

    frames = _source_frames(path)
    try:
        for t, shown, frame in frames:
            if box is None:
                size0 = _displayed_size(frame)
                box = crop or _square(*size0)
                box.check(*size0, path)
            emit_until(t)
            if tick() >= stop - 1e-9:
                break
            held, last_t, until = frame, t, t + (shown if shown is not None else 1 / fps)
    finally:
        frames.close()
    emit_until(until)  # the last frame, while it is on screen
    if not out:
        raise DatasetError(f"{path}: no frame between {start_s} s and "
                           f"{'the end' if end_s is None else f'{end_s} s'} (its frames start at 0 .. "
                           f"{last_t:.2f} s); check --start/--end")
    return np.stack(out)


def split_episode(frames: np.ndarray, length: int | None, min_frames: int) -> list[np.ndarray]:
    """``frames`` (T, ...) cut into consecutive pieces of ``length`` frames (None: one piece);
    pieces shorter than ``min_frames`` are dropped (a clip's tail)."""
    if length is not None and length < 1:
        raise ValueError(f"episode length {length} must be >= 1 frame")
    step = length or len(frames)
    return [frames[i : i + step] for i in range(0, len(frames), step) if len(frames[i : i + step]) >= min_frames]


def add_videos(root: str | Path, paths: Sequence[str | Path], task: str = "", crop: Crop | None = None,
               episode_seconds: float | None = None, min_frames: int = 2, start_s: float = 0.0,
               end_s: float | None = None, batch: int = 50,
               on_file: Callable[[str, int, int], None] | None = None) -> list[tuple[str, int, int]]:
    """Append the videos at ``paths`` to the dataset at ``root`` as video-only episodes, at its
    fps, image size and camera (``batch`` episodes per data/video file, like ``hmpc-collect``).

    Every file is opened before anything is written (a wrong path or a non-video file changes
    nothing); a later failure in a file (decoding, a crop that does not fit its frames, nothing
    between ``start_s`` and ``end_s``) leaves the batches written before it.
    ``on_file(path, episodes, frames)`` is called as each file is decoded (progress).

    Returns:
        per file: (path, episodes added, frames added).
    """
    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{root} is not a dataset (no meta/info.json); imported video joins a dataset "
                                "that has action-labelled episodes: collect one with `hmpc-collect "
                                "output_dir=<dir>` (or write it with hmpc.data.write_episodes) first")
    ds = LeRobotDataset(root)
    h, w, _ = ds.image_shape
    if h != w:
        raise DatasetError(f"{root} has {h}x{w} images; add-video makes square ones only (hmpc's "
                           "datasets are square: import into one of those)")
    feat = ds.info["features"][ds.camera_key].get("info") or {}
    camera = ds.camera_key.removeprefix("observation.images.")
    if episode_seconds is not None and episode_seconds * ds.fps < 1:
        raise ValueError(f"--episode-seconds {episode_seconds}: an episode needs at least one frame "
                         f"(>= {1 / ds.fps:g} s at the dataset's {ds.fps} fps)")
    length = None if episode_seconds is None else round(episode_seconds * ds.fps)
    if length is not None and length < min_frames:
        raise ValueError(f"--episode-seconds {episode_seconds} gives {length}-frame episodes at {ds.fps} fps, "
                         f"under --min-frames {min_frames}: every piece would be dropped")
    for path in paths:
        _probe(Path(path))
    report, pending = [], []
    for path in paths:
        frames = read_video(path, ds.fps, h, crop, start_s, end_s)
        pieces = split_episode(frames, length, min_frames)
        report.append((str(path), len(pieces), int(sum(len(p) for p in pieces))))
        if on_file is not None:
            on_file(*report[-1])
        pending += [Episode(p, None, None, task) for p in pieces]
        while len(pending) >= batch:
            _write(root, pending[:batch], ds.fps, camera, feat)
            pending = pending[batch:]
    if pending:
        _write(root, pending, ds.fps, camera, feat)
    return report


def _probe(path: Path) -> None:
    """FileNotFoundError / DatasetError unless ``path`` opens as a file with a video stream."""
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} does not exist")
    try:
        with av.open(str(path)) as container:
            streams = len(container.streams.video)
    except av.FFmpegError as err:
        raise DatasetError(f"{path}: not a video PyAV can open ({type(err).__name__}: {err})") from err
    if not streams:
        raise DatasetError(f"{path} has no video stream; give video files (mp4, mov, mkv, ...)")


def _write(root: Path, episodes: list[Episode], fps: int, camera: str, feat: dict) -> None:
    write_episodes(root, episodes, fps=fps, camera=camera, pix_fmt=feat.get("video.pix_fmt", "yuv420p"))
