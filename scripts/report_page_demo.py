"""Make the review page of a run of 100 (or more) files and, where Chromium is installed,
screenshot it: what ``lipsync-fix report html`` shows a person.

A few inputs are measured for real: generated talking-head clips with known delays (and a
file that is not a video) go through ``lipsync-fix score DIR --report R.jsonl`` with the
bundled demo model, so their rows carry real readings and the face crop that was scored.
The rest are made-up estimates (:mod:`lipsync_fix.report.examples`: constant, drift and
piecewise offsets, some uncertain), added to the same report through batch's own reader
and writer. Then ``report html`` draws the page.

Usage: ``python scripts/report_page_demo.py OUT_DIR [--rows 100] [--clips 4]
[--fragment '#sort=worst&dir=desc']``. Writes ``OUT_DIR/report.jsonl``,
``OUT_DIR/report.html`` and ``OUT_DIR/report.png`` (the screenshot), and prints one line
per step and the timings as one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lipsync_fix import batch, cli, media
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.report.examples import example_estimate
from lipsync_fix.sync.records import SCORE_RECORD

DELAYS_MS = (200.0, -120.0, 0.0, 320.0, 80.0, -240.0)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--clips", type=int, default=4, choices=range(0, len(DELAYS_MS) + 1))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fragment", default="", help="e.g. #sort=worst&dir=desc")
    parser.add_argument("--size", default="1400,1800", help="screenshot width,height")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    clips = out / "clips"
    report = out / "report.jsonl"
    for path in (report, batch.Journal.beside(report).path):
        path.unlink(missing_ok=True)

    start = time.perf_counter()
    if args.clips:
        clips.mkdir(exist_ok=True)
        for k, delay in enumerate(DELAYS_MS[: args.clips]):
            clip = make_talking_head(100 + k, duration_s=args.seconds, audio_delay_ms=delay)
            media.write_video(clips / f"talk{k}_{delay:+.0f}ms.mp4", clip.frames, clip.fps,
                              audio=clip.audio, sample_rate=16000)
        (clips / "not_a_video.mp4").write_bytes(b"this is not a video")
        code = cli.run(["score", str(clips), "-c", "demo-small", "--report", str(report),
                        "-q"])
        print(f"scored {args.clips} clips and a broken file (exit {code}: the broken one "
              "failed)", flush=True)
        timings["score_s"] = time.perf_counter() - start
    measured = batch.read_report(report, SCORE_RECORD).records if report.exists() else []
    made_up = [example_estimate(i, seed=7).to_json()
               for i in range(max(0, args.rows - len(measured)))]
    batch.write_report(report, measured + made_up, SCORE_RECORD)
    print(f"{report}: {len(measured)} measured rows and {len(made_up)} made-up ones")

    page = out / "report.html"
    start = time.perf_counter()
    code = cli.run(["report", "html", str(report), "-o", str(page), "--force"])
    timings["page_s"] = time.perf_counter() - start
    if code != 0:
        return code
    timings["page_mb"] = page.stat().st_size / 1e6

    chromium = next((p for n in ("chromium", "chromium-browser", "google-chrome")
                     if (p := shutil.which(n))), None)
    if chromium is None:
        print("no Chromium here: no screenshot (apt-get install chromium)")
    else:
        shot = out / "report.png"
        start = time.perf_counter()
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={out / '.chromium'}",
                        f"--window-size={args.size}", "--virtual-time-budget=8000",
                        f"--screenshot={shot}", page.resolve().as_uri() + args.fragment],
                       check=True, capture_output=True, timeout=300)
        timings["screenshot_s"] = time.perf_counter() - start
        print(f"screenshot {shot}")
    print(json.dumps({k: round(v, 2) for k, v in timings.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
