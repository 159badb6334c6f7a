"""The benchmarks of the main job (``bench scorer``, ``bench main-job``, ``bench folder``):
each prints ratios measured side by side in one run. ``bench lse`` lives with ``lse``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lipsync_fix.cli.app import (
    Device,
    Json,
    bench_app,
    note,
    print_json,
    say,
)
from lipsync_fix.compute import resolve_device
from lipsync_fix.errors import UsageError
from lipsync_fix.evaluation.bench_folder import BENCH_COMMANDS, run_folder_benchmark
from lipsync_fix.evaluation.bench_main_job import run_main_job_benchmark, run_model_comparison
from lipsync_fix.evaluation.bench_scorer import run_scorer_benchmark


@bench_app.command("scorer")
def bench_scorer(
    preset: Annotated[str, typer.Option(help="Model size: paper, small or tiny.")] = "paper",
    duration: Annotated[float, typer.Option(
        min=1.0, max=600.0, help="Seconds of generated clip.")] = 4.0,
    reference_windows: Annotated[int, typer.Option(
        min=0, help="Windows scored in reference mode (0 = all).")] = 6,
    device: Device = "auto",
    json_line: Json = False,
) -> None:
    """Reference (whole model per pair) vs cached scoring: seconds per window and ratio."""
    result = run_scorer_benchmark(preset, duration, reference_windows or None,
                                  str(resolve_device(device)))
    if json_line:
        print_json(result.to_json())
        return
    say(f"model {preset}, device {result.device}, {result.windows} windows")
    say(f"reference: {result.reference_s_per_window:.3f} s/window "
        f"({result.reference_windows} windows)")
    say(f"cached:    {result.cached_s_per_window:.4f} s/window")
    say(f"speedup:   {result.speedup:.1f}x, offsets identical: {result.offsets_identical} "
        f"({result.offsets_compared} rows with a clear best), "
        f"max score difference {result.max_abs_score_diff:.2e}")
    say(f"achieved {result.gflops:.1f} GFLOP/s; measured matmul {result.matmul_gflops:.1f}")
    say(f"bf16:      {result.bf16_s_per_window:.4f} s/window, {result.bf16_speedup:.2f}x "
        f"float32; same best shift on {100 * result.bf16_offsets_agree:.0f}% of clear "
        f"rows; {result.bf16_gflops:.1f} GFLOP/s = {100 * result.bf16_peak_share:.0f}% "
        f"of the measured bf16 matmul rate ({result.bf16_matmul_gflops:.0f} GFLOP/s)")
    if result.speedup <= 1:
        note(f"warning: cached scoring was not faster than reference scoring here "
             f"({result.speedup:.2f}x); timings on a busy machine are unreliable")


@bench_app.command("main-job")
def bench_main_job(
    work_dir: Annotated[Path, typer.Option(
        help="Where the generated clips are written (kept for reruns).")] =
        Path("bench_main_job"),
    long_minutes: Annotated[float, typer.Option(
        min=1.0, max=120.0, help="Length of the long 720p clip, in minutes.")] = 10.0,
    sweep: Annotated[bool, typer.Option(
        help="Also run the accuracy sweep with the bundled model.")] = True,
    memory: Annotated[bool, typer.Option(
        help="Also measure peak RSS on an hour of 720p and on a 4K clip.")] = False,
    device: Device = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16 for the fast runs.")] =
        "auto",
    fixed_face: Annotated[bool, typer.Option(
        help="Give the long runs the clips' known face box (no face detection timed).")] =
        False,
    front_end: Annotated[bool, typer.Option(
        help="Also time the front end alone on 20 s of 720p and 1080p.")] = True,
    front_end_only: Annotated[bool, typer.Option(
        help="Time only the front end (a minute, not an hour).")] = False,
    compare_models: Annotated[bool, typer.Option(
        help="Instead, time VocaLiST, MTDVocaLiST and syncnet-v2 (rule weights) side by "
             "side on the same clips.")] = False,
    json_line: Json = False,
) -> None:
    """The default (sampled) estimate against scoring every window: accuracy on known
    delays, time per second of video, peak memory; or, with --compare-models, the three
    sync models side by side."""
    if compare_models:
        compared = run_model_comparison(work_dir, long_minutes, device, precision, log=note,
                                        fixed_face=fixed_face)
        if not json_line:
            say(f"device {compared['device']}, precision {compared['precision']}")
            for row in compared["models"]:
                say(f"{row['label']:<12} exhaustive 20 s {row['exhaustive_20s_x_realtime']:.2f}x"
                    f" ({row['s_per_window']:.3f} s/window); sampled 60 s "
                    f"{row['sampled_60s_x_realtime']:.2f}x ({row['sampled_60s_windows']} "
                    f"windows), {compared['long_minutes']} min "
                    f"{row['sampled_long_x_realtime']:.3f}x ({row['sampled_long_windows']} "
                    f"windows); peak RSS {row['peak_rss_mb']} MB")
        print_json(compared)
        return
    result = run_main_job_benchmark(work_dir, long_minutes, device, precision, sweep, memory,
                                    log=note, fixed_face=fixed_face, front_end=front_end,
                                    front_end_only=front_end_only)
    s = result.summary
    if json_line:
        print_json(s)
        return
    for run in result.front_end:
        say(f"{run['what']}: {run['fps']:.0f} frames/s, {run['times_real_time']:.2f}x "
            f"real time")
    if front_end_only:
        print_json(s)
        return
    say(f"device {result.device}, precision {result.precision}")
    if sweep:
        say(f"sweep: {result.sweep_clips} clips; within one frame of the truth: sampled "
            f"{100 * result.fast_within_frame:.0f}%, exhaustive "
            f"{100 * result.exhaustive_within_frame:.0f}%; they agree on "
            f"{100 * result.agreement:.0f}%; median segments scored "
            f"{result.segments_needed_median:g}")
    say(f"exhaustive: {s['exhaustive_x_realtime']:.2f}x real time; sampled: "
        f"{s['fast_x_realtime']:.3f}x at its budget, {s['fast_x_realtime_settled']:.3f}x "
        f"when settled ({s['speedup']:.1f}x / {s['speedup_settled']:.1f}x faster); "
        f"60 s clip {s['fast_60s_x_realtime']:.2f}x / "
        f"{s['fast_60s_x_realtime_settled']:.2f}x; peak RSS {s['peak_rss_mb']:.0f} MB")


@bench_app.command("folder")
def bench_folder(
    folder: Annotated[Path | None, typer.Option(
        help="A folder of clips to score [default: generated clips].")] = None,
    work_dir: Annotated[Path, typer.Option(
        help="Where generated clips and built models are written (kept for reruns).")] =
        Path("bench_folder"),
    clips: Annotated[int, typer.Option(min=1, help="Generated clips.")] = 12,
    seconds: Annotated[float, typer.Option(
        min=1.2, max=600.0, help="Length of each generated clip.")] = 3.0,
    size: Annotated[int, typer.Option(
        min=96, max=4096, help="Side of the generated square frames.")] = 256,
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", "-c",
        help="Registry name or path; mtd-size (MTDVocaLiST's widths, random weights) or "
             "syncnet-v2-rule (SyncNet with the golden rule's weights) are built here.")] =
        "demo-small",
    command: Annotated[str, typer.Option(help="score or lse.")] = "score",
    workers: Annotated[int | None, typer.Option(
        min=0, help="Front-end workers of the pipeline [default: the machine's].")] = None,
    per_file: Annotated[bool, typer.Option(
        help="Also run one process per file (the slowest way).")] = True,
    per_file_clips: Annotated[int | None, typer.Option(
        min=1, help="Run one process per file on only this many clips (figures per "
                    "clip) [default: all].")] = None,
    device: Device = "auto",
    json_line: Json = False,
) -> None:
    """A folder of short clips: the folder pipeline against one process per file and one
    process without workers, side by side (clips per second, x real time, peak RSS)."""
    if command not in BENCH_COMMANDS:
        raise UsageError(f"--command must be {' or '.join(BENCH_COMMANDS)}, not {command!r}")
    if folder is not None and not folder.is_dir():
        raise UsageError(f"--folder {folder} is not a folder")
    device = str(resolve_device(device))
    result = run_folder_benchmark(work_dir, folder=folder, clips=clips, seconds=seconds,
                                  size=size, model=checkpoint, command=command,
                                  device=device, workers=workers, per_file=per_file,
                                  per_file_clips=per_file_clips, log=note)
    if json_line:
        print_json(result.to_json())
        return
    s = result.summary
    say(f"{result.clips} clips, {result.video_s:.0f} s of video, {checkpoint}, {command}, "
        f"device {device}")
    for way in result.ways:
        say(f"{way['name']:12s} {way['s_per_clip']:.2f} s per clip, "
            f"{way['clips_per_s']:.2f} clips/s, {way['times_real_time']:.2f}x real time, "
            f"peak RSS {way['peak_rss_mb']:.0f} MB")
    if s["speedup_vs_per_file"] is not None:
        say(f"best: {s['speedup_vs_per_file']:.2f}x the clips per second of one process "
            f"per file, {s['speedup_vs_one_process']:.2f}x one process without workers")
    print_json(s)
