"""Writing files so that a reader never sees a half-written one: the one atomic-write helper.

Every output of lipsync-fix (videos, audio, checkpoints, reports, plots, clip folders'
files) is written to a hidden temporary name beside its destination and renamed into place
only when complete, so an interrupted run (Ctrl-C, ``kill -9``, a full disk) never leaves a
truncated file under the real name. Temporary names share one pattern
(:data:`PARTIAL_MARK`) so a later run can recognise and remove what a killed one left.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lipsync_fix.errors import OutputError

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
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Let ``write`` fill a temporary file beside ``path``, then rename it into place."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)
