"""Batch runs over files and folders, for shell scripts and cluster jobs.

The policy of a batch lives here, not in the command line:

* **inputs**: files as given; folders searched recursively for videos. Hidden files and
  everything inside the output folder are left out, so a rerun never processes its own
  outputs or a killed run's temporary files. The output folder may lie inside an input
  folder, but may not be one;
* **outputs**: one input and ``-o FILE`` writes that file, which must not exist unless
  ``--force`` (a usage error before anything runs). Otherwise ``-o`` is a folder that
  mirrors the input tree (``in/x/clip.mp4`` -> ``OUT/x/clip.fixed.mp4``); it is created if
  missing, but its parent must exist (as for ``-o FILE``). Two inputs that would write one
  output are an error before anything runs, never a skip;
* **shards**: ``K/N`` keeps every N-th job of the list sorted by input, starting with the
  K-th, so the N shards of a Slurm array or GNU parallel cover every input exactly once;
* **resume**: with a report, every finished input is appended to a journal beside it (JSON
  lines, written and synced per input). A rerun of the same command after ``kill -9``
  skips what the journal holds (an input that failed is tried again), and the report,
  rewritten from the journal when the run ends, keeps the measurements of earlier runs.
  Without a journal, an existing output is skipped (``--force`` redoes it). Temporary
  files a killed run left for an output of this run are removed;
* **report**: ``.csv`` or ``.jsonl``; it is never written over a file that is not a report
  (nor over an input), and it appears atomically. One report per shard: merge them with
  ``lipsync-fix report merge``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lipsync_fix.errors import LipsyncError, OutputError, OutputExistsError, UsageError
from lipsync_fix.files import is_partial, stale_partials, write_atomically
from lipsync_fix.media import VIDEO_SUFFIXES

REPORT_SUFFIXES = (".csv", ".jsonl")
CSV_FIELDS = ["input", "output", "audio_delay_ms", "audio_delay_frames", "worst_audio_delay_ms",
              "confidence", "verdict",
              "model", "face_coverage", "windows_used", "fps", "duration_s", "skipped", "error"]
JOURNAL_SUFFIX = ".journal"
DONE_EARLIER, OUTPUT_EXISTS = "done earlier", "output exists"


@dataclass(frozen=True)
class Job:
    """One input of a batch and where its output goes (None: the command writes none).

    ``label`` is the input's path relative to the folder it was found in (its name when it
    was given directly): unique within a batch, it names the mirrored output.
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
    inputs: Sequence[Path],
    output: Path | None = None,
    *,
    tag: str = ".fixed",
    suffix: str | None = None,
    force: bool = False,
    option: str = "-o",
) -> list[Job]:
    """The jobs of a batch (see the module docstring for the rules).

    ``tag`` and ``suffix`` name a mirrored output (``clip.mp4`` -> ``clip{tag}{suffix}``;
    the input's own suffix when None); a single output file must end in ``suffix``, or be
    a video when it is None. ``option`` names the option in messages. Raises
    :class:`UsageError` (or :class:`OutputError`) for a batch that cannot run as asked,
    before anything is read or written.
    """
    if not inputs:
        raise UsageError("give at least one video or folder")
    into_folder = output is not None and output_is_folder(inputs, output)
    if output is not None:
        check_output(output, into_folder=into_folder, suffix=suffix, force=force,
                     option=option)
    jobs: list[Job] = []
    for item in inputs:
        if item.is_dir():
            exclude = None
            if output is not None and into_folder:
                exclude = _inside_input_folder(output, item, option)
            for path in find_videos(item, exclude):
                label = path.relative_to(item)
                jobs.append(_job(path, label, output, into_folder, tag, suffix))
        else:
            jobs.append(_job(item, Path(item.name), output, into_folder, tag, suffix))
    if not jobs:
        raise UsageError(f"no videos found in {', '.join(map(str, inputs))}")
    _refuse_collisions(jobs)
    return jobs


def check_output(output: Path, *, into_folder: bool = False, suffix: str | None = None,
                 force: bool = False, option: str = "-o") -> None:
    """The output named on the command line can be written: checked before any work, so
    a typo costs nothing (and no folder is made for it). A single output must end in
    ``suffix`` (a video suffix when None) and not exist unless ``force``; a folder of
    outputs may be missing, but not its parent."""
    kind = suffix.lstrip(".").upper() if suffix else "video"
    if into_folder:
        if output.exists() and not output.is_dir():
            raise OutputError(f"{option} {output} is a file, but several inputs need a folder")
        if not output.exists() and (output.suffix.lower() in VIDEO_SUFFIXES
                                    or (suffix and output.suffix.lower() == suffix)):
            raise UsageError(f"several inputs need {option} to name a folder, not the file "
                             f"{output}")
        parent = output if output.is_dir() else output.parent
    else:
        wanted = {suffix} if suffix else VIDEO_SUFFIXES
        if output.suffix.lower() not in wanted:
            choices = ", ".join(sorted(wanted))
            raise UsageError(f"{option} {output} must be a {kind} file ({choices})")
        if output.exists() and not force:
            raise OutputExistsError(f"{output} exists; use --force to overwrite it")
        parent = output.parent
    if not parent.is_dir():
        raise OutputError(f"the folder {parent} of {option} {output} does not exist; "
                          "create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write into {parent} ({option} {output})")


def _inside_input_folder(output: Path, folder: Path, option: str) -> Path | None:
    """The output folder to leave out of ``folder``'s search; refuses the input folder
    itself (its outputs would become inputs of the next run)."""
    if output.resolve() == folder.resolve():
        raise UsageError(f"{option} {output} is the input folder; give the outputs a folder "
                         f"of their own (for example {folder / 'fixed'})")
    return output


def _job(path: Path, label: Path, output: Path | None, into_folder: bool, tag: str,
         suffix: str | None) -> Job:
    if output is None:
        return Job(path, None, label)
    if not into_folder:
        return Job(path, output, label)
    name = f"{label.stem}{tag}{suffix if suffix is not None else label.suffix}"
    return Job(path, output / label.parent / name, label)


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
                             f"{job.output}; pass the folder that holds them (outputs mirror "
                             "its tree) or run them separately")
        seen_out[out] = job


def parse_shard(spec: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes K/N such as 3/16, not {spec!r}") from None
    if not 1 <= k <= n:
        raise UsageError(f"--shard K/N needs 1 <= K <= N, got {spec!r}")
    return k, n


def select_shard(jobs: Sequence[Job], spec: str | None) -> list[Job]:
    """Every N-th job of the list sorted by input path, from the K-th (all when None).

    The order depends on the inputs alone, so N processes given the same arguments and
    K = 1..N split the work without talking to each other."""
    ordered = sorted(jobs, key=lambda job: str(job.input))
    if spec is None:
        return ordered
    k, n = parse_shard(spec)
    return ordered[k - 1 :: n]


def remove_stale_partials(target: Path) -> int:
    """Delete temporary files a killed run left for ``target``; returns how many."""
    leftovers = stale_partials(target)
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


# --------------------------------------------------------------------------- reports


def check_report_path(report: Path, inputs: Iterable[Path], force: bool = False) -> None:
    """Refuse a report that would destroy something: a name that is not ``.csv`` or
    ``.jsonl``, an input, a folder, or an existing file that is not a report of ours
    (unless ``force``). A report of ours is fine: the run resumes from its journal. Like
    every output, the report's folder must exist."""
    if report.suffix.lower() not in REPORT_SUFFIXES:
        raise UsageError(f"the report must end in .csv or .jsonl, not {report.name}")
    if report.is_dir():
        raise OutputError(f"the report {report} is a folder")
    if not report.parent.is_dir():
        raise OutputError(f"the folder {report.parent} of the report does not exist; "
                          "create it first")
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
    """The records of a ``.csv`` or ``.jsonl`` report."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LipsyncError(f"cannot read the report {path}: {exc}") from exc
    if path.suffix.lower() == ".csv":
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as exc:
            raise LipsyncError(f"{path} is not a lipsync-fix report ({exc})") from None
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
                                     - {"scores", "offsets_over_time", "spans",
                                        "face_thumbnail"})
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
    last one of an input wins), sorted by input. Every report is read before anything is
    written, and the merged report may not replace one of them."""
    check_report_path(output, paths, force=True)
    if output.exists() and not force:
        raise OutputExistsError(f"{output} exists; use --force to replace it")
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
    never one already done. Reading skips a line torn by a kill, and the next append
    starts on a fresh line so the torn one cannot swallow it.
    """

    def __init__(self, path: Path):
        self.path = path
        self._checked_end = False

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
        if not self._checked_end:
            data = self._newline_if_torn() + data
            self._checked_end = True
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _newline_if_torn(self) -> bytes:
        try:
            with self.path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return b""
                f.seek(-1, os.SEEK_END)
                return b"" if f.read(1) == b"\n" else b"\n"
        except FileNotFoundError:
            return b""


# --------------------------------------------------------------------------- running


@dataclass
class BatchResult:
    records: list[dict]
    failed: int
    skipped: int


Work = Callable[[Job], dict]
"""Processes one job and returns its record; raises :class:`LipsyncError` on bad input.
It writes ``job.output`` (if any) after :func:`make_output_folder`."""


def _earlier_report(report: Path) -> dict[str, dict]:
    """The records of an existing report of ours (none when there is none, or when it is
    not ours and ``--force`` allowed replacing it)."""
    if not report.is_file():
        return {}
    try:
        return {str(r["input"]): r for r in read_report(report)}
    except LipsyncError:
        return {}


def make_output_folder(output: Path) -> Path:
    """Create the folder of a batch output just before the output is written (not when
    its input starts): an input that fails leaves no empty folder, and shards writing
    into one tree never remove a folder another shard is about to use."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return output


def _error_record(job: Job, message: str) -> dict:
    record = {"input": str(job.input), "error": message}
    if job.output is not None:
        record["output"] = str(job.output)
    return record


def run_batch(
    jobs: Sequence[Job],
    work: Work,
    *,
    report: Path | None = None,
    force: bool = False,
    on_record: Callable[[Job, dict], None] | None = None,
    reraise: bool = False,
) -> BatchResult:
    """Run ``work`` on every job: a failure never stops the others, finished inputs are
    skipped on a rerun (see the module docstring), and the report holds one record per
    input of this run and of earlier runs of the same report.

    A :class:`LipsyncError` is that input's failure. Any other exception is a bug in
    lipsync-fix, but one input hitting it should not cost the rest of a long batch: it is
    recorded as an internal error, unless ``reraise`` (``--debug``) asks for the traceback.
    """
    journal = Journal.beside(report) if report is not None else None
    records: dict[str, dict] = {}
    if report is not None:
        remove_stale_partials(report)
        records.update(_earlier_report(report))
    earlier = journal.read() if journal is not None else {}
    records.update(earlier)
    failed = skipped = 0
    try:
        for job in jobs:
            key = str(job.input)
            if job.output is not None:
                remove_stale_partials(job.output)
            previous = earlier.get(key)
            output_there = job.output is not None and job.output.exists()
            if not force and previous is not None and "error" not in previous \
                    and (job.output is None or output_there):
                record = previous | {"skipped": DONE_EARLIER}
                skipped += 1
            elif not force and output_there:
                record = {"input": key, "output": str(job.output), "skipped": OUTPUT_EXISTS}
                records.setdefault(key, record)  # never in place of a measurement
                skipped += 1
            else:
                try:
                    record = work(job)
                except LipsyncError as exc:
                    record = _error_record(job, str(exc))
                    failed += 1
                except Exception as exc:
                    if reraise:
                        raise
                    record = _error_record(job, f"an internal error in lipsync-fix: "
                                                f"{type(exc).__name__}: {exc}")
                    failed += 1
                if journal is not None:
                    journal.append(record)
                records[key] = record
            if on_record is not None:
                on_record(job, record)
    finally:  # also after Ctrl-C: the report shows what was done (the journal has it all)
        ordered = [records[k] for k in sorted(records)]
        if report is not None:
            write_report(report, ordered)
    return BatchResult(ordered, failed, skipped)
