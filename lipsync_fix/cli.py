"""The ``lipsync-fix`` command line: a thin layer over the library functions.

Errors caused by the input are :class:`~lipsync_fix.errors.LipsyncError`; they are printed
as one line on stderr with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lipsync_fix.errors import LipsyncError

app = typer.Typer(
    help="Find and fix audio/video desynchronisation in videos of people speaking or singing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print ratios measured side by side.")
app.add_typer(bench_app, name="bench")

err = Console(stderr=True)
out = Console()


def progress_bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=quiet, transient=True,
    )


def load_model(checkpoint: str, device: str):
    """A registry name or a path -> a VocaLiST model in eval mode on ``device``."""
    from lipsync_fix.checkpoint import load_vocalist
    from lipsync_fix.pretrained import resolve_checkpoint

    return load_vocalist(resolve_checkpoint(checkpoint), device)


@app.command("eval")
def eval_command(
    data_root: Annotated[Path, typer.Option(help="Root of preprocessed clips (authors' layout).")],
    checkpoint: Annotated[str, typer.Option(help="Checkpoint path or registry name.")],
    protocol: Annotated[str, typer.Option(help="Metrics: lrs2 (speech) or acappella.")] = "lrs2",
    split: Annotated[str, typer.Option(help="Filelist split under DATA_ROOT/filelists.")] = "test",
    mode: Annotated[str, typer.Option(help="cached (fast) or reference (per pair).")] = "cached",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write results as CSV.")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N clips.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Reproduce the paper's sync accuracy tables on preprocessed clips."""
    from lipsync_fix.evaluate import evaluate_folder, get_protocol, write_result
    from lipsync_fix.scoring import ScoreOptions

    proto = get_protocol(protocol)
    model = load_model(checkpoint, device)
    with progress_bar(quiet) as bar:
        task = bar.add_task("clips", total=None)

        def on_clip(done: int, total: int, record: dict) -> None:
            bar.update(task, completed=done, total=total)

        result = evaluate_folder(
            model, data_root, proto, split, ScoreOptions(mode=mode, device=device),
            limit, on_clip,
        )
    table = Table(title=f"{proto.name} sync accuracy ({result.clips} clips, "
                        f"{result.windows} windows, {result.seconds:.1f} s)")
    table.add_column("tolerance")
    for k in proto.contexts:
        table.add_column(f"K={k}", justify="right")
    for tol, by_k in result.accuracy().items():
        table.add_row(tol.replace("tolerance_", "±"), *[f"{100 * v:.1f}" for v in by_k.values()])
    out.print(table)
    for skipped in result.skipped:
        err.print(f"skipped {skipped['clip']}: {skipped['reason']}")
    if json_out:
        write_result(result, json_out)
    if csv_out:
        write_result(result, csv_out)


@bench_app.command("scorer")
def bench_scorer(
    preset: Annotated[str, typer.Option(help="Model size: paper, small or tiny.")] = "paper",
    duration: Annotated[float, typer.Option(help="Seconds of generated clip.")] = 4.0,
    reference_windows: Annotated[
        int, typer.Option(help="Windows scored in reference mode (0 = all).")
    ] = 6,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    json_line: Annotated[bool, typer.Option("--json", help="End with one JSON object.")] = False,
) -> None:
    """Reference (whole model per pair) vs cached scoring: seconds per window and ratio."""
    from lipsync_fix.bench import run_scorer_benchmark

    result = run_scorer_benchmark(preset, duration, reference_windows or None, device)
    out.print(f"model {preset}, device {result.device}, {result.windows} windows")
    out.print(f"reference: {result.reference_s_per_window:.3f} s/window "
              f"({result.reference_windows} windows)")
    out.print(f"cached:    {result.cached_s_per_window:.4f} s/window")
    out.print(f"speedup:   {result.speedup:.1f}x, offsets identical: {result.offsets_identical} "
              f"({result.offsets_compared} rows with a clear best), "
              f"max score difference {result.max_abs_score_diff:.2e}")
    out.print(f"achieved {result.gflops:.1f} GFLOP/s; measured matmul {result.matmul_gflops:.1f}")
    if json_line:
        print(json.dumps(result.to_json()))


def main() -> None:
    """Entry point: runs the app and turns input errors into one-line messages."""
    try:
        app(standalone_mode=False)
    except LipsyncError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
