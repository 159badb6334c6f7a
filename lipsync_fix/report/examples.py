"""Made-up estimates, for trying the review page at the scale of a large run.

Each one is built as a real :class:`SyncEstimate` (constant, drift or piecewise offset,
readings scattered around it with a few stray ones, a score curve that peaks where the
offset is), so it is a record the page reads, checks and draws like any other; only the
measurement itself is invented. The tests and ``scripts/report_page_demo.py`` use them;
nothing else does.
"""

from __future__ import annotations

import numpy as np

from lipsync_fix.features.constants import FRAME_MS
from lipsync_fix.sync.estimate import (
    CandidateScore,
    ModelIdentity,
    SegmentReading,
    SyncEstimate,
)
from lipsync_fix.sync.timeline import OffsetModel, Span

EXAMPLE_MODEL = ModelIdentity("vocalist-lrs2", "vocalist", "0123456789ab", "vocalist-lrs2.pth")
KINDS = ("constant", "drift", "piecewise")


def example_estimate(index: int, seed: int = 0, max_delay_ms: float = 600.0,
                     folder: str = "videos") -> SyncEstimate:
    """The ``index``-th made-up estimate of a run: the offset model cycles through
    constant, drift and piecewise, about one in seven is uncertain and one in four is in
    sync (a constant within a frame)."""
    rng = np.random.default_rng([seed, index])
    duration = float(rng.uniform(20.0, 90.0))
    kind = KINDS[index % 3] if index % 4 else "constant"
    in_sync = index % 4 == 0
    if kind == "constant":
        delay = float(rng.uniform(-20, 20) if in_sync else rng.choice([-1, 1])
                      * rng.uniform(60, 400))
        model = OffsetModel("constant", (Span(0.0, duration, round(delay, 1), 0.0, 0.95, 4.0),))
    elif kind == "drift":
        start = float(rng.uniform(-100, 100))
        rate = float(rng.choice([-1, 1]) * rng.uniform(40, 300))
        model = OffsetModel("drift", (Span(0.0, duration, round(start, 1), round(rate, 2),
                                           0.9, 6.0),), 3.0)
    else:
        cuts = np.sort(rng.uniform(0.2, 0.8, int(rng.integers(1, 4)))) * duration
        edges = [0.0, *(round(float(c), 3) for c in cuts), round(duration, 3)]
        delays = rng.choice([-1, 1], len(edges) - 1) * rng.uniform(40, 350, len(edges) - 1)
        model = OffsetModel("piecewise", tuple(
            Span(a, b, round(float(d), 1), 0.0, 0.9, 8.0)
            for a, b, d in zip(edges, edges[1:], delays, strict=False)))
    times = np.arange(0.5, duration, max(1.0, duration / 32))
    truth = np.asarray(model.offset_at(times))
    readings = np.round((truth + rng.normal(0, 12, len(times))) / FRAME_MS) * FRAME_MS
    stray = rng.random(len(times)) < 0.08
    readings[stray] = np.round(rng.uniform(-max_delay_ms, max_delay_ms, stray.sum())
                               / FRAME_MS) * FRAME_MS
    uncertain = index % 7 == 3
    agree = float(np.mean(np.abs(readings - truth) <= FRAME_MS))
    shifts = np.arange(-max_delay_ms, max_delay_ms + 1e-9, FRAME_MS)
    peak = float(model.headline_delay_ms())
    curve = 0.2 + 0.6 * np.exp(-0.5 * ((shifts - peak) / 60.0) ** 2) \
        + rng.normal(0, 0.02, len(shifts))
    headline = model.headline_delay_ms()
    worst = model.worst_delay_ms()
    verdict = "uncertain" if uncertain else \
        ("in_sync" if model.in_sync(FRAME_MS) else "out_of_sync")
    return SyncEstimate(
        input=f"{folder}/take{index:04d}.mp4", fps=25.0, duration_s=round(duration, 3),
        audio_delay_ms=headline, audio_delay_frames=round(headline / FRAME_MS, 2),
        worst_audio_delay_ms=round(worst, 1),
        confidence=round(min(agree, 0.45) if uncertain else agree, 3), verdict=verdict,
        face_coverage=round(float(rng.uniform(0.7, 1.0)), 3),
        windows_used=int(21 * len(times)), faces_seen=1, offset_model=model,
        scores=tuple(CandidateScore(round(float(s), 1), round(float(c), 4))
                     for s, c in zip(shifts, curve, strict=True)),
        offsets_over_time=tuple(SegmentReading(round(float(t), 2), float(r))
                                for t, r in zip(times, readings, strict=True)),
        windows_scored=int(21 * len(times)), windows_available=int(duration * 25),
        pairs_scored=int(21 * len(times) * len(shifts)),
        pairs_available=int(duration * 25 * len(shifts)), model=EXAMPLE_MODEL,
        precision="fp32",
        notes=("only 3 of 9 segments agree within one frame",) if uncertain else ())
