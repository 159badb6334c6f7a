"""Commands of the separation product (the paper's Table 3): ``separate``,
``train-separation`` and ``eval-separation``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lipsync_fix.cli.app import (
    Detector,
    DetectorName,
    Device,
    FaceBox,
    Force,
    Json,
    Quiet,
    Restart,
    Resume,
    app,
    check_face_box,
    err,
    load_named_model,
    out,
    print_json,
)
from lipsync_fix.compute import resolve_device
from lipsync_fix.files import unchanged_while
from lipsync_fix.separation import (
    SeparationConfig,
    compare_separators,
    separate_video,
    train_separator,
)
from lipsync_fix.separation.apply import check_audio_output
from lipsync_fix.separation.metrics import format_table
from lipsync_fix.separation.model import YNet


@app.command("separate")
def separate_command(
    video: Annotated[Path, typer.Argument(help="Video of the person whose voice to keep.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output audio (.wav, .flac).")],
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", "-c", help="A separation checkpoint (train-separation's last.pth).")],
    device: Device = "auto",
    force: Force = False,
    detector: Detector = DetectorName.auto,
    face_box: FaceBox = None,
    json_line: Json = False,
) -> None:
    """Separate the on-screen singer's voice from the rest of the soundtrack.

    Uses a Y-Net separator (paper Table 3) conditioned on the singer's mouth frames."""
    check_face_box(face_box)
    check_audio_output(output, force)  # the same check separate_video makes, before the model
    dev = resolve_device(device)
    model = load_named_model(checkpoint, dev, family=YNet.family)
    with unchanged_while(video, output):
        record = separate_video(video, output, model, detector=detector.value,
                                face_box=face_box, device=dev, force=force)
    if json_line:
        print_json(record)
    else:
        out.print(f"{video}: wrote {output} ({record['duration_s']:.1f} s, {record['system']})")


@app.command("train-separation")
def train_separation_command(
    data_root: Annotated[Path, typer.Option(help="Clips in the authors' layout.")],
    run_dir: Annotated[Path, typer.Option("--out", help="Run folder: last.pth, metrics.")],
    visual: Annotated[str, typer.Option(help="Visual encoder: mc18, vocalist or syncnet.")] =
        "mc18",
    sync_checkpoint: Annotated[str | None, typer.Option(
        help="VocaLiST / SyncNet* checkpoint to start the visual encoder from.")] = None,
    freeze: Annotated[bool | None, typer.Option(
        "--freeze/--no-freeze",
        help="Keep the sync encoder fixed (PT) or train it (E2E) [default: PT with a "
             "sync checkpoint].")] = None,
    preset: Annotated[str, typer.Option(help="Model size: paper, small or tiny.")] = "small",
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(min=1, help="Mixtures per step.")] = 8,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-3,
    seconds: Annotated[float, typer.Option(
        min=0.5, max=60.0, help="Length of each mixture.")] = 4.0,
    accompaniment_dir: Annotated[Path | None, typer.Option(
        help="Folder of accompaniment wavs [default: synthesised].")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the mixtures and the weights.")] = 0,
    device: Device = "auto",
    resume: Resume = False,
    force: Restart = False,
    quiet: Quiet = False,
) -> None:
    """Train a Y-Net separator on mixtures made on the fly (half with a second voice).

    An OUT that holds a run already is refused unless --resume (continue it) or --force."""
    cfg = SeparationConfig(
        data_root=str(data_root), out_dir=str(run_dir), visual=visual,
        sync_checkpoint=sync_checkpoint, freeze=freeze, preset=preset, steps=steps,
        batch_size=batch_size, lr=lr, seconds=seconds,
        accompaniment_dir=str(accompaniment_dir) if accompaniment_dir else None, seed=seed,
        device=str(resolve_device(device)), resume=resume, force=force, quiet=quiet,
    )
    last = train_separator(cfg, log=err.print)
    out.print(f"wrote {last}")


@app.command("eval-separation")
def eval_separation_command(
    data_root: Annotated[Path, typer.Option(help="Clips in the authors' layout.")],
    checkpoints: Annotated[list[Path], typer.Option(
        "--checkpoint", "-c", help="Separation checkpoint; give two to compare them.")],
    split: Annotated[str, typer.Option(help="Filelist split under DATA_ROOT/filelists.")] =
        "test",
    mixtures: Annotated[int, typer.Option(min=1, help="Mixtures to score.")] = 100,
    seconds: Annotated[float, typer.Option(
        min=0.5, max=60.0, help="Length of each mixture.")] = 4.0,
    seed: Annotated[int, typer.Option(help="Seed of the test mixtures.")] = 1234,
    accompaniment_dir: Annotated[Path | None, typer.Option(
        help="Folder of accompaniment wavs [default: synthesised].")] = None,
    device: Device = "auto",
    json_line: Json = False,
) -> None:
    """SDR and SIR (BSS Eval v4) of separators on the same mixtures (paper Table 3).

    The unprocessed mixture is the first row; two checkpoints get a Wilcoxon test."""
    result = compare_separators(data_root, checkpoints, split, mixtures, seconds, seed,
                                accompaniment_dir, resolve_device(device))
    if json_line:
        print_json(result.to_json())
        return
    out.print(f"{result.mixtures} mixtures of {seconds:g} s from {data_root} ({split}); "
              "SDR and SIR in dB")
    out.print(format_table(result.rows))
    test = result.significance
    if test is not None:
        def verdict(key: str) -> str:
            p = test[f"p_{key}"]
            word = "significant" if test[f"significant_{key}"] else "no significant difference"
            return f"{key.upper()}: p = {p:.3g}, {word}"

        out.print(f"{test['test']} (p > 0.05 = no significant difference): "
                  f"{verdict('sdr')}; {verdict('sir')}")
