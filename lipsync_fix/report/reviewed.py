"""A reviewed report, applied: the estimates ``fix --from-report`` moves the audio by.

Quality control works in two passes: ``score DIR --report R.jsonl`` measures a folder, a
person reviews ``R`` (``report html``, a spreadsheet) and deletes the rows that must not be
touched, then ``fix DIR --from-report R.jsonl -o OUT`` applies exactly what was reviewed.
Measuring again at that point would be slow and could give a different answer than the
one that was looked at, so nothing here loads a model: each input's row is read back as
the :class:`~lipsync_fix.sync.SyncEstimate` it recorded and handed to the same
:func:`~lipsync_fix.sync.fix_video` as ``fix``.

A row is only applied to the content it measured: the row's fingerprint of its input
(size and a hash of its first and last MiB, see :mod:`lipsync_fix.files`) must match the
file as it is now. Rows are matched to inputs by their ``input`` path, resolved against
the current folder (run ``fix`` from where ``score`` ran, with the same kind of paths).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipsync_fix import batch
from lipsync_fix.errors import InputChangedError, LipsyncError, RecordError, UsageError
from lipsync_fix.files import Fingerprint, cause, describe_change
from lipsync_fix.sync import SyncEstimate
from lipsync_fix.sync.records import ESTIMATE_RECORDS

NOT_IN_REPORT = "not in the report"
"""Why an input found in a folder is left alone: its row was deleted in review (an input
named on the command line without a row is refused instead: it was asked for)."""

HEADLINE_TOLERANCE_MS = 0.5
"""How far a row's ``audio_delay_ms`` may be from the delay its spans give. The spans
are what is applied; a reviewer who edited only the headline number would otherwise get
a fix they did not ask for."""


@dataclass(frozen=True)
class Decision:
    """What to do with one input: apply ``estimate``, or leave it (``skipped`` says why)."""

    estimate: SyncEstimate | None
    skipped: str | None = None


@dataclass(frozen=True)
class ReviewedReport:
    """The rows of a ``score`` or ``fix`` report, by resolved input path.

    ``sha256`` identifies the report's content: a fix run's journal records it, so that
    editing the report again and rerunning applies the new review, not the old one."""

    path: Path
    sha256: str
    rows: Mapping[Path, Mapping[str, Any]]

    @classmethod
    def read(cls, path: Path) -> ReviewedReport:
        """The report at ``path``. A file that is not a ``score``/``fix`` report, holds no
        estimate, or lists one input twice is a :class:`UsageError` (exit 2): it is an
        argument of the command, and nothing is done with a half-understood review."""
        if path.suffix.lower() not in batch.REPORT_SUFFIXES:
            raise UsageError(f"--from-report {path}: a report is a .jsonl or .csv file")
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise UsageError(f"cannot read the report {path}: {cause(exc)}") from None
        try:
            report = batch.read_report(path, ESTIMATE_RECORDS)
        except LipsyncError as exc:
            raise UsageError(str(exc)) from None
        rows: dict[Path, Mapping[str, Any]] = {}
        for row in report.records:
            key = Path(str(row["input"])).resolve()
            if key in rows:
                raise UsageError(f"{path} lists {row['input']} twice: keep the row that "
                                 "was reviewed")
            rows[key] = row
        if not any(batch.is_measurement(row) for row in rows.values()):
            raise UsageError(f"{path} holds no estimate to apply")
        return cls(path, digest, rows)

    def decide(self, job: batch.Job, named: bool,
               only: Collection[str] = ()) -> Decision:
        """The estimate to apply to ``job`` (whose ``fingerprint`` is the input's now), or
        why it is skipped. ``named``: the input was given on the command line (not found
        in a folder), so a missing row is a failure rather than a choice. ``only``: the
        verdicts to apply (all when empty).

        Raises :class:`LipsyncError` for an input the report cannot be applied to (no row,
        a failed measurement, a row without a fingerprint) and
        :class:`InputChangedError` for an input that changed since it was measured."""
        row = self.rows.get(job.input.resolve())
        if row is None:
            if named:
                raise LipsyncError(f"{job.input} has no row in {self.path}: measure it "
                                   "(score --report) or leave it out")
            return Decision(None, NOT_IN_REPORT)
        if "error" in row:
            raise LipsyncError(f"{job.input}: {self.path} records no estimate (its "
                               f"measurement failed: {row['error']})")
        if "skipped" in row:
            raise LipsyncError(f"{job.input}: {self.path} records no estimate (it was "
                               f"skipped: {row['skipped']})")
        estimate = _estimate_of(row, f"{self.path}: {job.input}")
        if only and estimate.verdict not in only:
            return Decision(None, f"its verdict is {estimate.verdict}, not "
                                  f"{' or '.join(sorted(only))}")
        _check_same_content(job, row, self.path)
        return Decision(estimate)


def _estimate_of(row: Mapping[str, Any], where: str) -> SyncEstimate:
    try:
        estimate = SyncEstimate.from_json(batch.public(row))
    except (RecordError, ValueError) as exc:
        raise LipsyncError(f"{where}: the row is not an estimate ({exc})") from None
    headline = estimate.offset_model.headline_delay_ms()
    if abs(estimate.audio_delay_ms - headline) > HEADLINE_TOLERANCE_MS:
        raise LipsyncError(
            f"{where}: audio_delay_ms {estimate.audio_delay_ms:g} disagrees with its spans "
            f"({headline:g} ms); the spans are what is applied: edit them, or both")
    return estimate


def _check_same_content(job: batch.Job, row: Mapping[str, Any], report: Path) -> None:
    provenance = row.get("provenance")
    recorded = Fingerprint.from_json(provenance.get("fingerprint")) \
        if isinstance(provenance, Mapping) else None
    if recorded is None:
        raise LipsyncError(f"{job.input}: its row in {report} does not record which content "
                           "was measured (an older lipsync-fix): measure it again")
    if job.fingerprint is None:
        raise LipsyncError(f"{job.input}: cannot be compared with what was measured")
    if not recorded.same_content(job.fingerprint):
        raise InputChangedError(
            f"{job.input} changed since it was measured "
            f"({describe_change(recorded, job.fingerprint)}); not fixed: measure it again")
