"""``lipsync-fix models``: list, download and verify the model files lipsync-fix knows.

A thin layer over :mod:`lipsync_fix.models.registry`: the listing says, per entry, what it
is (family, size, licence note), whether its file is here and is the published one, and
how to get it; ``download`` and ``verify`` exit non-zero when any named entry fails.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lipsync_fix.cli.app import Json, Quiet, app, print_error, print_json, say
from lipsync_fix.errors import CheckpointError, UsageError
from lipsync_fix.models.registry import (
    FileStatus,
    check_file,
    download_model,
    how_to_get,
    load_registry,
    shown,
)

models_app = typer.Typer(
    help="List the models lipsync-fix knows (with no subcommand), download or verify them.",
)
app.add_typer(models_app, name="models")

Names = Annotated[list[str] | None, typer.Argument(
    help="Registry names (see lipsync-fix models).", show_default=False)]


def _size(entry: dict) -> str:
    size = entry.get("size_bytes")
    return f"{size / 1e6:.1f} MB" if size else "size unknown"


def _state(entry: dict, status: FileStatus) -> str:
    """What a user needs to know about the file on disk, in a few words."""
    if not status.present:
        return "not downloaded"
    where = "bundled" if entry.get("bundled") else "cached"
    if status.verified is None:
        return f"{where}, not verifiable (no published sha256)"
    return f"{where}, verified" if status.verified else f"{where}, DOES NOT MATCH its sha256"


def _record(name: str, entry: dict, status: FileStatus, registry: dict) -> dict:
    return {
        "name": name,
        "family": entry.get("family"),
        "kind": entry.get("kind", "model"),
        "preset": entry.get("preset"),
        "parameters": entry.get("parameters"),
        "size_bytes": entry.get("size_bytes"),
        "licence": entry.get("licence"),
        "description": entry.get("description"),
        "source": entry.get("source"),
        "urls": entry.get("urls", []),
        "sha256": entry.get("sha256"),
        "card": entry.get("card"),
        "default_rank": entry.get("default"),
        "path": str(status.path),
        "cached": status.present,
        "verified": status.verified,
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
            say(f"{name}: {shown(status.path)} verified")
        else:
            fix = ("reinstall lipsync-fix" if entry.get("bundled")
                   else f"run lipsync-fix models download {name}")
            print_error(f"{name}: {shown(status.path)} has sha256 {status.sha256}, not the "
                        f"published {entry['sha256']}; {fix} to replace it")
    if failed:
        raise typer.Exit(1)
