"""The review page: one self-contained HTML file of a report, for a person to look at.

What a reviewer needs to decide which estimates to apply: counts by verdict, one table
row per input (verdict, delay, worst delay, drift, spans, confidence, the notes that made
an estimate uncertain, the model, what was written), sortable by column and filtered by
verdict or name, and per input the picture of its offsets over time with the fitted model
(drawn by :func:`lipsync_fix.sync.plot.draw_offsets`, the code of ``score --plot``) beside
the face crop that was scored, when the report recorded one.

**Self-contained**: styles and script are inline, pictures are inline SVG and ``data:``
images, and a Content-Security-Policy forbids the page any request at all; the file can
be mailed or archived and looks the same offline, years later.

**At 5,000 rows**: the table is HTML (readable, and sortable by the script, without any
picture), while the pictures are kept out of the document until they are shown: each one
is a gzip-compressed SVG (about 2.5 KB of base64 instead of ~15 KB) in one JSON block,
and the script unpacks and inserts only those of the page of rows on screen (100 by
default). So the browser holds 100 pictures, not 5,000, and the file stays near 4 KB a
row. Drawing the pictures is what building the page costs (a few hundredths of a second
each, reported through ``progress``).
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

from lipsync_fix.files import write_atomically
from lipsync_fix.report.rows import STATUS_WORDS, STATUSES, Review, ReviewRow
from lipsync_fix.sync.estimate import SyncEstimate
from lipsync_fix.sync.plot import VERDICT_COLOURS, OffsetsPainter

POOL_FROM = 200
"""Pictures from which a pool of processes draws them."""
CHUNK = 25
"""Pictures per task of the pool (and per progress step)."""
PAGE_SIZES = (25, 100, 500)
DEFAULT_PAGE_SIZE = 100
STATUS_COLOURS = VERDICT_COLOURS | {"error": "#6e7781", "skipped": "#afb8c1",
                                    "unreadable": "#8250df"}
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")
"""The page may load nothing: not a script, a font, an image or a connection."""

Progress = Callable[[str, int, int], None]

COLUMNS = (
    # (key, heading, how it sorts, tooltip, width in CSS pixels: None takes the rest)
    ("input", "input", "text", "the file, and why an estimate is uncertain", None),
    ("verdict", "verdict", "text", "in sync, out of sync, uncertain; or why there is none",
     100),
    ("delay", "delay", "mag", "audio_delay_ms: a delay some part of the video has; sorts "
     "by size, either sign", 72),
    ("worst", "worst delay", "mag", "worst_audio_delay_ms: the largest delay anywhere in "
     "the video; sorts by size, either sign", 76),
    ("drift", "drift", "mag", "ms per minute (a drifting audio clock); sorts by size", 92),
    ("spans", "spans", "num", "the fitted offset model: one delay per span", 150),
    ("confidence", "confi&shy;dence", "num", "share of segments that agree with the offset "
     "model within one frame", 74),
    ("model", "model", "text", "the checkpoint that scored", 96),
    ("output", "output", "text", "what the command wrote for this input", 110),
    ("picture", "offsets over time", "", "each dot: one segment's reading; lines: the "
     "fitted offset model; green band: in sync (±1 frame)", 440),
)


def render_page(review: Review, progress: Progress | None = None, jobs: int = 1) -> str:
    """The page of ``review`` as HTML text (see the module docstring). ``jobs`` processes
    draw the pictures of a large report (see :func:`draw_pictures`)."""
    pictures = draw_pictures(review, progress, jobs)
    body = "\n".join(_row_html(index, row) for index, row in enumerate(review.rows))
    return _TEMPLATE.format(
        csp=CSP,
        title=html.escape(f"lipsync-fix review: {review.source.name}"),
        heading=html.escape(review.source.name),
        meta=_meta(review),
        style=_asset("page.css"),
        summary=_summary(review),
        page_sizes="".join(
            f'<option value="{n}"{" selected" if n == DEFAULT_PAGE_SIZE else ""}>{n}</option>'
            for n in PAGE_SIZES),
        columns="".join(f'<col style="width:{w}px">' if w else "<col>"
                        for *_, w in COLUMNS),
        head="".join(_heading(key, label, kind, tip) for key, label, kind, tip, _ in COLUMNS),
        body=body,
        pictures=_script_json([[svg, row.estimate.face_thumbnail if row.estimate else None]
                               for svg, row in zip(pictures, review.rows, strict=True)]),
        script=_asset("page.js"),
    )


def draw_pictures(review: Review, progress: Progress | None = None, jobs: int = 1,
                  pool_from: int = POOL_FROM) -> list[str | None]:
    """Each row's offsets panel as packed SVG (:func:`_pack`; None for a row without an
    estimate). With ``jobs`` > 1 and at least ``pool_from`` pictures, that many processes
    draw them (matplotlib holds the interpreter lock, so threads would not help); fewer
    pictures are drawn here, since a process costs a second or two to start. The pool's
    processes are spawned (a script calling this with ``jobs`` > 1 needs Python's
    ``if __name__ == "__main__":`` guard; the command line has it)."""
    todo = [(i, row.estimate) for i, row in enumerate(review.rows) if row.estimate is not None]
    found: list[str | None] = [None] * len(review.rows)
    jobs = max(1, min(jobs, len(todo)))
    size = max(1, min(CHUNK, -(-len(todo) // jobs)))  # every process gets work
    done = 0

    def take(chunk: Sequence[tuple[int, str]]) -> None:
        nonlocal done
        for index, packed in chunk:
            found[index] = packed
        done += len(chunk)
        if progress is not None:
            progress("pictures", done, len(todo))

    chunks = [todo[k : k + size] for k in range(0, len(todo), size)]
    if jobs == 1 or len(todo) < pool_from:
        for chunk in chunks:
            take(_draw_chunk(chunk))
        return found
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(_draw_chunk, chunks):
            take(result)
    return found


_PAINTER: list[OffsetsPainter] = []
"""This process's painter (made on first use: a pool worker makes its own)."""


def _draw_chunk(chunk: Sequence[tuple[int, SyncEstimate]]) -> list[tuple[int, str]]:
    if not _PAINTER:
        _PAINTER.append(OffsetsPainter())
    return [(index, _pack(_PAINTER[0].svg(estimate, salt=f"r{index}")))
            for index, estimate in chunk]


def write_page(review: Review, output: Path, progress: Progress | None = None,
               jobs: int = 1) -> Path:
    """Render the page and write it to ``output`` atomically (the caller has checked that
    it may be written)."""
    text = render_page(review, progress, jobs)
    return write_atomically(output, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# --------------------------------------------------------------------------- pieces


def _pack(svg: str) -> str:
    """An SVG as base64 of its gzip (no timestamp: the same report, the same page)."""
    return base64.b64encode(gzip.compress(svg.encode("utf-8"), 9, mtime=0)).decode("ascii")


def _script_json(value: object) -> str:
    """JSON that may stand inside ``<script>``: no ``<``, ``>`` or ``&`` left in it, so no
    file name can close the element."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files(__package__ or "lipsync_fix.report").joinpath(name).read_text("utf-8")


def _meta(review: Review) -> str:
    parts = [f"{len(review.rows)} input{'s' if len(review.rows) != 1 else ''}",
             f"read from {html.escape(str(review.source))}"]
    if review.from_journal:
        parts.append("the journal of a run that may still be in progress: inputs done so far")
    if review.in_progress:
        parts.append(f"its journal holds {review.in_progress} more input"
                     f"{'s' if review.in_progress != 1 else ''} (a run in progress?): give "
                     f"{html.escape(review.source.name)}.journal to see them")
    if review.csv_form:
        parts.append("a CSV report keeps no readings: pictures need the .jsonl report or "
                     "its journal")
    return " &middot; ".join(parts)


def _summary(review: Review) -> str:
    counts = review.counts()
    chips = []
    for status in STATUSES:
        if counts[status] == 0 and status in ("skipped", "unreadable"):
            continue
        chips.append(
            f'<label class="chip" style="--c:{STATUS_COLOURS[status]}">'
            f'<input type="checkbox" checked data-status="{status}"> '
            f'{STATUS_WORDS[status]} <b data-count="{status}">{counts[status]}</b></label>')
    return "\n".join(chips)


def _heading(key: str, label: str, kind: str, tip: str) -> str:
    sort = f' data-sort="{kind}" tabindex="0"' if kind else ""
    return f'<th data-key="{key}"{sort} title="{html.escape(tip)}">{label}</th>'


def _cell(text: str, value: object = None, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    if value is not None:
        attr += f' data-v="{html.escape(str(value))}"'
    return f"<td{attr}>{text}</td>"


def _ms(value: float | None, unit: str = "ms") -> tuple[str, float | None]:
    if value is None:
        return "&ndash;", None
    return f"{value:+.0f}&nbsp;{unit}", value


def _row_html(index: int, row: ReviewRow) -> str:
    head = row.headline
    colour = STATUS_COLOURS[row.status]
    name = html.escape(row.input)
    lines = [f'<div class="name">{name}</div>']
    if row.message:
        lines.append(f'<div class="why">{html.escape(row.message)}</div>')
    if head is not None:
        lines += [f'<div class="why">{html.escape(note)}</div>' for note in head.notes]
    cells = [_cell("".join(lines), row.input),
             _cell(f'<span class="badge" style="--c:{colour}">'
                   f'{STATUS_WORDS[row.status]}</span>', STATUSES.index(row.status))]
    if head is None:
        cells += [_cell("&ndash;") for _ in range(5)]
        cells.append(_cell("&ndash;"))
    else:
        cells.append(_cell(*_ms(head.audio_delay_ms)))
        cells.append(_cell(*_ms(head.worst_audio_delay_ms)))
        drifting = head.offset_model == "drift"
        cells.append(_cell(*_ms(head.drift_ms_per_min if drifting else None, "ms/min")))
        cells.append(_cell(_spans_html(row), len(head.spans) or None, "spans"))
        confidence = head.confidence
        cells.append(_cell("&ndash;" if confidence is None else f"{confidence:.2f}",
                           confidence))
        model = html.escape(head.model or "")
        tip = f' title="sha256 {html.escape(head.model_sha256)}"' if head.model_sha256 else ""
        cells.append(_cell(f"<span{tip}>{model or '&ndash;'}</span>", head.model or None))
    output = html.escape(row.output) if row.output else "&ndash;"
    cells.append(_cell(f'<span class="path">{output}</span>', row.output))
    cells.append('<td><div class="picture"></div></td>')
    return (f'<tr data-i="{index}" data-status="{row.status}" style="--c:{colour}">'
            + "".join(cells) + "</tr>")


def _spans_html(row: ReviewRow) -> str:
    """The offset model in a few words: constant, a drift's first and last delay, or a
    piecewise offset's spans (four at most, then how many more)."""
    head = row.headline
    assert head is not None
    if not head.spans:
        return html.escape(head.offset_model or "") or "&ndash;"
    if head.offset_model == "constant":
        return "constant"
    if head.offset_model == "drift":
        span = head.spans[0]
        return (f"drift {span.audio_delay_ms:+.0f}&nbsp;&rarr;&nbsp;"
                f"{span.end_delay_ms:+.0f}&nbsp;ms")
    lines = [f"{len(head.spans)} spans"] + [
        f"{s.start_s:.1f}&ndash;{s.end_s:.1f}&nbsp;s: {s.audio_delay_ms:+.0f}&nbsp;ms"
        for s in head.spans[:4]]
    if len(head.spans) > 4:
        lines.append(f"and {len(head.spans) - 4} more")
    return "<br>".join(lines)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="lipsync-fix report html">
<title>{title}</title>
<style>
{style}
</style>
</head>
<body>
<header>
<h1>lipsync-fix review: {heading}</h1>
<p class="meta">{meta}</p>
<div class="summary" id="summary">
{summary}
</div>
<div class="controls">
<input type="search" id="filter" placeholder="filter by name" aria-label="filter by name">
<label>rows per page <select id="size">{page_sizes}</select></label>
<button type="button" id="prev" aria-label="previous page">&larr;</button>
<span id="shown" aria-live="polite"></span>
<button type="button" id="next" aria-label="next page">&rarr;</button>
</div>
<noscript><p class="meta">Sorting, filtering and the pictures need JavaScript; the table
below lists every input.</p></noscript>
</header>
<table id="rows">
<colgroup>{columns}</colgroup>
<thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table>
<script type="application/json" id="pictures">{pictures}</script>
<script>
{script}
</script>
</body>
</html>
"""
