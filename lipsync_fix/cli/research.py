"""Commands for reproducing the paper and for data: ``check``, ``synth``, ``preprocess``,
``train``, ``export``, ``eval``, ``bench`` and ``report merge``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lipsync_fix import batch
from lipsync_fix.cli.app import (
    Detector,
    DetectorName,
    Device,
    Force,
    Json,
    Quiet,
    Shard,
    app,
    bench_app,
    count,
    load_named_model,
    note,
    out,
    print_error,
    print_json,
    progress_bar,
    report_app,
    say,
)
from lipsync_fix.compute import resolve_device
from lipsync_fix.data.preprocess import preprocess_folder
from lipsync_fix.data.synth import write_synthetic_dataset
from lipsync_fix.errors import OutputError, OutputExistsError, UsageError
from lipsync_fix.evaluation.bench_folder import BENCH_COMMANDS, run_folder_benchmark
from lipsync_fix.evaluation.bench_main_job import run_main_job_benchmark, run_model_comparison
from lipsync_fix.evaluation.bench_scorer import run_scorer_benchmark
from lipsync_fix.evaluation.golden import check_against_reference
from lipsync_fix.evaluation.lse import LSE_RECORD
from lipsync_fix.evaluation.protocols import EvalResult, evaluate_folder, get_protocol, write_result
from lipsync_fix.models import export_for_inference, sha256_of
from lipsync_fix.sync.records import FIX_RECORD, SCORE_RECORD
from lipsync_fix.sync.scoring import ScoreOptions
from lipsync_fix.training import TrainConfig, train
from lipsync_fix.training.distributed import process_group

SCORE_MODES = ("cached", "reference")


@app.command("check")
def check_command(device: Device = "auto", json_line: Json = False) -> None:
    """Score the clip the authors' code scored, with the same weights, and compare.

    A self-test of this installation (torch, features, model, scorer, protocols): it must
    reproduce the reference's score matrix and accuracy lines."""
    result = check_against_reference(device=str(resolve_device(device)))
    if json_line:
        print_json({"passed": result.passed, "max_score_error": result.max_score_error,
                    "seconds": round(result.seconds, 2)})
    else:
        say(f"scored the reference clip (27 windows x 31 shifts) in {result.seconds:.1f} s")
        say(f"largest score difference from the authors' code: "
            f"{result.max_score_error:.2e} (tolerance 1e-3); out-of-range cells "
            f"{'identical' if result.out_of_range_identical else 'DIFFER'}")
        for name, (ours, ref) in result.lines.items():
            say(f"{name:9s} ours {ours}\n{'':9s} ref  {ref}")
        say("PASS" if result.passed else "FAIL")
    if not result.passed:
        raise typer.Exit(1)


@app.command("synth")
def synth_command(
    out_dir: Annotated[Path, typer.Argument(help="Data root to write.")],
    clips: Annotated[int, typer.Option(min=1, help="Number of generated clips.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the whole dataset.")] = 0,
    seconds: Annotated[float, typer.Option(
        min=1.2, max=600.0, help="Length of each clip.")] = 4.0,
    force: Force = False,
    json_line: Json = False,
    quiet: Quiet = False,
) -> None:
    """Write generated talking-head clips in the authors' layout, with train/val/test lists.

    Crops come from the same face detector and cropper as the main job."""
    with progress_bar(quiet) as bar:
        task = bar.add_task("clips", total=clips)
        write_synthetic_dataset(out_dir, clips, seed, seconds, force=force,
                                on_done=lambda done, total: bar.update(task, completed=done))
    if json_line:
        print_json({"output": str(out_dir), "clips": clips, "seed": seed, "seconds": seconds})
    elif not quiet:
        say(f"wrote {count(clips, 'clip')} to {out_dir}")


@app.command("preprocess")
def preprocess_command(
    raw_dir: Annotated[Path, typer.Argument(help="Folder of videos (searched recursively).")],
    out_dir: Annotated[Path, typer.Argument(help="Data root to write clip folders into.")],
    workers: Annotated[int, typer.Option(min=1, help="Videos processed in parallel.")] = 1,
    detector: Detector = DetectorName.auto,
    shard: Shard = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Make again the clips of videos that changed since (or that were "
                        "made with other options).")] = False,
    json_lines: Json = False,
    quiet: Quiet = False,
) -> None:
    """Videos -> the authors' layout (25 fps face crops + 16 kHz audio); resumable.

    Exits 1 when a video could not be used (each one is an error line); clips finished by
    an earlier run from the same video with the same options are skipped, and clips that
    are out of date are named (remade with --force)."""
    if not raw_dir.is_dir():
        raise UsageError(f"{raw_dir} is not a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file; preprocess writes clip folders into a folder")
    if not out_dir.exists() and not out_dir.parent.is_dir():
        raise UsageError(f"the folder {out_dir.parent} does not exist; create it first")
    with progress_bar(quiet or json_lines) as bar:
        task = bar.add_task("videos", total=None)
        summary = preprocess_folder(
            raw_dir, out_dir, detector.value, workers, shard=shard,
            on_done=lambda done, total, _: bar.update(task, completed=done, total=total),
            force=force,
        )
    for item in summary.done:
        if json_lines:
            print_json(item)
    for item in summary.skipped:
        if json_lines:
            print_json(item | {"skipped": item["reason"]})
        elif not quiet:
            note(f"skipped {item['input']}: {item['reason']}")
    for item in summary.failed:
        print_error(f"{item['input']}: {item['error']}")
        if json_lines:
            print_json(item)
    if not json_lines:
        say(f"{count(len(summary.done), 'clip')} written to {out_dir}, {len(summary.skipped)} done "
            f"earlier, {len(summary.failed)} failed")
    if summary.failed:
        raise typer.Exit(1)


@app.command("train")
def train_command(
    data_root: Annotated[Path, typer.Option(help="Data root in the authors' layout.")],
    run_dir: Annotated[Path, typer.Option(
        "--out", help="Run folder: checkpoints, last.pth, metrics.")],
    preset: Annotated[str | None, typer.Option(
        help="Model size: paper, small or tiny [default: paper].")] = None,
    model: Annotated[str | None, typer.Option(
        help="Model family: vocalist, or syncnet (the SyncNet* baseline) [default: vocalist].",
    )] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps.")] = None,
    config: Annotated[Path | None, typer.Option(help="JSON/TOML file of settings.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Samples per optimizer step.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Adam learning rate.")] = None,
    window_frames: Annotated[int | None, typer.Option(
        min=1, help="Frames per input window T (5; 10 or 25 for 'Var' models).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, ...")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pth.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Start afresh in an OUT that holds a run (its files are replaced).")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Train VocaLiST or SyncNet* (BCE, Adam); under torchrun, DDP on every rank.

    An OUT that holds a run already is refused unless --resume (continue it) or --force."""
    if preset is None and config is None:
        preset = "paper"
    given = {"data_root": str(data_root), "out_dir": str(run_dir), "preset": preset,
             "model": model, "steps": steps, "batch_size": batch_size, "lr": lr,
             "window_frames": window_frames, "device": device, "resume": resume or None,
             "force": force or None, "quiet": quiet or None}
    overrides = {k: v for k, v in given.items() if v is not None}
    try:
        cfg = TrainConfig.from_file(config, **overrides) if config else \
            TrainConfig.from_dict({}, **overrides)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    last = train(cfg)
    say(f"wrote {last}")


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="A training checkpoint (e.g. RUN/last.pth).")],
    output: Annotated[Path, typer.Argument(help="Where to write the inference-only copy.")],
    force: Force = False,
) -> None:
    """Write an inference-only copy of a checkpoint (for sharing or bundling).

    Optimizer and RNG state are dropped; the sha256 is printed for a registry entry."""
    if not checkpoint.is_file():
        raise UsageError(f"checkpoint file {checkpoint} does not exist")
    if output.is_dir():
        raise UsageError(f"{output} is a folder; give the file to write")
    if output.exists() and not force:
        raise OutputExistsError(f"{output} exists; use --force to overwrite it")
    if output.resolve() == checkpoint.resolve():
        raise UsageError(f"{output} is the checkpoint being exported; write another file")
    if not output.parent.is_dir():
        raise OutputError(f"the folder {output.parent} of {output} does not exist; create it "
                          "first")
    export_for_inference(checkpoint, output)
    say(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, sha256 {sha256_of(output)})")


@app.command("eval")
def eval_command(
    data_root: Annotated[Path, typer.Option(help="Root of preprocessed clips (authors' layout).")],
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", "-c", help="Checkpoint path or registry name.")],
    protocol: Annotated[str, typer.Option(help="Metrics: lrs2 (speech) or acappella.")] = "lrs2",
    split: Annotated[str, typer.Option(help="Filelist split under DATA_ROOT/filelists.")] = "test",
    mode: Annotated[str, typer.Option(help="cached (fast) or reference (per pair).")] = "cached",
    json_out: Annotated[Path | None, typer.Option(
        "--json-out", help="Also write the results as JSON to this file.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write results as CSV.")] = None,
    json_line: Json = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N clips.")] =
        None,
    var: Annotated[bool, typer.Option(
        "--var", help="Context-specific model: evaluate at its own window length only.")] = False,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Reproduce the paper's sync accuracy tables on preprocessed clips."""
    proto = get_protocol(protocol)
    if mode not in SCORE_MODES:
        raise UsageError(f"--mode is {' or '.join(SCORE_MODES)}, not {mode!r}")
    if not data_root.is_dir():
        raise UsageError(f"data root {data_root} is not a folder")
    for target, suffix, option in ((json_out, ".json", "--json-out"), (csv_out, ".csv", "--csv")):
        if target is not None:
            batch.check_output(target, suffix=suffix, force=force, option=option)
    dev = resolve_device(device)
    running = EvalResult(proto.name)
    # Under torchrun every rank scores its share of the clips; rank 0 reports the table.
    with process_group(dev.type == "cuda") as ranks, \
            progress_bar(quiet or json_line or not ranks.main) as bar:
        model = load_named_model(checkpoint, dev)
        task = bar.add_task("clips", total=None)

        def on_clip(done: int, total: int, record: dict) -> None:
            running.per_clip.append(record)
            acc = running.accuracy()["tolerance_1"]
            line = " ".join(f"K{k}:{100 * v:.1f}" for k, v in acc.items())
            bar.update(task, completed=done, total=total, description=f"clips | {line}")

        result = evaluate_folder(model, data_root, proto, split,
                                 ScoreOptions(mode=mode, device=dev), limit, on_clip, var,
                                 ranks)
    if not ranks.main:
        return
    for target in (json_out, csv_out):
        if target is not None:
            write_result(result, target)
    if json_line:
        print_json(result.to_json())
        return
    name = "SyncNet*" if model.family == "syncnet" else f"VocaLiST (T={result.window_frames})"
    table = Table(title=f"{proto.name} sync accuracy, {name} ({count(result.clips, 'clip')}, "
                        f"{count(result.windows, 'window')}, {result.seconds:.1f} s)")
    table.add_column("tolerance")
    for k in result.contexts:
        table.add_column(f"K={k}", justify="right")
    for tol, by_k in result.accuracy().items():
        table.add_row(tol.replace("tolerance_", "±"), *[f"{100 * v:.1f}" for v in by_k.values()])
    out.print(table)
    for skipped in result.skipped:
        note(f"skipped {skipped['clip']}: {skipped['reason']}")


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


RECORD_SCHEMAS = {schema.kind: schema for schema in (SCORE_RECORD, FIX_RECORD, LSE_RECORD)}
"""Every command's report rows, for reading reports of any of them."""


@report_app.command("merge")
def report_merge_command(
    reports: Annotated[list[Path], typer.Argument(help="Per-shard reports (.csv or .jsonl).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The merged report.")],
    force: Force = False,
    json_line: Json = False,
) -> None:
    """Merge the reports of a run fanned out with --shard into one (one record per input).

    The reports must come from one command; an input with two different measurements is
    refused (named), numbers stay numbers from CSV to JSON lines and back."""
    merged = batch.merge_reports(reports, output, RECORD_SCHEMAS, force)
    failed = sum("error" in r for r in merged.records)
    if json_line:
        print_json({"output": str(output), "kind": merged.kind, "inputs": len(merged.records),
                    "reports": len(reports), "failed": failed})
        return
    say(f"wrote {output}: {count(len(merged.records), 'input')} from "
        f"{count(len(reports), 'report')}, {failed} failed")


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
    device: Device = "cpu",
    json_line: Json = False,
) -> None:
    """A folder of short clips: the folder pipeline against one process per file and one
    process without workers, side by side (clips per second, x real time, peak RSS)."""
    if command not in BENCH_COMMANDS:
        raise UsageError(f"--command must be {' or '.join(BENCH_COMMANDS)}, not {command!r}")
    if folder is not None and not folder.is_dir():
        raise UsageError(f"--folder {folder} is not a folder")
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
