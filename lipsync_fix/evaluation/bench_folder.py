"""Benchmark of a folder of short clips: the folder pipeline against one process per file.

Dataset curation runs the scorer over thousands of short clips. Scripts around
syncnet_python start one process per file, so every clip pays for starting Python, torch
and the model; ``lipsync-fix score FOLDER`` loads the model once and, with its worker
processes, reads the next clips while one is scored. Measured side by side in one run,
on the same clips and model, each way a child process tree whose wall time and peak
memory (the resident set of the whole tree, workers and ffmpeg included, sampled from
``/proc``) are its own:

* **per file** - ``lipsync-fix score CLIP`` once per clip, one after the other;
* **one process** - ``lipsync-fix score FOLDER --workers 0``: the model loaded once, the
  clips read one after the other;
* **pipeline** - ``lipsync-fix score FOLDER``: the same with the front-end workers.

The clips are generated talking heads (``--clips`` clips of ``--seconds``, 256x256 or
``--size``) unless a folder is named. The model is a registry name or path, or
``mtd-size`` (MTDVocaLiST, 13.3M parameters, with the golden rule's weights: the cost of
that model, not its accuracy) or ``syncnet-v2-rule`` (the original SyncNet with
the golden rule's weights, no download). The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lipsync_fix import media
from lipsync_fix.batch import find_videos
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.evaluation.bench_lse import benchmark_model
from lipsync_fix.evaluation.golden import rule_weights
from lipsync_fix.models import MTDVocaLiST, save_checkpoint

Log = Callable[[str], None]

BUILT_MODELS = ("mtd-size", "syncnet-v2-rule")


@dataclass
class Way:
    """One way of scoring the folder, timed."""

    name: str
    seconds: float
    clips: int
    video_s: float
    peak_rss_mb: float
    failed: int
    command: str

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds

    @property
    def s_per_clip(self) -> float:
        return self.seconds / self.clips

    @property
    def times_real_time(self) -> float:
        """Seconds of video scored per second of wall time."""
        return self.video_s / self.seconds

    def to_json(self) -> dict:
        return asdict(self) | {"clips_per_s": round(self.clips_per_s, 4),
                               "s_per_clip": round(self.s_per_clip, 4),
                               "times_real_time": round(self.times_real_time, 4)}


@dataclass
class FolderBenchmark:
    model: str
    command: str
    device: str
    clips: int
    video_s: float
    ways: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def make_folder(folder: Path, clips: int, seconds: float, size: int, seed: int = 900
                ) -> list[Path]:
    """``clips`` generated talking heads of ``seconds`` (kept for reruns)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(clips):
        path = folder / f"clip{k:03d}_{seconds:g}s_{size}.mp4"
        if not path.is_file():
            head = make_talking_head(seed + k, duration_s=seconds, size=(size, size),
                                     audio_delay_ms=40.0 * (k % 7 - 3))
            media.write_video(path, head.frames, head.fps, audio=head.audio,
                              sample_rate=16000)
        paths.append(path)
    return paths


def checkpoint_for(model: str, work: Path) -> str:
    """A checkpoint the child processes can load: the name or path as given, or a file
    written for the built models."""
    if model == "mtd-size":
        path = work / "mtd_size_rule.pth"
        if not path.is_file():
            mtd = MTDVocaLiST()
            mtd.load_state_dict(rule_weights(mtd))
            save_checkpoint(path, mtd.eval())
        return str(path)
    if model == "syncnet-v2-rule":
        path = work / "syncnet_v2_rule.model"
        if not path.is_file():
            state = {k: v for k, v in benchmark_model().state_dict().items()
                     if not k.endswith("num_batches_tracked")}
            torch.save(state, path)
        return str(path)
    return model


def _tree_rss_kb(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, in KiB (from ``/proc``)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/statm") as f:
                pages = int(f.read().split()[1])
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        rss[pid] = pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
    total, todo = 0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_tree(command: Sequence[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run ``command``; its wall time, the peak resident memory of its process tree (MB,
    sampled every 20 ms), and its stdout."""
    start = time.perf_counter()
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env=env)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_kb(process.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = process.communicate()[0].decode()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return seconds, peak[0] / 1024, stdout


def _failed(stdout: str) -> int:
    return sum("error" in json.loads(line) for line in stdout.splitlines() if line.strip())


def run_folder_benchmark(
    work: Path,
    *,
    folder: Path | None = None,
    clips: int = 12,
    seconds: float = 3.0,
    size: int = 256,
    model: str = "demo-small",
    command: str = "score",
    device: str = "cpu",
    workers: int | None = None,
    per_file: bool = True,
    per_file_clips: int | None = None,
    extra: Sequence[str] = (),
    log: Log = print,
) -> FolderBenchmark:
    """Everything in the module docstring; ``work`` holds the generated clips and
    models. ``per_file_clips`` times one process per file on only that many clips (its
    figures are per clip, so they compare; a GPU's per-process start makes the whole
    folder slow). ``extra`` options go to every ``lipsync-fix`` command."""
    work.mkdir(parents=True, exist_ok=True)
    if folder is None:
        folder = work / f"clips_{clips}x{seconds:g}s_{size}"
        paths = make_folder(folder, clips, seconds, size)
    else:
        paths = find_videos(folder)
    if not paths:
        raise ValueError(f"no videos in {folder}")
    if command not in BENCH_COMMANDS:
        raise ValueError(f"bench folder runs {' or '.join(BENCH_COMMANDS)}, not {command!r}")
    checkpoint = checkpoint_for(model, work)
    base = [sys.executable, "-m", "lipsync_fix", command, "-c", checkpoint, "--json", "-q",
            "--device", device, *extra]
    ways: list[Way] = []

    durations = {p: float(media.probe(p).duration_s or 0.0) for p in paths}

    def record(name: str, seconds_: float, rss: float, failed: int, shown: str,
               some: Sequence[Path] = paths) -> None:
        ways.append(Way(name, seconds_, len(some), sum(durations[p] for p in some), rss,
                        failed, shown))
        w = ways[-1]
        log(f"{name}: {w.seconds:.1f} s, {w.s_per_clip:.2f} s per clip, "
            f"{w.clips_per_s:.2f} clips/s, {w.times_real_time:.2f}x real time, peak RSS "
            f"{w.peak_rss_mb:.0f} MB, {failed} failed")

    if per_file:
        total = peak = 0.0
        failed = 0
        some = paths[:per_file_clips] if per_file_clips else paths
        for path in some:
            took, rss, out = run_tree([*base, str(path)])
            total, peak, failed = total + took, max(peak, rss), failed + _failed(out)
        record("per file", total, peak, failed, " ".join([*base[2:], "CLIP"]), some)
    runs = [("one process", [])]  # lse reads no clips ahead: one way in one process
    if command == "score":
        runs = [("one process", ["--workers", "0"]),
                ("pipeline", ["--workers", str(workers)] if workers is not None else [])]
    for name, options in runs:
        took, rss, out = run_tree([*base, *options, str(folder)])
        record(name, took, rss, _failed(out), " ".join([*base[2:], *options, "FOLDER"]))
    result = FolderBenchmark(model=model, command=command, device=device,
                             clips=len(paths), video_s=round(sum(durations.values()), 3),
                             ways=[w.to_json() for w in ways])
    by_name = {w.name: w for w in ways}
    best = by_name.get("pipeline", by_name["one process"])
    result.summary = {
        "clips_per_s": round(best.clips_per_s, 4),
        "s_per_clip": round(best.s_per_clip, 4),
        "times_real_time": round(best.times_real_time, 4),
        "peak_rss_mb": round(best.peak_rss_mb, 1),
        "speedup_vs_per_file": round(best.clips_per_s / by_name["per file"].clips_per_s, 3)
        if "per file" in by_name else None,
        "speedup_vs_one_process": round(best.clips_per_s / by_name["one process"].clips_per_s,
                                        3),
        "model": model,
        "device": device,
    }
    return result


BENCH_COMMANDS = ("score", "lse")
