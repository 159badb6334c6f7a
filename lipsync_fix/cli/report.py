"""The ``report`` commands: ``report html`` (the review page of a report, or of the journal
of a run in progress) and ``report merge`` (the reports of a sharded run, as one)."""

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
    count,
    print_error,
    print_json,
    progress_bar,
    report_app,
    say,
)
from lipsync_fix.errors import UsageError
from lipsync_fix.lse import LSE_RECORD
from lipsync_fix.report import read_review, write_page
from lipsync_fix.report.rows import STATUS_WORDS
from lipsync_fix.sync.plot import require_matplotlib
from lipsync_fix.sync.records import FIX_RECORD, SCORE_RECORD


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


RECORD_SCHEMAS = {schema.kind: schema for schema in (SCORE_RECORD, FIX_RECORD, LSE_RECORD)}
"""Every command's report rows, for reading reports of any of them."""


@report_app.command("merge")
def report_merge_command(
    reports: Annotated[list[Path], typer.Argument(help="Per-shard reports (.csv or .jsonl).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The merged report.")],
    force: Force = False,
    json_line: Json = False,
) -> None:
    """Merge the reports of a run fanned out with --shard into one (one record per input).

    The reports must come from one command; an input with two different measurements is
    refused (named), numbers stay numbers from CSV to JSON lines and back."""
    merged = batch.merge_reports(reports, output, RECORD_SCHEMAS, force)
    failed = sum("error" in r for r in merged.records)
    if json_line:
        print_json({"output": str(output), "kind": merged.kind, "inputs": len(merged.records),
                    "reports": len(reports), "failed": failed})
        return
    say(f"wrote {output}: {count(len(merged.records), 'input')} from "
        f"{count(len(reports), 'report')}, {failed} failed")
