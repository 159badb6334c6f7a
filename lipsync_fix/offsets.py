"""From a score matrix to offsets: context averaging, per-window offsets, accuracy.

A score matrix (see :mod:`lipsync_fix.scoring`) has one row per model window (5 frames
for the paper's models, ``T`` for a context-specific "Var" model) and one
column per shift ``-S..+S``. Column ``c`` holds shift ``s = c - S``; the offset a row
votes for is ``-s`` of its best column, i.e. ``S - argmax``, which is the reference's
sign convention (offset > 0: the audio must be taken earlier... see ``audio_delay``).

Context K > T frames is simulated as the authors do: each row is replaced by the mean of
the ``K - T + 1`` rows around it (fewer at the clip's edges).
"""

from __future__ import annotations

import math

import numpy as np

from lipsync_fix.model import FRAMES_PER_WINDOW


def context_average(
    dists: np.ndarray, context: int, window: int = FRAMES_PER_WINDOW
) -> np.ndarray:
    """Mean of ``W = K - T + 1`` consecutive rows around each row (``T = window``, the
    frames each row covers), clipped at the edges.

    Rows ``max(0, v - a) .. min(R - 1, v + b)`` with ``a = ceil((W-1)/2)``,
    ``b = floor((W-1)/2)``.
    """
    if context < window:
        raise ValueError(f"context must be at least {window} frames, got {context}")
    n_rows = dists.shape[0]
    width = context - (window - 1)
    before, after = math.ceil((width - 1) / 2), (width - 1) // 2
    if width == 1 or n_rows == 0:
        return np.array(dists, dtype=np.float32, copy=True)
    cumsum = np.concatenate([np.zeros((1, dists.shape[1])), np.cumsum(dists, 0, dtype=np.float64)])
    v = np.arange(n_rows)
    lo = np.maximum(0, v - before)
    hi = np.minimum(n_rows - 1, v + after) + 1
    return ((cumsum[hi] - cumsum[lo]) / (hi - lo)[:, None]).astype(np.float32)


def row_offsets(dists: np.ndarray) -> np.ndarray:
    """Offset (frames) each row votes for: ``S - argmax(row)`` (first maximum on ties)."""
    max_shift = (dists.shape[1] - 1) // 2
    return max_shift - np.argmax(dists, axis=1)


def accuracy(
    dists: np.ndarray, context: int, tolerance: int, true_offset: int = 0,
    window: int = FRAMES_PER_WINDOW,
) -> float:
    """Fraction of rows whose context-averaged offset is within ``tolerance`` frames."""
    if dists.shape[0] == 0:
        return float("nan")
    offsets = row_offsets(context_average(dists, context, window))
    return float(np.mean(np.abs(offsets - true_offset) <= tolerance))
