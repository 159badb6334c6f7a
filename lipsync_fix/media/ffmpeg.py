"""Finding and running the ``ffmpeg`` binary, and turning its log into one-line errors.

Users who only ``pip install`` have no ffprobe, just the static ffmpeg shipped in the
``imageio-ffmpeg`` wheel, so everything in :mod:`lipsync_fix.media` runs ``ffmpeg`` and
parses what it prints.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

try:  # a declared dependency, but an ffmpeg on PATH or LIPSYNC_FIX_FFMPEG also does
    import imageio_ffmpeg
except ImportError:  # pragma: no cover - only on machines that lack the wheel
    imageio_ffmpeg = None

from lipsync_fix.errors import LipsyncError, MediaError, StorageError

PathLike = str | os.PathLike[str]

#: ffmpeg's demuxer message when a packet lies beyond the end of the file: the file was cut
#: short. ffmpeg still exits with status 0, so it must be looked for in the log.
_TRUNCATION_MARK = "partial file"
NO_SPACE_MARK = "No space left on device"  # strerror(ENOSPC) in ffmpeg's log

#: The demuxers a user's file may be opened with: containers and elementary streams of
#: audio and video, and single images (so that a photo is reported as "a still image").
#: Everything else is refused, above all the demuxers that make ffmpeg open *other* files
#: or URLs named inside the input (ffconcat and HLS/DASH playlists, image sequences, SDP,
#: RTSP) and those that turn text into video (``tty``): a text file named ``.mp4`` must
#: never make lipsync-fix process a neighbouring file.
INPUT_FORMATS = (
    "mov", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "asf", "ogg", "wtv", "mxf",
    "nut", "dv", "gxf", "rm", "ivf", "obu", "h264", "hevc", "vvc", "av1", "m4v", "mpegvideo",
    "vc1", "mjpeg", "yuv4mpegpipe", "wav", "w64", "mp3", "aac", "loas", "ac3", "eac3", "dts",
    "truehd", "mlp", "flac", "aiff", "caf", "wv", "ape", "tta", "tak", "amr", "au", "mpc",
    "mpc8", "gif", "apng", "webp_anim", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe",
    "tiff_pipe",
)

#: ffmpeg's message when the probed demuxer is not in ``INPUT_FORMATS``.
_NOT_WHITELISTED_MARK = "Format not on whitelist"

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
    missing = LipsyncError(
        "No ffmpeg binary was found: install imageio-ffmpeg or set LIPSYNC_FIX_FFMPEG.")
    if imageio_ffmpeg is None:
        raise missing
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise missing from exc


def input_args(path: PathLike) -> list[str]:
    """The ffmpeg arguments that open a user's file: the one place inputs are opened.

    ``file:`` stops a name such as ``concat:a.mp4|b.mp4`` or ``http:...`` (or one starting
    with ``-``) from being read as a protocol or an option; the protocol whitelist keeps
    any nested open to local files; the format whitelist (:data:`INPUT_FORMATS`) refuses
    playlists, image sequences and text, which would otherwise read files other than
    ``path``. Our own intermediate files (raw audio written by :mod:`remux`) are opened
    without these restrictions, since they are raw formats named explicitly with ``-f``.
    """
    return [
        "-protocol_whitelist", "file",
        "-format_whitelist", ",".join(INPUT_FORMATS),
        "-i", f"file:{os.path.abspath(path)}",
    ]


def refused_format(path: PathLike, log: str) -> str | None:
    """When ffmpeg refused ``path`` for its format, say what it took the file for.

    The demuxer's name is only logged at debug level, so it is asked for again (cheaply:
    the file is probed, never read further) only on this failure path.
    """
    if _NOT_WHITELISTED_MARK not in log:
        return None
    debug = run_ffmpeg(["-v", "debug", *input_args(path)]).stderr.decode("utf-8", "replace")
    match = re.search(r"Format (\S+) probed with size", debug)
    return match.group(1) if match else "unknown"


def ffmpeg_command(args: list[str]) -> list[str]:
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]


def run_ffmpeg(args: list[str], stdin_data: bytes | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg to completion, capturing its output (stdin fed from ``stdin_data``)."""
    command = ffmpeg_command(args)
    try:
        return subprocess.run(command, input=stdin_data, capture_output=True, check=False)
    except OSError as exc:
        raise MediaError(f"Cannot run ffmpeg at {command[0]}: {exc.strerror}.") from exc


def ffmpeg_reason(stderr: str) -> str:
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


def check_ffmpeg(returncode: int, stderr: str, failure: str) -> None:
    """Raise MediaError(``failure: cause``) when ffmpeg failed or read a truncated file,
    and StorageError when it failed because the disk is full (every later write would).

    Other errors in the log (a damaged frame or two) are tolerated, as players do.
    """
    if returncode != 0 and NO_SPACE_MARK in stderr:
        raise StorageError(f"{failure}: no space left on device.")
    if returncode != 0 or _TRUNCATION_MARK in stderr:
        raise MediaError(f"{failure}: {ffmpeg_reason(stderr)}.")


def stdout_or_raise(result: subprocess.CompletedProcess, failure: str) -> bytes:
    """Return ffmpeg's stdout after checking that the run succeeded."""
    check_ffmpeg(result.returncode, result.stderr.decode("utf-8", "replace"), failure)
    return result.stdout


def exact_rate(value: float) -> str:
    """Format a frame rate exactly for ffmpeg (29.97002997… becomes 30000/1001)."""
    return str(Fraction(value).limit_denominator(1001))
