"""Storage of model files: what a file must look like, and what was recorded about it.

This module knows about files, not about which model to choose (that is
:mod:`lipsync_fix.models.registry`). Two things live here:

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

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lipsync_fix.errors import CheckpointError
from lipsync_fix.files import write_atomically
from lipsync_fix.models.checkpoint import read_checkpoint

PACKAGE = Path(__file__).resolve().parents[1]
ASSETS = PACKAGE / "assets"
LAYOUTS = ASSETS / "layouts"
"""State-dict manifests of model files checked by layout (``{"entries": [key, shape,
dtype]}``), shipped with the package."""

TRUST_SUFFIX = ".trust.json"


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
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in state if k not in wanted]
    wrong = [f"{k} {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')} (expected "
             f"{wanted[k][0]} {wanted[k][1]})"
             for k, v in state.items()
             if k in wanted and (tuple(v.shape), str(v.dtype).removeprefix("torch."))
             != wanted[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:2])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:2])}")
    if wrong:
        problems.append(f"{len(wrong)} wrong shapes or dtypes, e.g. {'; '.join(wrong[:2])}")
    return "; ".join(problems) or None


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
