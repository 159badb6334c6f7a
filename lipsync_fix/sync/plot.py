"""The plots people read: an estimate's evidence, drawn with matplotlib.

Two panels, one drawing code for both surfaces:

* **score by delay**: the clip's mean score for every candidate delay, over exactly the
  searched range, with the delay of each span (or the drift's first and last delay) marked;
* **offsets over time**: each scored segment's own reading (its best delay) against video
  time, and the fitted offset model through them (a flat line, a drift's slope, or one
  step per span, each span with its own colour and legend entry), the scene breaks, and
  the band of ±1 frame that counts as in sync.

``score --plot`` writes both panels as a PNG (:func:`plot_scores`); the review page
(:mod:`lipsync_fix.report.html`) inlines the offsets panel as SVG (:func:`offsets_svg`).

matplotlib is an extra (``pip install 'lipsync-fix[plot]'``, part of ``dev``). It is
imported here, when a plot is drawn, and nowhere else: the command line imports this
module for ``score --plot``, and must still start (and start fast) for every other command
on an install without the extra. :func:`require_matplotlib` lets a command refuse
``--plot`` before any work. Only the object-oriented API is used (a ``Figure`` with its
own Agg or SVG canvas), never ``pyplot``: no global state, no display, no GUI backend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lipsync_fix.errors import OutputError, UsageError
from lipsync_fix.features.constants import FRAME_MS
from lipsync_fix.files import write_atomically
from lipsync_fix.sync.estimate import SyncEstimate

MISSING_MATPLOTLIB = ("drawing plots needs matplotlib, which is not installed; install it "
                      "with pip install 'lipsync-fix[plot]'")

VERDICT_WORDS = {"in_sync": "in sync", "out_of_sync": "out of sync", "uncertain": "uncertain"}
"""A verdict as a title says it."""

VERDICT_COLOURS = {"in_sync": "#1a7f37", "out_of_sync": "#cf222e", "uncertain": "#9a6700"}
"""One colour per verdict, shared with the review page."""

SPAN_COLOURS = ("#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
READING_COLOUR = "#1f77b4"
RANGE_COLOUR = "#888888"

PNG_SIZE_IN, PNG_DPI = (8.0, 6.4), 100
"""``score --plot``: 800 x 640 pixels."""

SVG_SIZE_IN = (4.6, 1.75)
"""The review page's picture (about 440 x 170 CSS pixels)."""

SVG_RC = {"svg.fonttype": "none", "font.family": "sans-serif",
          "font.sans-serif": ("DejaVu Sans", "Arial", "Helvetica")}
"""matplotlib settings of the page's pictures: text as text, short font lists."""


def _matplotlib() -> Any:
    """The ``matplotlib`` package, or the one line that says how to install it."""
    try:
        import matplotlib
        import matplotlib.backends.backend_agg
        import matplotlib.backends.backend_svg
        import matplotlib.figure
    except ImportError:
        raise UsageError(MISSING_MATPLOTLIB) from None
    return matplotlib


def require_matplotlib() -> None:
    """Raise the usage error (exit 2) of a missing matplotlib now, before any work."""
    _matplotlib()


def verdict_title(estimate: SyncEstimate) -> str:
    """"talk.mp4: out of sync, audio 200 ms late (confidence 0.93)": the file, the verdict
    and the fitted offset in the words of :meth:`OffsetModel.describe`."""
    name = Path(estimate.input).name or estimate.input
    model = estimate.offset_model
    what = model.describe() if model.kind != "constant" else \
        model.describe().removeprefix("one offset throughout: ")
    return (f"{name}: {VERDICT_WORDS[estimate.verdict]}, {what} "
            f"(confidence {estimate.confidence:.2f})")


def searched_range_ms(estimate: SyncEstimate) -> tuple[float, float] | None:
    """The smallest and largest delay that was searched (the candidates of ``scores``)."""
    if not estimate.scores:
        return None
    delays = [c.audio_delay_ms for c in estimate.scores]
    return min(delays), max(delays)


def model_curve(estimate: SyncEstimate) -> tuple[np.ndarray, np.ndarray]:
    """(times, delays) of the fitted offset model: each span's start and end (a step
    between spans, a slope within a drifting one)."""
    spans = estimate.offset_model.spans
    t = np.array([v for s in spans for v in (s.start_s, max(s.end_s, s.start_s + 1e-3))])
    d = np.array([v for s in spans for v in (s.audio_delay_ms, s.end_delay_ms)])
    return t, d


def span_labels(estimate: SyncEstimate) -> list[str]:
    """The legend entry of each span of the fitted model."""
    model = estimate.offset_model
    if model.kind == "constant":
        return [f"constant: {model.spans[0].audio_delay_ms:+.0f} ms"]
    if model.kind == "drift":
        span = model.spans[0]
        return [f"drift: {span.audio_delay_ms:+.0f} to {span.end_delay_ms:+.0f} ms "
                f"({span.drift_ms_per_min:+.0f} ms/min)"]
    return [f"span {k}: {s.start_s:.1f}-{s.end_s:.1f} s, {s.audio_delay_ms:+.0f} ms"
            for k, s in enumerate(model.spans, 1)]


def _span_colour(k: int) -> str:
    return SPAN_COLOURS[k % len(SPAN_COLOURS)]


def draw_scores(ax: Any, estimate: SyncEstimate, fontsize: float = 9) -> None:
    """The score-by-delay panel on ``ax``: the x axis is exactly the searched range."""
    xs = np.array([c.audio_delay_ms for c in estimate.scores], dtype=float)
    ys = np.array([c.score for c in estimate.scores], dtype=float)
    ax.plot(xs, ys, color=READING_COLOUR, marker="o", markersize=2.5, linewidth=1.2,
            label="mean score")
    model = estimate.offset_model
    for k, (span, label) in enumerate(zip(model.spans, span_labels(estimate), strict=True)):
        colour = _span_colour(k)
        if model.kind == "drift":
            ax.axvspan(min(span.audio_delay_ms, span.end_delay_ms),
                       max(span.audio_delay_ms, span.end_delay_ms) + 1e-6,
                       color=colour, alpha=0.2, label=label)
        else:
            ax.axvline(span.audio_delay_ms, color=colour, linewidth=1.2, linestyle="--",
                       label=label)
    found = searched_range_ms(estimate)
    if found is not None:
        low, high = found
        ax.set_xlim(low, high)
        ax.set_xlabel(f"audio delay (ms), searched {low:+.0f} to {high:+.0f} ms",
                      fontsize=fontsize)
    ax.set_ylabel("score", fontsize=fontsize)
    ax.grid(True, alpha=0.35)
    ax.tick_params(labelsize=fontsize - 1)
    ax.legend(fontsize=fontsize - 1, loc="best", framealpha=0.85)


def draw_offsets(ax: Any, estimate: SyncEstimate, fontsize: float = 9,
                 legend: bool = True) -> None:
    """The offsets-over-time panel on ``ax``: every segment's reading, the fitted model
    (one legend entry per span, or the drift line), breaks, and the in-sync band."""
    readings = estimate.offsets_over_time
    model = estimate.offset_model
    start, end = model.start_s, model.end_s
    if end <= start:
        end = start + max(estimate.duration_s, 1.0)
    ax.axhspan(-FRAME_MS, FRAME_MS, color=VERDICT_COLOURS["in_sync"], alpha=0.08,
               label=f"in sync (±{FRAME_MS:.0f} ms)")
    ax.axhline(0.0, color="#444444", linewidth=0.6)
    if readings:
        ax.plot([r.time_s for r in readings], [r.audio_delay_ms for r in readings],
                linestyle="none", marker="o", markersize=3.2, color=READING_COLOUR,
                alpha=0.8, label=f"segment readings ({len(readings)})")
    for k, (span, label) in enumerate(zip(model.spans, span_labels(estimate), strict=True)):
        ax.plot([span.start_s, max(span.end_s, span.start_s + 1e-3)],
                [span.audio_delay_ms, span.end_delay_ms], color=_span_colour(k),
                linewidth=2.0, label=label)
    for time in model.breaks:
        ax.axvline(time, color=RANGE_COLOUR, linewidth=0.8, linestyle=":")
    values = [r.audio_delay_ms for r in readings] + list(model.extremes_ms()) + [0.0]
    low, high = min(values), max(values)
    pad = max(2 * FRAME_MS, 0.15 * (high - low))
    low, high = low - pad, high + pad
    searched = searched_range_ms(estimate)
    xlabel = "time (s)"
    if searched is not None:
        s_low, s_high = searched
        margin = 0.04 * (s_high - s_low)
        low, high = max(low, s_low - margin), min(high, s_high + margin)
        for edge in (s_low, s_high):
            if low <= edge <= high:
                ax.axhline(edge, color=RANGE_COLOUR, linewidth=0.9, linestyle="--")
        xlabel = f"time (s); delays searched: {s_low:+.0f} to {s_high:+.0f} ms (dashed)"
    ax.set_ylim(low, high)
    ax.set_xlim(start, end)
    ax.set_xlabel(xlabel, fontsize=fontsize)
    ax.set_ylabel("delay (ms)", fontsize=fontsize)
    ax.grid(True, alpha=0.35)
    ax.tick_params(labelsize=fontsize - 1)
    if legend:
        ax.legend(fontsize=fontsize - 1, loc="best", framealpha=0.85)


def figure_of(estimate: SyncEstimate) -> Any:
    """``score --plot``'s figure: the title (file, verdict, offset), the score-by-delay
    panel, and the offsets-over-time panel when there are readings."""
    mpl = _matplotlib()
    fig = mpl.figure.Figure(figsize=PNG_SIZE_IN, dpi=PNG_DPI, layout="constrained")
    panels = 2 if estimate.offsets_over_time else 1
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    fig.suptitle(_wrap(verdict_title(estimate), 90), fontsize=11,
                 color=VERDICT_COLOURS[estimate.verdict])
    draw_scores(axes[0], estimate)
    if panels == 2:
        draw_offsets(axes[1], estimate)
    return fig


def plot_scores(estimate: SyncEstimate, path: Path) -> Path:
    """Write ``score --plot``'s PNG to ``path`` (atomically)."""
    if path.suffix.lower() != ".png":
        raise OutputError(f"the plot is a PNG image; give a file name ending in .png, not {path}")
    fig = figure_of(estimate)
    buffer = io.BytesIO()
    _matplotlib().backends.backend_agg.FigureCanvasAgg(fig).print_png(buffer)
    return write_atomically(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


class OffsetsPainter:
    """Draws offsets-over-time panels as SVG, one after another on one figure.

    A page of thousands of inputs draws thousands of panels: clearing the plotted artists
    and drawing the next estimate on the same axes keeps the axes, their ticks and the
    canvas, which saves about a quarter of each picture's time. Text stays text (not glyph
    outlines), so a picture is ~15 KB before compression. Not thread-safe: one per thread.
    """

    def __init__(self, size_in: tuple[float, float] = SVG_SIZE_IN, fontsize: float = 7):
        self._mpl = _matplotlib()
        self.fontsize = fontsize
        with self._mpl.rc_context(SVG_RC):
            self._figure = self._mpl.figure.Figure(figsize=size_in)
            self._figure.subplots_adjust(left=0.11, right=0.985, bottom=0.22, top=0.97)
            self._axes = self._figure.subplots()
        self._canvas = self._mpl.backends.backend_svg.FigureCanvasSVG(self._figure)

    def svg(self, estimate: SyncEstimate, salt: str = "") -> str:
        """The ``<svg>`` element of ``estimate``'s offsets panel. ``salt`` makes the ids
        inside it (clip paths, markers) unique among the pictures of one page."""
        ax = self._axes
        for artist in [*ax.lines, *ax.patches, *ax.collections, *ax.texts]:
            artist.remove()
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        with self._mpl.rc_context(SVG_RC | {"svg.hashsalt": salt or estimate.input}):
            draw_offsets(ax, estimate, fontsize=self.fontsize)
            buffer = io.StringIO()
            self._canvas.print_svg(buffer, metadata={"Date": None, "Creator": None,
                                                     "Format": None, "Type": None})
        return _svg_element(buffer.getvalue())


def offsets_svg(estimate: SyncEstimate, salt: str = "") -> str:
    """One estimate's offsets-over-time panel as an ``<svg>`` element (see
    :class:`OffsetsPainter`, which draws many faster)."""
    return OffsetsPainter().svg(estimate, salt)


def _svg_element(document: str) -> str:
    """The ``<svg>`` element of an SVG document (no XML declaration or doctype, which may
    not stand inside an HTML page)."""
    start = document.find("<svg")
    if start < 0:
        raise ValueError("matplotlib wrote no <svg> element")
    return document[start:].strip()


def _wrap(text: str, width: int) -> str:
    """``text`` broken at spaces into lines of at most about ``width`` characters."""
    words: Sequence[str] = text.split(" ")
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)
