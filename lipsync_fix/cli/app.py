"""The Typer application, its consoles, and the options every command spells the same way.

Options shared by several commands are declared once here (``-c/--checkpoint``,
``--device``, ``-q/--quiet``, ``--json``, ``--force``, ...), so they mean the same
everywhere: ``--json`` always prints one JSON object per result on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

app = typer.Typer(
    help="Find and fix audio/video desynchronisation in videos of people speaking or singing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print ratios measured side by side.",
                        no_args_is_help=True)
report_app = typer.Typer(help="Reports of batch runs.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(report_app, name="report")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def progress_bar(quiet: bool) -> Progress:
    """A progress bar on stderr (nothing when ``quiet``); stdout stays clean for ``--json``."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=quiet, transient=True,
    )


def print_json(record: dict) -> None:
    print(json.dumps(record), flush=True)


Checkpoint = Annotated[
    str, typer.Option("--checkpoint", "-c", help="Checkpoint path or registry name.")
]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")]
Precision = Annotated[str, typer.Option(
    help="auto (bf16 where the hardware runs it natively), fp32 or bf16.")]
Exhaustive = Annotated[bool, typer.Option(
    help="Score every window instead of sampling segments until the offset is settled.")]
MaxSegments = Annotated[int, typer.Option(
    help="Most 1-s segments a sampled estimate decodes and scores (a budget for huge files).")]
OffsetModelName = Annotated[str, typer.Option(
    "--offset-model", "--model",
    help="How the offset may change over time: auto (chosen by the evidence), constant, "
         "drift or piecewise.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or chatter.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object per result.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
Context = Annotated[int, typer.Option(
    "--context", "--window",
    help="Context window K in frames over which scores are averaged (25 = 1 s).")]
MaxOffset = Annotated[float, typer.Option(help="Largest delay searched, in ms (either way).")]
Detector = Annotated[str, typer.Option(help="Face detector: auto, haar or s3fd.")]
FaceBox = Annotated[str | None, typer.Option(help="Fixed face region x,y,w,h (pixels).")]
Report = Annotated[Path | None, typer.Option(
    help="Write a .csv or .jsonl report (resumable: a rerun continues it).")]
Shard = Annotated[str | None, typer.Option(
    help="Process only shard K/N of the sorted inputs (for job arrays).")]
Inputs = Annotated[list[Path], typer.Argument(help="Videos or folders of videos.")]
