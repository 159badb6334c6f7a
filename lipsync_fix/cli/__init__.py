"""The ``lipsync-fix`` command line: parses, calls the library, prints.

Exit status (the README's table):

* **0**: every input succeeded (or was skipped because it was done earlier);
* **1**: some input failed; the others still ran, and each failure is one line
  (``error: ...`` on stderr; with ``--json`` also an object with an ``error`` key on
  stdout). An internal error of lipsync-fix also exits 1;
* **2**: a usage error: a bad option or argument, an output that exists (without
  ``--force``) or would collide; nothing ran;
* **130**: interrupted (Ctrl-C); a batch with ``--report`` continues where it stopped
  when the same command is run again.

A full disk or a read-only file system stops a batch (exit 1) with one line naming the path
and the cause; its journal keeps every input done, so the same command continues.

Errors are one line; ``--debug`` (anywhere on the line) shows the traceback as well.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import typer

from lipsync_fix.cli import (  # noqa: F401  (registers commands)
    bench,
    lse,
    main_job,
    models,
    paper,
    report,
    separation,
)
from lipsync_fix.cli.app import Session, app, print_error, print_json
from lipsync_fix.errors import LipsyncError
from lipsync_fix.files import os_failure
from lipsync_fix.media import VIDEO_SUFFIXES

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
ROOT_OPTIONS = {"--help", "--version"}

HELP_ORDER = ("fix", "score", "shift", "demo", "lse", "check", "eval", "synth", "preprocess",
              "train", "export", "separate", "train-separation", "eval-separation",
              "models", "report", "bench")
"""The order ``--help`` lists the commands in: the main job first, then the metric, the
paper's research commands, and the groups (a command missing here goes last)."""


def _help_rank(name: str | None) -> int:
    return HELP_ORDER.index(name) if name in HELP_ORDER else len(HELP_ORDER)


app.registered_commands.sort(key=lambda c: _help_rank(c.name or c.callback.__name__))
app.registered_groups.sort(key=lambda g: _help_rank(g.name))


def command_names() -> set[str]:
    """Every registered command and command group (so new commands need no list here)."""
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    return names | {g.name for g in app.registered_groups if g.name}


def _options_part(args: Sequence[str]) -> list[str]:
    """The arguments before a ``--`` (after it, everything is a file name)."""
    args = list(args)
    return args[: args.index("--")] if "--" in args else args


def _with_default_command(args: list[str]) -> list[str]:
    """``lipsync-fix VIDEO -o OUT`` means ``lipsync-fix fix VIDEO -o OUT``.

    ``fix`` is put in front of anything that is neither a command nor ``--help`` and looks
    like a file or an option, so a mistyped command (``scroe``) is still reported as an
    unknown command rather than as a missing file.
    """
    if not args or args[0] in command_names() or args[0] in ROOT_OPTIONS:
        return args
    first = args[0]
    if first.startswith("-") or Path(first).suffix or os.path.exists(first):
        return ["fix", *args]
    return args


def _is_usage_error(exc: BaseException) -> bool:
    """A usage error of typer/click. Typer 0.29 bundles its own click (``typer._click``)
    while older typers raise ``click`` exceptions; both carry these two attributes."""
    return hasattr(exc, "format_message") and hasattr(exc, "exit_code")


def _usage_message(exc: BaseException, args: Sequence[str]) -> str:
    message = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
    dashed = [a for a in _options_part(args)
              if a.startswith("-") and not a.startswith("--")
              and (Path(a).suffix.lower() in VIDEO_SUFFIXES or os.path.exists(a))]
    if dashed and "option" in message.lower():
        message += (f"; to name a file that starts with '-', write ./{dashed[0]} "
                    "or put it after '--'")
    return f"{message} (see lipsync-fix --help)"


def _fail(message: str, code: int, json_mode: bool) -> int:
    """Report an error that ended the whole run: one line on stderr, and with ``--json``
    an ``error`` object on stdout, so a script reading stdout sees the failure too."""
    print_error(message)
    if json_mode:
        print_json({"error": message, "exit_code": code})
    return code


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``) and return its exit
    status. Never raises: every failure becomes one line and a status (see the module
    docstring), so tests can call this in-process exactly as the entry point does."""
    args = list(sys.argv[1:] if argv is None else argv)
    head = _options_part(args)
    debug = "--debug" in head
    json_mode = "--json" in head
    if debug:
        cut = len(head)
        args = [a for a in args[:cut] if a != "--debug"] + args[cut:]
    Session.debug = debug
    args = _with_default_command(args)
    try:
        code = app(args, standalone_mode=False, prog_name="lipsync-fix")
    except LipsyncError as exc:
        if debug:
            traceback.print_exc()
        return _fail(str(exc), exc.exit_code, json_mode)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None
                                                            else EXIT_FAILED)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted", EXIT_INTERRUPTED, json_mode)
    except OSError as exc:
        # The machine refused something (a full disk, a permission): the path and the
        # cause, not an internal error. Exit 1: some work may have been done.
        if debug:
            traceback.print_exc()
        return _fail(str(os_failure(exc, doing="use")), EXIT_FAILED, json_mode)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if type(exc).__name__ == "NoArgsIsHelpError":
            help_text = str(exc.format_message()).strip()  # type: ignore[attr-defined]
            if help_text:  # rich-less typer returns the help instead of printing it
                print(help_text)
            return EXIT_USAGE
        if _is_usage_error(exc):
            # All of typer's own errors are about the command line: nothing ran.
            return _fail(_usage_message(exc, args), EXIT_USAGE, json_mode)
        hint = "" if debug else " (run again with --debug for the traceback)"
        return _fail(f"an internal error in lipsync-fix: {type(exc).__name__}: {exc}{hint}",
                     EXIT_FAILED, json_mode)
    if code == EXIT_INTERRUPTED:
        return _fail("interrupted", EXIT_INTERRUPTED, json_mode)
    return code if isinstance(code, int) else EXIT_OK


def _tolerant_streams() -> None:
    """A file name that is not valid UTF-8 (Python passes it as surrogates) is printed
    with backslash escapes instead of ending in ``UnicodeEncodeError``."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lipsync-fix`` command."""
    _tolerant_streams()
    try:
        code = run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``lipsync-fix score ... --json | head -1``): stop quietly,
        # and keep Python from complaining about the unflushed stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_FAILED
    sys.exit(code)


__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "app", "main", "run"]
