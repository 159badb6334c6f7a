"""MFCC features as the original SyncNet reads them (python_speech_features' recipe).

The original SyncNet (``syncnet_v2.model``) was trained on ``python_speech_features.mfcc``
with its defaults: 25 ms frames every 10 ms, no window, pre-emphasis 0.97, a 512-point
power spectrum, 26 triangular mel filters of peak 1 over 0..8 kHz, log, orthonormal DCT-II,
13 coefficients, a sine lifter of 22, and coefficient 0 replaced by the log frame energy.
Any deviation (a Hann window, area-normalised filters, audio scaled to -1..1) shifts the
features the network has learned, so this module reproduces that recipe step by step in
float64, bit for bit against the golden data, without depending on the unmaintained
package itself.

The input is 16 kHz mono audio **at int16 scale** (what ``scipy.io.wavfile.read`` returns);
float audio in -1..1 must be multiplied by 32768 first (:func:`int16_scale`), because the
energy coefficient and the log filterbank energies are not scale-invariant.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.fft import dct

from lipsync_fix.features.constants import SAMPLE_RATE, SAMPLES_PER_FRAME

MFCC_WINDOW = 400
"""Samples per MFCC frame (25 ms at 16 kHz)."""

MFCC_HOP = 160
"""Samples between MFCC frames (10 ms): 4 MFCC frames per 25 fps video frame."""

MFCC_NFFT = 512
MFCC_FILTERS = 26
MFCC_COEFFICIENTS = 13
PRE_EMPHASIS = 0.97
CEPSTRAL_LIFTER = 22

MFCC_PER_VIDEO_FRAME = SAMPLES_PER_FRAME // MFCC_HOP
"""4: MFCC frames per video frame, so window ``v`` starts at MFCC column ``4 v``."""

_EPS = np.finfo(np.float64).eps


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """The HTK mel scale python_speech_features uses: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mfcc_filterbank(
    n_filters: int = MFCC_FILTERS,
    nfft: int = MFCC_NFFT,
    sample_rate: int = SAMPLE_RATE,
    low_hz: float = 0.0,
    high_hz: float | None = None,
) -> np.ndarray:
    """``(n_filters, nfft // 2 + 1)`` triangular filters, peak 1, no area normalisation.

    Filter edges are FFT bins ``floor((nfft + 1) * hz / sample_rate)`` of ``n_filters + 2``
    points evenly spaced in mel; the ``nfft + 1`` (not ``nfft``) is the recipe's own and
    moves some edges by one bin, which the golden filterbank pins.
    """
    high_hz = sample_rate / 2 if high_hz is None else high_hz
    mels = np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), n_filters + 2)
    edges = np.floor((nfft + 1) * mel_to_hz(mels) / sample_rate)
    bins = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
    left, centre, right = (edges[i : i + n_filters, None] for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = (bins - left) / (centre - left)
        falling = (right - bins) / (right - centre)
    bank = np.where((bins >= left) & (bins < centre), rising, 0.0)
    return np.where((bins >= centre) & (bins < right), falling, bank)


def frame_signal(signal: np.ndarray, window: int = MFCC_WINDOW,
                 hop: int = MFCC_HOP) -> np.ndarray:
    """Frames ``(M, window)``: frame k is samples ``hop*k .. hop*k + window - 1``, no
    centring, the end zero-padded so the last samples get a frame (M = 1 for a signal no
    longer than one window, else ``1 + ceil((N - window) / hop)``)."""
    n = len(signal)
    count = 1 if n <= window else 1 + int(np.ceil((n - window) / hop))
    padded = np.zeros((count - 1) * hop + window, dtype=np.float64)
    padded[:n] = signal
    return np.lib.stride_tricks.sliding_window_view(padded, window)[::hop]


def mfcc(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """python_speech_features' ``mfcc(audio, sample_rate)`` with its defaults -> ``(M, 13)``
    float64, from 1-D int16-scale samples (see the module docstring)."""
    signal = np.asarray(audio)
    if signal.ndim != 1 or len(signal) == 0:
        raise ValueError(f"mfcc needs a non-empty 1-D signal, got shape {signal.shape}")
    signal = signal.astype(np.float64)
    emphasised = np.empty_like(signal)
    emphasised[0] = signal[0]
    emphasised[1:] = signal[1:] - PRE_EMPHASIS * signal[:-1]
    frames = frame_signal(emphasised)
    power = np.square(np.abs(np.fft.rfft(frames, MFCC_NFFT))) / MFCC_NFFT
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, _EPS, energy)
    bank = mfcc_filterbank(sample_rate=sample_rate)
    filtered = power @ bank.T
    filtered = np.where(filtered == 0, _EPS, filtered)
    cepstra = dct(np.log(filtered), type=2, axis=1, norm="ortho")[:, :MFCC_COEFFICIENTS]
    lift = 1.0 + (CEPSTRAL_LIFTER / 2.0) * np.sin(
        np.pi * np.arange(MFCC_COEFFICIENTS) / CEPSTRAL_LIFTER)
    cepstra = cepstra * lift
    cepstra[:, 0] = np.log(energy)
    return cepstra


def int16_scale(audio: np.ndarray) -> np.ndarray:
    """Float audio in -1..1 -> the int16 values ffmpeg's ``pcm_s16le`` would have written
    (round to nearest, clipped), as float64: what the original SyncNet was fed."""
    scaled = np.rint(np.asarray(audio, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768.0, 32767.0)


def mfcc_matrix(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The reference evaluation's ``cct``: ``(13, M)`` float32 (coefficients by frames)."""
    return torch.from_numpy(np.ascontiguousarray(mfcc(audio, sample_rate).T, dtype=np.float32))
