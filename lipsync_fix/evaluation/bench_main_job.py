"""Benchmark of the main job: the sampled estimate against scoring every window.

Both run on the same inputs, so the figures are ratios measured side by side:

* **sweep** - generated talking heads with known delays (unseen speakers and sentences),
  scored in this process with the bundled ``demo-small`` model, by the exhaustive float32
  estimate and by the default (sampled, ``--precision auto``) one: the share within one
  frame of the truth for each, the share where they agree within one frame, and how many
  segments the sampled one needed before its stopping rule fired;
* **long** - a generated 720p clip (a minute of talker, looped with stream copy to the
  requested length, so only rendering is saved, not decoding or scoring) scored with a
  paper-size VocaLiST (the golden weight rule: random weights, right cost), each run a
  child process so its wall time and peak RSS are its own. The exhaustive estimate is
  timed on a 20 s clip (it is linear in length; seconds per second of video carry over).
  Random weights never settle the stopping rule, so the sampled estimate is timed twice:
  at its budget (the worst case) and at the number of segments the trained model needed
  on the sweep (what a settled clip costs);
* **memory** (optional) - peak RSS of the sampled estimate on an hour of 720p video and on
  a 4K clip;
* **front end** - the front end alone (probe, audio, decoding at the analysis size, faces
  found, followed and cropped) over every segment of a 20 s clip at 720p and at 1080p,
  as ``--exhaustive`` reads them: frames per second and how many times real time, and
  the CPU seconds of this process and of ffmpeg.

The last line printed is one JSON object with ``speedup``, ``agreement``,
``fast_x_realtime``, ``exhaustive_x_realtime``, ``peak_rss_mb``, ``device``, ``precision``.

``--compare-models`` instead measures the three sync models side by side on the same
clips, each with the golden rule's weights (the cost of the model, not its accuracy):
paper-size VocaLiST (``vocalist-lrs2``), MTDVocaLiST (``mtdvocalist-lrs2``) and the
original SyncNet (``syncnet-v2``). Per model: the exhaustive estimate on 20 s of 720p
(seconds per scored window, the figure ``lipsync-fix models`` shows), the sampled one on
the 60 s 720p clip and on the long one (at its budget: random weights never settle), each
with windows scored and peak RSS. The last line is one JSON object of those rows.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lipsync_fix import media
from lipsync_fix.compute import autocast_dtype, resolve_device
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.errors import UsageError
from lipsync_fix.evaluation.bench_folder import checkpoint_for
from lipsync_fix.evaluation.golden import golden_model
from lipsync_fix.features.constants import FRAME_MS, FRAMES_PER_WINDOW
from lipsync_fix.features.inputs import WAV2LIP
from lipsync_fix.models import load_model, save_checkpoint
from lipsync_fix.sync import SyncOptions, estimate_sync
from lipsync_fix.sync.estimate import segment_starts
from lipsync_fix.sync.frontend import ClipReader
from lipsync_fix.sync.scoring import num_windows

SWEEP_DELAYS_MS = (-400.0, -200.0, -80.0, 0.0, 120.0, 200.0, 400.0)
SWEEP_SEEDS = (2030, 2031, 2032)
Log = Callable[[str], None]


@dataclass
class Run:
    """One timed child process."""

    what: str
    seconds: float
    video_s: float
    peak_rss_mb: float
    windows_scored: int
    windows_available: int

    @property
    def x_realtime(self) -> float:
        return self.seconds / self.video_s


@dataclass
class MainJobBenchmark:
    device: str
    precision: str
    sweep_clips: int = 0
    fast_within_frame: float = 0.0
    exhaustive_within_frame: float = 0.0
    agreement: float = 0.0
    segments_needed_median: float = 0.0
    runs: list[dict] = field(default_factory=list)
    front_end: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def _ffmpeg(*args: str, timeout: float = 1800) -> None:
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", *args], check=True,
                   timeout=timeout)


FACE_BOXES: dict[Path, str] = {}
"""The median face box of each clip :func:`make_clip` wrote, as ``--face-box`` takes it
(for machines whose OpenCV has no Haar detector)."""


def make_clip(path: Path, seconds: float, seed: int, delay_ms: float = 0.0,
              size: tuple[int, int] | None = None) -> Path:
    """A generated talker (256x256), scaled and padded to ``size`` (e.g. 1280x720) when
    given, so the video costs what a real one of that size costs to decode."""
    clip = make_talking_head(seed, duration_s=seconds, audio_delay_ms=delay_ms)
    box = np.median(clip.face_boxes, axis=0)
    if size is None:
        media.write_video(path, clip.frames, clip.fps, audio=clip.audio, sample_rate=16000)
        FACE_BOXES[path] = ",".join(f"{v:.0f}" for v in box)
        return path
    small = path.with_name(path.stem + ".small.mp4")
    media.write_video(small, clip.frames, clip.fps, audio=clip.audio, sample_rate=16000)
    width, height = size
    side = min(width, height)
    scale = side / clip.frames.shape[1]
    x, y, w, h = box * scale
    FACE_BOXES[path] = (f"{x + (width - side) // 2:.0f},{y + (height - side) // 2:.0f},"
                        f"{w:.0f},{h:.0f}")
    pad = f"pad={width}:{height}:{(width - side) // 2}:{(height - side) // 2}"
    _ffmpeg("-i", str(small), "-vf", f"scale={side}:{side},{pad}",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-c:a", "copy", str(path))
    small.unlink()
    return path


def loop_clip(src: Path, dst: Path, times: int) -> Path:
    """``src`` played ``times`` times in a row, by stream copy (no re-encode)."""
    _ffmpeg("-stream_loop", str(times - 1), "-i", str(src), "-c", "copy", str(dst))
    if src in FACE_BOXES:
        FACE_BOXES[dst] = FACE_BOXES[src]
    return dst


def run_sweep(log: Log, seconds: float = 10.0, device: str = "cpu",
              precision: str = "auto", work: Path = Path(".")) -> dict:
    """(a): known delays, the bundled model, exhaustive float32 against the default."""
    model = load_model("demo-small", resolve_device(device))
    rows = []
    for seed in SWEEP_SEEDS:
        for delay in SWEEP_DELAYS_MS:
            path = make_clip(work / f"sweep_{seed}_{delay:+.0f}.mp4", seconds, seed, delay)
            fast = estimate_sync(path, model, SyncOptions(device=device, precision=precision))
            full = estimate_sync(path, model, SyncOptions(device=device, precision="fp32",
                                                          exhaustive=True))
            rows.append({"truth": delay, "fast": fast.audio_delay_ms,
                         "exhaustive": full.audio_delay_ms,
                         "segments": len(fast.offsets_over_time)})
            log(f"sweep seed {seed} delay {delay:+.0f} ms: fast {fast.audio_delay_ms:+.1f}, "
                f"exhaustive {full.audio_delay_ms:+.1f} ({fast.windows_scored} of "
                f"{full.windows_scored} windows)")
            path.unlink()

    def within(key: str) -> float:
        return sum(abs(r[key] - r["truth"]) <= FRAME_MS for r in rows) / len(rows)

    return {
        "sweep_clips": len(rows),
        "fast_within_frame": within("fast"),
        "exhaustive_within_frame": within("exhaustive"),
        "agreement": sum(abs(r["fast"] - r["exhaustive"]) <= FRAME_MS for r in rows) / len(rows),
        "segments_needed_median": statistics.median(r["segments"] for r in rows),
        "sweep": rows,
    }


def time_front_end(path: Path, what: str) -> dict:
    """The front end alone over every segment of ``path`` (see the module docstring),
    with no read-ahead thread, so the figure is the front end's own."""
    start, cpu = time.perf_counter(), time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    reader = ClipReader(path, WAV2LIP)
    t = FRAMES_PER_WINDOW
    per_segment = 25 - t + 1
    n_rows = num_windows(reader.n_frames, reader.n_samples, t)
    starts = segment_starts(n_rows, per_segment, partial=True)
    frames = faces = 0
    for segment in reader.segments_in_order(starts, per_segment + t - 1, ahead=0):
        fresh = segment.has_face[t - 1 if segment.first else 0 :]  # overlaps counted once
        frames += len(fresh)
        faces += int(fresh.sum())
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ffmpeg_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return {"what": what, "seconds": round(seconds, 3), "video_s": round(reader.duration_s, 3),
            "frames": frames, "fps": round(frames / seconds, 1),
            "times_real_time": round(reader.duration_s / seconds, 3),
            "cpu_s": round(time.process_time() - cpu, 3), "ffmpeg_cpu_s": round(ffmpeg_cpu, 3),
            "face_share": round(faces / max(1, frames), 3)}


def run_front_end_benchmark(work: Path, log: Log = print) -> list[dict]:
    """The front end alone on 20 s of 720p and of 1080p (the clips are kept in ``work``)."""
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for width, height in ((1280, 720), (1920, 1080)):
        clip = work / f"talk_20s_{height}p.mp4"
        if not clip.is_file():
            make_clip(clip, 20.0, 78, 120.0, (width, height))
        runs.append(time_front_end(clip, f"front end, 20 s {height}p"))
        r = runs[-1]
        log(f"{r['what']}: {r['seconds']:.1f} s, {r['fps']:.0f} frames/s = "
            f"{r['times_real_time']:.2f}x real time (CPU: {r['cpu_s']:.1f} s here, "
            f"{r['ffmpeg_cpu_s']:.1f} s ffmpeg)")
    return runs


def timed_score(what: str, clip: Path, checkpoint: Path, video_s: float, *extra: str,
                device: str = "cpu", precision: str = "auto", fixed_face: bool = False) -> Run:
    """``lipsync-fix score`` in a child process: its wall time and its own peak RSS."""
    command = [sys.executable, "-m", "lipsync_fix", "score", str(clip), "-c", str(checkpoint),
               "--json", "--quiet", "--device", device, "--precision", precision, *extra]
    if fixed_face:
        command += ["--face-box", FACE_BOXES[clip]]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.stdout.read(), process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    lines = stdout.decode().strip().splitlines()
    if not lines:
        raise RuntimeError(f"{what}: score printed nothing: {stderr.decode()[-500:]}")
    record = json.loads(lines[-1])
    if "error" in record:
        raise RuntimeError(f"{what}: {record['error']}")
    return Run(what, seconds, video_s, usage.ru_maxrss / 1024,
               int(record.get("windows_scored", 0)), int(record.get("windows_available", 0)))


def run_main_job_benchmark(
    work: Path,
    long_minutes: float = 10.0,
    device: str = "cpu",
    precision: str = "auto",
    sweep: bool = True,
    memory: bool = False,
    log: Log = print,
    fixed_face: bool = False,
    front_end: bool = True,
    front_end_only: bool = False,
) -> MainJobBenchmark:
    """Everything in the module docstring; ``work`` holds the generated clips.
    ``fixed_face`` gives the long runs the clip's known face box instead of detecting it
    (for a machine whose OpenCV has no Haar detector; face detection is then not timed)."""
    dev = resolve_device(device)
    if work.exists() and not work.is_dir():
        raise UsageError(f"the work folder {work} is a file; give a folder for the clips")
    work.mkdir(parents=True, exist_ok=True)
    used = "bf16" if autocast_dtype(dev, precision) is not None else "fp32"
    result = MainJobBenchmark(device=str(dev), precision=used)
    if front_end or front_end_only:
        result.front_end = run_front_end_benchmark(work, log)
        result.summary["front_end_720p_times_real_time"] = \
            result.front_end[0]["times_real_time"]
        result.summary["front_end_720p_fps"] = result.front_end[0]["fps"]
        result.summary["front_end_1080p_times_real_time"] = \
            result.front_end[1]["times_real_time"]
        result.summary["front_end_1080p_fps"] = result.front_end[1]["fps"]
    if front_end_only:
        return result
    settled = 10
    if sweep:
        found = run_sweep(log, device=device, precision=precision, work=work)
        for key in ("sweep_clips", "fast_within_frame", "exhaustive_within_frame",
                    "agreement", "segments_needed_median"):
            setattr(result, key, found[key])
        settled = max(1, round(found["segments_needed_median"]))

    checkpoint = work / "vocalist_paper_rule.pth"
    if not checkpoint.exists():
        save_checkpoint(checkpoint, golden_model())
    minute = make_clip(work / "talk_60s_720p.mp4", 60.0, 77, 120.0, (1280, 720))
    twenty = make_clip(work / "talk_20s_720p.mp4", 20.0, 78, 120.0, (1280, 720))
    loops = max(1, round(long_minutes))
    long = loop_clip(minute, work / f"talk_{loops}min_720p.mp4", loops)
    opts = {"device": device, "precision": precision, "fixed_face": fixed_face}
    runs = [
        timed_score("exhaustive fp32, 20 s 720p", twenty, checkpoint, 20.0, "--exhaustive",
                    device=device, precision="fp32", fixed_face=fixed_face),
        timed_score("sampled, 60 s 720p, budget", minute, checkpoint, 60.0, **opts),
        timed_score(f"sampled, 60 s 720p, {settled} segments", minute, checkpoint, 60.0,
                    "--max-segments", str(settled), **opts),
        timed_score(f"sampled, {loops} min 720p, budget", long, checkpoint, 60.0 * loops,
                    **opts),
        timed_score(f"sampled, {loops} min 720p, {settled} segments", long, checkpoint,
                    60.0 * loops, "--max-segments", str(settled), **opts),
    ]
    if memory:
        hour = loop_clip(minute, work / "talk_60min_720p.mp4", 60)
        uhd = make_clip(work / "talk_10s_4k.mp4", 10.0, 79, 120.0, (3840, 2160))
        runs += [timed_score("sampled, 60 min 720p, budget", hour, checkpoint, 3600.0, **opts),
                 timed_score("sampled, 10 s 4K, budget", uhd, checkpoint, 10.0, **opts)]
    for run in runs:
        log(f"{run.what}: {run.seconds:.1f} s = {run.x_realtime:.3f}x real time, peak RSS "
            f"{run.peak_rss_mb:.0f} MB, {run.windows_scored} of {run.windows_available} "
            "windows scored")
    result.runs = [asdict(r) | {"x_realtime": r.x_realtime} for r in runs]
    exhaustive, long_budget, long_settled = runs[0], runs[3], runs[4]
    result.summary = {
        **result.summary,
        "speedup": exhaustive.x_realtime / long_budget.x_realtime,
        "speedup_settled": exhaustive.x_realtime / long_settled.x_realtime,
        "agreement": result.agreement,
        "fast_x_realtime": long_budget.x_realtime,
        "fast_x_realtime_settled": long_settled.x_realtime,
        "fast_60s_x_realtime": runs[1].x_realtime,
        "fast_60s_x_realtime_settled": runs[2].x_realtime,
        "exhaustive_x_realtime": exhaustive.x_realtime,
        "peak_rss_mb": max(r.peak_rss_mb for r in runs[1:]),
        "device": result.device,
        "precision": used,
        "face_detection": "fixed box" if fixed_face else "detected",
    }
    return result


COMPARED_MODELS = (("vocalist-lrs2", "VocaLiST", None), ("mtdvocalist-lrs2", "MTDVocaLiST",
                                                          "mtd-size"),
                   ("syncnet-v2", "SyncNet", "syncnet-v2-rule"))
"""(registry name, label, what :func:`~lipsync_fix.evaluation.bench_folder.checkpoint_for`
builds) of the models compared; VocaLiST's rule-weight file is written here."""


def run_model_comparison(
    work: Path,
    long_minutes: float = 10.0,
    device: str = "cpu",
    precision: str = "auto",
    log: Log = print,
    fixed_face: bool = False,
) -> dict:
    """The three sync models side by side on the same clips (see the module docstring):
    one row per model with x real time (seconds per second of video) exhaustive and
    sampled, seconds per scored window, windows scored and peak RSS."""
    if work.exists() and not work.is_dir():
        raise UsageError(f"the work folder {work} is a file; give a folder for the clips")
    work.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    used = "bf16" if autocast_dtype(dev, precision) is not None else "fp32"
    minute = work / "talk_60s_720p.mp4"
    if not minute.is_file() or (fixed_face and minute not in FACE_BOXES):
        make_clip(minute, 60.0, 77, 120.0, (1280, 720))
    twenty = work / "talk_20s_720p.mp4"
    if not twenty.is_file() or (fixed_face and twenty not in FACE_BOXES):
        make_clip(twenty, 20.0, 78, 120.0, (1280, 720))
    loops = max(1, round(long_minutes))
    long = work / f"talk_{loops}min_720p.mp4"
    if long.exists():
        long.unlink()
    loop_clip(minute, long, loops)
    opts = {"device": device, "precision": precision, "fixed_face": fixed_face}
    rows = []
    for name, label, built in COMPARED_MODELS:
        if built is None:
            checkpoint = work / "vocalist_paper_rule.pth"
            if not checkpoint.exists():
                save_checkpoint(checkpoint, golden_model())
        else:
            checkpoint = Path(checkpoint_for(built, work))
        exhaustive = timed_score(f"{label}: exhaustive, 20 s 720p", twenty, checkpoint, 20.0,
                                 "--exhaustive", **opts)
        sampled = timed_score(f"{label}: sampled, 60 s 720p", minute, checkpoint, 60.0, **opts)
        sampled_long = timed_score(f"{label}: sampled, {loops} min 720p", long, checkpoint,
                                   60.0 * loops, **opts)
        row = {
            "model": name, "label": label,
            "exhaustive_20s_x_realtime": round(exhaustive.x_realtime, 3),
            "exhaustive_windows": exhaustive.windows_scored,
            "s_per_window": round(exhaustive.seconds / max(1, exhaustive.windows_scored), 4),
            "sampled_60s_x_realtime": round(sampled.x_realtime, 3),
            "sampled_60s_windows": sampled.windows_scored,
            "sampled_long_x_realtime": round(sampled_long.x_realtime, 3),
            "sampled_long_windows": sampled_long.windows_scored,
            "peak_rss_mb": round(max(r.peak_rss_mb for r in (exhaustive, sampled,
                                                               sampled_long))),
        }
        rows.append(row)
        log(f"{label}: exhaustive 20 s {row['exhaustive_20s_x_realtime']:.2f}x real time "
            f"({row['s_per_window']:.3f} s/window, {row['exhaustive_windows']} windows); "
            f"sampled 60 s {row['sampled_60s_x_realtime']:.2f}x ({row['sampled_60s_windows']} "
            f"windows), {loops} min {row['sampled_long_x_realtime']:.3f}x "
            f"({row['sampled_long_windows']} windows); peak RSS {row['peak_rss_mb']} MB")
    return {"device": str(dev), "precision": used, "long_minutes": loops,
            "face_detection": "fixed box" if fixed_face else "detected", "models": rows}
