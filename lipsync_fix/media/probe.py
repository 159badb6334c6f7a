"""What a media file holds: container, streams, frame rate, size, sample rate, start times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lipsync_fix.errors import MediaError
from lipsync_fix.media.ffmpeg import PathLike, ffmpeg_reason, run_ffmpeg

# File suffixes treated as videos when a folder is given as input.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg",
                            ".ts", ".flv", ".wmv", ".3gp"})


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
    container_start_s: float = 0.0
    """The container's start time: where ffmpeg's timeline of the file (on which the
    ``*_start_s`` fields are given) sits among the file's own timestamps, which a decode
    with ``-copyts`` keeps."""



_INPUT_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_DURATION_RE = re.compile(r"^\s*Duration: (?:(\d+):(\d\d):(\d\d(?:\.\d+)?)|N/A)", re.M)
_START_RE = re.compile(r"^\s*Duration: [^\n]*?, start: (-?\d+(?:\.\d+)?)", re.M)
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
    banner_log = run_ffmpeg(["-i", str(path)]).stderr.decode("utf-8", "replace")
    banner = _input_banner(banner_log)
    if banner is None:
        raise MediaError(
            f"{path} is not a readable media file; it may be corrupt or truncated "
            f"({ffmpeg_reason(banner_log)})."
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
        container_start_s=_container_start(banner),
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
    result = run_ffmpeg(
        ["-i", str(path), "-filter_complex", ";".join(graphs), *outputs, "-f", "null", "-"]
    )
    log = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0:
        raise MediaError(f"{path} cannot be decoded ({ffmpeg_reason(log)}).")
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


def _container_start(banner: str) -> float:
    match = _START_RE.search(banner)
    return float(match.group(1)) if match else 0.0


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
