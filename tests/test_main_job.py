"""The main job end to end through the CLI (in-process): contract, batch behaviour and bad
input."""

from __future__ import annotations

import base64
import csv
import hashlib
import json

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REALWORLD, invoke, needs_shared

from lipsync_fix import batch, media
from lipsync_fix.cli import main_job
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.models.checkpoint import save_checkpoint
from lipsync_fix.models.vocalist import PRESETS, VocaLiST
from lipsync_fix.sync.records import SCORE_RECORD

CONTRACT = {"input", "fps", "duration_s", "audio_delay_ms", "audio_delay_frames", "confidence",
            "verdict", "face_coverage", "windows_used", "scores"}


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("main_job")
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "tiny.pth", VocaLiST(PRESETS["tiny"]))
    clip = make_talking_head(3, duration_s=3.0, audio_delay_ms=120)
    good = root / "talk.mp4"
    media.write_video(good, clip.frames, clip.fps, audio=clip.audio, sample_rate=16000)
    return root, ckpt, good, clip


def test_score_json_contract(env):
    root, ckpt, good, _ = env
    result = invoke("score", good, "-c", ckpt, "--json", "--window", "15",
                    "--plot", root / "plot.png")
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert CONTRACT <= set(record)
    assert record["fps"] == 25.0 and abs(record["duration_s"] - 3.0) < 0.1
    assert record["verdict"] in {"in_sync", "out_of_sync", "uncertain"}
    assert 0.0 <= record["confidence"] <= 1.0 and record["face_coverage"] >= 0.95
    assert record["audio_delay_frames"] == pytest.approx(record["audio_delay_ms"] / 40, abs=0.01)
    offsets = [s["audio_delay_ms"] for s in record["scores"]]
    assert offsets == sorted(offsets) and offsets[0] == -600 and offsets[-1] == 600
    assert (root / "plot.png").stat().st_size > 1000


def test_score_report_keeps_the_scored_face_for_the_review_page(env, tmp_path):
    """``score --report`` rows carry one scored crop (a small JPEG), the page shows it,
    and a CSV report leaves it out (a spreadsheet column of base64 helps no one)."""
    _, ckpt, good, _ = env
    report = tmp_path / "r.jsonl"
    result = invoke("score", good, "-c", ckpt, "--window", "15", "--report", report, "-q")
    assert result.code == 0, result.stderr
    (row,) = [json.loads(line) for line in report.read_text().splitlines()]
    uri = row["face_thumbnail"]
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) < 6000
    face = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8),
                        cv2.IMREAD_COLOR)
    assert face.shape == (48, 96, 3) and face.std() > 5  # the lower half the model read
    assert main_job._sync_options(15, 600.0, "auto", None, "cpu", "fp32", False, 32, "auto",
                                  report=None).thumbnail_px == 0  # --json alone keeps none
    page = tmp_path / "r.html"
    assert invoke("report", "html", report, "-o", page, "-q").code == 0
    assert uri in page.read_text()
    batch.write_report(tmp_path / "r.csv", [row], SCORE_RECORD)
    assert "face_thumbnail" not in (tmp_path / "r.csv").read_text()


def test_fix_keeps_video_and_shifts_audio(env, tmp_path):
    _, ckpt, good, _ = env
    before = sha(good)
    out = tmp_path / "fixed.mp4"
    # The default command: `lipsync-fix VIDEO -o OUT`.
    result = invoke(good, "-o", out, "-c", ckpt, "--apply-uncertain", "--json", "--quiet")
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert sha(good) == before
    assert media.video_packets_md5(out) == media.video_packets_md5(good)
    src, dst = media.decode_audio(good, None), media.decode_audio(out, None)
    assert abs(len(src) - len(dst)) < 0.01 * len(src)  # duration kept
    shift = round(-record["audio_delay_ms"] / 1000 * 16000)  # fix moves audio earlier
    if shift < 0:  # output = input advanced by -shift samples
        a, b = src[-shift : -shift + 16000], dst[:16000]
    else:
        a, b = src[:16000], dst[shift : shift + 16000]
    assert np.corrcoef(a, b)[0, 1] > 0.98
    again = invoke(good, "-o", out, "-c", ckpt, "--apply-uncertain")
    assert again.code != 0 and "exists" in again.stderr


def test_batch_folder_report_and_failures(env, tmp_path):
    _, ckpt, good, _ = env
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_bytes(good.read_bytes())
    (folder / "broken.mp4").write_bytes(b"definitely not a video")
    out_dir = tmp_path / "out"
    result = invoke("fix", folder, "-o", out_dir, "-c", ckpt, "--apply-uncertain", "--json",
                    "--report", tmp_path / "report.csv")
    assert result.code == 1  # one input failed
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [("error" in r) for r in records] == [False, False, True]
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.fixed.mp4", "b.fixed.mp4"]
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert len(rows) == 3 and rows[2]["error"]
    rerun = invoke("fix", folder / "a.mp4", folder / "b.mp4", "-o", out_dir, "-c", ckpt,
                   "--apply-uncertain", "--json")
    assert rerun.code == 0
    assert all(json.loads(line)["skipped"] == "output exists"
               for line in rerun.stdout.strip().splitlines())


def _error_inputs(root, clip):
    frames, audio = clip.frames, clip.audio
    cases = {}
    cases["no_audio"] = root / "no_audio.mp4"
    media.write_video(cases["no_audio"], frames, 25.0)
    cases["audio_only"] = root / "audio_only.wav"
    sf.write(cases["audio_only"], audio, 16000)
    cases["image"] = root / "image.png"
    cv2.imwrite(str(cases["image"]), frames[0])
    cases["corrupt"] = root / "corrupt.mp4"
    cases["corrupt"].write_bytes(b"\x00" * 5000)
    cases["truncated"] = root / "truncated.mp4"
    data = (root / "talk.mp4").read_bytes()
    cases["truncated"].write_bytes(data[: len(data) // 3])
    cases["short"] = root / "short.mp4"
    media.write_video(cases["short"], frames[:12], 25.0, audio=audio[: 12 * 640],
                      sample_rate=16000)
    cases["no_face"] = root / "no_face.mp4"
    noise = np.random.default_rng(0).integers(0, 255, frames.shape, dtype=np.uint8)
    media.write_video(cases["no_face"], noise, 25.0, audio=audio, sample_rate=16000)
    cases["silence"] = root / "silence.mp4"
    media.write_video(cases["silence"], frames, 25.0, audio=np.zeros_like(audio),
                      sample_rate=16000)
    return cases


EXPECTED = {"no_audio": "audio", "audio_only": "video", "image": "image", "corrupt": "corrupt",
            "truncated": "corrupt", "short": "shorter", "no_face": "face", "silence": "silent"}


def test_bad_inputs_fail_cleanly(env, tmp_path):
    root, ckpt, _, clip = env
    cases = _error_inputs(root, clip)
    for name, path in cases.items():
        before = sha(path)
        out = tmp_path / f"{name}.out.mp4"
        result = invoke(path, "-o", out, "-c", ckpt, "--apply-uncertain", "--quiet")
        assert result.code != 0, name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (name, result.stderr)
        assert EXPECTED[name] in lines[0].lower(), (name, lines[0])
        assert not out.exists(), name
        assert sha(path) == before, name
    assert not [p for p in tmp_path.iterdir() if "out" in p.name]


@needs_shared
def test_shift_then_measure_back_on_real_clip(tmp_path):
    src = REALWORLD / "speech_phone_600x480_25fps.mp4"
    out = tmp_path / "shifted.mp4"
    result = invoke("shift", src, "--audio-delay-ms", "200", "-o", out)
    assert result.code == 0, result.stderr
    a = media.decode_audio(src, 16000)
    b = media.decode_audio(out, 16000)
    n = 16000 * 4
    # correlate(...)[lag] = sum_k b[k + lag] * a[k]: peaks where b is a delayed by lag.
    lag = int(np.argmax(np.correlate(b[: n + 6400], a[:n], "valid")))
    assert abs(lag - 3200) <= 1  # 200 ms at 16 kHz
    assert media.video_packets_md5(out) == media.video_packets_md5(src)


def test_unknown_checkpoint_and_help():
    result = invoke("score", "x.mp4", "-c", "no-such-model")
    assert result.code != 0 and "unknown checkpoint" in result.stderr
    helptext = invoke("--help").stdout
    for command in ("fix", "score", "shift", "demo", "eval", "bench"):
        assert command in helptext
