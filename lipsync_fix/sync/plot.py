"""The score plot: score against audio delay, and the delay each segment votes for over time.

Drawn with OpenCV, so no plotting library is needed.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np

from lipsync_fix.errors import OutputError
from lipsync_fix.files import write_atomically
from lipsync_fix.sync.estimate import SyncEstimate


def plot_scores(estimate: SyncEstimate, path: Path, size: tuple[int, int] = (720, 420)) -> Path:
    """Score vs audio delay (top) and, when there are several segments, the delay each
    1-s segment reads over time with the fitted offset model drawn through them (bottom:
    a flat line, a drift's slope, or a piecewise model's steps). Drawn with OpenCV: no
    plotting library."""
    width, height = size
    panels = 2 if len(estimate.offsets_over_time) > 1 else 1
    canvas = np.full((height * panels, width, 3), 255, np.uint8)
    xs = np.array([c.audio_delay_ms for c in estimate.scores], dtype=float)
    ys = np.array([c.score for c in estimate.scores], dtype=float)
    _line_panel(canvas[:height], xs, ys, "audio delay (ms)", "score",
                mark_x=estimate.audio_delay_ms)
    if panels == 2:
        ts = np.array([r.time_s for r in estimate.offsets_over_time], dtype=float)
        ds = np.array([r.audio_delay_ms for r in estimate.offsets_over_time], dtype=float)
        _line_panel(canvas[height:], ts, ds, "time (s)", "delay (ms)", dots=True,
                    fitted=model_curve(estimate))
    if path.suffix.lower() != ".png":
        raise OutputError(f"the plot is a PNG image; give a file name ending in .png, not {path}")
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise OutputError(f"cannot encode the plot for {path}")
    return write_atomically(path, lambda tmp: tmp.write_bytes(encoded.tobytes()))


def model_curve(estimate: SyncEstimate) -> tuple[np.ndarray, np.ndarray]:
    """(times, delays) of the fitted offset model: each span's start and end (a step
    between spans, a slope within a drifting one)."""
    spans = estimate.offset_model.spans
    t = np.array([v for s in spans for v in (s.start_s, max(s.end_s, s.start_s + 1e-3))])
    d = np.array([v for s in spans for v in (s.audio_delay_ms, s.end_delay_ms)])
    return t, d


def _line_panel(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, xlabel: str, ylabel: str,
                mark_x: float | None = None, dots: bool = False,
                fitted: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    h, w = img.shape[:2]
    left, right, top, bottom = 70, 20, 20, 50
    black, blue, red = (0, 0, 0), (200, 80, 0), (0, 0, 220)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), black, 1)
    if len(xs) == 0:
        return
    all_x = np.concatenate([xs, fitted[0]]) if fitted is not None else xs
    all_y = np.concatenate([ys, fitted[1]]) if fitted is not None else ys
    x0, x1 = float(all_x.min()), float(all_x.max())
    y0, y1 = float(all_y.min()), float(all_y.max())
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def px(x: float, y: float) -> tuple[int, int]:
        u = left + (x - x0) / (x1 - x0) * (w - left - right)
        v = h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)
        return round(u), round(v)

    points = [px(x, y) for x, y in zip(xs, ys, strict=True)]
    if not dots:
        for p, q in pairwise(points):
            cv2.line(img, p, q, blue, 2, cv2.LINE_AA)
    for p in points:
        cv2.circle(img, p, 3, blue, -1, cv2.LINE_AA)
    if fitted is not None:
        for p, q in pairwise(px(x, y) for x, y in zip(*fitted, strict=True)):
            cv2.line(img, p, q, red, 2, cv2.LINE_AA)
    if mark_x is not None and x0 <= mark_x <= x1:
        u = px(mark_x, y0)[0]
        cv2.line(img, (u, top), (u, h - bottom), red, 1)
        cv2.putText(img, f"{mark_x:.0f} ms", (u + 4, top + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    red, 1, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, f"{x0:g}", (left, h - bottom + 18), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, f"{x1:g}", (w - right - 40, h - bottom + 18), font, 0.45, black, 1,
                cv2.LINE_AA)
    cv2.putText(img, xlabel, (w // 2 - 50, h - 12), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(img, f"{y1:.3g}", (4, top + 10), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, f"{y0:.3g}", (4, h - bottom), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (4, h // 2), font, 0.5, black, 1, cv2.LINE_AA)
