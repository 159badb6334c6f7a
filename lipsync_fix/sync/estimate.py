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
segments in rounds and stops on evidence, not on stability: after each round the offset
over time is fitted (:mod:`lipsync_fix.sync.timeline`) and the sampler stops when the
hypotheses the tool acts on are settled (:func:`_assess`). A ``constant`` needs its delay
known within a frame, the slope's interval (from the timeline's own noise model) to
exclude a usable drift (:attr:`TimelineOptions.rule_out_change_ms` over the clip) and no
step supported; a ``drift`` or ``piecewise`` model that won needs its
parameters known to the same precision. Until then each round places its segments where
they shrink what is open most (:func:`_place`): the clip's ends for a slope, both sides of
a suspected break for a step, spread over the clip (a low-discrepancy order, silent
stretches last) otherwise. ``max_segments`` caps the work; reaching it with something
still open makes the verdict ``uncertain`` with a note naming it. Segments are decoded
after a seek, so what is not scored is not decoded either. ``exhaustive`` scores every
window of the clip against every shift from one pass of the decoder, as the reference
does.

**Focused shifts.** Once the fit predicts a segment's offset within a few frames (every
rival model the evidence has not ruled out included), only the shifts within ``k`` frames
of the prediction are scored (``k`` from the prediction's uncertainty, at least
:data:`MIN_FOCUS_FRAMES`); a segment whose peak lands at the edge of that window, or
inside it but further from the prediction than any model not ruled out allows, is scored
again over the full range, its video windows encoded once: the fit is then wrong about
it, and its true peak may lie outside. ``pairs_scored`` counts
the (window, shift) pairs scored, ``pairs_available`` what scoring everything costs.

**Evidence.** The verdict is ``uncertain`` (and ``fix`` acts only when asked to) unless
there are at least ``min_usable_windows`` windows with a face and a voice, the peak is not
at the edge of the searched range, more than ``uncertain_below`` of the segment votes agree
with the estimate within one frame, and the bootstrap agrees; ``notes`` says which failed.

Sign convention, everywhere in the output: ``audio_delay_ms > 0`` means the sound comes
after the lips; the fix moves the audio earlier by that much. ``offset_frames`` is the
same quantity in 25 fps frames.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from lipsync_fix import records
from lipsync_fix.compute import PRECISIONS, autocast_dtype, check_device_name, resolve_device
from lipsync_fix.errors import (
    ClipTooShortError,
    NoFaceError,
    NoSpeechError,
    RecordError,
    UncertainEstimateError,
    UsageError,
)
from lipsync_fix.features.constants import FRAME_MS, FRAMES_PER_WINDOW, SAMPLE_RATE, VIDEO_FPS
from lipsync_fix.features.inputs import recipe_for
from lipsync_fix.sync.frontend import ClipReader, Progress, Segment, open_reader
from lipsync_fix.sync.scoring import (
    OUT_OF_RANGE,
    ScoreOptions,
    VideoCache,
    WindowSource,
    num_windows,
    pairs_in_range,
    score_rows,
    scored_pairs,
)
from lipsync_fix.sync.timeline import (
    OffsetFit,
    OffsetModel,
    SegmentEvidence,
    TimelineOptions,
    delay_words,
    fit_offset_model,
    measure_segment,
)

STOP_SIGMAS = 2.0
"""Standard errors on each side of an estimate that its interval spans (about 95 %): what
the stopping rule asks to lie within a frame (a delay) or within a usable drift's change
over the clip (a drift's slope)."""

RULE_OUT_SIGMAS = 1.0
"""Standard errors added to the slope's magnitude before it is compared with a usable
drift (half a frame over the clip) to rule a drift out. The usable drift is a quarter of
the smallest the tool must catch (two frames over the clip), so a bound at one standard
error keeps such a drift at least three standard errors from a ``constant``; two would
make a 20 s clip of ordinary 15 ms readings unable to stop at all."""

SLOPE_PRECISION = 0.2
"""Share of a drift's slope that +-:data:`STOP_SIGMAS` standard errors of it should stay
within before the sampler stops reading: a slope within 20 % of the truth. The fix needs
less (its delay within a frame at the clip's ends, which the stopping rule asks for
anyway), so this only asks for more readings while the cap allows them; a drift that
reaches the cap with its slope looser than this is not made ``uncertain`` for it."""

MIN_FOCUS_FRAMES = 3
"""The narrowest focused search: +-3 frames around the predicted offset."""

FOCUS_SIGMAS = 3.0
"""A focused window spans the prediction +- this many standard errors of a reading."""

DISAGREE_SIGMAS = 2.5
"""A focused reading further than this many standard errors (of the prediction and of one
reading together) from every model not ruled out disagrees with the fit, and is read again
over the whole range. Under the window's own reach (FOCUS_SIGMAS), so a reading can
disagree inside the window, where its peak is still seen."""

MIN_DISAGREE_FRAMES = 1.0
"""A reading within a frame of the prediction never disagrees: peaks are read to a frame."""

FOCUS_MIN_AGREEMENT = 0.8
"""Share of the readings so far that must fit the model (inlier probability at least a
half) before it may focus anything: a model half the readings contradict (a constant
fitted across two scenes) predicts nothing, and a window placed by it can hold a
secondary peak of the segment, off the window's edge, that then reads as agreement."""

MAX_FOCUS_SHARE = 0.6
"""A focused window wider than this share of the range is not worth it: score them all."""

ENDS_SHARE = 0.75
"""Share of a round's segments placed where they shrink what is open (the clip's ends,
beside a break); the rest keep covering the clip, so a step elsewhere is still seen."""

MAX_CONTEXT_FRAMES = 250
"""10 s: a longer averaging context would blur offsets that change within a clip."""

MAX_DELAY_LIMIT_MS = 5000.0
"""The widest search range allowed: every extra frame of range costs a column of scores."""

BOOTSTRAP_RESAMPLES = 200
UNSTABLE_SHARE = 0.8  # below this the evidence does not settle on one offset

MAX_THUMBNAIL_PX = 256
THUMBNAIL_JPEG_QUALITY = 75
THUMBNAIL_PREFIX = "data:image/jpeg;base64,"
_THUMBNAIL = re.compile(r"data:image/(jpeg|png);base64,[A-Za-z0-9+/]+={0,2}")


@dataclass(frozen=True)
class SyncOptions:
    """Knobs of the estimate; defaults are what the CLI uses. Values are checked here, so
    the library and the command line refuse the same things with the same words. Frozen:
    options never change under a caller's feet (use :func:`dataclasses.replace`)."""

    context_frames: int = 25  # K: frames per segment reading (1 s, the paper's best context)
    max_delay_ms: float = 600.0  # search range: +-15 frames by default
    detector: str = "auto"
    face_box: str | None = None
    device: str = "auto"  # the GPU when there is one
    precision: str = "auto"  # auto (bf16 where native), fp32 or bf16
    exhaustive: bool = False  # score every window instead of sampling segments
    max_segments: int = 32  # the most segments a sampled estimate decodes
    first_round: int = 6  # segments before the first check of the stopping rule
    round_size: int = 4  # segments added per further round
    min_voice_rms: float = 0.005  # a window quieter than this holds no voice
    min_usable_windows: int = 40  # 1.6 s of windows with a face and a voice
    uncertain_below: float = 0.5  # readings agreeing at or below this share: "uncertain"
    in_sync_ms: float = FRAME_MS  # |delay| up to one frame counts as in sync
    timeline: TimelineOptions = field(default_factory=TimelineOptions)  # offset over time
    thumbnail_px: int = 0  # keep a JPEG of one scored crop, this long (0: none)
    focus_shifts: bool = True  # score only shifts near the predicted offset once it is known

    def __post_init__(self) -> None:
        if not (FRAMES_PER_WINDOW <= int(self.context_frames) <= MAX_CONTEXT_FRAMES):
            raise UsageError(
                f"the context must be {FRAMES_PER_WINDOW} to {MAX_CONTEXT_FRAMES} "
                f"frames (25 = 1 s), got {self.context_frames}")
        if not (math.isfinite(self.max_delay_ms)
                and FRAME_MS <= self.max_delay_ms <= MAX_DELAY_LIMIT_MS):
            raise UsageError(
                f"the largest delay searched must be {FRAME_MS:.0f} to "
                f"{MAX_DELAY_LIMIT_MS:.0f} ms, got {self.max_delay_ms}")
        check_device_name(self.device)
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}; use "
                             f"{', '.join(PRECISIONS)}")
        if not (1 <= self.max_segments and 1 <= self.first_round and 1 <= self.round_size):
            raise UsageError("the most segments to score (--max-segments), the first round "
                             "and the round size must each be at least 1")
        if not (math.isfinite(self.min_voice_rms) and self.min_voice_rms >= 0):
            raise UsageError(f"min_voice_rms must be a number >= 0, got {self.min_voice_rms}")
        if not (0.0 <= self.uncertain_below <= 1.0):
            raise UsageError(f"uncertain_below must be 0 to 1, got {self.uncertain_below}")
        if not (0 <= int(self.thumbnail_px) <= MAX_THUMBNAIL_PX):
            raise UsageError(f"thumbnail_px must be 0 to {MAX_THUMBNAIL_PX}, got "
                             f"{self.thumbnail_px}")

    @property
    def max_shift(self) -> int:
        return max(1, math.ceil(self.max_delay_ms / FRAME_MS - 1e-9))


VERDICTS = ("in_sync", "out_of_sync", "uncertain")
PRECISION_NAMES = ("fp32", "bf16")


@dataclass(frozen=True)
class CandidateScore:
    """The clip's mean score when the audio is taken ``audio_delay_ms`` later (one
    searched shift)."""

    audio_delay_ms: float
    score: float

    def to_json(self) -> dict:
        return {"audio_delay_ms": self.audio_delay_ms, "score": self.score}

    @classmethod
    def from_json(cls, record: Any, context: str) -> CandidateScore:
        return cls(records.number(record, "audio_delay_ms", context),
                   records.number(record, "score", context))


@dataclass(frozen=True)
class SegmentReading:
    """The delay one scored segment reads on its own (its best shift), at its middle."""

    time_s: float
    audio_delay_ms: float

    def to_json(self) -> dict:
        return {"time_s": self.time_s, "audio_delay_ms": self.audio_delay_ms}

    @classmethod
    def from_json(cls, record: Any, context: str) -> SegmentReading:
        return cls(records.number(record, "time_s", context),
                   records.number(record, "audio_delay_ms", context))


@dataclass(frozen=True)
class ModelIdentity:
    """Which checkpoint produced a result: registry name (or the file's path when no entry
    publishes it), family, the first 12 hex digits of its SHA-256, and where it was."""

    name: str
    family: str | None
    sha256: str
    path: str

    def to_json(self) -> dict:
        return {"name": self.name, "family": self.family, "sha256": self.sha256,
                "path": self.path}

    @classmethod
    def from_json(cls, record: Any, context: str = "model") -> ModelIdentity:
        return cls(records.text(record, "name", context),
                   records.text(record, "family", context, optional=True),
                   records.text(record, "sha256", context),
                   records.text(record, "path", context))

    @classmethod
    def of(cls, model: nn.Module) -> ModelIdentity | None:
        """The identity :func:`lipsync_fix.models.load_model` attached (None for a model
        built in memory)."""
        origin = getattr(model, "origin", None)
        if not isinstance(origin, Mapping):
            return None
        return cls(str(origin["name"]), origin.get("family"), str(origin["sha256"]),
                   str(origin.get("path", "")))


@dataclass(frozen=True)
class SyncEstimate:
    """The output contract of ``score``/``fix`` (``--json``: one object per input).

    Every value is as reported (rounded when it was measured), so the JSON form is the
    estimate itself: ``SyncEstimate.from_json(e.to_json()) == e``. ``offset_model`` is the
    fitted offset over time, which the fix applies as it is; ``audio_delay_ms`` is the
    delay of some part of the clip (see :meth:`OffsetModel.headline_delay_ms`) and
    ``worst_audio_delay_ms`` the delay of largest magnitude anywhere in it.
    ``face_thumbnail`` (only when :attr:`SyncOptions.thumbnail_px` asked for one, and
    only then in the JSON) is one scored crop as a ``data:image/jpeg;base64,...`` URI:
    what the model read, for a person reviewing a report to see that it was the face.
    """

    input: str
    fps: float
    duration_s: float
    audio_delay_ms: float
    audio_delay_frames: float
    worst_audio_delay_ms: float
    confidence: float
    verdict: str
    face_coverage: float
    windows_used: int
    faces_seen: int
    offset_model: OffsetModel
    scores: tuple[CandidateScore, ...] = ()
    offsets_over_time: tuple[SegmentReading, ...] = ()
    windows_scored: int = 0
    windows_available: int = 0
    pairs_scored: int = 0
    pairs_available: int = 0
    model: ModelIdentity | None = None
    precision: str = "fp32"
    notes: tuple[str, ...] = ()
    face_thumbnail: str | None = None

    def __post_init__(self) -> None:
        for name in ("scores", "offsets_over_time", "notes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}")
        if self.face_thumbnail is not None and not _THUMBNAIL.fullmatch(self.face_thumbnail):
            raise ValueError("face_thumbnail must be a base64 data: URI of a JPEG or PNG")

    def to_json(self) -> dict:
        return {
            "input": self.input, "fps": self.fps, "duration_s": self.duration_s,
            "audio_delay_ms": self.audio_delay_ms,
            "audio_delay_frames": self.audio_delay_frames,
            "worst_audio_delay_ms": self.worst_audio_delay_ms,
            "confidence": self.confidence, "verdict": self.verdict,
            "face_coverage": self.face_coverage, "windows_used": self.windows_used,
            "faces_seen": self.faces_seen,
            **self.offset_model.to_json(),
            "scores": [c.to_json() for c in self.scores],
            "offsets_over_time": [r.to_json() for r in self.offsets_over_time],
            "windows_scored": self.windows_scored,
            "windows_available": self.windows_available,
            "pairs_scored": self.pairs_scored,
            "pairs_available": self.pairs_available,
            "model": None if self.model is None else self.model.to_json(),
            "precision": self.precision, "notes": list(self.notes),
        } | ({} if self.face_thumbnail is None else {"face_thumbnail": self.face_thumbnail})

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> SyncEstimate:
        """The estimate a JSON record holds, every value checked for its type (extra keys
        such as ``output`` are ignored); :class:`RecordError` names the first bad one."""
        where = str(record.get("input", "the record")) if isinstance(record, Mapping) \
            else "the record"
        num, count = records.number, records.integer
        model = record.get("model") if isinstance(record, Mapping) else None
        thumbnail = records.text(record, "face_thumbnail", where, optional=True)
        if thumbnail is not None and not _THUMBNAIL.fullmatch(thumbnail):
            raise RecordError(f"{where}: 'face_thumbnail' must be a base64 data: URI "
                                      "of a JPEG or PNG")
        return cls(
            input=records.text(record, "input", where),
            fps=num(record, "fps", where),
            duration_s=num(record, "duration_s", where),
            audio_delay_ms=num(record, "audio_delay_ms", where),
            audio_delay_frames=num(record, "audio_delay_frames", where),
            worst_audio_delay_ms=num(record, "worst_audio_delay_ms", where),
            confidence=num(record, "confidence", where),
            verdict=records.text(record, "verdict", where, choices=VERDICTS),
            face_coverage=num(record, "face_coverage", where),
            windows_used=count(record, "windows_used", where),
            faces_seen=count(record, "faces_seen", where),
            offset_model=OffsetModel.from_json(record, where),
            # the evidence lists are absent from a CSV report (a row of it is still the
            # decision, and can be applied as reviewed)
            scores=records.items(record, "scores", CandidateScore.from_json, where,
                                 optional=True),
            offsets_over_time=records.items(record, "offsets_over_time",
                                            SegmentReading.from_json, where, optional=True),
            windows_scored=count(record, "windows_scored", where),
            windows_available=count(record, "windows_available", where),
            pairs_scored=count(record, "pairs_scored", where),
            pairs_available=count(record, "pairs_available", where),
            model=None if model is None else ModelIdentity.from_json(model, f"{where}: model"),
            precision=records.text(record, "precision", where, choices=PRECISION_NAMES),
            notes=records.strings(record, "notes", where),
            face_thumbnail=thumbnail,
        )

    @property
    def drift_ms_per_min(self) -> float:
        return self.offset_model.drift_ms_per_min

    def offset_at(self, time_s: float | np.ndarray) -> float | np.ndarray:
        """The estimated delay (ms) at video time ``time_s``."""
        return self.offset_model.offset_at(time_s)

    def describe(self) -> str:
        """One human sentence saying the same as the JSON."""
        model = self.offset_model
        if model.kind == "constant":
            delay = delay_words(self.audio_delay_ms)
            what = {"uncertain": f"uncertain (best guess: {delay})",
                    "in_sync": f"in sync ({delay})"}.get(self.verdict, delay.replace(
                        "audio ", "audio is ", 1))
        else:
            what = model.describe()
            if self.verdict == "uncertain":
                what = f"uncertain (best guess: {what})"
            elif self.verdict == "in_sync":
                what = f"in sync ({what})"
        why = f" ({'; '.join(self.notes)})" if self.notes else ""
        return (f"{self.input}: {what}, confidence {self.confidence:.2f}, "
                f"{self.windows_used} windows, face in {100 * self.face_coverage:.0f}% of "
                f"frames{why}")


# --------------------------------------------------------------------------- evidence


def column_sums(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per shift, the sum of a segment's scored windows and how many there are (a column
    out of range, :data:`OUT_OF_RANGE`, or left out by a focused search counts none)."""
    valid = (scores != OUT_OF_RANGE) & np.isfinite(scores)
    return np.where(valid, scores, 0.0).sum(axis=0, dtype=np.float64), valid.sum(axis=0)


def mean_curve(scores: np.ndarray) -> np.ndarray:
    """A segment's mean score per shift, -inf where no window was scored."""
    sums, counts = column_sums(scores)
    return np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)


@dataclass
class SegmentScores:
    """The scored windows of one segment (strict edge rule: out-of-clip columns hold
    :data:`OUT_OF_RANGE`, shifts a focused search left out :data:`NOT_SCORED`)."""

    first_frame: int
    n_frames: int
    rows: np.ndarray  # global window starts that were scored (face and voice)
    scores: np.ndarray  # (len(rows), 2S+1)
    face_frames: int
    faces_seen: int
    cuts: tuple[int, ...] = ()  # frames (of the clip) where a new shot starts

    @property
    def focused(self) -> bool:
        """Whether some in-range shift was left unscored (a focused search)."""
        return bool(np.isnan(self.scores).any())

    def column_sums(self) -> tuple[np.ndarray, np.ndarray]:
        return column_sums(self.scores)

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
                out.append((segment, int(np.argmax(mean_curve(segment.scores)))
                            - self.max_shift))
        return out

    @property
    def cuts_s(self) -> list[float]:
        """Scene cuts (s) found inside the scored segments."""
        return sorted({c / VIDEO_FPS for s in self.segments for c in s.cuts})

    def fit_offset(self, options: TimelineOptions, duration_s: float) -> OffsetFit:
        """The offset over time (:mod:`lipsync_fix.sync.timeline`) from each segment's own
        curve, with the scene cuts found inside the scored segments."""
        shifts_ms = (np.arange(2 * self.max_shift + 1) - self.max_shift) * FRAME_MS
        readings, focused = [], []
        for segment in sorted(self.segments, key=lambda s: s.first_frame):
            if len(segment.rows) == 0:
                continue
            sums, counts = segment.column_sums()
            curve = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            readings.append(SegmentEvidence(
                segment.first_frame / VIDEO_FPS,
                (segment.first_frame + segment.n_frames) / VIDEO_FPS,
                shifts_ms, curve, len(segment.rows)))
            focused.append(segment.focused)
        # A segment scored on a window of shifts takes the typical peak width of those
        # scored over the whole range (its own would make it look far surer than it is).
        widths = [m.spread for r, f in zip(readings, focused, strict=True) if not f
                  and (m := measure_segment(r)) is not None]
        if widths and any(focused):
            typical = float(np.median(widths))
            readings = [replace(r, spread=typical) if f else r
                        for r, f in zip(readings, focused, strict=True)]
        return fit_offset_model(readings, self.cuts_s, options, duration_s=duration_s,
                                cuts_complete=self.covers(duration_s))

    def covers(self, duration_s: float) -> bool:
        """Whether the segments together looked at every frame of a clip this long (so
        every scene cut in it was seen)."""
        reach = 0
        for segment in sorted(self.segments, key=lambda s: s.first_frame):
            if segment.first_frame > reach:
                return False
            reach = max(reach, segment.first_frame + segment.n_frames)
        return reach >= duration_s * VIDEO_FPS - FRAMES_PER_WINDOW

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
    reader: ClipReader | None = None,
) -> SyncEstimate:
    """Measure how late (or early) the audio of ``path`` is relative to the lips.

    ``reader`` is ``path`` already opened with the model's recipe and the options'
    detector; by default it is opened here (or taken from a folder pipeline's prepared
    readers, :func:`~lipsync_fix.sync.frontend.open_reader`)."""
    opts = options or SyncOptions()
    device = resolve_device(opts.device)
    recipe = recipe_for(model)
    if reader is None:
        reader = open_reader(path, recipe, opts.detector, opts.face_box)
    t = int(getattr(model, "window_frames", FRAMES_PER_WINDOW))
    k = max(opts.context_frames, t)
    s = opts.max_shift
    n_rows = num_windows(reader.n_frames, reader.n_samples, t)
    per_segment = k - t + 1
    if reader.n_frames < k:
        raise ClipTooShortError(
            f"{path}: {reader.n_frames / VIDEO_FPS:.2f} s of video is shorter than one "
            f"{k}-frame context ({k / VIDEO_FPS:.2f} s)")
    if n_rows < per_segment:  # the video is long enough: its sound is what is short
        raise ClipTooShortError(
            f"{path}: the audio lasts only {reader.n_samples / SAMPLE_RATE:.2f} s of the "
            f"{reader.n_frames / VIDEO_FPS:.2f} s video, less than one {k}-frame context "
            f"({k / VIDEO_FPS:.2f} s)")
    voiced = reader.voiced(n_rows, t, opts.min_voice_rms)
    if not voiced.any():
        raise NoSpeechError(f"{path}: the audio is silent; there is no voice to align")
    score_opts = ScoreOptions(max_shift=s, edge_rule="strict", device=device,
                              autocast=autocast_dtype(device, opts.precision)).for_device()
    evidence = Evidence(s, max(1, per_segment // 2))
    counters = {"frames": 0, "face_frames": 0, "faces": 0, "scored": 0, "pairs": 0}
    thumbnail: list[str] = []

    def score(segment: Segment, first_row: int, count: int,
              focus: Focus | None = None) -> None:
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
            cache = VideoCache() if focus is not None else None
            with torch.inference_mode():
                scores = score_rows(model, source, use, score_opts,
                                    shifts=None if focus is None else focus.shifts,
                                    video_cache=cache)
                counters["pairs"] += scored_pairs(scores)
                if focus is not None and focus.widen(scores, s):
                    # the offset is not where the fit said: read this segment over the
                    # whole range (its video windows are in the cache)
                    rest = [c for c in range(-s, s + 1) if c not in focus.shifts]
                    more = score_rows(model, source, use, score_opts, shifts=rest,
                                      video_cache=cache)
                    scores = np.where(np.isnan(scores), more, scores)
                    counters["pairs"] += scored_pairs(more)
            counters["scored"] += len(use)
            if opts.thumbnail_px and not thumbnail:
                middle = int(use[len(use) // 2]) - segment.first + t // 2
                thumbnail.append(thumbnail_uri(segment.crops[middle], opts.thumbnail_px))
        evidence.add(SegmentScores(segment.first, segment.n_frames, use, scores,
                                   int(has.sum()), segment.faces_seen, segment.cuts))

    if opts.exhaustive:
        starts = segment_starts(n_rows, per_segment, partial=True)
        segments = reader.segments_in_order(starts, per_segment + t - 1)
        for first, segment in zip(starts, segments, strict=True):
            score(segment, first, per_segment)
            if progress:
                progress("windows", min(n_rows, first + per_segment), n_rows)
    open_note = None
    if not opts.exhaustive:
        open_note = _sample(reader, evidence, score, opts, n_rows, per_segment, t,
                            voiced, progress)

    if evidence.usable_windows == 0:
        raise NoFaceError(
            f"{path}: no stretch of the clip has both a face and a voice "
            f"({counters['frames'] / VIDEO_FPS:.0f} s examined); give the face's position "
            "with --face-box x,y,w,h if it is there")
    estimate = _conclude(path, reader, evidence, counters, opts, n_rows, model, score_opts,
                         open_note)
    return replace(estimate, face_thumbnail=thumbnail[0]) if thumbnail else estimate


def thumbnail_uri(crop_bgr: np.ndarray, longest_side: int) -> str:
    """A crop (uint8 BGR) as a small JPEG ``data:`` URI, its longer side at most
    ``longest_side`` pixels (never enlarged): about 2 KB of text for a 96 x 48 crop."""
    h, w = crop_bgr.shape[:2]
    scale = min(1.0, longest_side / max(h, w))
    if scale < 1.0:
        crop_bgr = cv2.resize(crop_bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(crop_bgr),
                               [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_JPEG_QUALITY])
    if not ok:
        raise ValueError("cannot encode a thumbnail")
    return THUMBNAIL_PREFIX + base64.b64encode(encoded.tobytes()).decode("ascii")


def _sample(reader, evidence, score, opts: SyncOptions, n_rows: int, per_segment: int,
            t: int, voiced: np.ndarray, progress) -> str | None:
    """Score segments in rounds until :func:`_assess` finds the hypotheses settled, each
    round placed by :func:`_place` and read in one batch (the reader decodes the next
    segments while this one is scored). Returns the note saying what stayed open when
    ``max_segments`` stopped it first (None when it stopped on evidence, when only what
    the assessment would ``refine`` was left, or when every segment was scored: that is
    the exhaustive estimate's evidence)."""
    plan = _Plan.of(sampling_order(n_rows, per_segment, voiced, opts.max_shift), n_rows,
                    per_segment, spoken_segments(n_rows, per_segment, voiced),
                    whole_segments(n_rows, per_segment, opts.max_shift), opts.max_segments)
    assessment = _Assessment.first()
    while len(plan.taken) < plan.budget:
        take = opts.first_round if not plan.taken else opts.round_size
        firsts = _place(plan, assessment, min(take, plan.budget - len(plan.taken)))
        if not firsts:
            break
        focus = [_focus(assessment, opts, (first + per_segment / 2) / VIDEO_FPS)
                 for first in firsts]
        for first, aim, segment in zip(firsts, focus,
                                       reader.segments(firsts, per_segment + t - 1),
                                       strict=True):
            score(segment, first, per_segment, aim)
        plan.take(firsts)
        if progress:
            progress("segments", len(plan.taken), plan.budget)
        assessment = _assess(evidence, opts, reader.duration_s, per_segment / VIDEO_FPS,
                             assessment.fit.kind if assessment.fit is not None else None)
        if assessment.settled:
            return None
    if not plan.remaining() or not assessment.open:
        return None
    return (f"stopped at --max-segments {opts.max_segments} with "
            f"{'; '.join(assessment.open)} (score more segments, or --exhaustive)")


def spoken_segments(n_rows: int, per_segment: int, voiced: np.ndarray) -> set[int]:
    """First windows of the segments a quarter of whose windows hold a voice."""
    return {a for a in segment_starts(n_rows, per_segment, partial=False)
            if voiced[a : a + per_segment].mean() >= 0.25}


def whole_segments(n_rows: int, per_segment: int, max_shift: int) -> set[int]:
    """First windows of the segments each of whose windows has every shift in range.

    A segment within ``max_shift`` windows of the clip's start or end scores its outer
    shifts on fewer windows (there is no audio beyond the clip), so those columns of its
    curve are noisier and its peak leans toward them: the last segment of a clip reads
    late, by 20-70 ms on the sweep's 60 s clips. One such reading among seventy hardly
    moves the exhaustive fit; among the dozen, placed at the clip's ends, that measure a
    sampled slope it did (105 ms/min for 80). The sampler reads them last."""
    return {a for a in segment_starts(n_rows, per_segment, partial=False)
            if a >= max_shift and a + per_segment - 1 + max_shift < n_rows}


@dataclass
class _Plan:
    """What the sampler may still read: every segment in the spread order (voiced ones
    first), those taken so far, and the cap."""

    order: list[int]
    spoken: set[int]
    whole: set[int]  # segments with every shift of every window in range
    per_segment: int
    n_rows: int
    budget: int
    taken: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, order: list[int], n_rows: int, per_segment: int, spoken: set[int],
           whole: set[int], max_segments: int) -> _Plan:
        return cls(order, spoken, whole, per_segment, n_rows,
                   min(max_segments, len(order)))

    def take(self, firsts: list[int]) -> None:
        self.taken.extend(firsts)

    def remaining(self) -> list[int]:
        """Segments not read yet, in the spread order."""
        taken = set(self.taken)
        return [f for f in self.order if f not in taken]

    def time_s(self, first: int) -> float:
        return (first + self.per_segment / 2) / VIDEO_FPS


@dataclass(frozen=True)
class _Assessment:
    """What the readings so far settle. ``open`` names, in words, each hypothesis not yet
    confirmed or ruled out (what makes a capped estimate ``uncertain``); ``refine`` what
    is settled enough to act on but worth more readings while the cap allows
    (:data:`SLOPE_PRECISION`); ``target`` is what the next segments should pin down
    (``level``: any reading helps; ``slope``: readings far apart; ``step``: readings
    beside ``break_s``)."""

    settled: bool
    open: tuple[str, ...]
    target: str = "level"
    break_s: float | None = None
    fit: OffsetFit | None = None
    rivals: tuple[OffsetModel, ...] = ()  # models the evidence has not ruled out
    refine: tuple[str, ...] = ()

    @classmethod
    def first(cls) -> _Assessment:
        return cls(False, ("no reading yet",))


def _assess(evidence: Evidence, opts: SyncOptions, duration_s: float,
            segment_s: float, previous_kind: str | None = None) -> _Assessment:
    """The stopping rule: a test of the hypotheses the tool acts on.

    ``constant`` is settled when its delay is known within a frame (+-:data:`STOP_SIGMAS`
    standard errors inside a frame, what the old rule's 95 % of bootstrap resamples within
    a frame asked of it), the straight line's slope interval
    (:data:`RULE_OUT_SIGMAS`) keeps its change over the clip below
    :attr:`TimelineOptions.rule_out_change_ms` (a usable drift is ruled out) and no step is
    supported. ``drift`` is settled when its slope is known to
    that change over the clip (the same interval) and its delay within a frame at both
    ends of the clip (what the fix's resampling is then off by); ``piecewise`` when each span's
    delay is known within a frame and each break lies between readings at most two
    segments apart (or at a scene cut). Whichever model it is also needs to have won the
    round before (``previous_kind``): a model the readings of one round suggest is
    confirmed by the next round, placed to test it (six readings of a constant can make a
    decisive-looking slope, or agree by chance so well that their own noise looks small
    and a drift seems ruled out). A drift whose slope is settled but still wider than
    :data:`SLOPE_PRECISION` of it is read on while the cap allows (``refine``). A stability
    test of the constant alone (the old rule) stops on ten loose readings of a 60 s clip
    whose slope is still +-45 ms/min.
    """
    if evidence.usable_windows < opts.min_usable_windows or len(evidence.votes()) < 2:
        return _Assessment(False, ("too few windows with a face and a voice",))
    try:
        fit = evidence.fit_offset(opts.timeline, duration_s)
    except UncertainEstimateError as exc:
        return _Assessment(False, (str(exc),))
    timeline = opts.timeline
    level_ms, change_ms = FRAME_MS, timeline.rule_out_change_ms
    rivals = tuple(model for name, model in fit.rivals.items()
                   if name != fit.kind and fit.bic[name] < fit.bic[fit.kind]
                   + timeline.decisive_bic)
    model = fit.model
    open_: list[str] = []
    refine: list[str] = []
    target, break_s = "level", None
    span = model.spans[0]
    def loose(uncertainty: float | None) -> bool:
        return uncertainty is None or STOP_SIGMAS * uncertainty > level_ms

    if model.kind == "constant":
        if loose(span.uncertainty_ms):
            open_.append(f"the delay known only to +-{_pm(span.uncertainty_ms)} ms")
        line = fit.line
        if timeline.model == "auto":
            if line is None or line.change_bound_ms(duration_s, RULE_OUT_SIGMAS) >= change_ms:
                slope = "unknown" if line is None else (
                    f"{line.slope_ms_per_min:+.0f} +- "
                    f"{RULE_OUT_SIGMAS * line.slope_se_ms_per_min:.0f} ms/min")
                open_.append(f"a drift not ruled out (slope {slope}; {change_ms:.0f} ms over "
                             "the clip is usable)")
                target = "slope"
            if fit.step_supported:
                break_s = fit.rivals["piecewise"].breaks[0]
                open_.append(f"a step near {break_s:.1f} s not ruled out")
                target = "step"
    elif model.kind == "drift":
        slope_se = model.drift_uncertainty_ms_per_min
        if slope_se is None or RULE_OUT_SIGMAS * slope_se * duration_s / 60.0 > change_ms:
            open_.append(f"the drift's slope known only to "
                         f"+-{_pm(slope_se, RULE_OUT_SIGMAS)} ms/min")
            target = "slope"
        line = fit.line
        worst_se = None if line is None else max(line.delay_se_at(model.start_s),
                                                 line.delay_se_at(model.end_s))
        if loose(worst_se):
            open_.append(f"the drift's delay at the clip's ends known only to "
                         f"+-{_pm(worst_se)} ms")
            target = "slope"
        slope = abs(model.drift_ms_per_min)
        if slope_se is not None and STOP_SIGMAS * slope_se > SLOPE_PRECISION * slope:
            refine.append(f"the drift's slope known to +-{_pm(slope_se)} ms/min, more "
                          f"than {100 * SLOPE_PRECISION:.0f} % of it")
            target = "slope"
    else:
        for part in model.spans:
            if loose(part.uncertainty_ms):
                open_.append(f"the delay of {part.start_s:.1f}-{part.end_s:.1f} s known "
                             f"only to +-{_pm(part.uncertainty_ms)} ms")
        centres = np.array(sorted(0.5 * (r.start_s + r.end_s) for r in fit.points))
        for at in model.breaks:
            before, after = centres[centres < at], centres[centres >= at]
            at_cut = any(abs(at - cut) <= 1.0 / VIDEO_FPS for cut in evidence.cuts_s)
            if not at_cut and (len(before) == 0 or len(after) == 0
                               or after[0] - before[-1] > 2.0 * segment_s + 1e-6):
                open_.append(f"the break near {at:.1f} s placed only between readings "
                             f"{_gap(before, after)} apart")
                if target != "step":
                    target, break_s = "step", at
    # A piecewise model has won only once a drift is ruled out too: a few noisy readings
    # of a line look like a step. (Not the other way round: many steps can always follow
    # a line about as well, which says nothing against it.)
    if model.kind == "piecewise" and timeline.model == "auto" and "drift" in fit.rivals \
            and fit.bic["drift"] < fit.bic["piecewise"] + timeline.decisive_bic:
        open_.append(f"a drift not ruled out against the steps (criteria "
                     f"{fit.bic['drift']:.0f} and {fit.bic['piecewise']:.0f})")
        target = "level"  # readings between the ones so far tell a line from steps
    # Whatever won is confirmed by the next round before the sampler stops: six readings
    # can agree by chance (their noise, measured on them, then looks small) or make a
    # decisive-looking slope; four more, placed to test the winner, rarely do both.
    if not open_ and previous_kind != model.kind:
        open_.append(f"the {model.kind} not yet confirmed by a second round")
        if model.kind == "piecewise":
            target, break_s = "step", model.breaks[0]
        else:
            target = "slope"  # a constant's danger, and a drift's measure
    return _Assessment(not open_ and not refine, tuple(open_), target, break_s, fit, rivals,
                       tuple(refine))


def _pm(uncertainty: float | None, sigmas: float = STOP_SIGMAS) -> str:
    return "?" if uncertainty is None else f"{sigmas * uncertainty:.0f}"


def _gap(before: np.ndarray, after: np.ndarray) -> str:
    if len(before) == 0 or len(after) == 0:
        return "not yet on both sides, so"
    return f"{after[0] - before[-1]:.1f} s"


def _place(plan: _Plan, assessment: _Assessment, n: int) -> list[int]:
    """The next ``n`` segments: where they shrink what :func:`_assess` left open most.

    A slope's standard error shrinks with the spread of the readings' times, so a slope
    gets the unread voiced segments nearest the clip's two ends (of those whose every
    shift is in range, :func:`whole_segments`), alternately; a suspected
    step gets those nearest its break on either side, alternately; anything else (the
    delay itself, the first round) the next ones of the spread order. A quarter of every
    targeted round still follows the spread order, so what happens between the ends is
    not left unseen."""
    remaining = plan.remaining()
    if n <= 0 or not remaining:
        return []
    spoken = [f for f in remaining if f in plan.spoken]
    if assessment.target == "level" or not spoken:
        return remaining[:n]
    times = {f: plan.time_s(f) for f in spoken}
    if assessment.target == "step" and assessment.break_s is not None:
        at = assessment.break_s
        sides = (sorted((f for f in spoken if times[f] < at), key=lambda f: at - times[f]),
                 sorted((f for f in spoken if times[f] >= at), key=lambda f: times[f] - at))
    else:  # the ends, of the segments whose readings lean on no edge of the clip
        ends = [f for f in spoken if f in plan.whole] or spoken
        middle = 0.5 * (min(times.values()) + max(times.values()))
        sides = (sorted((f for f in ends if times[f] < middle), key=times.get),
                 sorted((f for f in ends if times[f] >= middle), key=lambda f: -times[f]))
    aimed = max(1, math.ceil(ENDS_SHARE * n))
    chosen: list[int] = []
    queues = [list(side) for side in sides]
    side = 0
    while len(chosen) < aimed and any(queues):
        if queues[side]:
            chosen.append(queues[side].pop(0))
        side = 1 - side
    chosen += [f for f in remaining if f not in chosen][: n - len(chosen)]
    return chosen


@dataclass(frozen=True)
class Focus:
    """A focused search of one segment: the shifts (frames) scored, and the readings that
    agree with the fit (within ``tolerance_frames`` of ``predicted_frames``: the reach of
    every model not ruled out, plus :data:`DISAGREE_SIGMAS` standard errors)."""

    shifts: range
    predicted_frames: float
    tolerance_frames: float

    def widen(self, scores: np.ndarray, max_shift: int) -> bool:
        """Whether the segment must be read over the whole range: its peak is on the
        window's edge (:func:`_peak_at_focus_edge`), or inside it but disagrees with
        the fit (a step the fit does not know of, a reading the model got wrong: either
        way the focused window was placed by a prediction that failed here)."""
        if _peak_at_focus_edge(scores, self.shifts, max_shift):
            return True
        peak = _focused_peak(scores, max_shift)
        return peak is not None and abs(peak - self.predicted_frames) > self.tolerance_frames


def _focused_peak(scores: np.ndarray, max_shift: int) -> int | None:
    """The shift (frames) a segment's mean curve over its scored shifts peaks at."""
    curve = mean_curve(scores)
    return int(np.argmax(curve)) - max_shift if np.isfinite(curve).any() else None


def _focus(assessment: _Assessment, opts: SyncOptions, time_s: float) -> Focus | None:
    """The focused search for a segment at ``time_s``: the shifts within ``k`` frames of
    the fitted model's prediction, ``k`` covering every rival not ruled out and
    :data:`FOCUS_SIGMAS` standard errors of the prediction and of one reading (at least
    :data:`MIN_FOCUS_FRAMES`); None (every shift) before there is a fit, while the fit
    leaves more than a fifth of the readings unexplained (:data:`FOCUS_MIN_AGREEMENT`),
    with ``exhaustive`` or without ``focus_shifts``, or when that window would be wide."""
    fit = assessment.fit
    if fit is None or opts.exhaustive or not opts.focus_shifts:
        return None
    if not fit.points or np.mean([r.inlier >= 0.5 for r in fit.points]) < FOCUS_MIN_AGREEMENT:
        return None
    s = opts.max_shift
    centre = float(fit.model.offset_at(time_s))
    if fit.kind == "drift" and fit.line is not None:
        predicted_se = fit.line.delay_se_at(time_s)
    else:
        index = int(np.searchsorted(np.asarray(fit.model.breaks), time_s, side="right"))
        predicted_se = fit.model.spans[index].uncertainty_ms
    if predicted_se is None:
        return None
    reach = max((abs(float(m.offset_at(time_s)) - centre) for m in assessment.rivals),
                default=0.0)
    sigma = math.hypot(predicted_se, fit.noise_ms)
    k = max(MIN_FOCUS_FRAMES, math.ceil((reach + FOCUS_SIGMAS * sigma) / FRAME_MS))
    if 2 * k + 1 > MAX_FOCUS_SHARE * (2 * s + 1):
        return None
    c = round(centre / FRAME_MS)
    lo, hi = max(-s, c - k), min(s, c + k)
    if hi - lo < 2:  # a prediction beyond the range: search all of it
        return None
    tolerance = max(MIN_DISAGREE_FRAMES, (reach + DISAGREE_SIGMAS * sigma) / FRAME_MS)
    return Focus(range(lo, hi + 1), centre / FRAME_MS, tolerance)


def _peak_at_focus_edge(scores: np.ndarray, shifts: range, max_shift: int) -> bool:
    """Whether a focused segment's mean curve peaks on the first or last shift of its
    window where that is not also the range's edge: the true peak may lie outside."""
    peak = _focused_peak(scores, max_shift)
    if peak is None:
        return False
    counts = column_sums(scores)[1]
    lowest = min(c - max_shift for c in np.nonzero(counts)[0])
    highest = max(c - max_shift for c in np.nonzero(counts)[0])
    return (peak == lowest and peak > -max_shift and lowest == shifts.start) or \
        (peak == highest and peak < max_shift and highest == shifts.stop - 1)


def sampling_order(n_rows: int, per_segment: int, voiced: np.ndarray,
                   max_shift: int = 0) -> list[int]:
    """First windows of the segments a sampled estimate may score, in the order it scores
    them when nothing in particular is open: the first and the last voiced segment whose
    every shift is in range (:func:`whole_segments`), then the other voiced ones spread
    over the clip, then the voiced ones at the clip's edges, then the quiet ones. The two
    ends come first because a slope is read off the spread of the readings' times: a
    first round spread over only the clip's first three quarters (the plain
    low-discrepancy order) can miss a drift, and six readings that agree by chance then
    settle it."""
    starts = segment_starts(n_rows, per_segment, partial=False)
    voice = spoken_segments(n_rows, per_segment, voiced)
    whole = whole_segments(n_rows, per_segment, max_shift)
    spoken = [a for a in starts if a in voice and a in whole]
    edges = [a for a in starts if a in voice and a not in whole]
    quiet = [a for a in starts if a not in voice]
    ends = [0, len(spoken) - 1] if len(spoken) > 1 else []
    inner = ends + [j for j in spread_order(len(spoken)) if j not in ends]
    return [spoken[j] for j in inner] + [edges[j] for j in spread_order(len(edges))] + \
        [quiet[j] for j in spread_order(len(quiet))]


def first_reads(reader: ClipReader, window_frames: int, opts: SyncOptions
                ) -> tuple[list[int], int]:
    """The segments an estimate of ``reader``'s clip reads before it can stop: their
    first frames in reading order, and their length in frames (none for a clip the
    estimate refuses). What a folder pipeline reads ahead."""
    t, k = window_frames, max(opts.context_frames, window_frames)
    n_rows = num_windows(reader.n_frames, reader.n_samples, t)
    per_segment = k - t + 1
    if reader.n_frames < k or n_rows < per_segment:
        return [], 0
    if opts.exhaustive:
        return segment_starts(n_rows, per_segment, partial=True), per_segment + t - 1
    voiced = reader.voiced(n_rows, t, opts.min_voice_rms)
    order = sampling_order(n_rows, per_segment, voiced, opts.max_shift) if voiced.any() else []
    return order[: min(opts.first_round, opts.max_segments)], per_segment + t - 1


def _conclude(path, reader: ClipReader, evidence: Evidence, counters: dict,
              opts: SyncOptions, n_rows: int, model: nn.Module,
              score_opts: ScoreOptions, open_note: str | None = None) -> SyncEstimate:
    """The estimate from the evidence: the offset model, the headline, the agreement of
    the segments with the model, the notes that make it uncertain (``open_note``: what
    the sampler's cap left open), the verdict."""
    s = opts.max_shift
    best, shift = evidence.best()
    votes = evidence.votes()
    fit = evidence.fit_offset(opts.timeline, reader.duration_s)
    offset = fit.model
    if offset.kind == "constant":
        # The clip's curve peak (every window averaged, as the paper reads an offset) is
        # the constant; the span keeps the fit's support and uncertainty.
        span = offset.spans[0]
        offset = OffsetModel.constant(shift * FRAME_MS, span.start_s, span.end_s,
                                      span.support, span.uncertainty_ms)
    agree = sum(abs(vote - float(offset.offset_at(seg.time_s)) / FRAME_MS) <= 1
                for seg, vote in votes)
    confidence = agree / len(votes) if votes else 0.0
    notes = []
    if evidence.usable_windows < opts.min_usable_windows:
        notes.append(f"only {evidence.usable_windows} windows with a face and a voice "
                     f"(at least {opts.min_usable_windows} are needed)")
    if offset.kind == "constant" and best in (0, 2 * s):
        notes.append(f"the best delay is at the edge of the searched range "
                     f"(+-{s * FRAME_MS:.0f} ms): the true one may lie beyond it "
                     "(widen --max-delay-ms)")
    if len(votes) < 2:
        notes.append("one segment of evidence cannot be cross-checked")
    elif confidence <= opts.uncertain_below:
        notes.append(f"only {agree} of {len(votes)} segments agree within one frame")
    elif offset.kind == "constant":
        stability = evidence.stability()
        if stability < UNSTABLE_SHARE:
            notes.append(f"the segments do not settle on one delay ({100 * stability:.0f}% "
                         "of resamples agree)")
    if open_note:
        notes.append(open_note)
    if notes:
        verdict = "uncertain"
    elif offset.in_sync(opts.in_sync_ms):
        verdict = "in_sync"
    else:
        verdict = "out_of_sync"
    offset = _rounded(offset)
    headline = offset.headline_delay_ms()
    curve = evidence.curve()
    frames = max(1, counters["frames"])
    return SyncEstimate(
        input=str(path),
        fps=round(reader.fps, 3),
        duration_s=round(reader.duration_s, 3),
        audio_delay_ms=headline,
        audio_delay_frames=round(headline / FRAME_MS, 2),
        worst_audio_delay_ms=round(offset.worst_delay_ms(), 1),
        confidence=round(float(confidence), 3),
        verdict=verdict,
        face_coverage=round(counters["face_frames"] / frames, 3),
        windows_used=evidence.usable_windows,
        faces_seen=counters["faces"],
        offset_model=offset,
        scores=tuple(CandidateScore(round((c - s) * FRAME_MS, 1), round(float(v), 4))
                     for c, v in enumerate(curve) if np.isfinite(v)),
        offsets_over_time=tuple(
            SegmentReading(round(seg.time_s, 2), float(vote * FRAME_MS))
            for seg, vote in sorted(votes, key=lambda sv: sv[0].first_frame)),
        windows_scored=counters["scored"],
        windows_available=n_rows,
        pairs_scored=counters["pairs"],
        pairs_available=pairs_in_range(n_rows, s),
        model=ModelIdentity.of(model),
        precision="bf16" if score_opts.autocast == torch.bfloat16 else "fp32",
        notes=tuple(notes),
    )


def _rounded(model: OffsetModel) -> OffsetModel:
    """The model as reported: times to the millisecond, delays to 0.1 ms, drifts to
    0.01 ms/min (far below what the evidence resolves), so the JSON is the estimate."""
    def r(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    spans = tuple(replace(span, start_s=round(span.start_s, 3), end_s=round(span.end_s, 3),
                          audio_delay_ms=round(span.audio_delay_ms, 1),
                          drift_ms_per_min=round(span.drift_ms_per_min, 2),
                          support=round(span.support, 3),
                          uncertainty_ms=r(span.uncertainty_ms, 1))
                  for span in model.spans)
    return OffsetModel(model.kind, spans, r(model.drift_uncertainty_ms_per_min, 2))
