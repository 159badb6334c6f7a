"""The main job's commands: ``fix`` (the default), ``score``, ``shift`` and ``demo``.

Each parses its options, calls the library (:mod:`lipsync_fix.sync`,
:mod:`lipsync_fix.batch`, :mod:`lipsync_fix.demo`) and prints what came back.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated

import typer

from lipsync_fix import batch, media
from lipsync_fix.cli.app import (
    Checkpoint,
    Context,
    Detector,
    DetectorName,
    Device,
    Exhaustive,
    FaceBox,
    Force,
    Inputs,
    Json,
    MaxDelay,
    MaxSegments,
    OffsetModelName,
    Precision,
    Quiet,
    Report,
    Session,
    Shard,
    Workers,
    app,
    check_face_box,
    echo_record,
    load_named_model,
    model_identity,
    note,
    print_json,
    progress_bar,
    say,
)
from lipsync_fix.compute import autocast_dtype, resolve_device
from lipsync_fix.demo import TimelineDemoResult, check_demo, run_demo
from lipsync_fix.errors import UsageError
from lipsync_fix.features.constants import FRAME_MS
from lipsync_fix.files import unchanged_while
from lipsync_fix.models.registry import default_model_name, default_model_notice
from lipsync_fix.report.reviewed import ReviewedReport
from lipsync_fix.sync import SyncEstimate, SyncOptions, estimate_sync, fix_video
from lipsync_fix.sync.estimate import VERDICTS
from lipsync_fix.sync.pipeline import FolderEstimates
from lipsync_fix.sync.plot import plot_scores, require_matplotlib
from lipsync_fix.sync.records import FIX_RECORD, SCORE_RECORD
from lipsync_fix.sync.timeline import TimelineOptions, delay_words

DefaultCheckpoint = Annotated[str | None, typer.Option(
    "--checkpoint", "-c", show_default=False,
    help="Checkpoint path or registry name [default: vocalist-lrs2 when it is in the cache, "
         "else mtdvocalist-lrs2, downloaded on first use; offline, syncnet-v2 if cached].")]


def _checkpoint_or_default(checkpoint: str | None, quiet: bool) -> str:
    """The checkpoint asked for, or the default model (saying which on stderr, one line)."""
    if checkpoint is not None:
        return checkpoint
    name = default_model_name(quiet=quiet)
    if not quiet:
        note(default_model_notice(name))
    return name

DEFAULTS = SyncOptions()
"""The estimate's defaults: fix's and score's options default to them, written once."""

MAX_SHIFT_MS = 24 * 3600 * 1000.0  # a day: anything longer is a typo, not a delay
REPORT_THUMBNAIL_PX = 96
"""A report's rows keep one scored crop this long (a Wav2Lip crop's lower half, 96 x 48,
as it is: ~2 KB of base64 JPEG), for the review page (``report html``)."""


def _estimates(jobs, model, options: SyncOptions, report, force,
               workers: int | None) -> FolderEstimates:
    """The estimates of a batch's inputs: the next ones read ahead by worker processes
    when there are several (none for one input: nothing to overlap)."""
    ahead = batch.likely_to_run(jobs, report, force) if len(jobs) > 1 else []

    def estimate(path, model, options, progress=None):
        return estimate_sync(path, model, options, progress)

    if len(ahead) < 2:
        return FolderEstimates([], model, options, workers=0, at_once=1, estimate=estimate)
    return FolderEstimates([job.input for job in ahead], model, options, workers=workers,
                           estimate=estimate)


def _run(jobs, work, report, force, json_lines, quiet, describe,
         provenance: batch.Provenance) -> None:
    if not jobs and not quiet:
        note("this shard has no inputs (there are more shards than inputs)")
    with progress_bar(quiet or json_lines or len(jobs) > 1) as bar:
        task = bar.add_task("", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        result = batch.run_batch(
            jobs, lambda job: work(job, progress), report=report, provenance=provenance,
            force=force,
            on_record=lambda job, record: echo_record(job, record, json_lines, describe),
            on_note=lambda job, message: note(message), reraise=Session.debug,
        )
    if result.failed:
        raise typer.Exit(1)


def result_options(options: SyncOptions, **more: object) -> dict:
    """The options a journal row records: every option of the estimate except the device
    (which changes the speed, not the result), the precision as it resolves on this
    device (``auto`` is bf16 on one machine and fp32 on another), and ``more``."""
    values = dataclasses.asdict(options)
    del values["device"]
    dtype = autocast_dtype(resolve_device(options.device), options.precision)
    values["precision"] = "fp32" if dtype is None else "bf16"
    return values | more


def _sync_options(context: int, max_delay_ms: float, detector: str, face_box: str | None,
                  device: str, precision: str, exhaustive: bool, max_segments: int,
                  offset_model: str, report: Path | None = None) -> SyncOptions:
    """The estimate's options, checked (numbers, face box) before any input is read. With
    a report, each estimate keeps a thumbnail of a scored crop for the review page."""
    return SyncOptions(context_frames=context, max_delay_ms=max_delay_ms,
                       detector=str(getattr(detector, "value", detector)),
                       face_box=check_face_box(face_box), device=device,
                       precision=precision, exhaustive=exhaustive, max_segments=max_segments,
                       timeline=TimelineOptions(model=offset_model),
                       thumbnail_px=REPORT_THUMBNAIL_PX if report is not None else 0)


MEASURING_OPTIONS = {
    "checkpoint": "-c", "context": "--context", "max_delay_ms": "--max-delay-ms",
    "detector": "--detector", "face_box": "--face-box", "device": "--device",
    "precision": "--precision", "exhaustive": "--exhaustive",
    "max_segments": "--max-segments", "offset_model": "--offset-model", "workers": "--workers",
}
"""fix's options that change how an input is measured: meaningless with --from-report,
which measures nothing, so they are refused there rather than silently ignored."""


@app.command("fix")
def fix_command(
    ctx: typer.Context,
    inputs: Inputs,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output file (one input) or folder (mirrors the inputs).")] = None,
    force: Force = False,
    apply_uncertain: Annotated[bool, typer.Option(
        help="Also fix when the estimate is uncertain.")] = False,
    checkpoint: DefaultCheckpoint = None,
    context: Context = DEFAULTS.context_frames,
    max_delay_ms: MaxDelay = DEFAULTS.max_delay_ms,
    detector: Detector = DetectorName.auto,
    face_box: FaceBox = None,
    device: Device = "auto",
    precision: Precision = DEFAULTS.precision,
    exhaustive: Exhaustive = DEFAULTS.exhaustive,
    max_segments: MaxSegments = DEFAULTS.max_segments,
    offset_model: OffsetModelName = DEFAULTS.timeline.model,
    container: Annotated[str | None, typer.Option(
        help="Container of a folder run's outputs (mkv, mp4, mov, ...) [default: each "
             "input's own where lipsync-fix writes it, else mkv].")] = None,
    json_lines: Json = False,
    report: Report = None,
    shard: Shard = None,
    workers: Workers = None,
    from_report: Annotated[Path | None, typer.Option(
        "--from-report", show_default=False,
        help="Apply the estimates a reviewed score or fix report (.jsonl or .csv) recorded, "
             "without measuring (no model is loaded). Inputs found in a folder whose rows "
             "were deleted are skipped; an input that changed since it was measured is "
             "refused.")] = None,
    only: Annotated[list[str] | None, typer.Option(
        "--only", show_default=False,
        help="With --from-report: apply only the rows of this verdict (in_sync, "
             "out_of_sync, uncertain); repeat for several.")] = None,
    quiet: Quiet = False,
) -> None:
    """Measure each video's audio delay and write a copy with the audio moved into sync.

    The video stream is copied bit for bit; the audio is shifted sample-exactly (trimmed
    or padded with silence, duration kept). Existing outputs are kept unless --force.
    Whether each output can hold its input's streams is checked before that input is
    measured. With --from-report, the estimates of a reviewed report are applied as
    recorded instead of measuring again.
    """
    options = _sync_options(context, max_delay_ms, detector, face_box, device, precision,
                            exhaustive, max_segments, offset_model, report)
    verdicts = _verdicts(only, from_report)
    reviewed = None
    if from_report is not None:
        given = [flag for name, flag in MEASURING_OPTIONS.items()
                 if _given_on_command_line(ctx, name)]
        if given:
            raise UsageError(f"{', '.join(given)}: --from-report applies recorded estimates "
                             "and measures nothing")
        if report is not None and report.resolve() == from_report.resolve():
            raise UsageError(f"--report {report} is the report being applied: write this "
                             "run's report to another file")
        reviewed = ReviewedReport.read(from_report)
    if output is None:
        raise UsageError("give an output with -o OUT (a file, or a folder for several inputs)")
    if container is not None:
        media.output_suffix_for("", container)  # a container lipsync-fix writes
        if not batch.output_is_folder(inputs, output):
            raise UsageError(f"--container is for a folder of outputs; -o {output} names the "
                             "file, and its suffix says the container")
    jobs = batch.select_shard(batch.plan_jobs(
        inputs, output, force=force, check_file=media.output_container,
        suffix_of=lambda label: media.output_suffix_for(label.suffix, container)), shard)
    if report is not None:
        batch.check_report_path(report, [j.input for j in jobs], force, FIX_RECORD)
    if reviewed is not None:
        _apply_reviewed(reviewed, inputs, jobs, verdicts, apply_uncertain, report, force,
                        json_lines, quiet)
        return
    model = load_named_model(_checkpoint_or_default(checkpoint, quiet), resolve_device(device),
                             quiet=quiet or json_lines)
    provenance = batch.Provenance(FIX_RECORD, model_identity(model),
                                  result_options(options, apply_uncertain=apply_uncertain))

    def work(job: batch.Job, progress) -> dict:
        assert job.output is not None
        # the container's own check, before minutes of measuring
        media.check_rewrite(job.input, job.output, force, folder_made_later=True)
        estimate = estimates.estimate(job.input, progress, job.fingerprint)
        job.check_unchanged()  # the fix must be made of the file that was measured
        fix_video(job.input, batch.make_output_folder(job.output), estimate, force=force,
                  apply_uncertain=apply_uncertain)
        return estimate.to_json() | {"output": str(job.output)}

    def describe(record: dict) -> str:
        return f"{SyncEstimate.from_json(record).describe()} -> wrote {record['output']}"

    with _estimates(jobs, model, options, report, force, workers) as estimates:
        _run(jobs, work, report, force, json_lines, quiet, describe, provenance)


def _given_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was typed (not left at its default). Typer keeps click's
    ParameterSource in a private module, so the source is compared by its name."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _verdicts(only: list[str] | None, from_report: Path | None) -> frozenset[str]:
    """The verdicts ``--only`` names, checked; empty for all."""
    chosen = frozenset(only or ())
    if chosen and from_report is None:
        raise UsageError("--only chooses rows of a reviewed report: use it with --from-report")
    unknown = sorted(chosen - set(VERDICTS))
    if unknown:
        raise UsageError(f"--only {unknown[0]}: a verdict is one of {', '.join(VERDICTS)}")
    return chosen


def _apply_reviewed(reviewed: ReviewedReport, inputs: list[Path], jobs: list[batch.Job],
                    verdicts: frozenset[str], apply_uncertain: bool, report: Path | None,
                    force: bool, json_lines: bool, quiet: bool) -> None:
    """fix --from-report: each input's recorded estimate, applied by the same fix_video,
    through the same batch rules (mirroring, atomic outputs, journal, --force)."""
    named = {path.resolve() for path in inputs if not path.is_dir()}
    # a rerun reuses what it wrote only while the review it applied is the same
    provenance = batch.Provenance(FIX_RECORD, {}, {
        "from_report": reviewed.sha256, "only": sorted(verdicts),
        "apply_uncertain": apply_uncertain})

    def work(job: batch.Job, progress) -> dict:
        assert job.output is not None
        decision = reviewed.decide(job, job.input.resolve() in named, verdicts)
        if decision.estimate is None:
            return {"input": str(job.input), "skipped": decision.skipped}
        media.check_rewrite(job.input, job.output, force, folder_made_later=True)
        fix_video(job.input, batch.make_output_folder(job.output), decision.estimate,
                  force=force, apply_uncertain=apply_uncertain)
        return decision.estimate.to_json() | {"output": str(job.output)}

    def describe(record: dict) -> str:
        return (f"applied {SyncEstimate.from_json(record).describe()} -> wrote "
                f"{record['output']}")

    _run(jobs, work, report, force, json_lines, quiet, describe, provenance)


@app.command("score")
def score_command(
    inputs: Inputs,
    checkpoint: DefaultCheckpoint = None,
    context: Context = DEFAULTS.context_frames,
    max_delay_ms: MaxDelay = DEFAULTS.max_delay_ms,
    detector: Detector = DetectorName.auto,
    face_box: FaceBox = None,
    device: Device = "auto",
    precision: Precision = DEFAULTS.precision,
    exhaustive: Exhaustive = DEFAULTS.exhaustive,
    max_segments: MaxSegments = DEFAULTS.max_segments,
    offset_model: OffsetModelName = DEFAULTS.timeline.model,
    json_lines: Json = False,
    plot: Annotated[Path | None, typer.Option(
        help="Draw the score by delay and the offsets over time to a PNG (a folder of "
             "PNGs, mirroring the inputs, for several inputs; needs matplotlib).")] = None,
    report: Report = None,
    shard: Shard = None,
    force: Force = False,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Estimate each video's audio delay without writing a video."""
    if plot is not None:
        require_matplotlib()
    options = _sync_options(context, max_delay_ms, detector, face_box, device, precision,
                            exhaustive, max_segments, offset_model, report)
    jobs = batch.select_shard(
        batch.plan_jobs(inputs, plot, tag="", suffix=".png", force=force, option="--plot"),
        shard)
    if report is not None:
        batch.check_report_path(report, [j.input for j in jobs], force, SCORE_RECORD)
    model = load_named_model(_checkpoint_or_default(checkpoint, quiet), resolve_device(device),
                             quiet=quiet or json_lines)
    provenance = batch.Provenance(SCORE_RECORD, model_identity(model), result_options(options))

    def work(job: batch.Job, progress) -> dict:
        estimate = estimates.estimate(job.input, progress, job.fingerprint)
        if job.output is None:
            return estimate.to_json()
        job.check_unchanged()
        plot_scores(estimate, batch.make_output_folder(job.output))
        return estimate.to_json() | {"plot": str(job.output)}

    def describe(record: dict) -> str:
        line = SyncEstimate.from_json(record).describe()
        return f"{line} -> plot {record['plot']}" if record.get("plot") else line

    with _estimates(jobs, model, options, report, force, workers) as estimates:
        _run(jobs, work, report, force, json_lines, quiet, describe, provenance)


@app.command("shift")
def shift_command(
    video: Annotated[Path, typer.Argument(help="Input video.")],
    audio_delay_ms: Annotated[float, typer.Option(
        help="Delay the audio by this much (negative: make it earlier).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file.")],
    force: Force = False,
    json_line: Json = False,
    quiet: Quiet = False,
) -> None:
    """Apply a known shift: the output's sound comes AUDIO_DELAY_MS later than the input's."""
    if not (math.isfinite(audio_delay_ms) and abs(audio_delay_ms) <= MAX_SHIFT_MS):
        raise UsageError(f"--audio-delay-ms must be a number of milliseconds within "
                         f"+-{MAX_SHIFT_MS:.0f}, got {audio_delay_ms}")
    if video.is_dir():
        raise UsageError(f"shift takes one video file, not the folder {video}")
    if output.is_dir():
        raise UsageError(f"-o {output} is a folder; shift writes one video file")
    # the same rules and words as fix's, and the container check remuxing makes
    batch.check_output(output, force=force, check_file=media.output_container)
    with unchanged_while(video, output):
        done = media.shift_audio(video, output, audio_delay_ms / 1000.0, force=force)
    if json_line:
        print_json({"input": str(video), "output": str(output),
                    "applied_delay_ms": 1000 * done.applied_delay_s,
                    "shift_samples": done.shift_samples, "sample_rate": done.sample_rate})
        return
    if quiet:
        return
    say(f"wrote {output}: audio delayed by {1000 * done.applied_delay_s:.2f} ms "
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
    device: Device = "auto",
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the files of an earlier demo in --out-dir.")] = False,
    json_line: Json = False,
    quiet: Quiet = False,
) -> None:
    """Make a talking-head clip with a known audio delay, fix it, and compare (offline)."""
    options = SyncOptions(device=device)
    resolve_device(device)
    # refused before the model loads
    check_demo(out_dir, audio_delay_ms, seconds, options, drift_ms_per_min, scenes, force)
    model = load_named_model(checkpoint, resolve_device(device), quiet=quiet or json_line)
    with progress_bar(quiet or json_line) as bar:
        task = bar.add_task("demo", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        result = run_demo(model, out_dir, audio_delay_ms, seconds, seed, options, progress,
                          drift_ms_per_min=drift_ms_per_min, scenes=scenes, force=force)
    if json_line:
        print_json(result.to_json())
        return
    if isinstance(result, TimelineDemoResult):
        for line in result.lines():
            say(line)
        return
    est = result.estimate
    say(f"made    {result.clip} with the {delay_words(audio_delay_ms)}")
    say(f"found   {est.describe()}")
    say(f"true {result.true_audio_delay_ms:.0f} ms, estimated {_ms(est.audio_delay_ms)} "
        f"(off by {abs(result.residual_ms):.0f} ms = {abs(result.residual_ms) / FRAME_MS:.2f} "
        "frames)")
    say(f"wrote   {result.fixed} with the audio moved {_ms(abs(est.audio_delay_ms))} "
        f"{'earlier' if est.audio_delay_ms >= 0 else 'later'}")


def _ms(value: float) -> str:
    """Milliseconds as a person reads them: no "-0 ms"."""
    return f"{round(value)} ms"

