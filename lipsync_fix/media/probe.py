"""What a media file holds: container, streams, frame rate, size, sample rate, start times.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from lipsync_fix.errors import MediaError
from lipsync_fix.media.ffmpeg import (
    PathLike,
    ffmpeg_reason,
    input_args,
    refused_format,
    run_ffmpeg,
)

# File suffixes treated as videos when a folder is given as input.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg",
                            ".ts", ".flv", ".wmv", ".3gp"})


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a media file as listed by ffmpeg.

    ``start_s``, ``sample_rate`` and ``channels`` come from decoding the stream's first
    frame; they are ``None`` for streams :func:`probe` does not decode (subtitles, data,
    cover art, video streams after the first). ``start_s`` is the stream's first
    presentation time exactly as stored in the file (ffmpeg's ``-copyts`` timeline), so
    starts of different streams can be compared with each other, and only with each other.
    """

    index: int
    kind: str  # "video", "audio", "subtitle", "data" or "attachment"
    codec: str  # ffmpeg's codec name; "none" when ffmpeg does not know the codec
    attached_pic: bool  # cover art stored as a video stream, not a real video
    dispositions: frozenset[str] = field(default_factory=frozenset)  # "default", "dub", ...
    start_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    channel_layout: str | None = None  # ffmpeg's layout name, e.g. "stereo" or "5.1(side)"


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

    def stream(self, index: int) -> StreamInfo:
        """The stream with ffmpeg index ``index`` (KeyError if there is none)."""
        for stream in self.streams:
            if stream.index == index:
                return stream
        raise KeyError(f"{self.path} has no stream #{index}")

    @property
    def audio_streams(self) -> tuple[StreamInfo, ...]:
        """Every audio stream, in file order (the first is the one sync is measured on)."""
        return tuple(s for s in self.streams if s.kind == "audio")



_INPUT_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_DURATION_RE = re.compile(r"^\s*Duration: (?:(\d+):(\d\d):(\d\d(?:\.\d+)?)|N/A)", re.M)
# "  Stream #0:1[0x2](eng): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, ..."
_STREAM_RE = re.compile(r"^\s*Stream #0:(\d+)(?:\[[^\]]*\]|\([^)]*\))*: (\w+): (.*)$", re.M)
# The "(avc1 / 0x31637661)" tag looks like a size too; a real size follows ", " or starts.
_SIZE_RE = re.compile(r"(?:^|, )(\d{1,5})x(\d{1,5})(?=[\s,]|$)")
_FPS_RE = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr|tbn)\b")
_SAMPLE_RATE_RE = re.compile(r"(\d+) Hz(?:, ([^,]+))?")
# Dispositions as the banner prints them at the end of a stream line, e.g. "(default) (dub)";
# the option -disposition spells them with underscores.
_DISPOSITION_RE = re.compile(
    r"\((default|dub|original|comment|lyrics|karaoke|forced|hearing impaired|visual impaired|"
    r"clean effects|attached pic|timed thumbnails|non-diegetic|captions|descriptions|"
    r"metadata|dependent|still image|multilayer)\)"
)
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "downmix": 2, "quad": 4, "hexagonal": 6,
                    "octagonal": 8, "hexadecagonal": 16}


@dataclass(frozen=True)
class _FirstFrames:
    """What decoding a stream's first frames showed (parsed from a framecrc listing)."""

    frames: int
    start_s: float | None
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    channel_layout: str | None = None


def probe(path: PathLike) -> MediaInfo:
    """Describe a media file, raising MediaError when it cannot be used at all.

    Runs ffmpeg twice: its input banner gives the container and streams, and decoding the
    first frames (two of the first video stream, one of every audio stream) gives what
    the banner does not say or says imprecisely: the decoded frame size after rotation,
    the channel count, the exact start of each stream, and whether the video is a single
    still frame. Decoding those frames also rejects files whose header parses but whose
    codecs ffmpeg cannot decode. A file whose tail is cut off but whose index is intact
    is only detected when it is read in full (by the decode functions). Only media files
    are opened (see :func:`lipsync_fix.media.ffmpeg.input_args`): a playlist or a text
    file is refused as "not a media file" without anything it names being read.
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path} does not exist.")
    if not path.is_file():
        raise MediaError(f"{path} is not a file.")
    # Without an output ffmpeg prints the banner and exits with an error; that is expected.
    banner_log = run_ffmpeg(input_args(path)).stderr.decode("utf-8", "replace")
    banner = _input_banner(banner_log)
    if banner is None:
        refused = refused_format(path, banner_log)
        if refused is not None:
            raise MediaError(
                f"{path} is not a media file (ffmpeg would read it as '{refused}'; "
                "playlists, image sequences and text are not accepted)."
            )
        if _is_text(path):
            raise MediaError(f"{path} is a text file, not a media file.")
        raise MediaError(
            f"{path} is not a readable media file; it may be corrupt or truncated "
            f"({ffmpeg_reason(banner_log)})."
        )
    streams = _parse_streams(banner)
    video = next((s for s in streams if s.kind == "video" and not s.attached_pic), None)
    audios = [s for s in streams if s.kind == "audio"]
    if video is None and not audios:
        raise MediaError(f"{path} contains no audio or video stream.")
    decoded = [s for s in [video, *audios] if s is not None and s.codec != "none"]
    first = _first_frames(path, decoded)

    if video is not None and not first.get(video.index, _FirstFrames(0, None)).frames:
        raise MediaError(f"{path} has a video stream without a single decodable frame.")
    audio = audios[0] if audios else None
    if audio is not None and not first.get(audio.index, _FirstFrames(0, None)).frames:
        raise MediaError(f"{path} has an audio stream without any decodable sound.")
    streams = tuple(_with_first_frames(s, first.get(s.index)) for s in streams)
    if audio is not None:
        audio = next(s for s in streams if s.index == audio.index)
    starts = [f.start_s for f in first.values() if f.start_s is not None]
    zero = min(starts, default=0.0)

    video_line = _stream_line(banner, video)
    audio_line = _stream_line(banner, audio)
    video_first = first.get(video.index) if video else None
    width, height = _frame_size(video_first, video_line)
    banner_rate, layout = _sample_rate_and_layout(audio_line)
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
        sample_rate=(audio.sample_rate or banner_rate) if audio else None,
        channels=(audio.channels or _layout_channels(layout)) if audio else None,
        is_still_image=video is not None and video_first.frames < 2,
        video_stream_index=video.index if video else None,
        audio_stream_index=audio.index if audio else None,
        video_start_s=_relative(video_first, zero),
        audio_start_s=_relative(first.get(audio.index) if audio else None, zero),
        streams=streams,
    )


def _is_text(path: Path) -> bool:
    """Whether the file starts like text (UTF-8, no control bytes but line breaks and
    tabs): a README or a subtitle file given as the video deserves to be told so, rather
    than hear that it may be corrupt."""
    with path.open("rb") as file:
        head = file.read(4096)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the 4096th byte
            return False
        text = head[:exc.start].decode("utf-8")
    return bool(text.strip()) and all(ch.isprintable() or ch in "\n\r\t\f" for ch in text)


def _first_frames(path: Path, streams: list[StreamInfo]) -> dict[int, _FirstFrames]:
    """Decode the first frames of ``streams`` (2 of a video, 1 of an audio stream).

    Each stream goes to its own ``framecrc`` listing in a scratch folder, read after
    ffmpeg has exited: what is parsed is a file per stream written by one muxer, never
    a log that several threads print into at once (parsing ``showinfo`` lines from the
    log made MPEG-TS inputs fail now and then as "a still image" when lines interleaved).
    ``-copyts`` keeps the timestamps as stored, so the starts of all streams are on one
    timeline whichever streams are decoded (without it, ffmpeg's zero for MPEG-TS inputs
    depends on which streams a command uses).
    """
    with tempfile.TemporaryDirectory(prefix="lipsync-probe-") as scratch:
        outputs: list[str] = []
        for stream in streams:
            listing = str(Path(scratch) / f"{stream.index}.crc")
            if stream.kind == "video":
                outputs += ["-map", f"0:{stream.index}", "-frames:v", "2",
                            "-fps_mode", "passthrough", "-enc_time_base:v", "demux",
                            "-c:v", "wrapped_avframe", "-f", "framecrc", listing]
            else:
                outputs += ["-map", f"0:{stream.index}", "-frames:a", "1",
                            "-c:a", "pcm_s16le", "-f", "framecrc", listing]
        result = run_ffmpeg(["-v", "error", "-copyts", *input_args(path), *outputs])
        if result.returncode != 0:
            log = result.stderr.decode("utf-8", "replace")
            raise MediaError(f"{path} cannot be decoded ({ffmpeg_reason(log)}).")
        return {
            stream.index: _parse_listing(Path(scratch) / f"{stream.index}.crc")
            for stream in streams
        }


def _parse_listing(listing: Path) -> _FirstFrames:
    """Parse a one-stream ``framecrc`` listing: header lines, then one line per frame
    ``stream, dts, pts, duration, size, checksum``."""
    if not listing.is_file():
        return _FirstFrames(0, None)
    header: dict[str, str] = {}
    rows: list[list[str]] = []
    for line in listing.read_text().splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            header[key.split()[0]] = value.strip()
        elif line.strip():
            rows.append([cell.strip() for cell in line.split(",")])
    if not rows:
        return _FirstFrames(0, None)
    time_base = Fraction(header.get("tb", "1/1"))
    start = float(int(rows[0][2]) * time_base)
    width = height = rate = channels = None
    if "dimensions" in header:
        width, height = (int(v) for v in header["dimensions"].split("x"))
    if "sample_rate" in header:
        rate = int(header["sample_rate"])
        samples, size = int(rows[0][3]), int(rows[0][4])
        # 16-bit PCM: bytes = samples x channels x 2, whatever the layout is called.
        channels = size // (2 * samples) if samples > 0 else None
    return _FirstFrames(len(rows), start, width, height, rate, channels,
                        header.get("channel_layout_name"))


def _with_first_frames(stream: StreamInfo, first: _FirstFrames | None) -> StreamInfo:
    if first is None or not first.frames:
        return stream
    return StreamInfo(
        index=stream.index, kind=stream.kind, codec=stream.codec,
        attached_pic=stream.attached_pic, dispositions=stream.dispositions,
        start_s=first.start_s, sample_rate=first.sample_rate, channels=first.channels,
        channel_layout=first.channel_layout,
    )


def _relative(first: _FirstFrames | None, zero: float) -> float:
    """A stream's start on the timeline whose zero is the earliest decoded stream."""
    if first is None or first.start_s is None:
        return 0.0
    return first.start_s - zero


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
            dispositions=frozenset(
                name.replace(" ", "_").replace("-", "_")
                for name in _DISPOSITION_RE.findall(m.group(3))
            ),
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

    An AVI whose stream time base is finer than its frames (1/600 s, say) reports that
    time base as its "fps" ("600 fps, 25 tbr, 600 tbn"): a rate equal to the time base's
    is the container's tick, not the frames', and the real base rate is "tbr". The banner
    rounds to two decimals, so 30000/1001 prints as "29.97" (and 24000/1001 as "23.98");
    such NTSC rates are snapped back to their exact value.
    """
    rates = {
        kind: float(value) * (1000 if thousands else 1)
        for value, thousands, kind in _FPS_RE.findall(video_line)
    }
    fps = rates.get("fps") or rates.get("tbr")
    if fps and rates.get("tbr") and fps == rates.get("tbn") and rates["tbr"] < fps:
        fps = rates["tbr"]
    if not fps:
        return None
    ntsc_base = round(fps * 1.001)
    if fps != int(fps) and abs(ntsc_base / 1.001 - fps) < 0.006:
        return ntsc_base * 1000 / 1001
    return fps


def _frame_size(first: _FirstFrames | None, video_line: str) -> tuple[int | None, int | None]:
    """Size of the decoded frames (after rotation), else the banner's stored size."""
    if first is not None and first.width and first.height:
        return first.width, first.height
    match = _SIZE_RE.search(video_line)
    if match:
        return int(match.group(1)), int(match.group(2))
    return None, None


def _sample_rate_and_layout(audio_line: str) -> tuple[int | None, str]:
    match = _SAMPLE_RATE_RE.search(audio_line)
    if match is None:
        return None, ""
    return int(match.group(1)), (match.group(2) or "").strip()


def _layout_channels(layout: str) -> int | None:
    """Channel count from the banner's layout name (when no frame could say)."""
    name = layout.split("(")[0].strip()
    if name in _LAYOUT_CHANNELS:
        return _LAYOUT_CHANNELS[name]
    if re.fullmatch(r"\d+ channels", name):
        return int(name.split()[0])
    if re.fullmatch(r"\d+(\.\d+)+", name):  # "5.1" is 6 channels, "7.1.4" is 12
        return sum(int(part) for part in name.split("."))
    return None


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
