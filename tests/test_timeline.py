"""The offset model over time (constant / drift / piecewise) on synthetic segment evidence.

Each synthetic segment's curve is a bell around its true offset plus noise, on the score
matrices' grid (-600..600 ms in 40 ms steps); "wrong" segments (silence, another face) get
a noise-only curve or a bell somewhere random. The criterion must keep constant clips
constant, find true drifts and steps, and not be fooled by the wrong segments.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lipsync_fix.errors import UncertainEstimateError, UsageError
from lipsync_fix.sync.scoring import OUT_OF_RANGE
from lipsync_fix.sync.timeline import (
    MAX_DRIFT_MS_PER_MIN,
    OffsetModel,
    SegmentEvidence,
    TimelineOptions,
    evidence_from_scores,
    fit_offset_model,
    measure_segment,
)

SHIFTS = np.arange(-15, 16) * 40.0


def bell(rng: np.random.Generator, delay_ms: float, noise: float = 0.12) -> np.ndarray:
    width = rng.uniform(50.0, 90.0)
    return np.exp(-0.5 * ((SHIFTS - delay_ms) / width) ** 2) + rng.normal(0, noise, SHIFTS.size)


def make_evidence(
    rng: np.random.Generator,
    duration_s: float,
    offset,
    segment_s: float = 1.0,
    wrong: float = 0.0,
    wrong_where=None,
) -> list[SegmentEvidence]:
    """One segment per ``segment_s``; ``offset(t)`` is the truth; a share ``wrong`` of
    segments (or those where ``wrong_where(t)``) read noise."""
    out = []
    for k in range(int(duration_s / segment_s)):
        start, end = k * segment_s, (k + 1) * segment_s
        centre = 0.5 * (start + end)
        is_wrong = rng.random() < wrong if wrong_where is None else wrong_where(centre)
        if is_wrong:
            curve = (rng.normal(0, 0.3, SHIFTS.size) if rng.random() < 0.5
                     else bell(rng, rng.uniform(-600, 600)))
        else:
            curve = bell(rng, offset(centre))
        out.append(SegmentEvidence(start, end, SHIFTS, curve, windows=int(rng.integers(15, 22))))
    return out


def test_measure_segment_finds_a_parabola_vertex_between_grid_points():
    curve = -((SHIFTS - 57.0) ** 2) / 1e4
    m = measure_segment(SegmentEvidence(2.0, 3.0, SHIFTS, curve, 21))
    assert m is not None and m.audio_delay_ms == pytest.approx(57.0, abs=1e-6)
    assert m.centre_s == 2.5
    narrow, broad = (np.exp(-0.5 * ((SHIFTS - 57.0) / w) ** 2) for w in (40.0, 150.0))
    sharp = measure_segment(SegmentEvidence(0, 1, SHIFTS, narrow, 21))
    loose = measure_segment(SegmentEvidence(0, 1, SHIFTS, broad, 21))
    assert sharp.spread < loose.spread  # a sharper peak pins the offset down more
    few = measure_segment(SegmentEvidence(0, 1, SHIFTS, narrow, 3))
    assert few.windows == 3 and few.audio_delay_ms == sharp.audio_delay_ms


def test_measure_segment_refuses_a_flat_curve_and_keeps_edge_peaks_loose():
    assert measure_segment(SegmentEvidence(0, 1, SHIFTS, np.zeros(SHIFTS.size), 21)) is None
    edge = measure_segment(SegmentEvidence(0, 1, SHIFTS, SHIFTS.copy(), 21))
    assert edge.audio_delay_ms == 600.0
    inner = measure_segment(SegmentEvidence(0, 1, SHIFTS, -np.abs(SHIFTS), 21))
    assert edge.spread > inner.spread


def test_segment_evidence_validates_its_arrays():
    with pytest.raises(ValueError, match="one length"):
        SegmentEvidence(0, 1, SHIFTS, np.zeros(3), 5)
    with pytest.raises(ValueError, match="increasing"):
        SegmentEvidence(0, 1, SHIFTS[::-1], np.zeros(SHIFTS.size), 5)


@pytest.mark.parametrize("seed", range(30))
def test_a_constant_offset_stays_constant_under_noise_and_wrong_segments(seed):
    rng = np.random.default_rng(seed)
    delay = rng.uniform(-400, 400)
    evidence = make_evidence(rng, rng.uniform(20, 120), lambda t: delay, wrong=0.15)
    fit = fit_offset_model(evidence)
    model = fit.model
    assert model.kind == "constant", fit.bic
    assert model.drift_ms_per_min == 0.0 and model.breaks == ()
    assert abs(model.headline_delay_ms() - delay) < 20.0
    assert len(model.spans) == 1 and model.spans[0].support > 0.7


@pytest.mark.parametrize("seed", range(10))
def test_a_clip_in_sync_is_not_called_drifting(seed):
    rng = np.random.default_rng(100 + seed)
    model = fit_offset_model(make_evidence(rng, 90.0, lambda t: 0.0, wrong=0.1)).model
    assert model.kind == "constant" and model.in_sync()


def test_wrong_segments_bunched_at_the_end_do_not_invent_a_drift():
    """A wrong face or silence over the last fifth of the clip reads noise there (random
    peaks, some of them sharp): never a drift, and a span of its own only when several of
    its random readings happen to agree (at most 1 clip in 20)."""
    kinds = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        evidence = make_evidence(rng, 60.0, lambda t: 80.0, wrong_where=lambda t: t > 48)
        model = fit_offset_model(evidence).model
        kinds.append(model.kind)
        assert model.kind != "drift"
        assert abs(model.offset_at(10.0) - 80.0) < 15.0
    assert kinds.count("constant") >= 0.95 * len(kinds)


def test_wrong_segments_reading_one_wrong_offset_are_a_step_not_a_drift():
    """A stretch that consistently reads another offset is a span of its own, never a
    slope through both."""
    rng = np.random.default_rng(8)
    evidence = make_evidence(rng, 60.0, lambda t: 80.0 if t < 40 else -240.0)
    model = fit_offset_model(evidence).model
    assert model.kind == "piecewise" and len(model.breaks) == 1
    assert abs(model.breaks[0] - 40.0) <= 0.5


@pytest.mark.parametrize(("slope", "duration"), [(30.0, 120.0), (60.0, 90.0), (-60.0, 120.0),
                                                 (120.0, 60.0), (-45.0, 120.0)])
def test_a_true_drift_is_found_with_its_slope_within_20_percent(slope, duration):
    rng = np.random.default_rng(int(abs(slope) + duration))
    start = rng.uniform(-150, 150)
    evidence = make_evidence(rng, duration, lambda t: start + slope * t / 60.0, wrong=0.1)
    fit = fit_offset_model(evidence)
    model = fit.model
    assert model.kind == "drift", fit.bic
    assert abs(model.drift_ms_per_min - slope) <= 0.2 * abs(slope)
    assert abs(model.headline_delay_ms() - start) < 20.0
    assert model.drift_uncertainty_ms_per_min < 0.5 * abs(slope)
    assert len(model.spans) == 1 and len(fit.points) == len(evidence)
    end = model.offset_at(duration)
    assert abs(end - (start + slope * duration / 60)) < 25.0
    words = model.describe()
    assert f"{abs(model.drift_ms_per_min):.0f} ms {'later' if slope > 0 else 'earlier'} per " \
           "minute" in words


@pytest.mark.parametrize("n_scenes", [2, 3, 4])
@pytest.mark.parametrize("with_cuts", [False, True])
def test_scenes_are_found_with_breaks_within_half_a_second(n_scenes, with_cuts):
    rng = np.random.default_rng(n_scenes + 10 * with_cuts)
    cuts = np.sort(rng.uniform(0, 1, n_scenes - 1)) * 0 + np.linspace(0, 40, n_scenes + 1)[1:-1]
    cuts = cuts + rng.uniform(-2, 2, cuts.size)
    levels = [-300.0]
    for _ in range(n_scenes - 1):  # neighbouring scenes at least two frames apart
        levels.append(float(rng.choice([v for v in np.arange(-400, 401, 40)
                                        if abs(v - levels[-1]) >= 80])))
    truth = lambda t: levels[int(np.searchsorted(cuts, t))]  # noqa: E731
    evidence = make_evidence(rng, 40.0, truth, wrong=0.05)
    fit = fit_offset_model(evidence, scene_cuts_s=cuts if with_cuts else (), duration_s=41.5)
    model = fit.model
    assert model.kind == "piecewise", fit.bic
    assert model.spans[0].start_s == 0.0 and model.spans[-1].end_s == 41.5
    assert len(model.breaks) == n_scenes - 1
    assert np.max(np.abs(np.array(model.breaks) - cuts)) <= 0.5 + 1e-9
    for span, level in zip(model.spans, levels, strict=True):
        assert abs(span.audio_delay_ms - level) <= 40.0
    # the headline is a delay some part of the clip has (the longest span's), never a mean
    durations = np.diff([0.0, *model.breaks, 41.5])
    assert model.headline_delay_ms() == model.spans[int(np.argmax(durations))].audio_delay_ms
    assert model.offset_at(0.1) == model.spans[0].audio_delay_ms
    assert model.worst_delay_ms() == max((s.audio_delay_ms for s in model.spans), key=abs)


@pytest.mark.parametrize("cut", [20.25, 20.5, 20.8, 33.1])
def test_a_break_inside_a_segment_is_placed_to_a_fraction_of_it(cut):
    """The segment that straddles the cut averages windows of both offsets; the break is
    read from how much of each its curve holds, not left at a segment boundary."""
    rng = np.random.default_rng(int(cut * 10))
    before, after = 160.0, -200.0
    evidence = []
    for k in range(50):
        a = float(np.clip(cut - k, 0.0, 1.0))  # share of this segment before the cut
        curve = a * bell(rng, before, 0.0) + (1 - a) * bell(rng, after, 0.0)
        curve += rng.normal(0, 0.08, SHIFTS.size)
        evidence.append(SegmentEvidence(k, k + 1.0, SHIFTS, curve, windows=21))
    model = fit_offset_model(evidence).model
    assert model.kind == "piecewise" and len(model.breaks) == 1
    assert abs(model.breaks[0] - cut) <= 0.2


def test_scene_cuts_alone_do_not_make_a_constant_clip_piecewise():
    rng = np.random.default_rng(3)
    evidence = make_evidence(rng, 40.0, lambda t: 120.0, wrong=0.1)
    model = fit_offset_model(evidence, scene_cuts_s=[10.0, 20.0, 30.0])
    assert model.kind == "constant"


def test_steps_smaller_than_a_frame_are_not_worth_a_break():
    """A 25 ms step is below one frame: no break is placed (a slow drift may describe it),
    and whatever model is chosen stays within a frame of the truth everywhere."""
    rng = np.random.default_rng(4)
    truth = lambda t: 100.0 if t < 30 else 125.0  # noqa: E731
    model = fit_offset_model(make_evidence(rng, 60.0, truth)).model
    assert model.kind != "piecewise" and model.breaks == ()
    for t in np.arange(0.5, 60.0, 1.0):
        assert abs(model.offset_at(t) - truth(t)) < 40.0


def test_a_model_can_be_forced():
    rng = np.random.default_rng(5)
    evidence = make_evidence(rng, 60.0, lambda t: 40.0)
    drift = fit_offset_model(evidence, options=TimelineOptions(model="drift")).model
    assert drift.kind == "drift" and abs(drift.drift_ms_per_min) < 15.0
    # forced steps where there is none: no break is supported, so one span
    steps = fit_offset_model(evidence, options=TimelineOptions(model="piecewise")).model
    assert steps.kind == "constant" and abs(steps.headline_delay_ms() - 40.0) < 20
    two = make_evidence(np.random.default_rng(7), 60.0, lambda t: 40.0 if t < 30 else 200.0)
    forced = fit_offset_model(two, options=TimelineOptions(model="piecewise")).model
    assert forced.kind == "piecewise" and len(forced.spans) == 2
    rng = np.random.default_rng(6)
    drifting = make_evidence(rng, 60.0, lambda t: t)
    assert fit_offset_model(drifting, options=TimelineOptions(model="constant")).kind == "constant"


def test_a_line_steeper_than_any_clock_is_not_a_drift():
    """Readings of a 2 s clip that sweep the whole range (a model that has not learnt,
    noise) fit a line of tens of seconds per minute: not a drift, which the fix would
    resample by; forced, it is an uncertain estimate, not a crash in the fix."""
    rng = np.random.default_rng(3)
    evidence = [SegmentEvidence(0.2 * k, 0.2 * (k + 1), SHIFTS, bell(rng, 500 - 100 * k, 0.02),
                                windows=5) for k in range(10)]
    steep = fit_offset_model(evidence, options=TimelineOptions(model="auto"))
    assert steep.kind != "drift" and steep.bic["drift"] == math.inf
    with pytest.raises(UncertainEstimateError, match="not a clock drift"):
        fit_offset_model(evidence, options=TimelineOptions(model="drift"))
    # a steep but real clock error (0.9 % of the clock) is still a drift
    slope = 0.9 * MAX_DRIFT_MS_PER_MIN
    ok = make_evidence(np.random.default_rng(4), 40.0, lambda t: -170.0 + slope * t / 60.0)
    assert fit_offset_model(ok).kind == "drift"


def test_options_are_checked_with_one_clear_sentence():
    with pytest.raises(UsageError, match="one of auto, constant, drift, piecewise"):
        TimelineOptions(model="linear")
    with pytest.raises(UsageError, match="outlier_share"):
        TimelineOptions(outlier_share=1.5)


def test_no_readable_segment_is_an_uncertain_estimate():
    flat = [SegmentEvidence(0, 1, SHIFTS, np.zeros(SHIFTS.size), 21)]
    with pytest.raises(UncertainEstimateError, match="no segment"):
        fit_offset_model(flat)


def test_one_segment_gives_a_constant():
    """(Whether one reading can be trusted is the estimate's question: it says it cannot be
    cross-checked; the fit only reads it.)"""
    rng = np.random.default_rng(9)
    fit = fit_offset_model(make_evidence(rng, 1.0, lambda t: 200.0))
    assert fit.kind == "constant" and abs(fit.model.headline_delay_ms() - 200.0) < 40
    assert len(fit.points) == 1


def test_json_contract_and_words():
    rng = np.random.default_rng(10)
    model = fit_offset_model(make_evidence(rng, 60.0, lambda t: 20.0 + 0.6 * t)).model
    record = model.to_json()
    assert record["offset_model"] == "drift"
    assert set(record) == {"offset_model", "drift_ms_per_min", "drift_uncertainty_ms_per_min",
                           "spans", "breaks"}
    assert set(record["spans"][0]) == {"start_s", "end_s", "audio_delay_ms",
                                       "drift_ms_per_min", "support", "uncertainty_ms"}
    assert record["spans"][0]["audio_delay_ms"] == model.offset_at(0.0)
    assert OffsetModel.from_json(json.loads(json.dumps(record))) == model
    assert model.describe().startswith(
        f"audio drifts {model.drift_ms_per_min:.0f} ms later per minute, from "
        f"{model.offset_at(0.0):.0f} ms to {model.offset_at(60.0):.0f} ms")
    assert 28 < model.drift_ms_per_min < 44
    assert not model.in_sync()
    constant = fit_offset_model(make_evidence(rng, 30.0, lambda t: 0.0)).model.to_json()
    assert constant["offset_model"] == "constant" and constant["drift_ms_per_min"] == 0


def test_evidence_from_scores_averages_usable_rows_per_segment():
    rng = np.random.default_rng(11)
    scores = rng.normal(size=(50, 7)).astype(np.float32)
    scores[:3, :3] = OUT_OF_RANGE  # the clip's left edge
    used = np.ones(50, bool)
    used[10:20] = False  # silence: the second segment has no usable row
    evidence = evidence_from_scores(scores, used, segment_rows=10, window_frames=5)
    assert [e.start_s for e in evidence] == [0.0, 0.8, 1.2, 1.6]
    assert evidence[0].end_s == pytest.approx((9 + 5) / 25)
    assert evidence[0].windows == 10
    np.testing.assert_allclose(evidence[1].scores, scores[20:30].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(evidence[0].scores[:3], scores[3:10, :3].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(evidence[0].shifts_ms, (np.arange(7) - 3) * 40.0)
    # A last stretch shorter than half a segment joins the one before.
    assert len(evidence_from_scores(scores[:44], used[:44], 10)) == 3
    assert math.isclose(evidence_from_scores(scores[:44], used[:44], 10)[-1].end_s,
                        (43 + 5) / 25)


def test_a_constant_fit_still_carries_the_line_and_its_slope_error():
    """Whichever model wins, the fit has the weighted line with a standard error that
    shrinks as readings are added over the clip, and every rival with its uncertainty."""
    rng = np.random.default_rng(170)
    few = fit_offset_model(make_evidence(rng, 60.0, lambda t: 100.0, segment_s=6.0),
                           duration_s=60.0)
    many = fit_offset_model(make_evidence(rng, 60.0, lambda t: 100.0), duration_s=60.0)
    for fit in (few, many):
        assert fit.kind == "constant" and fit.line is not None
        assert abs(fit.line.slope_ms_per_min) < 3 * fit.line.slope_se_ms_per_min + 1.0
        assert fit.line.delay_at(30.0) == pytest.approx(100.0, abs=15.0)
        assert set(fit.rivals) >= {"constant", "drift"}
        assert fit.rivals["drift"].drift_uncertainty_ms_per_min == pytest.approx(
            fit.line.slope_se_ms_per_min)
        assert fit.rivals["constant"].spans[0].uncertainty_ms is not None
        assert not fit.step_supported
    assert many.line.slope_se_ms_per_min < 0.6 * few.line.slope_se_ms_per_min
    # the bound on the change over the clip that the sampler compares with a usable drift
    bound = many.line.change_bound_ms(60.0, 1.0)
    assert bound == pytest.approx(abs(many.line.slope_ms_per_min)
                                  + many.line.slope_se_ms_per_min)
    assert TimelineOptions().rule_out_change_ms == pytest.approx(20.0)


def test_a_focused_curve_keeps_the_spread_it_is_given():
    """A curve scored on a few shifts around its peak has a median near the peak: its own
    width would make it look sure; the spread given instead is the one used."""
    curve = np.exp(-0.5 * ((SHIFTS - 80.0) / 60.0) ** 2)
    window = np.where(np.abs(SHIFTS - 80.0) <= 120.0, curve, np.nan)
    full = measure_segment(SegmentEvidence(0, 1, SHIFTS, curve, 21))
    focused = measure_segment(SegmentEvidence(0, 1, SHIFTS, window, 21))
    assert focused.audio_delay_ms == pytest.approx(full.audio_delay_ms)
    assert focused.spread < 0.8 * full.spread  # why the override exists
    given = measure_segment(SegmentEvidence(0, 1, SHIFTS, window, 21, spread=full.spread))
    assert given.spread == full.spread


def test_a_sampled_fit_may_break_between_its_segments_where_no_cut_was_seen():
    """A step at 12 s; the only cut the sampled segments saw is at 5 s (a cut with no
    step). Told the cuts are all there are, the fit cannot break at 12 s; told it saw only
    some (``cuts_complete=False``), it breaks there."""
    rng = np.random.default_rng(12)
    evidence = [e for e in make_evidence(rng, 24.0, lambda t: -200.0 if t < 12.0 else 160.0)
                if int(e.start_s) % 2 == 0]  # every other second: a sampled estimate
    complete = fit_offset_model(evidence, [5.0], duration_s=24.0)
    assert complete.kind != "piecewise" or all(abs(b - 12.0) > 1.0 for b in complete.model.breaks)
    partial = fit_offset_model(evidence, [5.0], duration_s=24.0, cuts_complete=False)
    assert partial.kind == "piecewise"
    assert len(partial.model.breaks) == 1 and abs(partial.model.breaks[0] - 12.0) <= 1.5
    levels = [span.audio_delay_ms for span in partial.model.spans]
    assert levels == pytest.approx([-200.0, 160.0], abs=20.0)


@pytest.mark.parametrize("seed", [285, 286, 287])
def test_breaks_between_overlapping_segments_never_cross(seed):
    """A 5-frame context reads 0.2 s segments 0.04 s apart, so neighbours overlap, and so
    do the ranges their breaks are refined in: neighbouring breaks must not cross, and
    every span ends after it starts (seed 285 made a span end before it began: an
    internal error in `score --window 5` on a random model)."""
    rng = np.random.default_rng(seed)
    levels: list[float] = []
    while len(levels) < 32:
        levels += [float(rng.choice([-320.0, 0.0, 280.0, 520.0]))] * int(rng.integers(3, 6))
    evidence = [SegmentEvidence(0.2 + 0.04 * k, 0.4 + 0.04 * k, SHIFTS,
                                np.exp(-0.5 * ((SHIFTS - levels[k]) / 60.0) ** 2)
                                + rng.normal(0, 0.3, SHIFTS.size), windows=1)
                for k in range(32)]
    fit = fit_offset_model(evidence, [], duration_s=2.4, cuts_complete=False)
    for model in fit.rivals.values():
        assert list(model.breaks) == sorted(model.breaks)
        assert all(span.end_s >= span.start_s for span in model.spans)
