"""The fix for an offset that changes over time: audio transforms for ``rewrite_audio``.

Each function here returns a ``transform(samples, sample_rate) -> samples`` that takes the
whole audio stream, ``(n, channels)`` float32 at its own rate with sample 0 at the video's
time 0, and returns the corrected stream of the same shape, so that
:func:`lipsync_fix.media.remux.rewrite_audio` can write it beside a bit-for-bit copy of
the video. The output at video time ``t`` is the input at ``t + offset(t)``: the sound that
came ``offset(t)`` late is moved back under the lips. Where that reaches outside the input,
the output is silent; the length never changes.

* **Drift** (``offset(t) = a + b t``): the audio is resampled by the ratio ``1 + b`` with
  :func:`scipy.signal.resample_poly` (a polyphase Kaiser-windowed FIR: flat pass band,
  strong anti-aliasing, linear cost), after a whole-sample shift by ``a``. The ratio is
  approximated by the simplest fraction ``down/up`` whose error, accumulated over the
  whole stream, stays under a tenth of a sample, so the end is as exact as the start.
  Pitch changes by the same ratio, ``b`` (a 60 ms/min drift is 0.1 %, under 2 cents),
  far below what a listener notices, which is why no pitch-preserving time stretch is used:
  it would smear transients and cost far more. Clock drift also changed the pitch by that
  ratio in the first place, so resampling restores it. Measured on a sum of tones up to
  6.4 kHz drifting 90 ms/min: 0.1 % waveform error at 16 kHz and 0.07 % at 48 kHz (a cubic
  spline read at the exact positions: 6 % and 0.03 %), about 10 s for ten minutes of 48 kHz
  stereo on one core.
* **Piecewise** (a constant per span): each span is shifted by its own whole number of
  samples, with a raised-cosine crossfade of a few milliseconds across each break, so no
  click is heard where the offset jumps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np
from scipy import signal

from lipsync_fix import media
from lipsync_fix.media.ffmpeg import PathLike
from lipsync_fix.sync.timeline import OffsetModel, Span

Transform = Callable[[np.ndarray, int], np.ndarray]
"""``transform(samples (n, channels) float32, sample_rate) -> samples`` of the same shape."""

DEFAULT_CROSSFADE_MS = 10.0
"""Crossfade across a break of a piecewise fix: long enough to avoid a click (a few
periods of a low voice), short enough not to blur a syllable."""

MAX_ERROR_SAMPLES = 0.1
"""How far the drift fix's rational ratio may let the last sample stray."""

_MAX_DENOMINATOR = 10**7


def _as_2d(samples: np.ndarray) -> tuple[np.ndarray, bool]:
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        return x[:, None], True
    if x.ndim != 2:
        raise ValueError(f"audio must be (n,) or (n, channels), got shape {x.shape}")
    return x, False


def _shifted(x: np.ndarray, shift: int, start: int, stop: int) -> np.ndarray:
    """Rows ``start..stop`` of ``x`` read ``shift`` samples later (``out[n] = x[n +
    shift]``), zeros where that falls outside ``x``."""
    out = np.zeros((stop - start, x.shape[1]), dtype=x.dtype)
    lo, hi = max(start, -shift), min(stop, len(x) - shift)
    if hi > lo:
        out[lo - start : hi - start] = x[lo + shift : hi + shift]
    return out


def rational_ratio(ratio: float, n_samples: int, max_error: float = MAX_ERROR_SAMPLES) -> Fraction:
    """The simplest fraction close enough to ``ratio`` that reading ``n_samples`` samples
    at it drifts less than ``max_error`` samples from reading at ``ratio`` itself."""
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"the resampling ratio must be a positive number, got {ratio}")
    limit = 10
    while True:
        approx = Fraction(ratio).limit_denominator(limit)
        if abs(float(approx) - ratio) * max(n_samples, 1) <= max_error or limit >= _MAX_DENOMINATOR:
            return approx
        limit *= 10


def drift_transform(audio_delay_ms: float, drift_ms_per_min: float) -> Transform:
    """Undo ``offset(t) = audio_delay_ms + drift_ms_per_min * t / 60 s``: output sample
    ``n`` is input position ``a * rate + (1 + b) * n``, with ``b`` the drift in ms per ms.

    The start is exact to the nearest sample (as a constant shift is); the ratio is
    exact to :data:`MAX_ERROR_SAMPLES` over the whole stream.
    """
    if not (math.isfinite(audio_delay_ms) and math.isfinite(drift_ms_per_min)):
        raise ValueError("the drift fix needs a finite offset and drift")
    slope = drift_ms_per_min / 60_000.0
    if not abs(slope) < 0.5:
        raise ValueError(f"a drift of {drift_ms_per_min} ms/min is not a clock drift")

    def transform(samples: np.ndarray, sample_rate: int) -> np.ndarray:
        x, flat = _as_2d(samples)
        n = len(x)
        shift = round(audio_delay_ms * sample_rate / 1000.0)
        # Input from position `shift` on (silence first when it is before the start).
        source = _shifted(x, shift, 0, max(n - shift, 0))
        resampled = source
        if slope != 0.0 and len(source):
            ratio = rational_ratio(1.0 + slope, n)
            # resample_poly's output m sits at input position m * down / up.
            resampled = signal.resample_poly(source, ratio.denominator, ratio.numerator, axis=0)
        out = np.zeros_like(x)
        m = min(n, len(resampled))
        out[:m] = resampled[:m]
        return out[:, 0] if flat else out

    return transform


def piecewise_transform(
    spans: Sequence[Span], crossfade_ms: float = DEFAULT_CROSSFADE_MS
) -> Transform:
    """Undo a constant offset per span (:class:`~lipsync_fix.sync.timeline.Span`, in time
    order); the first is extended back to the start of the stream, the last to its end,
    and each inner boundary is where the span after it begins.

    Each span's audio is read ``audio_delay_ms`` later (rounded to a whole sample), and
    the spans are joined with raised-cosine crossfades of ``crossfade_ms`` centred on each
    break (weights that add up to one, so a steady sound keeps its level).
    """
    if not spans:
        raise ValueError("a piecewise fix needs at least one span")
    if not (math.isfinite(crossfade_ms) and crossfade_ms >= 0):
        raise ValueError(f"crossfade_ms must be >= 0, got {crossfade_ms}")
    delays = [float(span.audio_delay_ms) for span in spans]
    breaks = [float(span.start_s) for span in spans[1:]]
    if any(not math.isfinite(v) for v in delays + breaks) or breaks != sorted(breaks):
        raise ValueError("the spans must be finite and in time order")

    def transform(samples: np.ndarray, sample_rate: int) -> np.ndarray:
        x, flat = _as_2d(samples)
        n = len(x)
        half = round(crossfade_ms * sample_rate / 2000.0)
        at = [min(max(round(b * sample_rate), 0), n) for b in breaks]
        out = np.zeros_like(x)
        for k, delay in enumerate(delays):
            lo = 0 if k == 0 else max(0, at[k - 1] - half)
            hi = n if k == len(delays) - 1 else min(n, at[k] + half)
            if hi <= lo:
                continue
            part = _shifted(x, round(delay * sample_rate / 1000.0), lo, hi)
            weight = np.ones(hi - lo, dtype=np.float64)
            index = np.arange(lo, hi)
            if k > 0:
                weight *= _ramp(index, at[k - 1], half)
            if k < len(delays) - 1:
                weight *= 1.0 - _ramp(index, at[k], half)
            out[lo:hi] += (part * weight[:, None]).astype(x.dtype)
        return out[:, 0] if flat else out

    return transform


def _ramp(index: np.ndarray, centre: int, half: int) -> np.ndarray:
    """0 before ``centre - half``, 1 from ``centre + half``, a raised cosine between (a
    hard switch at ``centre`` when ``half`` is 0)."""
    if half == 0:
        return (index >= centre).astype(np.float64)
    u = np.clip((index - (centre - half) + 0.5) / (2 * half), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * u)


def transform_for(model: OffsetModel, crossfade_ms: float = DEFAULT_CROSSFADE_MS) -> Transform:
    """The fix for a fitted :class:`~lipsync_fix.sync.timeline.OffsetModel`."""
    if model.kind == "drift":
        return drift_transform(float(model.offset_at(0.0)), model.drift_ms_per_min)
    return piecewise_transform(model.spans, crossfade_ms)


def fix_timeline(
    src: PathLike,
    dst: PathLike,
    model: OffsetModel,
    *,
    force: bool = False,
    crossfade_ms: float = DEFAULT_CROSSFADE_MS,
) -> media.RewriteReport:
    """Write ``dst``: ``src`` with every audio stream corrected by ``model`` (they share
    one clock), the video copied bit for bit (:func:`lipsync_fix.media.rewrite_audio`)."""
    return media.rewrite_audio(src, dst, transform_for(model, crossfade_ms), force=force)
