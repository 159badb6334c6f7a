"""Storage of model files: where they live, fetching them, and knowing they are right.

This module knows about files, not about which model to choose or how entries are named
(that is :mod:`lipsync_fix.models.registry`, which drives it with registry entries):

* **Where:** the cache (``$LIPSYNC_FIX_CACHE`` or ``~/.cache/lipsync-fix``), torch hub's
  checkpoint folder, or the package (:func:`target_path`).
* **Fetching:** one URL (:func:`fetch_url`) or one file of a Google Drive folder
  (:func:`fetch_from_drive`, with ``gdown``), always into a hidden temporary file beside
  the target that is renamed into place only when it checks out; a location that fails
  raises :class:`LocationError` so the caller can try the next one.
* **Hashes:** the sha256 of a file, remembered against its size, mtime, ctime and inode
  (``.verified.json`` in the cache) so a 55 MB model is not re-hashed on every run while
  any change to it is caught (:func:`file_sha256`).
* **Layouts** (``assets/layouts/*.json``, and VocaLiST's golden manifest): the keys,
  shapes and dtypes of a family's state dict. A downloaded file whose publisher gives no
  sha256 is checked against its layout before it is renamed into place, so a wrong file
  (an HTML error page, another model, a truncated archive) never enters the cache.
* **Trust records**: for such a file, the sha256 and size measured when it was first
  downloaded (trust on first use), kept beside it as ``<file>.trust.json``. Every later
  use and ``lipsync-fix models verify`` compare the file with that record, so a file
  that changes afterwards is caught as a published hash would catch it. A ``sha256``
  written into the registry later wins over the record.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gdown
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress

from lipsync_fix.errors import CheckpointError
from lipsync_fix.files import atomic_path, write_atomically
from lipsync_fix.models.checkpoint import layout_problems, read_checkpoint

PACKAGE = Path(__file__).resolve().parents[1]
ASSETS = PACKAGE / "assets"
LAYOUTS = ASSETS / "layouts"
"""State-dict manifests of model files checked by layout (``{"entries": [key, shape,
dtype]}``), shipped with the package."""

TRUST_SUFFIX = ".trust.json"

VERIFIED_FILE = ".verified.json"
"""In the cache folder: the sha256 of each verified file, keyed by path and stat."""

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0
USER_AGENT = "lipsync-fix (model download)"

Progress = Callable[[int, int | None], None]
"""``progress(bytes_done, bytes_total_or_None)`` during a download."""


def cache_dir() -> Path:
    """Where downloaded models go: ``$LIPSYNC_FIX_CACHE`` or ``~/.cache/lipsync-fix``."""
    return Path(os.environ.get("LIPSYNC_FIX_CACHE") or Path.home() / ".cache" / "lipsync-fix")


def urls_of(entry: Mapping[str, Any]) -> list[str]:
    """The locations to download an entry from, in the order to try them."""
    return list(entry.get("urls") or [])


def target_path(entry: Mapping[str, Any], root: Path | None = None) -> Path:
    """Where an entry's file is (or will be): bundled in the package, torch hub's
    checkpoint folder, or the cache (``root`` overrides the cache folder)."""
    if entry.get("bundled"):
        return PACKAGE / entry["bundled"]
    if entry.get("folder") == "torch-hub":
        return Path(torch.hub.get_dir()) / "checkpoints" / entry["filename"]
    return (root or cache_dir()) / entry["filename"]


def shown(path: Path) -> str:
    """A path as a user would type it (``~`` for the home folder)."""
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if home not in ("", "/") and text.startswith(home + os.sep) \
        else text


def sha256_of(path: Path, block: int = CHUNK_BYTES) -> str:
    """The sha256 of a file, read in blocks (never held in memory whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


# --- remembered verification -------------------------------------------------------------

def stat_key(path: Path) -> list[int]:
    """What changes whenever the file's bytes may have changed: size, mtime and ctime (the
    kernel sets ctime on every write and on every ``utime``, so restoring the mtime after
    editing a file does not hide the edit), and the inode (a replaced file)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def records_file() -> Path:
    return cache_dir() / VERIFIED_FILE


def read_records() -> dict[str, dict]:
    try:
        records = json.loads(records_file().read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def remember(path: Path, digest: str, key: list[int]) -> None:
    """Record a file's hash against ``key``, its stat taken before it was hashed (so a
    file that changed while being hashed is not recorded). Only where the cache folder
    already exists: remembering is an optimisation, not a reason to create folders."""
    folder = cache_dir()
    if not folder.is_dir():
        return
    records = {p: r for p, r in read_records().items() if Path(p).is_file()}
    try:
        if stat_key(path) != key:
            return
        records[str(path.resolve())] = {"stat": key, "sha256": digest}
        text = json.dumps(records, indent=1, sort_keys=True)
        write_atomically(records_file(), lambda tmp: tmp.write_text(text))
    except OSError:
        pass  # a read-only cache only means hashing again next time


def file_sha256(path: Path, recheck: bool = False) -> str:
    """The sha256 of ``path``, taken from the record when the file is unchanged since it
    was last hashed (``recheck`` always hashes, as ``lipsync-fix models verify`` does)."""
    path = Path(path)
    key = stat_key(path)
    if not recheck:
        record = read_records().get(str(path.resolve()))
        if isinstance(record, dict) and record.get("stat") == key:
            return str(record.get("sha256"))
    digest = sha256_of(path)
    remember(path, digest, key)
    return digest


# --- downloading ----------------------------------------------------------------------

class LocationError(Exception):
    """One location that did not deliver the file (the next one is tried)."""

    def __init__(self, reason: str, *, no_connection: bool = False) -> None:
        super().__init__(reason)
        self.no_connection = no_connection


@contextmanager
def download_bar(name: str, quiet: bool) -> Iterator[Progress | None]:
    """A rich progress bar on stderr, or None when quiet or stderr is not a terminal."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with RichProgress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"downloading {name}", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def fetch_url(url: str, target: Path, expected: str | None, layout: Path | None,
           progress: Progress | None) -> str:
    """Stream one location into a temporary file beside ``target`` and rename it into place
    only when complete and the right file: of the ``expected`` sha256, or, where none is
    known, of the state-dict ``layout``. Returns the file's sha256; raises
    :class:`LocationError` otherwise."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    host = urllib.parse.urlsplit(url).netloc or url
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, \
                    open(tmp, "wb") as out:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                done = 0
                if progress:
                    progress(0, total)
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            if total is not None and done < total:
                raise LocationError(f"{host} broke off after {done} of {total} bytes")
            check_fetched(tmp, digest.hexdigest(), expected, layout, f"the file from {host}")
    except urllib.error.HTTPError as exc:
        raise LocationError(f"HTTP {exc.code} from {host}") from exc
    except urllib.error.URLError as exc:
        raise LocationError(f"no connection to {host} ({exc.reason})", no_connection=True) from exc
    except TimeoutError as exc:
        raise LocationError(f"{host} timed out") from exc
    except (http.client.HTTPException, OSError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise LocationError(f"the download from {host} failed ({reason})") from exc
    return digest.hexdigest()


def check_fetched(tmp: Path, digest: str, expected: str | None, layout: Path | None,
                   what: str) -> None:
    """Refuse a downloaded temporary file (so it is never renamed into place) whose sha256
    is not ``expected`` or, with no hash to compare with, whose state dict does not have
    the ``layout``."""
    if expected is not None:
        if digest != expected:
            raise LocationError(f"{what} did not match its sha256")
        return
    if layout is not None:
        problem = layout_problem(tmp, layout)
        if problem:
            raise LocationError(f"{what} is not the expected model file ({problem})")


# --- Google Drive ---------------------------------------------------------------------

DRIVE_FOLDER_URL = "https://drive.google.com/drive/folders/{}"


def fetch_from_drive(entry: Mapping[str, Any], target: Path, expected: str | None,
                      layout: Path | None, quiet: bool) -> str:
    """Fetch an entry's file from its publisher's Google Drive folder with ``gdown``: list
    the folder, pick the file by its name, download it into a temporary file beside
    ``target`` (gdown's progress bar on stderr), check it and rename it into place.

    Drive answers with HTML pages (virus-scan confirmation, quota exceeded, sign-in)
    rather than errors; gdown is the maintained library that reads them. Any refusal
    becomes a :class:`LocationError` (then the user gets today's manual steps)."""
    folder = str(entry["drive_folder"])
    try:
        listing = gdown.download_folder(id=folder, skip_download=True, quiet=True) or []
    except Exception as exc:  # gdown raises requests', its own and parsing errors
        raise drive_error("listing the Drive folder", exc) from exc
    if not listing:
        raise LocationError("Google Drive did not list the folder (moved, private or "
                             "over its quota)")
    wanted = entry["filename"]
    match = [f for f in listing if Path(str(f.path)).name == wanted]
    if not match:
        raise LocationError(f"the Drive folder holds no {wanted}")
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as tmp:
            got = gdown.download(id=match[0].id, output=str(tmp), quiet=quiet)
            if got is None or not tmp.is_file():
                raise LocationError("Google Drive refused the download (quota or "
                                     "confirmation page)")
            with open(tmp, "rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    digest.update(chunk)
            check_fetched(tmp, digest.hexdigest(), expected, layout, "the file from Drive")
    except LocationError:
        raise
    except Exception as exc:
        raise drive_error("downloading from Drive", exc) from exc
    return digest.hexdigest()


def drive_error(doing: str, exc: Exception) -> LocationError:
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    offline = "connection" in type(exc).__name__.lower() or "resolve" in reason.lower()
    return LocationError(f"{doing} failed ({reason[:160]})", no_connection=offline)


# --- layouts and trust records --------------------------------------------------------


def layout_path(entry: dict[str, Any]) -> Path | None:
    """The manifest an entry's file is checked against (``"layout"``, relative to the
    package's assets), or None."""
    name = entry.get("layout")
    return ASSETS / name if isinstance(name, str) else None


def layout_problem(path: Path, manifest: Path) -> str | None:
    """Why the checkpoint at ``path`` does not have the state-dict layout of ``manifest``
    (keys, shapes, dtypes), or None when it has. The file is read with
    ``weights_only=True``: checking a file never runs code from it."""
    try:
        state = read_checkpoint(path)["state_dict"]
    except CheckpointError as exc:
        return str(exc)
    entries = json.loads(manifest.read_text())["entries"]
    wanted = {e["key"]: (tuple(e["shape"]), e["dtype"]) for e in entries}
    return "; ".join(layout_problems(state, wanted)) or None


@dataclass(frozen=True)
class TrustRecord:
    """What was measured of a file on first use: its sha256 and size, where it came
    from, when (UTC, ISO 8601)."""

    sha256: str
    size_bytes: int
    source: str
    recorded: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrustRecord:
        return cls(str(d["sha256"]), int(d["size_bytes"]), str(d.get("source", "")),
                   str(d.get("recorded", "")))


def trust_path(target: Path) -> Path:
    """Where the trust record of ``target`` is kept: beside it."""
    return target.with_name(target.name + TRUST_SUFFIX)


def read_trust(target: Path) -> TrustRecord | None:
    """The trust record of ``target``, or None (none, or unreadable: then the file is
    checked by layout again and a new record made)."""
    try:
        return TrustRecord.from_dict(json.loads(trust_path(target).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_trust(target: Path, sha256: str, size_bytes: int, source: str) -> TrustRecord:
    """Write the trust record of ``target`` (atomically)."""
    record = TrustRecord(sha256, size_bytes, source,
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    text = json.dumps(record.to_dict(), indent=1, sort_keys=True) + "\n"
    write_atomically(trust_path(target), lambda tmp: tmp.write_text(text))
    return record
