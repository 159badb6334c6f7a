"""The policy of batch runs (:mod:`lipsync_fix.batch`): inputs, mirrored outputs,
collisions, shards, the journal and reports. Pure file-system tests: the work function
is a stand-in, so every rule is checked in milliseconds."""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lipsync_fix import batch
from lipsync_fix.batch import Job, Journal, Provenance, plan_jobs, select_shard
from lipsync_fix.compute import check_device_name
from lipsync_fix.errors import (
    LipsyncError,
    OutputError,
    OutputExistsError,
    StorageError,
    UsageError,
)
from lipsync_fix.files import partial_name
from lipsync_fix.lse import LSE_RECORD, LseOptions
from lipsync_fix.records import Field, RecordError, dataclass_from_json, record_schema
from lipsync_fix.sync.records import SCORE_RECORD
from lipsync_fix.training import TrainConfig

SCHEMA = record_schema("test", [Field("output", "str"), Field("audio_delay_ms", "float")],
                       signature={"audio_delay_ms"})
"""The rows of the stand-in command below."""
PROVENANCE = Provenance(SCHEMA, {"name": "stand-in", "sha256": "0" * 64}, {"context": 25})


def run_batch(jobs, work, *, provenance: Provenance = PROVENANCE, **kwargs):
    """:func:`batch.run_batch` with the stand-in command's provenance."""
    return batch.run_batch(jobs, work, provenance=provenance, **kwargs)


def read_report(path: Path) -> list[dict]:
    return batch.read_report(path, SCHEMA).records


def touch(path: Path, data: bytes = b"video") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class Work:
    """A stand-in for scoring/fixing: writes the output, records its calls, and fails
    (or raises anything) for the inputs it is told to."""

    def __init__(self, fail: dict[str, BaseException] | None = None):
        self.calls: list[str] = []
        self.fail = fail or {}

    def __call__(self, job: Job) -> dict:
        self.calls.append(job.input.name)
        if job.input.name in self.fail:
            raise self.fail[job.input.name]
        if job.output is not None:
            batch.make_output_folder(job.output).write_bytes(b"fixed " + job.input.read_bytes())
        return {"input": str(job.input), "audio_delay_ms": 40.0 * len(self.calls)}


# --------------------------------------------------------------------------- planning


def test_folder_outputs_mirror_the_input_tree(tmp_path: Path) -> None:
    for name in ("x/clip.mp4", "y/clip.mp4", "y/deep/talk.MOV", "notes.txt", ".hidden.mp4",
                 "x/.cache/a.mp4"):
        touch(tmp_path / "in" / name)
    touch(partial_name(tmp_path / "in" / "z.mp4"))
    jobs = plan_jobs([tmp_path / "in"], tmp_path / "out")
    assert [(str(j.label), str(j.output.relative_to(tmp_path))) for j in jobs] == [
        ("x/clip.mp4", "out/x/clip.fixed.mp4"),
        ("y/clip.mp4", "out/y/clip.fixed.mp4"),
        ("y/deep/talk.MOV", "out/y/deep/talk.fixed.MOV"),
    ]
    plots = plan_jobs([tmp_path / "in"], tmp_path / "plots", tag="", suffix=".png",
                      option="--plot")
    assert [str(j.output.relative_to(tmp_path / "plots")) for j in plots] == [
        "x/clip.png", "y/clip.png", "y/deep/talk.png"]


def test_two_inputs_for_one_output_are_an_error_never_a_skip(tmp_path: Path) -> None:
    a, b = touch(tmp_path / "x" / "clip.mp4"), touch(tmp_path / "y" / "clip.mp4")
    for force in (False, True):
        with pytest.raises(UsageError, match="would both be written"):
            plan_jobs([a, b], tmp_path / "out", force=force)
    with pytest.raises(UsageError, match="given twice"):
        plan_jobs([a, tmp_path / "x" / ".." / "x" / "clip.mp4"], tmp_path / "out")
    with pytest.raises(UsageError, match="one of the inputs"):
        plan_jobs([a], a, force=True)
    assert not (tmp_path / "out").exists()


def test_output_folder_inside_the_input_folder_is_left_out(tmp_path: Path) -> None:
    touch(tmp_path / "in" / "a.mp4")
    touch(tmp_path / "in" / "fixed" / "a.fixed.mp4")  # an earlier run's output
    jobs = plan_jobs([tmp_path / "in"], tmp_path / "in" / "fixed")
    assert [j.input.name for j in jobs] == ["a.mp4"]
    with pytest.raises(UsageError, match="is the input folder"):
        plan_jobs([tmp_path / "in"], tmp_path / "in")


def test_outputs_are_checked_before_anything_runs(tmp_path: Path) -> None:
    a, b = touch(tmp_path / "a.mp4"), touch(tmp_path / "b.mp4")
    existing = touch(tmp_path / "done.mp4")
    with pytest.raises(OutputExistsError, match="use --force"):
        plan_jobs([a], existing)
    assert plan_jobs([a], existing, force=True)[0].output == existing
    with pytest.raises(OutputError, match="does not exist"):
        plan_jobs([a], tmp_path / "no" / "out.mp4")
    with pytest.raises(OutputError, match="does not exist"):
        plan_jobs([a, b], tmp_path / "no" / "out")
    with pytest.raises(UsageError, match="video file"):
        plan_jobs([a], tmp_path / "out.wav")
    with pytest.raises(UsageError, match="name a folder"):
        plan_jobs([a, b], tmp_path / "out.mkv")
    with pytest.raises(OutputError, match="is a file"):
        plan_jobs([a, b], touch(tmp_path / "plain"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no videos"):
        plan_jobs([tmp_path / "empty"], tmp_path / "o")
    assert tree(tmp_path) == ["a.mp4", "b.mp4", "done.mp4", "plain"]


# --------------------------------------------------------------------------- shards


NAMES = st.lists(st.text("abcxyz/._-0189", min_size=1, max_size=12), min_size=0, max_size=40,
                 unique=True)


@settings(max_examples=60, deadline=None)
@given(names=NAMES, n=st.integers(1, 12), seed=st.randoms(use_true_random=False))
def test_shards_cover_every_input_exactly_once(names, n, seed) -> None:
    jobs = [Job(Path("in") / name, None, Path(name)) for name in names]
    shuffled = list(jobs)
    seed.shuffle(shuffled)  # each worker may list the inputs in its own order
    shards = [select_shard(shuffled if k % 2 else jobs, f"{k}/{n}") for k in range(1, n + 1)]
    flat = [job for shard in shards for job in shard]
    assert sorted(map(str, (j.input for j in flat))) == sorted(map(str, (j.input for j in jobs)))
    assert len(flat) == len(jobs)
    sizes = [len(shard) for shard in shards]
    assert max(sizes, default=0) - min(sizes, default=0) <= 1  # balanced


@given(st.text(max_size=12))
def test_shard_specs_parse_or_are_usage_errors(spec: str) -> None:
    """Any text either parses or is a usage error naming the option (never another
    exception, which the command line would report as an internal error)."""
    try:
        batch.parse_shard(spec)
    except UsageError as exc:
        assert "--shard" in str(exc)


@given(st.integers(-3, 40), st.integers(-3, 40))
def test_shard_k_of_n_is_taken_exactly_when_1_le_k_le_n(k: int, n: int) -> None:
    if 1 <= k <= n:
        assert batch.parse_shard(f"{k}/{n}") == (k, n)
    else:
        with pytest.raises(UsageError, match="1 <= K <= N"):
            batch.parse_shard(f"{k}/{n}")


def test_shard_reports_merge_into_one(tmp_path: Path) -> None:
    inputs = [touch(tmp_path / "in" / f"{i:02d}.mp4") for i in range(7)]
    jobs = plan_jobs([tmp_path / "in"])
    reports = []
    for k in (1, 2, 3):
        report = tmp_path / f"shard{k}.{'csv' if k == 2 else 'jsonl'}"
        run_batch(select_shard(jobs, f"{k}/3"), Work(), report=report)
        reports.append(report)
    schemas = {"test": SCHEMA}
    merged = batch.merge_reports(reports, tmp_path / "all.csv", schemas)
    assert [r["input"] for r in merged.records] == [str(p) for p in inputs]
    assert len(read_report(tmp_path / "all.csv")) == 7
    with pytest.raises(OutputExistsError):
        batch.merge_reports(reports, tmp_path / "all.csv", schemas)
    with pytest.raises(UsageError, match="one of the inputs"):
        batch.merge_reports(reports, reports[0], schemas, force=True)


# --------------------------------------------------------------------------- reports


def test_report_paths_that_would_destroy_something_are_refused(tmp_path: Path) -> None:
    video = touch(tmp_path / "in.mp4")
    foreign = tmp_path / "budget.csv"
    foreign.write_text("month,amount\njan,3\n")
    with pytest.raises(UsageError, match=r"\.csv or \.jsonl"):
        batch.check_report_path(video, [video], schema=SCHEMA)
    with pytest.raises(UsageError, match="one of the inputs"):
        batch.check_report_path(foreign, [foreign], force=True, schema=SCHEMA)
    with pytest.raises(OutputExistsError, match="not a lipsync-fix report"):
        batch.check_report_path(foreign, [video], schema=SCHEMA)
    with pytest.raises(OutputError, match="does not exist"):
        batch.check_report_path(tmp_path / "no" / "r.csv", [video], schema=SCHEMA)
    batch.check_report_path(foreign, [video], force=True, schema=SCHEMA)  # may be replaced
    ours = tmp_path / "ours.csv"
    batch.write_report(ours, [{"input": "a.mp4", "audio_delay_ms": 40.0}], SCHEMA)
    batch.check_report_path(ours, [video], schema=SCHEMA)  # ours: the run resumes it
    assert foreign.read_text() == "month,amount\njan,3\n"


def test_a_rerun_skips_what_is_done_and_retries_what_failed(tmp_path: Path) -> None:
    for name in "abc":
        touch(tmp_path / "in" / f"{name}.mp4")
    jobs = plan_jobs([tmp_path / "in"])
    report = tmp_path / "r.jsonl"
    first = Work(fail={"b.mp4": LipsyncError("b is broken")})
    result = run_batch(jobs, first, report=report)
    assert (result.failed, first.calls) == (1, ["a.mp4", "b.mp4", "c.mp4"])
    second = Work()
    result = run_batch(jobs, second, report=report)
    assert (result.failed, result.skipped, second.calls) == (0, 2, ["b.mp4"])
    records = read_report(report)
    assert [("error" in r) for r in records] == [False, False, False]
    assert records[0]["audio_delay_ms"] == 40.0  # a's measurement from the first run


def test_the_report_keeps_earlier_measurements(tmp_path: Path) -> None:
    """Item 8: a resumed run rewrote the report and lost earlier measurements; a skip
    (output exists) or --force on other inputs must not replace them either."""
    a, b = touch(tmp_path / "a.mp4"), touch(tmp_path / "b.mp4")
    out, report = tmp_path / "out", tmp_path / "r.csv"
    run_batch(plan_jobs([a, b], out), Work(), report=report)
    measured = {r["input"]: r["audio_delay_ms"] for r in read_report(report)}
    Journal.beside(report).path.unlink()  # only the report is left of that run
    run_batch(plan_jobs([a, b], out), Work(), report=report)  # both outputs exist
    assert {r["input"]: r["audio_delay_ms"] for r in read_report(report)} == measured
    run_batch(plan_jobs([b], out / "b.fixed.mp4", force=True), Work(), report=report,
              force=True)
    after = {r["input"]: r for r in read_report(report)}
    assert after[str(a)]["audio_delay_ms"] == measured[str(a)]
    assert set(after) == {str(a), str(b)}


def test_a_torn_journal_line_does_not_swallow_the_next(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "r.jsonl.journal")
    journal.path.write_text(json.dumps({"input": "a.mp4", "x": 1}) + "\n" + '{"input": "b.m')
    Journal(journal.path).append({"input": "c.mp4", "x": 3})
    assert sorted(journal.read()) == ["a.mp4", "c.mp4"]


def test_interrupted_run_writes_the_report_of_what_it_did(tmp_path: Path) -> None:
    for name in "abc":
        touch(tmp_path / "in" / f"{name}.mp4")
    report = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_batch(plan_jobs([tmp_path / "in"]), Work(fail={"b.mp4": KeyboardInterrupt()}),
                  report=report)
    assert [Path(r["input"]).name for r in read_report(report)] == ["a.mp4"]


# --------------------------------------------------------------------------- cleanup


def test_leftovers_of_a_killed_run_are_removed_even_when_skipping(tmp_path: Path) -> None:
    touch(tmp_path / "in" / "a.mp4")
    out = tmp_path / "out"
    run_batch(plan_jobs([tmp_path / "in"], out), Work())
    mine = touch(partial_name(out / "a.fixed.mp4"), b"torn")
    neighbours = touch(partial_name(out / "a.fixed.v2.mp4"), b"being written")
    report = tmp_path / "r.csv"
    report_leftover = touch(partial_name(report), b"torn")
    result = run_batch(plan_jobs([tmp_path / "in"], out), Work(), report=report)
    assert result.skipped == 1
    assert not mine.exists() and not report_leftover.exists()
    assert neighbours.exists()  # another output's temporary file is not ours to remove


def test_a_failed_input_leaves_no_empty_folders(tmp_path: Path) -> None:
    touch(tmp_path / "in" / "x" / "y" / "bad.mp4")
    touch(tmp_path / "in" / "x" / "good.mp4")
    out = tmp_path / "out"
    result = run_batch(plan_jobs([tmp_path / "in"], out),
                       Work(fail={"bad.mp4": LipsyncError("broken")}))
    assert result.failed == 1
    assert tree(out) == ["x/good.fixed.mp4"] and not (out / "x" / "y").exists()


def test_an_internal_error_is_recorded_unless_reraise(tmp_path: Path) -> None:
    a, b = touch(tmp_path / "a.mp4"), touch(tmp_path / "b.mp4")
    jobs = plan_jobs([a, b])
    result = run_batch(jobs, Work(fail={"a.mp4": ZeroDivisionError("bug")}))
    assert result.failed == 1 and "ZeroDivisionError: bug" in result.records[0]["error"]
    with pytest.raises(ZeroDivisionError):
        run_batch(jobs, Work(fail={"a.mp4": ZeroDivisionError("bug")}), reraise=True)


# --------------------------------------------------------------------------- issue 20


def _json_value(kind: str):
    if kind == "str":
        return st.text(max_size=8)
    if kind == "int":
        return st.integers(-10**9, 10**9)
    if kind == "float":
        return st.floats(allow_nan=False, allow_infinity=False, width=64)
    if kind == "bool":
        return st.booleans()
    scalars = st.one_of(st.none(), st.integers(-99, 99), st.text(max_size=4),
                        st.floats(allow_nan=False, allow_infinity=False))
    if kind == "list":
        return st.lists(scalars, max_size=3)
    return st.dictionaries(st.text(max_size=4), scalars, max_size=3)


def _records(schema):
    """Rows of ``schema``: an input, the kind, and any of its fields, each of its type."""
    optional = {f.name: _json_value(f.type) for f in schema.fields
                if f.name not in ("input", "kind")}
    return st.fixed_dictionaries({"input": st.text(min_size=1, max_size=8),
                                  "kind": st.just(schema.kind)}, optional=optional)


@settings(max_examples=40, deadline=None)
@given(records=st.lists(_records(SCORE_RECORD), min_size=1, max_size=4))
def test_a_csv_report_reads_back_as_the_records_it_was_written_from(records,
                                                                    tmp_path_factory) -> None:
    """Issue 20 item 3: numbers stay numbers, lists stay lists, an absent field stays
    absent; only the lists of records (JSON lines only) are left out of a CSV."""
    folder = tmp_path_factory.mktemp("csv")
    batch.write_report(folder / "r.csv", records, SCORE_RECORD)
    columns = set(SCORE_RECORD.csv_columns)
    back = batch.read_report(folder / "r.csv", SCORE_RECORD).records
    kept = [{k: v for k, v in r.items() if k in columns} for r in records]
    # an empty cell is an absent field: "" and a null number read back as absent
    expected = [{k: v for k, v in r.items() if v != "" and not (
        v is None and SCORE_RECORD.field(k).type not in ("list", "dict", "json"))}
        for r in kept]
    assert back == expected


def test_a_journal_row_that_cannot_be_written_is_cut_back(tmp_path, monkeypatch) -> None:
    """A full disk in the middle of a row: the journal is left as it was, never with half
    a row, and the error names the journal and the cause."""
    journal = Journal(tmp_path / "r.jsonl.journal")
    journal.append({"input": "a.mp4", "x": 1})
    before = journal.path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(StorageError, match=r"r\.jsonl\.journal: no space left on device"):
        journal.append({"input": "b.mp4", "x": 2})
    monkeypatch.undo()
    assert journal.path.read_bytes() == before
    journal.append({"input": "c.mp4", "x": 3})
    assert sorted(journal.read()) == ["a.mp4", "c.mp4"]


def test_a_result_dataclass_refuses_json_of_the_wrong_types() -> None:
    """Item 9: ``from_json`` took ``"40"`` for a delay. The helper every result's
    ``from_json`` can use checks each field against the dataclass's own annotations."""
    @dataclass
    class Result:
        input: str
        delay_ms: float
        windows: int = 0
        notes: list[str] = field(default_factory=list)
        model: dict | None = None

    assert dataclass_from_json(Result, {"input": "a", "delay_ms": 40, "extra": 1}) == \
        Result("a", 40.0)
    for bad, words in (({"input": "a", "delay_ms": "40"}, "delay_ms should be a float"),
                       ({"input": "a", "delay_ms": 1.0, "windows": 2.5}, "windows"),
                       ({"input": "a", "delay_ms": 1.0, "windows": True}, "windows"),
                       ({"input": "a", "delay_ms": 1.0, "notes": "x"}, "notes"),
                       ({"input": "a"}, "lacks delay_ms")):
        with pytest.raises(RecordError, match=words):
            dataclass_from_json(Result, bad)


def test_options_refuse_a_device_that_does_not_exist_anywhere() -> None:
    """Item 9: ``device="tpu"`` was accepted until the first input was scored."""
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        LseOptions(device="tpu")
    with pytest.raises(ValueError, match="unknown device"):
        TrainConfig(data_root="d", out_dir="o", device="tpu")
    assert check_device_name("cuda:1") == "cuda:1"  # a kind of device, present or not


def test_a_score_report_is_not_taken_for_another_commands(tmp_path) -> None:
    """Rows say their command; rows of an older version are recognised by their fields."""
    report = tmp_path / "r.jsonl"
    report.write_text(json.dumps({"input": "a.mp4", "lse_d": 7.0, "lse_c": 2.0}) + "\n")
    assert batch.read_report(report, {"score": SCORE_RECORD, "lse": LSE_RECORD}).kind == "lse"
    with pytest.raises(UsageError, match="not one of score"):
        batch.check_report_path(report, [], schema=SCORE_RECORD)
    mixed = tmp_path / "m.jsonl"
    mixed.write_text(report.read_text() + json.dumps(
        {"input": "b.mp4", "verdict": "in_sync", "kind": "score"}) + "\n")
    with pytest.raises(LipsyncError, match="mixes records of lse and score"):
        batch.read_report(mixed, {"score": SCORE_RECORD, "lse": LSE_RECORD})
