"""Reading and writing audio/video through the ``ffmpeg`` binary alone.

Users who only ``pip install`` have no ffprobe, just the static ffmpeg shipped in the
``imageio-ffmpeg`` wheel, so everything here runs ``ffmpeg`` and parses what it prints.

Timing convention shared by :func:`decode_audio` and :func:`iter_video_frames`: both start
at the first frame of the video stream. Frame ``i`` shows the video at ``i / fps`` seconds
after that frame and audio sample ``j`` plays at ``j / sample_rate`` seconds after it, even
when the container starts the audio stream earlier or later than the video stream. An offset
measured between the two arrays is therefore the offset a viewer sees, and it is what
:func:`shift_audio` corrects.
"""

from __future__ import annotations

import functools
import math
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf

from lipsync_fix.errors import LipsyncError, MediaError, OutputExistsError

PathLike = str | os.PathLike[str]

#: ffmpeg's demuxer message when a packet lies beyond the end of the file: the file was cut
#: short. ffmpeg still exits with status 0, so it must be looked for in the log.
_TRUNCATION_MARK = "partial file"

_FRAME_CHANNELS = {"bgr24": 3, "rgb24": 3}

#: Audio encoder per decoded codec, for containers that can hold the input's codec family.
_ENCODER_FOR_CODEC = {
    "aac": "aac",
    "mp3": "libmp3lame",
    "opus": "libopus",
    "vorbis": "libvorbis",
    "flac": "flac",
    "alac": "alac",
}
_LOSSY_ENCODERS = {"aac", "libmp3lame", "libopus", "libvorbis"}
_LOSSY_BITRATE_PER_CHANNEL = 96_000
_LOSSY_MAX_BITRATE = 384_000

# File suffixes treated as videos when a folder is given as input.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg",
                            ".ts", ".flv", ".wmv", ".3gp"})


@functools.cache
def ffmpeg_exe() -> str:
    """Return the ffmpeg binary to run, looked up once per process.

    ``LIPSYNC_FIX_FFMPEG`` wins so that a user can pin a build; then an ``ffmpeg`` on PATH,
    which is usually newer and may have hardware decoders; then the static binary of the
    ``imageio-ffmpeg`` wheel, which every pip install has.
    """
    override = os.environ.get("LIPSYNC_FIX_FFMPEG")
    if override:
        if not Path(override).is_file():
            raise LipsyncError(f"LIPSYNC_FIX_FFMPEG points to {override}, which is not a file.")
        return override
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise LipsyncError(
            "No ffmpeg binary was found: install imageio-ffmpeg or set LIPSYNC_FIX_FFMPEG."
        ) from exc


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a media file as listed by ffmpeg."""

    index: int
    kind: str  # "video", "audio", "subtitle", "data" or "attachment"
    codec: str  # ffmpeg's codec name; "none" when ffmpeg does not know the codec
    attached_pic: bool  # cover art stored as a video stream, not a real video


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learnt about a media file.

    The video fields describe the first video stream that is not cover art and the audio
    fields the first audio stream; they are ``None`` when that stream is absent. ``width``
    and ``height`` are those of the decoded frames, after rotation metadata is applied.
    The start times are on ffmpeg's timeline of the file, whose zero is the earliest stream.
    """

    path: Path
    format_name: str
    duration_s: float | None
    has_video: bool
    has_audio: bool
    fps: float | None
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    is_still_image: bool
    video_stream_index: int | None
    audio_stream_index: int | None
    video_start_s: float
    audio_start_s: float
    streams: tuple[StreamInfo, ...]


@dataclass(frozen=True)
class ShiftReport:
    """What :func:`shift_audio` wrote."""

    src: Path
    dst: Path
    requested_delay_s: float
    shift_samples: int  # positive: the sound now comes later
    sample_rate: int
    channels: int
    audio_encoder: str

    @property
    def applied_delay_s(self) -> float:
        """The delay actually applied, rounded to whole samples."""
        return self.shift_samples / self.sample_rate


# --------------------------------------------------------------------------------------
# Running ffmpeg
# --------------------------------------------------------------------------------------


def _ffmpeg_command(args: list[str]) -> list[str]:
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]


def _run_ffmpeg(args: list[str], stdin_data: bytes | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg to completion, capturing its output (stdin fed from ``stdin_data``)."""
    command = _ffmpeg_command(args)
    try:
        return subprocess.run(command, input=stdin_data, capture_output=True, check=False)
    except OSError as exc:
        raise MediaError(f"Cannot run ffmpeg at {command[0]}: {exc.strerror}.") from exc


def _ffmpeg_reason(stderr: str) -> str:
    """Condense ffmpeg's log into a short, single-line cause for an error message."""
    if _TRUNCATION_MARK in stderr:
        return "the file is truncated"
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "ffmpeg gave no reason"
    # "Error opening input files: Invalid data found ..." -> "Invalid data found ..."
    reason = re.sub(r"^Error [^:]*: ", "", lines[-1])
    return " ".join(reason.split())[:200].rstrip(".")


def _check_ffmpeg(returncode: int, stderr: str, failure: str) -> None:
    """Raise MediaError(``failure: cause``) when ffmpeg failed or read a truncated file.

    Other errors in the log (a damaged frame or two) are tolerated, as players do.
    """
    if returncode != 0 or _TRUNCATION_MARK in stderr:
        raise MediaError(f"{failure}: {_ffmpeg_reason(stderr)}.")


def _stdout_or_raise(result: subprocess.CompletedProcess, failure: str) -> bytes:
    """Return ffmpeg's stdout after checking that the run succeeded."""
    _check_ffmpeg(result.returncode, result.stderr.decode("utf-8", "replace"), failure)
    return result.stdout


def _rate(value: float) -> str:
    """Format a frame rate exactly for ffmpeg (29.97002997… becomes 30000/1001)."""
    return str(Fraction(value).limit_denominator(1001))


# --------------------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------------------

_INPUT_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_DURATION_RE = re.compile(r"^\s*Duration: (?:(\d+):(\d\d):(\d\d(?:\.\d+)?)|N/A)", re.M)
# "  Stream #0:1[0x2](eng): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, ..."
_STREAM_RE = re.compile(r"^\s*Stream #0:(\d+)(?:\[[^\]]*\]|\([^)]*\))*: (\w+): (.*)$", re.M)
# The "(avc1 / 0x31637661)" tag looks like a size too; a real size follows ", " or starts.
_SIZE_RE = re.compile(r"(?:^|, )(\d{1,5})x(\d{1,5})(?=[\s,]|$)")
_FPS_RE = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_SAMPLE_RATE_RE = re.compile(r"(\d+) Hz(?:, ([^,]+))?")
# The showinfo / ashowinfo filters log each frame after decoding (and auto-rotation).
_FRAME_LOG_RE = re.compile(
    r"\[Parsed_(a?)showinfo_\d+ @ [^\]]*\] n:\s*(\d+) .*?pts_time:(\S+)(.*)$", re.M
)
_FRAME_SIZE_RE = re.compile(r"\bs:(\d+)x(\d+)")
_FRAME_CHANNELS_RE = re.compile(r"\bchannels:(\d+)")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "downmix": 2, "quad": 4, "hexagonal": 6,
                    "octagonal": 8, "hexadecagonal": 16}


def probe(path: PathLike) -> MediaInfo:
    """Describe a media file, raising MediaError when it cannot be used at all.

    Runs ffmpeg twice: its input banner gives the container and streams, and decoding the
    first frames (up to two video frames and one audio frame, logged by the showinfo
    filters) gives what the banner does not say or says imprecisely: the decoded frame
    size after rotation, the channel count, the start of each stream, and whether the
    video is a single still frame. Decoding those frames also rejects files whose header
    parses but whose codecs ffmpeg cannot decode. A file whose tail is cut off but whose
    index is intact is only detected when it is read in full (by the decode functions).
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path} does not exist.")
    if not path.is_file():
        raise MediaError(f"{path} is not a file.")
    # Without an output ffmpeg prints the banner and exits with an error; that is expected.
    banner_log = _run_ffmpeg(["-i", str(path)]).stderr.decode("utf-8", "replace")
    banner = _input_banner(banner_log)
    if banner is None:
        raise MediaError(
            f"{path} is not a readable media file; it may be corrupt or truncated "
            f"({_ffmpeg_reason(banner_log)})."
        )
    streams = _parse_streams(banner)
    video = next((s for s in streams if s.kind == "video" and not s.attached_pic), None)
    audio = next((s for s in streams if s.kind == "audio"), None)
    if video is None and audio is None:
        raise MediaError(f"{path} contains no audio or video stream.")
    log = _first_frames_log(path, video, audio)

    video_frames = [m for m in _FRAME_LOG_RE.finditer(log) if not m.group(1)]
    audio_frames = [m for m in _FRAME_LOG_RE.finditer(log) if m.group(1)]
    if video is not None and not video_frames:
        raise MediaError(f"{path} has a video stream without a single decodable frame.")
    if audio is not None and not audio_frames:
        raise MediaError(f"{path} has an audio stream without any decodable sound.")

    video_line = _stream_line(banner, video)
    audio_line = _stream_line(banner, audio)
    width, height = _frame_size(video_frames, video_line)
    sample_rate, layout = _sample_rate_and_layout(audio_line)
    return MediaInfo(
        path=path,
        format_name=_INPUT_RE.search(banner).group(1),
        duration_s=_duration(banner),
        has_video=video is not None,
        has_audio=audio is not None,
        fps=_fps(video_line),
        width=width,
        height=height,
        video_codec=video.codec if video else None,
        audio_codec=audio.codec if audio else None,
        sample_rate=sample_rate,
        channels=_channels(audio_frames, layout),
        is_still_image=video is not None and len({m.group(2) for m in video_frames}) < 2,
        video_stream_index=video.index if video else None,
        audio_stream_index=audio.index if audio else None,
        video_start_s=_pts_time(video_frames),
        audio_start_s=_pts_time(audio_frames),
        streams=streams,
    )


def _first_frames_log(path: Path, video: StreamInfo | None, audio: StreamInfo | None) -> str:
    """Decode the first two video frames and first audio frame; return ffmpeg's log.

    Both filters sit in one filtergraph on purpose: ffmpeg runs each graph in its own
    thread, and with separate ``-vf``/``-af`` graphs the two filters' log lines now and
    then interleave mid-line, which breaks the parsing.
    """
    graphs, outputs = [], []
    if video is not None:
        graphs.append(f"[0:{video.index}]showinfo[v]")
        outputs += ["-map", "[v]", "-frames:v", "2"]
    if audio is not None:
        graphs.append(f"[0:{audio.index}]ashowinfo[a]")
        outputs += ["-map", "[a]", "-frames:a", "1"]
    result = _run_ffmpeg(
        ["-i", str(path), "-filter_complex", ";".join(graphs), *outputs, "-f", "null", "-"]
    )
    log = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0:
        raise MediaError(f"{path} cannot be decoded ({_ffmpeg_reason(log)}).")
    return log


def _input_banner(log: str) -> str | None:
    """Cut the ``Input #0`` section out of ffmpeg's log.

    A log of a run with an output also lists the *output* streams ("Output #0 ...
    Stream #0:0: Video: wrapped_avframe") in the same format; they must not be mixed in.
    """
    start = _INPUT_RE.search(log)
    if start is None:
        return None
    end = re.search(r"^(Stream mapping:|Output #0)", log[start.start():], re.M)
    return log[start.start():start.start() + end.start()] if end else log[start.start():]


def _parse_streams(banner: str) -> tuple[StreamInfo, ...]:
    return tuple(
        StreamInfo(
            index=int(m.group(1)),
            kind=m.group(2).lower(),
            codec=m.group(3).split(",")[0].split()[0] if m.group(3).strip() else "none",
            attached_pic="(attached pic)" in m.group(3),
        )
        for m in _STREAM_RE.finditer(banner)
    )


def _stream_line(banner: str, stream: StreamInfo | None) -> str:
    if stream is None:
        return ""
    return next(m.group(3) for m in _STREAM_RE.finditer(banner) if int(m.group(1)) == stream.index)


def _duration(banner: str) -> float | None:
    match = _DURATION_RE.search(banner)
    if match is None or match.group(1) is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _fps(video_line: str) -> float | None:
    """Average frame rate from the banner; "fps" preferred, "tbr" as fallback.

    The banner rounds to two decimals, so 30000/1001 prints as "29.97" (and 24000/1001 as
    "23.98"); such NTSC rates are snapped back to their exact value.
    """
    rates = {
        kind: float(value) * (1000 if thousands else 1)
        for value, thousands, kind in _FPS_RE.findall(video_line)
    }
    fps = rates.get("fps") or rates.get("tbr")
    if not fps:
        return None
    ntsc_base = round(fps * 1.001)
    if fps != int(fps) and abs(ntsc_base / 1.001 - fps) < 0.006:
        return ntsc_base * 1000 / 1001
    return fps


def _frame_size(
    video_frames: list[re.Match[str]], video_line: str
) -> tuple[int | None, int | None]:
    for source in (video_frames[0].group(4) if video_frames else "", video_line):
        match = _FRAME_SIZE_RE.search(source) or _SIZE_RE.search(source)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None, None


def _sample_rate_and_layout(audio_line: str) -> tuple[int | None, str]:
    match = _SAMPLE_RATE_RE.search(audio_line)
    if match is None:
        return None, ""
    return int(match.group(1)), (match.group(2) or "").strip()


def _channels(audio_frames: list[re.Match[str]], layout: str) -> int | None:
    """Channel count from the decoded frame, else from the banner's layout name."""
    if audio_frames:
        match = _FRAME_CHANNELS_RE.search(audio_frames[0].group(4))
        if match:
            return int(match.group(1))
    name = layout.split("(")[0].strip()
    if name in _LAYOUT_CHANNELS:
        return _LAYOUT_CHANNELS[name]
    if re.fullmatch(r"\d+ channels", name):
        return int(name.split()[0])
    if re.fullmatch(r"\d+(\.\d+)+", name):  # "5.1" is 6 channels, "7.1.4" is 12
        return sum(int(part) for part in name.split("."))
    return None


def _pts_time(frames: list[re.Match[str]]) -> float:
    """Timestamp of the first decoded frame; 0 when absent or unset ("NOPTS")."""
    if not frames:
        return 0.0
    try:
        return float(frames[0].group(3))
    except ValueError:
        return 0.0


def require_video(info: MediaInfo) -> None:
    """Raise MediaError unless the file has a moving video stream."""
    if not info.has_video:
        raise MediaError(f"{info.path} has no video stream.")
    if info.is_still_image:
        raise MediaError(f"{info.path} is a still image, not a video.")


def require_audio(info: MediaInfo) -> None:
    """Raise MediaError unless the file has an audio stream."""
    if not info.has_audio:
        raise MediaError(f"{info.path} has no audio stream.")


def require_video_and_audio(info: MediaInfo) -> None:
    """Raise MediaError unless the file is a video with sound, as sync analysis needs."""
    require_video(info)
    require_audio(info)


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


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
    channels = 1 if mono else _known_channels(info)
    audio = _decode_pcm(info, rate, channels)
    lead = 0
    if info.has_video and not info.is_still_image:
        lead = round((info.audio_start_s - info.video_start_s) * rate)
    audio = _delayed(audio, lead, len(audio) + lead)
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio.reshape(-1) if mono else audio


def _known_channels(info: MediaInfo) -> int:
    if info.channels is None:
        raise MediaError(f"{info.path} has an audio channel layout that cannot be read.")
    return info.channels


def _decode_pcm(info: MediaInfo, sample_rate: int, channels: int) -> np.ndarray:
    """Decode the audio stream as it is stored (no alignment) to a read-only (n, ch) array."""
    result = _run_ffmpeg([
        "-v", "error", "-i", str(info.path),
        "-map", f"0:{info.audio_stream_index}",
        "-f", "f32le", "-ac", str(channels), "-ar", str(sample_rate), "pipe:1",
    ])
    raw = _stdout_or_raise(result, f"Could not decode the audio of {info.path}")
    audio = np.frombuffer(raw, dtype="<f4").reshape(-1, channels)
    if len(audio) == 0:
        raise MediaError(f"{info.path} has an audio stream without any decodable sound.")
    return audio


def _delayed(audio: np.ndarray, shift: int, length: int) -> np.ndarray:
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
    return f"setpts=PTS-STARTPTS,fps={_rate(fps)},scale={width}:{height}:flags=area"


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
    if pix_fmt not in _FRAME_CHANNELS:
        raise ValueError(f"pix_fmt must be one of {sorted(_FRAME_CHANNELS)}, not {pix_fmt!r}")
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be at least 1")
    info = probe(path)
    require_video(info)
    width, height = _scaled_size(info, max_side)
    frame_shape = (height, width, _FRAME_CHANNELS[pix_fmt])
    command = _ffmpeg_command([
        "-v", "error", "-i", str(info.path),
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
    _check_ffmpeg(returncode, stderr, f"Could not decode the video of {path}")


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
    result = _run_ffmpeg([
        "-v", "error", "-i", str(info.path),
        "-map", f"0:{info.video_stream_index}",
        "-vf", _frame_filter(fps, info.width, info.height),
        "-f", "null", "-", "-nostats", "-progress", "pipe:1",
    ])
    progress = _stdout_or_raise(result, f"Could not decode the video of {info.path}").decode()
    counts = re.findall(r"^frame=(\d+)", progress, re.M)
    return int(counts[-1]) if counts else 0


def video_packets_md5(path: PathLike) -> list[str]:
    """MD5 of every packet of the video stream, in order, without decoding.

    Two files with equal lists carry the same encoded video bit for bit, which is how a
    remux such as :func:`shift_audio` is checked to have left the picture untouched.
    """
    info = probe(path)
    require_video(info)
    result = _run_ffmpeg([
        "-v", "error", "-i", str(info.path),
        "-map", f"0:{info.video_stream_index}", "-c", "copy", "-f", "framemd5", "pipe:1",
    ])
    listing = _stdout_or_raise(result, f"Could not read the video packets of {info.path}").decode()
    return [
        line.rsplit(",", 1)[1].strip()
        for line in listing.splitlines()
        if line.strip() and not line.startswith("#")
    ]


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


@contextmanager
def _atomic_output(dst: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dst`` that replaces ``dst`` only on success.

    The temporary name keeps ``dst``'s extension because ffmpeg picks the container from
    it. It is not created here (ffmpeg creates it with the user's umask, unlike mkstemp's
    0600), and it is removed whatever happens, so no partial output is ever left behind.
    """
    if not dst.parent.is_dir():
        raise MediaError(f"The output folder {dst.parent} does not exist.")
    tmp = dst.with_name(f".{dst.stem}.{secrets.token_hex(4)}.partial{dst.suffix}")
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


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
    if pix_fmt not in _FRAME_CHANNELS:
        raise ValueError(f"pix_fmt must be one of {sorted(_FRAME_CHANNELS)}, not {pix_fmt!r}")
    if audio is not None and not sample_rate:
        raise ValueError("sample_rate is required with audio")
    frame_iter = iter(frames)
    first = next(frame_iter, None)
    if first is None:
        raise ValueError("write_video needs at least one frame")
    height, width = np.shape(first)[:2]
    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch, _atomic_output(path) as tmp:
        args = [
            "-v", "error",
            "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}",
            "-framerate", _rate(fps), "-i", "pipe:0",
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
            _ffmpeg_command(args), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log
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
    _check_ffmpeg(returncode, stderr, f"Could not write {path}")


def _audio_encoder(codec: str, suffix: str) -> str:
    """Encoder for the re-encoded audio: the input's codec family where the container takes
    it (keeping lossless audio lossless), otherwise what the container expects.
    """
    suffix = suffix.lower()
    if suffix == ".webm":
        return "libvorbis" if codec == "vorbis" else "libopus"
    if suffix in {".mkv", ".mka"}:
        if codec.startswith("pcm_"):
            return codec
        return _ENCODER_FOR_CODEC.get(codec, "aac")
    if suffix == ".mov" and codec.startswith("pcm_"):
        return codec
    return "aac"


def _encoder_args(encoder: str, output_index: int, channels: int) -> list[str]:
    args = [f"-c:{output_index}", encoder]
    if encoder in _LOSSY_ENCODERS:
        bitrate = min(_LOSSY_BITRATE_PER_CHANNEL * channels, _LOSSY_MAX_BITRATE)
        args += [f"-b:{output_index}", str(bitrate)]
    return args


def _check_destination(src: Path, dst: Path, force: bool) -> None:
    if dst.resolve() == src.resolve() or (dst.exists() and dst.samefile(src)):
        raise MediaError(f"The output {dst} is the input file; write to a different file.")
    if dst.exists() and not force:
        raise OutputExistsError(f"{dst} already exists; pass force to overwrite it.")
    if dst.is_dir():
        raise MediaError(f"The output {dst} is a folder.")


def shift_audio(
    src: PathLike, dst: PathLike, audio_delay_s: float, *, force: bool = False
) -> ShiftReport:
    """Write ``dst``: ``src`` with its audio delayed by ``audio_delay_s`` seconds.

    Positive delays make the sound come later, negative ones earlier. The shift is exact
    to one sample at the audio's own rate: the audio is decoded at its native rate and
    channel count, shifted in numpy (silence in, samples out, so it keeps its length) and
    re-encoded (AAC in mp4/m4v, and in mov unless it was PCM; see ``_audio_encoder``).
    Everything else is copied bit for bit: the video stream (no re-encode), the other
    streams, chapters and metadata. Only the first audio stream, the one the offset is
    measured on, is shifted; further audio streams and subtitles keep their timing.
    Streams whose codec ffmpeg does not know (e.g. iPhone "mebx" data) cannot be muxed
    and are dropped. ``src`` is never modified; ``dst`` appears only when complete and is
    not overwritten unless ``force``.

    The new audio stream starts at the file's zero, with silence up to where the original
    audio began. That keeps every sample's presentation time without an input offset
    (ffmpeg renormalises the piped input to start at zero, so ``-itsoffset`` on it is
    lost), and an AAC stream starting at zero has its 1024 encoder-priming samples trimmed
    by the mp4 edit list, so the decoded output lines up with the input to the sample.
    The decoded audio is held in memory: about 23 MB per minute of 48 kHz stereo.
    """
    if not math.isfinite(audio_delay_s):
        raise ValueError(f"audio_delay_s must be finite, not {audio_delay_s}")
    src, dst = Path(src), Path(dst)
    info = probe(src)
    require_video_and_audio(info)
    _check_destination(src, dst, force)
    rate, channels = info.sample_rate, _known_channels(info)
    audio = _decode_pcm(info, rate, channels)
    shift = round(audio_delay_s * rate)
    if abs(shift) >= len(audio):
        raise LipsyncError(
            f"A shift of {audio_delay_s:+.3f} s is longer than the audio of {src} "
            f"({len(audio) / rate:.3f} s)."
        )
    lead = round(info.audio_start_s * rate)
    shifted = _delayed(audio, lead + shift, lead + len(audio))

    kept = [s for s in info.streams if s.codec != "none" or s.index == info.audio_stream_index]
    audio_out = next(i for i, s in enumerate(kept) if s.index == info.audio_stream_index)
    maps: list[str] = []
    for out_index, stream in enumerate(kept):
        source = "1:a:0" if stream.index == info.audio_stream_index else f"0:{stream.index}"
        # Any per-stream -map_metadata turns off ffmpeg's default copy for all streams.
        maps += ["-map", source, f"-map_metadata:s:{out_index}", f"0:s:{stream.index}"]
    encoder = _audio_encoder(info.audio_codec, dst.suffix)
    with _atomic_output(dst) as tmp:
        result = _run_ffmpeg(
            [
                "-v", "error", "-i", str(src),
                "-f", "f32le", "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0",
                *maps, "-c", "copy", *_encoder_args(encoder, audio_out, channels),
                "-map_metadata", "0",
                str(tmp),
            ],
            stdin_data=shifted.tobytes(),
        )
        _stdout_or_raise(result, f"Could not write {dst} from {src}")
    return ShiftReport(
        src=src,
        dst=dst,
        requested_delay_s=audio_delay_s,
        shift_samples=shift,
        sample_rate=rate,
        channels=channels,
        audio_encoder=encoder,
    )
