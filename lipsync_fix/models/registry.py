"""Known model files: names, downloads on first use, verification, and the default model.

The registry (``models/registry.json``, shipped in the package as
``lipsync_fix/assets/registry.json``; ``$LIPSYNC_FIX_REGISTRY`` points at another file)
maps a name to what a user needs to know before trusting a file: its family, size,
licence note, source and model card, and where a direct link exists, the ``urls`` to
try in order (the original first, then mirrors) and the ``sha256`` the file must have.

Files live in the cache (``$LIPSYNC_FIX_CACHE`` or ``~/.cache/lipsync-fix``), except
those another library looks for elsewhere (``"folder": "torch-hub"``: torch hub's
``checkpoints`` folder, where face-alignment finds the S3FD weights) and those bundled
inside the package (``"bundled": "assets/<file>"``, so the demo runs offline).

Why it works the way it does:

* A download streams into a hidden temporary file beside its target, is hashed while it
  streams, and is renamed into place only when the hash fits
  (:func:`lipsync_fix.files.atomic_path`); an interrupted or wrong download, Ctrl-C
  included, leaves nothing, and the file gets the user's normal permissions.
* When one location fails (down, 404, a truncated or wrong file) the next is tried, and
  when all fail the error is one line that says what to do offline.
* A file is verified before every use, but the hash is remembered against the file's size,
  mtime, ctime and inode (``.verified.json`` in the cache), so a 55 MB model is not re-hashed
  on every run while any change to it (even one that restores the mtime) is caught.
* Entries whose publisher offers no direct link (the VocaLiST authors use a Google Drive
  folder) resolve only from a file the user put in the cache or passed by path; the error
  and ``lipsync-fix models`` give the exact steps.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from torch import nn

from lipsync_fix.errors import CheckpointError
from lipsync_fix.files import atomic_path, write_atomically
from lipsync_fix.models.checkpoint import model_from_checkpoint, read_checkpoint

PACKAGE = Path(__file__).resolve().parents[1]
ASSETS = PACKAGE / "assets"
REGISTRY_FILE = ASSETS / "registry.json"
VERIFIED_FILE = ".verified.json"
"""In the cache folder: the sha256 of each verified file, keyed by path and stat."""

MODEL_KIND = "model"
"""The default ``kind`` of an entry: something :func:`load_model` builds. Other kinds (the
S3FD ``face-detector`` weights) are downloaded and verified here but loaded elsewhere."""

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0
USER_AGENT = "lipsync-fix (model download)"
_SHA256 = re.compile(r"[0-9a-f]{64}")

Progress = Callable[[int, int | None], None]
"""``progress(bytes_done, bytes_total_or_None)`` during a download."""

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def cache_dir() -> Path:
    """Where downloaded models go: ``$LIPSYNC_FIX_CACHE`` or ``~/.cache/lipsync-fix``."""
    return Path(os.environ.get("LIPSYNC_FIX_CACHE") or Path.home() / ".cache" / "lipsync-fix")


def load_registry(path: str | Path | None = None) -> dict[str, dict]:
    """Registry entries by name; ``$LIPSYNC_FIX_REGISTRY`` points at another file.

    A malformed entry is refused here, once, rather than failing later halfway through
    a download.
    """
    path = Path(path or os.environ.get("LIPSYNC_FIX_REGISTRY") or REGISTRY_FILE)
    try:
        registry = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the model registry {path}: {exc}") from exc
    if not isinstance(registry, dict):
        raise CheckpointError(f"the model registry {path} is not a JSON object of entries")
    for name, entry in registry.items():
        problem = _entry_problem(entry)
        if problem:
            raise CheckpointError(f"entry {name!r} of the model registry {path} {problem}")
    return registry


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
        return "has no filename"
    sha = entry.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        return "has a sha256 that is not 64 lower-case hex digits"
    urls = entry.get("urls", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        return "has urls that are not a list of strings"
    if urls and sha is None:
        return "has urls but no sha256 (a download could not be checked)"
    return None


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

def _stat_key(path: Path) -> list[int]:
    """What changes whenever the file's bytes may have changed: size, mtime and ctime (the
    kernel sets ctime on every write and on every ``utime``, so restoring the mtime after
    editing a file does not hide the edit), and the inode (a replaced file)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _records_file() -> Path:
    return cache_dir() / VERIFIED_FILE


def _read_records() -> dict[str, dict]:
    try:
        records = json.loads(_records_file().read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _remember(path: Path, digest: str, key: list[int]) -> None:
    """Record a file's hash against ``key``, its stat taken before it was hashed (so a
    file that changed while being hashed is not recorded). Only where the cache folder
    already exists: remembering is an optimisation, not a reason to create folders."""
    folder = cache_dir()
    if not folder.is_dir():
        return
    records = {p: r for p, r in _read_records().items() if Path(p).is_file()}
    try:
        if _stat_key(path) != key:
            return
        records[str(path.resolve())] = {"stat": key, "sha256": digest}
        text = json.dumps(records, indent=1, sort_keys=True)
        write_atomically(_records_file(), lambda tmp: tmp.write_text(text))
    except OSError:
        pass  # a read-only cache only means hashing again next time


def file_sha256(path: Path, recheck: bool = False) -> str:
    """The sha256 of ``path``, taken from the record when the file is unchanged since it
    was last hashed (``recheck`` always hashes, as ``lipsync-fix models verify`` does)."""
    path = Path(path)
    key = _stat_key(path)
    if not recheck:
        record = _read_records().get(str(path.resolve()))
        if isinstance(record, dict) and record.get("stat") == key:
            return str(record.get("sha256"))
    digest = sha256_of(path)
    _remember(path, digest, key)
    return digest


# --- status and instructions --------------------------------------------------------------

@dataclass(frozen=True)
class FileStatus:
    """Whether an entry's file is on disk and whether it is the published file.

    ``verified`` is None when the file is absent, or present but with no published sha256
    to compare with (the VocaLiST weights)."""

    name: str
    path: Path
    present: bool
    verified: bool | None
    sha256: str | None


def check_file(
    name: str, registry: dict[str, dict] | None = None, root: Path | None = None,
    recheck: bool = False,
) -> FileStatus:
    """The :class:`FileStatus` of a registry entry (hashing only when needed)."""
    entry = get_entry(name, registry)
    path = target_path(entry, root)
    if not path.is_file():
        return FileStatus(name, path, False, None, None)
    expected = entry.get("sha256")
    if expected is None and not recheck:
        return FileStatus(name, path, True, None, None)
    digest = file_sha256(path, recheck)
    return FileStatus(name, path, True, None if expected is None else digest == expected, digest)


def get_entry(name: str, registry: dict[str, dict] | None = None) -> dict:
    """The registry entry called ``name``, or a one-line error listing the known names."""
    registry = load_registry() if registry is None else registry
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise CheckpointError(f"unknown checkpoint {name!r}; known names: {known}, or a path")
    return registry[name]


def how_to_get(name: str, registry: dict[str, dict] | None = None, root: Path | None = None
               ) -> str:
    """One sentence: how a user obtains this entry's file."""
    entry = get_entry(name, registry)
    target = target_path(entry, root)
    if entry.get("bundled"):
        return "bundled with lipsync-fix (reinstall lipsync-fix to restore it)"
    if urls_of(entry):
        automatic = entry.get("kind", MODEL_KIND) == MODEL_KIND
        return f"run lipsync-fix models download {name}" + \
            (" (or let the first use download it)" if automatic else "")
    source = entry.get("source", "its publisher")
    if "drive.google.com" in source:  # a folder page, not a file link: say what to click
        manual = f"open {source} in a browser, download {entry['filename']}"
    else:
        manual = f"download {entry['filename']} from {source}"
    manual += f" and put it at {shown(target)}"
    if entry.get("kind", MODEL_KIND) == MODEL_KIND:
        manual += " (or pass --checkpoint PATH)"
    return manual


# --- downloading ----------------------------------------------------------------------

class _LocationError(Exception):
    """One location that did not deliver the file (the next one is tried)."""

    def __init__(self, reason: str, *, no_connection: bool = False) -> None:
        super().__init__(reason)
        self.no_connection = no_connection


@contextmanager
def _download_bar(name: str, quiet: bool) -> Iterator[Progress | None]:
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


def _fetch(url: str, target: Path, expected: str, progress: Progress | None) -> None:
    """Stream one location into a temporary file beside ``target`` and rename it into place
    only when complete and of the expected sha256; raise :class:`_LocationError` otherwise."""
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
                raise _LocationError(f"{host} broke off after {done} of {total} bytes")
            if digest.hexdigest() != expected:
                raise _LocationError(f"the file from {host} did not match its sha256")
    except urllib.error.HTTPError as exc:
        raise _LocationError(f"HTTP {exc.code} from {host}") from exc
    except urllib.error.URLError as exc:
        raise _LocationError(f"no connection to {host} ({exc.reason})", no_connection=True) from exc
    except TimeoutError as exc:
        raise _LocationError(f"{host} timed out") from exc
    except (http.client.HTTPException, OSError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise _LocationError(f"the download from {host} failed ({reason})") from exc


def _download(name: str, entry: Mapping[str, Any], target: Path, progress: Progress | None,
              quiet: bool, prefix: str = "") -> Path:
    """Try each location in order; the first complete file with the right hash wins."""
    urls = urls_of(entry)
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the folder {target.parent} for {name}: "
                              f"{exc.strerror or exc}") from exc
    failures: list[_LocationError] = []
    with _download_bar(name, quiet) as bar:
        for url in urls:
            try:
                _fetch(url, target, entry["sha256"], progress or bar)
            except _LocationError as failed:
                failures.append(failed)
                continue
            _remember(target, entry["sha256"], _stat_key(target))
            return target
    for folder in made:  # a failed download leaves no empty cache folder behind
        try:
            folder.rmdir()
        except OSError:
            break
    if all(f.no_connection for f in failures):
        why = "no network"
    else:
        why = "; ".join(dict.fromkeys(str(f) for f in failures))
    tried = f"tried {len(urls)} location{'s' if len(urls) != 1 else ''}"
    instead = ("pass --checkpoint PATH or put it in" if entry.get("kind", MODEL_KIND) == MODEL_KIND
               else "put it in")
    raise CheckpointError(f"{prefix}cannot download {name}: {why} ({tried}); download it "
                          f"elsewhere and {instead} {shown(target)}")


def download_model(
    name: str,
    registry: dict[str, dict] | None = None,
    root: Path | None = None,
    progress: Progress | None = None,
    quiet: bool = False,
) -> Path:
    """The verified local file of registry entry ``name``, downloaded if it is missing.

    A file already there is used if it verifies; one that does not is downloaded again
    (whisper does the same) and replaced only by a good copy. ``progress`` replaces the
    progress bar (which is shown on stderr when it is a terminal and not ``quiet``).
    """
    registry = load_registry() if registry is None else registry
    entry = get_entry(name, registry)
    target = target_path(entry, root)
    expected = entry.get("sha256")
    prefix = ""
    if target.is_dir():
        raise CheckpointError(f"{shown(target)} should be the file of {name}, but it is a "
                              "folder; move it out of the way")
    if target.is_file():
        if expected is None or file_sha256(target) == expected:
            return target
        bad = f"{shown(target)} does not match the sha256 of {name}"
        if not urls_of(entry):
            raise CheckpointError(f"{bad}; {how_to_get(name, registry, root)}")
        if not quiet:
            _err.print(f"warning: {bad}; downloading it again", markup=False)
        prefix = f"{bad}, and "
    elif entry.get("bundled"):
        raise CheckpointError(f"the bundled file of {name} is missing at {target}; "
                              "reinstall lipsync-fix")
    if not urls_of(entry):
        raise CheckpointError(f"{name} has no direct download; {how_to_get(name, registry, root)}")
    return _download(name, entry, target, progress, quiet, prefix)


def resolve_checkpoint(
    name_or_path: str | Path,
    registry: dict[str, dict] | None = None,
    root: Path | None = None,
    progress: Progress | None = None,
    quiet: bool = False,
) -> Path:
    """A local checkpoint file for a path or a registry name (downloaded and verified)."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    registry = load_registry() if registry is None else registry
    name = str(name_or_path)
    if name not in registry and (candidate.suffix in {".pth", ".pt", ".tar", ".ckpt", ".model"}
                                 or os.sep in name):
        raise CheckpointError(f"checkpoint file {name} does not exist")
    return download_model(name, registry, root, progress, quiet)


# --- the default model ----------------------------------------------------------------

def _default_candidates(registry: dict[str, dict]) -> list[str]:
    """Entries marked ``"default": rank``, best (lowest rank) first."""
    ranked = [(entry["default"], name) for name, entry in registry.items()
              if isinstance(entry.get("default"), int)]
    return [name for _, name in sorted(ranked)]


def default_model_name(registry: dict[str, dict] | None = None, root: Path | None = None) -> str:
    """The model ``fix`` and ``score`` use when no ``--checkpoint`` is given.

    The best-ranked default whose file is already here (the VocaLiST weights, which only
    a user can fetch), else the best-ranked one that can be downloaded (``syncnet-v2``),
    so the main job works on real faces from a fresh install for anyone online.
    """
    registry = load_registry() if registry is None else registry
    candidates = _default_candidates(registry)
    for name in candidates:
        if target_path(registry[name], root).is_file():
            return name
    for name in candidates:
        if urls_of(registry[name]):
            return name
    raise CheckpointError("no default model is available; see lipsync-fix models and pass "
                          "--checkpoint NAME or PATH")


def default_model_notice(name: str, registry: dict[str, dict] | None = None,
                         root: Path | None = None) -> str:
    """One line for stderr: which default model is used, and how to get a better one."""
    registry = load_registry() if registry is None else registry
    entry = get_entry(name, registry)
    target = target_path(entry, root)
    family = entry.get("family", "unknown family")
    state = f"from {shown(target)}" if target.is_file() else "downloaded on first use"
    line = f"using {name} ({family}, {state})"
    candidates = _default_candidates(registry)
    better = candidates[: candidates.index(name)] if name in candidates else []
    if better:
        best = better[0]
        line += (f"; for better accuracy get {best}: {how_to_get(best, registry, root)}")
    return line


# --- loading --------------------------------------------------------------------------

def available_models() -> list[str]:
    """Names :func:`load_model` accepts besides paths (the registry's model entries)."""
    return sorted(name for name, entry in load_registry().items()
                  if entry.get("kind", MODEL_KIND) == MODEL_KIND)


def _name_by_sha256(digest: str, registry: dict[str, dict]) -> str | None:
    return next((name for name, entry in sorted(registry.items())
                 if entry.get("sha256") == digest), None)


def load_model(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    family: str | None = None,
    progress: Progress | None = None,
    quiet: bool = False,
) -> nn.Module:
    """The one way a model is loaded: a registry name (downloaded and verified on first
    use) or a checkpoint path -> the model it holds, in eval mode on ``device``.

    ``family`` (``vocalist``, ``syncnet``, ``syncnet-v2``, ``ynet``, ...) refuses a
    checkpoint of another kind with one clear line instead of failing later; a registry
    entry's own ``family`` is checked the same way. The model carries ``origin`` (registry
    name, or the path for a file no entry publishes; family; the first 12 hex digits of
    its sha256; path) so every result can say which model produced it.
    """
    registry = load_registry()
    name = str(name_or_path)
    entry = registry.get(name) if not Path(name_or_path).is_file() else None
    if entry is not None and entry.get("kind", MODEL_KIND) != MODEL_KIND:
        raise CheckpointError(f"{name} holds {entry['kind']} weights, not a model lipsync-fix "
                              "loads with --checkpoint")
    path = resolve_checkpoint(name_or_path, registry, progress=progress, quiet=quiet)
    model = model_from_checkpoint(read_checkpoint(path), name)
    actual = getattr(model, "family", None)
    for wanted in (family, entry.get("family") if entry else None):
        if wanted is not None and actual != wanted:
            raise CheckpointError(f"checkpoint {name} holds a {actual or 'unknown'} model, "
                                  f"not {wanted}")
    digest = file_sha256(path)
    origin_name = name if entry is not None else (_name_by_sha256(digest, registry) or str(path))
    model.origin = {"name": origin_name, "family": actual, "sha256": digest[:12],
                    "path": str(path)}
    return model.to(device).eval()
