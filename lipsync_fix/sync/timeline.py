"""The offset over time: one constant delay, a linear drift, or a constant per span.

Real footage does not always have one offset. Audio recorded on a separate device drifts
linearly (its clock runs fast or slow, or a 23.976 fps / 44.1 kHz stream was labelled 24
fps / 48 kHz), and an edited video can have a different offset in every scene. This module
turns per-segment evidence along the clip into a model of the offset over time and says
how sure it is of each part.

Input: one :class:`SegmentEvidence` per stretch of the clip (its mean score against each
candidate offset). Each segment's curve gives one measurement: its peak, refined to a
fraction of a frame by a parabola, and a relative uncertainty from the peak's width (a
broad peak pins the offset down less than a sharp one; the fewer windows, the noisier the
mean). The measurement noise in milliseconds is then estimated from the data themselves,
from the differences between neighbouring segments, which neither a drift nor a few steps
disturb; so nothing depends on the model's score scale (logits, cosines).

Three models compete (``offset(t)`` is the audio delay at video time ``t``):

* ``constant``: ``offset(t) = a``;
* ``drift``: ``offset(t) = a + b t``;
* ``piecewise``: constant within spans, breaks at scene cuts when the caller passes them,
  else between any two segments (found by dynamic programming, optimal partitioning).

Each segment's measurement is either right (Gaussian around the model) or wrong, a silence
or another face, in which case it can land anywhere in the searched range (uniform). This
mixture keeps a few wrong segments from inventing a drift or a step: a wrong segment costs
a bounded amount whatever its value. The models are compared by the Bayesian information
criterion (-2 log-likelihood + parameters x log n, a break counting as one parameter), and a
model other than ``constant`` must win by :attr:`TimelineOptions.decisive_bic` (10: "very
strong" on Kass and Raftery's scale) and change the offset by a usable amount (a drift of
at least half a frame over the clip, steps of at least one frame). So a clip in sync, or
with one constant offset, stays ``constant`` unless the evidence clearly says otherwise.

Sign convention as everywhere: ``audio_delay_ms > 0`` means the sound comes after the lips.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats

from lipsync_fix import records
from lipsync_fix.errors import RecordError, UncertainEstimateError, UsageError
from lipsync_fix.features.constants import FRAME_MS, FRAMES_PER_WINDOW, VIDEO_FPS
from lipsync_fix.sync.scoring import OUT_OF_RANGE

MAX_DRIFT_MS_PER_MIN = 600.0
"""The fastest drift taken for a clock drift: 1 % (recorders are off by well under 0.01 %,
a 23.976/24 fps mislabel is 0.1 %). A steeper line through noisy readings of a short clip
is noise, and resampling by it would ruin the audio."""

MODELS = ("auto", "constant", "drift", "piecewise")
"""What ``--model`` accepts: ``auto`` chooses, the others force one."""

_SIGMA_FLOOR_MS = 4.0
"""Smallest per-segment noise assumed: a tenth of a frame, so that a few segments that agree
to the millisecond (quantised peaks) do not make every other deviation look significant."""

_AGREE_SIGMAS = 2.5
"""A reading within this many of its standard deviations of a span's offset does not
contradict it (a loose reading, such as a peak at the edge of the range, contradicts
little; a sharp one elsewhere does)."""

_SUPPORT_SHARE = 2 / 3
"""Share of a piecewise span's segments that must agree with its offset."""

_MAX_BREAK_CANDIDATES = 400
"""Beyond this many segments, breaks are searched on a coarser grid (the search is
quadratic in the number of candidates)."""


@dataclass(frozen=True)
class SegmentEvidence:
    """What one stretch of the clip says about the offset.

    ``scores[i]`` is the segment's mean score (higher = more in sync, on the model's own
    scale) when the audio is taken ``shifts_ms[i]`` later than the video; ``windows`` is
    how many model windows that mean is over. Shifts must be increasing and evenly spaced
    as the score matrices' columns are; scores of shifts out of range may be ``nan``.

    ``spread`` overrides the width the curve's own peak gives (see :func:`measure_segment`)
    for a curve scored on a window of shifts around its peak only: the median of such a
    curve is not the floor of the full one, so its peak would look several times sharper
    (and its reading several times surer) than the same segment scored over the range.
    """

    start_s: float
    end_s: float
    shifts_ms: np.ndarray
    scores: np.ndarray
    windows: int
    spread: float | None = None

    def __post_init__(self) -> None:
        shifts = np.asarray(self.shifts_ms, dtype=np.float64)
        scores = np.asarray(self.scores, dtype=np.float64)
        if shifts.ndim != 1 or shifts.shape != scores.shape:
            raise ValueError(
                f"shifts_ms and scores must be 1-D and of one length, got {shifts.shape} "
                f"and {scores.shape}")
        if len(shifts) > 1 and not np.all(np.diff(shifts) > 0):
            raise ValueError("shifts_ms must be increasing")
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s)
                and self.end_s >= self.start_s):
            raise ValueError(f"bad segment times {self.start_s}..{self.end_s}")
        object.__setattr__(self, "shifts_ms", shifts)
        object.__setattr__(self, "scores", scores)

    @property
    def centre_s(self) -> float:
        return 0.5 * (self.start_s + self.end_s)


@dataclass(frozen=True)
class SegmentMeasure:
    """One segment's own reading: its best offset and how loosely its curve pins it down.

    ``spread`` is relative (frames of peak width, scaled by the segment's share of
    windows); the model turns it into milliseconds with the noise level it estimates.
    """

    start_s: float
    end_s: float
    audio_delay_ms: float
    spread: float
    windows: int

    @property
    def centre_s(self) -> float:
        return 0.5 * (self.start_s + self.end_s)


@dataclass
class TimelineOptions:
    """Knobs of the offset model; the defaults are what the CLI uses."""

    model: str = "auto"  # auto | constant | drift | piecewise
    decisive_bic: float = 10.0  # how much better than constant another model must be
    min_drift_change_ms: float = FRAME_MS / 2  # a drift must move the offset this much
    min_step_ms: float = FRAME_MS  # neighbouring spans must differ this much
    min_span_segments: int = 3  # segments a piecewise span needs (at most 2 between given cuts)
    outlier_share: float = 0.1  # prior share of segments whose peak is noise
    in_sync_ms: float = FRAME_MS  # |offset| up to this is in sync

    @property
    def rule_out_change_ms(self) -> float:
        """The smallest change over the clip a drift must make to be usable (and so what
        the evidence must exclude before a clip is called constant)."""
        return self.min_drift_change_ms

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise UsageError(f"the offset model must be one of {', '.join(MODELS)}, "
                             f"got {self.model!r}")
        if not (0.0 < self.outlier_share < 1.0):
            raise UsageError(f"outlier_share must be between 0 and 1, got {self.outlier_share}")
        if int(self.min_span_segments) < 1:
            raise UsageError(
                f"min_span_segments must be at least 1, got {self.min_span_segments}")
        for name in ("decisive_bic", "min_drift_change_ms", "min_step_ms", "in_sync_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be a number >= 0, got {value}")


KINDS = ("constant", "drift", "piecewise")
"""The offset models a fit may choose (``auto`` is not one: it asks the fit to choose)."""


def delay_words(delay_ms: float) -> str:
    """A delay in words, the one wording of it: "audio 120 ms late", "audio 40 ms early",
    "audio 0 ms off" (a delay that rounds to 0 ms has no sign)."""
    if round(abs(delay_ms)) == 0:
        return "audio 0 ms off"
    return f"audio {abs(delay_ms):.0f} ms {'late' if delay_ms > 0 else 'early'}"


def drift_words(start_ms: float, drift_ms_per_min: float, end_ms: float) -> str:
    """A drift in words, e.g. "audio drifts 38 ms later per minute, from 20 ms to 400 ms"."""
    way = "later" if drift_ms_per_min > 0 else "earlier"
    return (f"audio drifts {abs(drift_ms_per_min):.0f} ms {way} per minute, "
            f"from {start_ms:.0f} ms to {end_ms:.0f} ms")


def steps_words(spans: Sequence[Span]) -> str:
    """A piecewise offset in words, span by span."""
    parts = "; ".join(f"{s.start_s:.1f}-{s.end_s:.1f} s: {delay_words(s.audio_delay_ms)}"
                      for s in spans)
    breaks = len(spans) - 1
    times = {1: "once", 2: "twice"}.get(breaks, f"{breaks} times")
    return f"the offset changes {times} ({parts})"


@dataclass(frozen=True)
class Span:
    """A part of the clip with one offset of its own: the delay at ``start_s`` and, for a
    drift, how fast it moves; ``support`` is the window-weighted probability that the
    span's readings fit it (not noise), ``uncertainty_ms`` one standard error of its delay
    (None when no reading pins it down)."""

    start_s: float
    end_s: float
    audio_delay_ms: float
    drift_ms_per_min: float = 0.0
    support: float = 1.0
    uncertainty_ms: float | None = None

    def __post_init__(self) -> None:
        values = (self.start_s, self.end_s, self.audio_delay_ms, self.drift_ms_per_min,
                  self.support)
        if not all(math.isfinite(v) for v in values) or self.end_s < self.start_s:
            raise ValueError(f"not a span: {self}")

    def delay_at(self, time_s: float | np.ndarray) -> float | np.ndarray:
        return self.audio_delay_ms + self.drift_ms_per_min * (
            np.asarray(time_s, dtype=np.float64) - self.start_s) / 60.0

    @property
    def end_delay_ms(self) -> float:
        return float(self.delay_at(self.end_s))

    def to_json(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s,
                "audio_delay_ms": self.audio_delay_ms,
                "drift_ms_per_min": self.drift_ms_per_min, "support": self.support,
                "uncertainty_ms": self.uncertainty_ms}

    @classmethod
    def from_json(cls, record: Any, context: str = "span") -> Span:
        return cls(start_s=records.number(record, "start_s", context),
                   end_s=records.number(record, "end_s", context),
                   audio_delay_ms=records.number(record, "audio_delay_ms", context),
                   drift_ms_per_min=records.number(record, "drift_ms_per_min", context),
                   support=records.number(record, "support", context),
                   uncertainty_ms=records.number(record, "uncertainty_ms", context,
                                                 optional=True))


@dataclass(frozen=True)
class OffsetModel:
    """The offset over time: the delay at every moment of the clip, as spans.

    ``constant`` is one span, ``drift`` one span whose delay moves linearly, ``piecewise``
    several constant spans that meet at ``breaks``. Everything that reads an offset (the
    estimate's headline and verdict, the fix, the plot, the sentence) asks
    :meth:`offset_at`, so there is one definition of the offset at time t.
    """

    kind: str
    spans: tuple[Span, ...]
    drift_uncertainty_ms_per_min: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown offset model {self.kind!r}")
        object.__setattr__(self, "spans", tuple(self.spans))
        if not self.spans:
            raise ValueError("an offset model needs at least one span")
        if (self.kind == "piecewise") != (len(self.spans) > 1):
            raise ValueError(f"a {self.kind} offset has {len(self.spans)} spans")
        if self.kind != "drift" and any(s.drift_ms_per_min != 0 for s in self.spans):
            raise ValueError(f"a {self.kind} offset does not drift")
        for a, b in itertools.pairwise(self.spans):
            if not abs(a.end_s - b.start_s) <= 1e-6:
                raise ValueError(f"spans must meet: {a.end_s} s, then {b.start_s} s")

    @classmethod
    def constant(cls, delay_ms: float, start_s: float, end_s: float, support: float = 1.0,
                 uncertainty_ms: float | None = None) -> OffsetModel:
        return cls("constant", (Span(start_s, end_s, delay_ms, 0.0, support,
                                     uncertainty_ms),))

    @property
    def start_s(self) -> float:
        return self.spans[0].start_s

    @property
    def end_s(self) -> float:
        return self.spans[-1].end_s

    @property
    def breaks(self) -> tuple[float, ...]:
        """Times (s) where a piecewise offset changes."""
        return tuple(s.start_s for s in self.spans[1:])

    @property
    def drift_ms_per_min(self) -> float:
        return self.spans[0].drift_ms_per_min if self.kind == "drift" else 0.0

    def offset_at(self, time_s: float | np.ndarray) -> float | np.ndarray:
        """The delay (ms) at video time ``time_s`` (the first or last span's beyond the
        clip's ends)."""
        t = np.asarray(time_s, dtype=np.float64)
        index = np.searchsorted(np.asarray(self.breaks), t, side="right")
        starts = np.array([s.start_s for s in self.spans])[index]
        levels = np.array([s.audio_delay_ms for s in self.spans])[index]
        slopes = np.array([s.drift_ms_per_min for s in self.spans])[index]
        out = levels + slopes * (t - starts) / 60.0
        return float(out) if out.ndim == 0 else out

    def extremes_ms(self) -> tuple[float, float]:
        """The smallest and largest delay anywhere in the clip."""
        ends = [v for s in self.spans for v in (s.audio_delay_ms, s.end_delay_ms)]
        return min(ends), max(ends)

    def worst_delay_ms(self) -> float:
        """The delay of largest magnitude anywhere in the clip, with its sign: what a
        report sorted by how far off a file is needs."""
        low, high = self.extremes_ms()
        return high if abs(high) >= abs(low) else low

    def headline_delay_ms(self) -> float:
        """One delay that some part of the clip really has: the constant; a drift's delay
        at the start; for a piecewise offset, the longest span's."""
        if self.kind == "piecewise":
            return max(self.spans, key=lambda s: s.end_s - s.start_s).audio_delay_ms
        return self.spans[0].audio_delay_ms

    def in_sync(self, tolerance_ms: float = FRAME_MS) -> bool:
        """Whether the delay is within ``tolerance_ms`` of zero everywhere in the clip."""
        return max(abs(v) for v in self.extremes_ms()) <= tolerance_ms

    def describe(self) -> str:
        """The model in words, e.g. "audio drifts 38 ms later per minute, from 20 ms to
        400 ms"."""
        if self.kind == "drift":
            span = self.spans[0]
            return drift_words(span.audio_delay_ms, span.drift_ms_per_min, span.end_delay_ms)
        if self.kind == "piecewise":
            return steps_words(self.spans)
        return f"one offset throughout: {delay_words(self.spans[0].audio_delay_ms)}"

    def to_json(self) -> dict:
        """The estimate's keys for its offset model (flat in the estimate's JSON)."""
        return {"offset_model": self.kind,
                "drift_ms_per_min": self.drift_ms_per_min,
                "drift_uncertainty_ms_per_min": self.drift_uncertainty_ms_per_min,
                "spans": [s.to_json() for s in self.spans],
                "breaks": list(self.breaks)}

    @classmethod
    def from_json(cls, record: Any, context: str = "") -> OffsetModel:
        """The model :meth:`to_json` wrote (extra keys of the record are ignored); the
        redundant ``drift_ms_per_min`` and ``breaks`` must agree with the spans."""
        kind = records.text(record, "offset_model", context, choices=KINDS)
        spans = records.items(record, "spans", Span.from_json, context)
        try:
            model = cls(kind, spans, records.number(
                record, "drift_uncertainty_ms_per_min", context, optional=True))
        except ValueError as exc:
            raise RecordError(f"{context or 'the record'} holds no offset model: {exc}") \
                from None
        drift = records.number(record, "drift_ms_per_min", context)
        breaks = records.numbers(record, "breaks", context)
        if drift != model.drift_ms_per_min or breaks != model.breaks:
            raise RecordError(f"{context or 'the record'}: drift_ms_per_min and breaks do "
                              "not match its spans")
        return model


@dataclass(frozen=True)
class OffsetFit:
    """What :func:`fit_offset_model` found: the chosen model, and the evidence for it.

    ``bic`` holds each candidate's criterion (lower is better; inf where a model could
    not be fitted), ``noise_ms`` the estimated spread of one segment's reading,
    ``confidence`` the window-weighted probability that the readings fit the model, and
    ``points`` the readings themselves (for plots and checks).
    """

    model: OffsetModel
    bic: Mapping[str, float]
    noise_ms: float
    confidence: float
    points: tuple[Reading, ...] = ()
    line: LineFit | None = None
    rivals: Mapping[str, OffsetModel] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def step_supported(self) -> bool:
        """Whether a split into constant spans explains the readings better than one
        constant (by any margin): a step that more readings may make decisive."""
        return "piecewise" in self.rivals and \
            self.bic.get("piecewise", math.inf) < self.bic["constant"]


@dataclass(frozen=True)
class LineFit:
    """The straight line through the readings (``delay = intercept + slope * t``, ms and
    ms/s), weighted by the timeline's own noise model, with the covariance of its two
    parameters. Fitted whichever model wins, so a constant's caller can ask how steep a
    drift the readings still allow (a constant chosen over ten loose readings may hide one).
    """

    intercept_ms: float
    slope_ms_per_s: float
    cov: tuple[tuple[float, float], tuple[float, float]]

    @property
    def slope_ms_per_min(self) -> float:
        return 60.0 * self.slope_ms_per_s

    @property
    def slope_se_ms_per_min(self) -> float:
        """One standard error of the slope."""
        return 60.0 * math.sqrt(max(self.cov[1][1], 0.0))

    def delay_at(self, time_s: float) -> float:
        return self.intercept_ms + self.slope_ms_per_s * time_s

    def delay_se_at(self, time_s: float) -> float:
        """One standard error of the line's delay at ``time_s``."""
        (aa, ab), (_, bb) = self.cov
        return math.sqrt(max(aa + 2 * ab * time_s + bb * time_s * time_s, 0.0))

    def change_bound_ms(self, duration_s: float, sigmas: float) -> float:
        """The largest change over ``duration_s`` that the slope's interval of
        +-``sigmas`` standard errors allows."""
        return (abs(self.slope_ms_per_min) + sigmas * self.slope_se_ms_per_min) \
            * duration_s / 60.0


@dataclass(frozen=True)
class Reading:
    """One segment's reading as the fit saw it: its delay, its noise (ms) and the
    probability that it is right."""

    start_s: float
    end_s: float
    audio_delay_ms: float
    sigma_ms: float
    inlier: float


# ---------------------------------------------------------------------------------------
# Evidence
# ---------------------------------------------------------------------------------------


def evidence_from_scores(
    scores: np.ndarray,
    used: np.ndarray,
    segment_rows: int,
    window_frames: int = FRAMES_PER_WINDOW,
    fps: float = VIDEO_FPS,
    first_row: int = 0,
) -> list[SegmentEvidence]:
    """Cut a score matrix (rows = windows from ``first_row`` on, columns = shifts -S..+S,
    :data:`~lipsync_fix.sync.scoring.OUT_OF_RANGE` where a shift leaves the clip) into
    consecutive segments of ``segment_rows`` rows and average each segment's usable rows.

    A segment spans the frames its windows cover (``window_frames`` each). Segments with
    no usable row are left out; the last, shorter segment is kept when it holds at least
    half as many rows, else merged into the one before.
    """
    scores = np.asarray(scores)
    used = np.asarray(used, dtype=bool)
    if scores.ndim != 2 or used.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (rows, shifts) with one used flag per row, got "
                         f"{scores.shape} and {used.shape}")
    if segment_rows < 1:
        raise ValueError(f"segment_rows must be at least 1, got {segment_rows}")
    n_rows, n_cols = scores.shape
    s = (n_cols - 1) // 2
    shifts_ms = (np.arange(n_cols) - s) * (1000.0 / fps)
    starts = list(range(0, n_rows, segment_rows))
    if len(starts) > 1 and n_rows - starts[-1] < segment_rows / 2:
        starts.pop()
    out = []
    for k, r0 in enumerate(starts):
        r1 = starts[k + 1] if k + 1 < len(starts) else n_rows
        block, keep = scores[r0:r1], used[r0:r1]
        valid = (block != OUT_OF_RANGE) & keep[:, None]
        counts = valid.sum(axis=0)
        if not keep.any() or not counts.any():
            continue
        sums = np.where(valid, block, 0.0).sum(axis=0, dtype=np.float64)
        curve = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        rows = np.nonzero(keep)[0] + r0 + first_row
        out.append(SegmentEvidence(
            start_s=float(rows[0] / fps), end_s=float((rows[-1] + window_frames) / fps),
            shifts_ms=shifts_ms, scores=curve, windows=int(keep.sum())))
    return out


def measure_segment(evidence: SegmentEvidence) -> SegmentMeasure | None:
    """The segment's best offset (parabola through the peak and its neighbours) and the
    width of its peak, or None when its curve has no peak to read (flat, too short).

    The width is the distance from the peak at which the fitted parabola has fallen by the
    peak's height over the curve's median: a sharp, tall peak is narrow, a broad or low
    one (a weak segment) wide. It is measured in frames, so the model's score scale
    cancels out.
    """
    finite = np.isfinite(evidence.scores)
    shifts, curve = evidence.shifts_ms[finite], evidence.scores[finite]
    if len(curve) < 3 or evidence.windows < 1:
        return None
    best = int(np.argmax(curve))
    height = curve[best] - float(np.median(curve))
    if not height > 0:
        return None
    range_ms = shifts[-1] - shifts[0]
    delay, width_ms = float(shifts[best]), 0.5 * range_ms  # an edge peak: as loose as it gets
    if 0 < best < len(curve) - 1:
        x, y = shifts[best - 1 : best + 2], curve[best - 1 : best + 2]
        (x0, x1, x2), (y0, y1, y2) = x, y
        # Second-order coefficient and vertex of the parabola through three points.
        denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
        b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
        if a < 0:
            half_step = 0.5 * min(x1 - x0, x2 - x1)
            delay = float(np.clip(-b / (2 * a), x1 - half_step, x1 + half_step))
            width_ms = float(min(math.sqrt(height / -a), 0.5 * range_ms))
    step = float(np.median(np.diff(shifts)))
    spread = max(width_ms, 0.5 * step) / FRAME_MS
    if evidence.spread is not None:
        spread = evidence.spread
    return SegmentMeasure(evidence.start_s, evidence.end_s, delay, spread,
                          int(evidence.windows))


# ---------------------------------------------------------------------------------------
# The mixture likelihood
# ---------------------------------------------------------------------------------------


@dataclass
class _Points:
    """The measurements in time order, with everything the fits share."""

    t: np.ndarray  # centre times (s)
    y: np.ndarray  # measured delays (ms)
    sigma: np.ndarray  # per-segment noise (ms)
    windows: np.ndarray
    start: np.ndarray
    end: np.ndarray
    log_outlier: float  # log(eps / range): the density of a wrong segment's reading
    log_inlier_prior: float  # log(1 - eps)
    noise_ms: float
    evidence: list[SegmentEvidence]  # each point's own curve, in the same order

    @property
    def n(self) -> int:
        return len(self.y)

    def loglik(self, residual: np.ndarray, sigma: np.ndarray | None = None) -> np.ndarray:
        """Per-point log-likelihood of residuals under the Gaussian + uniform mixture."""
        sigma = self.sigma if sigma is None else sigma
        z = residual / sigma
        inlier = self.log_inlier_prior - 0.5 * z * z - np.log(sigma * math.sqrt(2 * math.pi))
        return np.logaddexp(inlier, self.log_outlier)

    def inlier_prob(self, residual: np.ndarray, sigma: np.ndarray | None = None) -> np.ndarray:
        """Posterior probability that each reading is right (not noise), given residuals."""
        sigma = self.sigma if sigma is None else sigma
        z = residual / sigma
        inlier = self.log_inlier_prior - 0.5 * z * z - np.log(sigma * math.sqrt(2 * math.pi))
        return np.exp(inlier - np.logaddexp(inlier, self.log_outlier))


def _points(
    measures: Sequence[SegmentMeasure], evidence: Sequence[SegmentEvidence], range_ms: float,
    eps: float,
) -> _Points:
    order = sorted(range(len(measures)), key=lambda i: measures[i].centre_s)
    ms = [measures[i] for i in order]
    windows = np.array([m.windows for m in ms], dtype=np.float64)
    spread = np.array([m.spread for m in ms]) * np.sqrt(np.median(windows) / windows)
    y = np.array([m.audio_delay_ms for m in ms])
    noise = _noise_scale(y, spread, range_ms)
    return _Points(
        t=np.array([m.centre_s for m in ms]), y=y,
        sigma=np.maximum(noise * spread, _SIGMA_FLOOR_MS), windows=windows,
        start=np.array([m.start_s for m in ms]), end=np.array([m.end_s for m in ms]),
        log_outlier=math.log(eps / range_ms), log_inlier_prior=math.log(1.0 - eps),
        noise_ms=float(noise * np.median(spread)), evidence=[evidence[i] for i in order],
    )


def _noise_scale(y: np.ndarray, spread: np.ndarray, range_ms: float) -> float:
    """Milliseconds per unit of spread, from neighbouring segments' differences.

    Differences of consecutive readings cancel whatever the offset does slowly (a drift
    moves it by a fraction of a millisecond between neighbours) and are large only at the
    few steps and next to wrong segments. Those are taken out the same way as in the
    model: each difference is Gaussian (variance ``s^2 (u_i^2 + u_j^2)``) or spread
    uniformly over twice the searched range, and ``s`` is fitted by EM, starting from
    the median absolute difference (0.6745 standard deviations for Gaussian noise).
    """
    if len(y) < 3:
        return FRAME_MS / 2 / float(np.median(spread)) if len(y) else FRAME_MS / 2
    d = np.diff(y)
    var = spread[1:] ** 2 + spread[:-1] ** 2
    s2 = max((float(np.median(np.abs(d) / np.sqrt(var))) / 0.6745) ** 2, 1e-6)
    share = 0.2
    for _ in range(100):
        log_in = (math.log(1 - share) - 0.5 * d * d / (s2 * var)
                  - 0.5 * np.log(2 * math.pi * s2 * var))
        r = np.exp(log_in - np.logaddexp(log_in, math.log(share / (2 * range_ms))))
        new = float((r * d * d / var).sum() / max(r.sum(), 1e-9))
        share = float(np.clip(1 - r.mean(), 0.01, 0.5))
        if not new > 1e-9 or abs(new - s2) < 1e-6 * s2:
            s2 = max(new, 1e-9)
            break
        s2 = new
    return math.sqrt(s2)


def _fit_constant(p: _Points, idx: slice | np.ndarray, grid: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood constant over the points ``idx``: best value on the 1-ms grid,
    then refined by EM. Returns (offset, log-likelihood)."""
    y, sigma = p.y[idx], p.sigma[idx]
    ll = p.loglik(y[:, None] - grid[None, :], sigma[:, None]).sum(axis=0)
    a = float(grid[int(np.argmax(ll))])
    for _ in range(20):
        r = p.inlier_prob(y - a, sigma)
        w = r / sigma**2
        if w.sum() <= 0:
            break
        new = float((w * y).sum() / w.sum())
        if abs(new - a) < 1e-3:
            a = new
            break
        a = new
    return a, float(p.loglik(y - a, sigma).sum())


def _fit_line(p: _Points, starts: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """Maximum-likelihood line ``a + b t`` (ms, ms/s) by EM from each starting guess;
    returns (a, b, log-likelihood) of the best."""
    best = (0.0, 0.0, -math.inf)
    for a, b in starts:
        for _ in range(50):
            r = p.inlier_prob(p.y - (a + b * p.t), p.sigma)
            w = r / p.sigma**2
            if w.sum() <= 0 or np.count_nonzero(r > 1e-3) < 2:
                break
            tm = (w * p.t).sum() / w.sum()
            ym = (w * p.y).sum() / w.sum()
            sxx = (w * (p.t - tm) ** 2).sum()
            if sxx <= 0:
                break
            new_b = float((w * (p.t - tm) * (p.y - ym)).sum() / sxx)
            new_a = float(ym - new_b * tm)
            done = abs(new_a - a) < 1e-3 and abs(new_b - b) < 1e-6
            a, b = new_a, new_b
            if done:
                break
        ll = float(p.loglik(p.y - (a + b * p.t)).sum())
        if ll > best[2]:
            best = (a, b, ll)
    return best


def _partition(
    p: _Points, grid: np.ndarray, candidates: np.ndarray, penalty: float, min_len: int
) -> tuple[list[int], float]:
    """Optimal partitioning: the split of the points into spans, each with its own
    constant, that minimises -2 log-likelihood + ``penalty`` per span. Spans may start
    only at ``candidates`` (point indices) and hold at least ``min_len`` points.

    A span must also be *supported*: :data:`_SUPPORT_SHARE` of its points, and at least
    ``min_len``, not contradicting its offset (:data:`_AGREE_SIGMAS`). Without that, a
    stretch of wrong segments (another face, silence) would be cut into spans that each
    fit one of its random readings exactly, since explaining one reading gains more
    likelihood than a break costs.

    Returns the span starts (0 first) and the minimised cost.
    """
    # Cumulative per-point log-likelihood (and agreement count) at every grid offset: a
    # span's best fit is the max over the grid of a difference of two rows.
    residual = p.y[:, None] - grid[None, :]
    ll = p.loglik(residual, p.sigma[:, None])
    cum = np.vstack([np.zeros((1, len(grid))), np.cumsum(ll, axis=0)])
    agree = np.abs(residual) <= _AGREE_SIGMAS * p.sigma[:, None]
    cum_agree = np.vstack([np.zeros((1, len(grid)), dtype=np.int64),
                           np.cumsum(agree, axis=0, dtype=np.int64)])
    cuts = np.concatenate([candidates, [p.n]])
    cost = np.full(len(cuts), np.inf)
    back = np.zeros(len(cuts), dtype=int)
    cost[0] = 0.0
    for j in range(1, len(cuts)):
        lo = cuts[:j]
        length = cuts[j] - lo
        fit = cum[cuts[j]][None, :] - cum[lo]
        best = np.argmax(fit, axis=1)
        support = (cum_agree[cuts[j]][best] - cum_agree[lo, best])
        needed = np.maximum(min_len, np.ceil(_SUPPORT_SHARE * length))
        ok = (length >= min_len) & (support >= needed)
        if not ok.any():
            continue
        span = -2.0 * fit[np.arange(j), best]
        total = np.where(ok, cost[:j] + span + penalty, np.inf)
        k = int(np.argmin(total))
        cost[j], back[j] = total[k], k
    starts, j = [], len(cuts) - 1
    if not np.isfinite(cost[j]):
        return [0], math.inf
    while j > 0:
        j = back[j]
        starts.append(int(cuts[j]))
    return sorted(starts), float(cost[-1])


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


def fit_offset_model(
    evidence: Sequence[SegmentEvidence],
    scene_cuts_s: Sequence[float] = (),
    options: TimelineOptions | None = None,
    duration_s: float | None = None,
    cuts_complete: bool = True,
) -> OffsetFit:
    """Choose and fit the offset model that the segments' evidence supports.

    ``scene_cuts_s`` (video times of hard cuts, if the caller detected them) are where a
    ``piecewise`` model may break; without them it may break anywhere, to about a frame.
    A caller that looked at only part of the clip (a sampled estimate) passes the cuts it
    saw with ``cuts_complete=False``: a cut between two of its segments went unseen, so
    breaks may fall anywhere, and a break near a seen cut is still placed on it.
    ``options.model`` other than ``auto`` forces that model. ``duration_s`` (the clip's
    length) makes the last part reach the end of the clip rather than of the evidence.
    """
    opts = options or TimelineOptions()
    readable = [(m, e) for e in evidence if (m := measure_segment(e)) is not None]
    measures = [m for m, _ in readable]
    if not measures:
        raise UncertainEstimateError(
            "no segment of the clip has a score peak to read an offset from")
    shifts = np.concatenate([e.shifts_ms for e in evidence])
    step = float(np.median(np.concatenate([np.diff(e.shifts_ms) for e in evidence])))
    range_ms = float(shifts.max() - shifts.min()) + step
    p = _points(measures, [e for _, e in readable], range_ms, opts.outlier_share)
    grid = np.arange(math.floor(shifts.min()), math.ceil(shifts.max()) + 1.0, 1.0)
    log_n = math.log(max(p.n, 2))
    clip_start, clip_end = 0.0, max(float(p.end.max()), float(duration_s or 0.0))

    # constant
    a0, ll0 = _fit_constant(p, slice(None), grid)
    bic = {"constant": -2 * ll0 + log_n}
    # drift: from the constant and from the Theil-Sen line (robust to a third of outliers)
    starts = [(a0, 0.0)]
    if p.n >= 3 and np.ptp(p.t) > 0:
        slope, intercept, _, _ = stats.theilslopes(p.y, p.t)
        starts.append((float(intercept), float(slope)))
    a1, b1, ll1 = _fit_line(p, starts) if p.n >= 3 else (a0, 0.0, ll0)
    # a line steeper than any clock drift is no candidate (noise of a short clip)
    plausible = abs(60.0 * b1) <= MAX_DRIFT_MS_PER_MIN
    bic["drift"] = -2 * ll1 + 2 * log_n if plausible else math.inf
    # piecewise
    spans, pw_cost = _piecewise(p, grid, scene_cuts_s, opts, log_n, cuts_complete)
    bic["piecewise"] = pw_cost

    kind = opts.model
    if kind == "auto":
        kind = "constant"
        choices = []
        change = abs(b1) * (p.t.max() - p.t.min()) if p.n else 0.0
        if change >= opts.min_drift_change_ms and bic["drift"] + opts.decisive_bic < bic[
                "constant"]:
            choices.append("drift")
        if len(spans) > 1 and bic["piecewise"] + opts.decisive_bic < bic["constant"]:
            choices.append("piecewise")
        if choices:
            kind = min(choices, key=bic.__getitem__)

    if kind == "drift" and not plausible:
        raise UncertainEstimateError(
            f"the best line through the readings drifts {60.0 * b1:.0f} ms/min, beyond "
            f"+-{MAX_DRIFT_MS_PER_MIN:.0f} ms/min: that is not a clock drift")
    # Every rival is fitted, with its parameters' uncertainty, so that a caller deciding
    # whether to read more segments can ask what the readings still allow.
    line = _line_fit(p, a1, b1) if p.n >= 3 else None
    rivals = {"constant": _piecewise_model(p, grid, [0], (), clip_start, clip_end, bic,
                                           kind="constant")}
    if plausible and line is not None:
        rivals["drift"] = _drift_model(p, a1, b1, clip_start, clip_end, bic)
    if len(spans) > 1:
        rivals["piecewise"] = _piecewise_model(p, grid, spans, scene_cuts_s, clip_start,
                                               clip_end, bic)
    # a piecewise offset without a supported break is one constant
    chosen = rivals.get(kind, rivals["constant"])
    return replace(chosen, line=line,
                   rivals={name: fit.model for name, fit in rivals.items()})


def _line_fit(p: _Points, a: float, b: float) -> LineFit:
    """The line ``a + b t`` with its parameters' covariance: the inverse of the Fisher
    information of the readings, each weighted by its noise and by the probability that
    it is right (a wrong reading pins nothing down)."""
    r = p.inlier_prob(p.y - (a + b * p.t), p.sigma)
    w = r / p.sigma**2
    design = np.stack([np.ones(p.n), p.t], axis=1)
    cov = np.linalg.pinv(design.T @ (w[:, None] * design))
    return LineFit(float(a), float(b), ((float(cov[0, 0]), float(cov[0, 1])),
                                        (float(cov[1, 0]), float(cov[1, 1]))))


def _piecewise(
    p: _Points, grid: np.ndarray, scene_cuts_s: Sequence[float], opts: TimelineOptions,
    log_n: float, cuts_complete: bool = True,
) -> tuple[list[int], float]:
    """The best split into constant spans, with steps of at least ``min_step_ms``; returns
    the span starts (point indices) and its BIC. Breaks are taken only at the cuts when
    they are ``cuts_complete`` (every frame of the clip was looked at), else anywhere."""
    cuts = np.sort(np.asarray(list(scene_cuts_s), dtype=np.float64))
    if len(cuts) and cuts_complete:
        # A span may start at the first point after a cut.
        candidates = np.unique(np.concatenate([[0], np.searchsorted(p.t, cuts)]))
        candidates = candidates[candidates < p.n]
        # Between cuts the caller saw, a scene of two segments may stand on its own.
        min_len = min(int(opts.min_span_segments), 2)
    else:
        stride = max(1, math.ceil(p.n / _MAX_BREAK_CANDIDATES))
        candidates = np.arange(0, p.n, stride)
        min_len = int(opts.min_span_segments)
    # Each extra span costs its offset and its break (2 parameters), and must itself be
    # decisive, as the first break must be against a constant.
    penalty = 2 * log_n + opts.decisive_bic
    starts, cost = _partition(p, grid, candidates, penalty, min_len)
    # Merge neighbours whose offsets differ by less than a usable step, smallest first.
    while len(starts) > 1:
        bounds = [*starts, p.n]
        levels = [_fit_constant(p, slice(bounds[k], bounds[k + 1]), grid)[0]
                  for k in range(len(starts))]
        steps = np.abs(np.diff(levels))
        k = int(np.argmin(steps))
        if steps[k] >= opts.min_step_ms:
            break
        del starts[k + 1]
    bounds = [*starts, p.n]
    ll = sum(_fit_constant(p, slice(bounds[k], bounds[k + 1]), grid)[1]
             for k in range(len(starts)))
    return starts, -2 * ll + (2 * len(starts) - 1) * log_n if np.isfinite(cost) else math.inf


def _support(p: _Points, idx: np.ndarray | slice, residual: np.ndarray) -> float:
    """Window-weighted probability that the points fit the model (not noise)."""
    r = p.inlier_prob(residual, p.sigma[idx])
    w = p.windows[idx]
    return float((r * w).sum() / w.sum())


def _piecewise_model(
    p: _Points, grid: np.ndarray, starts: list[int], scene_cuts_s: Sequence[float],
    clip_start: float, clip_end: float, bic: dict[str, float], kind: str = "piecewise",
) -> OffsetFit:
    bounds = [*starts, p.n]
    levels = [_fit_constant(p, np.arange(bounds[k], bounds[k + 1]), grid)[0]
              for k in range(len(starts))]
    cuts = np.sort(np.asarray(list(scene_cuts_s), dtype=np.float64))
    breaks = []
    for k in range(1, len(starts)):
        last, first = bounds[k] - 1, bounds[k]
        inside = cuts[(cuts > p.t[last]) & (cuts <= p.t[first])]
        if len(inside):
            middle = 0.5 * (p.t[last] + p.t[first])
            breaks.append(float(inside[np.argmin(np.abs(inside - middle))]))
        else:
            breaks.append(_refine_break(
                p, np.arange(bounds[k - 1], last), np.arange(first + 1, bounds[k + 1]),
                last, first, levels[k - 1], levels[k]))
    # Overlapping segments (a short context) give neighbouring breaks overlapping ranges
    # to be refined in: where two cross, the later takes the earlier's place.
    breaks = [float(b) for b in np.maximum.accumulate(breaks)] if breaks else []
    edges = [clip_start, *breaks, clip_end]
    spans = []
    for k in range(len(starts)):
        idx = np.arange(bounds[k], bounds[k + 1])
        level = levels[k]
        r = p.inlier_prob(p.y[idx] - level, p.sigma[idx])
        info = float((r / p.sigma[idx] ** 2).sum())
        spans.append(Span(
            start_s=edges[k], end_s=edges[k + 1], audio_delay_ms=level,
            support=_support(p, idx, p.y[idx] - level),
            uncertainty_ms=1.0 / math.sqrt(info) if info > 0 else None))
    return _fit(OffsetModel(kind, tuple(spans)), p, bic)


def _refine_break(
    p: _Points, before: np.ndarray, after: np.ndarray, last: int, first: int,
    level_before: float, level_after: float,
) -> float:
    """Where between segments ``last`` and ``first`` the offset changes, to a frame.

    A segment that straddles the cut averages windows of both spans (scores are means
    over windows, so they mix linearly): with a share ``a`` of its windows before the cut,
    its preference ``D = score(level_before) - score(level_after)`` is ``a * D_before +
    (1 - a) * D_after``, where ``D_before`` > 0 > ``D_after`` are the same preference in
    the two spans' other segments (their mean curves). Each candidate cut time (one frame
    apart) fixes ``a`` for both boundary segments; the time whose predicted preferences
    fit theirs best is the break. Without usable curves, the boundary between the two.
    """
    fallback = float(0.5 * (p.end[last] + p.start[first]))

    def preference(idx: Sequence[int]) -> float | None:
        """Window-weighted mean of score(level_before) - score(level_after)."""
        values, weights = [], []
        for i in idx:
            e = p.evidence[i]
            ok = np.isfinite(e.scores)
            if ok.sum() < 2:
                continue
            at = np.interp([level_before, level_after], e.shifts_ms[ok], e.scores[ok])
            values.append(at[0] - at[1])
            weights.append(p.windows[i])
        return float(np.average(values, weights=weights)) if values else None

    d_before, d_after = preference(before[-8:]), preference(after[:8])
    d_last, d_first = preference([last]), preference([first])
    if None in (d_before, d_after, d_last, d_first) or not d_before > 0 > d_after:
        return fallback
    lo, hi = float(p.start[last]), float(p.end[first])
    times = np.arange(lo, hi + 1e-9, FRAME_MS / 1000.0)
    cost = np.zeros(len(times))
    for i, seen in ((last, d_last), (first, d_first)):
        span = max(float(p.end[i] - p.start[i]), 1e-9)
        share = np.clip((times - p.start[i]) / span, 0.0, 1.0)
        cost += (seen - (share * d_before + (1 - share) * d_after)) ** 2
    best = times[cost <= cost.min() + 1e-9 * max(cost.min(), 1e-12)]
    return float(best.mean())


def _drift_model(
    p: _Points, a: float, b: float, clip_start: float, clip_end: float, bic: dict[str, float]
) -> OffsetFit:
    residual = p.y - (a + b * p.t)
    cov = np.asarray(_line_fit(p, a, b).cov)
    at_start = np.array([1.0, clip_start])
    span = Span(start_s=clip_start, end_s=clip_end, audio_delay_ms=float(a + b * clip_start),
                drift_ms_per_min=float(60.0 * b), support=_support(p, slice(None), residual),
                uncertainty_ms=float(math.sqrt(max(at_start @ cov @ at_start, 0.0))))
    model = OffsetModel("drift", (span,),
                        drift_uncertainty_ms_per_min=float(60.0 * math.sqrt(max(cov[1, 1], 0.0))))
    return _fit(model, p, bic)


def _fit(model: OffsetModel, p: _Points, bic: dict[str, float]) -> OffsetFit:
    """The fit's record: the model, its criteria, and each reading with the probability
    that it is right under the model."""
    fitted = np.asarray(model.offset_at(p.t), dtype=np.float64)
    r = p.inlier_prob(p.y - fitted)
    points = tuple(Reading(float(p.start[i]), float(p.end[i]), float(p.y[i]),
                           float(p.sigma[i]), float(r[i])) for i in range(p.n))
    return OffsetFit(model=model, bic=dict(bic), noise_ms=p.noise_ms,
                     confidence=float((r * p.windows).sum() / p.windows.sum()), points=points)
