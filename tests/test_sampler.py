"""The sampled estimate's stopping rule, its placement, the focused search and the cap, on
synthetic readings (score matrices made from a known offset over time plus noise), with
no model and no video: the sampler loop runs as the estimate runs it, a stand-in scoring
each placed segment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lipsync_fix.features.constants import FRAME_MS, VIDEO_FPS
from lipsync_fix.sync import SyncOptions
from lipsync_fix.sync import estimate as estimate_module
from lipsync_fix.sync.estimate import (
    RULE_OUT_SIGMAS,
    SLOPE_PRECISION,
    Evidence,
    Focus,
    SegmentScores,
    _assess,
    _Assessment,
    _conclude,
    _focus,
    _focused_peak,
    _peak_at_focus_edge,
    _sample,
    sampling_order,
    spoken_segments,
    whole_segments,
)
from lipsync_fix.sync.scoring import (
    NOT_SCORED,
    OUT_OF_RANGE,
    ScoreOptions,
    pairs_in_range,
    scored_pairs,
    shift_mask,
)

S = 15  # shifts -15..15, the default range
PER_SEGMENT = 21  # windows per 25-frame segment (T = 5)
T = 5


def synthetic_scores(first: int, n_rows: int, delay_ms: float, shifts=None,
                     rng: np.random.Generator | None = None) -> SegmentScores:
    """A segment whose windows peak at ``delay_ms`` (a smooth peak two frames wide, a
    little noise per window), strict edge rule, the shifts not asked ``NOT_SCORED``."""
    rng = rng or np.random.default_rng(0)
    rows = np.arange(first, min(n_rows, first + PER_SEGMENT))
    columns = np.arange(-S, S + 1)
    peak = delay_ms / FRAME_MS
    scores = -((columns[None, :] - peak) / 2.0) ** 2 / 2.0
    scores = scores + 0.02 * rng.standard_normal((len(rows), len(columns)))
    audio = rows[:, None] + columns[None, :]
    scores[(audio < 0) | (audio >= n_rows)] = OUT_OF_RANGE
    wanted = shift_mask(shifts, S)
    scores[(scores != OUT_OF_RANGE) & ~wanted[None, :]] = NOT_SCORED
    return SegmentScores(first, PER_SEGMENT + T - 1, rows, scores.astype(np.float32), 25, 1)


class FakeReader:
    """What :func:`_sample` asks of a clip reader: its length and batched segments."""

    def __init__(self, duration_s: float):
        self.duration_s = duration_s
        self.fps = float(VIDEO_FPS)
        self.batches: list[list[int]] = []

    def segments(self, firsts, count):
        self.batches.append(list(firsts))
        return iter([None] * len(firsts))


def run_sampler(duration_s: float, true_delay, noise_ms: float, seed: int = 0,
                **options):
    """Run the sampler loop on a clip whose segment readings are ``true_delay(t)`` plus
    Gaussian noise of ``noise_ms``; returns (evidence, open note, pairs scored, reader,
    options, n_rows)."""
    opts = SyncOptions(**options)
    n_rows = int(duration_s * VIDEO_FPS) - T
    rng = np.random.default_rng(seed)
    evidence = Evidence(S, PER_SEGMENT // 2)
    pairs = [0]

    def score(segment, first, count, focus=None):
        t = (first + count / 2) / VIDEO_FPS
        delay = float(true_delay(t)) + noise_ms * rng.standard_normal()
        scored = synthetic_scores(first, n_rows, delay,
                                  None if focus is None else focus.shifts, rng)
        if focus is not None and focus.widen(scored.scores, S):
            scored = synthetic_scores(first, n_rows, delay, None, rng)
            pairs[0] += scored_pairs(scored.scores)  # counted once more: a widening
        pairs[0] += scored_pairs(scored.scores)
        evidence.add(scored)

    voiced = np.ones(n_rows, bool)
    reader = FakeReader(duration_s)
    note = _sample(reader, evidence, score, opts, n_rows, PER_SEGMENT, T, voiced, None)
    return evidence, note, pairs[0], reader, opts, n_rows


def fit_of(evidence: Evidence, opts: SyncOptions, duration_s: float):
    return evidence.fit_offset(opts.timeline, duration_s)


def test_ten_loose_readings_of_a_minute_do_not_settle_a_constant():
    """One-frame noise, ten readings over 60 s: the slope is known to about +-45 ms/min,
    so a usable drift (20 ms over the clip) is not ruled out; the old stability rule
    stopped here and called it constant."""
    rng = np.random.default_rng(3)
    evidence = Evidence(S, PER_SEGMENT // 2)
    n_rows = 60 * 25 - T
    for first in np.linspace(0, n_rows - PER_SEGMENT, 10).astype(int):
        evidence.add(synthetic_scores(int(first), n_rows, 80.0 + 40.0 * rng.standard_normal(),
                                      rng=rng))
    opts = SyncOptions()
    assert evidence.stability() >= 0.95  # what the old rule asked for: it would stop
    assessment = _assess(evidence, opts, 60.0, 1.0)
    assert not assessment.settled
    assert assessment.target == "slope"
    assert any("drift not ruled out" in words for words in assessment.open)


def test_readings_over_the_whole_clip_that_pin_the_slope_down_settle_a_constant():
    rng = np.random.default_rng(4)
    evidence = Evidence(S, PER_SEGMENT // 2)
    n_rows = 60 * 25 - T
    for first in range(0, n_rows - PER_SEGMENT, 3 * PER_SEGMENT):
        evidence.add(synthetic_scores(first, n_rows, 80.0 + 4.0 * rng.standard_normal(),
                                      rng=rng))
    first = _assess(evidence, SyncOptions(), 60.0, 1.0)
    assert not first.settled and first.open == ("the constant not yet confirmed by a "
                                                "second round",)
    assessment = _assess(evidence, SyncOptions(), 60.0, 1.0, previous_kind="constant")
    assert assessment.settled, assessment.open
    assert assessment.fit is not None and assessment.fit.kind == "constant"
    line = assessment.fit.line
    assert line is not None
    assert line.change_bound_ms(60.0, RULE_OUT_SIGMAS) < SyncOptions().timeline.rule_out_change_ms


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_drift_of_80_ms_per_minute_is_confirmed(seed):
    """0.13 % clock error over 60 s (80 ms of change), readings 10 ms noisy: the sampler
    goes on to the clip's ends and confirms the drift: the delay it would fix within half
    a frame everywhere, the slope within a quarter (its standard error is at most a
    usable drift over the clip, 20 ms/min)."""
    evidence, note, _, reader, opts, _ = run_sampler(
        60.0, lambda t: 40.0 + 80.0 * t / 60.0, 10.0, seed)
    fit = fit_of(evidence, opts, 60.0)
    assert note is None, note
    assert fit.kind == "drift"
    assert fit.model.drift_ms_per_min == pytest.approx(80.0, rel=0.25)
    for at in (0.0, 30.0, 60.0):
        assert fit.model.offset_at(at) == pytest.approx(40.0 + 80.0 * at / 60.0,
                                                        abs=FRAME_MS / 2)
    assert len(evidence.segments) <= opts.max_segments
    assert all(len(batch) <= max(opts.first_round, opts.round_size)
               for batch in reader.batches)  # one batched read per round


@pytest.mark.parametrize("seed", range(6))
def test_a_drift_of_80_ms_per_minute_is_never_a_confident_constant(seed):
    """The same drift read with one-frame noise: the sampler may run into its cap, but
    whatever it ends with, it is not a constant without a note."""
    evidence, note, *_ = run_sampler(60.0, lambda t: 40.0 + 80.0 * t / 60.0, 40.0, seed)
    fit = fit_of(evidence, SyncOptions(), 60.0)
    assert fit.kind != "constant" or note is not None


def test_a_constant_clip_stops_early_as_constant():
    evidence, note, _, _, opts, _ = run_sampler(60.0, lambda t: 120.0, 6.0)
    fit = fit_of(evidence, opts, 60.0)
    assert note is None and fit.kind == "constant"
    assert fit.model.spans[0].audio_delay_ms == pytest.approx(120.0, abs=FRAME_MS / 2)
    assert len(evidence.segments) < opts.max_segments


def test_a_drift_is_confirmed_by_a_second_round_before_the_sampler_stops():
    rng = np.random.default_rng(8)
    evidence = Evidence(S, PER_SEGMENT // 2)
    n_rows = 60 * 25 - T
    for first in range(0, n_rows - PER_SEGMENT, 2 * PER_SEGMENT):
        evidence.add(synthetic_scores(first, n_rows, 40.0 + 120.0 * first / n_rows
                                      + 2.0 * rng.standard_normal(), rng=rng))
    first_time = _assess(evidence, SyncOptions(), 60.0, 1.0)
    assert first_time.fit is not None and first_time.fit.kind == "drift"
    assert not first_time.settled and "confirmed" in first_time.open[0]
    assert _assess(evidence, SyncOptions(), 60.0, 1.0, previous_kind="drift").settled


def test_segments_placed_for_a_slope_go_to_the_clips_ends():
    """After the first round leaves a drift open, the next round reads the ends."""
    _, _, _, reader, _, n_rows = run_sampler(60.0, lambda t: 120.0, 40.0, max_segments=10)
    first_round, second = reader.batches[0], reader.batches[1]
    taken = set(first_round)
    ends = sorted(f for f in second if f not in taken)
    assert min(ends) < 0.15 * n_rows and max(ends) > 0.85 * n_rows


def test_the_cap_reached_with_a_drift_open_is_uncertain_naming_it():
    """One-frame noise and only ten segments: neither a constant nor a drift is settled,
    so the estimate says so instead of a silent constant."""
    evidence, note, pairs, reader, opts, n_rows = run_sampler(
        60.0, lambda t: 120.0, 40.0, max_segments=10)
    assert len(evidence.segments) == 10
    assert note is not None and "--max-segments 10" in note and "drift" in note
    counters = {"frames": 25 * 10, "face_frames": 25 * 10, "faces": 1,
                "scored": evidence.usable_windows, "pairs": pairs}
    estimate = _conclude("clip.mp4", reader, evidence, counters, opts, n_rows,
                         torch.nn.Identity(), ScoreOptions(max_shift=S), note)
    assert estimate.verdict == "uncertain"
    assert note in estimate.notes
    assert estimate.pairs_scored == pairs <= estimate.pairs_available == pairs_in_range(
        n_rows, S)


def test_a_drift_keeps_reading_until_its_slope_is_within_a_fifth(monkeypatch):
    """60 s at 80 ms/min with 10 ms readings: the fix's needs (the delay within a frame at
    both ends) are met by a slope still +-30 % wide, after 10 segments; the sampler reads
    on until two standard errors of the slope are within a fifth of it (the sweep's
    measure), which it does not without that aim."""
    kwargs = dict(duration_s=60.0, true_delay=lambda t: 100.0 + 80.0 * t / 60.0,
                  noise_ms=10.0, seed=3)
    evidence, note, *_, opts, _ = run_sampler(**kwargs)
    fit = fit_of(evidence, opts, 60.0)
    assert fit.kind == "drift" and note is None
    slope, slope_se = fit.model.drift_ms_per_min, fit.model.drift_uncertainty_ms_per_min
    assert 2 * slope_se <= SLOPE_PRECISION * abs(slope) + 1e-9
    assert slope == pytest.approx(80.0, rel=SLOPE_PRECISION)
    monkeypatch.setattr(estimate_module, "SLOPE_PRECISION", math.inf)
    loose, *_ = run_sampler(**kwargs)
    assert len(loose.segments) < len(evidence.segments)


def test_the_first_round_reads_both_ends_of_the_voiced_clip():
    n_rows = 60 * 25 - T
    voiced = np.zeros(n_rows, bool)
    voiced[200:1300] = True  # silent first 8 s and last 7.8 s
    order = sampling_order(n_rows, PER_SEGMENT, voiced)
    spoken = sorted(spoken_segments(n_rows, PER_SEGMENT, voiced))
    assert order[:2] == [spoken[0], spoken[-1]]
    assert sorted(order[: len(spoken)]) == spoken  # voiced ones first, each once
    assert len(set(order)) == len(order)


def test_segments_at_the_clips_edges_are_read_after_the_whole_ones():
    """The first and last segments score their outer shifts on fewer windows (no audio
    beyond the clip), which biases their readings: the ends a slope is read from are the
    outermost segments whose every shift is in range, and edge segments come last."""
    n_rows = 60 * 25 - T
    voiced = np.ones(n_rows, bool)
    order = sampling_order(n_rows, PER_SEGMENT, voiced, max_shift=S)
    whole = whole_segments(n_rows, PER_SEGMENT, S)
    starts = sorted(spoken_segments(n_rows, PER_SEGMENT, voiced))
    edges = [a for a in starts if a not in whole]
    assert edges == [starts[0], starts[-1]]  # 0 and the last: within 15 windows of an end
    assert order[:2] == [min(whole), max(whole)]
    assert sorted(order[-2:]) == edges and sorted(order) == starts


def test_six_readings_that_agree_by_chance_do_not_settle_a_drifting_clip():
    """80 ms/min over 60 s, 20 ms readings: with this seed the first six readings of the
    plain spread order (0-45 s) agreed within 20 ms, the noise they implied was 9 ms, and
    the clip was settled as a confident constant. Reading both ends first, and asking the
    constant to win a second round too, it is called a drift."""
    evidence, _, *_, opts, _ = run_sampler(60.0, lambda t: 100.0 + 80.0 * t / 60.0,
                                           20.0, seed=3)
    fit = fit_of(evidence, opts, 60.0)
    assert len(evidence.segments) > 6
    assert fit.kind == "drift" and fit.model.drift_ms_per_min == pytest.approx(80.0, rel=0.2)


def test_the_cap_leaves_an_estimate_certain_when_only_refinement_was_left(monkeypatch):
    """What the assessment only wants refined reads on to the cap, and then is no reason
    for ``uncertain``; what it has open is."""
    refine = _Assessment(False, (), refine=("the drift's slope known to +-9 ms/min",))
    monkeypatch.setattr(estimate_module, "_assess", lambda *a, **k: refine)
    evidence, note, *_ = run_sampler(60.0, lambda t: 0.0, 5.0, max_segments=14)
    assert len(evidence.segments) == 14 and note is None
    open_ = _Assessment(False, ("a drift not ruled out",))
    monkeypatch.setattr(estimate_module, "_assess", lambda *a, **k: open_)
    evidence, note, *_ = run_sampler(60.0, lambda t: 0.0, 5.0, max_segments=14)
    assert len(evidence.segments) == 14 and "a drift not ruled out" in note


def test_focused_shifts_score_fewer_pairs_and_find_the_same_offset():
    kwargs = dict(duration_s=180.0, true_delay=lambda t: -80.0 + 60.0 * t / 60.0,
                  noise_ms=10.0, seed=5)
    focused, note_a, pairs_focused, *_ = run_sampler(**kwargs)
    full, note_b, pairs_full, _, opts, _ = run_sampler(**kwargs, focus_shifts=False)
    fit_a, fit_b = fit_of(focused, opts, 180.0), fit_of(full, opts, 180.0)
    assert note_a is None and note_b is None
    assert fit_a.kind == fit_b.kind == "drift"
    assert fit_a.model.drift_ms_per_min == pytest.approx(60.0, rel=0.2)
    assert abs(fit_a.model.drift_ms_per_min - fit_b.model.drift_ms_per_min) < 10.0
    per_segment_focused = pairs_focused / len(focused.segments)
    per_segment_full = pairs_full / len(full.segments)
    assert per_segment_focused < 0.8 * per_segment_full  # the first round is never focused
    some = [s for s in focused.segments if np.isnan(s.scores).any()]
    assert len(some) >= 2  # segments scored on a window of shifts only, each far cheaper
    assert max(scored_pairs(s.scores) for s in some) < 0.6 * per_segment_full


def test_focus_covers_the_prediction_and_at_least_three_frames():
    rng = np.random.default_rng(6)
    evidence = Evidence(S, PER_SEGMENT // 2)
    n_rows = 60 * 25 - T
    for first in range(0, n_rows - PER_SEGMENT, 2 * PER_SEGMENT):
        evidence.add(synthetic_scores(first, n_rows, 200.0 + 3.0 * rng.standard_normal(),
                                      rng=rng))
    opts = SyncOptions()
    assessment = _assess(evidence, opts, 60.0, 1.0)
    focus = _focus(assessment, opts, 30.0)
    assert focus is not None
    shifts = focus.shifts
    assert 5 in shifts and focus.predicted_frames == pytest.approx(5.0, abs=0.3)
    assert 1.0 <= focus.tolerance_frames < 3.0  # inside the window: disagreement is seen
    assert shifts.start <= 5 - 3 and shifts.stop - 1 >= 5 + 3
    assert len(shifts) < 0.6 * (2 * S + 1)
    assert _focus(assessment, SyncOptions(exhaustive=True), 30.0) is None
    assert _focus(assessment, SyncOptions(focus_shifts=False), 30.0) is None
    assert _focus(_Assessment.first(), opts, 30.0) is None  # nothing predicted yet


def test_a_reading_at_the_edge_of_the_focus_window_widens_it():
    n_rows = 500
    inside = synthetic_scores(100, n_rows, 4 * FRAME_MS, range(1, 8))
    assert not _peak_at_focus_edge(inside.scores, range(1, 8), S)
    beyond = synthetic_scores(100, n_rows, 12 * FRAME_MS, range(1, 8))  # true peak at 12
    assert _peak_at_focus_edge(beyond.scores, range(1, 8), S)
    below = synthetic_scores(100, n_rows, -6 * FRAME_MS, range(1, 8))
    assert _peak_at_focus_edge(below.scores, range(1, 8), S)
    at_range_edge = synthetic_scores(100, n_rows, 15 * FRAME_MS, range(9, 16))
    assert not _peak_at_focus_edge(at_range_edge.scores, range(9, 16), S)  # nothing beyond


def test_a_reading_inside_the_focus_window_that_disagrees_widens_it():
    """A focused window of -2..10 around a prediction of 4 frames: a segment whose curve has
    a weak peak 3 frames from the prediction (inside, off the edge) and its strong one
    outside the window disagrees with the fit and is read over the whole range; its
    reading is then the strong peak. One within the tolerance does not widen."""
    n_rows, shifts = 500, range(-2, 11)
    focus = Focus(shifts, predicted_frames=4.0, tolerance_frames=1.5)
    agreeing = synthetic_scores(100, n_rows, 5 * FRAME_MS, shifts)
    assert not focus.widen(agreeing.scores, S)
    strong = synthetic_scores(100, n_rows, 14 * FRAME_MS)  # the true peak, outside
    weak = synthetic_scores(100, n_rows, 7 * FRAME_MS)  # a secondary peak, inside
    both = np.maximum(strong.scores, weak.scores - 0.5)
    focused = np.where(shift_mask(shifts, S)[None, :] | (both == OUT_OF_RANGE), both,
                       NOT_SCORED)
    assert not _peak_at_focus_edge(focused, shifts, S)  # the edge rule alone misses it
    assert focus.widen(focused, S)
    assert _focused_peak(focused, S) == 7  # what the focused read alone would say
    assert _focused_peak(both, S) == 14  # what the widened read finds
    edge = synthetic_scores(100, n_rows, 12 * FRAME_MS, shifts)
    assert focus.widen(edge.scores, S)


def test_a_widened_reading_lands_in_the_evidence_as_a_full_curve():
    """A segment far from the prediction (another offset after a cut) is read over the
    whole range, so the fit sees its true reading rather than the window's edge."""
    def delay(t: float) -> float:
        return 0.0 if t < 30.0 else 320.0  # a step of eight frames at 30 s

    evidence, note, _, _, opts, _ = run_sampler(60.0, delay, 5.0, seed=7)
    fit = fit_of(evidence, opts, 60.0)
    assert fit.kind == "piecewise", fit.model
    levels = [span.audio_delay_ms for span in fit.model.spans]
    assert levels[0] == pytest.approx(0.0, abs=FRAME_MS / 2)
    assert levels[-1] == pytest.approx(320.0, abs=FRAME_MS / 2)
    assert math.isclose(fit.model.breaks[0], 30.0, abs_tol=2.0)
    assert note is None, note



def test_no_focus_while_the_fit_leaves_many_readings_unexplained():
    """Twelve readings of 0 ms and, in the same clip, four of +320 ms (another scene the
    fit has not split off yet): the constant predicts nothing for the next segment, so it
    is read over the whole range. With one stray reading it is focused."""
    n_rows = 60 * 25 - T

    def assessment_with(strays: int) -> _Assessment:
        rng = np.random.default_rng(8)
        evidence = Evidence(S, PER_SEGMENT // 2)
        firsts = list(range(0, n_rows - PER_SEGMENT, 4 * PER_SEGMENT))[:16]
        for i, first in enumerate(firsts):
            delay = 320.0 if i % 4 == 3 and i // 4 < strays else 0.0
            evidence.add(synthetic_scores(first, n_rows, delay + 3.0 * rng.standard_normal(),
                                          rng=rng))
        return _assess(evidence, SyncOptions(), 60.0, 1.0, previous_kind="constant")

    mixed = assessment_with(4)
    assert mixed.fit is not None and mixed.fit.kind == "constant"
    assert mixed.fit.noise_ms < 10.0  # the strays do not blur the prediction itself
    assert _focus(mixed, SyncOptions(), 30.0) is None
    clean = assessment_with(1)
    assert clean.fit is not None and _focus(clean, SyncOptions(), 30.0) is not None
