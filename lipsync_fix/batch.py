"""Batch runs over files and folders, for shell scripts and cluster jobs.

The policy of a batch lives here, not in the command line:

* **inputs**: files as given; folders searched recursively for videos. Hidden files and
  everything inside the output folder are left out, so a rerun never processes its own
  outputs or a killed run's temporary files. The output folder may lie inside an input
  folder, but may not be one. A folder that cannot be read is a usage error (its videos
  would otherwise be left out without a word);
* **outputs**: one input and ``-o FILE`` writes that file, which must not exist unless
  ``--force`` (a usage error before anything runs). Otherwise ``-o`` is a folder that
  mirrors the input tree (``in/x/clip.mp4`` -> ``OUT/x/clip.fixed.mp4``); it is created if
  missing, but its parent must exist (as for ``-o FILE``). Two inputs that would write one
  output are an error before anything runs, never a skip;
* **shards**: ``K/N`` keeps every N-th job of the list sorted by input, starting with the
  K-th, so the N shards of a Slurm array or GNU parallel cover every input exactly once;
* **resume**: with a report, every finished input is appended to a journal beside it (JSON
  lines, written and synced per input). Each row records what its result depends on
  (:class:`Provenance`: the command, the model's name and SHA-256, every option that
  changes the result, and the input's :class:`~lipsync_fix.files.Fingerprint`). A rerun
  skips an input whose row matches all of it ("done earlier"); any other row is measured
  again, saying why ("measured again: the model changed"), and a row of an older
  lipsync-fix, which recorded none of it, is never trusted. A journal or report of another
  command is a usage error before anything runs. An input that failed is tried again.
  Without a journal, an existing output is skipped (``--force`` redoes it). Temporary
  files a killed run left for an output of this run are removed;
* **changed inputs**: an input whose fingerprint changes while it is processed fails (its
  result describes a file that is gone) and an output written for it is removed;
* **a full disk** (or a read-only file system, or a journal that cannot be written) stops
  the run cleanly: the journal keeps every input done, never a torn row, the report is
  written if it can be, and the error names the path and the cause;
* **report**: ``.csv`` or ``.jsonl`` of one command's records, typed by that command's
  :class:`~lipsync_fix.records.RecordSchema`, so a CSV reads back with its numbers as
  numbers; it is never written over a file that is not a report (nor over an input), and
  it appears atomically. One report per shard: :func:`merge_reports` joins them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lipsync_fix.errors import (
    InputChangedError,
    LipsyncError,
    OutputError,
    OutputExistsError,
    StorageError,
    UsageError,
)
from lipsync_fix.files import (
    Fingerprint,
    cause,
    describe_change,
    fingerprint,
    is_partial,
    os_failure,
    stale_partials,
    stops_the_run,
    write_atomically,
)
from lipsync_fix.media import VIDEO_SUFFIXES
from lipsync_fix.records import RecordError, RecordSchema, canonical

REPORT_SUFFIXES = (".csv", ".jsonl")
JOURNAL_SUFFIX = ".journal"
DONE_EARLIER, OUTPUT_EXISTS = "done earlier", "output exists"
ROW_KEYS = ("kind", "provenance")
"""What a journal or report row holds beyond the command's own record."""


@dataclass(frozen=True)
class Job:
    """One input of a batch and where its output goes (None: the command writes none).

    ``label`` is the input's path relative to the folder it was found in (its name when it
    was given directly): unique within a batch, it names the mirrored output.
    ``fingerprint`` is the input's when its work began (set by :func:`run_batch`).
    """

    input: Path
    output: Path | None
    label: Path
    fingerprint: Fingerprint | None = field(default=None, compare=False)

    def check_unchanged(self) -> None:
        """Raise :class:`InputChangedError` when the input is no longer the file whose
        work began: a command calls it right before it writes an output, so that a fix
        is never made from an estimate of a file that was replaced meanwhile."""
        if self.fingerprint is None:
            return
        now = fingerprint(self.input)
        if not self.fingerprint.same_content(now):
            raise InputChangedError(_changed(self.input, self.fingerprint, now))


def _changed(path: Path, before: Fingerprint, after: Fingerprint) -> str:
    return (f"{path} changed while it was processed ({describe_change(before, after)}); "
            "its result was discarded: run again to process it as it is now")


def find_videos(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Videos under ``folder`` (recursive, sorted), without hidden files and folders and
    without anything under ``exclude``. A folder that cannot be read is a
    :class:`UsageError` naming it, not a silent gap in the list."""
    skip = exclude.resolve() if exclude is not None else None

    def refuse(exc: OSError) -> None:
        raise UsageError(f"cannot read the folder {exc.filename}: {cause(exc)}")

    found = []
    for root, dirs, files in os.walk(folder, onerror=refuse):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (skip is None or not (here / d).resolve().is_relative_to(skip)))
        for name in files:
            path = here / name
            if name.startswith(".") or is_partial(path):
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


SuffixOf = Callable[[Path], str]
"""The suffix of a mirrored output, given its input's path (``clip.flv`` -> ``.mkv``)."""


def plan_jobs(
    inputs: Sequence[Path],
    output: Path | None = None,
    *,
    tag: str = ".fixed",
    suffix: str | None = None,
    force: bool = False,
    option: str = "-o",
    suffix_of: SuffixOf | None = None,
    check_file: Callable[[Path], object] | None = None,
) -> list[Job]:
    """The jobs of a batch (see the module docstring for the rules).

    ``tag`` and ``suffix`` name a mirrored output (``clip.mp4`` -> ``clip{tag}{suffix}``);
    without ``suffix``, ``suffix_of`` decides it from the input (default: the input's own
    suffix). A single output file must end in ``suffix``, or pass ``check_file`` (default:
    be a video), the same check its writer makes at the end. ``option`` names the option
    in messages. Raises :class:`UsageError` (or :class:`OutputError`) for a batch that
    cannot run as asked, before anything is read or written.
    """
    if not inputs:
        raise UsageError("give at least one video or folder")
    into_folder = output is not None and output_is_folder(inputs, output)
    if output is not None:
        check_output(output, into_folder=into_folder, suffix=suffix, force=force,
                     option=option, check_file=check_file)
    name_suffix: SuffixOf = (lambda _: suffix) if suffix is not None else \
        (suffix_of or (lambda path: path.suffix))
    jobs: list[Job] = []
    for item in inputs:
        if item.is_dir():
            exclude = None
            if output is not None and into_folder:
                exclude = _inside_input_folder(output, item, option)
            for path in find_videos(item, exclude):
                label = path.relative_to(item)
                jobs.append(_job(path, label, output, into_folder, tag, name_suffix))
        else:
            jobs.append(_job(item, Path(item.name), output, into_folder, tag, name_suffix))
    if not jobs:
        raise UsageError(f"no videos found in {', '.join(map(str, inputs))}")
    _refuse_collisions(jobs)
    return jobs


def check_output(output: Path, *, into_folder: bool = False, suffix: str | None = None,
                 force: bool = False, option: str = "-o",
                 check_file: Callable[[Path], object] | None = None) -> None:
    """The output named on the command line can be written: checked before any work, so
    a typo costs nothing (and no folder is made for it). A single output must end in
    ``suffix`` (or pass ``check_file``; a video suffix when neither is given) and not
    exist unless ``force``; a folder of outputs may be missing, but not its parent."""
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
        if check_file is not None and suffix is None:
            check_file(output)
        else:
            wanted = {suffix} if suffix else VIDEO_SUFFIXES
            if output.suffix.lower() not in wanted:
                choices = ", ".join(sorted(wanted))
                raise UsageError(f"{option} {output} must be a {kind} file ({choices})")
        if output.is_dir():
            raise OutputError(f"{option} {output} is a folder")
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
         suffix_of: SuffixOf) -> Job:
    if output is None:
        return Job(path, None, label)
    if not into_folder:
        return Job(path, output, label)
    return Job(path, output / label.parent / f"{label.stem}{tag}{suffix_of(label)}", label)


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


# --------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Provenance:
    """What a command's results depend on besides the input itself: the command (its
    record schema), the model's identity (``{"name", "sha256"}``; empty when the command
    uses none) and every option that changes the result (a dict, compared as JSON).

    A row records these and the input's fingerprint; :meth:`stale_reason` says why a row
    may not be reused, in words for the line "measured again: ..."."""

    schema: RecordSchema
    model: Mapping[str, object] = field(default_factory=dict)
    options: Mapping[str, object] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.schema.kind

    def stamp(self, record: Mapping, found: Fingerprint | None) -> dict:
        """The journal/report row of ``record``: it, ``kind`` and (for a result)
        ``provenance``. A failure carries only its kind: it is retried anyway."""
        row = {k: v for k, v in record.items() if k not in ROW_KEYS} | {"kind": self.kind}
        if "error" not in record and "skipped" not in record and found is not None:
            row["provenance"] = {"model": canonical(self.model),
                                 "options": canonical(self.options),
                                 "fingerprint": found.to_json()}
        return row

    def stale_reason(self, row: Mapping, found: Fingerprint) -> str | None:
        """None when ``row`` was measured by this command, with this model and these
        options, on this content; otherwise why not."""
        recorded = row.get("provenance")
        if not isinstance(recorded, Mapping):
            return ("it was measured by an older lipsync-fix, which did not record the model, "
                    "the options or the input")
        model = recorded.get("model")
        if model != canonical(self.model):
            was = model.get("name") if isinstance(model, Mapping) else None
            now = self.model.get("name")
            return (f"the model changed ({was} -> {now})" if was and now and was != now
                    else "the model changed")
        options = recorded.get("options")
        wanted = canonical(self.options)
        if options != wanted:
            if not isinstance(options, Mapping):
                return "the options changed"
            changed = [f"{name} {options.get(name)!r} -> {wanted.get(name)!r}"
                       for name in sorted(set(options) | set(wanted))  # type: ignore[arg-type]
                       if options.get(name) != wanted.get(name)]  # type: ignore[union-attr]
            return f"the options changed ({', '.join(changed)})"
        before = Fingerprint.from_json(recorded.get("fingerprint"))
        if before is None:
            return "its row records no fingerprint of the input"
        if not before.same_content(found):
            return f"the input changed ({describe_change(before, found)})"
        return None


def public(row: Mapping) -> dict:
    """A row without what only the journal and report need: the command's own record."""
    return {k: v for k, v in row.items() if k not in ROW_KEYS}


def is_measurement(row: Mapping) -> bool:
    return "error" not in row and "skipped" not in row


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class Report:
    """The records of one report file and the command that wrote them (None when it
    holds none that says, e.g. only failures of an older lipsync-fix)."""

    path: Path
    kind: str | None
    records: list[dict]


Schemas = Mapping[str, RecordSchema]


def _as_schemas(schemas: Schemas | RecordSchema) -> dict[str, RecordSchema]:
    if isinstance(schemas, RecordSchema):
        return {schemas.kind: schemas}
    return dict(schemas)


def _kind_of(row: Mapping, schemas: Schemas, where: str) -> str | None:
    """The command a row comes from: its ``kind``, or, for a row of an older lipsync-fix,
    the command whose measurements have its fields (None for a bare failure)."""
    kind = row.get("kind")
    if kind is not None:
        if kind not in schemas:
            raise RecordError(f"{where} is a record of {kind!r}, not of "
                              f"{' or '.join(sorted(schemas))}")
        return str(kind)
    if not is_measurement(row):
        return None
    fits = sorted((s for s in schemas.values() if s.recognises(row)),
                  key=lambda s: -len(s.signature))
    if not fits:
        raise RecordError(f"{where} is not a record of {' or '.join(sorted(schemas))}")
    return fits[0].kind


def read_report(path: Path, schemas: Schemas | RecordSchema, strict: bool = True) -> Report:
    """The records of a ``.csv`` or ``.jsonl`` report, typed by the schema of the command
    that wrote them (one of ``schemas``). Raises :class:`LipsyncError` for a file that is
    not such a report, or that mixes the records of several commands. Not ``strict``, a
    row whose values are not of its schema's types is kept as it is (for a page that
    shows it as unreadable) instead of refusing the report."""
    known = _as_schemas(schemas)
    try:
        with open(path, encoding="utf-8", newline="") as f:  # a CR inside a cell is data
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = cause(exc) if isinstance(exc, OSError) else "it is not text"
        raise LipsyncError(f"cannot read the report {path}: {reason}") from exc
    raw: list[tuple[str, dict]] = []
    if path.suffix.lower() == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(text))
            rows = list(reader)
        except csv.Error as exc:
            raise LipsyncError(f"{path} is not a lipsync-fix report ({exc})") from None
        if text.strip() and "input" not in (reader.fieldnames or []):
            raise LipsyncError(f"{path} is not a lipsync-fix report (no 'input' column)")
        for number, row in enumerate(rows, 2):
            raw.append((f"{path}: line {number}", {k: v for k, v in row.items()
                                                   if k is not None and v not in (None, "")}))
    else:
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise LipsyncError(f"{path}: line {number} is not JSON") from None
            if not isinstance(record, dict) or "input" not in record:
                raise LipsyncError(f"{path}: line {number} is not a lipsync-fix record")
            raw.append((f"{path}: line {number}", record))
    kinds = {k for where, row in raw if (k := _kind_of(row, known, where)) is not None}
    if len(kinds) > 1:
        raise LipsyncError(f"{path} mixes records of {' and '.join(sorted(kinds))}")
    kind = next(iter(kinds), None)
    schema = known[kind] if kind is not None else next(iter(known.values()))
    csv_form = path.suffix.lower() == ".csv"
    records = []
    for where, row in raw:
        try:
            records.append(schema.from_csv_row(row, where) if csv_form
                           else schema.check(row, where))
        except RecordError:
            if strict:
                raise
            records.append(dict(row))
    return Report(path, kind, records)


def write_report(path: Path, records: Sequence[dict], schema: RecordSchema) -> Path:
    """Write ``records`` as CSV (the schema's columns) or JSON lines (everything),
    atomically."""
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        # CRLF (RFC 4180): a CR or LF inside a cell is then quoted, so it reads back
        writer = csv.DictWriter(buffer, schema.csv_columns, lineterminator="\r\n")
        writer.writeheader()
        for record in records:
            writer.writerow(schema.csv_row(record))
        text = buffer.getvalue()
    else:
        text = "".join(json.dumps(r) + "\n" for r in records)
    return write_atomically(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))


def check_report_path(report: Path, inputs: Iterable[Path], force: bool = False,
                      schema: RecordSchema | None = None) -> None:
    """Refuse, before any work, a report that would destroy something or mix commands: a
    name that is not ``.csv`` or ``.jsonl``, an input, a folder, a folder that cannot be
    written, an existing file that is not a report of ours (unless ``force``), and a report
    or journal of another command than ``schema``'s (even with ``force``: its rows would
    be mixed with ours). A report of this command is fine: the run resumes from it."""
    if report.suffix.lower() not in REPORT_SUFFIXES:
        raise UsageError(f"the report must end in .csv or .jsonl, not {report.name}")
    if report.is_dir():
        raise OutputError(f"the report {report} is a folder")
    if not report.parent.is_dir():
        raise OutputError(f"the folder {report.parent} of the report does not exist; "
                          "create it first")
    if not os.access(report.parent, os.W_OK):
        raise OutputError(f"cannot write into {report.parent} (the folder of the report "
                          f"{report})")
    journal = Journal.beside(report).path
    if journal.is_dir():
        raise OutputError(f"the journal {journal} of the report {report} is a folder")
    if journal.exists() and not os.access(journal, os.W_OK):
        raise OutputError(f"cannot write the journal {journal} of the report {report}")
    resolved = report.resolve()
    if any(path.resolve() == resolved for path in inputs):
        raise UsageError(f"the report {report} is one of the inputs")
    if schema is None:
        return
    if report.exists():
        try:
            read_report(report, schema)
        except RecordError as exc:
            raise UsageError(f"the report {report} is not one of {schema.kind} ({exc}); "
                             "give this command a report of its own") from None
        except LipsyncError:
            if not force:
                raise OutputExistsError(f"{report} exists and is not a lipsync-fix report; "
                                        "use --force to replace it") from None
    Journal(journal).read(schema)  # a journal of another command is refused here


def merge_reports(paths: Sequence[Path], output: Path, schemas: Schemas,
                  force: bool = False) -> Report:
    """One report from the per-shard reports of a fanned-out run: every input once,
    sorted by input, typed as its command's schema says. Every report is read before
    anything is written, and the merged report may not replace one of them.

    Refused (a :class:`UsageError`, nothing written): reports of different commands, and
    an input with two different measurements (named, with the reports and the fields
    that differ). Two copies of one record are one; a measurement takes the place of a
    failure or a skip of the same input (a retried shard)."""
    for path in paths:
        if path.is_dir():
            raise UsageError(f"{path} is a folder; name the reports in it (such as "
                             f"{path / '*.csv'})")
        if not path.is_file():
            raise UsageError(f"the report {path} does not exist")
    check_report_path(output, paths, force=True)
    if output.exists() and not force:
        raise OutputExistsError(f"{output} exists; use --force to replace it")
    reports = [read_report(path, schemas) for path in paths]
    kinds = {r.kind: r.path for r in reports if r.kind is not None}
    if len(kinds) > 1:
        which = ", ".join(f"{path} holds {kind} records" for kind, path in sorted(kinds.items()))
        raise UsageError(f"cannot merge the reports of different commands: {which}")
    kind = next(iter(kinds), None)
    schema = schemas[kind] if kind is not None else next(iter(schemas.values()))
    merged: dict[str, tuple[dict, Path]] = {}
    conflicts: list[str] = []
    for report in reports:
        for record in report.records:
            key = record["input"]
            if key not in merged:
                merged[key] = (record, report.path)
                continue
            kept, where = merged[key]
            if is_measurement(kept) and is_measurement(record):
                differ = _differences(kept, record)
                if differ:
                    conflicts.append(f"{key} ({where} and {report.path} differ in "
                                     f"{', '.join(differ)})")
                elif len(record) > len(kept):  # the JSON lines copy of a CSV row
                    merged[key] = (record, report.path)
            elif is_measurement(record) or not is_measurement(kept):
                merged[key] = (record, report.path)
    if conflicts:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise UsageError(f"{len(conflicts)} input{'s' if len(conflicts) != 1 else ''} "
                         f"{'have' if len(conflicts) != 1 else 'has'} two different "
                         f"measurements: {'; '.join(conflicts[:3])}{more}; merge the reports "
                         "of one run, or remove the record that is out of date")
    records = [merged[key][0] for key in sorted(merged)]
    write_report(output, records, schema)
    return Report(output, kind, records)


def _differences(a: Mapping, b: Mapping) -> list[str]:
    """The fields two measurements of one input both have and disagree on (a CSV row
    lacks the lists a JSON line has; the input's mtime alone is no difference)."""
    names = []
    for name in sorted(set(a) & set(b)):
        left, right = a[name], b[name]
        if name == "provenance" and isinstance(left, Mapping) and isinstance(right, Mapping):
            left, right = _without_mtime(left), _without_mtime(right)
        if left != right:
            names.append(name)
    return names


def _without_mtime(provenance: Mapping) -> dict:
    found = provenance.get("fingerprint")
    if isinstance(found, Mapping):
        return dict(provenance) | {"fingerprint": {k: v for k, v in found.items()
                                                   if k != "mtime"}}
    return dict(provenance)


class Journal:
    """Per-input results of a batch, appended as JSON lines as each input finishes.

    One ``write`` + ``fsync`` per line: a ``kill -9`` loses at most the input in progress,
    never one already done. Reading skips a line torn by a kill, and the next append
    starts on a fresh line so the torn one cannot swallow it. A write that fails (a full
    disk) is cut back off, so the journal never keeps half a row.
    """

    def __init__(self, path: Path):
        self.path = path
        self._checked_end = False

    @classmethod
    def beside(cls, report: Path) -> Journal:
        return cls(report.with_name(report.name + JOURNAL_SUFFIX))

    def read(self, schema: RecordSchema | None = None) -> dict[str, dict]:
        """The latest row of every input, keyed by input path. With ``schema``, a row of
        another command is a :class:`UsageError` (before anything runs), and a row that
        is not of the schema's types is left out like a torn one (so it is measured
        again, never trusted)."""
        done: dict[str, dict] = {}
        if not self.path.is_file():
            return done
        try:
            text = self.path.read_text(errors="replace")
        except OSError as exc:
            raise OutputError(f"cannot read the journal {self.path}: {cause(exc)}") from exc
        for number, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if not isinstance(row, dict) or not isinstance(row.get("input"), str):
                continue
            if schema is not None:
                where = f"line {number} of {self.path}"
                try:
                    other = _kind_of(row, {schema.kind: schema}, where)
                except RecordError:
                    other = row.get("kind") or "another command"
                if other is not None and other != schema.kind:
                    raise UsageError(
                        f"{self.path} is the journal of {other}, not of {schema.kind}; give "
                        "this command a report of its own (or delete the report and its "
                        "journal)")
                try:
                    row = schema.check(row, where)
                except RecordError:
                    continue
            done[row["input"]] = row
        return done

    def append(self, record: dict) -> None:
        """Add one row; :class:`StorageError` (naming the journal and the cause) when it
        cannot be written, after cutting off whatever part of the row got through."""
        data = (json.dumps(record) + "\n").encode()
        if not self._checked_end:
            data = self._newline_if_torn() + data
            self._checked_end = True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StorageError(f"cannot write the journal {self.path}: {cause(exc)}") from exc
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass  # the torn end is skipped by read() and fenced by the next append
                raise StorageError(f"cannot write the journal {self.path}: "
                                   f"{cause(exc)}") from exc
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
It writes ``job.output`` (if any) after :func:`make_output_folder`, and calls
``job.check_unchanged()`` right before it writes."""


def _earlier_rows(report: Path, schema: RecordSchema) -> dict[str, dict]:
    """The rows of an existing report of this command and of its journal (the journal's
    later rows win); none when there is no report, or when it is not ours and
    ``--force`` allowed replacing it."""
    rows: dict[str, dict] = {}
    if report.is_file():
        try:
            found = read_report(report, schema)
        except RecordError as exc:
            raise UsageError(f"the report {report} is not one of {schema.kind} ({exc})"
                             ) from None
        except LipsyncError:
            found = None
        if found is not None:
            rows.update((str(r["input"]), r) for r in found.records)
    rows.update(Journal.beside(report).read(schema))
    return rows


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


def _output_state(path: Path | None) -> tuple[int, int] | None:
    try:
        info = path.stat() if path is not None else None
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns) if info is not None else None


def run_batch(
    jobs: Sequence[Job],
    work: Work,
    *,
    report: Path | None = None,
    provenance: Provenance | None = None,
    force: bool = False,
    on_record: Callable[[Job, dict], None] | None = None,
    on_note: Callable[[Job, str], None] | None = None,
    reraise: bool = False,
) -> BatchResult:
    """Run ``work`` on every job: a failure never stops the others, finished inputs are
    skipped on a rerun when nothing they depend on changed (see the module docstring),
    and the report holds one row per input of this run and of earlier runs of the same
    report. ``provenance`` (required with a report) says what a result depends on;
    ``on_record`` gets each input's record, ``on_note`` a line about an input that is
    not the record (why it is measured again).

    A :class:`LipsyncError` is that input's failure, and so is an ``OSError`` about one
    input (an unreadable file). A full disk or a read-only file system
    (:class:`StorageError`) stops the run: the report is written if it can be and the
    error, naming the path and the cause, is raised. Any other exception is a bug in
    lipsync-fix, but one input hitting it should not cost the rest of a long batch: it is
    recorded as an internal error, unless ``reraise`` (``--debug``) asks for the traceback.
    """
    if report is not None and provenance is None:
        raise ValueError("a report needs the provenance of its rows")
    journal = Journal.beside(report) if report is not None else None
    rows: dict[str, dict] = {}
    if report is not None and provenance is not None:
        remove_stale_partials(report)
        rows = _earlier_rows(report, provenance.schema)
    failed = skipped = 0
    pending: BaseException | None = None

    def note(job: Job, message: str) -> None:
        if on_note is not None:
            on_note(job, message)

    def stamp(record: dict, found: Fingerprint | None) -> dict:
        return provenance.stamp(record, found) if provenance is not None else record

    try:
        for job in jobs:
            key = str(job.input)
            if job.output is not None:
                remove_stale_partials(job.output)
            previous = rows.get(key)
            try:
                found: Fingerprint | None = fingerprint(job.input)
            except LipsyncError as exc:
                if stops_the_run(exc):
                    raise
                found, reason, unreadable = None, None, str(exc)
            else:
                unreadable = None
                reason = (provenance.stale_reason(previous, found)
                          if previous is not None and is_measurement(previous)
                          and provenance is not None else None)
            output_there = job.output is not None and job.output.exists()
            usable = unreadable is None and previous is not None \
                and is_measurement(previous) and reason is None
            if usable and not force and (job.output is None or output_there):
                record = public(previous) | {"skipped": DONE_EARLIER}  # type: ignore[arg-type]
                skipped += 1
            elif unreadable is None and not force and output_there:
                if reason is not None:
                    note(job, f"{job.input}: not measured again although {reason}: its "
                              f"output {job.output} exists (use --force to redo it)")
                record = {"input": key, "output": str(job.output), "skipped": OUTPUT_EXISTS}
                rows[key] = stamp(record, found)  # never a stale measurement in its place
                skipped += 1
            else:
                if reason is not None:
                    note(job, f"{job.input}: measured again: {reason}")
                record = (_error_record(job, unreadable) if unreadable is not None
                          else _attempt(job, found, work, reraise))
                failed += "error" in record
                row = stamp(record, found)
                if journal is not None:
                    journal.append(row)
                rows[key] = row
            if on_record is not None:
                on_record(job, public(record))
    except BaseException as exc:
        pending = exc
        if isinstance(exc, StorageError) and journal is not None:
            raise StorageError(f"{exc}; the run stopped (the journal {journal.path} keeps "
                               "every input done so far: run the same command again to "
                               "continue)") from exc
        raise
    finally:  # also after Ctrl-C: the report shows what was done (the journal has it all)
        ordered = [rows[k] for k in sorted(rows)]
        if report is not None and journal is not None and provenance is not None:
            try:
                write_report(report, ordered, provenance.schema)
            except (OSError, LipsyncError) as exc:
                if pending is None:  # else the first failure is the one to report
                    raise _report_failure(report, journal, exc) from exc
    return BatchResult([public(r) for r in ordered], failed, skipped)


def _report_failure(report: Path, journal: Journal, exc: Exception) -> StorageError:
    message = str(exc) if isinstance(exc, LipsyncError) else \
        f"cannot write the report {report}: {cause(exc)}"
    return StorageError(f"{message}; the journal {journal.path} holds every result: run the "
                        "same command again to write the report")


def _attempt(job: Job, found: Fingerprint | None, work: Work, reraise: bool) -> dict:
    """One input's record: its work's, or an error record. The input's fingerprint is
    checked again after the work: a result of a file that changed meanwhile is discarded
    (and an output written for it removed). A full disk propagates (it stops the run)."""
    before = _output_state(job.output)
    try:
        record = work(replace(job, fingerprint=found))
        if found is not None:
            after = fingerprint(job.input)
            if not found.same_content(after):
                if job.output is not None and _output_state(job.output) != before:
                    job.output.unlink(missing_ok=True)
                raise InputChangedError(_changed(job.input, found, after))
        return record
    except LipsyncError as exc:
        if stops_the_run(exc):
            raise
        return _error_record(job, str(exc))
    except OSError as exc:
        failure = os_failure(exc, job.input)
        if stops_the_run(failure):
            raise failure from exc
        return _error_record(job, str(failure))
    except Exception as exc:
        if reraise:
            raise
        return _error_record(job, f"an internal error in lipsync-fix: "
                                  f"{type(exc).__name__}: {exc}")


def likely_to_run(jobs: Sequence[Job], report: Path | None, force: bool) -> list[Job]:
    """The jobs :func:`run_batch` will probably work on: all but those its journal holds
    as done (with their output there). A hint for reading inputs ahead, never a
    decision: run_batch decides, and a wrong guess costs only time."""
    if force or report is None:
        return list(jobs)
    done = Journal.beside(report).read()
    return [job for job in jobs
            if "error" in done.get(str(job.input), {"error": None})
            or (job.output is not None and not job.output.exists())]
