"""The main job's commands: ``fix`` (the default), ``score``, ``shift`` and ``demo``.

Each parses its options, calls the library (:mod:`lipsync_fix.sync`,
:mod:`lipsync_fix.batch`, :mod:`lipsync_fix.demo`) and prints what came back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lipsync_fix import batch, media
from lipsync_fix.cli.app import (
    Checkpoint,
    Context,
    Detector,
    Device,
    Exhaustive,
    FaceBox,
    Force,
    Inputs,
    Json,
    MaxOffset,
    MaxSegments,
    OffsetModelName,
    Precision,
    Quiet,
    Report,
    Shard,
    app,
    err,
    out,
    print_json,
    progress_bar,
)
from lipsync_fix.compute import resolve_device
from lipsync_fix.demo import TimelineDemoResult, run_demo
from lipsync_fix.errors import UsageError
from lipsync_fix.models import load_model
from lipsync_fix.models.registry import default_model_name, default_model_notice
from lipsync_fix.sync import SyncEstimate, SyncOptions, estimate_sync, fix_video
from lipsync_fix.sync.plot import plot_scores
from lipsync_fix.sync.timeline import TimelineOptions

DefaultCheckpoint = Annotated[str | None, typer.Option(
    "--checkpoint", "-c", show_default=False,
    help="Checkpoint path or registry name [default: vocalist-lrs2 when it is in the cache, "
         "else syncnet-v2, downloaded on first use].")]


def _checkpoint_or_default(checkpoint: str | None, quiet: bool) -> str:
    """The checkpoint asked for, or the default model (saying which on stderr, one line)."""
    if checkpoint is not None:
        return checkpoint
    name = default_model_name()
    if not quiet:
        err.print(default_model_notice(name), markup=False)
    return name


def _echo(job: batch.Job, record: dict, json_lines: bool, describe) -> None:
    """One line per input: the JSON record, or a sentence (errors on stderr)."""
    if json_lines:
        print_json(record)
    elif "error" in record:
        err.print(f"[red]error:[/red] {record['error']}")
    elif record.get("skipped"):
        reason = record["skipped"]
        hint = " (use --force to redo it)" if reason == "output exists" else ""
        out.print(f"{job.input}: skipped, {reason}{hint}")
    else:
        out.print(describe(record))


def _run(jobs, work, report, force, json_lines, quiet, describe) -> None:
    with progress_bar(quiet or json_lines or len(jobs) > 1) as bar:
        task = bar.add_task("", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        result = batch.run_batch(
            jobs, lambda job: work(job, progress), report=report, force=force,
            on_record=lambda job, record: _echo(job, record, json_lines, describe),
        )
    if result.failed:
        raise typer.Exit(1)


@app.command("fix")
def fix_command(
    inputs: Inputs,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output file (one input) or folder (mirrors the inputs).")] = None,
    force: Force = False,
    apply_uncertain: Annotated[bool, typer.Option(
        help="Also fix when the estimate is uncertain.")] = False,
    checkpoint: DefaultCheckpoint = None,
    context: Context = 25,
    max_offset_ms: MaxOffset = 600.0,
    detector: Detector = "auto",
    face_box: FaceBox = None,
    device: Device = "cpu",
    precision: Precision = "auto",
    exhaustive: Exhaustive = False,
    max_segments: MaxSegments = 32,
    offset_model: OffsetModelName = "auto",
    json_lines: Json = False,
    report: Report = None,
    shard: Shard = None,
    quiet: Quiet = False,
) -> None:
    """Measure each video's audio delay and write a copy with the audio moved into sync.

    The video stream is copied bit for bit; the audio is shifted sample-exactly (trimmed
    or padded with silence, duration kept). Existing outputs are kept unless --force.
    """
    if output is None:
        raise UsageError("give an output with -o OUT (a file, or a folder for several inputs)")
    jobs = batch.select_shard(batch.plan_jobs(inputs, output), shard)
    if report is not None:
        batch.check_report_path(report, [j.input for j in jobs], force)
    if len(jobs) == 1 and jobs[0].output is not None and jobs[0].output.exists() and not force:
        raise UsageError(f"{jobs[0].output} exists; use --force to overwrite it")
    options = SyncOptions(context_frames=context, max_offset_ms=max_offset_ms,
                          detector=detector, face_box=face_box, device=device,
                          precision=precision, exhaustive=exhaustive,
                          max_segments=max_segments,
                          timeline=TimelineOptions(model=offset_model))
    model = load_model(_checkpoint_or_default(checkpoint, quiet), resolve_device(device),
                       quiet=quiet or json_lines)

    def work(job: batch.Job, progress) -> dict:
        assert job.output is not None
        estimate = estimate_sync(job.input, model, options, progress)
        fix_video(job.input, job.output, estimate, force=force, apply_uncertain=apply_uncertain)
        return estimate.to_json() | {"output": str(job.output)}

    def describe(record: dict) -> str:
        return f"{SyncEstimate.from_json(record).describe()} -> wrote {record['output']}"

    _run(jobs, work, report, force, json_lines, quiet, describe)


@app.command("score")
def score_command(
    inputs: Inputs,
    checkpoint: DefaultCheckpoint = None,
    context: Context = 25,
    max_offset_ms: MaxOffset = 600.0,
    detector: Detector = "auto",
    face_box: FaceBox = None,
    device: Device = "cpu",
    precision: Precision = "auto",
    exhaustive: Exhaustive = False,
    max_segments: MaxSegments = 32,
    offset_model: OffsetModelName = "auto",
    json_lines: Json = False,
    plot: Annotated[Path | None, typer.Option(
        help="Draw score vs offset to a PNG (a folder of PNGs for several inputs).")] = None,
    report: Report = None,
    shard: Shard = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Estimate each video's audio delay without writing a video."""
    jobs = batch.select_shard(batch.plan_jobs(inputs), shard)
    if report is not None:
        batch.check_report_path(report, [j.input for j in jobs], force)
    plots = _plot_paths(jobs, plot, force)
    options = SyncOptions(context_frames=context, max_offset_ms=max_offset_ms,
                          detector=detector, face_box=face_box, device=device,
                          precision=precision, exhaustive=exhaustive,
                          max_segments=max_segments,
                          timeline=TimelineOptions(model=offset_model))
    model = load_model(_checkpoint_or_default(checkpoint, quiet), resolve_device(device),
                       quiet=quiet or json_lines)

    def work(job: batch.Job, progress) -> dict:
        estimate = estimate_sync(job.input, model, options, progress)
        if job.input in plots:
            plot_scores(estimate, plots[job.input])
        return estimate.to_json()

    def describe(record: dict) -> str:
        return SyncEstimate.from_json(record).describe()

    _run(jobs, work, report, force, json_lines, quiet, describe)


def _plot_paths(jobs: list[batch.Job], plot: Path | None, force: bool) -> dict[Path, Path]:
    """Where each input's plot goes: ``plot`` itself for one input, else ``plot`` is a
    folder that mirrors the inputs (``PLOTS/x/clip.png``)."""
    if plot is None:
        return {}
    if len(jobs) == 1 and plot.suffix:
        if plot.suffix.lower() != ".png":
            raise UsageError(f"--plot writes a PNG image; give a name ending in .png, not {plot}")
        targets = {jobs[0].input: plot}
    else:
        if plot.suffix:
            raise UsageError(f"several inputs need --plot to name a folder, not {plot}")
        targets = {j.input: plot / j.label.with_suffix(".png") for j in jobs}
    for target in targets.values():
        if target.exists() and not force:
            raise UsageError(f"{target} exists; use --force to overwrite it")
        if len(targets) > 1:
            target.parent.mkdir(parents=True, exist_ok=True)
        elif not target.parent.is_dir():
            raise UsageError(f"the folder {target.parent} of --plot does not exist")
    return targets


@app.command("shift")
def shift_command(
    video: Annotated[Path, typer.Argument(help="Input video.")],
    audio_delay_ms: Annotated[float, typer.Option(
        help="Delay the audio by this much (negative: make it earlier).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file.")],
    force: Force = False,
    json_line: Json = False,
) -> None:
    """Apply a known shift: the output's sound comes AUDIO_DELAY_MS later than the input's."""
    done = media.shift_audio(video, output, audio_delay_ms / 1000.0, force=force)
    if json_line:
        print_json({"input": str(video), "output": str(output),
                    "applied_delay_ms": 1000 * done.applied_delay_s,
                    "shift_samples": done.shift_samples, "sample_rate": done.sample_rate})
        return
    out.print(f"wrote {output}: audio delayed by {1000 * done.applied_delay_s:.2f} ms "
              f"({done.shift_samples} samples at {done.sample_rate} Hz)")


@app.command("demo")
def demo_command(
    out_dir: Annotated[Path, typer.Option(help="Where the demo clips are written.")] =
        Path("demo_output"),
    audio_delay_ms: Annotated[float, typer.Option(help="The delay built into the clip.")] = 200.0,
    seconds: Annotated[float | None, typer.Option(
        help="Length of the generated clip (default 8 s; 60 s with a drift, 8 s a scene)."
    )] = None,
    seed: Annotated[int, typer.Option(help="Which generated speaker and sentence.")] = 2024,
    drift_ms_per_min: Annotated[float, typer.Option(
        help="Make the audio clock run fast (slow if negative): the delay grows this much a "
             "minute; the offset over time is then fitted and fixed.")] = 0.0,
    scenes: Annotated[int, typer.Option(
        help="Make this many scenes (another speaker each, hard cuts), each with its own "
             "delay; the offset per scene is then fitted and fixed.")] = 1,
    checkpoint: Checkpoint = "demo-small",
    device: Device = "cpu",
    json_line: Json = False,
    quiet: Quiet = False,
) -> None:
    """Make a talking-head clip with a known audio delay, fix it, and compare (offline)."""
    options = SyncOptions(device=device)
    model = load_model(checkpoint, resolve_device(device))
    with progress_bar(quiet or json_line) as bar:
        task = bar.add_task("demo", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        result = run_demo(model, out_dir, audio_delay_ms, seconds, seed, options, progress,
                          drift_ms_per_min=drift_ms_per_min, scenes=scenes)
    if json_line:
        print_json(result.to_json())
        return
    if isinstance(result, TimelineDemoResult):
        for line in result.lines():
            out.print(line)
        return
    est = result.estimate
    out.print(f"made    {result.clip} with the audio {audio_delay_ms:.0f} ms late")
    out.print(f"found   {est.describe()}")
    out.print(f"true {result.true_audio_delay_ms:.0f} ms, estimated {est.audio_delay_ms:.0f} ms "
              f"(off by {abs(result.residual_ms):.0f} ms = "
              f"{abs(result.residual_ms) / 40:.2f} frames)")
    out.print(f"wrote   {result.fixed} with the audio moved {est.audio_delay_ms:.0f} ms earlier")

