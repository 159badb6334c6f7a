"""Remuxing: a copy of a video with its audio moved in time, everything else bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lipsync_fix.errors import LipsyncError, MediaError, OutputExistsError
from lipsync_fix.files import atomic_path
from lipsync_fix.media.decode import decode_pcm, delayed, known_channels
from lipsync_fix.media.ffmpeg import PathLike, run_ffmpeg, stdout_or_raise
from lipsync_fix.media.probe import probe, require_video_and_audio

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
    rate, channels = info.sample_rate, known_channels(info)
    audio = decode_pcm(info, rate, channels)
    shift = round(audio_delay_s * rate)
    if abs(shift) >= len(audio):
        raise LipsyncError(
            f"A shift of {audio_delay_s:+.3f} s is longer than the audio of {src} "
            f"({len(audio) / rate:.3f} s)."
        )
    lead = round(info.audio_start_s * rate)
    shifted = delayed(audio, lead + shift, lead + len(audio))

    kept = [s for s in info.streams if s.codec != "none" or s.index == info.audio_stream_index]
    audio_out = next(i for i, s in enumerate(kept) if s.index == info.audio_stream_index)
    maps: list[str] = []
    for out_index, stream in enumerate(kept):
        source = "1:a:0" if stream.index == info.audio_stream_index else f"0:{stream.index}"
        # Any per-stream -map_metadata turns off ffmpeg's default copy for all streams.
        maps += ["-map", source, f"-map_metadata:s:{out_index}", f"0:s:{stream.index}"]
    encoder = _audio_encoder(info.audio_codec, dst.suffix)
    with atomic_path(dst) as tmp:
        result = run_ffmpeg(
            [
                "-v", "error", "-i", str(src),
                "-f", "f32le", "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0",
                *maps, "-c", "copy", *_encoder_args(encoder, audio_out, channels),
                "-map_metadata", "0",
                str(tmp),
            ],
            stdin_data=shifted.tobytes(),
        )
        stdout_or_raise(result, f"Could not write {dst} from {src}")
    return ShiftReport(
        src=src,
        dst=dst,
        requested_delay_s=audio_delay_s,
        shift_samples=shift,
        sample_rate=rate,
        channels=channels,
        audio_encoder=encoder,
    )
