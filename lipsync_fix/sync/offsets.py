"""From a score matrix to offsets: context averaging, per-window best shifts, accuracy.

A score matrix (see :mod:`lipsync_fix.sync.scoring`) has one row per model window (T = 5
frames for the paper's models, more for a context-specific "Var" model) and one column
per shift ``-S..+S``: column ``c`` pairs the window with the audio taken ``c - S`` frames
later. The library's one sign convention: a row's **shift** is ``argmax - S``, the audio
delay in frames (positive: the sound comes after the lips). The authors' code reports the
opposite sign (``S - argmax``); only code that reproduces their printouts uses it.

Context K > T frames is simulated as the authors do: each row is replaced by the mean of
the ``K - T + 1`` rows around it (fewer at the clip's edges).
"""

from __future__ import annotations

import math

import numpy as np

from lipsync_fix.features.constants import FRAMES_PER_WINDOW


def context_average(
    scores: np.ndarray, context_frames: int, window_frames: int = FRAMES_PER_WINDOW
) -> np.ndarray:
    """Mean of ``W = K - T + 1`` consecutive rows around each row (K = ``context_frames``,
    T = ``window_frames``, the frames each row covers), clipped at the edges.

    Rows ``max(0, v - a) .. min(R - 1, v + b)`` with ``a = ceil((W-1)/2)``,
    ``b = floor((W-1)/2)``.
    """
    if context_frames < window_frames:
        raise ValueError(
            f"the context must be at least {window_frames} frames, got {context_frames}")
    n_rows = scores.shape[0]
    width = context_frames - (window_frames - 1)
    before, after = math.ceil((width - 1) / 2), (width - 1) // 2
    if width == 1 or n_rows == 0:
        return np.array(scores, dtype=np.float32, copy=True)
    cumsum = np.concatenate(
        [np.zeros((1, scores.shape[1])), np.cumsum(scores, 0, dtype=np.float64)])
    v = np.arange(n_rows)
    lo = np.maximum(0, v - before)
    hi = np.minimum(n_rows - 1, v + after) + 1
    return ((cumsum[hi] - cumsum[lo]) / (hi - lo)[:, None]).astype(np.float32)


def best_shifts(scores: np.ndarray) -> np.ndarray:
    """Audio delay (frames) each row votes for: ``argmax(row) - S`` (first maximum on ties)."""
    max_shift = (scores.shape[1] - 1) // 2
    return np.argmax(scores, axis=1) - max_shift


def accuracy(
    scores: np.ndarray,
    context_frames: int,
    tolerance: int,
    true_shift: int = 0,
    window_frames: int = FRAMES_PER_WINDOW,
) -> float:
    """Fraction of rows whose context-averaged shift is within ``tolerance`` frames of
    ``true_shift`` (the paper's protocol; its clips are in sync, ``true_shift`` 0)."""
    if scores.shape[0] == 0:
        return float("nan")
    shifts = best_shifts(context_average(scores, context_frames, window_frames))
    return float(np.mean(np.abs(shifts - true_shift) <= tolerance))
