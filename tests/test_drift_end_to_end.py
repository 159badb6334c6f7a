"""Offsets that change over time, end to end: the generator's drift and scenes, the fix on
real files (through rewrite_audio), and fit -> fix -> re-measure with the bundled model.

The fast tests check the generator and the fix against the generator's own truth, with no
model involved; the slow ones run the whole chain with ``demo-small`` on fresh clips.
"""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest

from lipsync_fix import media
from lipsync_fix.data.synth import make_scene_clip, make_talking_head
from lipsync_fix.demo import clip_estimate, run_demo
from lipsync_fix.faces.scenes import detect_scene_cuts
from lipsync_fix.features.constants import FRAME_MS
from lipsync_fix.models import load_model
from lipsync_fix.sync import SyncEstimate, SyncOptions, fix_video
from lipsync_fix.sync.retime import fix_timeline
from lipsync_fix.sync.timeline import OffsetModel, Span

RATE = 16000
SMALL = (128, 128)  # frame size where the picture does not matter


def envelope(audio: np.ndarray, hop: int = 80) -> np.ndarray:
    """Log RMS per 5 ms: the syllable rhythm, which survives AAC and resampling."""
    n = len(audio) // hop
    frames = audio[: n * hop].reshape(n, hop).astype(np.float64)
    return np.log(np.sqrt((frames**2).mean(axis=1)) + 1e-4)


def lag_ms(late: np.ndarray, reference: np.ndarray, at_s: float, span_s: float = 4.0,
           search_ms: float = 400.0, hop: int = 80) -> float:
    """How much later (ms) ``late`` plays the sound ``reference`` has around ``at_s``."""
    a, b = envelope(late, hop), envelope(reference, hop)
    step_ms = 1000.0 * hop / RATE
    lo, n = round((at_s - span_s / 2) * 1000 / step_ms), round(span_s * 1000 / step_ms)
    ref = b[lo : lo + n] - b[lo : lo + n].mean()
    lags = np.arange(-round(search_ms / step_ms), round(search_ms / step_ms) + 1)
    corr = []
    for k in lags:
        seg = a[lo + k : lo + k + n]
        corr.append(np.dot(seg - seg.mean(), ref) if len(seg) == n and lo + k >= 0 else -np.inf)
    return float(lags[int(np.argmax(corr))] * step_ms)


def test_a_fast_audio_clock_makes_the_delay_grow_as_asked():
    plain = make_talking_head(3, duration_s=16.0, size=SMALL)
    drifting = make_talking_head(3, duration_s=16.0, audio_delay_ms=40.0, audio_clock_ppm=6000,
                                 size=SMALL)
    assert drifting.drift_ms_per_min == pytest.approx(360.0)
    np.testing.assert_array_equal(drifting.frames, plain.frames)  # only the sound moves
    assert drifting.audio.shape == plain.audio.shape
    for at in (3.0, 8.0, 13.0):
        expected = drifting.true_delay_ms(at)
        assert expected == pytest.approx(40.0 + 360.0 * at / 60)
        assert abs(lag_ms(drifting.audio, plain.audio, at) - expected) <= 10.0


def test_scenes_have_their_own_speaker_offset_and_a_hard_cut():
    clip = make_scene_clip(5, [3.0, 4.0, 3.0], [120.0, -200.0, 0.0])
    assert clip.frames.shape[0] == 250 and clip.audio.shape == (250 * 640,)
    assert clip.scene_starts_s == (0.0, 3.0, 7.0)
    assert clip.true_delay_ms(2.99) == 120.0 and clip.true_delay_ms(3.0) == -200.0
    assert clip.true_delay_ms(9.0) == 0.0
    assert clip.audio_delay_ms == pytest.approx((3 * 120 - 4 * 200) / 10)
    cuts = np.nonzero(detect_scene_cuts(clip.frames[..., ::-1]))[0]
    assert list(cuts) == [75, 175]
    # Each scene's sound is its own speaker's, delayed within the scene.
    second = make_talking_head(int(np.random.default_rng(5).integers(0, 2**31, 3)[1]),
                               duration_s=4.0)
    assert abs(lag_ms(clip.audio[75 * 640 : 175 * 640], second.audio, 2.0, 2.5) + 200) <= 10
    assert [s.start for s in clip.syllables] == sorted(s.start for s in clip.syllables)


def test_scene_clip_needs_one_delay_per_scene():
    with pytest.raises(ValueError, match="one delay per scene"):
        make_scene_clip(1, [2.0, 2.0], [0.0])


def test_fixing_a_drifting_file_with_its_true_model_realigns_it(tmp_path):
    """The fix alone, on a real mp4 (AAC both ways), checked against the undrifted voice."""
    plain = make_talking_head(4, duration_s=16.0, size=SMALL)
    clip = make_talking_head(4, duration_s=16.0, audio_delay_ms=-60.0, audio_clock_ppm=4000,
                             size=SMALL)
    src, dst = tmp_path / "drift.mp4", tmp_path / "fixed.mp4"
    media.write_video(src, clip.frames, clip.fps, audio=clip.audio, sample_rate=RATE)
    model = OffsetModel("drift", (Span(0.0, 16.0, -60.0, clip.drift_ms_per_min),))
    fix_timeline(src, dst, model)
    before, after = media.decode_audio(src), media.decode_audio(dst)
    assert len(after) == len(before)
    assert media.video_packets_md5(dst) == media.video_packets_md5(src)
    for at in (3.0, 8.0, 13.0):
        assert abs(lag_ms(before, plain.audio, at) - clip.true_delay_ms(at)) <= 10.0
        assert abs(lag_ms(after, plain.audio, at)) <= 10.0


def test_fixing_a_multi_scene_file_with_its_true_model_realigns_every_scene(tmp_path):
    delays = [160.0, -240.0, 40.0]
    clip = make_scene_clip(6, [6.0, 6.0, 6.0], delays, size=SMALL)
    src, dst = tmp_path / "scenes.mp4", tmp_path / "fixed.mp4"
    media.write_video(src, clip.frames, clip.fps, audio=clip.audio, sample_rate=RATE)
    model = OffsetModel("piecewise", tuple(
        Span(t, t + 6.0, d) for t, d in zip(clip.scene_starts_s, delays, strict=True)))
    fix_timeline(src, dst, model)
    after = media.decode_audio(dst)
    assert len(after) == len(media.decode_audio(src))
    undelayed = make_scene_clip(6, [6.0, 6.0, 6.0], [0.0, 0.0, 0.0], size=SMALL)
    for start in clip.scene_starts_s:
        assert abs(lag_ms(after, undelayed.audio, start + 3.0, 3.0)) <= 10.0


@pytest.fixture(scope="module")
def demo_model():
    return load_model("demo-small")


def assert_fixed_copy_in_sync(fixed: SyncEstimate, parts: list[tuple[float, float]]) -> None:
    """The fixed copy re-measured: one constant offset, in sync, and in sync on every part
    (each scene, or each third of a drifting clip): the median of the 1-s readings inside
    the part, more than 0.5 s from its edges, within one frame. (A single 1-s reading of
    the small model is wrong now and then, fixed or not; a part's median is not.)"""
    assert fixed.offset_model.kind == "constant", fixed.describe()
    assert fixed.offset_model.in_sync()
    for start, end in parts:
        inside = [r.audio_delay_ms for r in fixed.offsets_over_time
                  if start + 0.5 <= r.time_s <= end - 0.5]
        assert len(inside) >= 2
        assert abs(float(np.median(inside))) <= FRAME_MS, (start, end, inside)


def thirds(seconds: float) -> list[tuple[float, float]]:
    return [(k * seconds / 3, (k + 1) * seconds / 3) for k in range(3)]


@pytest.mark.slow
def test_three_scenes_are_found_fixed_and_in_sync_after(tmp_path, demo_model):
    result = run_demo(demo_model, tmp_path, audio_delay_ms=200.0, seconds=21.0, seed=91,
                      scenes=3)
    found, truth = result.found.offset_model, result.truth
    print("\n".join(result.lines()))
    assert found.kind == "piecewise" and len(found.breaks) == 2
    assert np.max(np.abs(np.array(found.breaks) - truth.scene_starts_s[1:])) <= 0.5
    for span, delay in zip(found.spans, truth.scene_delays_ms, strict=True):
        assert abs(span.audio_delay_ms - delay) <= FRAME_MS
    # the headline is a delay one of the scenes has; the worst is the largest of them
    assert result.found.audio_delay_ms in [s.audio_delay_ms for s in found.spans]
    assert result.found.worst_audio_delay_ms == max((s.audio_delay_ms for s in found.spans),
                                                    key=abs)
    assert media.video_packets_md5(result.fixed) == media.video_packets_md5(result.clip)
    edges = [*truth.scene_starts_s, truth.duration_s]
    assert_fixed_copy_in_sync(result.after_fix, list(pairwise(edges)))


@pytest.mark.slow
def test_a_drift_is_found_fixed_and_in_sync_after(tmp_path, demo_model):
    result = run_demo(demo_model, tmp_path, audio_delay_ms=-100.0, seconds=40.0, seed=92,
                      drift_ms_per_min=150.0)
    print("\n".join(result.lines()))
    assert result.found.offset_model.kind == "drift"
    assert abs(result.found.drift_ms_per_min - 150.0) <= 30.0
    assert result.worst_error_ms() <= FRAME_MS
    assert_fixed_copy_in_sync(result.after_fix, thirds(40.0))
    # The estimate's JSON, read back, is the estimate; fixed from it, the copy is the demo's
    # (a drift read back is fixed as a drift, not shifted as a constant).
    record = json.loads(json.dumps(result.found.to_json()))
    again = SyncEstimate.from_json(record)
    assert again == result.found
    fix_video(result.clip, tmp_path / "from_json.mp4", again)
    np.testing.assert_allclose(media.decode_audio(tmp_path / "from_json.mp4"),
                               media.decode_audio(result.fixed), atol=1e-4)


@pytest.mark.slow
def test_a_constant_clip_stays_constant_and_its_fix_stays_in_sync(tmp_path, demo_model):
    clip = make_talking_head(93, duration_s=20.0, audio_delay_ms=-160.0)
    src, dst = tmp_path / "constant.mp4", tmp_path / "fixed.mp4"
    media.write_video(src, clip.frames, clip.fps, audio=clip.audio, sample_rate=RATE)
    found = clip_estimate(src, demo_model)
    assert found.offset_model.kind == "constant" and abs(found.audio_delay_ms + 160.0) <= FRAME_MS
    fix_timeline(src, dst, found.offset_model)
    # re-measured on every window, as the demo checks a fixed copy (a sampled run reads a
    # handful of segments, too few for a median in each third)
    assert_fixed_copy_in_sync(clip_estimate(dst, demo_model, SyncOptions(exhaustive=True)),
                              thirds(20.0))
