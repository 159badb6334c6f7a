"""The ``lipsync-fix`` command line: a thin layer over the library functions.

Errors caused by the input are :class:`~lipsync_fix.errors.LipsyncError`; they are printed
as one line on stderr with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lipsync_fix.errors import LipsyncError, OutputExistsError

app = typer.Typer(
    help="Find and fix audio/video desynchronisation in videos of people speaking or singing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print ratios measured side by side.")
app.add_typer(bench_app, name="bench")

err = Console(stderr=True)
out = Console()


def progress_bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=quiet, transient=True,
    )


def load_model(checkpoint: str, device: str):
    """A registry name or a path -> its model (VocaLiST or SyncNet*) in eval mode."""
    from lipsync_fix import checkpoint as ckpt
    from lipsync_fix.pretrained import resolve_checkpoint

    return ckpt.load_model(resolve_checkpoint(checkpoint), device)


Checkpoint = Annotated[
    str, typer.Option("--checkpoint", "-c", help="Checkpoint path or registry name.")
]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or chatter.")]
Window = Annotated[int, typer.Option(help="Context window in frames (25 = 1 s).")]
MaxOffset = Annotated[float, typer.Option(help="Largest delay searched, in ms.")]
Detector = Annotated[str, typer.Option(help="Face detector: auto, haar or s3fd.")]
FaceBox = Annotated[str | None, typer.Option(help="Fixed face region x,y,w,h (pixels).")]


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders expanded to the videos inside them (sorted, recursive)."""
    from lipsync_fix.media import VIDEO_SUFFIXES

    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            found.append(item)
    return found


def run_batch(
    inputs: list[Path],
    work: Callable[[Path, Callable], dict],
    quiet: bool,
    json_lines: bool,
    report: Path | None,
) -> None:
    """Run ``work`` per input: one result line each, a failure never stops the others,
    and the exit status is non-zero if any input failed."""
    from lipsync_fix.report import ReportWriter

    files = expand_inputs(inputs)
    if not files:
        raise LipsyncError("no input videos found")
    failed = 0
    with ReportWriter(report) as writer, progress_bar(quiet or len(files) > 1) as bar:
        for path in files:
            task = bar.add_task(path.name, total=None)

            def progress(stage: str, done: int, total: int, task=task, name=path.name) -> None:
                bar.update(task, description=f"{name}: {stage}", completed=done,
                           total=total)

            try:
                record = work(path, progress)
            except LipsyncError as exc:
                record = {"input": str(path), "error": str(exc)}
                failed += 1
            bar.remove_task(task)
            writer.write(record)
            if json_lines:
                print(json.dumps(record), flush=True)
            elif "error" in record:
                err.print(f"[red]error:[/red] {record['error']}", highlight=False,
                          soft_wrap=True)
            else:
                out.print(record.pop("_line"), highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def scoring_options(window, max_offset_ms, detector, face_box, device):
    from lipsync_fix.sync import SyncOptions

    return SyncOptions(window=window, max_offset_ms=max_offset_ms, detector=detector,
                       face_box=face_box, device=device)


@app.command("fix")
def fix_command(
    inputs: Annotated[list[Path], typer.Argument(help="Videos or folders of videos.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output file (one input) or folder (several).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing outputs.")] = False,
    apply_uncertain: Annotated[bool, typer.Option(
        help="Also fix when the estimate is uncertain.")] = False,
    checkpoint: Checkpoint = "vocalist-lrs2",
    window: Window = 25,
    max_offset_ms: MaxOffset = 600.0,
    detector: Detector = "auto",
    face_box: FaceBox = None,
    device: Device = "cpu",
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per input.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write a .csv or .jsonl report.")] = None,
    quiet: Quiet = False,
) -> None:
    """Measure each video's audio delay and write a copy with the audio moved into sync.

    The video stream is copied bit for bit; the audio is shifted sample-exactly (trimmed
    or padded with silence, duration kept). Outputs that exist are skipped unless --force.
    """
    from lipsync_fix.sync import estimate_sync, fix_video

    files = expand_inputs(inputs)
    if output is None:
        raise LipsyncError("give an output with -o OUT (a file, or a folder for several inputs)")
    several = len(files) > 1 or any(p.is_dir() for p in inputs) or output.is_dir()
    model = load_model(checkpoint, device)
    opts = scoring_options(window, max_offset_ms, detector, face_box, device)

    def work(path: Path, progress) -> dict:
        dst = output / f"{path.stem}.fixed{path.suffix}" if several else output
        if dst.exists() and not force and not several:
            raise OutputExistsError(f"{dst} exists; use --force to overwrite it")
        if dst.exists() and not force:
            return {"input": str(path), "output": str(dst), "skipped": "output exists",
                    "_line": f"{path}: skipped, {dst} exists (use --force to overwrite)"}
        if several:
            dst.parent.mkdir(parents=True, exist_ok=True)
        estimate = estimate_sync(path, model, opts, progress)
        if estimate.verdict == "uncertain" and not apply_uncertain:
            raise LipsyncError(f"{estimate.describe()}; not fixed (use --apply-uncertain)")
        fix_video(path, dst, estimate, force=force)
        record = estimate.to_json() | {"output": str(dst)}
        record["_line"] = f"{estimate.describe()} -> wrote {dst}"
        return record

    run_batch(inputs, _without_line(work, json_lines), quiet, json_lines, report)


def _without_line(work, json_lines: bool):
    """JSON output carries the contract only, not the human sentence."""
    if not json_lines:
        return work

    def wrapped(path, progress):
        record = work(path, progress)
        record.pop("_line", None)
        return record

    return wrapped


@app.command("score")
def score_command(
    inputs: Annotated[list[Path], typer.Argument(help="Videos or folders of videos.")],
    checkpoint: Checkpoint = "vocalist-lrs2",
    window: Window = 25,
    max_offset_ms: MaxOffset = 600.0,
    detector: Detector = "auto",
    face_box: FaceBox = None,
    device: Device = "cpu",
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per input.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Draw score vs offset to a PNG.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write a .csv or .jsonl report.")] = None,
    quiet: Quiet = False,
) -> None:
    """Estimate each video's audio delay without writing a video."""
    from lipsync_fix.sync import estimate_sync

    model = load_model(checkpoint, device)
    opts = scoring_options(window, max_offset_ms, detector, face_box, device)

    def work(path: Path, progress) -> dict:
        estimate = estimate_sync(path, model, opts, progress)
        if plot:
            from lipsync_fix.report import plot_scores

            target = plot if len(inputs) == 1 and not inputs[0].is_dir() \
                else plot.with_name(f"{plot.stem}_{path.stem}{plot.suffix}")
            plot_scores(estimate, target)
        return estimate.to_json() | {"_line": estimate.describe()}

    run_batch(inputs, _without_line(work, json_lines), quiet, json_lines, report)


@app.command("shift")
def shift_command(
    video: Annotated[Path, typer.Argument(help="Input video.")],
    audio_delay_ms: Annotated[float, typer.Option(
        help="Delay the audio by this much (negative: make it earlier).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file.")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing output.")] = False,
) -> None:
    """Apply a known shift: the output's sound comes AUDIO_DELAY_MS later than the input's."""
    from lipsync_fix.media import shift_audio

    done = shift_audio(video, output, audio_delay_ms / 1000.0, force=force)
    out.print(f"wrote {output}: audio delayed by {1000 * done.applied_delay_s:.2f} ms "
              f"({done.shift_samples} samples at {done.sample_rate} Hz)")


@app.command("check")
def check_command(
    device: Device = "cpu",
    json_line: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score the clip the authors' code scored, with the same weights, and compare.

    A self-test of this installation (torch, features, model, scorer, protocols): it must
    reproduce the reference's score matrix and accuracy lines."""
    from lipsync_fix.golden import check_against_reference

    result = check_against_reference(device=device)
    if json_line:
        print(json.dumps({"passed": result.passed, "max_score_error": result.max_score_error,
                          "seconds": round(result.seconds, 2)}))
    else:
        out.print(f"scored the reference clip (27 windows x 31 shifts) in {result.seconds:.1f} s")
        out.print(f"largest score difference from the authors' code: "
                  f"{result.max_score_error:.2e} (tolerance 1e-3); out-of-range cells "
                  f"{'identical' if result.out_of_range_identical else 'DIFFER'}")
        for name, (ours, ref) in result.lines.items():
            out.print(f"{name:9s} ours {ours}\n{'':9s} ref  {ref}", highlight=False,
                      soft_wrap=True)
        out.print("[green]PASS[/green]" if result.passed else "[red]FAIL[/red]")
    if not result.passed:
        raise typer.Exit(1)


@app.command("demo")
def demo_command(
    out_dir: Annotated[Path, typer.Option(help="Where the demo clips are written.")] =
        Path("demo_output"),
    audio_delay_ms: Annotated[float, typer.Option(help="The delay built into the clip.")] = 200.0,
    seconds: Annotated[float, typer.Option(help="Length of the generated clip.")] = 8.0,
    seed: Annotated[int, typer.Option(help="Which generated speaker and sentence.")] = 2024,
    checkpoint: Checkpoint = "demo-small",
    device: Device = "cpu",
    json_line: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quiet: Quiet = False,
) -> None:
    """Make a talking-head clip with a known audio delay, fix it, and compare (offline)."""
    from lipsync_fix.demo import run_demo
    from lipsync_fix.sync import SyncOptions

    model = load_model(checkpoint, device)
    with progress_bar(quiet or json_line) as bar:
        task = bar.add_task("demo", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        result = run_demo(model, out_dir, audio_delay_ms, seconds, seed,
                          SyncOptions(device=device), progress)
    if json_line:
        print(json.dumps(result.to_json()))
        return
    est = result.estimate
    out.print(f"made    {result.clip} with the audio {audio_delay_ms:.0f} ms late")
    out.print(f"found   {est.describe()}")
    out.print(f"true {result.true_audio_delay_ms:.0f} ms, estimated {est.audio_delay_ms:.0f} ms "
              f"(off by {abs(result.residual_ms):.0f} ms = "
              f"{abs(result.residual_ms) / 40:.2f} frames)")
    out.print(f"wrote   {result.fixed} with the audio moved {est.audio_delay_ms:.0f} ms earlier")


@app.command("synth")
def synth_command(
    out_dir: Annotated[Path, typer.Argument(help="Data root to write.")],
    clips: Annotated[int, typer.Option(help="Number of generated clips.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the whole dataset.")] = 0,
    seconds: Annotated[float, typer.Option(help="Length of each clip.")] = 4.0,
    quiet: Quiet = False,
) -> None:
    """Write generated talking-head clips in the authors' layout, with train/val/test lists.

    Crops come from the same face detector and cropper as the main job."""
    from lipsync_fix.preprocess import synthesize_dataset

    with progress_bar(quiet) as bar:
        task = bar.add_task("clips", total=clips)
        synthesize_dataset(out_dir, clips, seed, seconds,
                           on_done=lambda done, total: bar.update(task, completed=done))
    out.print(f"wrote {clips} clips to {out_dir}")


@app.command("preprocess")
def preprocess_command(
    raw_dir: Annotated[Path, typer.Argument(help="Folder of videos (searched recursively).")],
    out_dir: Annotated[Path, typer.Argument(help="Data root to write clip folders into.")],
    workers: Annotated[int, typer.Option(help="Videos processed in parallel.")] = 1,
    detector: Detector = "auto",
    quiet: Quiet = False,
) -> None:
    """Videos -> the authors' layout (25 fps face crops + 16 kHz audio); resumable."""
    from lipsync_fix.preprocess import preprocess_folder

    if not raw_dir.is_dir():
        raise LipsyncError(f"{raw_dir} is not a folder")
    with progress_bar(quiet) as bar:
        task = bar.add_task("videos", total=None)
        summary = preprocess_folder(
            raw_dir, out_dir, detector, workers,
            on_done=lambda done, total, _: bar.update(task, completed=done, total=total),
        )
    out.print(f"{len(summary.done)} clips written to {out_dir}, {len(summary.skipped)} skipped")
    for item in summary.skipped:
        err.print(f"skipped {item['input']}: {item['reason']}", highlight=False, soft_wrap=True)


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
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    config: Annotated[Path | None, typer.Option(help="JSON/TOML file of settings.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per optimizer step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    context: Annotated[int | None, typer.Option(help="Frames per sample (5, 10, 25).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, ...")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pth.")] = False,
    quiet: Quiet = False,
) -> None:
    """Train VocaLiST or SyncNet* (BCE, Adam); under torchrun, DDP on every rank."""
    from lipsync_fix.training import TrainConfig, train

    if preset is None and config is None:
        preset = "paper"
    given = {"data_root": str(data_root), "out_dir": str(run_dir), "preset": preset,
             "model": model,
             "steps": steps, "batch_size": batch_size, "lr": lr, "context": context,
             "device": device, "resume": resume or None, "quiet": quiet or None}
    overrides = {k: v for k, v in given.items() if v is not None}
    cfg = TrainConfig.from_file(config, **overrides) if config else \
        TrainConfig.from_dict({}, **overrides)
    last = train(cfg)
    out.print(f"wrote {last}")


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="A training checkpoint (e.g. RUN/last.pth).")],
    output: Annotated[Path, typer.Argument(help="Where to write the inference-only copy.")],
    force: Annotated[bool, typer.Option(help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Write an inference-only copy of a checkpoint (for sharing or bundling).

    Optimizer and RNG state are dropped; the sha256 is printed for a registry entry."""
    from lipsync_fix.checkpoint import export_for_inference
    from lipsync_fix.pretrained import sha256_of

    if output.exists() and not force:
        raise OutputExistsError(f"{output} exists; pass --force to overwrite it")
    export_for_inference(checkpoint, output)
    out.print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, "
              f"sha256 {sha256_of(output)})")


@app.command("eval")
def eval_command(
    data_root: Annotated[Path, typer.Option(help="Root of preprocessed clips (authors' layout).")],
    checkpoint: Annotated[str, typer.Option(help="Checkpoint path or registry name.")],
    protocol: Annotated[str, typer.Option(help="Metrics: lrs2 (speech) or acappella.")] = "lrs2",
    split: Annotated[str, typer.Option(help="Filelist split under DATA_ROOT/filelists.")] = "test",
    mode: Annotated[str, typer.Option(help="cached (fast) or reference (per pair).")] = "cached",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write results as CSV.")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N clips.")] = None,
    var: Annotated[bool, typer.Option(
        "--var", help="Context-specific model: evaluate at its own window length only.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Reproduce the paper's sync accuracy tables on preprocessed clips."""
    from lipsync_fix.evaluate import EvalResult, evaluate_folder, get_protocol, write_result
    from lipsync_fix.scoring import ScoreOptions

    proto = get_protocol(protocol)
    model = load_model(checkpoint, device)
    running = EvalResult(proto.name)
    with progress_bar(quiet) as bar:
        task = bar.add_task("clips", total=None)

        def on_clip(done: int, total: int, record: dict) -> None:
            running.per_clip.append(record)
            acc = running.accuracy()["tolerance_1"]
            line = " ".join(f"K{k}:{100 * v:.1f}" for k, v in acc.items())
            bar.update(task, completed=done, total=total, description=f"clips | {line}")

        result = evaluate_folder(
            model, data_root, proto, split, ScoreOptions(mode=mode, device=device),
            limit, on_clip, var,
        )
    name = "SyncNet*" if model.family == "syncnet" else f"VocaLiST (T={result.window})"
    table = Table(title=f"{proto.name} sync accuracy, {name} ({result.clips} clips, "
                        f"{result.windows} windows, {result.seconds:.1f} s)")
    table.add_column("tolerance")
    for k in result.contexts:
        table.add_column(f"K={k}", justify="right")
    for tol, by_k in result.accuracy().items():
        table.add_row(tol.replace("tolerance_", "±"), *[f"{100 * v:.1f}" for v in by_k.values()])
    out.print(table)
    for skipped in result.skipped:
        err.print(f"skipped {skipped['clip']}: {skipped['reason']}")
    if json_out:
        write_result(result, json_out)
    if csv_out:
        write_result(result, csv_out)


@bench_app.command("scorer")
def bench_scorer(
    preset: Annotated[str, typer.Option(help="Model size: paper, small or tiny.")] = "paper",
    duration: Annotated[float, typer.Option(help="Seconds of generated clip.")] = 4.0,
    reference_windows: Annotated[
        int, typer.Option(help="Windows scored in reference mode (0 = all).")
    ] = 6,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    json_line: Annotated[bool, typer.Option("--json", help="End with one JSON object.")] = False,
) -> None:
    """Reference (whole model per pair) vs cached scoring: seconds per window and ratio."""
    from lipsync_fix.bench import run_scorer_benchmark

    result = run_scorer_benchmark(preset, duration, reference_windows or None, device)
    out.print(f"model {preset}, device {result.device}, {result.windows} windows")
    out.print(f"reference: {result.reference_s_per_window:.3f} s/window "
              f"({result.reference_windows} windows)")
    out.print(f"cached:    {result.cached_s_per_window:.4f} s/window")
    out.print(f"speedup:   {result.speedup:.1f}x, offsets identical: {result.offsets_identical} "
              f"({result.offsets_compared} rows with a clear best), "
              f"max score difference {result.max_abs_score_diff:.2e}")
    out.print(f"achieved {result.gflops:.1f} GFLOP/s; measured matmul {result.matmul_gflops:.1f}")
    if json_line:
        print(json.dumps(result.to_json()))


@app.command("separate")
def separate_command(
    video: Annotated[Path, typer.Argument(help="Video of the person whose voice to keep.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output audio (.wav, .flac).")],
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint", "-c", help="A separation checkpoint (train-separation's last.pth).")],
    device: Device = "cpu",
    force: Annotated[bool, typer.Option(help="Overwrite an existing output.")] = False,
    detector: Detector = "auto",
    face_box: FaceBox = None,
    json_line: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Separate the on-screen singer's voice from the rest of the soundtrack.

    Uses a Y-Net separator (paper Table 3) conditioned on the singer's mouth frames."""
    from lipsync_fix.separation import load_separator, separate_video
    from lipsync_fix.sync import SyncOptions

    if output.exists() and not force:
        raise OutputExistsError(f"{output} exists; use --force to overwrite it")
    model = load_separator(str(checkpoint), device)
    opts = SyncOptions(detector=detector, face_box=face_box, device=device)
    record = separate_video(video, output, model, opts, force=force)
    if json_line:
        print(json.dumps(record))
    else:
        out.print(f"{video}: wrote {output} ({record['duration_s']:.1f} s, {record['system']})",
                  highlight=False, soft_wrap=True)


@app.command("train-separation")
def train_separation_command(
    data_root: Annotated[Path, typer.Option(help="Clips in the authors' layout.")],
    run_dir: Annotated[Path, typer.Option("--out", help="Run folder: last.pth, metrics.")],
    visual: Annotated[str, typer.Option(help="Visual encoder: mc18, vocalist or syncnet.")] =
        "mc18",
    sync_checkpoint: Annotated[Path | None, typer.Option(
        help="VocaLiST / SyncNet* checkpoint to start the visual encoder from.")] = None,
    freeze: Annotated[bool | None, typer.Option(
        "--freeze/--no-freeze",
        help="Keep the sync encoder fixed (PT) or train it (E2E) [default: PT with a "
             "sync checkpoint].")] = None,
    preset: Annotated[str, typer.Option(help="Model size: paper, small or tiny.")] = "small",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Mixtures per step.")] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    seconds: Annotated[float, typer.Option(help="Length of each mixture.")] = 4.0,
    accompaniment_dir: Annotated[Path | None, typer.Option(
        help="Folder of accompaniment wavs [default: synthesised].")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the mixtures and the weights.")] = 0,
    device: Device = "cpu",
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pth.")] = False,
    quiet: Quiet = False,
) -> None:
    """Train a Y-Net separator on mixtures made on the fly (half with a second voice)."""
    from lipsync_fix.separation_training import SeparationConfig, train_separator

    cfg = SeparationConfig(
        data_root=str(data_root), out_dir=str(run_dir), visual=visual,
        sync_checkpoint=str(sync_checkpoint) if sync_checkpoint else None, freeze=freeze,
        preset=preset, steps=steps, batch_size=batch_size, lr=lr, seconds=seconds,
        accompaniment_dir=str(accompaniment_dir) if accompaniment_dir else None, seed=seed,
        device=device, resume=resume, quiet=quiet,
    )
    last = train_separator(cfg, log=lambda msg: err.print(msg, highlight=False))
    out.print(f"wrote {last}")


@app.command("eval-separation")
def eval_separation_command(
    data_root: Annotated[Path, typer.Option(help="Clips in the authors' layout.")],
    checkpoints: Annotated[list[Path], typer.Option(
        "--checkpoint", "-c", help="Separation checkpoint; give two to compare them.")],
    split: Annotated[str, typer.Option(help="Filelist split under DATA_ROOT/filelists.")] =
        "test",
    mixtures: Annotated[int, typer.Option(help="Mixtures to score.")] = 100,
    seconds: Annotated[float, typer.Option(help="Length of each mixture.")] = 4.0,
    seed: Annotated[int, typer.Option(help="Seed of the test mixtures.")] = 1234,
    accompaniment_dir: Annotated[Path | None, typer.Option(
        help="Folder of accompaniment wavs [default: synthesised].")] = None,
    device: Device = "cpu",
    json_line: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """SDR and SIR (BSS Eval v4) of separators on the same mixtures (paper Table 3).

    The unprocessed mixture is the first row; two checkpoints get a Wilcoxon test."""
    from lipsync_fix.mixing import MixtureConfig, MixtureDataset
    from lipsync_fix.separation import load_separator
    from lipsync_fix.separation_metrics import format_table, significance, table_rows
    from lipsync_fix.separation_training import evaluate_separator

    dataset = MixtureDataset(data_root, split, mixtures, MixtureConfig(seconds, seed=seed),
                             accompaniment_dir)
    systems, baseline = [], None
    names = [p.stem if p.stem != "last" else p.parent.name for p in checkpoints]
    for path, name in zip(checkpoints, names, strict=True):
        model = load_separator(str(path), device)
        label = f"{name} ({model_label(model)})" if len(set(names)) == len(names) else str(path)
        scores, mix = evaluate_separator(model, dataset, device, name=label,
                                         with_mixture=baseline is None)
        baseline = baseline or mix
        systems.append(scores)
    assert baseline is not None
    rows = table_rows([baseline, *systems])
    test = significance(systems[0], systems[1]) if len(systems) == 2 else None
    if json_line:
        print(json.dumps({"mixtures": len(dataset), "split": split, "table": rows,
                          "significance": test,
                          "per_clip": {s.name: s.per_clip for s in [baseline, *systems]}}))
        return
    out.print(f"{len(dataset)} mixtures of {seconds:g} s from {data_root} ({split}); "
              "SDR and SIR in dB", highlight=False)
    out.print(format_table(rows), highlight=False)
    if test is not None:
        def verdict(key: str) -> str:
            p = test[f"p_{key}"]
            word = "significant" if test[f"significant_{key}"] else "no significant difference"
            return f"{key.upper()}: p = {p:.3g}, {word}"

        out.print(f"{test['test']} (p > 0.05 = no significant difference): "
                  f"{verdict('sdr')}; {verdict('sir')}", highlight=False, soft_wrap=True)


def model_label(model) -> str:
    """The paper's name of a loaded separator (e.g. ynet-mr-v-pt)."""
    from lipsync_fix.separation import system_name

    return system_name(model.visual, model.frozen_visual)


def command_names() -> set[str]:
    """Every registered command and command group (so new commands need no list here)."""
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    return names | {g.name for g in app.registered_groups if g.name}


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``lipsync-fix VIDEO -o OUT`` means ``lipsync-fix fix VIDEO -o OUT``;
    input errors become one-line messages with a non-zero exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in command_names() and not args[0].startswith("-"):
        args.insert(0, "fix")
    try:
        code = app(args, standalone_mode=False)
    except LipsyncError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
