"""Decoding: audio samples and streamed video frames, aligned to the first video frame.

Timing convention shared by :func:`decode_audio` and :func:`iter_video_frames`: both start
at the first frame of the video stream. Frame ``i`` shows the video at ``i / fps`` seconds
after that frame and audio sample ``j`` plays at ``j / sample_rate`` seconds after it, even
when the container starts the audio stream earlier or later than the video stream. An offset
measured between the two arrays is therefore the offset a viewer sees, and it is what
:func:`lipsync_fix.media.remux.shift_audio` corrects.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from lipsync_fix.errors import MediaError
from lipsync_fix.media.ffmpeg import (
    PathLike,
    check_ffmpeg,
    exact_rate,
    ffmpeg_command,
    input_args,
    run_ffmpeg,
    stdout_or_raise,
)
from lipsync_fix.media.probe import MediaInfo, probe, require_audio, require_video

FRAME_CHANNELS = {"bgr24": 3, "rgb24": 3}


def decode_audio(path: PathLike, sample_rate: int | None = 16000, mono: bool = True) -> np.ndarray:
    """Decode the first audio stream to float32 samples in [-1, 1].

    ffmpeg resamples (``sample_rate=None`` keeps the native rate) and downmixes
    (``mono=True``). Returns shape ``(n,)`` when mono, else ``(n, channels)``. When the file
    has a video stream, sample 0 is aligned to its first frame (see the module docstring):
    the audio is padded with silence at the start if it begins later than the video, and
    its head is dropped if it begins earlier.
    """
    info = probe(path)
    require_audio(info)
    rate = sample_rate or info.sample_rate
    channels = 1 if mono else known_channels(info)
    audio = decode_pcm(info, rate, channels)
    lead = 0
    if info.has_video and not info.is_still_image:
        lead = round((info.audio_start_s - info.video_start_s) * rate)
    audio = delayed(audio, lead, len(audio) + lead)
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio.reshape(-1) if mono else audio


def known_channels(info: MediaInfo) -> int:
    if info.channels is None:
        raise MediaError(f"{info.path} has an audio channel layout that cannot be read.")
    return info.channels


def decode_pcm(
    info: MediaInfo, sample_rate: int, channels: int, stream_index: int | None = None
) -> np.ndarray:
    """Decode an audio stream as it is stored (no alignment) to a read-only (n, ch) array.

    ``stream_index`` is ffmpeg's index of the stream; the first audio stream by default.
    """
    index = info.audio_stream_index if stream_index is None else stream_index
    # At the native channel count no -ac: asking for it again can remix a layout such as
    # "5.1(side)" into ffmpeg's default "5.1" order.
    remix = [] if channels == info.stream(index).channels else ["-ac", str(channels)]
    result = run_ffmpeg([
        "-v", "error", *input_args(info.path),
        "-map", f"0:{index}",
        "-f", "f32le", *remix, "-ar", str(sample_rate), "pipe:1",
    ])
    raw = stdout_or_raise(result, f"Could not decode the audio of {info.path}")
    audio = np.frombuffer(raw, dtype="<f4").reshape(-1, channels)
    if len(audio) == 0:
        raise MediaError(f"{info.path} has an audio stream without any decodable sound.")
    return audio


def delayed(audio: np.ndarray, shift: int, length: int) -> np.ndarray:
    """Return ``length`` samples where sample ``k`` is ``audio[k - shift]`` (zeros outside).

    A positive shift pads silence at the start and drops samples off the end; a negative
    shift drops the head. Always returns a new, writable float32 array.
    """
    out = np.zeros((length, audio.shape[1]), dtype=np.float32)
    src_start, dst_start = max(0, -shift), max(0, shift)
    count = min(len(audio) - src_start, length - dst_start)
    if count > 0:
        out[dst_start:dst_start + count] = audio[src_start:src_start + count]
    return out


def _frame_filter(fps: float, width: int, height: int) -> str:
    """Filter chain giving constant-rate frames whose frame 0 is the first video frame.

    ``setpts`` anchors the ``fps`` filter's grid at the first frame (it would otherwise be
    anchored at the file's zero), and ``fps`` duplicates or drops frames, which also turns
    variable-frame-rate input into a constant rate. ``scale`` fixes the size, even if the
    stream changes resolution midway, so the raw bytes always split into whole frames.
    """
    return f"setpts=PTS-STARTPTS,fps={exact_rate(fps)},scale={width}:{height}:flags=area"


def _scaled_size(info: MediaInfo, max_side: int | None) -> tuple[int, int]:
    width, height = info.width, info.height
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def iter_video_frames(
    path: PathLike,
    fps: float = 25.0,
    chunk_frames: int = 256,
    pix_fmt: str = "bgr24",
    max_side: int | None = None,
) -> Iterator[np.ndarray]:
    """Stream the video as uint8 chunks of shape ``(k, H, W, 3)``, ``k <= chunk_frames``.

    Frames are resampled to a constant ``fps`` and read from an ffmpeg pipe, so memory
    stays bounded by one chunk however long the video is. Frame 0 is the first video frame.
    ``pix_fmt`` is "bgr24" (OpenCV order) or "rgb24"; ``max_side`` downscales so that the
    longer side is at most that many pixels (faster face detection). The arrays are
    writable. An unusable file raises MediaError at the call; a decoding failure further
    in raises it from the iteration, after the chunks read so far.
    """
    if pix_fmt not in FRAME_CHANNELS:
        raise ValueError(f"pix_fmt must be one of {sorted(FRAME_CHANNELS)}, not {pix_fmt!r}")
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be at least 1")
    info = probe(path)
    require_video(info)
    width, height = _scaled_size(info, max_side)
    frame_shape = (height, width, FRAME_CHANNELS[pix_fmt])
    command = ffmpeg_command([
        "-v", "error", *input_args(info.path),
        "-map", f"0:{info.video_stream_index}",
        "-vf", _frame_filter(fps, width, height),
        "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1",
    ])
    return _stream_frames(command, frame_shape, chunk_frames, info.path)


def _stream_frames(
    command: list[str], frame_shape: tuple[int, int, int], chunk_frames: int, path: Path
) -> Iterator[np.ndarray]:
    """Run ``command`` and yield its raw frames in chunks (a generator, so it runs lazily)."""
    with tempfile.TemporaryFile() as log:
        # stderr goes to a file: a pipe nobody reads could fill up and stall ffmpeg.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        try:
            while chunk := _read_frames(process.stdout, chunk_frames, math.prod(frame_shape)):
                yield np.frombuffer(chunk, dtype=np.uint8).reshape(-1, *frame_shape)
            returncode = process.wait()
        finally:
            if process.poll() is None:  # the caller stopped early
                process.kill()
            process.wait()
            process.stdout.close()
        log.seek(0)
        stderr = log.read().decode("utf-8", "replace")
    check_ffmpeg(returncode, stderr, f"Could not decode the video of {path}")


def _read_frames(stream: IO[bytes], max_frames: int, frame_bytes: int) -> bytearray:
    """Read up to ``max_frames`` whole frames; empty at the end of the stream."""
    buffer = bytearray(max_frames * frame_bytes)
    filled = 0
    with memoryview(buffer) as view:
        while filled < len(buffer):
            count = stream.readinto(view[filled:])
            if not count:
                break
            filled += count
    del buffer[filled - filled % frame_bytes:]
    return buffer


def count_frames_at(path: PathLike, fps: float = 25.0) -> int:
    """Number of frames :func:`iter_video_frames` yields at ``fps`` (decodes the video).

    Exact, unlike ``duration * fps``, which the rounding of the duration and the end of
    the last frame make off by one now and then.
    """
    info = probe(path)
    require_video(info)
    result = run_ffmpeg([
        "-v", "error", *input_args(info.path),
        "-map", f"0:{info.video_stream_index}",
        "-vf", _frame_filter(fps, info.width, info.height),
        "-f", "null", "-", "-nostats", "-progress", "pipe:1",
    ])
    progress = stdout_or_raise(result, f"Could not decode the video of {info.path}").decode()
    counts = re.findall(r"^frame=(\d+)", progress, re.M)
    return int(counts[-1]) if counts else 0


def video_packets_md5(path: PathLike) -> list[str]:
    """MD5 of every packet of the video stream, in order, without decoding.

    Two files with equal lists carry the same encoded video bit for bit, which is how a
    remux such as :func:`shift_audio` is checked to have left the picture untouched.
    """
    info = probe(path)
    require_video(info)
    result = run_ffmpeg([
        "-v", "error", *input_args(info.path),
        "-map", f"0:{info.video_stream_index}", "-c", "copy", "-f", "framemd5", "pipe:1",
    ])
    listing = stdout_or_raise(result, f"Could not read the video packets of {info.path}").decode()
    return [
        line.rsplit(",", 1)[1].strip()
        for line in listing.splitlines()
        if line.strip() and not line.startswith("#")
    ]
