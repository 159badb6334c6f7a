"""Review, then apply: ``fix --from-report`` applies a reviewed report's estimates as
recorded, without a model, only to the content that was measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import invoke

from lipsync_fix import batch, media
from lipsync_fix.cli import main_job
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.models.checkpoint import save_checkpoint
from lipsync_fix.models.vocalist import PRESETS, VocaLiST
from lipsync_fix.sync.records import SCORE_RECORD


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A folder of three clips scored into a JSON-lines report."""
    root = tmp_path_factory.mktemp("from_report")
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "tiny.pth", VocaLiST(PRESETS["tiny"]))
    folder = root / "in"
    folder.mkdir()
    for seed, name in enumerate(("a.mp4", "b.mp4", "c.mp4")):
        clip = make_talking_head(seed, duration_s=2.4, audio_delay_ms=80)
        media.write_video(folder / name, clip.frames, clip.fps, audio=clip.audio,
                          sample_rate=16000)
    report = root / "scored.jsonl"
    result = invoke("score", folder, "-c", ckpt, "--window", "5", "--report", report, "-q")
    assert result.code == 0, result.stderr
    return root, ckpt, folder, report


def _rows(report):
    return {json.loads(line)["input"].rsplit("/", 1)[-1]: json.loads(line)
            for line in report.read_text().splitlines()}


def _set_constant(row: dict, delay_ms: float, verdict: str = "out_of_sync") -> None:
    """What a reviewer does to a row: say the delay is ``delay_ms``, all through."""
    row["audio_delay_ms"] = row["worst_audio_delay_ms"] = delay_ms
    row["audio_delay_frames"] = delay_ms / 40
    row["offset_model"], row["drift_ms_per_min"], row["breaks"] = "constant", 0.0, []
    row["spans"] = [row["spans"][0] | {"audio_delay_ms": delay_ms, "drift_ms_per_min": 0.0,
                                       "start_s": 0.0, "end_s": row["duration_s"]}]
    row["verdict"] = verdict


def _write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _audio_moved_earlier_by(src, dst, delay_ms: float) -> float:
    """The correlation of ``dst`` with ``src`` moved earlier by ``delay_ms``."""
    a, b = media.decode_audio(src, None), media.decode_audio(dst, None)
    shift = round(delay_ms / 1000 * 16000)
    n = 16000
    return float(np.corrcoef(a[shift:shift + n], b[:n])[0, 1])


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("fix --from-report loaded a model")
    monkeypatch.setattr(main_job, "load_named_model", refuse)


def test_a_reviewed_report_is_applied_as_recorded_without_a_model(measured, tmp_path,
                                                                   monkeypatch):
    _, ckpt, folder, report = measured
    rows = _rows(report)
    reference = tmp_path / "ref.mp4"  # what fix writes when it measures a.mp4 itself
    assert invoke("fix", folder / "a.mp4", "-o", reference, "-c", ckpt, "--window", "5",
                  "--apply-uncertain", "-q").code == 0
    _set_constant(rows["b.mp4"], 200.0)  # the reviewer's correction
    reviewed = tmp_path / "reviewed.jsonl"
    _write_rows(reviewed, [rows["a.mp4"], rows["b.mp4"]])  # c.mp4's row deleted
    inputs_before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def refuse(*args, **kwargs):
        raise AssertionError("fix --from-report loaded a model")
    monkeypatch.setattr(main_job, "load_named_model", refuse)
    out = tmp_path / "out"
    result = invoke("fix", folder, "--from-report", reviewed, "-o", out, "--apply-uncertain",
                    "--json", "--report", tmp_path / "fixed.jsonl")
    assert result.code == 0, result.stderr
    records = {r["input"].rsplit("/", 1)[-1]: r
               for r in map(json.loads, result.stdout.strip().splitlines())}
    assert records["c.mp4"]["skipped"] == "not in the report"
    assert records["b.mp4"]["audio_delay_ms"] == 200.0  # echoed as applied
    assert records["a.mp4"]["spans"] == rows["a.mp4"]["spans"]
    assert sorted(p.name for p in out.iterdir()) == ["a.fixed.mp4", "b.fixed.mp4"]
    # a: the same file fix writes from its own measurement
    assert media.video_packets_md5(out / "a.fixed.mp4") == media.video_packets_md5(reference)
    np.testing.assert_allclose(media.decode_audio(out / "a.fixed.mp4", None),
                               media.decode_audio(reference, None), atol=1e-6)
    # b: moved by the reviewed 200 ms, not by anything measured
    assert _audio_moved_earlier_by(folder / "b.mp4", out / "b.fixed.mp4", 200.0) > 0.98
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == inputs_before
    human = invoke("fix", folder / "b.mp4", "--from-report", reviewed, "-o",
                   tmp_path / "b.mp4", "--apply-uncertain")
    assert human.code == 0, human.stderr
    assert human.stdout.startswith("applied ") and "200 ms" in human.stdout


def test_changed_and_unlisted_inputs_are_refused_and_the_others_done(measured, tmp_path,
                                                                     no_model):
    _, _, folder, report = measured
    work = tmp_path / "in"
    work.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (work / name).write_bytes((folder / name).read_bytes())
    rows = _rows(report)
    for name in ("a.mp4", "b.mp4"):
        rows[name]["input"] = str(work / name)
    reviewed = tmp_path / "r.jsonl"
    _write_rows(reviewed, [rows["a.mp4"], rows["b.mp4"]])
    clip = make_talking_head(7, duration_s=2.4, audio_delay_ms=0)  # a.mp4 replaced since
    media.write_video(work / "a.mp4", clip.frames, clip.fps, audio=clip.audio,
                      sample_rate=16000)
    out = tmp_path / "out"
    result = invoke("fix", work, "--from-report", reviewed, "-o", out, "--apply-uncertain")
    assert result.code == 1
    assert "changed since it was measured" in result.stderr and "a.mp4" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b.fixed.mp4"]
    unlisted = invoke("fix", folder / "c.mp4", "--from-report", reviewed, "-o",
                      tmp_path / "c.mp4", "--apply-uncertain")
    assert unlisted.code == 1 and "has no row in" in unlisted.stderr
    assert not (tmp_path / "c.mp4").exists()


def test_only_chooses_rows_by_verdict_in_a_csv_report(measured, tmp_path, no_model):
    _, _, folder, report = measured
    rows = _rows(report)
    _set_constant(rows["a.mp4"], 0.0, verdict="in_sync")
    _set_constant(rows["b.mp4"], 120.0)
    _set_constant(rows["c.mp4"], 40.0, verdict="uncertain")
    reviewed = tmp_path / "r.csv"  # spans travel in a JSON cell, provenance too
    batch.write_report(reviewed, list(rows.values()), SCORE_RECORD)
    out = tmp_path / "out"
    result = invoke("fix", folder, "--from-report", reviewed, "--only", "out_of_sync",
                    "-o", out, "--json")
    assert result.code == 0, result.stderr
    skipped = {r["input"].rsplit("/", 1)[-1]: r.get("skipped")
               for r in map(json.loads, result.stdout.strip().splitlines())}
    assert skipped == {"a.mp4": "its verdict is in_sync, not out_of_sync", "b.mp4": None,
                       "c.mp4": "its verdict is uncertain, not out_of_sync"}
    assert _audio_moved_earlier_by(folder / "b.mp4", out / "b.fixed.mp4", 120.0) > 0.98
    # uncertain rows follow fix's rule: applied only when asked
    both = invoke("fix", folder, "--from-report", reviewed, "--only", "out_of_sync",
                  "--only", "uncertain", "-o", tmp_path / "out2", "-q")
    assert both.code == 1 and "--apply-uncertain" in both.stderr
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["b.fixed.mp4"]


def test_bad_requests_fail_in_one_line_before_anything_is_written(measured, tmp_path,
                                                                   no_model):
    _, ckpt, folder, report = measured
    rows = _rows(report)
    edited = dict(rows["a.mp4"], audio_delay_ms=333.0)  # headline edited, spans not
    half_edited = tmp_path / "half.jsonl"
    _write_rows(half_edited, [edited])
    out = tmp_path / "o.mp4"
    cases = {
        ("-c", ckpt): (2, "measures nothing"),
        ("--only", "sideways"): (2, "a verdict is one of"),
        ("--report", report): (2, "the report being applied"),
    }
    for extra, (code, words) in cases.items():
        result = invoke("fix", folder / "a.mp4", "--from-report", report, "-o", out, *extra)
        assert (result.code, words in result.stderr) == (code, True), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    not_a_report = tmp_path / "notes.jsonl"
    not_a_report.write_text("hello\n")
    assert invoke("fix", folder / "a.mp4", "--from-report", not_a_report, "-o", out).code == 2
    alone = invoke("fix", folder / "a.mp4", "--only", "in_sync", "-o", out)
    assert alone.code == 2 and "--from-report" in alone.stderr
    disagree = invoke("fix", folder / "a.mp4", "--from-report", half_edited, "-o", out,
                      "--apply-uncertain")
    assert disagree.code == 1 and "disagrees with its spans" in disagree.stderr
    assert not out.exists()
