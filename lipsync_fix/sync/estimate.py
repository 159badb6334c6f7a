"""Estimate a video's audio delay: the main job's measurement, as a library function.

The data flows one way: media (decode at 25 fps and 16 kHz) -> faces (track the speaker,
crop) -> features (the model's crops and audio features) -> scores (windows against every
shift) -> offset (aggregate, confidence) -> remux (shift the audio, copy the video).

**Segments.** A clip is cut into segments of one context window (K frames, 1 s by
default); a segment's W = K - T + 1 windows each score all 2S + 1 shifts, and the mean of
their scores is the segment's *curve*, whose best shift is its *vote*. The clip's curve is
the mean over every scored window; its peak, refined to a fraction of a frame, is the
estimate.

**Sampling.** Scoring every window costs the 80M-parameter model about 0.2-0.3 s per window
on a laptop CPU, which makes an hour of video take hours. The default therefore scores
segments spread over the whole clip (a low-discrepancy order, silent stretches last), in
rounds, and stops once the estimate is settled: the clip's best shift has not moved by more
than one frame since the previous round and at least 95 % of bootstrap resamples of the
segments put it within one frame of there; ``max_segments`` bounds the work on huge
files. Segments are decoded after a seek, so what is not scored is not decoded either.
``exhaustive`` scores every window of the clip from one pass of the decoder, as the
reference does.

**Evidence.** The verdict is ``uncertain`` (and ``fix`` acts only when asked to) unless
there are at least ``min_usable_windows`` windows with a face and a voice, the peak is not
at the edge of the searched range, more than ``uncertain_below`` of the segment votes agree
with the estimate within one frame, and the bootstrap agrees; ``notes`` says which failed.

Sign convention, everywhere in the output: ``audio_delay_ms > 0`` means the sound comes
after the lips; the fix moves the audio earlier by that much. ``offset_frames`` is the
same quantity in 25 fps frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lipsync_fix.compute import PRECISIONS, autocast_dtype, resolve_device
from lipsync_fix.errors import (
    ClipTooShortError,
    NoFaceError,
    NoSpeechError,
    UncertainEstimateError,
    UsageError,
)
from lipsync_fix.features.constants import FRAME_MS, FRAMES_PER_WINDOW, VIDEO_FPS
from lipsync_fix.features.inputs import recipe_for
from lipsync_fix.sync.frontend import ClipReader, Progress, Segment
from lipsync_fix.sync.scoring import (
    OUT_OF_RANGE,
    ScoreOptions,
    WindowSource,
    num_windows,
    score_rows,
)
from lipsync_fix.sync.timeline import (
    OffsetModel,
    SegmentEvidence,
    TimelineOptions,
    drift_words,
    fit_offset_model,
    steps_words,
)

TIMELINE_BUDGET_FACTOR = 2
"""An offset that seems to change over time may take this many times ``max_segments``."""

MAX_CONTEXT_FRAMES = 250
"""10 s: a longer averaging context would blur offsets that change within a clip."""

MAX_OFFSET_LIMIT_MS = 5000.0
"""The widest search range allowed: every extra frame of range costs a column of scores."""

BOOTSTRAP_RESAMPLES = 200
SETTLED_SHARE = 0.95  # bootstrap share within one frame that counts as settled
UNSTABLE_SHARE = 0.8  # below this the evidence does not settle on one offset


@dataclass
class SyncOptions:
    """Knobs of the estimate; defaults are what the CLI uses. Values are checked here, so
    the library and the command line refuse the same things with the same words."""

    context_frames: int = 25  # K: frames per segment vote (1 s, the paper's best context)
    max_offset_ms: float = 600.0  # search range: +-15 frames by default
    detector: str = "auto"
    face_box: str | None = None
    device: str = "cpu"
    precision: str = "auto"  # auto (bf16 where native), fp32 or bf16
    exhaustive: bool = False  # score every window instead of sampling segments
    max_segments: int = 32  # segments a sampled estimate decodes (twice if the offset moves)
    first_round: int = 6  # segments before the first check of the stopping rule
    round_size: int = 4  # segments added per further round
    min_voice_rms: float = 0.005  # a window quieter than this holds no voice
    min_usable_windows: int = 40  # 1.6 s of windows with a face and a voice
    uncertain_below: float = 0.5  # votes agreeing at or below this share: "uncertain"
    in_sync_ms: float = FRAME_MS  # |delay| up to one frame counts as in sync
    timeline: TimelineOptions = field(default_factory=TimelineOptions)  # offset over time

    def __post_init__(self) -> None:
        if not (FRAMES_PER_WINDOW <= int(self.context_frames) <= MAX_CONTEXT_FRAMES):
            raise UsageError(
                f"the context window must be {FRAMES_PER_WINDOW} to {MAX_CONTEXT_FRAMES} "
                f"frames (25 = 1 s), got {self.context_frames}")
        if not (math.isfinite(self.max_offset_ms)
                and FRAME_MS <= self.max_offset_ms <= MAX_OFFSET_LIMIT_MS):
            raise UsageError(
                f"the largest offset searched must be {FRAME_MS:.0f} to "
                f"{MAX_OFFSET_LIMIT_MS:.0f} ms, got {self.max_offset_ms}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}; use "
                             f"{', '.join(PRECISIONS)}")
        if not (1 <= self.max_segments and 1 <= self.first_round and 1 <= self.round_size):
            raise UsageError("max_segments, first_round and round_size must be at least 1")
        if not (math.isfinite(self.min_voice_rms) and self.min_voice_rms >= 0):
            raise UsageError(f"min_voice_rms must be a number >= 0, got {self.min_voice_rms}")
        if not (0.0 <= self.uncertain_below <= 1.0):
            raise UsageError(f"uncertain_below must be 0 to 1, got {self.uncertain_below}")

    @property
    def max_shift(self) -> int:
        return max(1, math.ceil(self.max_offset_ms / FRAME_MS - 1e-9))


@dataclass
class SyncEstimate:
    """The output contract of ``score``/``fix`` (``--json``: one object per input)."""

    input: str
    fps: float
    duration_s: float
    audio_delay_ms: float
    offset_frames: float
    confidence: float
    verdict: str
    face_coverage: float
    windows_used: int
    faces_seen: int
    scores: list[dict] = field(default_factory=list)
    offsets_over_time: list[dict] = field(default_factory=list)
    windows_scored: int = 0
    windows_available: int = 0
    model: dict | None = None
    precision: str = "fp32"
    notes: list[str] = field(default_factory=list)
    offset_model: str = "constant"
    drift_ms_per_min: float = 0.0
    segments: list[dict] = field(default_factory=list)
    breaks: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> SyncEstimate:
        """The estimate a JSON record holds (extra keys such as ``output`` are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})

    def describe(self) -> str:
        """One human sentence saying the same as the JSON."""
        delay = abs(self.audio_delay_ms)
        if self.verdict == "uncertain":
            what = f"uncertain (best guess: audio {_late_or_early(self.audio_delay_ms, delay)})"
        elif self.verdict == "in_sync":
            what = f"in sync (audio {_late_or_early(self.audio_delay_ms, delay)})"
        else:
            what = f"audio is {_late_or_early(self.audio_delay_ms, delay)}"
        if self.offset_model == "drift":
            end = self.audio_delay_ms + self.drift_ms_per_min * self.duration_s / 60.0
            what += f"; {drift_words(self.audio_delay_ms, self.drift_ms_per_min, end)}"
        elif self.offset_model == "piecewise":
            spans = [(s["start_s"], s["end_s"], s["audio_delay_ms"]) for s in self.segments]
            what += f"; {steps_words(spans)}"
        why = f" ({'; '.join(self.notes)})" if self.notes else ""
        return (f"{self.input}: {what}, confidence {self.confidence:.2f}, "
                f"{self.windows_used} windows, face in {100 * self.face_coverage:.0f}% of "
                f"frames{why}")


def _late_or_early(delay_ms: float, magnitude: float) -> str:
    if magnitude < 0.5:
        return "0 ms off"
    return f"{magnitude:.0f} ms {'late' if delay_ms > 0 else 'early'}"


# --------------------------------------------------------------------------- evidence


@dataclass
class SegmentScores:
    """The scored windows of one segment (strict edge rule: out-of-clip columns hold
    :data:`OUT_OF_RANGE`)."""

    first_frame: int
    n_frames: int
    rows: np.ndarray  # global window starts that were scored (face and voice)
    scores: np.ndarray  # (len(rows), 2S+1)
    face_frames: int
    faces_seen: int
    cuts: tuple[int, ...] = ()  # frames (of the clip) where a new shot starts

    def column_sums(self) -> tuple[np.ndarray, np.ndarray]:
        valid = self.scores != OUT_OF_RANGE
        return (np.where(valid, self.scores, 0.0).sum(axis=0, dtype=np.float64),
                valid.sum(axis=0))

    @property
    def time_s(self) -> float:
        return (self.first_frame + self.n_frames / 2) / VIDEO_FPS


class Evidence:
    """Every segment scored so far, and what they say together."""

    def __init__(self, max_shift: int, min_votes_rows: int):
        self.max_shift = max_shift
        self.min_vote_rows = min_votes_rows
        self.segments: list[SegmentScores] = []

    def add(self, segment: SegmentScores) -> None:
        self.segments.append(segment)

    @property
    def usable_windows(self) -> int:
        return sum(len(s.rows) for s in self.segments)

    def _stack(self) -> tuple[np.ndarray, np.ndarray]:
        cols = 2 * self.max_shift + 1
        sums = np.zeros((len(self.segments), cols))
        counts = np.zeros((len(self.segments), cols))
        for i, segment in enumerate(self.segments):
            sums[i], counts[i] = segment.column_sums()
        return sums, counts

    @staticmethod
    def _curve(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        total = counts.sum(axis=0)
        return np.where(total > 0, sums.sum(axis=0) / np.maximum(total, 1), -np.inf)

    def curve(self) -> np.ndarray:
        """Mean score of each shift over every scored window that has it in range."""
        return self._curve(*self._stack())

    def best(self) -> tuple[int, float]:
        """(best column, refined shift in frames): the peak, refined to a fraction of a
        frame by a parabola through the peak and its neighbours."""
        curve = self.curve()
        best = int(np.argmax(curve))
        refined = float(best)
        if 0 < best < len(curve) - 1 and np.isfinite(curve[best - 1 : best + 2]).all():
            left, mid, right = curve[best - 1 : best + 2]
            denom = left - 2 * mid + right
            if denom < 0:
                refined = best + float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))
        return best, refined - self.max_shift

    def votes(self) -> list[tuple[SegmentScores, int]]:
        """(segment, the shift its own curve peaks at) for segments with enough windows."""
        out = []
        for segment in self.segments:
            if len(segment.rows) >= self.min_vote_rows:
                sums, counts = segment.column_sums()
                curve = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
                out.append((segment, int(np.argmax(curve)) - self.max_shift))
        return out

    def timeline(self, options: TimelineOptions, duration_s: float) -> OffsetModel:
        """The offset over time (:mod:`lipsync_fix.sync.timeline`) from each segment's own
        curve, with the scene cuts found inside the scored segments."""
        shifts_ms = (np.arange(2 * self.max_shift + 1) - self.max_shift) * FRAME_MS
        readings = []
        for segment in sorted(self.segments, key=lambda s: s.first_frame):
            if len(segment.rows) == 0:
                continue
            sums, counts = segment.column_sums()
            curve = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            readings.append(SegmentEvidence(
                segment.first_frame / VIDEO_FPS,
                (segment.first_frame + segment.n_frames) / VIDEO_FPS,
                shifts_ms, curve, len(segment.rows)))
        cuts = sorted({c / VIDEO_FPS for s in self.segments for c in s.cuts})
        return fit_offset_model(readings, cuts, options, duration_s=duration_s)

    def stability(self, seed: int = 0) -> float:
        """Share of bootstrap resamples of the segments whose clip curve peaks within one
        frame of the full evidence's peak."""
        sums, counts = self._stack()
        if len(self.segments) < 2:
            return 0.0
        best = int(np.argmax(self._curve(sums, counts)))
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(self.segments), (BOOTSTRAP_RESAMPLES, len(self.segments)))
        hits = 0
        for pick in picks:
            hits += abs(int(np.argmax(self._curve(sums[pick], counts[pick]))) - best) <= 1
        return hits / BOOTSTRAP_RESAMPLES


# --------------------------------------------------------------------------- the plan


def spread_order(n: int) -> list[int]:
    """0..n-1 ordered so that every prefix is spread evenly over the range (van der
    Corput's sequence in base 2, mapped onto n slots; taken slots are skipped)."""
    order, seen, k = [], set(), 0
    while len(order) < n:
        x, denom, m = 0.0, 1.0, k
        while m:
            denom *= 2
            x += (m & 1) / denom
            m >>= 1
        slot = min(n - 1, int(x * n))
        if slot not in seen:
            seen.add(slot)
            order.append(slot)
        k += 1
        if k > 64 * n + 64:  # every slot is reached long before; this only guards the loop
            order += [i for i in range(n) if i not in seen]
            break
    return order


def segment_starts(n_rows: int, per_segment: int, partial: bool) -> list[int]:
    """First windows of the segments that tile windows ``0 .. n_rows - 1``; with
    ``partial`` a last, shorter segment takes the windows left over."""
    full = list(range(0, n_rows - per_segment + 1, per_segment))
    if partial and (not full or full[-1] + per_segment < n_rows):
        full.append(full[-1] + per_segment if full else 0)
    return full


# --------------------------------------------------------------------------- estimate


def estimate_sync(
    path: str | Path,
    model: nn.Module,
    options: SyncOptions | None = None,
    progress: Progress | None = None,
) -> SyncEstimate:
    """Measure how late (or early) the audio of ``path`` is relative to the lips."""
    opts = options or SyncOptions()
    device = resolve_device(opts.device)
    recipe = recipe_for(model)
    reader = ClipReader(path, recipe, opts.detector, opts.face_box)
    t = int(getattr(model, "window_frames", FRAMES_PER_WINDOW))
    k = max(opts.context_frames, t)
    s = opts.max_shift
    n_rows = num_windows(reader.n_frames, reader.n_samples, t)
    per_segment = k - t + 1
    if reader.n_frames < k or n_rows < per_segment:
        raise ClipTooShortError(
            f"{path}: {reader.n_frames / VIDEO_FPS:.2f} s is shorter than one "
            f"{k}-frame context window ({k / VIDEO_FPS:.2f} s)")
    voiced = reader.voiced(n_rows, t, opts.min_voice_rms)
    if not voiced.any():
        raise NoSpeechError(f"{path}: the audio is silent; there is no voice to align")
    score_opts = ScoreOptions(max_shift=s, edge_rule="strict", device=device,
                              autocast=autocast_dtype(device, opts.precision)).for_device()
    evidence = Evidence(s, max(1, per_segment // 2))
    counters = {"frames": 0, "face_frames": 0, "faces": 0, "scored": 0}

    def score(segment: Segment, first_row: int, count: int) -> None:
        rows = np.arange(first_row, min(n_rows, first_row + count))
        has = segment.has_face
        n = min(len(rows), max(0, len(has) - t + 1))
        face_ok = np.zeros(len(rows), bool)
        if n > 0:
            face_ok[:n] = np.lib.stride_tricks.sliding_window_view(has, t)[:n].all(axis=1)
        use = rows[face_ok & voiced[rows]]
        counters["frames"] += segment.n_frames
        counters["face_frames"] += int(has.sum())
        counters["faces"] = max(counters["faces"], segment.faces_seen)
        scores = np.zeros((0, 2 * s + 1), np.float32)
        if len(use):
            first, stop = max(0, int(use[0]) - s), min(n_rows, int(use[-1]) + s + 1)
            a, b = recipe.audio_span(first, stop, t)
            features = recipe.audio_features(reader.audio_float(a, b))
            source = WindowSource(recipe, segment.crops, features, n_rows,
                                  frame_offset=segment.first,
                                  audio_offset=a // recipe.audio_hop)
            with torch.inference_mode():
                scores = score_rows(model, source, use, score_opts)
            counters["scored"] += len(use)
        evidence.add(SegmentScores(segment.first, segment.n_frames, use, scores,
                                   int(has.sum()), segment.faces_seen, segment.cuts))

    if opts.exhaustive:
        starts = segment_starts(n_rows, per_segment, partial=True)
        segments = reader.segments_in_order(starts, per_segment + t - 1)
        for first, segment in zip(starts, segments, strict=True):
            score(segment, first, per_segment)
            if progress:
                progress("windows", min(n_rows, first + per_segment), n_rows)
        stability = evidence.stability()
    else:
        stability = _sample(reader, evidence, score, opts, n_rows, per_segment, t,
                            voiced, progress)

    if evidence.usable_windows == 0:
        raise NoFaceError(
            f"{path}: no stretch of the clip has both a face and a voice "
            f"({counters['frames'] / VIDEO_FPS:.0f} s examined); give the face's position "
            "with --face-box x,y,w,h if it is there")
    return _conclude(path, reader, evidence, stability, counters, opts, n_rows, model,
                     score_opts)


def _sample(reader, evidence, score, opts: SyncOptions, n_rows: int, per_segment: int,
            t: int, voiced: np.ndarray, progress) -> float:
    """Score segments in rounds until the estimate is settled; returns the last
    bootstrap stability."""
    starts = segment_starts(n_rows, per_segment, partial=False)
    spoken = [i for i, a in enumerate(starts) if voiced[a : a + per_segment].mean() >= 0.25]
    quiet = [i for i in range(len(starts)) if i not in set(spoken)]
    order = [spoken[j] for j in spread_order(len(spoken))] + \
        [quiet[j] for j in spread_order(len(quiet))]
    budget = min(opts.max_segments, len(order))
    done, previous, stability = 0, None, 0.0
    while done < budget:
        take = opts.first_round if done == 0 else opts.round_size
        for index in order[done : min(budget, done + take)]:
            first = starts[index]
            score(reader.segment(first, per_segment + t - 1), first, per_segment)
        done = min(budget, done + take)
        if progress:
            progress("segments", done, budget)
        if evidence.usable_windows < opts.min_usable_windows or len(evidence.votes()) < 2:
            continue
        best, _ = evidence.best()
        stability = evidence.stability()
        constant = _timeline_settled(evidence, opts.timeline, reader.duration_s)
        if previous is not None and abs(best - previous) <= 1 and stability >= SETTLED_SHARE \
                and constant:
            break
        if not constant:  # a slope needs more points than a level to be read as well
            budget = min(TIMELINE_BUDGET_FACTOR * opts.max_segments, len(order))
        previous = best
    return stability if evidence.usable_windows else 0.0


def _timeline_settled(evidence: Evidence, options: TimelineOptions, duration_s: float) -> bool:
    """Whether the segments so far leave no hint of an offset that changes over time.

    A hint is any other model fitting better than a constant, decisive or not: a drift of
    a few ms per segment only becomes decisive with many segments, so a hint takes the
    whole budget rather than stopping where the constant still (barely) wins.
    """
    if options.model != "auto":
        return options.model == "constant"
    try:
        fitted = evidence.timeline(options, duration_s)
    except UncertainEstimateError:
        return False
    return fitted.kind == "constant" and min(fitted.bic.values()) >= fitted.bic["constant"]


def _conclude(path, reader: ClipReader, evidence: Evidence, stability: float,
              counters: dict, opts: SyncOptions, n_rows: int, model: nn.Module,
              score_opts: ScoreOptions) -> SyncEstimate:
    s = opts.max_shift
    best, shift = evidence.best()
    votes = evidence.votes()
    timeline = evidence.timeline(opts.timeline, reader.duration_s)
    if timeline.kind == "constant":
        expected = {id(seg): best - s for seg, _ in votes}
        delay_ms = shift * FRAME_MS
    else:  # agreement with the model at each segment's time
        expected = {id(seg): timeline.offset_at(seg.time_s) / FRAME_MS for seg, _ in votes}
        delay_ms = timeline.audio_delay_ms
        shift = delay_ms / FRAME_MS
    agree = sum(abs(v - expected[id(seg)]) <= 1 for seg, v in votes)
    confidence = agree / len(votes) if len(votes) > 1 else 0.5 * agree
    notes = []
    if evidence.usable_windows < opts.min_usable_windows:
        notes.append(f"only {evidence.usable_windows} windows with a face and a voice "
                     f"(at least {opts.min_usable_windows} are needed)")
    if timeline.kind == "constant" and best in (0, 2 * s):
        notes.append(f"the best offset is at the edge of the searched range "
                     f"(+-{s * FRAME_MS:.0f} ms): the true one may lie beyond it "
                     "(widen --max-offset-ms)")
    if len(votes) < 2:
        notes.append("one segment of evidence cannot be cross-checked")
    elif confidence <= opts.uncertain_below:
        notes.append(f"only {agree} of {len(votes)} segments agree within one frame")
    elif timeline.kind == "constant" and stability < UNSTABLE_SHARE:
        notes.append(f"the segments do not settle on one offset ({100 * stability:.0f}% of "
                     "resamples agree)")
    in_sync = abs(delay_ms) <= opts.in_sync_ms if timeline.kind == "constant" \
        else timeline.in_sync(opts.in_sync_ms)
    if notes:
        verdict = "uncertain"
    elif in_sync:
        verdict = "in_sync"
    else:
        verdict = "out_of_sync"
    curve = evidence.curve()
    frames = max(1, counters["frames"])
    estimate = SyncEstimate(
        input=str(path),
        fps=round(reader.fps, 3),
        duration_s=round(reader.duration_s, 3),
        audio_delay_ms=round(float(delay_ms), 1),
        offset_frames=round(float(shift), 2),
        confidence=round(float(confidence), 3),
        verdict=verdict,
        face_coverage=round(counters["face_frames"] / frames, 3),
        windows_used=evidence.usable_windows,
        faces_seen=counters["faces"],
        scores=[{"offset_ms": round((c - s) * FRAME_MS, 1), "score": round(float(v), 4)}
                for c, v in enumerate(curve) if np.isfinite(v)],
        offsets_over_time=[
            {"time_s": round(seg.time_s, 2), "audio_delay_ms": vote * FRAME_MS}
            for seg, vote in sorted(votes, key=lambda sv: sv[0].first_frame)],
        windows_scored=counters["scored"],
        windows_available=n_rows,
        model=getattr(model, "origin", None),
        precision="bf16" if score_opts.autocast == torch.bfloat16 else "fp32",
        notes=notes,
        offset_model=timeline.kind,
        drift_ms_per_min=round(timeline.drift_ms_per_min, 2),
        segments=[seg.to_json() for seg in timeline.segments],
        breaks=[round(b, 3) for b in timeline.breaks],
    )
    estimate.evidence = evidence  # type: ignore[attr-defined]
    estimate.timeline = timeline  # type: ignore[attr-defined]  # for the fix and the plot
    return estimate
