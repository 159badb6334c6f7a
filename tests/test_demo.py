"""The README's first command: `lipsync-fix demo` with the bundled model, offline."""

from __future__ import annotations

import pytest
from conftest import invoke

from lipsync_fix import media
from lipsync_fix.models import load_model
from lipsync_fix.models.registry import load_registry, resolve_checkpoint
from lipsync_fix.models.store import sha256_of
from lipsync_fix.models.syncnet_star import SyncNetStar
from lipsync_fix.models.vocalist import VocaLiST


@pytest.mark.parametrize(("name", "cls"), [("demo-small", VocaLiST),
                                           ("demo-small-syncnet", SyncNetStar)])
def test_bundled_demo_models_are_registered_and_verified(name, cls):
    entry = load_registry()[name]
    path = resolve_checkpoint(name)
    assert path.is_file() and sha256_of(path) == entry["sha256"]
    model = load_model(path)
    assert isinstance(model, cls) and entry["family"] == model.family
    assert entry["preset"] == "small" and "lipsync-fix train" in entry["source"]


@pytest.mark.slow  # makes and scores a clip with the demo model: ~8-15 s
@pytest.mark.parametrize(("delay_ms", "length"), [(200.0, []), (-120.0, ["--seconds", "4"])])
def test_demo_finds_the_delay_within_one_frame(tmp_path, delay_ms, length):
    """Fresh clip (a speaker and sentence not in the training set), known delay, fixed: the
    README's command as it stands, and an early audio track on a shorter clip."""
    run = invoke("demo", "--json", "--out-dir", tmp_path, "--audio-delay-ms", delay_ms, *length)
    assert run.code == 0, run.stderr
    [result] = run.json_lines()
    print(f"demo: true {result['true_audio_delay_ms']} ms, estimated "
          f"{result['audio_delay_ms']} ms, confidence {result['confidence']}")
    assert result["true_audio_delay_ms"] == delay_ms
    assert abs(result["audio_delay_ms"] - delay_ms) <= 40.0  # one frame at 25 fps
    assert result["verdict"] == "out_of_sync" and result["confidence"] >= 0.5
    assert result["face_coverage"] >= 0.95
    fixed = tmp_path / "demo_fixed.mp4"
    info = media.probe(fixed)
    assert info.has_video and info.has_audio
    assert media.video_packets_md5(fixed) == media.video_packets_md5(
        tmp_path / "demo_out_of_sync.mp4")
