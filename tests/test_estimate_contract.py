"""The estimate as a typed value: it round-trips through its JSON, a record read back is
type-checked, the offset model it carries is what the fix applies, and its headline numbers
describe parts of the video (issue 18's contract, issue 20's headline class)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lipsync_fix.errors import RecordError
from lipsync_fix.features.constants import FRAME_MS
from lipsync_fix.sync import SyncEstimate, SyncOptions, fix_video
from lipsync_fix.sync import estimate as estimate_module
from lipsync_fix.sync import fix as fix_module
from lipsync_fix.sync.estimate import (
    CandidateScore,
    Evidence,
    ModelIdentity,
    SegmentReading,
    SegmentScores,
)
from lipsync_fix.sync.timeline import OffsetModel, Span, TimelineOptions

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
counts = st.integers(0, 10**6)


@st.composite
def offset_models(draw) -> OffsetModel:
    kind = draw(st.sampled_from(["constant", "drift", "piecewise"]))
    n = draw(st.integers(2, 5)) if kind == "piecewise" else 1
    edges = sorted(draw(st.lists(st.floats(0, 3600, allow_nan=False), min_size=n + 1,
                                 max_size=n + 1, unique=True)))
    spans = tuple(Span(edges[k], edges[k + 1], draw(finite),
                       draw(finite) if kind == "drift" else 0.0,
                       draw(st.floats(0, 1)), draw(st.none() | st.floats(0, 500)))
                  for k in range(n))
    return OffsetModel(kind, spans, draw(st.none() | st.floats(0, 100)))


estimates = st.builds(
    SyncEstimate,
    input=st.text(max_size=20), fps=st.floats(1, 240), duration_s=st.floats(0, 1e5),
    audio_delay_ms=finite, audio_delay_frames=finite, worst_audio_delay_ms=finite,
    confidence=st.floats(0, 1), verdict=st.sampled_from(["in_sync", "out_of_sync", "uncertain"]),
    face_coverage=st.floats(0, 1), windows_used=counts, faces_seen=counts,
    offset_model=offset_models(),
    scores=st.lists(st.builds(CandidateScore, finite, finite), max_size=5),
    offsets_over_time=st.lists(st.builds(SegmentReading, finite, finite), max_size=5),
    windows_scored=counts, windows_available=counts, pairs_scored=counts, pairs_available=counts,
    model=st.none() | st.builds(ModelIdentity, st.text(max_size=8),
                                st.none() | st.sampled_from(["vocalist", "syncnet-v2"]),
                                st.text("0123456789abcdef", min_size=12, max_size=12),
                                st.text(max_size=8)),
    precision=st.sampled_from(["fp32", "bf16"]), notes=st.lists(st.text(max_size=10),
                                                               max_size=3),
)


@settings(max_examples=60, deadline=None)
@given(estimates)
def test_an_estimate_round_trips_through_its_json_text(estimate: SyncEstimate) -> None:
    text = json.dumps(estimate.to_json())
    assert SyncEstimate.from_json(json.loads(text)) == estimate


def _record() -> dict:
    model = OffsetModel("drift", (Span(0.0, 40.0, -100.0, 150.0, 0.9, 3.0),), 4.0)
    return SyncEstimate(
        input="clip.mp4", fps=25.0, duration_s=40.0, audio_delay_ms=-100.0,
        audio_delay_frames=-2.5, worst_audio_delay_ms=-100.0, confidence=0.9,
        verdict="out_of_sync", face_coverage=1.0, windows_used=800, faces_seen=1,
        offset_model=model, scores=(CandidateScore(-40.0, 0.1), CandidateScore(0.0, 0.3)),
        offsets_over_time=(SegmentReading(0.5, -120.0),), windows_scored=800,
        windows_available=980, pairs_scored=800 * 31, pairs_available=980 * 31,
        model=ModelIdentity("demo-small", "vocalist", "9602554e3c1e", "x.pth"),
    ).to_json() | {"output": "fixed.mp4"}


@pytest.mark.parametrize(("change", "words"), [
    ({"audio_delay_ms": "120"}, "'audio_delay_ms' must be a number"),
    ({"windows_used": 3.0}, "'windows_used' must be a whole number"),
    ({"windows_used": True}, "'windows_used' must be a whole number"),
    ({"verdict": "maybe"}, "'verdict' must be one of"),
    ({"offset_model": "wobble"}, "'offset_model' must be one of"),
    ({"drift_ms_per_min": 12.0}, "do not match its spans"),
    ({"breaks": [3.0]}, "do not match its spans"),
    ({"spans": []}, "needs at least one span"),
    ({"spans": [{"start_s": 0}]}, "'end_s' is missing"),
    ({"scores": [{"audio_delay_ms": 0.0, "score": None}]}, "'score' must be a number"),
    ({"notes": [3]}, "must be a string"),
    ({"model": {"name": "x"}}, "'sha256' is missing"),
])
def test_a_record_with_a_wrong_value_is_refused_naming_the_key(change, words):
    record = _record() | change
    with pytest.raises(RecordError, match=words):
        SyncEstimate.from_json(record)


def test_a_missing_offset_model_is_refused_not_taken_for_a_constant():
    record = _record()
    del record["offset_model"]
    with pytest.raises(RecordError, match="'offset_model' is missing"):
        SyncEstimate.from_json(record)


def test_a_drift_read_back_from_json_is_fixed_as_a_drift(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(fix_module, "fix_timeline",
                        lambda src, dst, model, force: calls.append(model))
    monkeypatch.setattr(fix_module.media, "shift_audio",
                        lambda *args, **kwargs: pytest.fail("shifted as a constant"))
    estimate = SyncEstimate.from_json(json.loads(json.dumps(_record())))
    fix_video(tmp_path / "in.mp4", tmp_path / "out.mp4", estimate)
    assert calls == [estimate.offset_model] and calls[0].drift_ms_per_min == 150.0


def test_options_are_frozen_values():
    options = SyncOptions()
    with pytest.raises(AttributeError):
        options.max_segments = 3  # type: ignore[misc]
    from lipsync_fix.sync.scoring import ScoreOptions

    cpu = ScoreOptions()
    gpu = ScoreOptions(device="cuda").for_device()
    assert gpu is not cpu and gpu.pair_batch == 8192 and ScoreOptions().pair_batch == 512


# --------------------------------------------------------------- headline numbers

S = 15
SHIFTS = np.arange(-S, S + 1)


def _segment(first_frame: int, delay_ms: float, rng: np.random.Generator,
             rows: int = 21) -> SegmentScores:
    """A 1-s segment whose windows all peak at ``delay_ms`` (a bell plus noise)."""
    curve = np.exp(-0.5 * ((SHIFTS * FRAME_MS - delay_ms) / 60.0) ** 2)
    scores = curve[None, :] + rng.normal(0, 0.05, (rows, SHIFTS.size))
    return SegmentScores(first_frame, 25, np.arange(first_frame, first_frame + rows),
                         scores.astype(np.float32), 25, 1)


def _conclude(segments: list[SegmentScores], duration_s: float, **options) -> SyncEstimate:
    evidence = Evidence(S, 10)
    for segment in segments:
        evidence.add(segment)
    reader = SimpleNamespace(fps=25.0, duration_s=duration_s)
    counters = {"frames": 25 * len(segments), "face_frames": 25 * len(segments), "faces": 1,
                "scored": evidence.usable_windows, "pairs": 0}
    opts = SyncOptions(**options)
    return estimate_module._conclude("clip.mp4", reader, evidence, counters, opts,
                                     int(duration_s * 25), object(),
                                     estimate_module.ScoreOptions())


def test_a_forced_constant_has_one_delay_in_its_headline_and_its_span():
    """+200 ms for 20 s, then -150 ms for 12 s, read as one constant: the headline and the
    span say the same delay (today's main said -155 in one and 198 in the other)."""
    rng = np.random.default_rng(1)
    segments = [_segment(25 * k, 200.0 if k < 20 else -150.0, rng) for k in range(32)]
    forced = _conclude(segments, 32.0, timeline=TimelineOptions(model="constant"))
    assert forced.offset_model.kind == "constant"
    assert forced.audio_delay_ms == forced.offset_model.spans[0].audio_delay_ms
    assert forced.worst_audio_delay_ms == forced.audio_delay_ms
    assert abs(forced.audio_delay_ms - 200.0) <= FRAME_MS  # most of the clip's windows


def test_a_two_scene_headline_is_a_delay_the_video_has_and_the_worst_is_reported():
    """-186 ms then +256 ms: never a mean (35 ms, nearly in sync) in the headline."""
    rng = np.random.default_rng(2)
    segments = [_segment(25 * k, -186.0 if k < 18 else 256.0, rng) for k in range(30)]
    estimate = _conclude(segments, 30.0)
    spans = estimate.offset_model.spans
    assert estimate.offset_model.kind == "piecewise" and len(spans) == 2
    assert estimate.audio_delay_ms == spans[0].audio_delay_ms  # the longer scene
    assert abs(estimate.audio_delay_ms + 186.0) <= FRAME_MS
    assert abs(estimate.worst_audio_delay_ms - 256.0) <= FRAME_MS
    assert "35 ms" not in estimate.describe()
    assert estimate.audio_delay_frames == pytest.approx(estimate.audio_delay_ms / FRAME_MS,
                                                        abs=0.01)


def test_agreeing_segments_have_full_confidence_and_no_scatter_note():
    """One or two segments that agree: confidence 1 (the share that agrees), and two do
    not get "the segments do not settle (0 % of resamples agree)"."""
    rng = np.random.default_rng(3)
    one = _conclude([_segment(0, 120.0, rng)], 1.0)
    assert one.confidence == 1.0 and one.verdict == "uncertain"
    assert any("cross-checked" in note for note in one.notes)
    two = _conclude([_segment(0, 120.0, rng, rows=15), _segment(25, 120.0, rng, rows=15)],
                    2.0)
    assert two.confidence == 1.0
    assert not any("settle" in note for note in two.notes), two.notes
    assert any("windows with a face and a voice" in note for note in two.notes)


def test_describe_never_says_minus_zero():
    rng = np.random.default_rng(4)
    estimate = _conclude([_segment(25 * k, -10.0, rng) for k in range(6)], 6.0)
    assert "-0 ms" not in estimate.describe()


def test_the_report_schema_has_every_key_of_the_estimates_json_and_no_other():
    from lipsync_fix.sync.records import FIX_RECORD, SCORE_RECORD

    keys = set(_record()) - {"output"}
    assert {f.name for f in SCORE_RECORD.fields} - {"plot", "skipped", "error", "kind",
                                                    "provenance", "face_thumbnail"} == keys
    assert {f.name for f in FIX_RECORD.fields} >= keys | {"output"}
    assert SCORE_RECORD.check(_record(), "row") == _record()


def test_a_video_whose_sound_is_short_says_the_sound_is_short(tmp_path):
    """6 s of video with 0.5 s of sound: the audio is what is too short, not the clip."""
    from lipsync_fix import media
    from lipsync_fix.data.synth import make_talking_head
    from lipsync_fix.errors import ClipTooShortError
    from lipsync_fix.models.vocalist import PRESETS, VocaLiST
    from lipsync_fix.sync import estimate_sync

    clip = make_talking_head(1, duration_s=6.0, size=(128, 128))
    path = tmp_path / "short_sound.mkv"
    media.write_video(path, clip.frames, clip.fps, audio=clip.audio[: 8000],
                      sample_rate=16000)
    with pytest.raises(ClipTooShortError, match=r"the audio lasts only 0\.5\d s of the (6|5\.9)"):
        estimate_sync(path, VocaLiST(PRESETS["tiny"]), SyncOptions(device="cpu"))
    with pytest.raises(Exception, match="unknown device 'tpu'"):
        SyncOptions(device="tpu")
