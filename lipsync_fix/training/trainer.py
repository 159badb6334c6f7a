"""Training VocaLiST (or the SyncNet* baseline) the way the authors did, on one CPU, one GPU
or many (torchrun + DDP).

The sampling of training pairs follows the authors' ``train_vocalist_lrs2.py`` (SPEC.md,
"Training"): a random clip with more than 25 frames, a random window start ``f``, a fair coin
for in-sync (its own audio) or out-of-sync (the audio of another start ``g`` of the same clip),
and their silence rule for negatives. What differs from the reference is engineering:

* every sample is a pure function of ``(seed, rank, sample index)``, so a run is reproducible
  whatever the number of loader workers, and resuming only needs the step counter;
* clips are scanned once at construction (short ones skipped) and read lazily: the audio of
  recently used clips is kept in a small LRU cache, the few frames of a window are read on
  demand, so memory does not grow with the data set;
* checkpoints keep the authors' layout (``state_dict``, ``optimizer``, ``global_step``,
  ``global_epoch``) plus ``model``, ``dims``, ``window_frames``, the config and RNG states as
  plain tensors, so they load with ``weights_only=True`` and a resumed run continues
  bit-for-bit on CPU;
* multi-process training is plain :class:`~torch.nn.parallel.DistributedDataParallel` under
  ``torchrun``; each rank draws from its own seeded stream, which is what a
  ``DistributedSampler`` would give for a data set that is sampled rather than enumerated.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lipsync_fix.compute import resolve_device
from lipsync_fix.errors import LipsyncError, UsageError
from lipsync_fix.files import write_atomically
from lipsync_fix.models.checkpoint import (
    build_model,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from lipsync_fix.models.layers import count_parameters
from lipsync_fix.models.syncnet_star import SYNCNET_STAR_FAMILY
from lipsync_fix.training.config import TrainConfig
from lipsync_fix.training.distributed import (
    Dist,
    all_reduce_sum,
    gather,
    param_digest,
    process_group,
)
from lipsync_fix.training.pairs import StreamSampler, SyncPairDataset, worker_init
from lipsync_fix.training.runlog import METRICS_FILE, RunLog

_VAL_SEED_SALT = 0x5EED_0FA1
"""Mixed into the config seed so the validation pairs never coincide with a training stream."""


def _resolve_device(cfg: TrainConfig, ctx: Dist) -> torch.device:
    """The config's device as :func:`~lipsync_fix.compute.resolve_device` resolves it for
    every command; under torchrun each rank owns the GPU of its local rank."""
    device = resolve_device(cfg.device)
    if device.type != "cuda":
        return device
    index = ctx.local_rank if ctx.enabled else (device.index or 0)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _resolve_amp(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()):
        if device.type != "cuda":
            raise LipsyncError("fp16 autocast needs a CUDA device; use amp=bf16 or off on CPU")
        return torch.float16
    return torch.bfloat16


def _rng_state(device: torch.device) -> dict[str, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def _seed_for_rank(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, rank, 0xD0]).generate_state(1)[0])


class _Trainer:
    """One rank's training run; :func:`train` is the public entry point."""

    def __init__(self, cfg: TrainConfig, ctx: Dist):
        self.cfg, self.ctx = cfg, ctx
        self.run_dir = Path(cfg.out_dir)
        self.device = _resolve_device(cfg, ctx)
        self.amp_dtype = _resolve_amp(cfg, self.device)
        per_step = ctx.world_size * cfg.grad_accum
        if cfg.batch_size % per_step:
            raise ValueError(
                f"batch_size {cfg.batch_size} must divide evenly over {ctx.world_size} ranks x "
                f"{cfg.grad_accum} accumulation steps"
            )
        self.micro_batch = cfg.batch_size // per_step
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
        self.num_workers = (
            cfg.num_workers if cfg.num_workers is not None
            else max(0, min(8, cpus // ctx.world_size - 1))
        )

    # -- set-up ---------------------------------------------------------------------------

    def _checkpoint_to_resume(self) -> Path | None:
        if self.cfg.resume_from:
            path = Path(self.cfg.resume_from)
            if not path.is_file():
                raise UsageError(f"resume_from checkpoint {path} does not exist")
            return path
        last = self.run_dir / "last.pth"
        return last if self.cfg.resume and last.is_file() else None

    def _build_model(self, resume: dict[str, Any] | None) -> nn.Module:
        torch.manual_seed(self.cfg.seed)  # identical initial weights on every rank
        source = resume
        if source is None and self.cfg.init_from:
            source = read_checkpoint(self.cfg.init_from)
        if source is None:
            model = build_model(self.cfg.model, self.cfg.preset, self.cfg.window_frames)
        else:  # its own size (the authors' files carry none: the paper's)
            model = model_from_checkpoint(
                {**source, "window_frames": self.cfg.window_frames}, self.cfg.init_from or "resume")
            if model.family != self.cfg.model:
                raise LipsyncError(f"the checkpoint holds a {model.family} model, but the "
                                   f"config trains {self.cfg.model}")
        return model.to(self.device)

    def _datasets(self, say: Callable[[str], None]
                  ) -> tuple[SyncPairDataset, SyncPairDataset | None]:
        cfg = self.cfg
        train_ds = SyncPairDataset.from_split(
            cfg.data_root, cfg.train_split, window_frames=cfg.window_frames, seed=cfg.seed,
            rank=self.ctx.rank, epoch_length=cfg.epoch_length, cache_size=cfg.cache_size,
        )
        say(f"train: {len(train_ds.clips)} clips ({len(train_ds.skipped)} skipped)")
        val_ds = None
        if cfg.val_every > 0 or cfg.validate_at_start:
            if not (Path(cfg.data_root) / "filelists" / f"{cfg.val_split}.txt").is_file():
                say(f"no filelists/{cfg.val_split}.txt: validation is off")
            else:
                try:
                    # Rank 0's stream of a fixed seed: the same pairs whatever the world size.
                    val_ds = SyncPairDataset.from_split(
                        cfg.data_root, cfg.val_split, window_frames=cfg.window_frames,
                        seed=cfg.seed ^ _VAL_SEED_SALT, rank=0, cache_size=cfg.cache_size,
                    )
                except LipsyncError as exc:
                    say(f"validation is off: {exc}")
        return train_ds, val_ds

    def _loader(self, ds: Dataset, sampler: Sampler[int], batch: int) -> DataLoader:
        kwargs: dict[str, Any] = {}
        if self.num_workers > 0:
            kwargs.update(prefetch_factor=2, worker_init_fn=worker_init)
        return DataLoader(
            ds, batch_size=batch, sampler=sampler, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            # A private generator: creating a loader must not consume the global RNG that
            # dropout uses, or a resumed run would diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(0), **kwargs,
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- the run --------------------------------------------------------------------------

    def run(self) -> Path:
        cfg, ctx = self.cfg, self.ctx
        resume_path = self._checkpoint_to_resume()
        taken = [name for name in ("last.pth", METRICS_FILE) if (self.run_dir / name).exists()]
        if resume_path is None and taken and not (cfg.force or cfg.resume):
            raise UsageError(f"{self.run_dir} holds a run already ({', '.join(taken)}); use "
                             "--resume to continue it, or --force to start afresh over it")
        ckpt = read_checkpoint(resume_path) if resume_path else None
        self.global_step = int(ckpt["global_step"]) if ckpt else 0
        lines: list[str] = []  # the data is read before the run folder is made
        train_ds, val_ds = self._datasets(lines.append)
        self.log = RunLog(self.run_dir, active=ctx.main, resume_step=self.global_step,
                         quiet=cfg.quiet, log_dir=cfg.log_dir)
        if ckpt:
            self.log.say(f"resuming from {resume_path} at step {self.global_step}")
            self._check_resume_compat(ckpt)
        elif taken:
            self.log.say(f"{self.run_dir} held a run: starting afresh over it (force)")
        for line in lines:
            self.log.say(line)
        self.epoch_length = train_ds.epoch_length

        model = self._build_model(ckpt)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        if ckpt:
            if ckpt.get("optimizer") is not None:
                optimizer.load_state_dict(ckpt["optimizer"])
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr  # the config, not the file, decides the lr
            if isinstance(ckpt.get("scaler"), Mapping) and scaler.is_enabled():
                scaler.load_state_dict(dict(ckpt["scaler"]))

        net: nn.Module = model
        if ctx.enabled:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        start_step = self.global_step
        start_index = start_step * cfg.grad_accum * self.micro_batch
        loader = self._loader(train_ds, StreamSampler(start_index), self.micro_batch)
        origin = cfg.preset if ckpt is None and not cfg.init_from else "from checkpoint"
        name = "SyncNet*" if cfg.model == SYNCNET_STAR_FAMILY else "VocaLiST"
        self.log.say(
            f"training {count_parameters(model) / 1e6:.2f}M-param {name} ({origin}), "
            f"{cfg.window_frames}-frame windows, on "
            f"{ctx.world_size} x {self.device.type} (amp {self.amp_dtype or 'off'}), batch "
            f"{cfg.batch_size} = {ctx.world_size} ranks x {cfg.grad_accum} x {self.micro_batch},"
            f" {self.num_workers} loader workers/rank, steps {self.global_step}->{cfg.steps}"
        )

        if cfg.validate_at_start and val_ds is not None and self.global_step == 0:
            self._validate(model, val_ds)
        model.train()
        batches = iter(loader)
        # Restored last, after everything that might draw from the global RNG while setting
        # up, so the dropout stream continues exactly where the checkpoint left it.
        self._restore_rng(ckpt)
        window_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        window_steps, window_wait, window_start = 0, 0.0, time.perf_counter()
        total_wait, total_time, total_steps = 0.0, 0.0, 0
        try:
            while self.global_step < cfg.steps:
                for micro in range(cfg.grad_accum):
                    t0 = time.perf_counter()
                    video, mel, label = next(batches)
                    window_wait += time.perf_counter() - t0
                    video = video.to(self.device, non_blocking=True)
                    mel = mel.to(self.device, non_blocking=True)
                    label = label.to(self.device, non_blocking=True)
                    sync = micro == cfg.grad_accum - 1 or not ctx.enabled
                    with (contextlib.nullcontext() if sync else net.no_sync()), self._autocast():
                        scores = net(video, mel)
                        loss = sync_loss(model, scores.float(), label) / cfg.grad_accum
                    scaler.scale(loss).backward()
                    window_loss += loss.detach().double()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                self.global_step += 1
                window_steps += 1
                step = self.global_step
                last = step == cfg.steps
                if (cfg.log_every and step % cfg.log_every == 0) or last:
                    elapsed = time.perf_counter() - window_start
                    loss_sum, wait_sum = all_reduce_sum(
                        [window_loss.item(), window_wait], ctx, self.device
                    )
                    mean_loss = loss_sum / ctx.world_size / window_steps
                    rate = window_steps * cfg.batch_size / elapsed
                    wait_share = wait_sum / ctx.world_size / elapsed
                    self.log.record(
                        "train", step, loss=mean_loss, samples_per_s=rate,
                        data_wait=wait_share, epoch=self._epoch(),
                    )
                    self.log.say(
                        f"step {step}/{cfg.steps} | loss {mean_loss:.4f} | {rate:.1f} samples/s"
                        f" | data wait {100 * wait_share:.0f}% | epoch {self._epoch()}"
                    )
                    total_wait += wait_sum / ctx.world_size
                    total_time += elapsed
                    total_steps += window_steps
                    window_loss.zero_()
                    window_steps, window_wait = 0, 0.0
                    window_start = time.perf_counter()
                paused = time.perf_counter()
                if val_ds is not None and ((cfg.val_every and step % cfg.val_every == 0) or last):
                    self._validate(model, val_ds)
                    model.train()
                if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last:
                    self._save(model, optimizer, scaler, periodic=bool(
                        cfg.checkpoint_every and step % cfg.checkpoint_every == 0))
                window_start += time.perf_counter() - paused  # keep eval/saving out of rates
        finally:
            del batches  # shut loader workers down before the process group goes
        if self.global_step == start_step:  # resumed at (or past) the last step: nothing ran
            # Decided from state every rank shares, never from the file system, because
            # saving is collective and rank 0 may not have finished writing yet.
            self._save(model, optimizer, scaler, periodic=False)
        self.summary = self._summary(model, total_steps, total_time, total_wait)
        self.log.close()
        if ctx.enabled:
            dist.barrier()
        return self.run_dir / "last.pth"

    def _epoch(self) -> int:
        return self.global_step * self.cfg.batch_size // self.epoch_length

    def _check_resume_compat(self, ckpt: Mapping[str, Any]) -> None:
        """Warn when a resumed run cannot continue the stream exactly."""
        old = ckpt.get("config") if isinstance(ckpt.get("config"), Mapping) else {}
        rng = ckpt.get("rng") if isinstance(ckpt.get("rng"), Mapping) else {}
        changed = [
            k for k in ("batch_size", "grad_accum", "seed", "window_frames", "data_root")
            if k in old and old[k] != getattr(self.cfg, k)
        ]
        if rng.get("world_size") not in (None, self.ctx.world_size):
            changed.append("world_size")
        if changed:
            self.log.say(f"resuming with changed {', '.join(changed)}: training continues, "
                         "but not as the original run would have")

    def _restore_rng(self, ckpt: Mapping[str, Any] | None) -> None:
        """Dropout randomness: the saved per-rank state on resume, else a per-rank seed."""
        states = ckpt.get("rng") if ckpt else None
        if (
            isinstance(states, Mapping)
            and states.get("world_size") == self.ctx.world_size
            and len(states.get("torch") or []) == self.ctx.world_size
        ):
            torch.set_rng_state(states["torch"][self.ctx.rank])
            cuda = (states.get("cuda") or [None] * self.ctx.world_size)[self.ctx.rank]
            if cuda is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(cuda, self.device)
            return
        torch.manual_seed(_seed_for_rank(self.cfg.seed + self.global_step, self.ctx.rank))

    @torch.no_grad()
    def _validate(self, model: nn.Module, val_ds: SyncPairDataset) -> dict[str, float]:
        """Loss, F1 and accuracy (logit > 0, or probability > 0.5, means in sync) on the
        fixed validation pairs, shared out over the ranks and summed."""
        cfg, ctx = self.cfg, self.ctx
        if ctx.enabled:
            # DDP syncs BatchNorm running stats from rank 0 only at the start of a forward,
            # so the other ranks still hold their own; evaluate every shard with rank 0's.
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)
        model.eval()
        sampler = StreamSampler(ctx.rank, cfg.val_samples, ctx.world_size)
        loader = self._loader(val_ds, sampler, cfg.val_batch_size or self.micro_batch)
        loss_sum = tp = fp = fn = tn = 0.0
        for video, mel, label in loader:
            with self._autocast():
                scores = model(video.to(self.device), mel.to(self.device)).float()
            label = label.to(self.device)
            loss_sum += float(sync_loss(model, scores, label, reduction="sum"))
            pred = scores > (0.5 if model.outputs_probability else 0.0)
            truth = label > 0.5
            tp += float((pred & truth).sum())
            fp += float((pred & ~truth).sum())
            fn += float((~pred & truth).sum())
            tn += float((~pred & ~truth).sum())
        loss_sum, tp, fp, fn, tn = all_reduce_sum([loss_sum, tp, fp, fn, tn], ctx, self.device)
        n = tp + fp + fn + tn
        result = {
            "loss": loss_sum / n,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
            "accuracy": (tp + tn) / n,
            "positive_rate": (tp + fp) / n,
        }
        self.log.record("val", self.global_step, **result)
        self.log.say(
            f"val @ step {self.global_step}: loss {result['loss']:.4f} | F1 {result['f1']:.3f}"
            f" | accuracy {result['accuracy']:.3f}"
            f" | predicted in-sync {result['positive_rate']:.2f}"
        )
        return result

    def _save(
        self, model: nn.Module, optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler, periodic: bool,
    ) -> None:
        """Collective (every rank hands over its RNG state); rank 0 writes the files."""
        states = gather(_rng_state(self.device), self.ctx)
        if not self.ctx.main:
            return
        step = self.global_step
        extra = {
            "config": self.cfg.to_dict(),
            "window_frames": self.cfg.window_frames,
            "rng": {
                "world_size": self.ctx.world_size,
                "torch": [s["torch"] for s in states],
                "cuda": [s["cuda"] for s in states],
            },
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        }
        last = self.run_dir / "last.pth"
        target = self.run_dir / f"checkpoint_step{step:06d}.pth" if periodic else last
        save_checkpoint(target, model, optimizer, step, self._epoch(), **extra)
        if target != last:
            write_atomically(last, lambda tmp: shutil.copyfile(target, tmp))
        self.log.say(f"saved {target.name}" + (" and last.pth" if target != last else ""))

    def _summary(
        self, model: nn.Module, steps: int, seconds: float, wait: float
    ) -> dict[str, Any]:
        digests = gather(param_digest(model), self.ctx)
        summary = {
            "steps_run": steps,
            "samples_per_s": steps * self.cfg.batch_size / seconds if seconds else 0.0,
            "data_wait": wait / seconds if seconds else 0.0,
            "world_size": self.ctx.world_size,
            "device": str(self.device),
            "amp": str(self.amp_dtype) if self.amp_dtype else "off",
            "param_digests": digests,
            "ranks_identical": len(set(digests)) == 1,
        }
        if self.ctx.main:
            self.log.record("summary", self.global_step, **{
                k: v for k, v in summary.items() if isinstance(v, (int, float))
            })
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
            self.log.say(
                f"done: {steps} steps at {summary['samples_per_s']:.1f} samples/s, "
                f"{100 * summary['data_wait']:.0f}% of step time waiting for data"
            )
            if not summary["ranks_identical"]:
                print("warning: DDP ranks ended with different weights", file=sys.stderr)
        return summary


def sync_loss(model: nn.Module, scores: Tensor, label: Tensor, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of in-sync labels: on VocaLiST's logits, or on SyncNet*'s
    cosine similarity taken as a probability (clamped away from 0 and 1, as BCE needs)."""
    if getattr(model, "outputs_probability", False):
        return nn.functional.binary_cross_entropy(
            scores.clamp(1e-6, 1 - 1e-6), label, reduction=reduction)
    return nn.functional.binary_cross_entropy_with_logits(scores, label, reduction=reduction)


def train(config: TrainConfig) -> Path:
    """Train (or continue training) a model as ``config`` says; returns ``<out_dir>/last.pth``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is created here (NCCL on CUDA,
    Gloo on CPU) unless the caller already made one, and the model is wrapped in
    DistributedDataParallel. Only rank 0 writes files. Throughput (samples/s) and the share
    of step time spent waiting for data are logged and written to ``<out_dir>/summary.json``.
    """
    cuda = config.device.startswith("cuda") or (
        config.device == "auto" and torch.cuda.is_available())
    with process_group(cuda) as ctx:
        return _Trainer(config, ctx).run()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lipsync_fix.training [--config FILE] [--<field> VALUE ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m lipsync_fix.training",
        description="Train VocaLiST or SyncNet* (one process, or under torchrun for DDP).",
    )
    parser.add_argument("--config", help="a .json or .toml file of TrainConfig fields")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, dest=field.name, default=None, metavar="VALUE")
    args = vars(parser.parse_args(argv))
    config_file = args.pop("config")
    try:
        if config_file:
            cfg = TrainConfig.from_file(config_file, **args)
        else:
            cfg = TrainConfig.from_dict({}, **args)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    train(cfg)
    return 0
