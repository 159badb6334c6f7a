"""``lipsync-fix models``: list, download and verify the model files lipsync-fix knows.

A thin layer over :mod:`lipsync_fix.models.registry`: the listing says, per entry, what it
is (family, size, licence note), how accurate its authors measured it and what a window
costs here (to choose a model), whether its file is here and checks out, and how to get
it; ``download`` and ``verify`` exit non-zero when any named entry fails.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lipsync_fix.cli.app import Json, Quiet, app, print_error, print_json, say
from lipsync_fix.errors import CheckpointError, UsageError
from lipsync_fix.models.registry import (
    FIRST_USE,
    FileStatus,
    check_file,
    download_model,
    how_to_get,
    load_registry,
)
from lipsync_fix.models.store import shown

models_app = typer.Typer(
    help="List the models lipsync-fix knows (with no subcommand), download or verify them.",
)
app.add_typer(models_app, name="models")

Names = Annotated[list[str] | None, typer.Argument(
    help="Registry names (see lipsync-fix models).", show_default=False)]


def _size(entry: dict) -> str:
    """Parameters and file size: the file's when known, else float32 weights' (4 bytes a
    parameter, which a file of only the state dict is within a few kB of)."""
    size, params = entry.get("size_bytes"), entry.get("parameters")
    if size:
        mb = f"{size / 1e6:.1f} MB"
    elif params:
        mb = f"~{params * 4 / 1e6:.0f} MB"
    else:
        mb = "size unknown"
    return f"{params / 1e6:.2f}M params, {mb}" if params else mb


def _accuracy(entry: dict) -> str | None:
    """The published accuracy at K = 5 and 15 frames, e.g. ``LRS2 ±1 frame: 92.8 % (K=5),
    99.8 % (K=15)``, or None for an entry without published figures."""
    acc = entry.get("accuracy")
    if not isinstance(acc, dict):
        return None
    by_k = acc.get("by_context", {})
    figures = ", ".join(f"{by_k[k]:.1f} % (K={k})" for k in ("5", "15") if k in by_k)
    return f"{acc.get('benchmark', '')}: {figures} [{acc.get('source', '')}]"


def _cost(entry: dict) -> str | None:
    """The measured cost of one scored window, with where and when it was measured."""
    cost = entry.get("cost_per_window")
    if not isinstance(cost, dict):
        return None
    return (f"{cost['seconds']:.3f} s per window ({cost.get('machine', '')}, "
            f"{cost.get('measured', '')}, {cost.get('command', '')})")


def _state(entry: dict, status: FileStatus) -> str:
    """What a user needs to know about the file on disk, in a few words."""
    if not status.present:
        return "not downloaded"
    where = "bundled" if entry.get("bundled") else "cached"
    if status.verified is None:
        return f"{where}, not verifiable (no published sha256)"
    if status.trust == FIRST_USE:
        return (f"{where}, matches the sha256 recorded on first use" if status.verified
                else f"{where}, DOES NOT MATCH the sha256 recorded on first use")
    return f"{where}, verified" if status.verified else f"{where}, DOES NOT MATCH its sha256"


def _record(name: str, entry: dict, status: FileStatus, registry: dict) -> dict:
    return {
        "name": name,
        "family": entry.get("family"),
        "kind": entry.get("kind", "model"),
        "preset": entry.get("preset"),
        "parameters": entry.get("parameters"),
        "size_bytes": entry.get("size_bytes"),
        "weights_mb": round(entry["parameters"] * 4 / 1e6, 1) if entry.get("parameters")
        else None,
        "licence": entry.get("licence"),
        "description": entry.get("description"),
        "source": entry.get("source"),
        "urls": entry.get("urls", []),
        "sha256": entry.get("sha256"),
        "card": entry.get("card"),
        "default_rank": entry.get("default"),
        "download_by_default": bool(entry.get("download_by_default")),
        "accuracy": entry.get("accuracy"),
        "cost_per_window": entry.get("cost_per_window"),
        "path": str(status.path),
        "cached": status.present,
        "verified": status.verified,
        "expected_sha256": status.expected,
        "trust": status.trust,
        "how_to_get": how_to_get(name, registry),
    }


def _select(names: list[str] | None, registry: dict) -> list[str]:
    """The named entries (all when none is named); an unknown name is a usage error."""
    if not names:
        return sorted(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        known = ", ".join(sorted(registry))
        raise UsageError(f"unknown model {unknown[0]!r}; known names: {known}")
    return list(dict.fromkeys(names))


@models_app.callback(invoke_without_command=True)
def models_command(ctx: typer.Context, json_lines: Json = False) -> None:
    """List every model: family, size, licence, whether it is here and verified, how to get it."""
    if ctx.invoked_subcommand is not None:
        return
    registry = load_registry()
    for name in sorted(registry):
        entry = registry[name]
        status = check_file(name, registry)
        if json_lines:
            print_json(_record(name, entry, status, registry))
            continue
        what = ", ".join(str(x) for x in (entry.get("family"), entry.get("preset"), _size(entry))
                         if x)
        say(f"{name} ({what}): {_state(entry, status)}")
        say(f"    {entry.get('description', '')}")
        if _accuracy(entry):
            say(f"    accuracy: {_accuracy(entry)}")
        if _cost(entry):
            say(f"    cost: {_cost(entry)}")
        say(f"    licence: {entry.get('licence', 'not stated')}")
        if status.present:
            say(f"    file: {shown(status.path)}")
        else:
            say(f"    get it: {how_to_get(name, registry)}")


@models_app.command("download")
def download_command(names: Names = None, json_lines: Json = False, quiet: Quiet = False
                     ) -> None:
    """Download registry entries into the cache (verifying files already there)."""
    if not names:
        raise UsageError("name the models to download (see lipsync-fix models)")
    registry = load_registry()
    failed = False
    for name in _select(names, registry):
        try:
            path = download_model(name, registry, quiet=quiet or json_lines)
        except CheckpointError as exc:
            failed = True
            if json_lines:
                print_json({"name": name, "error": str(exc)})
            else:
                print_error(str(exc))
            continue
        status = check_file(name, registry)
        if json_lines:
            print_json(_record(name, registry[name], status, registry))
        else:
            say(f"{name}: {shown(path)} ({_state(registry[name], status)})")
    if failed:
        raise typer.Exit(1)


@models_app.command("verify")
def verify_command(names: Names = None, json_lines: Json = False) -> None:
    """Re-hash model files (all that are here when none is named).

    Exits 1 when a file does not match its published sha256 or a named one is missing."""
    registry = load_registry()
    failed = False
    for name in _select(names, registry):
        entry = registry[name]
        status = check_file(name, registry, recheck=True)
        missing = not status.present
        if missing and not names:
            continue
        bad = missing or status.verified is False
        failed |= bad
        if json_lines:
            print_json(_record(name, entry, status, registry) | {"actual_sha256": status.sha256})
        elif missing:
            print_error(f"{name} is not here; {how_to_get(name, registry)}")
        elif status.verified is None:
            say(f"{name}: {shown(status.path)} has sha256 {status.sha256} "
                      "(no published sha256 to compare with)")
        elif status.verified:
            how = " (against the sha256 recorded on first use)" if status.trust == FIRST_USE \
                else ""
            say(f"{name}: {shown(status.path)} verified{how}")
        else:
            fix = ("reinstall lipsync-fix" if entry.get("bundled")
                   else f"run lipsync-fix models download {name}")
            which = "published" if status.trust != FIRST_USE else "recorded on first use"
            print_error(f"{name}: {shown(status.path)} has sha256 {status.sha256}, not the "
                        f"{which} {status.expected}; {fix} to replace it")
    if failed:
        raise typer.Exit(1)
