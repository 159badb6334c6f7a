"""The Typer application, its consoles, and the options every command spells the same way.

Options shared by several commands are declared once here (``-c/--checkpoint``,
``--device``, ``-q/--quiet``, ``--json``, ``--force``, ...), so they mean the same
everywhere: ``--json`` always prints one JSON object per result on stdout and nothing
else there (an input that failed is an object with an ``error`` key).

The consoles never interpret markup or emoji codes: file names and error messages are
the user's text, and ``[x]`` or ``:smile:`` inside a path must print as typed (rich would
otherwise swallow it, or raise on a stray closing tag).
"""

from __future__ import annotations

import enum
import importlib.metadata
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text
from torch import nn

from lipsync_fix import batch
from lipsync_fix.errors import BadCheckpointError, CheckpointError, LipsyncError, UsageError
from lipsync_fix.faces import parse_face_box
from lipsync_fix.models import load_model, load_registry
from lipsync_fix.models.registry import file_sha256, get_entry

app = typer.Typer(  # its help is the docstring of _root
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
bench_app = typer.Typer(help="Benchmarks that print ratios measured side by side.",
                        no_args_is_help=True)
report_app = typer.Typer(help="Reports of batch runs.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(report_app, name="report")

class Session:
    """What ``run`` learnt from the whole command line: ``--debug`` (taken out before the
    command parses its options) lets a batch re-raise an internal error for its traceback
    instead of recording it and going on."""

    debug = False


err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)


def one_line(message: str) -> str:
    """``message`` on one line: a path or a library message with a newline in it must not
    break the promise of one line per error."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, on one line."""
    err.print(Text.assemble(("error:", "bold red"), " ", one_line(message)))


def count(n: int, noun: str) -> str:
    """``1 report``, ``2 reports``: a number and its noun, in the right number."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def say(message: str) -> None:
    """A human line on stdout (never used in ``--json`` mode)."""
    out.print(message)


def installed_version() -> str:
    """The installed distribution's version (what pip reports), or "unknown" when the
    package runs from a source tree that was never installed."""
    try:
        return importlib.metadata.version("lipsync-fix")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        say(f"lipsync-fix {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Find and fix audio/video desynchronisation in videos of people speaking or singing.

    The main job: lipsync-fix VIDEO -o FIXED (the same as lipsync-fix fix VIDEO -o FIXED).
    """


def note(message: str) -> None:
    """A human line on stderr that is not an error (a skipped clip, a hint)."""
    err.print(one_line(message))


def echo_record(job: batch.Job, record: dict, json_lines: bool,
                describe: Callable[[dict], str]) -> None:
    """One line per input: the JSON record (stdout), or a sentence. An error is also one
    line on stderr in both modes, so a log of stderr lists every failure."""
    if "error" in record:
        message = record["error"]
        if str(job.input) not in message:
            message = f"{job.input}: {message}"
        print_error(message)
    if json_lines:
        print_json(record)
    elif "error" in record:
        return
    elif record.get("skipped"):
        reason = record["skipped"]
        hint = " (use --force to redo it)" if reason == batch.OUTPUT_EXISTS else ""
        say(f"{job.input}: skipped, {reason}{hint}")
    else:
        say(describe(record))


def progress_bar(quiet: bool) -> Progress:
    """A progress bar on stderr, only on a terminal and when not ``quiet``: stdout stays
    clean for ``--json``, and a log file gets no bar frames or blank lines."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err,
        disable=quiet or not err.is_terminal, transient=True,
    )


def print_json(record: dict) -> None:
    """One JSON object on one line of stdout (NaN/inf, which JSON lacks, become null)."""
    print(json.dumps(_finite(record), allow_nan=False), flush=True)


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class DetectorName(str, enum.Enum):
    """Face detectors; declared as a choice so a typo is a usage error before any work."""

    auto = "auto"
    haar = "haar"
    s3fd = "s3fd"


def check_face_box(text: str | None) -> str | None:
    """Refuse a malformed ``--face-box`` before any input is read (a usage error, exit 2),
    instead of once per input."""
    if text is not None:
        try:
            parse_face_box(text)
        except LipsyncError as exc:
            raise UsageError(str(exc)) from None
    return text


CHECKPOINT_SUFFIXES = frozenset({".pth", ".pt", ".tar", ".ckpt", ".model"})
"""Names with these suffixes are files, never registry names."""


def load_named_model(checkpoint: str, device: str | torch.device = "cpu",
                     family: str | None = None, quiet: bool = False) -> nn.Module:
    """The model a command's ``-c`` names, loaded before any input is read.

    What the command line got wrong is a usage error (exit 2, nothing ran): a name that is
    neither a file nor a registry entry, a file that is no usable checkpoint, a model of
    another ``family`` than the command needs. A registry file that cannot be downloaded
    or fails its checksum is not (exit 1: the same command may work later)."""
    path = Path(checkpoint)
    is_file = path.is_file()
    registry = load_registry()
    if not is_file and checkpoint not in registry:
        if path.is_dir():
            raise BadCheckpointError(f"{checkpoint} is a folder, not a checkpoint file")
        if path.suffix in CHECKPOINT_SUFFIXES or "/" in checkpoint:
            raise BadCheckpointError(f"checkpoint file {checkpoint} does not exist")
        try:
            get_entry(checkpoint, registry)
        except CheckpointError as exc:
            raise BadCheckpointError(str(exc)) from None
    try:
        model = load_model(checkpoint, device, quiet=quiet)
    except CheckpointError as exc:
        if is_file:
            raise BadCheckpointError(str(exc)) from None
        raise
    actual = getattr(model, "family", None)
    if family is not None and actual != family:
        raise BadCheckpointError(f"checkpoint {checkpoint} holds a {actual or 'unknown'} model, "
                                 f"not the {family} this command needs")
    return model


def model_identity(model: nn.Module) -> dict:
    """What identifies the model a result came from, for the journal: its name and the
    SHA-256 of its checkpoint file (a retrained file under the same name differs)."""
    origin = getattr(model, "origin", None) or {}
    path = origin.get("path")
    digest = file_sha256(Path(path)) if path and Path(path).is_file() else origin.get("sha256")
    return {"name": origin.get("name"), "sha256": digest}


Checkpoint = Annotated[
    str, typer.Option("--checkpoint", "-c", help="Checkpoint path or registry name.")
]
Device = Annotated[str, typer.Option(
    help="auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps.")]
Precision = Annotated[str, typer.Option(
    help="auto (bf16 where the hardware runs it natively), fp32 or bf16.")]
Exhaustive = Annotated[bool, typer.Option(
    help="Score every window instead of sampling segments until the offset is settled.")]
MaxSegments = Annotated[int, typer.Option(
    min=1, help="Most 1-s segments a sampled estimate decodes and scores (a budget for huge "
                "files).")]
OffsetModelName = Annotated[str, typer.Option(
    "--offset-model", "--model",
    help="How the offset may change over time: auto (chosen by the evidence), constant, "
         "drift or piecewise.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or chatter.")]
Json = Annotated[bool, typer.Option(
    "--json", help="Print one JSON object per result on stdout, and nothing else there.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
Resume = Annotated[bool, typer.Option(help="Continue from OUT/last.pth.")]
Restart = Annotated[bool, typer.Option(
    "--force", help="Start afresh in an OUT that holds a run (its files are replaced).")]
"""A training command's run folder: continue it (--resume) or replace it (--force)."""
Context = Annotated[int, typer.Option(
    "--context", "--window",
    help="Context K: frames over which window scores are averaged (25 = 1 s; --window is "
         "its older name, kept until 1.0).")]
MaxDelay = Annotated[float, typer.Option(
    "--max-delay-ms", "--max-offset-ms",
    help="Largest audio delay searched, in ms, either way (--max-offset-ms is its older "
         "name, kept until 1.0).")]
Detector = Annotated[DetectorName, typer.Option(help="Face detector.")]
FaceBox = Annotated[str | None, typer.Option(help="Fixed face region x,y,w,h (pixels).")]
Report = Annotated[Path | None, typer.Option(
    help="Write a .csv or .jsonl report (resumable: a rerun continues it).")]
Workers = Annotated[int | None, typer.Option(
    min=0, show_default=False,
    help="Processes that read a folder's next clips while one is scored [default: on a "
         "GPU one per core but one; on the CPU one per core but two; 0: none].")]
Shard = Annotated[str | None, typer.Option(
    help="Process only shard K/N of the sorted inputs (for job arrays).")]
Inputs = Annotated[list[Path], typer.Argument(help="Videos or folders of videos.")]
