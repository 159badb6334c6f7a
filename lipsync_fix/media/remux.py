"""Remuxing: a copy of a video with its audio rewritten, everything else bit for bit.

:func:`rewrite_audio` is the one function that writes a video with new audio: it decodes
every audio stream at its native rate, lets a caller's ``transform`` change the samples
(:func:`shift_audio` delays them; drift correction resamples them) and re-encodes them so
that sample ``k`` of what the transform returned plays exactly ``k / rate`` seconds after
the first video frame, in every container written. The video and the other streams are
copied, not re-encoded.

How exactness is kept (measured for each container by ``tests/test_media_exactness.py``):
the encoder's priming (AAC's 1024 samples, Opus's pre-skip) is compensated by the
container's own means: an edit list in MP4/MOV, the codec delay and timestamps of
Matroska/WebM, an audio start timestamp earlier than the video's in MPEG-TS. AVI has none
of these, so AVI gets PCM audio (lossless, no priming). Lossless outputs are read back
after writing and corrected once if the container moved them (AVI starts a video with
B-frames a frame or two after its audio).
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync_fix.errors import (
    LipsyncError,
    MediaError,
    OutputError,
    OutputExistsError,
    StorageError,
    UsageError,
)
from lipsync_fix.files import atomic_path
from lipsync_fix.media.decode import decode_pcm, delayed
from lipsync_fix.media.ffmpeg import (
    NO_SPACE_MARK,
    PathLike,
    ffmpeg_reason,
    input_args,
    run_ffmpeg,
)
from lipsync_fix.media.probe import MediaInfo, StreamInfo, probe, require_video_and_audio

AudioTransform = Callable[[np.ndarray, int], np.ndarray]
"""``transform(samples, sample_rate) -> new_samples``; see :func:`rewrite_audio`."""

_LOSSY_BITRATE_PER_CHANNEL = 96_000
_LOSSY_MAX_BITRATE = 384_000
_LOSSY_ENCODERS = frozenset({"aac", "libmp3lame", "libopus", "libvorbis"})
_LOSSLESS_ENCODERS = frozenset({"alac", "flac"})  # and every pcm_*
_ANNEXB_FILTERS = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}

#: Subtitle codecs made of text, which ffmpeg can convert from one text format to another.
_TEXT_SUBTITLES = frozenset({
    "subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text", "microdvd", "subviewer",
    "subviewer1", "sami", "realtext", "jacosub", "pjs", "mpl2", "vplayer", "stl", "ttml",
})


@dataclass(frozen=True)
class Container:
    """What lipsync-fix writes into one kind of output file."""

    muxer: str  # ffmpeg's muxer
    family: str  # files of one family can take each other's data streams
    subtitles: frozenset[str]  # subtitle codecs copied as they are
    text_subtitle_encoder: str | None  # what other text subtitles become (None: dropped)
    attachments: bool  # fonts and other attachments (Matroska only)
    cover_art: bool  # pictures stored as an "attached pic" video stream
    video_codecs: frozenset[str] | None = None  # None: any ffmpeg can mux (checked by it)


_MP4_LIKE = dict(family="mov", subtitles=frozenset({"mov_text"}),
                 text_subtitle_encoder="mov_text", attachments=False)
_MATROSKA_SUBTITLES = frozenset({"subrip", "ass", "ssa", "webvtt", "dvd_subtitle",
                                 "hdmv_pgs_subtitle", "dvb_subtitle"})

#: The containers written, by file suffix. Audio-only files and images are not among
#: them: the output is always a video with its picture copied.
CONTAINERS: dict[str, Container] = {
    # Cover art: ffmpeg's mov muxer drops it in .mov, its Matroska muxer turns it into a
    # one-frame video track; both are left out (with a note) rather than mangled.
    ".mp4": Container(muxer="mp4", cover_art=True, **_MP4_LIKE),
    ".m4v": Container(muxer="ipod", cover_art=True, **_MP4_LIKE),
    ".mov": Container(muxer="mov", cover_art=False, **_MP4_LIKE),
    ".mkv": Container(muxer="matroska", family="matroska", subtitles=_MATROSKA_SUBTITLES,
                      text_subtitle_encoder="srt", attachments=True, cover_art=False),
    ".webm": Container(muxer="webm", family="matroska", subtitles=frozenset({"webvtt"}),
                        text_subtitle_encoder="webvtt", attachments=False, cover_art=False,
                        video_codecs=frozenset({"vp8", "vp9", "av1"})),
    ".avi": Container(muxer="avi", family="avi", subtitles=frozenset({"xsub"}),
                       text_subtitle_encoder=None, attachments=False, cover_art=False),
    # ffmpeg writes other video codecs (VP9, AV1) into TS as unreadable private data.
    ".ts": Container(muxer="mpegts", family="mpegts",
                      subtitles=frozenset({"dvb_subtitle", "dvb_teletext"}),
                      text_subtitle_encoder=None, attachments=False, cover_art=False,
                      video_codecs=frozenset({"h264", "hevc", "vvc", "mpeg1video",
                                              "mpeg2video", "mpeg4", "vc1", "dirac", "cavs"})),
}

#: The family of each input format ffmpeg reports, for data streams (timecodes, KLV).
_INPUT_FAMILIES = {"mov,mp4,m4a,3gp,3g2,mj2": "mov", "matroska,webm": "matroska",
                   "avi": "avi", "mpegts": "mpegts"}


def output_suffixes() -> str:
    """The suffixes of the containers written, for messages: ".mp4, .m4v, ... or .ts"."""
    names = list(CONTAINERS)
    return ", ".join(names[:-1]) + " or " + names[-1]


def _audio_encoder(codec: str, suffix: str) -> str:
    """The encoder for a rewritten audio stream of codec ``codec`` in a ``suffix`` file.

    Lossless stays lossless and PCM stays PCM where the container takes it; otherwise the
    container's usual lossy codec. Each choice is one whose timing is kept exactly (the
    property ``tests/test_media_exactness.py`` measures).
    """
    pcm = codec.startswith("pcm_")
    lossless = pcm or codec in {"flac", "alac"}
    if suffix in {".mp4", ".m4v"}:
        return "alac" if lossless else "aac"
    if suffix == ".mov":
        return codec if pcm else "alac" if lossless else "aac"
    if suffix == ".mkv":
        if pcm or codec in {"flac", "alac"}:
            return codec
        return {"opus": "libopus", "vorbis": "libvorbis"}.get(codec, "aac")
    if suffix == ".webm":
        return "libvorbis" if codec == "vorbis" else "libopus"
    if suffix == ".avi":
        # AVI cannot say where a lossy codec's priming ends; PCM has none.
        return codec if codec in {"pcm_s16le", "pcm_u8", "pcm_s24le", "pcm_s32le"} else "pcm_s16le"
    return "aac"  # .ts


@dataclass(frozen=True)
class AudioStreamReport:
    """One audio stream of a rewritten file."""

    index: int  # ffmpeg's index of the stream in the input
    sample_rate: int
    channels: int
    encoder: str  # "copy" when the stream was copied unchanged
    samples: int  # samples written, from the first video frame on (0 when copied)


@dataclass(frozen=True)
class RewriteReport:
    """What :func:`rewrite_audio` wrote."""

    src: Path
    dst: Path
    audio: tuple[AudioStreamReport, ...]
    notes: tuple[str, ...]  # streams converted or left out, one sentence each


@dataclass(frozen=True)
class ShiftReport:
    """What :func:`shift_audio` wrote."""

    src: Path
    dst: Path
    requested_delay_s: float
    shift_samples: int  # positive: the sound now comes later (first audio stream)
    sample_rate: int
    channels: int
    audio_encoder: str
    audio_streams: int = 1  # how many audio streams were shifted
    notes: tuple[str, ...] = ()  # streams converted or left out (see RewriteReport)

    @property
    def applied_delay_s(self) -> float:
        """The delay actually applied, rounded to whole samples."""
        return self.shift_samples / self.sample_rate


def output_container(dst: PathLike) -> Container:
    """The container written for ``dst``; OutputError for a suffix that is not one."""
    suffix = Path(dst).suffix.lower()
    if suffix not in CONTAINERS:
        given = f"not {suffix}" if suffix else "and it has no suffix"
        raise OutputError(
            f"The output {dst} must be a video container: {output_suffixes()}, {given}."
        )
    return CONTAINERS[suffix]


def check_destination(src: PathLike, dst: PathLike, force: bool = False,
                      folder_made_later: bool = False) -> Container:
    """Refuse, before anything is decoded, an output that :func:`rewrite_audio` could not
    write: not a video container, the input itself, a folder, an existing file (unless
    ``force``), a missing folder (unless ``folder_made_later``: a batch makes an output's
    folder only when it writes the output). A command that scores first (``fix``) calls
    this (through :func:`check_rewrite`) before scoring, so a bad ``-o`` costs no minutes."""
    src, dst = Path(src), Path(dst)
    container = output_container(dst)
    if dst.resolve() == src.resolve() or (dst.exists() and src.exists() and dst.samefile(src)):
        raise MediaError(f"The output {dst} is the input file; write to a different file.")
    if dst.is_dir():
        raise MediaError(f"The output {dst} is a folder.")
    if dst.exists() and not force:
        raise OutputExistsError(f"{dst} already exists; use --force to overwrite it.")
    if not dst.parent.is_dir() and not folder_made_later:
        raise OutputError(f"The output folder {dst.parent} does not exist.")
    return container


FALLBACK_SUFFIX = ".mkv"
"""The container of a folder run's output for an input whose own container is not one
lipsync-fix writes (.flv, .wmv, .3gp...): Matroska holds nearly any codec."""


def output_suffix_for(input_suffix: str, container: str | None = None) -> str:
    """The suffix of the fixed copy of an input ending in ``input_suffix``: ``container``
    (``mkv``, ``.mp4``...) when one was chosen, else the input's own when it is a
    container written (:data:`CONTAINERS`), else :data:`FALLBACK_SUFFIX`. Decided from
    names alone, so a folder run knows every output before it measures anything."""
    if container is not None:
        chosen = "." + container.lower().lstrip(".")
        output_container(f"output{chosen}")
        return chosen
    own = input_suffix.lower()
    return input_suffix if own in CONTAINERS else FALLBACK_SUFFIX


def check_rewrite(src: PathLike, dst: PathLike, force: bool = False,
                  all_audio: bool = True, folder_made_later: bool = False) -> None:
    """Refuse, before anything is measured, a ``dst`` that :func:`rewrite_audio` would
    refuse for ``src`` after the work: the checks of :func:`check_destination`, and
    whether the container can hold ``src``'s streams (a .ts cannot hold VP9, a .webm
    only VP8/VP9/AV1). It is the first step of :func:`rewrite_audio` itself (nothing is
    decoded but the header), so the check before the work and the one at the end are one
    function and cannot disagree. What only the muxer knows (MP4 holds no Theora, VP8 or
    HuffYUV video) is found by a trial: the first fraction of a second muxed into a
    scratch file exactly as the fix will mux it (same streams, encoders and muxer)."""
    src, dst = Path(src), Path(dst)
    container, info, plan = _plan_rewrite(src, dst, force, all_audio, folder_made_later)
    _trial_mux(src, dst, info, plan, container)


def _plan_rewrite(src: Path, dst: Path, force: bool, all_audio: bool,
                  folder_made_later: bool = False) -> tuple[Container, MediaInfo, _Plan]:
    container = check_destination(src, dst, force, folder_made_later)
    info = probe(src)
    require_video_and_audio(info)
    return container, info, _plan(info, container, dst.suffix.lower(), all_audio)


@dataclass(frozen=True)
class _Plan:
    """How each input stream reaches the output."""

    kept: tuple[StreamInfo, ...]  # in output order
    rewritten: tuple[StreamInfo, ...]  # audio streams decoded, transformed, re-encoded
    codecs: dict[int, str]  # input index -> encoder ("copy" where absent)
    notes: tuple[str, ...]


def _plan(info: MediaInfo, container: Container, suffix: str, all_audio: bool) -> _Plan:
    """Decide, per stream, copy / re-encode / convert / leave out; refuse what cannot be."""
    kept: list[StreamInfo] = []
    rewritten: list[StreamInfo] = []
    codecs: dict[int, str] = {}
    notes: list[str] = []
    family = _INPUT_FAMILIES.get(info.format_name)

    def leave_out(stream: StreamInfo, why: str) -> None:
        notes.append(f"Left out {stream.kind} stream #{stream.index} ({stream.codec}): {why}.")

    for stream in info.streams:
        if stream.codec == "none":
            leave_out(stream, "ffmpeg does not know its codec, so it cannot be copied")
        elif stream.kind == "audio":
            if stream.index == info.audio_stream_index or all_audio:
                if stream.sample_rate is None or stream.channels is None:
                    raise MediaError(
                        f"Audio stream #{stream.index} of {info.path} cannot be decoded, "
                        "so it cannot be rewritten."
                    )
                rewritten.append(stream)
                codecs[stream.index] = _audio_encoder(stream.codec, suffix)
            kept.append(stream)
        elif stream.kind == "video" and stream.attached_pic:
            if container.cover_art:
                kept.append(stream)
            else:
                leave_out(stream, f"cover art is not written into {suffix} files")
        elif stream.kind == "video":
            allowed = container.video_codecs
            if allowed is not None and stream.codec not in allowed:
                raise OutputError(
                    f"A {suffix} file can only hold {', '.join(sorted(allowed))} video and "
                    f"{info.path} has {stream.codec}, which is copied, not re-encoded; "
                    "write a .mkv or .mp4 instead."
                )
            kept.append(stream)
        elif stream.kind == "subtitle":
            if stream.codec in container.subtitles:
                kept.append(stream)
            elif stream.codec in _TEXT_SUBTITLES and container.text_subtitle_encoder:
                kept.append(stream)
                codecs[stream.index] = container.text_subtitle_encoder
                notes.append(f"Converted subtitle stream #{stream.index} from {stream.codec} "
                             f"to {container.text_subtitle_encoder} for {suffix}.")
            else:
                leave_out(stream, f"{suffix} files cannot hold {stream.codec} subtitles")
        elif stream.kind == "attachment":
            if container.attachments:
                kept.append(stream)
            else:
                leave_out(stream, f"{suffix} files cannot hold attachments")
        elif family == container.family:
            kept.append(stream)
        else:
            leave_out(stream, f"{stream.kind} streams are only copied between files of one kind")
    return _Plan(tuple(kept), tuple(rewritten), codecs, tuple(notes))


TRIAL_SECONDS = 0.2
"""How much of the input :func:`check_rewrite`'s trial mux writes."""


def _trial_mux(src: Path, dst: Path, info: MediaInfo, plan: _Plan, container: Container
               ) -> None:
    maps: list[str] = []
    for out, stream in enumerate(plan.kept):
        maps += ["-map", f"0:{stream.index}"]
        if container.muxer == "avi" and stream.codec in _ANNEXB_FILTERS:
            maps += [f"-bsf:{out}", _ANNEXB_FILTERS[stream.codec]]
    genpts = ["-fflags", "+genpts"] if info.format_name == "avi" else []
    with tempfile.TemporaryDirectory(prefix="lipsync-check-") as scratch:
        trial = Path(scratch) / f"trial{dst.suffix.lower()}"
        result = run_ffmpeg(["-v", "error", *genpts, *input_args(src), *maps, "-c", "copy",
                             *_codec_args(plan), "-t", str(TRIAL_SECONDS),
                             "-f", container.muxer, "-y", str(trial)])
    if result.returncode != 0:
        log = result.stderr.decode("utf-8", "replace")
        if NO_SPACE_MARK in log:
            raise StorageError(f"cannot check {dst} in a scratch folder: no space left on "
                               "device")
        raise OutputError(_write_failure(src, dst, log, plan.kept, container.muxer))


def _copied_video_start(info: MediaInfo) -> float:
    """When the first video frame of ``info`` is shown once its packets are copied.

    That is the decoded first frame's time, except in AVI, which stores no presentation
    times: ffmpeg then derives them (``+genpts``) for the copy, one frame or so off from
    the decoder's guess, and what counts is where the copied frames will be.
    """
    start = info.stream(info.video_stream_index).start_s or 0.0
    if info.format_name != "avi":
        return start
    result = run_ffmpeg([
        "-v", "error", "-fflags", "+genpts", "-copyts", *input_args(info.path),
        "-map", f"0:{info.video_stream_index}", "-c", "copy", "-frames:v", "16",
        "-f", "framecrc", "pipe:1",
    ])
    listing = result.stdout.decode("utf-8", "replace")
    base = re.search(r"^#tb 0: (\d+)/(\d+)", listing, re.M)
    # Packet lines: "stream, dts, pts, duration, size, checksum"; B-frames come in decode
    # order, so the first frame shown is the smallest pts.
    pts = [int(m.group(1)) for m in re.finditer(r"^0, *-?\d+, *(-?\d+),", listing, re.M)]
    if result.returncode != 0 or base is None or not pts:
        return start
    return min(pts) * int(base.group(1)) / int(base.group(2))


def _on_video_timeline(info: MediaInfo, stream: StreamInfo, video_start_s: float) -> np.ndarray:
    """The stream's samples with sample 0 at the first video frame (as decode_audio)."""
    rate = stream.sample_rate
    native = decode_pcm(info, rate, stream.channels, stream.index)
    lead = round((stream.start_s - video_start_s) * rate)
    length = lead + len(native)
    if length <= 0:
        raise MediaError(f"Audio stream #{stream.index} of {info.path} ends before the "
                         "first video frame.")
    return delayed(native, lead, length)


def _fitted(new: np.ndarray, length: int, channels: int, stream: StreamInfo) -> np.ndarray:
    """The transform's result as ``length`` float32 samples: cut, or padded with silence."""
    new = np.asarray(new, dtype=np.float32)
    if new.ndim == 1 and channels == 1:
        new = new.reshape(-1, 1)
    if new.ndim != 2 or new.shape[1] != channels:
        raise ValueError(f"the transform returned shape {new.shape} for audio stream "
                         f"#{stream.index}, which has {channels} channel(s): expected (n, "
                         f"{channels})")
    if not np.isfinite(new).all():
        raise ValueError(f"the transform returned NaN or infinite samples for audio stream "
                         f"#{stream.index}")
    return delayed(new, 0, length)


def _input_offset(video_start_s: float) -> str:
    """``-itsoffset`` for ``src`` that puts its first video frame exactly at zero.

    ffmpeg takes it in microseconds and rounds it to each stream's time base; a video
    time base (1/90000, 1/12800...) has ticks far coarser than a microsecond, so the
    first frame lands on zero exactly. The new audio is encoded from raw samples starting
    at zero: ffmpeg drops any ``-itsoffset`` on an input that is decoded and re-encoded,
    which is why the offset is applied to the copied streams instead.
    """
    return f"{-round(video_start_s * 1_000_000) / 1_000_000:.6f}"


def _dispositions(stream: StreamInfo) -> str:
    return "+".join(sorted(stream.dispositions)) or "0"


def _encoder_args(encoder: str, output_index: int, channels: int) -> list[str]:
    args = [f"-c:{output_index}", encoder]
    if encoder in _LOSSY_ENCODERS:
        bitrate = min(_LOSSY_BITRATE_PER_CHANNEL * channels, _LOSSY_MAX_BITRATE)
        args += [f"-b:{output_index}", str(bitrate)]
    return args


def _write_failure(
    src: Path, dst: Path, log: str, kept: tuple[StreamInfo, ...], muxer: str
) -> str:
    """One sentence for a failed write: the muxer's own complaint (the root cause; the
    log's last line is only ffmpeg's summary), naming the stream it refused."""
    match = re.search(r"Could not find tag for codec (\S+) in stream #(\d+)", log)
    if match and int(match.group(2)) < len(kept):
        stream = kept[int(match.group(2))]
        return (f"Could not write {dst}: a {dst.suffix} file cannot hold the {match.group(1)} "
                f"{stream.kind} stream #{stream.index} of {src}, which is copied as it is; "
                "write a .mkv instead, which holds nearly any codec.")
    complaint = re.search(rf"^\[{re.escape(muxer)} @ [^\]]*\] *(.+)$", log, re.M)
    reason = complaint.group(1).strip().rstrip(".") if complaint else ffmpeg_reason(log)
    return f"Could not write {dst} from {src}: {reason}."


def rewrite_audio(
    src: PathLike,
    dst: PathLike,
    transform: AudioTransform,
    *,
    force: bool = False,
    all_audio: bool = True,
) -> RewriteReport:
    """Write ``dst``: ``src`` with every audio stream replaced by ``transform`` of itself.

    **The transform** is called once per audio stream as ``transform(samples, rate)``:
    ``samples`` is a writable float32 array ``(n, channels)`` of the stream decoded at its
    native ``rate`` and channel count, on the *video timeline*: sample ``k`` plays ``k /
    rate`` seconds after the first video frame, exactly as :func:`decode_audio` returns
    it (a stream that starts after the first frame is padded with silence in front; sound
    before the first frame is not passed and not kept). It returns the new samples on the
    same timeline, at the same rate, as ``(m, channels)`` (or ``(m,)`` for mono), of any
    length ``m``: the stream keeps its length ``n``, so a longer result is cut and a
    shorter one padded with silence at the end. So ``lambda a, r: a`` rewrites the audio
    unchanged, a delay is ``delayed(a, round(d * r), len(a))`` and a resampling for drift
    returns ``m != n`` samples that are cut or padded back to ``n``. A result of another
    channel count or with NaN/inf raises ValueError.

    **The output** is exact to the sample: each new stream starts on the first video frame
    and decodes (with :func:`decode_audio`) to the samples the transform returned, whatever
    the container: the encoder's priming is compensated (see the module docstring). The
    audio is re-encoded (AAC, Opus or PCM... as the container allows: ``_audio_encoder``),
    its metadata and dispositions (``default``, ``dub``...) kept. Every other stream is
    copied bit for bit, the video never re-encoded; text subtitles the container cannot
    hold are converted to one it can (SRT to mov_text for MP4), and streams it cannot hold
    at all are left out; both are listed in the report's ``notes``. With ``all_audio``
    false only the first audio stream (the one sync is measured on) is rewritten and the
    others are copied unchanged.

    ``dst`` must be a video container (``CONTAINERS``: .mp4 .m4v .mov .mkv .webm .avi .ts),
    is checked before anything is decoded, appears only when complete and is not
    overwritten unless ``force``; ``src`` is never modified. The decoded audio of one
    stream at a time is held in memory (about 23 MB per minute of 48 kHz stereo) and
    written to a scratch folder for ffmpeg.
    """
    src, dst = Path(src), Path(dst)
    container, info, plan = _plan_rewrite(src, dst, force, all_audio)
    shown_start = info.stream(info.video_stream_index).start_s or 0.0
    video_start = _copied_video_start(info)
    reports: list[AudioStreamReport] = []
    with tempfile.TemporaryDirectory(prefix="lipsync-remux-") as scratch:
        raws: dict[int, Path] = {}
        for stream in plan.rewritten:
            audio = _on_video_timeline(info, stream, shown_start)
            new = _fitted(transform(audio, stream.sample_rate), len(audio), stream.channels,
                          stream)
            del audio
            raws[stream.index] = Path(scratch) / f"audio{stream.index}.f32"
            new.astype("<f4", copy=False).tofile(raws[stream.index])
            reports.append(AudioStreamReport(stream.index, stream.sample_rate, stream.channels,
                                             plan.codecs[stream.index], len(new)))
        for stream in plan.kept:
            if stream.kind == "audio" and stream.index not in raws:
                reports.append(AudioStreamReport(stream.index, stream.sample_rate or 0,
                                                 stream.channels or 0, "copy", 0))
        with atomic_path(dst) as tmp:
            corrections: dict[int, int] = {}
            for attempt in range(2):
                _mux(src, dst, tmp, info, plan, container, raws, video_start, corrections)
                misplaced = _misplaced_lossless_audio(tmp, plan, corrections)
                if not misplaced:
                    break
                if attempt:
                    raise MediaError(f"Could not place the audio of {dst} on the sample: "
                                     f"the {dst.suffix} file moves it by {misplaced} samples.")
                corrections = misplaced
    return RewriteReport(src=src, dst=dst, audio=tuple(reports), notes=plan.notes)


def _mux(
    src: Path,
    dst: Path,
    tmp: Path,
    info: MediaInfo,
    plan: _Plan,
    container: Container,
    raws: dict[int, Path],
    video_start: float,
    corrections: dict[int, int],
) -> None:
    """Run ffmpeg once: ``src``'s kept streams and the raw audio files into ``tmp``.

    ``corrections`` maps an audio stream to samples by which a previous attempt's output
    started it late (positive) or early (negative): early is made up for by silence put
    in front (AVI's audio always starts at the file's zero, while a video with B-frames
    starts a few frames later), late by dropping as many samples.
    """
    raw_inputs: list[str] = []
    audio_input: dict[int, int] = {}
    for stream in plan.rewritten:
        raw = raws[stream.index]
        correction = corrections.get(stream.index, 0)
        if correction:
            frame = 4 * stream.channels
            moved = raw.with_suffix(".moved.f32")
            with moved.open("wb") as out:
                data = raw.read_bytes()
                out.write(bytes(frame * -correction) + data if correction < 0
                          else data[frame * correction:])
            raw = moved
        layout = (["-ch_layout", stream.channel_layout] if stream.channel_layout
                  else ["-ac", str(stream.channels)])
        raw_inputs += ["-f", "f32le", "-ar", str(stream.sample_rate), *layout, "-i", str(raw)]
        audio_input[stream.index] = len(audio_input) + 1
    maps: list[str] = []
    for out, stream in enumerate(plan.kept):
        source = (f"{audio_input[stream.index]}:a:0" if stream.index in audio_input
                  else f"0:{stream.index}")
        # Any per-stream -map_metadata turns off ffmpeg's default copy for all streams.
        maps += ["-map", source, f"-map_metadata:s:{out}", f"0:s:{stream.index}",
                 f"-disposition:{out}", _dispositions(stream)]
        if container.muxer == "avi" and stream.codec in _ANNEXB_FILTERS:
            # AVI carries H.264/HEVC with start codes, not MP4/Matroska's length prefixes.
            maps += [f"-bsf:{out}", _ANNEXB_FILTERS[stream.codec]]
    # AVI stores no presentation times; other containers need them (B-frames reorder).
    genpts = ["-fflags", "+genpts"] if info.format_name == "avi" else []
    result = run_ffmpeg([
        "-v", "error", "-copyts", *genpts, "-itsoffset", _input_offset(video_start),
        *input_args(src),
        *raw_inputs, *maps, "-c", "copy", *_codec_args(plan), "-map_metadata", "0",
        "-f", container.muxer, "-y", str(tmp),
    ])
    log = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0 or "partial file" in log:
        if NO_SPACE_MARK in log:
            raise StorageError(f"cannot write {dst}: no space left on device")
        raise MediaError(_write_failure(src, dst, log, plan.kept, container.muxer))


def _misplaced_lossless_audio(
    path: Path, plan: _Plan, corrections: dict[int, int]
) -> dict[int, int]:
    """Samples by which each losslessly coded new stream of ``path`` starts off the first
    video frame (as :func:`decode_audio` aligns it); empty when all are exact.

    A stream corrected by ``corrections`` (silence put in front, or samples dropped) is
    meant to start that many samples off: its content is then on the first frame. Only
    lossless streams can be checked this way: a lossy stream
    starts with encoder priming, which the container's own means remove (the tests
    measure that per container).
    """
    written = probe(path)
    if written.video_stream_index is None or len(written.streams) < len(plan.kept):
        raise MediaError(f"The {path.suffix} file written does not read back with the streams "
                         "it was given; ffmpeg cannot write this combination.")
    video_start = written.stream(written.video_stream_index).start_s or 0.0
    misplaced: dict[int, int] = {}
    for out, stream in enumerate(plan.kept):
        encoder = plan.codecs.get(stream.index, "")
        lossless = encoder in _LOSSLESS_ENCODERS or encoder.startswith("pcm_")
        if stream.kind != "audio" or not lossless:
            continue
        out_stream = written.streams[out]
        lead = round(((out_stream.start_s or 0.0) - video_start) * stream.sample_rate)
        if lead != corrections.get(stream.index, 0):
            misplaced[stream.index] = lead
    return misplaced


def _codec_args(plan: _Plan) -> list[str]:
    """Per-stream encoders after the blanket ``-c copy`` (later options win)."""
    args: list[str] = []
    for out, stream in enumerate(plan.kept):
        encoder = plan.codecs.get(stream.index)
        if encoder is not None:
            args += _encoder_args(encoder, out, stream.channels or 1)
    return args


def shift_audio(
    src: PathLike,
    dst: PathLike,
    audio_delay_s: float,
    *,
    force: bool = False,
    all_audio: bool = True,
) -> ShiftReport:
    """Write ``dst``: ``src`` with its audio delayed by ``audio_delay_s`` seconds.

    Positive delays make the sound come later, negative ones earlier; silence comes in and
    samples fall off the end, so every stream keeps its length. It is
    :func:`rewrite_audio` with a delay: exact to one sample at each stream's own rate, in
    every container written; every audio stream is shifted (a dub or commentary track
    stays in sync with the picture) unless ``all_audio`` is false; the video and the
    other streams are copied. A delay that is not a finite number raises UsageError, one
    at least as long as the first audio stream LipsyncError.
    """
    if not math.isfinite(audio_delay_s):
        raise UsageError(f"The audio delay must be a finite number of seconds, not "
                         f"{audio_delay_s}.")
    src, dst = Path(src), Path(dst)

    def delay(samples: np.ndarray, rate: int) -> np.ndarray:
        shift = round(audio_delay_s * rate)
        if abs(shift) >= len(samples):
            raise LipsyncError(
                f"A shift of {audio_delay_s:+.3f} s is longer than the audio of {src} "
                f"({len(samples) / rate:.3f} s)."
            )
        return delayed(samples, shift, len(samples))

    done = rewrite_audio(src, dst, delay, force=force, all_audio=all_audio)
    first = done.audio[0]
    return ShiftReport(
        src=src,
        dst=dst,
        requested_delay_s=audio_delay_s,
        shift_samples=round(audio_delay_s * first.sample_rate),
        sample_rate=first.sample_rate,
        channels=first.channels,
        audio_encoder=first.encoder,
        audio_streams=sum(1 for a in done.audio if a.encoder != "copy"),
        notes=done.notes,
    )
