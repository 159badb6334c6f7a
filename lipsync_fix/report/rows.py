"""A report read back for review: one typed row per input.

The records come through :mod:`lipsync_fix.batch` (:func:`~lipsync_fix.batch.read_report`
for a report, :meth:`~lipsync_fix.batch.Journal.read` for the journal of a run still in
progress), so the page reads exactly what a resumed run or ``report merge`` reads. Each
record becomes one :class:`ReviewRow`:

* a measurement: its :class:`SyncEstimate`, read by ``SyncEstimate.from_json`` (every value
  type-checked), so the page shows the estimate that ``fix`` would apply;
* a measurement of a CSV report, which holds no lists (readings, spans, scores): its
  headline values only, and no picture;
* a failure (``error``) or a skip (``skipped`` with no measurement): shown as such;
* anything else: ``unreadable``, with the one line that says why.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipsync_fix import batch, records
from lipsync_fix.errors import LipsyncError, RecordError, UsageError
from lipsync_fix.sync.estimate import VERDICTS, SyncEstimate
from lipsync_fix.sync.records import ESTIMATE_RECORDS
from lipsync_fix.sync.timeline import KINDS, Span

STATUSES = ("out_of_sync", "uncertain", "in_sync", "error", "skipped", "unreadable")
"""What a row of the page can be: a verdict, or why there is none (in the page's order)."""

STATUS_WORDS = {"out_of_sync": "out of sync", "uncertain": "uncertain", "in_sync": "in sync",
                "error": "failed", "skipped": "skipped", "unreadable": "unreadable"}


@dataclass(frozen=True)
class Headline:
    """The values of the page's table, from an estimate or from a CSV row (which has only
    these; ``spans`` is then empty)."""

    verdict: str
    audio_delay_ms: float | None
    worst_audio_delay_ms: float | None
    drift_ms_per_min: float | None
    confidence: float | None
    offset_model: str | None
    spans: tuple[Span, ...]
    model: str | None
    model_sha256: str | None
    notes: tuple[str, ...]

    @classmethod
    def of(cls, estimate: SyncEstimate) -> Headline:
        model = estimate.model
        return cls(estimate.verdict, estimate.audio_delay_ms, estimate.worst_audio_delay_ms,
                   estimate.drift_ms_per_min, estimate.confidence,
                   estimate.offset_model.kind, estimate.offset_model.spans,
                   None if model is None else model.name,
                   None if model is None else model.sha256, estimate.notes)

    @classmethod
    def from_csv_row(cls, record: Mapping[str, Any], where: str) -> Headline:
        """The headline of a CSV row. A CSV cell is text: the numbers are read back here
        (a row already typed by its reader passes through unchanged)."""
        verdict = records.text(record, "verdict", where, choices=VERDICTS)
        kind = _cell(record, "offset_model")
        if kind is not None and kind not in KINDS:
            raise RecordError(f"{where}: 'offset_model' must be one of {', '.join(KINDS)}, "
                              f"not {kind!r}")
        model = _cell(record, "model")
        name = sha = None
        if isinstance(model, Mapping):
            name = records.text(model, "name", f"{where}: model")
            sha = records.text(model, "sha256", f"{where}: model", optional=True)
        elif model is not None:
            name = str(model)
        notes = _cell(record, "notes")
        return cls(verdict, _number(record, "audio_delay_ms", where),
                   _number(record, "worst_audio_delay_ms", where),
                   _number(record, "drift_ms_per_min", where),
                   _number(record, "confidence", where), kind, (), name, sha,
                   tuple(str(n) for n in notes) if isinstance(notes, list) else ())


def _cell(record: Mapping[str, Any], key: str) -> Any:
    """A CSV value: JSON text (a number, a list, an object) as its value, other text as
    itself, an empty cell as None."""
    value = record.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _number(record: Mapping[str, Any], key: str, where: str) -> float | None:
    value = _cell(record, key)
    if value is None:
        return None
    return records.number({key: value}, key, where)


@dataclass(frozen=True)
class ReviewRow:
    """One input of the page: its status (:data:`STATUSES`), the estimate when the record
    holds one whole, the table's values, what the command wrote for it (``output``: a
    fixed copy or a plot) and, for a failure, skip or unreadable row, the message."""

    input: str
    status: str
    estimate: SyncEstimate | None = None
    headline: Headline | None = None
    output: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Review:
    """The rows of one report or journal, sorted by input. ``in_progress`` is how many
    inputs the journal beside a report holds that the report does not yet (a run that is
    still going, or was killed before it rewrote the report)."""

    source: Path
    from_journal: bool
    csv_form: bool
    rows: tuple[ReviewRow, ...]
    in_progress: int = 0

    def counts(self) -> dict[str, int]:
        """Rows per status, every status named (0 when there is none)."""
        found = Counter(row.status for row in self.rows)
        return {status: found.get(status, 0) for status in STATUSES}


def row_of(record: Mapping[str, Any], csv_form: bool = False) -> ReviewRow:
    """The review row of one record (see the module docstring)."""
    name = record.get("input")
    where = str(name) if name is not None else "a record"
    output = record.get("output") or record.get("plot")
    output = output if isinstance(output, str) else None
    error = record.get("error")
    if error:
        return ReviewRow(str(name), "error", output=output, message=str(error))
    try:
        estimate = SyncEstimate.from_json(record)
    except RecordError as exc:
        if record.get("skipped"):
            return ReviewRow(str(name), "skipped", output=output,
                             message=str(record["skipped"]))
        if csv_form:
            try:
                headline = Headline.from_csv_row(record, where)
            except RecordError as bad:
                return ReviewRow(str(name), "unreadable", output=output, message=str(bad))
            return ReviewRow(str(name), headline.verdict, headline=headline, output=output)
        return ReviewRow(str(name), "unreadable", output=output, message=str(exc))
    return ReviewRow(estimate.input, estimate.verdict, estimate, Headline.of(estimate), output)


def read_review(path: Path) -> Review:
    """The rows of a ``.csv``/``.jsonl`` report, or of the journal (``R.jsonl.journal``)
    of a run still in progress. A file that is missing or not a report is a usage error."""
    if not path.is_file():
        raise UsageError(f"the report {path} does not exist")
    from_journal = path.name.endswith(batch.JOURNAL_SUFFIX)
    csv_form = False
    in_progress = 0
    if from_journal:
        found = list(batch.Journal(path).read().values())
    else:
        if path.suffix.lower() not in batch.REPORT_SUFFIXES:
            raise UsageError(f"give a .csv or .jsonl report (or its {batch.JOURNAL_SUFFIX} "
                             f"file), not {path.name}")
        try:
            found = batch.read_report(path, ESTIMATE_RECORDS, strict=False).records
        except LipsyncError as exc:
            raise UsageError(str(exc)) from None
        csv_form = path.suffix.lower() == ".csv"
        journal = batch.Journal.beside(path)
        if journal.path.is_file():
            known = {str(r.get("input")) for r in found}
            in_progress = len(set(journal.read()) - known)
    rows = sorted((row_of(record, csv_form) for record in found), key=lambda r: r.input)
    return Review(path, from_journal, csv_form, tuple(rows), in_progress)


def finite(value: float | None) -> float | None:
    """``value`` when it is a finite number (a table cell shows nothing otherwise)."""
    return value if value is not None and math.isfinite(value) else None
