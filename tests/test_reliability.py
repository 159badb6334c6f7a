"""Issue 20: a rerun, a merge, a changed input or a full disk never gives a wrong answer.

One section per class of the issue, each through the command line in-process
(:func:`conftest.invoke`). The estimate inside the CLI is replaced by copies of one real
estimate (``fake_estimates``), so a test costs what the plumbing costs; the models are
two tiny checkpoints of different weights (so of different SHA-256). Reports are read as
plain JSON or CSV, and the package is imported by module, so each test runs (and fails)
on a version without these fixes rather than the file failing to import.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import io
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Outcome, invoke

from lipsync_fix import batch, files, media
from lipsync_fix.cli import main_job
from lipsync_fix.data import layout, preprocess
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.media.ffmpeg import run_ffmpeg
from lipsync_fix.models import load_model, sha256_of
from lipsync_fix.models.checkpoint import save_checkpoint
from lipsync_fix.models.vocalist import PRESETS, VocaLiST
from lipsync_fix.sync import SyncOptions, estimate_sync
from lipsync_fix.sync.estimate import ModelIdentity

NO_MODEL = "no-such-model"  # a checkpoint that cannot load: an error about it means work began


@dataclasses.dataclass(frozen=True)
class Kit:
    root: Path
    model_a: Path
    model_b: Path  # other weights: another sha256
    clip: Path  # a 2 s talking head with audio
    other: Path  # another 2 s talking head (other content)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("reliability")
    torch.manual_seed(0)
    model_a = save_checkpoint(root / "a.pth", VocaLiST(PRESETS["tiny"]))
    torch.manual_seed(1)
    model_b = save_checkpoint(root / "b.pth", VocaLiST(PRESETS["tiny"]))
    clips = []
    for seed, name in ((4, "talk.mp4"), (5, "other.mp4")):
        head = make_talking_head(seed, duration_s=2.0, audio_delay_ms=120)
        clips.append(root / name)
        media.write_video(clips[-1], head.frames, head.fps, audio=head.audio,
                          sample_rate=16000)
    return Kit(root, model_a, model_b, *clips)


@pytest.fixture(scope="module")
def measured(kit: Kit):
    """One real estimate, as cheap as one can be (two 5-frame segments)."""
    return estimate_sync(kit.clip, load_model(kit.model_a),
                         SyncOptions(context_frames=5, max_segments=2, first_round=2))


@pytest.fixture()
def fake_estimates(monkeypatch: pytest.MonkeyPatch, measured):
    """The CLI's estimate, replaced: a copy of one real estimate, its delay 40 ms per
    call so far (so a rerun that measures again is seen in the report). Returns the list
    of inputs it was asked for."""
    calls: list[str] = []

    def estimate(path, model, options, progress=None):
        calls.append(str(path))
        media.probe(path)  # a missing or broken input still fails as it would
        return dataclasses.replace(measured, input=str(path), audio_delay_ms=40.0 * len(calls),
                                   model=ModelIdentity.of(model))

    monkeypatch.setattr(main_job, "estimate_sync", estimate)
    return calls


def copies(kit: Kit, folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(kit.clip, folder / name)
    return [folder / name for name in names]


def assert_clean(result: Outcome, code: int, *, lines: int | None = 1) -> None:
    """The exit code, no traceback, and ``lines`` one-line errors on stderr."""
    assert result.code == code, (result.code, result.stderr, result.stdout)
    assert "Traceback" not in result.stdout + result.stderr
    assert "internal error" not in result.stderr
    errors = [line for line in result.error_lines if line.startswith("error: ")]
    if lines is not None:
        assert len(errors) == lines, result.stderr


def rows(path: Path) -> dict[str, dict]:
    return {r["input"]: r for r in map(json.loads, path.read_text().splitlines())}


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


# --------------------------------------------------------------------------- 1. journals


def test_a_rerun_with_another_model_or_options_is_measured_again_and_says_why(
        kit, tmp_path, fake_estimates) -> None:
    """Issue item 1: ``-c demo-small-syncnet`` then ``-c demo-small`` skipped every input
    ("done earlier") and kept the first model's numbers."""
    [clip] = copies(kit, tmp_path / "in", "a.mp4")
    report = tmp_path / "r.jsonl"
    args = ["score", clip, "--report", report, "--context", "5"]
    assert_clean(invoke(*args, "-c", kit.model_a), 0, lines=0)
    again = invoke(*args, "-c", kit.model_a)
    assert "skipped, done earlier" in again.stdout and len(fake_estimates) == 1
    other = invoke(*args, "-c", kit.model_b)
    assert_clean(other, 0, lines=0)
    assert "measured again: the model changed" in other.stderr
    row = rows(report)[str(clip)]
    assert row["audio_delay_ms"] == 80.0  # the second measurement, not the first
    assert row["provenance"]["model"]["sha256"] == sha256_of(kit.model_b)
    wider = invoke(*args[:-1], "7", "-c", kit.model_b)
    assert "measured again: the options changed (context_frames 5 -> 7)" in wider.stderr
    assert len(fake_estimates) == 3
    assert rows(batch.Journal.beside(report).path)[str(clip)]["audio_delay_ms"] == 120.0


def test_a_replaced_input_is_measured_again_and_a_copy_is_not(kit, tmp_path,
                                                              fake_estimates) -> None:
    """A file replaced by another clip of the same name was "done earlier"; the
    fingerprint catches a changed content even when the mtime is kept (``cp -p``), and a
    new mtime alone (``touch``, a copy) is no change."""
    [clip] = copies(kit, tmp_path / "in", "a.mp4")
    report = tmp_path / "r.csv"
    args = ["score", clip, "--report", report, "-c", kit.model_a]
    assert_clean(invoke(*args), 0, lines=0)
    os.utime(clip, (1_000_000, 1_000_000))  # a new mtime, the same bytes
    assert "skipped, done earlier" in invoke(*args).stdout
    stamp = clip.stat().st_mtime
    shutil.copy(kit.other, clip)
    os.utime(clip, (stamp, stamp))  # other bytes, the old mtime
    replaced = invoke(*args)
    assert "measured again: the input changed" in replaced.stderr
    assert len(fake_estimates) == 2
    [row] = csv_rows(report)
    assert float(row["audio_delay_ms"]) == 80.0
    assert json.loads(row["provenance"])["fingerprint"] == files.fingerprint(clip).to_json()


@pytest.mark.parametrize(("first", "then"), [("score", "lse"), ("lse", "score"),
                                             ("score", "fix")])
def test_a_journal_of_another_command_is_a_usage_error_before_anything_runs(
        kit, tmp_path, first, then) -> None:
    """``lse --report`` on a ``score`` journal was an internal error (KeyError: 'lse_d');
    ``score --report`` on an ``lse`` journal printed LSE rows as sync estimates."""
    [clip] = copies(kit, tmp_path / "in", "a.mp4")
    report = tmp_path / "r.jsonl"
    row = {"input": str(clip), "audio_delay_ms": 40.0, "kind": first}
    row |= {"lse_d": 7.5, "lse_c": 2.0} if first == "lse" else {"verdict": "out_of_sync"}
    for target in (batch.Journal.beside(report).path, report):  # journal alone, then both
        target.write_text(json.dumps(row) + "\n")
        extra = ["-o", tmp_path / "out.mp4"] if then == "fix" else []
        result = invoke(then, clip, *extra, "--report", report, "-c", NO_MODEL)
        assert_clean(result, 2)
        assert f"not of {then}" in result.stderr or f"not one of {then}" in result.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_rows_of_an_older_lipsync_fix_are_never_trusted(kit, tmp_path, fake_estimates) -> None:
    """A journal written before rows recorded their provenance: measured again, saying so."""
    [clip] = copies(kit, tmp_path / "in", "a.mp4")
    report = tmp_path / "r.jsonl"
    old = {"input": str(clip), "audio_delay_ms": 999.0, "confidence": 1.0,
           "verdict": "out_of_sync"}
    batch.Journal.beside(report).path.write_text(json.dumps(old) + "\n")
    result = invoke("score", clip, "--report", report, "-c", kit.model_a)
    assert_clean(result, 0, lines=0)
    assert "measured again: it was measured by an older lipsync-fix" in result.stderr
    assert rows(report)[str(clip)]["audio_delay_ms"] == 40.0


def test_a_stale_fix_whose_output_exists_leaves_no_stale_numbers(kit, tmp_path,
                                                                 fake_estimates) -> None:
    """Without --force the existing output is kept, but the report no longer claims the
    other model's measurement describes it."""
    [clip] = copies(kit, tmp_path / "in", "a.mp4")
    report, out = tmp_path / "r.jsonl", tmp_path / "out"
    args = ["fix", tmp_path / "in", "-o", out, "--report", report, "--apply-uncertain"]
    assert_clean(invoke(*args, "-c", kit.model_a), 0, lines=0)
    kept = invoke(*args, "-c", kit.model_b)
    assert_clean(kept, 0, lines=0)
    assert "not measured again although the model changed" in kept.stderr
    assert "skipped, output exists" in kept.stdout
    assert rows(report)[str(clip)] == {"input": str(clip), "output": str(out / "a.fixed.mp4"),
                                       "skipped": "output exists", "kind": "fix"}
    redone = invoke(*args, "-c", kit.model_b, "--force")
    assert_clean(redone, 0, lines=0)
    assert rows(report)[str(clip)]["provenance"]["model"]["name"] == str(kit.model_b)


def test_preprocess_reuses_only_clips_of_the_same_video_made_the_same_way(kit, tmp_path,
                                                                         monkeypatch) -> None:
    """A clip folder from another version of the video (or an older lipsync-fix's, which
    did not say) was "already done"; now it is named, and remade with --force."""
    [video] = copies(kit, tmp_path / "raw", "a.mp4")
    out = tmp_path / "out"
    made: list[str] = []

    def one_face_crop(frames, fps, detector, recipe):  # the face pipeline is not under test
        made.append(video.name)
        return np.zeros((25, recipe.crop_size, recipe.crop_size, 3), np.uint8), 0

    monkeypatch.setattr(preprocess, "main_face_run", one_face_crop)
    first = preprocess.preprocess_folder(tmp_path / "raw", out)
    assert len(first.done) == 1 and made == ["a.mp4"]
    assert [s["reason"] for s in preprocess.preprocess_folder(tmp_path / "raw", out).skipped] \
        == ["already done"]
    other = preprocess.preprocess_folder(tmp_path / "raw", out, detector="haar")
    assert "made with other options" in other.skipped[0]["reason"]
    shutil.copy(kit.other, video)
    changed = preprocess.preprocess_folder(tmp_path / "raw", out)
    assert "the video changed" in changed.skipped[0]["reason"]
    assert "--force" in changed.skipped[0]["reason"] and made == ["a.mp4"]
    (out / "a" / layout.DONE_MARK).write_text("")  # as an older lipsync-fix left it
    old = preprocess.preprocess_folder(tmp_path / "raw", out)
    assert "older lipsync-fix" in old.skipped[0]["reason"]
    forced = preprocess.preprocess_folder(tmp_path / "raw", out, force=True)
    assert len(forced.done) == 1 and made == ["a.mp4", "a.mp4"]


# --------------------------------------------------------------------------- 2. changes


def test_an_input_replaced_between_its_estimate_and_its_remux_writes_nothing(
        kit, tmp_path, monkeypatch, measured) -> None:
    """Item 2: the fix was made with the old estimate and the JSON described the old file."""
    a, b = copies(kit, tmp_path / "in", "a.mp4", "b.mp4")

    def estimate(path, model, options, progress=None):
        if Path(path).name == "a.mp4":
            shutil.copy(kit.other, path)  # replaced after it was measured
        return dataclasses.replace(measured, input=str(path))

    monkeypatch.setattr(main_job, "estimate_sync", estimate)
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    result = invoke("fix", tmp_path / "in", "-o", out, "-c", kit.model_a, "--report", report,
                    "--apply-uncertain", "--json")
    assert_clean(result, 1)
    assert f"{a} changed while it was processed" in result.stderr
    assert sorted(p.name for p in out.rglob("*")) == ["b.fixed.mp4"]
    assert "error" in rows(report)[str(a)] and "error" not in rows(report)[str(b)]


def test_an_output_written_for_an_input_that_changed_is_removed(tmp_path) -> None:
    """If the input changes during the write itself, the output written is discarded."""
    src = tmp_path / "a.mp4"
    src.write_bytes(b"first version")

    def work(job: batch.Job) -> dict:
        job.check_unchanged()  # still the same here
        batch.make_output_folder(job.output).write_bytes(b"made from the first version")
        src.write_bytes(b"second version, longer")
        return {"input": str(job.input)}

    result = batch.run_batch(batch.plan_jobs([src], tmp_path / "out.mp4"), work)
    assert result.failed == 1 and "its size changed" in result.records[0]["error"]
    assert not (tmp_path / "out.mp4").exists()


# --------------------------------------------------------------------------- 3. merge


def test_merge_keeps_types_and_successes_have_no_error(kit, tmp_path, fake_estimates) -> None:
    """Item 3: CSV to JSONL made every number a string and gave successes ``"error": ""``
    (so ``select(.error)`` selected all of them)."""
    a, b = copies(kit, tmp_path / "in", "a.mp4", "b.mp4")
    broken = tmp_path / "in" / "c.mp4"
    broken.write_bytes(b"not a video")
    parts = [tmp_path / "p1.csv", tmp_path / "p2.csv"]
    for k, part in enumerate(parts, 1):
        invoke("score", tmp_path / "in", "--shard", f"{k}/2", "-c", kit.model_a,
               "--report", part, "-q")
    merged = invoke("report", "merge", *parts, "-o", tmp_path / "all.jsonl")
    assert_clean(merged, 0, lines=0)
    assert "3 inputs from 2 reports, 1 failed" in merged.stdout
    records = rows(tmp_path / "all.jsonl")
    assert [r for r in records.values() if "error" in r] == [records[str(broken)]]
    for path in (a, b):
        record = records[str(path)]
        assert isinstance(record["audio_delay_ms"], float)
        assert isinstance(record["windows_used"], int)
        assert isinstance(record["notes"], list) and isinstance(record["model"], dict)
        assert record["kind"] == "score" and "skipped" not in record
    back = invoke("report", "merge", tmp_path / "all.jsonl", "-o", tmp_path / "again.csv")
    assert_clean(back, 0, lines=0)
    assert "from 1 report," in back.stdout
    columns = set(csv_rows(tmp_path / "again.csv")[0])
    invoke("report", "merge", tmp_path / "again.csv", "-o", tmp_path / "again.jsonl")
    again = rows(tmp_path / "again.jsonl")  # JSON -> CSV -> JSON: the CSV's fields unchanged
    assert again == {key: {k: v for k, v in r.items() if k in columns}
                     for key, r in records.items()}


def test_merge_refuses_conflicts_and_reports_of_different_commands(tmp_path) -> None:
    """Two different measurements of one input were resolved by order without a word,
    and a score and an lse report merged silently."""
    def report(name: str, *records: dict) -> Path:
        path = tmp_path / name
        if path.suffix == ".csv":
            names = sorted({k for r in records for k in r})
            path.write_text(",".join(names) + "\n" + "".join(
                ",".join(str(r.get(k, "")) for k in names) + "\n" for r in records))
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    score = {"kind": "score", "verdict": "out_of_sync"}
    a1 = report("a1.csv", {"input": "a.mp4", "audio_delay_ms": 40.0} | score)
    a2 = report("a2.jsonl", {"input": "a.mp4", "audio_delay_ms": 80.0} | score)
    same = report("same.jsonl", {"input": "a.mp4", "audio_delay_ms": 40.0} | score)
    failed = report("failed.jsonl", {"input": "a.mp4", "error": "broken", "kind": "score"})
    lse = report("lse.csv", {"input": "b.mp4", "lse_d": 7.5, "lse_c": 2.0, "kind": "lse"})
    conflict = invoke("report", "merge", a1, a2, "-o", tmp_path / "m.csv")
    assert_clean(conflict, 2)
    assert "a.mp4" in conflict.stderr and "audio_delay_ms" in conflict.stderr
    mixed = invoke("report", "merge", a1, lse, "-o", tmp_path / "m.csv")
    assert_clean(mixed, 2)
    assert "different commands" in mixed.stderr and "lse" in mixed.stderr
    assert not (tmp_path / "m.csv").exists()
    fine = invoke("report", "merge", failed, a1, same, "-o", tmp_path / "m.jsonl", "--json")
    assert_clean(fine, 0, lines=0)
    assert fine.json_lines()[0]["failed"] == 0  # the measurement took the failure's place
    assert rows(tmp_path / "m.jsonl")["a.mp4"]["audio_delay_ms"] == 40.0
    folder = invoke("report", "merge", tmp_path, "-o", tmp_path / "x.csv")
    assert_clean(folder, 2)
    assert "is a folder" in folder.stderr


# --------------------------------------------------------------------------- 4. containers


def test_an_output_container_that_cannot_be_written_is_refused_before_any_work(kit,
                                                                               tmp_path) -> None:
    """Item 4: ``fix a.mp4 -o x.flv`` passed the up-front check, then failed after the
    estimate."""
    for name in ("x.flv", "x.wmv", "x.3gp"):
        result = invoke("fix", kit.clip, "-o", tmp_path / name, "-c", NO_MODEL)
        assert_clean(result, 2)
        assert "must be a video container" in result.stderr
    bad = invoke("fix", kit.clip, kit.other, "-o", tmp_path / "o", "--container", "flv",
                 "-c", NO_MODEL)
    assert_clean(bad, 2)
    assert "video container" in bad.stderr and not (tmp_path / "o").exists()


def test_a_folder_of_other_containers_is_fixed_into_mkv_or_the_chosen_one(
        kit, tmp_path, fake_estimates) -> None:
    """Item 4: ``.flv``/``.wmv``/``.3gp`` inputs were measured, then refused one by one."""
    folder = tmp_path / "in"
    copies(kit, folder, "a.flv", "b.mp4")
    out = tmp_path / "out"
    result = invoke("fix", folder, "-o", out, "-c", kit.model_a, "--apply-uncertain")
    assert_clean(result, 0, lines=0)
    assert sorted(p.name for p in out.iterdir()) == ["a.fixed.mkv", "b.fixed.mp4"]
    (folder / "b.mp4").unlink()
    (folder / "a.flv").rename(folder / "a.3gp")
    chosen = invoke("fix", folder, "-o", tmp_path / "mp4", "-c", kit.model_a,
                    "--apply-uncertain", "--container", "mp4")
    assert_clean(chosen, 0, lines=0)
    assert [p.name for p in (tmp_path / "mp4").iterdir()] == ["a.fixed.mp4"]


def test_streams_the_container_cannot_hold_fail_before_the_input_is_measured(
        kit, tmp_path, fake_estimates) -> None:
    """The check before the estimate is the remux's own: H.264 cannot go into WebM (its
    plan says so), HuffYUV not into MP4 (only the muxer knows: a trial mux finds it)."""
    copies(kit, tmp_path / "in", "a.mp4", "b.mp4")
    result = invoke("fix", tmp_path / "in", "-o", tmp_path / "out", "-c", kit.model_a,
                    "--container", "webm")
    assert_clean(result, 1, lines=2)
    assert "can only hold" in result.stderr and fake_estimates == []
    assert not (tmp_path / "out").exists()
    lossless = tmp_path / "huffyuv.mkv"
    run_ffmpeg(["-v", "error", "-i", str(kit.clip), "-t", "0.5", "-c:v", "huffyuv",
                "-c:a", "copy", str(lossless)])
    into_mp4 = invoke("fix", lossless, "-o", tmp_path / "x.mp4", "-c", kit.model_a,
                      "--apply-uncertain")
    assert_clean(into_mp4, 1)
    assert "cannot hold the huffyuv video" in into_mp4.stderr and fake_estimates == []
    assert not (tmp_path / "x.mp4").exists()


# --------------------------------------------------------------------------- 6. environment


def test_an_unreadable_file_in_a_folder_is_one_line_and_the_rest_runs(
        kit, tmp_path, monkeypatch, fake_estimates) -> None:
    """Item 6: "internal error ... PermissionError" for a file inside a folder."""
    a, b = copies(kit, tmp_path / "in", "a.mp4", "b.mp4")
    real_open = open

    def no_access(path, *args, **kwargs):
        if Path(path) == a:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(files, "open", no_access, raising=False)  # the fingerprint's read
    result = invoke("score", tmp_path / "in", "-c", kit.model_a, "--json")
    assert_clean(result, 1)
    assert f"cannot read {a}: permission denied" in result.stderr
    assert fake_estimates == [str(b)]


def test_an_unreadable_subfolder_is_a_usage_error_not_a_gap(kit, tmp_path, monkeypatch) -> None:
    """Its videos were left out without a word (the report silently lacked them)."""
    copies(kit, tmp_path / "in" / "x", "a.mp4")
    copies(kit, tmp_path / "in", "b.mp4")
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "x":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = invoke("score", tmp_path / "in", "-c", NO_MODEL)
    assert_clean(result, 2)
    assert "cannot read the folder" in result.stderr and "permission denied" in result.stderr


def test_a_report_in_a_folder_that_cannot_be_written_is_refused_first(kit, tmp_path,
                                                                      monkeypatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == locked
                        else real_access(path, mode, **kw))
    result = invoke("score", kit.clip, "--report", locked / "r.csv", "-c", NO_MODEL)
    assert_clean(result, 2)
    assert f"cannot write into {locked}" in result.stderr


def _full_disk_on(monkeypatch: pytest.MonkeyPatch, predicate) -> dict:
    """``os.write`` fails with ENOSPC for file descriptors whose path ``predicate`` picks,
    while the returned switch's ``"on"`` is true."""
    real_write = os.write
    switch = {"on": True}

    def write(fd: int, data) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if switch["on"] and predicate(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    return switch


def test_a_full_disk_while_the_journal_is_written_stops_cleanly(kit, tmp_path, monkeypatch,
                                                                fake_estimates) -> None:
    """Item 6: a full disk while the journal was written was an internal error. The run
    stops at once (every later input would fail too), the journal keeps what was done,
    never half a row, and the same command continues."""
    copies(kit, tmp_path / "in", "a.mp4", "b.mp4", "c.mp4")
    report = tmp_path / "r.jsonl"
    journal = batch.Journal.beside(report).path
    args = ["score", tmp_path / "in", "-c", kit.model_a, "--report", report]
    switch = _full_disk_on(monkeypatch, lambda target: target == str(journal))
    switch["on"] = False
    real_append = batch.Journal.append

    def append(self, record):  # the second row meets a full disk
        switch["on"] = self.path.is_file()
        real_append(self, record)

    monkeypatch.setattr(batch.Journal, "append", append)
    result = invoke(*args)
    assert_clean(result, 1)
    assert f"cannot write the journal {journal}: no space left on device" in result.stderr
    assert "run the same command again" in result.stderr
    assert len(fake_estimates) == 2  # c.mp4 was not started
    assert journal.read_text().count("\n") == 1 and journal.read_text().endswith("\n")
    switch["on"] = False
    monkeypatch.setattr(batch.Journal, "append", real_append)
    rerun = invoke(*args)
    assert_clean(rerun, 0, lines=0)
    assert rerun.stdout.count("done earlier") == 1 and len(rows(report)) == 3


def test_a_full_disk_while_a_plot_is_written_stops_cleanly(kit, tmp_path, monkeypatch,
                                                           fake_estimates) -> None:
    copies(kit, tmp_path / "in", "a.mp4", "b.mp4")
    plots, report = tmp_path / "plots", tmp_path / "r.jsonl"
    real_write_bytes = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if self.name.startswith(".b.") and self.suffix == ".png":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    result = invoke("score", tmp_path / "in", "--plot", plots, "-c", kit.model_a,
                    "--report", report)
    assert_clean(result, 1)
    assert f"cannot write {plots / 'b.png'}: no space left on device" in result.stderr
    assert sorted(p.name for p in plots.iterdir()) == ["a.png"]  # no partial file left
    assert list(rows(batch.Journal.beside(report).path)) == [str(tmp_path / "in" / "a.mp4")]


def test_benchmark_options_are_usage_errors(tmp_path) -> None:
    """Item 6: ``bench scorer --preset huge`` was a KeyError; ``--work-dir FILE`` too."""
    huge = invoke("bench", "scorer", "--preset", "huge")
    assert_clean(huge, 2)
    assert "unknown preset 'huge'" in huge.stderr
    (tmp_path / "file").write_text("mine")
    work = invoke("bench", "main-job", "--work-dir", tmp_path / "file", "--no-sweep")
    assert_clean(work, 2)
    assert "is a file" in work.stderr and (tmp_path / "file").read_text() == "mine"


# --------------------------------------------------------------------------- 7. codes


@pytest.mark.parametrize(("args", "words"), [
    (["score", "{clip}", "-c", "nosuchmodel"], "unknown checkpoint"),
    (["score", "{clip}", "-c", "{root}"], "is a folder, not a checkpoint"),
    (["score", "{clip}", "-c", "{root}/missing.pth"], "does not exist"),
    (["lse", "{clip}", "-c", "demo-small"], "not the syncnet-v2"),
    (["lse", "{clip}", "--face-box", "1,2,3", "-c", NO_MODEL], "face box"),
    (["score", "{clip}", "--max-segments", "0", "-c", NO_MODEL], "--max-segments"),
    (["fix", "{clip}", "-o", "{root}/o.mp4", "--max-segments", "0", "-c", NO_MODEL],
     "--max-segments"),
    (["eval", "--data-root", "{root}/missing", "-c", NO_MODEL], "is not a folder"),
    (["eval", "--data-root", "{root}", "-c", NO_MODEL, "--protocol", "x"], "unknown protocol"),
    (["eval", "--data-root", "{root}", "-c", NO_MODEL, "--mode", "x"], "--mode"),
    (["eval", "--data-root", "{root}", "-c", "nosuchmodel"], "unknown checkpoint"),
    (["export", "{root}/missing.pth", "{root}/out.pth"], "does not exist"),
    (["separate", "{clip}", "-o", "{root}/voice.mp3x", "-c", NO_MODEL], "use .wav"),
    (["separate", "{clip}", "-o", "{root}/voice.wav", "-c", "demo-small"], "not the ynet"),
    (["train", "--data-root", "{root}/missing", "--out", "{root}/run", "--preset", "tiny"],
     "is not a folder"),
    (["train-separation", "--data-root", "{root}/missing", "--out", "{root}/sep"],
     "is not a folder"),
])
def test_usage_errors_exit_2_before_any_work(kit, args, words) -> None:
    """Item 7: each exited 1 (or named internal fields) although nothing ran."""
    before = sorted(kit.root.iterdir())
    result = invoke(*[str(a).format(clip=kit.clip, root=kit.root) for a in args])
    assert_clean(result, 2)
    assert words in result.stderr
    assert "max_segments" not in result.stderr
    assert sorted(kit.root.iterdir()) == before  # no run folder, no output, nothing


def test_a_folder_where_the_cached_model_should_be_is_named(tmp_path, monkeypatch,
                                                            kit) -> None:
    """Item 7: it said "the output ... is a folder"."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIPSYNC_FIX_CACHE", str(cache))
    (cache / "syncnet_v2.model").mkdir(parents=True)
    result = invoke("lse", kit.clip, "-c", "syncnet-v2")
    assert_clean(result, 1)
    assert "should be the file of syncnet-v2, but it is a folder" in result.stderr


# --------------------------------------------------------------------------- 8. overwrites


def test_demo_replaces_an_earlier_demo_only_with_force(tmp_path) -> None:
    """Item 8: ``demo --out-dir D`` replaced D's files and had no --force."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo_fixed.mp4").write_bytes(b"mine")
    refused = invoke("demo", "--out-dir", out, "-c", NO_MODEL)
    assert_clean(refused, 2)
    assert "use --force" in refused.stderr and (out / "demo_fixed.mp4").read_bytes() == b"mine"
    forced = invoke("demo", "--out-dir", out, "-c", NO_MODEL, "--force")
    assert_clean(forced, 2)
    assert "unknown checkpoint" in forced.stderr  # past the check: the model came next
    scenes = invoke("demo", "--out-dir", out, "--scenes", "2", "-c", NO_MODEL)
    assert "unknown checkpoint" in scenes.stderr  # another demo's files are not in its way


@pytest.mark.parametrize("command", ["train", "train-separation"])
def test_training_into_a_run_folder_refuses_to_replace_the_run(tmp_path, command) -> None:
    """Item 8 audit: a new run over an old one overwrote its last.pth and truncated its
    metrics without --force (a line on the console said so, afterwards)."""
    data = tmp_path / "data"  # two clip folders in the authors' layout, and their lists
    for name in ("c0", "c1"):
        layout.write_clip(data / name, np.zeros((30, 96, 96, 3), np.uint8),
                          np.zeros(30 * 640, np.float32))
    (data / "filelists").mkdir()
    for split in ("train", "val", "test"):
        (data / "filelists" / f"{split}.txt").write_text("c0\nc1\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pth").write_bytes(b"a week of training")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    result = invoke(command, "--data-root", data, "--out", run, "--steps", "1",
                    "--preset", "tiny")
    assert_clean(result, 2)
    assert "holds a run already" in result.stderr and "--force" in result.stderr
    assert (run / "last.pth").read_bytes() == b"a week of training"
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_shift_of_an_input_that_changes_meanwhile_leaves_no_output(kit, tmp_path,
                                                                   monkeypatch) -> None:
    """Item 2 for ``shift``: an output made of two versions of its input is discarded."""
    [clip] = copies(kit, tmp_path, "a.mp4")
    real_shift = media.shift_audio

    def shift_then_replace(src, dst, delay_s, **kwargs):
        done = real_shift(src, dst, delay_s, **kwargs)
        shutil.copy(kit.other, src)
        return done

    monkeypatch.setattr(media, "shift_audio", shift_then_replace)
    result = invoke("shift", clip, "--audio-delay-ms", "40", "-o", tmp_path / "out.mp4")
    assert_clean(result, 1)
    assert "changed while it was processed" in result.stderr
    assert not (tmp_path / "out.mp4").exists()


# --------------------------------------------------------------------------- 9. smaller


def test_an_offline_download_leaves_no_cache_folder(tmp_path, monkeypatch) -> None:
    """Item 9: ``models download`` offline created the cache folder."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/x.model"
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"x": {
        "filename": "x.model", "urls": [dead], "sha256": "1" * 64, "family": "vocalist",
        "preset": "tiny", "licence": "test", "source": "test", "card": "x.md"}}))
    monkeypatch.setenv("LIPSYNC_FIX_REGISTRY", str(registry))
    cache = tmp_path / "deep" / "cache"
    monkeypatch.setenv("LIPSYNC_FIX_CACHE", str(cache))
    result = invoke("models", "download", "x")
    assert_clean(result, 1)
    assert "no network" in result.stderr and not (tmp_path / "deep").exists()


def test_a_report_row_of_the_wrong_type_is_not_trusted(kit, tmp_path, fake_estimates) -> None:
    """A damaged journal row (a number as text) is measured again, never read as one."""
    [clip] = copies(kit, tmp_path / "in", "a.mp4")
    report = tmp_path / "r.jsonl"
    assert_clean(invoke("score", clip, "-c", kit.model_a, "--report", report), 0, lines=0)
    journal = batch.Journal.beside(report).path
    row = json.loads(journal.read_text())
    journal.write_text(json.dumps(row | {"audio_delay_ms": "40"}) + "\n")
    report.unlink()
    again = invoke("score", clip, "-c", kit.model_a, "--report", report)
    assert_clean(again, 0, lines=0)
    assert len(fake_estimates) == 2 and rows(report)[str(clip)]["audio_delay_ms"] == 80.0
