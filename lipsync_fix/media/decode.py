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


def decode_audio(
    path: PathLike,
    sample_rate: int | None = 16000,
    mono: bool = True,
    audio_stream: int = 0,
    *,
    info: MediaInfo | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """Decode an audio stream (the first by default) to float32 samples in [-1, 1], or to
    int16 samples with ``dtype="int16"``.

    ffmpeg resamples (``sample_rate=None`` keeps the native rate) and downmixes
    (``mono=True``). Returns shape ``(n,)`` when mono, else ``(n, channels)``. When the file
    has a video stream, sample 0 is aligned to its first frame (see the module docstring):
    the audio is padded with silence at the start if it begins later than the video, and
    its head is dropped if it begins earlier. ``audio_stream`` counts audio streams only
    (1 is the second audio stream, e.g. a dub). ``dtype="int16"`` halves the memory of
    long soundtracks (an hour of 16 kHz mono is 115 MB) and is the scale SyncNet's MFCC
    reads. ``info`` saves probing a file the caller has already probed.
    """
    if dtype not in ("float32", "int16"):
        raise ValueError(f"dtype must be float32 or int16, not {dtype!r}")
    info = info or probe(path)
    require_audio(info)
    if not 0 <= audio_stream < len(info.audio_streams):
        raise MediaError(f"{info.path} has no audio stream number {audio_stream} "
                         f"(it has {len(info.audio_streams)}).")
    stream = info.audio_streams[audio_stream]
    if stream.sample_rate is None:
        raise MediaError(f"Audio stream #{stream.index} of {info.path} cannot be decoded.")
    rate = sample_rate or stream.sample_rate
    channels = 1 if mono else stream.channels
    audio = decode_pcm(info, rate, channels, stream.index, dtype)
    lead = 0
    if info.has_video and not info.is_still_image:
        video_start = info.stream(info.video_stream_index).start_s or 0.0
        lead = round((stream.start_s - video_start) * rate)
    audio = delayed(audio, lead, len(audio) + lead)
    if dtype == "float32":
        np.clip(audio, -1.0, 1.0, out=audio)
    return audio.reshape(-1) if mono else audio


def known_channels(info: MediaInfo) -> int:
    if info.channels is None:
        raise MediaError(f"{info.path} has an audio channel layout that cannot be read.")
    return info.channels


def decode_pcm(
    info: MediaInfo, sample_rate: int, channels: int, stream_index: int | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """Decode an audio stream as it is stored (no alignment) to a read-only (n, ch) array
    of float32 (or int16 with ``dtype="int16"``).

    ``stream_index`` is ffmpeg's index of the stream; the first audio stream by default.
    """
    fmt, numpy_dtype = ("s16le", "<i2") if dtype == "int16" else ("f32le", "<f4")
    index = info.audio_stream_index if stream_index is None else stream_index
    # At the native channel count no -ac: asking for it again can remix a layout such as
    # "5.1(side)" into ffmpeg's default "5.1" order.
    remix = [] if channels == info.stream(index).channels else ["-ac", str(channels)]
    result = run_ffmpeg([
        "-v", "error", *input_args(info.path),
        "-map", f"0:{index}",
        "-f", fmt, *remix, "-ar", str(sample_rate), "pipe:1",
    ])
    raw = stdout_or_raise(result, f"Could not decode the audio of {info.path}")
    audio = np.frombuffer(raw, dtype=numpy_dtype).reshape(-1, channels)
    if len(audio) == 0:
        raise MediaError(f"{info.path} has an audio stream without any decodable sound.")
    return audio


def delayed(audio: np.ndarray, shift: int, length: int) -> np.ndarray:
    """Return ``length`` samples where sample ``k`` is ``audio[k - shift]`` (zeros outside).

    A positive shift pads silence at the start and drops samples off the end; a negative
    shift drops the head. Always returns a new, writable array of the input's dtype.
    """
    out = np.zeros((length, audio.shape[1]), dtype=audio.dtype)
    src_start, dst_start = max(0, -shift), max(0, shift)
    count = min(len(audio) - src_start, length - dst_start)
    if count > 0:
        out[dst_start:dst_start + count] = audio[src_start:src_start + count]
    return out


def _frame_filter(
    fps: float, width: int, height: int, start_s: float, first: int = 0, count: int | None = None
) -> str:
    """Filter chain giving constant-rate frames whose frame 0 is the first video frame.

    Timestamps stay as stored in the file (``-copyts``); ``setpts`` subtracts the first
    video frame's (``start_s``) so the ``fps`` filter's grid is anchored there, and ``fps``
    duplicates or drops frames, which also turns variable-frame-rate input into a constant
    rate. With ``first``/``count`` a ``trim`` keeps frames ``first .. first+count-1`` of
    that grid: since the timestamps do not depend on where decoding began, a decode that
    starts after a seek yields exactly the frames a decode from the start would. ``scale``
    comes last (only kept frames pay for it) and fixes the size, even if the stream changes
    resolution midway, so the raw bytes always split into whole frames.
    """
    chain = f"setpts=PTS-{start_s!r}/TB,fps={exact_rate(fps)}"
    if first or count is not None:
        end = f":end={(first + count) / fps!r}" if count is not None else ""
        chain += f",trim=start={first / fps!r}{end}"
    return chain + f",scale={width}:{height}:flags=area"


def _first_pts(info: MediaInfo) -> float:
    """The first video frame's time as stored in the file (``-copyts``'s timeline)."""
    return info.stream(info.video_stream_index).start_s or 0.0


def _scaled_size(info: MediaInfo, max_side: int | None) -> tuple[int, int]:
    width, height = info.width, info.height
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


CHUNK_BYTES = 16 << 20
"""A chunk of frames is at most this big (fewer frames per chunk for large frames): glibc
serves larger blocks with a fresh ``mmap`` each time, whose page faults cost more than
reading the frames (16 chunks of 720p took 1.7 s of CPU per 20 s of video against 0.3 s
for 540p)."""

SEEK_PREROLLS_S = (1.0, 10.0)
"""A seek lands this far before the first wanted frame (the decoder then starts at a
keyframe before it, and the frame-rate filter has settled by the wanted frame); when that
is not far enough back for a container's index, the next is tried, then the start."""


def iter_video_frames(
    path: PathLike,
    fps: float = 25.0,
    chunk_frames: int = 256,
    pix_fmt: str = "bgr24",
    max_side: int | None = None,
    *,
    first_frame: int = 0,
    n_frames: int | None = None,
    info: MediaInfo | None = None,
) -> Iterator[np.ndarray]:
    """Stream the video as uint8 chunks of shape ``(k, H, W, 3)``, ``k <= chunk_frames``
    (and at most :data:`CHUNK_BYTES`; at least one frame).

    Frames are resampled to a constant ``fps`` and read from an ffmpeg pipe, so memory
    stays bounded by one chunk however long the video is. Frame 0 is the first video frame.
    ``pix_fmt`` is "bgr24" (OpenCV order) or "rgb24"; ``max_side`` downscales inside ffmpeg
    so that the longer side is at most that many pixels (a 4K frame never reaches Python
    at full size). ``first_frame``/``n_frames`` decode only frames ``first_frame ..
    first_frame + n_frames - 1`` of that grid, seeking instead of decoding what comes
    before; they are the same frames a decode from the start yields. ``info`` saves
    probing a file the caller has already probed (a seek per segment of a long video).
    The arrays are writable. An unusable file raises MediaError at the call; a decoding
    failure further in raises it from the iteration, after the chunks read so far.
    """
    if pix_fmt not in FRAME_CHANNELS:
        raise ValueError(f"pix_fmt must be one of {sorted(FRAME_CHANNELS)}, not {pix_fmt!r}")
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be at least 1")
    if first_frame < 0 or (n_frames is not None and n_frames < 0):
        raise ValueError("first_frame and n_frames must not be negative")
    info = info or probe(path)
    require_video(info)
    width, height = _scaled_size(info, max_side)
    frame_shape = (height, width, FRAME_CHANNELS[pix_fmt])
    chunk_frames = max(1, min(chunk_frames, CHUNK_BYTES // math.prod(frame_shape)))

    def command(preroll_s: float | None) -> list[str]:
        seek_s = 0.0 if preroll_s is None else max(0.0, first_frame / fps - preroll_s)
        seek = ["-ss", f"{info.video_start_s + seek_s:.6f}"] if seek_s > 0 else []
        return ffmpeg_command([
            "-v", "error", *seek, "-copyts", *input_args(info.path),
            "-map", f"0:{info.video_stream_index}",
            "-vf", _frame_filter(fps, width, height, _first_pts(info), first_frame, n_frames),
            "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1",
        ])

    if first_frame == 0:
        return _stream_frames(command(None), frame_shape, chunk_frames, info.path)
    return _seek_frames(command, frame_shape, chunk_frames, info, n_frames)


def _seek_frames(
    command, frame_shape: tuple[int, int, int], chunk_frames: int, info: MediaInfo,
    n_frames: int | None,
) -> Iterator[np.ndarray]:
    """Decode after a seek; if the seek overshot (a container with few keyframes or an
    imprecise index, such as MPEG-TS, can land after the wanted frame), retry from further
    back and finally from the start, so the frames returned are always the wanted ones.

    A short result is only trusted once a decode from the start confirms it (the clip
    ends early); the first attempts are read whole before anything is yielded.
    """
    for preroll in SEEK_PREROLLS_S:
        frames = list(_stream_frames(command(preroll), frame_shape, chunk_frames, info.path))
        if n_frames is not None and sum(len(f) for f in frames) >= n_frames:
            yield from frames
            return
    yield from _stream_frames(command(None), frame_shape, chunk_frames, info.path)


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
        "-v", "error", "-copyts", *input_args(info.path),
        "-map", f"0:{info.video_stream_index}",
        "-vf", _frame_filter(fps, info.width, info.height, _first_pts(info)),
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
