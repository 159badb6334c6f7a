"""``score --plot`` and the review page's pictures: drawn by matplotlib with what a reader
needs (title, ticks and grid, a legend entry per span or the drift, the searched range),
and a clear usage error where matplotlib is missing."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import cv2
import pytest
from conftest import invoke

from lipsync_fix.report.examples import example_estimate
from lipsync_fix.sync import plot
from lipsync_fix.sync.timeline import OffsetModel, Span


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_piecewise_plot_names_every_span_and_the_searched_range(tmp_path: Path) -> None:
    estimate = example_estimate(5)  # piecewise, out of sync
    spans = estimate.offset_model.spans
    assert estimate.offset_model.kind == "piecewise" and len(spans) >= 2
    fig = plot.figure_of(estimate)
    title = fig.get_suptitle()
    assert "take0005.mp4" in title and "out of sync" in title
    scores_ax, offsets_ax = fig.axes
    entries = legend_texts(offsets_ax)
    assert [e for e in entries if e.startswith("span ")] == plot.span_labels(estimate)
    assert len(plot.span_labels(estimate)) == len(spans)
    assert any(e.startswith("segment readings") for e in entries)
    # every span's delay is marked where the scores are, none "between the peaks"
    assert len([e for e in legend_texts(scores_ax) if e.startswith("span ")]) == len(spans)
    assert scores_ax.get_xlim() == (-600.0, 600.0)  # exactly the searched range
    assert "-600 to +600" in scores_ax.get_xlabel()
    for ax in fig.axes:
        assert len(ax.get_xticks()) > 3 and len(ax.get_yticks()) > 3
        assert any(line.get_visible() for line in ax.get_xgridlines())
    path = plot.plot_scores(estimate, tmp_path / "p.png")
    image = cv2.imread(str(path))
    assert image.shape == (640, 800, 3) and image.std() > 20


def test_drift_and_constant_legends() -> None:
    drift = example_estimate(1)
    assert drift.offset_model.kind == "drift"
    entries = legend_texts(plot.figure_of(drift).axes[1])
    assert [e for e in entries if e.startswith("drift: ")] == plot.span_labels(drift)
    constant = example_estimate(0)
    assert constant.verdict == "in_sync"
    fig = plot.figure_of(constant)
    assert "in sync" in fig.get_suptitle()
    assert any(e.startswith("constant: ") for e in legend_texts(fig.axes[1]))


def test_one_reading_draws_one_panel_and_an_svg() -> None:
    estimate = example_estimate(4)
    one = replace(estimate, offsets_over_time=estimate.offsets_over_time[:1],
                  offset_model=OffsetModel("constant", (Span(0.0, 0.0, 40.0),)))
    assert len(plot.figure_of(replace(one, offsets_over_time=())).axes) == 1
    svg = plot.offsets_svg(one, salt="x")
    root = ElementTree.fromstring(svg)  # a well-formed <svg> element, no XML prologue
    assert root.tag.endswith("svg") and svg.startswith("<svg")


def test_svg_ids_are_salted() -> None:
    """Two pictures of one page must not share the ids their clip paths refer to."""
    painter = plot.OffsetsPainter()
    a, b = (painter.svg(example_estimate(2), salt=s) for s in ("r0", "r1"))

    def ids(svg: str) -> set[str]:
        return {e.get("id") for e in ElementTree.fromstring(svg).iter()
                if e.get("id") and e.tag.endswith(("clipPath", "path"))
                and not e.get("id", "").startswith(("line2d", "patch"))}

    assert ids(a) and not ids(a) & ids(b)


def test_missing_matplotlib_is_one_line_and_exit_2(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    report = tmp_path / "r.jsonl"
    report.write_text('{"input": "a.mp4", "error": "bad"}\n')
    page = invoke("report", "html", report, "-o", tmp_path / "r.html")
    scored = invoke("score", tmp_path / "missing.mp4", "--plot", tmp_path / "p.png",
                    "-c", tmp_path / "no-model.pth")
    for result in (page, scored):
        assert result.code == 2, result.stderr
        assert result.error_lines == [f"error: {plot.MISSING_MATPLOTLIB}"]
    assert not (tmp_path / "r.html").exists()


def test_importing_the_package_and_cli_does_not_import_matplotlib() -> None:
    code = ("import sys, lipsync_fix, lipsync_fix.cli, lipsync_fix.report; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"
