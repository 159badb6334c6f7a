"""Known checkpoints: resolve a name or a path to a local file, downloading if needed.

The registry (``models/registry.json``, shipped in the package as
``lipsync_fix/assets/registry.json``) maps names to a file name, a source, and, where the
publisher gives a direct link, a ``url`` and ``sha256``. A download streams into the cache
(``$LIPSYNC_FIX_CACHE`` or ``~/.cache/lipsync-fix``), is checked against its sha256 before
it is kept, and a cached file is re-checked on every use, so a corrupt or tampered file is
never loaded. Entries with no direct link (the authors publish theirs in a Google Drive
folder) resolve only from a file the user placed in the cache or passed with
``--checkpoint PATH``; the error says where to get it.

A checkpoint may also be bundled inside the package (``"bundled": "assets/<file>"``,
relative to the package folder, still checked against its sha256):
the demo model is, so the demo runs offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lipsync_fix.errors import CheckpointError
from lipsync_fix.files import atomic_path
from lipsync_fix.models.checkpoint import model_from_checkpoint, read_checkpoint

PACKAGE = Path(__file__).resolve().parents[1]
ASSETS = PACKAGE / "assets"
REGISTRY_FILE = ASSETS / "registry.json"

Progress = Callable[[int, int | None], None]


def cache_dir() -> Path:
    return Path(os.environ.get("LIPSYNC_FIX_CACHE", Path.home() / ".cache" / "lipsync-fix"))


def load_registry(path: str | Path | None = None) -> dict[str, dict]:
    """Registry entries by name; ``$LIPSYNC_FIX_REGISTRY`` points at another file."""
    path = Path(path or os.environ.get("LIPSYNC_FIX_REGISTRY", REGISTRY_FILE))
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the checkpoint registry {path}: {exc}") from exc


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_checkpoint(
    name_or_path: str | Path,
    registry: dict[str, dict] | None = None,
    root: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """A local checkpoint file for a path or a registry name (downloaded and verified)."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    registry = load_registry() if registry is None else registry
    name = str(name_or_path)
    if name not in registry:
        if candidate.suffix in {".pth", ".pt", ".tar", ".ckpt"} or os.sep in name:
            raise CheckpointError(f"checkpoint file {name} does not exist")
        known = ", ".join(sorted(registry)) or "none"
        raise CheckpointError(f"unknown checkpoint {name!r}; known names: {known}, or a path")
    entry = registry[name]
    if entry.get("bundled"):
        return _verified(PACKAGE / entry["bundled"], entry, name)
    target = (root or cache_dir()) / entry["filename"]
    if target.is_file():
        return _verified(target, entry, name)
    if not entry.get("url"):
        raise CheckpointError(
            f"checkpoint {name!r} has no direct download; get {entry['filename']} from "
            f"{entry.get('source', 'its publisher')} and pass --checkpoint PATH "
            f"(or put it in {target.parent})"
        )
    return _download(entry["url"], target, entry.get("sha256"), name, progress)


def _verified(path: Path, entry: dict, name: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {name!r} is missing its file {path}")
    expected = entry.get("sha256")
    if expected and sha256_of(path) != expected:
        raise CheckpointError(
            f"checkpoint {name!r} at {path} does not match its sha256; delete it to re-download"
        )
    return path


def _download(url: str, target: Path, sha256: str | None, name: str, progress) -> Path:
    """Stream ``url`` to a temporary file beside ``target``; keep it only if the checksum
    fits (:func:`~lipsync_fix.files.atomic_path`: no partial file is ever left)."""
    if not sha256:
        raise CheckpointError(f"registry entry {name!r} has a url but no sha256; refusing it")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as out, \
                urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            out.flush()
            if digest.hexdigest() != sha256:
                raise CheckpointError(
                    f"download of {name!r} from {url} failed its sha256 check; nothing was kept"
                )
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointError(f"cannot download checkpoint {name!r} from {url}: {exc}") from exc
    return target


def available_models() -> list[str]:
    """Names :func:`load_model` accepts besides paths (the registry's entries)."""
    return sorted(load_registry())


def load_model(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    family: str | None = None,
    progress: Progress | None = None,
) -> nn.Module:
    """The one way a model is loaded: a registry name (downloaded and verified on first
    use) or a checkpoint path -> the model it holds, in eval mode on ``device``.

    ``family`` (``vocalist``, ``syncnet``, ``ynet``, ...) refuses a checkpoint of another
    kind with one clear line instead of failing later.
    """
    path = resolve_checkpoint(name_or_path, progress=progress)
    model = model_from_checkpoint(read_checkpoint(path), str(name_or_path))
    if family is not None and getattr(model, "family", None) != family:
        raise CheckpointError(
            f"checkpoint {name_or_path} holds a {getattr(model, 'family', 'unknown')} model, "
            f"not {family}"
        )
    return model.to(device).eval()
