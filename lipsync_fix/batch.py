"""Batch runs over files and folders, for shell scripts and cluster jobs.

The policy of a batch lives here, not in the command line:

* **inputs**: files as given; folders searched recursively for videos. Hidden files and
  everything inside the output folder are left out, so a rerun never processes its own
  outputs or a killed run's temporary files;
* **outputs**: one input and ``-o FILE`` writes that file; otherwise ``-o`` is a folder that
  mirrors the input tree (``in/x/clip.mp4`` -> ``OUT/x/clip.fixed.mp4``). Two inputs that
  would write one output are an error before anything runs, never a skip;
* **shards**: ``K/N`` keeps every N-th job of the sorted list, starting with the K-th, so the
  N shards of a Slurm array or GNU parallel cover every input exactly once;
* **resume**: with a report, every finished input is appended to a journal beside it (JSON
  lines, flushed and synced per input). A rerun of the same command after ``kill -9`` skips
  what the journal holds, and the report, rewritten from the journal when the run ends,
  keeps the measurements of earlier runs. Without a journal, an existing output is skipped
  (``--force`` redoes it). Temporary files a killed run left behind are removed before the
  output they belong to is written;
* **report**: ``.csv`` or ``.jsonl``; it is never written over a file that is not a report
  (nor over an input), and it appears atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lipsync_fix.errors import LipsyncError, OutputExistsError, UsageError
from lipsync_fix.files import is_partial, write_atomically
from lipsync_fix.media import VIDEO_SUFFIXES

REPORT_SUFFIXES = (".csv", ".jsonl")
CSV_FIELDS = ["input", "output", "audio_delay_ms", "offset_frames", "confidence", "verdict",
              "model", "face_coverage", "windows_used", "fps", "duration_s", "skipped", "error"]
JOURNAL_SUFFIX = ".journal"


@dataclass(frozen=True)
class Job:
    """One input of a batch and where its output goes (None: the command writes none).

    ``label`` is the input's path relative to the folder it was found in (its name when it
    was given directly): unique within a batch, it names derived files such as plots.
    """

    input: Path
    output: Path | None
    label: Path


def find_videos(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Videos under ``folder`` (recursive, sorted), without hidden files and folders and
    without anything under ``exclude``."""
    skip = exclude.resolve() if exclude is not None else None
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or is_partial(path):
            continue
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
            continue
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        found.append(path)
    return sorted(found)


def output_is_folder(inputs: Sequence[Path], output: Path) -> bool:
    """Whether ``-o`` names a folder: several inputs, a folder input, an existing folder,
    or a name without a suffix."""
    return (len(inputs) > 1 or any(p.is_dir() for p in inputs) or output.is_dir()
            or output.suffix == "")


def plan_jobs(
    inputs: Sequence[Path], output: Path | None = None, tag: str = ".fixed"
) -> list[Job]:
    """The jobs of a batch (see the module docstring for the rules); raises
    :class:`UsageError` for a batch that cannot run as asked."""
    if not inputs:
        raise UsageError("give at least one video or folder")
    into_folder = output is not None and output_is_folder(inputs, output)
    if output is not None and into_folder and output.suffix.lower() in VIDEO_SUFFIXES:
        raise UsageError(f"several inputs need -o to name a folder, not the file {output}")
    jobs: list[Job] = []
    for item in inputs:
        if item.is_dir():
            exclude = output if into_folder else None
            for path in find_videos(item, exclude):
                jobs.append(_job(path, path.relative_to(item), output, into_folder, tag))
        else:
            jobs.append(_job(item, Path(item.name), output, into_folder, tag))
    if not jobs:
        raise UsageError(f"no videos found in {', '.join(map(str, inputs))}")
    _refuse_collisions(jobs)
    return jobs


def _job(path: Path, label: Path, output: Path | None, into_folder: bool, tag: str) -> Job:
    if output is None:
        return Job(path, None, label)
    if not into_folder:
        return Job(path, output, label)
    return Job(path, output / label.parent / f"{label.stem}{tag}{label.suffix}", label)


def _refuse_collisions(jobs: Sequence[Job]) -> None:
    seen_in: dict[Path, Job] = {}
    seen_out: dict[Path, Job] = {}
    inputs = {job.input.resolve() for job in jobs}
    for job in jobs:
        key = job.input.resolve()
        if key in seen_in:
            raise UsageError(f"{job.input} is given twice")
        seen_in[key] = job
        if job.output is None:
            continue
        out = job.output.resolve()
        if out in inputs:
            raise UsageError(f"the output {job.output} is one of the inputs")
        if out in seen_out:
            raise UsageError(f"{seen_out[out].input} and {job.input} would both be written to "
                             f"{job.output}; give them separately or rename one")
        seen_out[out] = job


def parse_shard(spec: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes K/N such as 3/16, not {spec!r}") from None
    if not 1 <= k <= n:
        raise UsageError(f"--shard K/N needs 1 <= K <= N, got {spec}")
    return k, n


def select_shard(jobs: Sequence[Job], spec: str | None) -> list[Job]:
    """Every N-th job of the list sorted by input path, from the K-th (all when None)."""
    ordered = sorted(jobs, key=lambda job: str(job.input))
    if spec is None:
        return ordered
    k, n = parse_shard(spec)
    return ordered[k - 1 :: n]


def remove_stale_partials(target: Path) -> int:
    """Delete temporary files a killed run left for ``target``; returns how many."""
    removed = 0
    if target.parent.is_dir():
        for path in target.parent.glob(f".{target.stem}.*"):
            if is_partial(path) and path.suffix == target.suffix:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


# --------------------------------------------------------------------------- reports


def check_report_path(report: Path, inputs: Iterable[Path], force: bool = False) -> None:
    """Refuse a report that would destroy something: a name that is not ``.csv`` or
    ``.jsonl``, an input, a folder, or an existing file that is not a report of ours
    (unless ``force``). A report of ours is fine: the run resumes from its journal."""
    if report.suffix.lower() not in REPORT_SUFFIXES:
        raise UsageError(f"the report must end in .csv or .jsonl, not {report.name}")
    if report.is_dir():
        raise UsageError(f"the report {report} is a folder")
    if not report.parent.is_dir():
        raise UsageError(f"the report's folder {report.parent} does not exist")
    resolved = report.resolve()
    if any(path.resolve() == resolved for path in inputs):
        raise UsageError(f"the report {report} is one of the inputs")
    if report.exists() and not force:
        try:
            read_report(report)
        except LipsyncError:
            raise OutputExistsError(
                f"{report} exists and is not a lipsync-fix report; use --force to replace it"
            ) from None


def read_report(path: Path) -> list[dict]:
    """The records of a ``.csv`` or ``.jsonl`` report (a journal reads as ``.jsonl``)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LipsyncError(f"cannot read the report {path}: {exc}") from exc
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if text.strip() and (not rows or "input" not in rows[0]):
            raise LipsyncError(f"{path} is not a lipsync-fix report (no 'input' column)")
        return rows
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise LipsyncError(f"{path}: line {number} is not JSON") from None
        if not isinstance(record, dict) or "input" not in record:
            raise LipsyncError(f"{path}: line {number} is not a lipsync-fix record")
        records.append(record)
    return records


def write_report(path: Path, records: Sequence[dict]) -> Path:
    """Write ``records`` as CSV (the main fields) or JSON lines (everything), atomically."""
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        fields = CSV_FIELDS + sorted({k for r in records for k in r} - set(CSV_FIELDS)
                                     - {"scores", "offsets_over_time", "segments"})
        writer = csv.DictWriter(buffer, fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: _csv_value(v) for k, v in record.items()})
        text = buffer.getvalue()
    else:
        text = "".join(json.dumps(r) + "\n" for r in records)
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def _csv_value(value: object) -> object:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def merge_reports(paths: Sequence[Path], output: Path, force: bool = False) -> list[dict]:
    """One report from the per-shard reports of a fanned-out run: every record once (the
    last one of an input wins), sorted by input."""
    if output.exists() and not force:
        raise OutputExistsError(f"{output} exists; use --force to replace it")
    check_report_path(output, paths, force=True)
    merged: dict[str, dict] = {}
    for path in paths:
        if not path.is_file():
            raise UsageError(f"report {path} does not exist")
        for record in read_report(path):
            merged[str(record["input"])] = record
    records = [merged[key] for key in sorted(merged)]
    write_report(output, records)
    return records


class Journal:
    """Per-input results of a batch, appended as JSON lines as each input finishes.

    One ``write`` + ``fsync`` per line: a ``kill -9`` loses at most the input in progress,
    never one already done. Reading skips a torn last line.
    """

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def beside(cls, report: Path) -> Journal:
        return cls(report.with_name(report.name + JOURNAL_SUFFIX))

    def read(self) -> dict[str, dict]:
        """The latest record of every input, keyed by input path."""
        done: dict[str, dict] = {}
        if not self.path.is_file():
            return done
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if isinstance(record, dict) and "input" in record:
                done[str(record["input"])] = record
        return done

    def append(self, record: dict) -> None:
        data = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- running


@dataclass
class BatchResult:
    records: list[dict]
    failed: int
    skipped: int


Work = Callable[[Job], dict]
"""Processes one job and returns its record; raises :class:`LipsyncError` on bad input."""


def run_batch(
    jobs: Sequence[Job],
    work: Work,
    *,
    report: Path | None = None,
    force: bool = False,
    on_record: Callable[[Job, dict], None] | None = None,
) -> BatchResult:
    """Run ``work`` on every job: a failure never stops the others, finished inputs are
    skipped on a rerun (see the module docstring), and the report holds one record per
    input of this run and of earlier runs of the same report."""
    journal = Journal.beside(report) if report is not None else None
    if journal is not None and force:
        journal.reset()
    earlier = journal.read() if journal is not None else {}
    records: dict[str, dict] = dict(earlier)
    failed = skipped = 0
    for job in jobs:
        key = str(job.input)
        previous = earlier.get(key)
        if not force and previous is not None and "error" not in previous \
                and (job.output is None or job.output.exists()):
            record = previous | {"skipped": "done earlier"}
            skipped += 1
        elif not force and job.output is not None and job.output.exists():
            record = {"input": key, "output": str(job.output), "skipped": "output exists"}
            skipped += 1
        else:
            if job.output is not None:
                remove_stale_partials(job.output)
                job.output.parent.mkdir(parents=True, exist_ok=True)
            try:
                record = work(job)
            except LipsyncError as exc:
                record = {"input": key, "error": str(exc)}
                if job.output is not None:
                    record["output"] = str(job.output)
                failed += 1
            if journal is not None:
                journal.append(record)
        stored = {k: v for k, v in record.items() if k != "skipped"} \
            if record.get("skipped") == "done earlier" else record
        records[key] = stored
        if on_record is not None:
            on_record(job, record)
    ordered = [records[k] for k in sorted(records)]
    if report is not None:
        write_report(report, ordered)
    return BatchResult(ordered, failed, skipped)
