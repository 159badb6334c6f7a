"""The audio transforms that fix a drift or a per-span offset, checked against signals whose
every instant is known exactly (sums of sinusoids evaluated at warped times)."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_fix.sync.retime import (
    drift_transform,
    piecewise_transform,
    rational_ratio,
    transform_for,
)
from lipsync_fix.sync.timeline import OffsetModel, Span


class Tones:
    """A band-limited noise-like signal (random tones up to 0.4 of the lowest rate used),
    with its exact value and derivative at any time."""

    def __init__(self, seed: int, top_hz: float = 6000.0, count: int = 40):
        rng = np.random.default_rng(seed)
        self.f = rng.uniform(80.0, top_hz, count)
        self.phase = rng.uniform(0, 2 * np.pi, count)
        self.amp = rng.uniform(0.2, 1.0, count) / count

    def __call__(self, t: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * self.f[None, :] * t[:, None] + self.phase[None, :]
        return (np.sin(arg) * self.amp).sum(axis=1)

    def slope(self, t: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * self.f[None, :] * t[:, None] + self.phase[None, :]
        return (np.cos(arg) * self.amp * 2 * np.pi * self.f).sum(axis=1)


def lag_samples(y: np.ndarray, tones: Tones, start: int, rate: int, width: int = 2000) -> float:
    """How many samples ``y[start:start+width]`` lags the true signal (first-order fit:
    y(t) ~ s(t - lag) = s(t) - lag s'(t)), and the relative error left after that."""
    t = (start + np.arange(width)) / rate
    ref, d = tones(t), tones.slope(t)
    seg = y[start : start + width].astype(np.float64)
    lag_s = -float(np.dot(seg - ref, d) / np.dot(d, d))
    residual = seg - tones(t - lag_s)
    assert np.sqrt(np.mean(residual**2)) < 0.02 * np.std(ref), "the waveform itself is off"
    return lag_s * rate


@pytest.mark.parametrize(("delay_ms", "drift", "rate"), [
    (150.3, 90.0, 48000), (-80.7, -45.5, 44100), (20.0, 37.3, 16000), (0.0, 120.0, 22050)])
def test_drift_fix_realigns_start_middle_and_end_within_a_sample(delay_ms, drift, rate):
    seconds = 8.0
    n = int(seconds * rate)
    tones = Tones(seed=int(rate + drift), top_hz=0.4 * 16000)
    t = np.arange(n) / rate
    # The recording: the sound of video time tau is heard at delay + (1 + eps) * tau.
    eps = drift / 60_000.0
    recorded = tones((t - delay_ms / 1000.0) / (1.0 + eps)).astype(np.float32)
    fixed = drift_transform(delay_ms, drift)(recorded, rate)
    assert fixed.shape == recorded.shape and fixed.dtype == np.float32
    for where in (0.5, seconds / 2, seconds - 1.5):
        assert abs(lag_samples(fixed, tones, int(where * rate), rate)) < 1.0
    # Unfixed, the end is far off: the check above is not trivially true.
    off = (delay_ms + drift * (seconds - 1.5) / 60) * rate / 1000
    assert abs(off) > 50


def test_drift_fix_works_per_channel_and_keeps_silence_where_there_is_no_input():
    rate, n = 16000, 16000 * 4
    stereo = np.stack([np.ones(n), -np.ones(n)], axis=1).astype(np.float32)
    fixed = drift_transform(-100.0, 60.0)(stereo, rate)  # audio 100 ms early: read earlier
    assert fixed.shape == (n, 2)
    assert np.all(fixed[:1500] == 0)  # before the input's first sample
    np.testing.assert_allclose(fixed[3000:-3000, 0], 1.0, atol=1e-3)
    np.testing.assert_allclose(fixed[3000:-3000, 1], -1.0, atol=1e-3)
    mono = drift_transform(0.0, 0.0)(stereo[:, 0], rate)
    np.testing.assert_array_equal(mono, stereo[:, 0])


def test_rational_ratio_keeps_the_last_sample_within_a_tenth():
    for ratio in (1.0015, 1 + 37.3 / 60000, 1 - 1e-7, 1.0):
        for n in (10**5, 48000 * 3600):
            approx = rational_ratio(ratio, n)
            assert abs(float(approx) - ratio) * n <= 0.1
    assert rational_ratio(1.0015, 10**6) == pytest.approx(1.0015) and (
        rational_ratio(1.0015, 10**6).denominator <= 2000)
    with pytest.raises(ValueError):
        rational_ratio(0.0, 10)


def test_piecewise_fix_shifts_each_span_exactly_and_keeps_the_length():
    rate = 16000
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rate * 6, 2)).astype(np.float32)
    spans = spans_of((0.0, 2.0, 100.0), (2.0, 4.0, -250.0), (4.0, 6.0, 0.0))
    y = piecewise_transform(spans, crossfade_ms=10.0)(x, rate)
    assert y.shape == x.shape
    # Away from the breaks, out[n] = in[n + delay].
    np.testing.assert_array_equal(y[0 : 2 * rate - 200], x[1600 : 2 * rate - 200 + 1600])
    np.testing.assert_array_equal(y[2 * rate + 200 : 4 * rate - 200],
                                  x[2 * rate + 200 - 4000 : 4 * rate - 200 - 4000])
    np.testing.assert_array_equal(y[4 * rate + 200 :], x[4 * rate + 200 :])


def test_piecewise_crossfade_weights_add_up_to_one():
    """A steady input stays steady across every break: no dip, no click."""
    rate = 48000
    x = np.ones(rate * 3, np.float32)
    spans = spans_of((0.0, 1.0, 30.0), (1.0, 2.0, -30.0), (2.0, 3.0, 10.0))
    y = piecewise_transform(spans, crossfade_ms=8.0)(x, rate)
    np.testing.assert_allclose(y[2000:-2000], 1.0, atol=1e-6)
    # The crossfade is where asked: 8 ms centred on the break.
    ramp = piecewise_transform(spans_of((0, 1, 0.0), (1, 2, 1000.0)), 8.0)(np.ones(rate * 2), rate)
    assert ramp[rate - 193] == pytest.approx(1.0) and ramp[rate + 193] == 0.0
    assert 0.4 < ramp[rate] < 0.6
    hard = piecewise_transform(spans_of((0, 1, 0.0), (1, 2, 1000.0)), 0.0)(np.ones(rate * 2), rate)
    assert hard[rate - 1] == 1.0 and hard[rate] == 0.0


def test_piecewise_rejects_spans_out_of_order():
    with pytest.raises(ValueError, match="time order"):
        piecewise_transform(spans_of((0, 1, 0.0), (3, 4, 0.0), (2, 3, 0.0)))


def spans_of(*triples: tuple[float, float, float]) -> list[Span]:
    return [Span(start, end, delay) for start, end, delay in triples]


def test_transform_for_follows_the_model():
    rate = 16000
    x = np.random.default_rng(2).standard_normal(rate * 3).astype(np.float32)
    constant = OffsetModel.constant(50.0, 0.0, 3.0)
    np.testing.assert_array_equal(transform_for(constant)(x, rate)[:-800], x[800:])
    steps = OffsetModel("piecewise", tuple(spans_of((0.0, 1.5, 0.0), (1.5, 3.0, 100.0))))
    y = transform_for(steps)(x, rate)
    np.testing.assert_array_equal(y[: rate], x[: rate])
    np.testing.assert_array_equal(y[2 * rate : -1600], x[2 * rate + 1600 :])
    drift = OffsetModel("drift", (Span(0.0, 3.0, 0.0, 0.0),))
    np.testing.assert_array_equal(transform_for(drift)(x, rate), x)
