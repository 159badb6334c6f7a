"""The ``lipsync-fix`` command line: parses, calls the library, prints.

Exit status: 0 when every input succeeded, 1 when some input failed (the others still
ran), 2 for a usage error (nothing ran), 130 when interrupted. Errors are one line on
stderr (``error: ...``); ``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback

import typer

from lipsync_fix.cli import (  # noqa: F401  (registers commands)
    lse,
    main_job,
    models,
    research,
    separation,
)
from lipsync_fix.cli.app import app, err
from lipsync_fix.errors import LipsyncError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def command_names() -> set[str]:
    """Every registered command and command group (so new commands need no list here)."""
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    return names | {g.name for g in app.registered_groups if g.name}


def _usage_line(exc: Exception) -> str:
    """Typer/click usage errors as one line (they carry ``format_message``)."""
    message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    return f"error: {message} (see lipsync-fix --help)"


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``lipsync-fix VIDEO -o OUT`` means ``lipsync-fix fix VIDEO -o OUT``."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if args and args[0] not in command_names() and not args[0].startswith("-"):
        args.insert(0, "fix")
    try:
        code = app(args, standalone_mode=False, prog_name="lipsync-fix")
    except LipsyncError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code") and not debug:
            err.print(_usage_line(exc))
            sys.exit(int(exc.exit_code) if exc.exit_code else EXIT_USAGE)
        if debug:
            raise
        err.print(f"[red]error:[/red] an internal error in lipsync-fix: "
                  f"{type(exc).__name__}: {exc} (run again with --debug for the traceback)")
        sys.exit(EXIT_FAILED)
    if isinstance(code, int) and code:
        sys.exit(code)


__all__ = ["app", "main"]
