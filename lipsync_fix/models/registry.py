"""Known model files: names, downloads on first use, verification, and the default model.

Choice, not storage: this module holds the registry (names and entries), what a user is
told (status, how to get a file, the one-line errors), the order in which an entry's
locations are tried, the default model and :func:`load_model`. Where files live, fetching
one location, hashes, state-dict layouts and trust records are
:mod:`lipsync_fix.models.store`, which knows nothing of names or defaults.

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
* A publisher that gives no sha256 (MTDVocaLiST's GitHub release, VocaLiST's Drive
  folder) is trusted on first use: the temporary file is checked against the entry's
  state-dict ``layout`` before the rename, then its sha256 and size are printed and
  recorded beside it (:mod:`lipsync_fix.models.store`); every later use is checked
  against that record, and a ``sha256`` in the registry wins over it.
* Entries published in a Google Drive folder (``drive_folder``, the VocaLiST authors')
  are fetched with ``gdown``: the folder is listed, the file picked by its name. When
  Drive refuses (quota, a moved folder, offline) the error is one line with the manual
  steps, which ``lipsync-fix models`` also gives.
* Without ``--checkpoint``, :func:`default_model_name` picks the model: ``vocalist-lrs2``
  when it is here and verifies, else ``mtdvocalist-lrs2`` (downloaded on first use), else
  ``syncnet-v2`` when it is here. ``lse`` does not ask: its metric is SyncNet's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from lipsync_fix.errors import CheckpointError
from lipsync_fix.models.checkpoint import model_from_checkpoint, read_checkpoint
from lipsync_fix.models.store import (
    ASSETS,
    DRIVE_FOLDER_URL,
    LocationError,
    Progress,
    TrustRecord,
    download_bar,
    fetch_from_drive,
    fetch_url,
    file_sha256,
    layout_path,
    layout_problem,
    read_trust,
    record_trust,
    remember,
    shown,
    stat_key,
    target_path,
    trust_path,
    urls_of,
)

REGISTRY_FILE = ASSETS / "registry.json"

MODEL_KIND = "model"
"""The default ``kind`` of an entry: something :func:`load_model` builds. Other kinds (the
S3FD ``face-detector`` weights) are downloaded and verified here but loaded elsewhere."""

_SHA256 = re.compile(r"[0-9a-f]{64}")

_err = Console(stderr=True, highlight=False, soft_wrap=True)


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
    layout = layout_path(entry)
    if layout is not None and not layout.is_file():
        return f"names a layout {entry['layout']!r} that lipsync-fix does not ship"
    if (urls or entry.get("drive_folder")) and sha is None and layout is None:
        return "has a download but neither a sha256 nor a layout (it could not be checked)"
    return None


# --- status and instructions --------------------------------------------------------------

PUBLISHED = "published"
FIRST_USE = "recorded on first use"


@dataclass(frozen=True)
class FileStatus:
    """Whether an entry's file is on disk and whether it is the file it should be.

    ``expected`` is the sha256 the file is held to and ``trust`` where that comes from:
    :data:`PUBLISHED` (the registry's ``sha256``, which wins) or :data:`FIRST_USE` (the
    trust record written when the file was first downloaded or checked). ``verified``
    is None when the file is absent, or present with neither to compare with."""

    name: str
    path: Path
    present: bool
    verified: bool | None
    sha256: str | None
    expected: str | None = None
    trust: str | None = None


def expected_sha256(entry: Mapping[str, Any], target: Path) -> tuple[str | None, str | None]:
    """The sha256 an entry's file must have and where it comes from (see
    :class:`FileStatus`): the registry's, else the trust record beside the file."""
    if entry.get("sha256"):
        return str(entry["sha256"]), PUBLISHED
    record = read_trust(target)
    return (record.sha256, FIRST_USE) if record is not None else (None, None)


def check_file(
    name: str, registry: dict[str, dict] | None = None, root: Path | None = None,
    recheck: bool = False,
) -> FileStatus:
    """The :class:`FileStatus` of a registry entry (hashing only when needed)."""
    entry = get_entry(name, registry)
    path = target_path(entry, root)
    if not path.is_file():
        return FileStatus(name, path, False, None, None)
    expected, trust = expected_sha256(entry, path)
    if expected is None and not recheck:
        return FileStatus(name, path, True, None, None)
    digest = file_sha256(path, recheck)
    verified = None if expected is None else digest == expected
    return FileStatus(name, path, True, verified, digest, expected, trust)


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
    if entry.get("bundled"):
        return "bundled with lipsync-fix (reinstall lipsync-fix to restore it)"
    if urls_of(entry):
        automatic = entry.get("kind", MODEL_KIND) == MODEL_KIND
        return f"run lipsync-fix models download {name}" + \
            (" (or let the first use download it)" if automatic else "")
    if entry.get("drive_folder"):
        return (f"run lipsync-fix models download {name} (fetched from its authors' Google "
                "Drive folder)")
    return manual_steps(name, registry, root)


def manual_steps(name: str, registry: dict[str, dict] | None = None,
                 root: Path | None = None) -> str:
    """Today's manual steps for an entry's file: where to click, where to put it."""
    entry = get_entry(name, registry)
    target = target_path(entry, root)
    source = entry.get("source", "its publisher")
    if "drive.google.com" in source:  # a folder page, not a file link: say what to click
        manual = f"open {source} in a browser, download {entry['filename']}"
    else:
        manual = f"download {entry['filename']} from {source}"
    manual += f" and put it at {shown(target)}"
    if entry.get("kind", MODEL_KIND) == MODEL_KIND:
        manual += " (or pass --checkpoint PATH)"
    return manual


# --- one download, from wherever the entry is published --------------------------------

def _trust_line(name: str, target: Path, record: TrustRecord) -> str:
    return (f"{name}: no published sha256; trusting this first download: sha256 "
            f"{record.sha256}, {record.size_bytes:,} bytes (recorded in "
            f"{shown(trust_path(target))}; later uses are checked against it)")


def _download(name: str, entry: Mapping[str, Any], target: Path, progress: Progress | None,
              quiet: bool, prefix: str = "") -> Path:
    """Try each location in order (the URLs, then the Drive folder); the first complete
    file that checks out wins. A file with no published sha256 is checked by its layout,
    and its hash recorded (trust on first use) unless a record already says what it must
    be."""
    urls = urls_of(entry)
    expected, _ = expected_sha256(entry, target)
    layout = layout_path(entry)
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the folder {target.parent} for {name}: "
                              f"{exc.strerror or exc}") from exc
    failures: list[LocationError] = []
    source = None
    with download_bar(name, quiet) as bar:
        for url in urls:
            try:
                digest = fetch_url(url, target, expected, layout, progress or bar)
            except LocationError as failed:
                failures.append(failed)
                continue
            source = url
            break
    if source is None and entry.get("drive_folder"):
        try:
            digest = fetch_from_drive(entry, target, expected, layout, quiet)
            source = DRIVE_FOLDER_URL.format(entry["drive_folder"])
        except LocationError as failed:
            failures.append(failed)
    if source is not None:
        remember(target, digest, stat_key(target))
        if expected is None:
            record = record_trust(target, digest, target.stat().st_size, source)
            if not quiet:
                _err.print(_trust_line(name, target, record), markup=False)
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
    n = len(urls) + bool(entry.get("drive_folder"))
    tried = f"tried {n} location{'s' if n != 1 else ''}"
    if entry.get("drive_folder") and not urls:
        raise CheckpointError(f"{prefix}cannot download {name} from Google Drive: {why}; "
                              f"{manual_steps(name, {name: dict(entry)}, target.parent)}")
    instead = ("pass --checkpoint PATH or put it in" if entry.get("kind", MODEL_KIND) == MODEL_KIND
               else "put it in")
    raise CheckpointError(f"{prefix}cannot download {name}: {why} ({tried}); download it "
                          f"elsewhere (lipsync-fix models download {name}) and {instead} "
                          f"{shown(target)}")


def _downloadable(entry: Mapping[str, Any]) -> bool:
    return bool(urls_of(entry) or entry.get("drive_folder"))


def download_model(
    name: str,
    registry: dict[str, dict] | None = None,
    root: Path | None = None,
    progress: Progress | None = None,
    quiet: bool = False,
) -> Path:
    """The verified local file of registry entry ``name``, downloaded if it is missing.

    A file already there is used if it verifies: against the registry's sha256, else the
    trust record made when it was first downloaded; a file with neither (put there by
    hand) is checked by its layout and recorded now. One that does not verify is
    downloaded again (whisper does the same) and replaced only by a good copy, which must
    match the same hash. ``progress`` replaces the progress bar (which is shown on stderr
    when it is a terminal and not ``quiet``).
    """
    registry = load_registry() if registry is None else registry
    entry = get_entry(name, registry)
    target = target_path(entry, root)
    prefix = ""
    if target.is_dir():
        raise CheckpointError(f"{shown(target)} should be the file of {name}, but it is a "
                              "folder; move it out of the way")
    if target.is_file():
        expected, trust = expected_sha256(entry, target)
        if expected is None:
            return _first_use_of_placed_file(name, entry, target, registry, root, quiet)
        if file_sha256(target) == expected:
            return target
        bad = (f"{shown(target)} does not match the sha256 of {name}" if trust == PUBLISHED
               else f"{shown(target)} does not match the sha256 recorded when {name} was "
                    f"first downloaded ({shown(trust_path(target))})")
        if not _downloadable(entry):
            raise CheckpointError(f"{bad}; {how_to_get(name, registry, root)}")
        if not quiet:
            _err.print(f"warning: {bad}; downloading it again", markup=False)
        prefix = f"{bad}, and "
    elif entry.get("bundled"):
        raise CheckpointError(f"the bundled file of {name} is missing at {target}; "
                              "reinstall lipsync-fix")
    if not _downloadable(entry):
        raise CheckpointError(f"{name} has no direct download; {how_to_get(name, registry, root)}")
    return _download(name, entry, target, progress, quiet, prefix)


def _first_use_of_placed_file(name: str, entry: Mapping[str, Any], target: Path,
                              registry: dict[str, dict], root: Path | None, quiet: bool
                              ) -> Path:
    """A file in the cache with no hash to compare with (the user copied it there): check
    its layout, where the entry has one, and record its hash so later changes are caught."""
    layout = layout_path(entry)
    if layout is None:
        return target
    problem = layout_problem(target, layout)
    if problem:
        raise CheckpointError(f"{shown(target)} is not the {name} file ({problem}); "
                              f"{how_to_get(name, registry, root)}")
    digest = file_sha256(target)
    record = record_trust(target, digest, target.stat().st_size, "placed in the cache")
    if not quiet:
        _err.print(_trust_line(name, target, record).replace("first download",
                                                             "file on first use"),
                   markup=False)
    return target


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


def _usable_here(name: str, registry: dict[str, dict], root: Path | None, quiet: bool
                 ) -> bool:
    """Whether an entry's file is here and checks out (hash, else layout: a file placed by
    hand is recorded on this first use), without downloading anything."""
    entry = registry[name]
    target = target_path(entry, root)
    if not target.is_file():
        return False
    expected, _ = expected_sha256(entry, target)
    if expected is not None:
        if file_sha256(target) == expected:
            return True
        problem = f"{shown(target)} does not match the sha256 of {name}"
    else:
        try:
            _first_use_of_placed_file(name, entry, target, registry, root, quiet)
            return True
        except CheckpointError as exc:
            problem = str(exc).split(";")[0]
    if not quiet:  # the user put it there: say why it is passed over
        _err.print(f"warning: {problem}; not using it", markup=False)
    return False


def default_model_name(registry: dict[str, dict] | None = None, root: Path | None = None,
                       quiet: bool = False) -> str:
    """The model ``fix`` and ``score`` use when no ``--checkpoint`` is given, its file
    ready in the cache.

    Entries marked ``"default": rank`` are taken best rank first: one whose file is here
    and verifies is used (``vocalist-lrs2``, then ``mtdvocalist-lrs2``, then ``syncnet-v2``);
    before falling back to a lower rank, an entry marked ``"download_by_default"``
    (``mtdvocalist-lrs2``: a direct download, ~53 MB) is downloaded. So a fresh install
    online gets MTDVocaLiST, a user who fetched VocaLiST gets VocaLiST, and offline with
    none of them the error is the download's own line: it names the model and how to get
    it offline.
    """
    registry = load_registry() if registry is None else registry
    candidates = _default_candidates(registry)
    failure: CheckpointError | None = None
    for name in candidates:
        if _usable_here(name, registry, root, quiet):
            return name
        entry = registry[name]
        if failure is None and entry.get("download_by_default") and _downloadable(entry):
            try:
                download_model(name, registry, root, quiet=quiet)
                return name
            except CheckpointError as exc:
                failure = exc  # a cached lower-ranked model may still do
    if failure is not None:
        raise failure
    raise CheckpointError("no default model is available; see lipsync-fix models and pass "
                          "--checkpoint NAME or PATH")


def default_model_notice(name: str, registry: dict[str, dict] | None = None,
                         root: Path | None = None) -> str:
    """One line for stderr: which default model runs, from where, and how to get a better
    one."""
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
