"""The paper's commands and their data: ``check`` (the authors' numbers reproduced),
``synth``, ``preprocess``, ``train``, ``export`` and ``eval`` (Tables 1-2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lipsync_fix import batch
from lipsync_fix.cli.app import (
    Checkpoint,
    Detector,
    DetectorName,
    Device,
    Force,
    Json,
    Quiet,
    Restart,
    Resume,
    Shard,
    app,
    count,
    load_named_model,
    note,
    out,
    print_error,
    print_json,
    progress_bar,
    say,
)
from lipsync_fix.compute import resolve_device
from lipsync_fix.data.preprocess import preprocess_folder
from lipsync_fix.data.synth import write_synthetic_dataset
from lipsync_fix.errors import OutputError, OutputExistsError, UsageError
from lipsync_fix.evaluation.golden import check_against_reference
from lipsync_fix.evaluation.protocols import EvalResult, evaluate_folder, get_protocol, write_result
from lipsync_fix.models import export_for_inference, sha256_of
from lipsync_fix.models.syncnet_star import SYNCNET_STAR_FAMILY
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
        help="Model family: vocalist, mtdvocalist, or syncnet-star (the SyncNet* baseline; "
             "'syncnet', its old name, is read as it until 1.0) [default: vocalist].",
    )] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps.")] = None,
    config: Annotated[Path | None, typer.Option(help="JSON/TOML file of settings.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Samples per optimizer step.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Adam learning rate.")] = None,
    window_frames: Annotated[int | None, typer.Option(
        min=1, help="Frames per input window T (5; 10 or 25 for 'Var' models).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, ...")] = None,
    resume: Resume = False,
    force: Restart = False,
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
    checkpoint: Checkpoint,
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
    name = {SYNCNET_STAR_FAMILY: "SyncNet*", "mtdvocalist": "MTDVocaLiST"}.get(
        model.family, f"VocaLiST (T={result.window_frames})")
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
