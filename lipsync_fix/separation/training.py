"""Training and evaluating the Y-Net separators of VocaLiST's Table 3.

Kept apart from :mod:`lipsync_fix.training` (the sync models' trainer): the data, the
loss and the checkpoint contents differ, and a separator reuses a sync model only as a
(possibly frozen) visual encoder. Compact on purpose: one process, Adam, mixtures made
on the fly, a loss on the masked spectrogram.

Mixture ``i`` of a run is drawn from ``(seed, i)`` and step ``s`` trains on mixtures
``s*B .. s*B + B - 1``, so a run resumed from ``last.pth`` sees exactly the mixtures it
would have seen without the interruption.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from lipsync_fix.compute import resolve_device
from lipsync_fix.errors import LipsyncError, UsageError
from lipsync_fix.models.checkpoint import read_checkpoint, write_atomically
from lipsync_fix.separation.evaluate import evaluate_separator
from lipsync_fix.separation.mixing import MixtureConfig, MixtureDataset, collate
from lipsync_fix.separation.model import (
    YNet,
    build_separator,
    checkpoint_payload,
    separator_from_checkpoint,
    system_name,
)
from lipsync_fix.training.config import RunConfig
from lipsync_fix.training.runlog import METRICS_FILE, RunLog

Log = Callable[[str], None]


@dataclass
class SeparationConfig(RunConfig):
    """Settings of a separation run; stored in its checkpoints."""

    section: ClassVar[str] = "separation"

    data_root: str = ""
    out_dir: str = ""
    visual: str = "mc18"  # mc18, vocalist or syncnet-star
    sync_checkpoint: str | None = None  # VocaLiST / SyncNet* weights for the encoder
    freeze: bool | None = None  # default: frozen when a sync checkpoint is given (PT)
    preset: str = "small"
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    seconds: float = 4.0
    seed: int = 0
    split: str = "train"
    val_split: str = "val"
    val_mixtures: int = 16
    val_every: int = 0  # 0: validate only at the end
    checkpoint_every: int = 200
    log_every: int = 10
    accompaniment_dir: str | None = None
    device: str = "cpu"
    resume: bool = False
    force: bool = False  # start afresh over a run already in out_dir
    quiet: bool = False


def spectral_loss(est: Tensor, target: Tensor, mixture_spec: Tensor) -> Tensor:
    """L1 on the real and imaginary parts and on the magnitude of the masked spectrogram,
    each item scaled by its mixture's spectral RMS so loud and quiet mixtures weigh the
    same (the mask itself is scale-free)."""
    scale = mixture_spec.abs().pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-8)
    e, t = est / scale, target / scale
    complex_l1 = (e.real - t.real).abs().mean() + (e.imag - t.imag).abs().mean()
    return complex_l1 + (e.abs() - t.abs()).abs().mean()


def mixture_dataset(cfg: SeparationConfig, split: str, length: int, seed: int) -> MixtureDataset:
    mix = MixtureConfig(seconds=cfg.seconds, seed=seed)
    return MixtureDataset(cfg.data_root, split, length, mix, cfg.accompaniment_dir)


def _save(path: Path, model: YNet, optimizer: torch.optim.Optimizer, step: int,
          cfg: SeparationConfig) -> Path:
    payload = {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
               "global_step": int(step), **checkpoint_payload(model), "config": cfg.to_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda tmp: torch.save(payload, tmp))


def train_separator(cfg: SeparationConfig, log: Log | None = None) -> Path:
    """Train a separator as ``cfg`` says; returns ``OUT/last.pth``.

    Writes ``last.pth`` every ``checkpoint_every`` steps and at the end, and one JSON line
    per log/validation event to ``OUT/metrics.jsonl`` (read with
    :func:`lipsync_fix.training.runlog.read_metrics`).
    """
    out = Path(cfg.out_dir)
    last = out / "last.pth"
    taken = [name for name in ("last.pth", METRICS_FILE) if (out / name).exists()]
    if taken and not (cfg.resume or cfg.force):
        raise UsageError(f"{out} holds a run already ({', '.join(taken)}); use --resume to "
                         "continue it, or --force to start afresh over it")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    step = 0
    ckpt: dict[str, Any] = {}
    if cfg.resume and last.is_file():
        ckpt = read_checkpoint(last)
        model = separator_from_checkpoint(ckpt, str(last))
        step = int(ckpt.get("global_step", 0))
    train_set = mixture_dataset(cfg, cfg.split, cfg.steps * cfg.batch_size, cfg.seed)
    runlog = RunLog(out, resume_step=step, quiet=cfg.quiet, tensorboard=False,
                    echo=log or print)
    if not ckpt:
        model = build_separator(cfg.preset, cfg.visual, cfg.sync_checkpoint, cfg.freeze)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    if ckpt.get("optimizer"):
        optimizer.load_state_dict(ckpt["optimizer"])
    name = system_name(model.visual, model.frozen_visual)
    runlog.say(f"training {name} ({cfg.preset}, {sum(p.numel() for p in params)} trainable "
        f"parameters) on {len(train_set.clips)} clips, {cfg.seconds:g} s mixtures")
    started = time.monotonic()
    running = 0.0
    while step < cfg.steps:
        idx = range(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        batch = collate([train_set[i] for i in idx])
        est, mix_spec = model.separate_spec(batch["mixture"].to(device),
                                            batch["frames"].to(device))
        loss = spectral_loss(est, model.stft(batch["target"].to(device)), mix_spec)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        running += float(loss.detach())
        if step % cfg.log_every == 0 or step == cfg.steps:
            count = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            loss_mean = running / count
            runlog.record("train", step, loss=loss_mean,
                          seconds=round(time.monotonic() - started, 2))
            runlog.say(f"step {step}/{cfg.steps} loss {loss_mean:.4f}")
            running = 0.0
        if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
            _validate(model, cfg, device, step, runlog)
            model.train()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _save(last, model, optimizer, step, cfg)
    _validate(model, cfg, device, step, runlog)
    return last


def _validate(model: YNet, cfg: SeparationConfig, device: torch.device, step: int,
              runlog: RunLog) -> dict:
    """Mean SDR/SIR on fixed validation mixtures (a seed apart from training's)."""
    try:
        val = mixture_dataset(cfg, cfg.val_split, cfg.val_mixtures, cfg.seed + 1)
    except LipsyncError as exc:
        runlog.say(f"no validation: {exc}")
        return {}
    system, baseline = evaluate_separator(model, val, device)
    assert baseline is not None
    ours, mix = system.mean(), baseline.mean()
    record = {"sdr": ours["sdr"], "sir": ours["sir"], "mixture_sdr": mix["sdr"],
              "mixture_sir": mix["sir"], "mixtures": len(system.per_clip)}
    runlog.record("val", step, **record)
    runlog.say(f"val step {step}: SDR {ours['sdr']:.2f} dB, SIR {ours['sir']:.2f} dB "
        f"(mixture SDR {mix['sdr']:.2f}, SIR {mix['sir']:.2f})")
    return record
