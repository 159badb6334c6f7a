"""``report html``: the review page of a report, or of the journal of a run in progress."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lipsync_fix import batch
from lipsync_fix.cli.app import (
    Force,
    Json,
    Quiet,
    print_error,
    print_json,
    progress_bar,
    report_app,
    say,
)
from lipsync_fix.errors import UsageError
from lipsync_fix.report import read_review, write_page
from lipsync_fix.report.rows import STATUS_WORDS
from lipsync_fix.sync.plot import require_matplotlib


@report_app.command("html")
def report_html_command(
    report: Annotated[Path, typer.Argument(
        help="A .csv or .jsonl report, or the .journal beside one (a run in progress).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The page to write (.html).")],
    force: Force = False,
    jobs: Annotated[int | None, typer.Option(
        min=1, help="Processes that draw the pictures of a large report [default: one per "
                    "core].")] = None,
    json_line: Json = False,
    quiet: Quiet = False,
) -> None:
    """Write one self-contained HTML page of a report for a person to review: counts by
    verdict, a table to sort and filter, and each input's offsets over time and face."""
    require_matplotlib()
    batch.check_output(output, suffix=".html", force=force)
    if output.resolve() == report.resolve():
        raise UsageError(f"-o {output} is the report itself")
    review = read_review(report)
    with progress_bar(quiet or json_line) as bar:
        task = bar.add_task("pictures", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        write_page(review, output, progress, jobs or os.cpu_count() or 1)
    counts = review.counts()
    unreadable = [row for row in review.rows if row.status == "unreadable"]
    for row in unreadable:
        print_error(f"{review.source}: the record of {row.input} cannot be read: {row.message}")
    if json_line:
        print_json({"output": str(output), "report": str(report), "inputs": len(review.rows),
                    **counts})
    else:
        parts = ", ".join(f"{n} {STATUS_WORDS[status]}" for status, n in counts.items() if n)
        say(f"wrote {output}: {len(review.rows)} inputs ({parts or 'none'})")
    if unreadable:
        raise typer.Exit(1)
