"""PyAV video encode/decode for dataset files.

Frames of several episodes are concatenated in one mp4 (LeRobot v3.0); frame ``i`` of a
file has presentation time ``i / fps``. Decoding selects frames by their pts, never by
counting frames after a seek, because a seek lands on the preceding keyframe.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

__all__ = ["DatasetError", "FrameError", "VideoProbe", "VideoWriter", "decode_frames",
           "encode_video", "mp4_truncation", "probe_frames"]


class DatasetError(ValueError):
    """A dataset on disk (or data about to be written) is malformed; the message says how to fix it."""


# Short GOPs keep per-episode seeks cheap (decode at most GOP-1 frames before the target)
# at a small size cost; LeRobot uses an even shorter one (g=2) for random frame access.
DEFAULT_GOP = 16


def encode_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: int,
    codec: str = "libx264",
    crf: int = 10,
    gop: int = DEFAULT_GOP,
    pix_fmt: str = "yuv420p",
) -> int:
    """Encode RGB frames into ``path`` with frame ``i`` at pts ``i`` (time base ``1/fps``).

    Args:
        frames: iterable of uint8 arrays (H, W, 3), all of the same size; a (N, H, W, 3)
            array works too.
    Returns:
        the number of frames written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, fps, codec=codec, crf=crf, gop=gop, pix_fmt=pix_fmt) as writer:
        for frame_rgb in frames:
            writer.write(frame_rgb[None])
    return writer.count


class VideoWriter:
    """Streaming encoder: ``write`` frames in several calls, ``close`` once (or use ``with``).

    ``target`` is a path or a seekable binary file object (e.g. ``io.BytesIO``, so a Ray worker
    can encode without touching disk); both give the same bytes, and the same bytes as one
    :func:`encode_video` call over all frames (except about 1 encode in 1000, where libx264
    itself differs: ``bench/encode_determinism.py``). ``name`` labels errors (default: ``target``).
    """

    def __init__(self, target: str | Path | BinaryIO, fps: int, codec: str = "libx264",
                 crf: int = 10, gop: int = DEFAULT_GOP, pix_fmt: str = "yuv420p",
                 name: str | None = None) -> None:
        is_path = isinstance(target, (str, Path))
        self.name = name or (str(target) if is_path else "<in-memory video>")
        self._settings = (fps, codec, crf, gop, pix_fmt)
        self._container = av.open(str(target) if is_path else target, mode="w",
                                  format=None if is_path else "mp4")
        self._stream = None
        self.count = 0

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 RGB frames (N, H, W, 3); frame ``count + k`` gets pts ``count + k``."""
        fps, codec, crf, gop, pix_fmt = self._settings
        for frame_rgb in frames:
            if self._stream is None:
                self._stream = _open_stream(self._container, self.name, frame_rgb.shape, fps,
                                            codec, crf, gop, pix_fmt)
            elif frame_rgb.shape != (self._stream.height, self._stream.width, 3):
                raise DatasetError(f"frame {self.count} of {self.name} has shape {frame_rgb.shape}; "
                                   f"earlier frames are {(self._stream.height, self._stream.width, 3)}")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
            # RGB -> YUV here, on one thread: left to the encoder, swscale picks its thread count
            # per call (0 = auto), and the same frames then came out as different bytes in some
            # test runs (tests/test_data.py, tests/test_end_to_end.py compare them).
            frame = frame.reformat(format=pix_fmt, threads=1)
            frame.pts = self.count
            frame.time_base = Fraction(1, fps)
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.count += 1

    def close(self) -> None:
        """Flush delayed (B-)frames and finish the file; DatasetError if no frame was written."""
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            if self._stream is None:
                raise DatasetError(f"no frames to encode into {self.name}; pass at least one frame")
            for packet in self._stream.encode():  # flush delayed (B-)frames
                container.mux(packet)
        finally:
            container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def abort(self) -> None:
        """Close without flushing (after an error); what was written is left incomplete."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except (av.FFmpegError, ValueError):  # a half-configured stream cannot be finished
                pass

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # keep the original error; do not mask it with a flush error
            self.abort()


def _open_stream(container, path: Path | str, shape: tuple[int, ...], fps: int, codec: str,
                 crf: int, gop: int, pix_fmt: str):
    """Add and configure the video stream for frames of ``shape`` (H, W, 3)."""
    if len(shape) != 3 or shape[2] != 3:
        raise DatasetError(f"frames for {path} must be (H, W, 3) uint8 RGB; got shape {shape}")
    height, width = int(shape[0]), int(shape[1])
    if pix_fmt == "yuv420p" and (height % 2 or width % 2):
        # 4:2:0 chroma subsampling needs even sizes; libx264 refuses odd ones outright.
        raise DatasetError(
            f"cannot encode {path}: {codec} with {pix_fmt} needs even height and width, "
            f"got {height}x{width}; render the camera at an even size (e.g. 64x64) or crop one row/column"
        )
    if codec not in av.codecs_available:
        raise DatasetError(
            f"video codec {codec!r} is not available in this PyAV build; use codec='libx264' "
            f"(available H.264/AV1 encoders: "
            f"{sorted(c for c in ('libx264', 'libsvtav1', 'libaom-av1', 'h264') if c in av.codecs_available)})"
        )
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.codec_context.time_base = Fraction(1, fps)
    # One encoder thread, so the bytes never depend on the machine's thread count (Ray workers
    # and in-process collection must write identical files); frames are small.
    options = {"g": str(gop), "threads": "1"}
    if codec in ("libx264", "libx265", "libsvtav1", "libaom-av1"):
        options["crf"] = str(crf)
    stream.options = options
    return stream


def decode_frames(path: str | Path, fps: int, start: int, count: int,
                  expect_end: bool = False) -> np.ndarray:
    """Decode frames ``start .. start+count-1`` of ``path`` (frame ``i`` has time ``i / fps``).

    ``expect_end``: these are the file's last frames (the last episode in it); a frame after
    them is an error, so a video that holds more frames than its metadata is never cut silently.

    Returns:
        uint8 array (count, H, W, 3).
    Raises:
        FileNotFoundError if the file is missing; :class:`FrameError` (a DatasetError whose
        ``frame`` is the first bad index of the range) if it is empty, unreadable, holds fewer
        frames in that range than asked for, or (with ``expect_end``) more frames after it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} does not exist; the dataset is incomplete "
                                "(re-copy the videos/ folder or re-record the episodes)")
    if os.path.getsize(path) == 0:
        raise FrameError(f"video file {path} is empty (0 bytes), probably an interrupted write; "
                         "delete the dataset's affected episodes or re-record them", 0)
    return _decode_range(path, fps, start, count, expect_end)


class FrameError(DatasetError):
    """A video defect located at ``frame``, an index relative to the first frame asked for."""

    def __init__(self, message: str, frame: int) -> None:
        super().__init__(message)
        self.frame = frame


def mp4_truncation(path: str | Path) -> str | None:
    """Why an ISO BMFF file (mp4/mov) is cut short, or None when it is whole (or not ISO BMFF).

    Its top-level boxes (ftyp, moov, mdat, ...) must end exactly at the end of the file; this
    catches a cut even where every frame still decodes (e.g. in trailing metadata).
    """
    size = os.path.getsize(path)
    pos = 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            kind = head[4:8].decode("latin-1")
            if pos == 0 and kind != "ftyp":
                return None  # not ISO BMFF: leave it to the decoder
            box = int.from_bytes(head[:4], "big") if len(head) >= 8 else -1
            if box == 1:  # 64-bit size follows the type
                box = int.from_bytes(head[8:16], "big") if len(head) == 16 else -1
            elif box == 0:  # the last box, up to the end of the file
                return None
            if box < 8 or pos + box > size:
                return (f"the file is truncated: its {kind!r} box at byte {pos} needs "
                        f"{box if box >= 8 else 'more'} bytes, the file ends at byte {size}")
            pos += box
    return None


def _decode_range(path: Path, fps: int, start: int, count: int, expect_end: bool) -> np.ndarray:
    """Seek to the keyframe before ``start`` and keep frames whose pts fall in the range."""
    out: np.ndarray | None = None
    seen = np.zeros(count, dtype=bool)
    extra: int | None = None  # slot (relative to start) of a frame past the range
    error = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            offset = stream.start_time or 0  # some muxers shift the first pts; times are relative
            if start > 0:
                target_pts = int(Fraction(start, fps) / stream.time_base) + offset
                container.seek(target_pts, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                index = _frame_slot(frame.pts, offset, stream.time_base, fps) - start
                if index < 0:
                    continue
                if index >= count:
                    extra = index if expect_end else None
                    break
                if out is None:
                    out = np.empty((count, frame.height, frame.width, 3), dtype=np.uint8)
                out[index] = frame.to_ndarray(format="rgb24")
                seen[index] = True
    except (av.FFmpegError, IndexError) as err:  # IndexError: the file has no video stream
        error = f"{type(err).__name__}: {err}"
    span = (f"file frames {start}..{start + count - 1} "
            f"(t={start / fps:.3f}s..{(start + count - 1) / fps:.3f}s)")
    complete = out is not None and bool(seen.all())
    cut = mp4_truncation(path) if not complete or expect_end else None
    faults = [f"the decoder failed ({error})" if error else "", cut or ""]
    why = "".join(f"; {f}" for f in faults if f)
    if out is None or not complete:
        first = int(np.argmin(seen))
        raise FrameError(
            f"video file {path} holds {int(seen.sum())} of the {count} frames expected at {span}, "
            f"first missing: frame {first} of them{why}; the file is truncated or corrupt, or its "
            "metadata is wrong: re-record the affected episodes", first)
    if extra is not None:
        raise FrameError(
            f"video file {path} holds a frame at t={(start + extra) / fps:.3f}s after the "
            f"{count} frames expected at {span}, the last ones the metadata lists in it; the "
            "metadata undercounts the video: re-export the dataset", count)
    if why:
        raise FrameError(f"video file {path}: all {count} frames at {span} decode, but{why[1:]}; "
                         "the file is corrupt: re-copy or re-record it", count)
    return out


def _frame_slot(pts: int, offset: int, time_base: Fraction, fps: int) -> int:
    """Frame index of a frame with presentation time ``pts`` (``offset`` = the stream's start)."""
    # Round the time to the nearest frame slot: pts are exact up to time-base rounding.
    return round(float((pts - offset) * time_base) * fps)


@dataclass(frozen=True)
class VideoProbe:
    """What a full decode of one video file found (see :func:`probe_frames`)."""

    indices: np.ndarray  # int64 (N,): frame slot (pts * fps) of every decoded frame, in order
    height: int  # 0 when no frame decoded
    width: int
    error: str | None  # the decoder error that stopped decoding early, or None
    truncated: str | None = None  # why the file is cut short (see mp4_truncation), or None


def probe_frames(path: str | Path, fps: int) -> VideoProbe:
    """Decode every frame of ``path`` (without converting pixels) and record their frame slots.

    Unlike :func:`decode_frames` this never raises on a corrupt file: a decoder error ends the
    scan and is returned in ``error`` with the frames decoded before it (validation reports
    all problems, not the first). Missing or empty files raise as in :func:`decode_frames`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} does not exist")
    if os.path.getsize(path) == 0:
        raise DatasetError(f"video file {path} is empty (0 bytes), probably an interrupted write")
    slots: list[int] = []
    height = width = 0
    error = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            offset = stream.start_time or 0
            for frame in container.decode(stream):
                if frame.pts is not None:
                    slots.append(_frame_slot(frame.pts, offset, stream.time_base, fps))
                    height, width = frame.height, frame.width
    except (av.FFmpegError, IndexError) as err:  # IndexError: the file has no video stream
        error = f"{type(err).__name__}: {err}"
    return VideoProbe(np.asarray(slots, np.int64), height, width, error, mp4_truncation(path))
