"""Files: writing them so that a reader never sees a half-written one, telling whether an
input is still the file a result was measured on, and naming the machine's refusals.

**Atomic writes.** Every output of lipsync-fix (videos, audio, checkpoints, reports,
plots, clip folders' files) is written to a hidden temporary name beside its destination
and renamed into place only when complete, so an interrupted run (Ctrl-C, ``kill -9``, a
full disk) never leaves a truncated file under the real name. Temporary names share one
pattern (:data:`PARTIAL_MARK`) so a later run can recognise and remove what a killed one
left.

**Fingerprints.** A result (a journal or report row) records the :class:`Fingerprint` of
its input: size, mtime, and a SHA-256 over the size and the first and last MiB. A row
whose input now has another size or hash is stale; a new mtime alone (a copy, a
``touch``) is not, and an edit that keeps the mtime (``cp -p``, ``touch -r``) is still
caught. Reading 2 MiB costs milliseconds where re-measuring costs minutes, and the file
header and index (where an edit or a re-encode shows) are at the two ends.

**The machine's refusals.** A full disk, a quota or a read-only file system
(:data:`STOPPING_ERRNOS`) makes every later write fail too: such an ``OSError`` becomes a
:class:`~lipsync_fix.errors.StorageError` naming the path and the cause, which stops a
batch cleanly instead of failing input after input.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lipsync_fix.errors import InputChangedError, MediaError, OutputError, StorageError

STOPPING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
"""Errors of a write that every later write would hit too: they stop a batch."""

FINGERPRINT_BLOCK = 1 << 20
"""A fingerprint hashes this much at each end of the file (1 MiB)."""

PARTIAL_MARK = ".partial"
"""Part of every temporary name: ``.<stem>.<random>.partial<suffix>``."""
_TOKEN_BYTES = 4  # the random part: 8 hex digits


def partial_name(dst: Path) -> Path:
    """A fresh temporary name beside ``dst`` that keeps its suffix (ffmpeg picks the
    container from it)."""
    token = secrets.token_hex(_TOKEN_BYTES)
    return dst.with_name(f".{dst.stem}.{token}{PARTIAL_MARK}{dst.suffix}")


def stale_partials(dst: str | os.PathLike[str]) -> list[Path]:
    """The temporary files :func:`atomic_path` made for ``dst`` that were never renamed
    (a killed run's leftovers). Matched exactly, so the temporary file of another output
    in the same folder (``a.b.mp4`` beside ``a.mp4``) is never taken for one of these."""
    dst = Path(dst)
    if not dst.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(dst.stem)}\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}"
                         rf"{re.escape(PARTIAL_MARK)}{re.escape(dst.suffix)}")
    return sorted(p for p in dst.parent.iterdir() if pattern.fullmatch(p.name))


def is_partial(path: Path) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_path` (left by a killed run)."""
    return path.name.startswith(".") and PARTIAL_MARK in path.name


@contextmanager
def atomic_path(dst: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dst`` that replaces ``dst`` only on success.

    The temporary file is not created here: whoever writes it creates it, with the user's
    umask (so outputs get normal permissions, unlike ``mkstemp``'s 0600). It is removed
    whatever happens. The destination's folder must exist: creating folders is the
    caller's decision, made the same way for every output.
    """
    dst = Path(dst)
    if not dst.parent.is_dir():
        raise OutputError(f"The output folder {dst.parent} does not exist.")
    if dst.is_dir():
        raise OutputError(f"The output {dst} is a folder.")
    tmp = partial_name(dst)
    try:
        yield tmp
        os.replace(tmp, dst)
    except OSError as exc:
        if exc.errno in STOPPING_ERRNOS:
            raise StorageError(f"cannot write {dst}: {cause(exc)}") from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Let ``write`` fill a temporary file beside ``path``, then rename it into place."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


# --------------------------------------------------------------------------- refusals


def cause(exc: OSError) -> str:
    """The reason of an ``OSError`` in words, lower case (``No space left on device``)."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def stops_the_run(exc: BaseException) -> bool:
    """Whether ``exc`` is a refusal of the machine that every later write would hit too."""
    return isinstance(exc, StorageError) or (isinstance(exc, OSError)
                                             and exc.errno in STOPPING_ERRNOS)


def os_failure(exc: OSError, path: str | os.PathLike[str] | None = None,
               doing: str = "use") -> MediaError | StorageError:
    """The one line for an ``OSError``: ``cannot <doing> <path>: <cause>``, as a
    :class:`StorageError` (which stops a batch) for a full disk or a read-only file
    system, and as a failure of that input otherwise (an unreadable file)."""
    where = exc.filename if exc.filename is not None else path
    message = f"cannot {doing} {where}: {cause(exc)}" if where is not None else \
        f"cannot {doing} a file: {cause(exc)}"
    if exc.errno in STOPPING_ERRNOS:
        return StorageError(message)
    return MediaError(message)


# --------------------------------------------------------------------------- fingerprints


@dataclass(frozen=True)
class Fingerprint:
    """What identifies an input's content cheaply (see the module docstring)."""

    size: int
    mtime: float
    sha256: str  # over the size and the first and last FINGERPRINT_BLOCK bytes

    def same_content(self, other: Fingerprint) -> bool:
        """Whether both describe one content: size and hash equal (mtime may differ)."""
        return self.size == other.size and self.sha256 == other.sha256

    def to_json(self) -> dict:
        return {"size": self.size, "mtime": self.mtime, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: object) -> Fingerprint | None:
        """The fingerprint a row holds, or None when it holds none that is well formed
        (such a row cannot be trusted, so it is treated as stale)."""
        if not isinstance(data, Mapping):
            return None
        size, mtime, digest = data.get("size"), data.get("mtime"), data.get("sha256")
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0
                and isinstance(mtime, (int, float)) and not isinstance(mtime, bool)
                and math.isfinite(mtime) and isinstance(digest, str)
                and re.fullmatch(r"[0-9a-f]{64}", digest)):
            return None
        return cls(size, float(mtime), digest)


def fingerprint(path: str | os.PathLike[str]) -> Fingerprint:
    """The :class:`Fingerprint` of the file at ``path``, read through one open file (so
    size, mtime and bytes come from the same file even if the name is replaced).

    Raises :class:`~lipsync_fix.errors.MediaError` (one line naming the path and the
    cause) when the file cannot be read, and for a folder or a missing file."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise MediaError(f"{path} is not a file")
            digest = hashlib.sha256(str(info.st_size).encode())
            digest.update(f.read(FINGERPRINT_BLOCK))
            if info.st_size > FINGERPRINT_BLOCK:
                f.seek(max(FINGERPRINT_BLOCK, info.st_size - FINGERPRINT_BLOCK))
                digest.update(f.read(FINGERPRINT_BLOCK))
    except FileNotFoundError:
        raise MediaError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise MediaError(f"{path} is a folder, not a video file") from None
    except OSError as exc:
        raise os_failure(exc, path, "read") from exc
    return Fingerprint(info.st_size, info.st_mtime, digest.hexdigest())


def describe_change(before: Fingerprint, after: Fingerprint) -> str:
    """Words for how an input changed: its size, or its content at the same size."""
    if before.size != after.size:
        return f"its size changed from {before.size} to {after.size} bytes"
    return "its content changed"


@contextmanager
def unchanged_while(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None
                    ) -> Iterator[Fingerprint]:
    """Make ``dst`` from ``src`` inside the block; if ``src`` changed meanwhile (its
    fingerprint differs at the end), ``dst`` is removed and :class:`InputChangedError`
    raised: an output made of two versions of an input, or of one that is gone, is wrong."""
    before = fingerprint(src)
    yield before
    after = fingerprint(src)
    if not before.same_content(after):
        if dst is not None:
            Path(dst).unlink(missing_ok=True)
        raise InputChangedError(f"{src} changed while it was processed "
                                f"({describe_change(before, after)}); nothing was written")


__all__ = [
    "FINGERPRINT_BLOCK", "PARTIAL_MARK", "STOPPING_ERRNOS", "Fingerprint", "atomic_path",
    "cause", "describe_change", "fingerprint", "is_partial", "os_failure", "partial_name",
    "stale_partials", "stops_the_run", "unchanged_while", "write_atomically",
]
