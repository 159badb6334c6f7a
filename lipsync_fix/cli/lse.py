"""``lse`` (LSE-D and LSE-C of videos, as talking-head papers report them) and
``bench lse`` (our pipeline against a frame-by-frame one like the reference's)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from lipsync_fix import batch
from lipsync_fix.cli.app import (
    Checkpoint,
    Detector,
    Device,
    FaceBox,
    Force,
    Inputs,
    Json,
    Quiet,
    Report,
    Session,
    Shard,
    app,
    bench_app,
    check_face_box,
    count,
    echo_record,
    load_named_model,
    model_identity,
    note,
    print_json,
    progress_bar,
    say,
)
from lipsync_fix.compute import resolve_device
from lipsync_fix.evaluation.bench_lse import run_lse_benchmark
from lipsync_fix.lse import LSE_RECORD, MIN_TRACK, VSHIFT, LseOptions, lse_video, summarize
from lipsync_fix.models import SYNCNET_V2_FAMILY
from lipsync_fix.sync.timeline import delay_words


def _describe(record: dict) -> str:
    return (f"{record['input']}: LSE-D {record['lse_d']:.3f}, LSE-C {record['lse_c']:.3f}, "
            f"offset {record['syncnet_offset']:+d} frames (syncnet_python) = "
            f"{delay_words(record['audio_delay_ms'])}")


@app.command("lse")
def lse_command(
    inputs: Inputs,
    checkpoint: Checkpoint = "syncnet-v2",
    vshift: Annotated[int, typer.Option(
        min=1, max=100, help="Shifts searched either way, in frames (papers use 15).")] = VSHIFT,
    detector: Detector = "auto",
    face_box: FaceBox = None,
    min_track: Annotated[int, typer.Option(
        min=0, help="With --detector s3fd (the reference's tracker): detections a face "
        "track needs to be scored (more than this).")] = MIN_TRACK,
    device: Device = "auto",
    json_lines: Json = False,
    report: Report = None,
    shard: Shard = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """LSE-D and LSE-C of each video (the original SyncNet's lip-sync metrics), and their
    mean and standard deviation over all the videos.

    LSE-D is the smallest mean embedding distance over +-VSHIFT frames (lower is better),
    LSE-C the median minus that minimum (higher is better). The offset is printed in
    syncnet_python's sign (positive: the audio leads) and in ours (audio_delay_ms,
    positive: the audio is late). Crops use the reference's geometry; faces come from our
    detector and tracker unless --detector s3fd, and there is no JPEG or XVID round trip,
    so numbers can differ slightly from the reference pipeline's on the same video.
    """
    dev = resolve_device(device)
    options = LseOptions(vshift=vshift, detector=str(getattr(detector, "value", detector)),
                         face_box=check_face_box(face_box), min_track=min_track,
                         device=str(dev))
    jobs = batch.select_shard(batch.plan_jobs(inputs), shard)
    if report is not None:
        batch.check_report_path(report, [j.input for j in jobs], force, LSE_RECORD)
    model = load_named_model(checkpoint, dev, family=SYNCNET_V2_FAMILY, quiet=quiet or json_lines)
    origin = {k: v for k, v in getattr(model, "origin", {"name": checkpoint}).items()
              if k in ("name", "family", "sha256")}  # which model produced the numbers
    # the options that change the numbers (not where or in what batches they are computed)
    depends = {k: v for k, v in dataclasses.asdict(options).items()
               if k not in ("device", "batch_size", "frame_memory_bytes")}
    provenance = batch.Provenance(LSE_RECORD, model_identity(model), depends)

    with progress_bar(quiet or json_lines or len(jobs) > 1) as bar:
        task = bar.add_task("", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        def work(job: batch.Job) -> dict:
            return lse_video(job.input, model, options, progress).to_json() | {"model": origin}

        result = batch.run_batch(jobs, work, report=report, provenance=provenance,
                                 force=force,
                                 on_record=lambda job, record: echo_record(
                                     job, record, json_lines, _describe),
                                 on_note=lambda job, message: note(message),
                                 reraise=Session.debug)
    summary = summarize(result.records)
    if json_lines:
        print_json({"summary": summary})
    elif summary["videos"]:
        failed = f", {summary['failed']} failed" if summary["failed"] else ""
        say(f"LSE-D {summary['lse_d_mean']:.3f} ± {summary['lse_d_std']:.3f}, "
                  f"LSE-C {summary['lse_c_mean']:.3f} ± {summary['lse_c_std']:.3f} "
                  f"(mean ± std over {count(summary['videos'], 'video')}{failed})")
    if result.failed:
        raise typer.Exit(1)


@bench_app.command("lse")
def bench_lse(
    clips: Annotated[int, typer.Option(min=1, max=50, help="Generated clips.")] = 2,
    seconds: Annotated[float, typer.Option(
        min=0.5, max=60.0, help="Length of each clip.")] = 2.0,
    size: Annotated[int, typer.Option(min=128, max=1024, help="Frame side in pixels.")] = 256,
    detector: Detector = "auto",
    device: Device = "auto",
    json_line: Json = False,
) -> None:
    """Our LSE pipeline against a frame-by-frame one doing the reference's work (JPEG dump
    of every frame, detection on every frame, JPEG round trip of the crops), same model
    (rule weights), same clips, one process: seconds and ratio, and how far the numbers
    differ."""
    result = run_lse_benchmark(clips, seconds, size, detector, str(resolve_device(device)))
    if json_line:  # stdout holds the JSON alone
        print_json(result.to_json())
        return
    say(f"{count(result.clips, 'clip')} of {result.seconds_per_clip:g} s ({result.frames} "
        f"frames), device {result.device}")
    say(f"ours:           {result.ours_s:.2f} s")
    say(f"frame by frame: {result.frame_by_frame_s:.2f} s")
    say(f"speedup:        {result.speedup:.2f}x")
    say(f"same offsets: {result.offsets_equal}; largest difference LSE-D "
        f"{result.lse_d_max_diff:.4f}, LSE-C {result.lse_c_max_diff:.4f} "
        f"(of which JPEG alone: {result.jpeg_lse_d_max_diff:.4f}, "
        f"{result.jpeg_lse_c_max_diff:.4f})")
