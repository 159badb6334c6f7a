"""Encoding frames (and optional audio) into a new video file.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import numpy as np
import soundfile as sf

from lipsync_fix.files import atomic_path
from lipsync_fix.media.decode import FRAME_CHANNELS
from lipsync_fix.media.ffmpeg import PathLike, check_ffmpeg, exact_rate, ffmpeg_command


def write_video(
    path: PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = 18,
    pix_fmt: str = "rgb24",
) -> None:
    """Encode frames (H.264, yuv420p) and optional float audio (AAC) into a video file.

    ``frames`` is an array ``(n, H, W, 3)`` or any iterable of ``(H, W, 3)`` uint8 frames
    in ``pix_fmt`` order ("rgb24" or "bgr24"); they are piped to ffmpeg one by one, so a
    generator keeps memory bounded. An odd width or height loses its last pixel row or
    column, as yuv420p needs even sizes. ``audio`` is ``(n,)`` or ``(n, channels)``
    float in [-1, 1] at ``sample_rate``. An existing file at ``path`` is replaced, but
    only once the new one is complete.
    """
    if pix_fmt not in FRAME_CHANNELS:
        raise ValueError(f"pix_fmt must be one of {sorted(FRAME_CHANNELS)}, not {pix_fmt!r}")
    if audio is not None and not sample_rate:
        raise ValueError("sample_rate is required with audio")
    frame_iter = iter(frames)
    first = next(frame_iter, None)
    if first is None:
        raise ValueError("write_video needs at least one frame")
    height, width = np.shape(first)[:2]
    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch, atomic_path(path) as tmp:
        args = [
            "-v", "error",
            "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}",
            "-framerate", exact_rate(fps), "-i", "pipe:0",
        ]
        video_args = [
            "-map", "0:v", "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2",
            "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p",
        ]
        if audio is not None:
            wav = Path(scratch) / "audio.wav"
            sf.write(wav, np.asarray(audio, dtype=np.float32), sample_rate, subtype="FLOAT")
            args += ["-i", str(wav), *video_args, "-map", "1:a", "-c:a", "aac", "-b:a", "192k"]
        else:
            args += video_args
        args.append(str(tmp))
        _pipe_frames(args, chain([first], frame_iter), (height, width, 3), path)


def _pipe_frames(args: list[str], frames: Iterable[np.ndarray], shape: tuple, path: Path) -> None:
    """Run ffmpeg with ``args``, writing each frame to its stdin; MediaError if it fails."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            ffmpeg_command(args), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            for index, frame in enumerate(frames):
                frame = np.asarray(frame)
                if frame.shape != shape or frame.dtype != np.uint8:
                    raise ValueError(
                        f"frame {index} is {frame.dtype} {frame.shape}, expected uint8 {shape}"
                    )
                try:
                    process.stdin.write(np.ascontiguousarray(frame).data)
                except BrokenPipeError:
                    break  # ffmpeg stopped; its log says why
            process.stdin.close()
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        log.seek(0)
        stderr = log.read().decode("utf-8", "replace")
    check_ffmpeg(returncode, stderr, f"Could not write {path}")
