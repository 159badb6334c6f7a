"""``lipsync-fix report html``: the review page of a report, read through batch's readers,
checked as a structure (no request of any kind, a row per record, a picture per estimate)
and, where Chromium is installed, rendered by a real browser."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest
from conftest import invoke

from lipsync_fix import batch
from lipsync_fix.errors import RecordError
from lipsync_fix.report import html as html_page
from lipsync_fix.report import read_review
from lipsync_fix.report.examples import example_estimate
from lipsync_fix.report.html import draw_pictures, render_page
from lipsync_fix.sync.estimate import SyncEstimate, thumbnail_uri
from lipsync_fix.sync.records import SCORE_RECORD

HOSTILE = 'videos/<script>alert("x")</script>&amp;.mp4'
FACE = thumbnail_uri(np.full((48, 96, 3), (40, 90, 200), np.uint8), 96)


def records(n: int) -> list[dict]:
    """``n`` made-up estimates (the third, out of sync, with a face thumbnail; the second
    with a hostile name), a failure, a skip and a record no reader accepts."""
    found = [example_estimate(i).to_json() for i in range(n)]
    found[2 % n]["face_thumbnail"] = FACE
    found[1]["input"] = HOSTILE
    found += [{"input": "videos/broken.mp4", "error": "videos/broken.mp4: not a video"},
              {"input": "videos/kept.mp4", "output": "fixed/kept.fixed.mp4",
               "skipped": "output exists"},
              example_estimate(n).to_json() | {"input": "videos/odd.mp4", "fps": "fast"}]
    return found


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Page(HTMLParser):
    """The parts of a page the tests look at: every tag's attributes, the table's rows
    (with the pictures inside them), style and script text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.rows: list[dict] = []
        self.scripts: list[tuple[dict, str]] = []
        self.styles: list[str] = []
        self._in: str | None = None
        self._attrs: dict = {}
        self._text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr" and "data-i" in attrs:
            self.rows.append(attrs | {"svg": 0, "faces": 0})
        elif tag == "svg" and self.rows:
            self.rows[-1]["svg"] += 1
        elif tag == "img" and self.rows and "face" in attrs.get("class", ""):
            self.rows[-1]["faces"] += 1
        if tag in ("script", "style"):
            self._in, self._attrs, self._text = tag, attrs, []

    def handle_data(self, data):
        if self._in:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == self._in:
            text = "".join(self._text)
            if tag == "script":
                self.scripts.append((self._attrs, text))
            else:
                self.styles.append(text)
            self._in = None

    def pictures(self) -> list[list[str | None]]:
        return next(json.loads(text) for attrs, text in self.scripts
                    if attrs.get("id") == "pictures")


def unpack(packed: str) -> str:
    return gzip.decompress(base64.b64decode(packed)).decode("utf-8")


def assert_requests_nothing(page: Page, text: str) -> None:
    """No attribute, style or picture that would make the browser fetch anything."""
    for tag, attrs in page.tags:
        assert tag not in ("link", "iframe", "object", "embed", "base"), tag
        for name in ("src", "href", "action", "poster", "srcset", "background"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:", "#")), (tag, name, value)
    assert all("src" not in attrs for attrs, _ in page.scripts)
    css = "\n".join(page.styles)
    assert "@import" not in css and "url(" not in css
    assert not re.search(r"https?://", text)
    meta = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert meta and meta[0]["content"].startswith("default-src 'none'")


def test_page_structure_no_requests_a_row_per_record(tmp_path: Path) -> None:
    report = write_jsonl(tmp_path / "r.jsonl", records(6))
    result = invoke("report", "html", report, "-o", tmp_path / "r.html", "--json")
    assert result.code == 1  # the odd record could not be read: named, page still written
    assert any("videos/odd.mp4" in line and "'fps'" in line for line in result.error_lines)
    summary = result.json_lines()[-1]
    assert summary["inputs"] == 9 and summary["error"] == 1 and summary["skipped"] == 1
    assert summary["unreadable"] == 1
    assert summary["out_of_sync"] + summary["in_sync"] + summary["uncertain"] == 6
    text = (tmp_path / "r.html").read_text()
    page = Page(text)
    assert_requests_nothing(page, text)
    assert len(page.rows) == 9  # one table row per record, before any script ran
    statuses = {r["data-status"] for r in page.rows}
    assert statuses >= {"error", "skipped", "unreadable"}
    pictures = page.pictures()
    assert len(pictures) == 9
    drawn = [unpack(svg) for svg, _ in pictures if svg]
    assert len(drawn) == 6  # an SVG per estimate, none for the others
    for svg in drawn:
        root = ElementTree.fromstring(svg)
        assert root.tag.endswith("svg")
        links = [v for e in root.iter() for k, v in e.attrib.items() if k.endswith("href")]
        assert all(v.startswith("#") for v in links)  # references inside the picture only
        assert "<image" not in svg and not re.search(r"url\((?!#)", svg)
    assert [face for _, face in pictures if face] == [FACE]
    # a file name cannot become markup
    assert "<script>alert" not in text and "&lt;script&gt;alert(&quot;x&quot;)" in text


def test_rows_read_back_typed(tmp_path: Path) -> None:
    """Records come back through SyncEstimate.from_json: the page shows the estimate fix
    would apply; a damaged record is 'unreadable' with its one line."""
    review = read_review(write_jsonl(tmp_path / "r.jsonl", records(3)))
    by_input = {row.input: row for row in review.rows}
    assert by_input["videos/take0000.mp4"].estimate == SyncEstimate.from_json(
        records(3)[0])
    assert by_input["videos/broken.mp4"].status == "error"
    assert by_input["videos/kept.mp4"].status == "skipped"
    odd = by_input["videos/odd.mp4"]
    assert odd.status == "unreadable" and "'fps' must be a number" in odd.message
    with pytest.raises(RecordError, match="face_thumbnail"):
        SyncEstimate.from_json(records(3)[0] | {"face_thumbnail": "javascript:alert(1)"})
    with_face = example_estimate(0).to_json() | {"face_thumbnail": FACE}
    assert SyncEstimate.from_json(with_face).to_json() == with_face


def test_csv_report_and_journal_of_a_run_in_progress(tmp_path: Path) -> None:
    rows = [example_estimate(i).to_json() | {"face_thumbnail": FACE} for i in range(4)]
    rows.append({"input": "videos/broken.mp4", "error": "not a video"})
    csv_report = tmp_path / "r.csv"
    batch.write_report(csv_report, rows, SCORE_RECORD)
    assert "face_thumbnail" not in csv_report.read_text().splitlines()[0]
    review = read_review(csv_report)
    by_input = {row.input: row for row in review.rows}
    assert [by_input[r["input"]].status for r in rows] == [
        *(r["verdict"] for r in rows[:4]), "error"]
    head = by_input[rows[1]["input"]].headline  # a drift
    assert head.audio_delay_ms == rows[1]["audio_delay_ms"]
    assert head.drift_ms_per_min == rows[1]["drift_ms_per_min"] != 0
    assert head.offset_model == "drift" and head.model == "vocalist-lrs2"
    text = render_page(review)
    assert "a CSV report keeps no readings" in text
    # a CSV row carries the fitted spans (not the readings): the model is drawn, no face
    pictures = Page(text).pictures()
    assert len(pictures) == 5 and [p[1] for p in pictures] == [None] * 5
    assert sum(p[0] is not None for p in pictures) == 4
    # a run still going: its journal holds more than the report written so far
    journal = batch.Journal.beside(tmp_path / "run.jsonl")
    write_jsonl(tmp_path / "run.jsonl", rows[:2])
    for row in rows:
        journal.append(row)
    assert "its journal holds 3 more inputs" in render_page(read_review(tmp_path / "run.jsonl"))
    live = read_review(journal.path)
    assert live.from_journal and len(live.rows) == 5
    assert sum(svg is not None for svg, _ in Page(render_page(live)).pictures()) == 4


def test_output_rules(tmp_path: Path) -> None:
    report = write_jsonl(tmp_path / "r.jsonl", records(3)[:3])
    out = tmp_path / "r.html"
    assert invoke("report", "html", report, "-o", out, "-q").code == 0
    again = invoke("report", "html", report, "-o", out)
    assert again.code == 2 and "exists" in again.stderr
    assert invoke("report", "html", report, "-o", out, "--force", "-q").code == 0
    wrong = invoke("report", "html", report, "-o", tmp_path / "r.txt")
    assert wrong.code == 2 and ".html" in wrong.stderr
    missing = invoke("report", "html", tmp_path / "nope.jsonl", "-o", tmp_path / "n.html")
    assert missing.code == 2 and "does not exist" in missing.stderr
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text("hello\n")
    assert invoke("report", "html", foreign, "-o", tmp_path / "f.html").code == 2


@pytest.mark.slow  # spawns 2 processes that import torch: 24-26 s on the busy 2-core box
def test_a_pool_draws_the_same_pictures(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    review = read_review(write_jsonl(tmp_path / "r.jsonl", records(4)))
    steps: list[tuple[int, int]] = []
    pooled = draw_pictures(review, lambda _, done, total: steps.append((done, total)),
                           jobs=2, pool_from=0)
    assert steps == [(2, 4), (4, 4)]  # two processes, two pictures each
    monkeypatch.setattr(html_page, "ProcessPoolExecutor", None)  # here: no pool at all
    assert pooled == draw_pictures(review) and sum(p is not None for p in pooled) == 4


# --------------------------------------------------------------------------- a real browser

CHROMIUM = next((p for name in ("chromium", "chromium-browser", "google-chrome")
                 if (p := shutil.which(name))), None)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--mute-audio")


def browse(page: Path, fragment: str, tmp_path: Path, shot: Path) -> str:
    """The DOM after the page's scripts ran (and a screenshot), from headless Chromium."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1400,1000", "--virtual-time-budget=4000", "--dump-dom",
         f"--screenshot={shot}", page.resolve().as_uri() + fragment],
        capture_output=True, text=True, timeout=90, env=os.environ | {"TZ": "UTC"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install "
                    "chromium); the structural tests above still ran")
def test_chromium_renders_the_table_and_pictures(tmp_path: Path) -> None:
    report = write_jsonl(tmp_path / "r.jsonl", records(12))
    page = tmp_path / "r.html"
    assert invoke("report", "html", report, "-o", page, "-q").code == 1  # the odd record
    shot = tmp_path / "shot.png"
    dom = Page(browse(page, "#sort=worst&dir=desc&show=out_of_sync,uncertain,error",
                      tmp_path, shot))
    body = next(attrs for tag, attrs in dom.tags if tag == "body")
    assert body.get("data-ready") == "1" and body.get("data-painted") == "1"
    shown = [r for r in dom.rows if "hidden" not in r]
    review = read_review(report)
    wanted = [row for row in review.rows if row.status in ("out_of_sync", "uncertain", "error")]
    assert len(shown) == len(wanted) and len(dom.rows) == len(review.rows)
    # sorted by worst delay, largest first; the failure (no delay) last
    worst = [abs(review.rows[int(r["data-i"])].headline.worst_audio_delay_ms)
             for r in shown if r["data-status"] != "error"]
    assert worst == sorted(worst, reverse=True) and shown[-1]["data-status"] == "error"
    assert all(r["svg"] == (r["data-status"] != "error") for r in shown)
    faces = [r for r in dom.rows if r["faces"]]
    assert len(faces) == 1 and review.rows[int(faces[0]["data-i"])].input.endswith("0002.mp4")
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1000, 1400) and image.std() > 30
    red = np.all(np.abs(image.astype(int) - (46, 34, 207)) < 12, axis=2).sum()  # #cf222e
    assert red > 200  # the out-of-sync badges and chip were painted
