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
  ``global_epoch``) plus ``model``, ``dims``, ``context``, the config and RNG states as
  plain tensors, so they load with ``weights_only=True`` and a resumed run continues
  bit-for-bit on CPU;
* multi-process training is plain :class:`~torch.nn.parallel.DistributedDataParallel` under
  ``torchrun``; each rank draws from its own seeded stream, which is what a
  ``DistributedSampler`` would give for a data set that is sampled rather than enumerated.

Run it with ``python -m lipsync_fix.training --config run.toml`` (or under ``torchrun
--nproc_per_node N``); any config field can be overridden on the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import typing
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lipsync_fix.audio import (
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    chunk_mel,
    chunk_rms,
    log_mel_spectrogram,
    mel_frames_for,
)
from lipsync_fix.checkpoint import (
    FAMILIES,
    build_model,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
    write_atomically,
)
from lipsync_fix.datasets import AUDIO_NAME, frame_count, list_clips, read_crop, read_wav
from lipsync_fix.errors import LipsyncError
from lipsync_fix.model import (
    FRAMES_PER_WINDOW,
    count_parameters,
)
from lipsync_fix.visual import lower_half

__all__ = [
    "MAX_NEGATIVE_DRAWS",
    "MIN_CLIP_FRAMES",
    "SILENCE_RMS",
    "PairDraw",
    "SyncPairDataset",
    "TrainConfig",
    "main",
    "read_metrics",
    "train",
    "window_mel",
]

MIN_CLIP_FRAMES = 25
"""A clip is used only if it has *more* than this many frames (the reference's buffer)."""

SILENCE_RMS = 0.01
"""Positive audio at or below this RMS counts as silent: its negative must not be silent too."""

MAX_NEGATIVE_DRAWS = 11
"""Draws of ``g`` allowed against a silent positive before the sample is dropped. The reference
counts failures from 0 and gives up once its counter exceeds 10, which is 11 draws."""

_MAX_SAMPLE_ATTEMPTS = 10_000
"""Guard against an endless sampling loop. Positives are never dropped, so only a freak run
of coin flips could reach it; a data set of silent clips shows up as too many positives."""

_VAL_SEED_SALT = 0x5EED_0FA1
"""Mixed into the config seed so the validation pairs never coincide with a training stream."""


# ---------------------------------------------------------------------------------------------
# Training pairs
# ---------------------------------------------------------------------------------------------


def window_mel(wav: np.ndarray, start_frame: int, context: int = FRAMES_PER_WINDOW) -> Tensor:
    """Training-recipe mel of the ``context``-frame audio window at video frame
    ``start_frame`` -> (1, 80, :func:`mel_frames_for` (context)).

    For 5 frames this is exactly :func:`lipsync_fix.audio.chunk_mel`; longer windows use the
    same recipe on a longer chunk (the chunk is cut before the STFT, last frame dropped).
    """
    start = start_frame * SAMPLES_PER_FRAME
    if context == FRAMES_PER_WINDOW:
        return chunk_mel(wav, start)
    n = context * SAMPLES_PER_FRAME
    chunk = np.asarray(wav, dtype=np.float32)[start : start + n]
    if len(chunk) != n:
        raise ValueError(f"audio window at frame {start_frame} runs past the end of the audio")
    return log_mel_spectrogram(chunk)[:, : mel_frames_for(context)].unsqueeze(0)


@dataclass(frozen=True)
class PairDraw:
    """Which pair one sample index stands for, before any pixels or audio are decoded.

    ``video_start`` is ``f``; ``audio_start`` is ``f`` for a positive (``label`` 1) and the
    other start ``g`` for a negative. ``dropped`` counts the samples thrown away by the
    silence rule before this one was accepted (the reference's ``continue``).
    """

    clip: int
    video_start: int
    audio_start: int
    label: int
    dropped: int


@dataclass(frozen=True)
class _ClipAudio:
    wav: np.ndarray
    rms: np.ndarray  # chunk RMS (reference quirk: all-zero -> 1.0) of every window start


class SyncPairDataset(Dataset):
    """Random (lip window, audio window, in-sync?) pairs drawn as the authors' trainer draws.

    The data set is *sampled*, not enumerated: item ``i`` is drawn from a generator seeded
    with ``(seed, rank, i)``, so any index gives a valid sample, the same index always gives
    the same sample, and a resumed run simply continues at the next index. ``len()`` is the
    nominal epoch length (the reference uses the number of clips), used for epoch counting.

    Item ``i`` is ``(video (3*context, 48, 96) float32 BGR 0..1, mel (1, 80, M) float32,
    label float32 scalar)`` with ``M = mel_frames_for(context)`` (16 for 5 frames).

    Clips with at most :data:`MIN_CLIP_FRAMES` frames are skipped when the data set is built
    (listed in :attr:`skipped`), as are clips whose audio is missing or not 16 kHz, with the
    reason. ``N = min(frames, audio frames)`` of a clip bounds its window starts
    ``0..N-context``.
    """

    def __init__(
        self,
        clips: Sequence[str | Path],
        *,
        context: int = FRAMES_PER_WINDOW,
        seed: int = 0,
        rank: int = 0,
        epoch_length: int | None = None,
        cache_size: int = 32,
        min_frames: int = MIN_CLIP_FRAMES,
        scan_threads: int = 16,
    ):
        if context < 1:
            raise ValueError(f"context must be at least 1 frame, got {context}")
        self.context = context
        self.seed = int(seed)
        self.rank = int(rank)
        self.cache_size = max(1, int(cache_size))
        self.min_frames = min_frames
        self.mel_frames = mel_frames_for(context)
        self.skipped: list[tuple[Path, str]] = []
        paths = [Path(p) for p in clips]
        with ThreadPoolExecutor(max_workers=max(1, min(scan_threads, len(paths)))) as pool:
            scans = list(pool.map(_scan_clip, paths))
        kept: list[Path] = []
        usable: list[int] = []
        for path, (frames, audio_frames, problem) in zip(paths, scans, strict=True):
            n = min(frames, audio_frames)
            if problem is None and frames <= min_frames:
                problem = f"{frames} frames (needs more than {min_frames})"
            if problem is None and n - context < 1:
                problem = f"only {n} frames with audio (a {context}-frame pair needs 2 starts)"
            if problem is not None:
                self.skipped.append((path, problem))
                continue
            kept.append(path)
            usable.append(n)
        if not kept:
            detail = f"; e.g. {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""
            raise LipsyncError(f"no usable training clips among {len(paths)}{detail}")
        self.clips = kept
        self.usable_frames = np.asarray(usable, dtype=np.int64)
        self.epoch_length = int(epoch_length) if epoch_length else len(kept)
        self._cache: OrderedDict[int, _ClipAudio] = OrderedDict()

    @classmethod
    def from_split(
        cls, data_root: str | Path, split: str = "train", **kwargs: Any
    ) -> SyncPairDataset:
        """The clips of ``filelists/<split>.txt`` under ``data_root`` (see
        :func:`lipsync_fix.datasets.list_clips`)."""
        return cls(list_clips(data_root, split), **kwargs)

    def __len__(self) -> int:
        return self.epoch_length

    def __getstate__(self) -> dict[str, Any]:
        # Loader workers start with an empty cache rather than a copy of the parent's.
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def _audio(self, clip: int) -> _ClipAudio:
        """The clip's audio and per-start RMS, from a small LRU cache (lazy loading)."""
        cached = self._cache.get(clip)
        if cached is not None:
            self._cache.move_to_end(clip)
            return cached
        wav = read_wav(self.clips[clip] / AUDIO_NAME)
        n_starts = int(self.usable_frames[clip]) - self.context + 1
        length = self.context * SAMPLES_PER_FRAME
        rms = np.array([chunk_rms(wav, s * SAMPLES_PER_FRAME, length) for s in range(n_starts)])
        entry = _ClipAudio(wav, rms)
        self._cache[clip] = entry
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index``: depends on (seed, rank, index) only."""
        if index < 0:
            raise IndexError(f"sample index must be non-negative, got {index}")
        return np.random.default_rng([self.seed, self.rank, int(index)])

    def draw(self, index: int) -> PairDraw:
        """Decide the pair of sample ``index`` exactly as the reference's ``__getitem__`` loop.

        Per attempt: a random clip, a start ``f`` in ``0..N-context``, a fair coin. Heads: the
        positive. Tails: draw ``g != f``; if the positive's RMS is above :data:`SILENCE_RMS`
        any ``g`` will do, otherwise ``g`` is redrawn until its audio is louder than that,
        and after :data:`MAX_NEGATIVE_DRAWS` failures the attempt is dropped and the loop
        starts over (new clip, new coin). Dropping only ever hits negatives, so the share of
        positives rises above one half by the share of dropped attempts, as in the reference.
        """
        rng = self.rng(index)
        for dropped in range(_MAX_SAMPLE_ATTEMPTS):
            clip = int(rng.integers(len(self.clips)))
            last_start = int(self.usable_frames[clip]) - self.context
            f = int(rng.integers(0, last_start + 1))
            if rng.random() < 0.5:
                return PairDraw(clip, f, f, 1, dropped)
            rms = self._audio(clip).rms
            failures = 0
            while failures < MAX_NEGATIVE_DRAWS:
                g = int(rng.integers(0, last_start + 1))
                if g == f:
                    continue
                if rms[f] > SILENCE_RMS or rms[g] > SILENCE_RMS:
                    return PairDraw(clip, f, g, 0, dropped)
                failures += 1
        raise LipsyncError(
            f"{_MAX_SAMPLE_ATTEMPTS} samples in a row were dropped by the silence rule: "
            "the clips' audio is (nearly) silent everywhere"
        )

    def load(self, pair: PairDraw) -> tuple[Tensor, Tensor, Tensor]:
        """Decode the frames and audio of a drawn pair into model inputs."""
        folder = self.clips[pair.clip]
        frames = range(pair.video_start, pair.video_start + self.context)
        crops = np.stack([read_crop(folder / f"{i}.jpg") for i in frames])
        video = lower_half(crops).flatten(0, 1)  # (3*context, 48, 96), frame-major BGR
        mel = window_mel(self._audio(pair.clip).wav, pair.audio_start, self.context)
        return video, mel, torch.tensor(float(pair.label))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.load(self.draw(index))


def _scan_clip(folder: Path) -> tuple[int, int, str | None]:
    """(jpg frames, whole audio frames, problem or None) without decoding anything."""
    frames = frame_count(folder)
    wav = folder / AUDIO_NAME
    if not wav.is_file():
        return frames, 0, f"no {AUDIO_NAME}"
    try:
        info = sf.info(str(wav))
    except Exception as exc:  # soundfile raises several types for broken files
        return frames, 0, f"unreadable {AUDIO_NAME}: {exc}"
    if info.samplerate != SAMPLE_RATE:
        return frames, 0, f"audio at {info.samplerate} Hz (needs {SAMPLE_RATE})"
    return frames, int(info.frames) // SAMPLES_PER_FRAME, None


class _StreamSampler(Sampler[int]):
    """Sample indices ``start, start+1, ...`` (endless or up to ``stop``), optionally strided.

    The data set is index-keyed, so this is all the sampler a resumable stream needs.
    """

    def __init__(self, start: int, stop: int | None = None, step: int = 1):
        self.start, self.stop, self.step = start, stop, step

    def __iter__(self) -> Iterator[int]:
        i = self.start
        while self.stop is None or i < self.stop:
            yield i
            i += self.step

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless stream has no length")
        return max(0, math.ceil((self.stop - self.start) / self.step))


def _worker_init(_: int) -> None:
    # Loader workers each decode a few JPEGs per sample; OpenCV's own thread pool would only
    # oversubscribe the cores the training process needs.
    cv2.setNumThreads(1)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint.

    ``batch_size`` is the batch of one optimiser step (the paper's 128) *summed over all
    ranks and accumulation steps*: each rank runs ``batch_size / (world_size * grad_accum)``
    samples per forward pass, so changing the hardware does not change the optimisation.
    ``steps`` counts optimiser steps in total (a resumed run stops at the same step).
    ``amp``: ``"auto"`` (bf16 autocast on GPUs that support it, else fp16 with loss scaling;
    off on CPU), ``"bf16"``, ``"fp16"`` or ``"off"``. ``device``: ``"auto"``, ``"cpu"``,
    ``"cuda"``. ``num_workers``: loader processes per rank (None: a share of the CPU cores).
    ``epoch_length``: samples per epoch, for ``global_epoch`` only (None: the number of
    training clips, as the reference). ``val_every``/``checkpoint_every``/``log_every`` are
    in steps (0 disables). ``log_dir``: TensorBoard folder (default ``<out_dir>/tensorboard``;
    used only if the ``tensorboard`` package is installed; ``metrics.jsonl`` is always
    written). ``resume``: continue from ``<out_dir>/last.pth`` if it exists;
    ``resume_from``: continue from that checkpoint. ``init_from``: start from a checkpoint's
    weights (fine-tuning; its size overrides ``preset``) with a fresh optimiser.
    ``model``: ``"vocalist"`` (BCE on logits) or ``"syncnet"`` (the SyncNet* baseline, BCE
    on its cosine similarity; 5-frame context only).
    """

    data_root: str
    out_dir: str
    preset: str = "small"
    model: str = "vocalist"
    init_from: str | None = None
    context: int = FRAMES_PER_WINDOW
    steps: int = 10_000
    batch_size: int = 128
    grad_accum: int = 1
    lr: float = 5e-5
    num_workers: int | None = None
    amp: str = "auto"
    device: str = "auto"
    seed: int = 0
    epoch_length: int | None = None
    train_split: str = "train"
    val_split: str = "val"
    val_every: int = 1000
    val_samples: int = 1024
    val_batch_size: int | None = None
    validate_at_start: bool = False
    checkpoint_every: int = 1000
    log_every: int = 50
    log_dir: str | None = None
    cache_size: int = 32
    resume: bool = False
    resume_from: str | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.model not in FAMILIES:
            raise ValueError(f"unknown model {self.model!r}; choose from {sorted(FAMILIES)}")
        presets = FAMILIES[self.model][2]
        if self.preset not in presets:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(presets)}")
        if self.model == "syncnet" and int(self.context) != FRAMES_PER_WINDOW:
            raise ValueError(f"SyncNet* is trained on {FRAMES_PER_WINDOW}-frame windows only")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, off, bf16 or fp16, not {self.amp!r}")
        for name in ("steps", "batch_size", "grad_accum", "context", "val_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, so the config can sit inside a ``weights_only`` checkpoint."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], **overrides: Any) -> TrainConfig:
        """Build from a mapping; unknown keys are an error (a typo must not pass silently).
        ``overrides`` whose value is None are ignored, so CLI defaults do not clobber files."""
        merged = {**values, **{k: v for k, v in overrides.items() if v is not None}}
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(merged) - set(hints))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(hints)}")
        return cls(**{k: _coerce(hints[k], v, k) for k, v in merged.items()})

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Load a ``.json`` or ``.toml`` file (top level, or a ``[train]`` table)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            values: dict[str, Any] = tomllib.loads(text)
        else:
            values = json.loads(text)
        if set(values) == {"train"} and isinstance(values["train"], dict):
            values = values["train"]
        return cls.from_dict(values, **overrides)


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """Convert a value read from a file or the command line to the field's type."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "")):
        if not optional:
            raise ValueError(f"config {name} cannot be empty")
        return None
    if base is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"config {name}: {value!r} is not a boolean")
        return bool(value)
    if base is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"config {name}: {value!r} is not an integer")
        return int(float(value)) if isinstance(value, str) else int(value)
    if base is float:
        return float(value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# Distributed helpers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int
    world_size: int
    local_rank: int

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_from_env() -> _Dist:
    """Rank layout as ``torchrun`` exports it; a plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return _Dist(rank, world, local)


def _all_reduce_sum(values: Sequence[float], ctx: _Dist, device: torch.device) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def _gather(obj: Any, ctx: _Dist) -> list[Any]:
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def _param_digest(model: nn.Module) -> str:
    """SHA-1 of all parameters' bytes: ranks of a healthy DDP run hold identical weights."""
    h = hashlib.sha1()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------


class _RunLog:
    """Concise console lines, ``metrics.jsonl`` and (if installed) TensorBoard; rank 0 only."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, active: bool, resume_step: int):
        self.active = active
        self.quiet = cfg.quiet
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if not active:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(self.path, resume_step)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.say(f"tensorboard is not installed: metrics go to {self.path} only")
        else:
            log_dir = cfg.log_dir or str(run_dir / "tensorboard")
            self.writer = SummaryWriter(log_dir=log_dir, purge_step=resume_step or None)
            self.say(f"TensorBoard logs in {log_dir}; metrics also in {self.path}")

    def say(self, line: str) -> None:
        if self.active and not self.quiet:
            print(line, flush=True)

    def record(self, kind: str, step: int, **values: float) -> None:
        if not self.active:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _truncate_metrics(path: Path, resume_step: int) -> None:
    """On resume, forget records past the checkpoint (written before a crash) so the file
    reads as one run; on a fresh start, begin an empty file."""
    if not path.exists():
        return
    keep = []
    if resume_step > 0:
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                if int(json.loads(line).get("step", 0)) <= resume_step:
                    keep.append(line)
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of a run's ``metrics.jsonl`` (``kind``: ``"train"``, ``"val"``, ``"summary"``)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _resolve_device(cfg: TrainConfig, ctx: _Dist) -> torch.device:
    name = cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LipsyncError("device cuda was asked for but CUDA is not available")
        # Under torchrun each rank owns the GPU of its local rank.
        index = ctx.local_rank if ctx.enabled else (torch.device(name).index or 0)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(name)


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

    def __init__(self, cfg: TrainConfig, ctx: _Dist):
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
                raise LipsyncError(f"resume_from checkpoint {path} does not exist")
            return path
        last = self.run_dir / "last.pth"
        return last if self.cfg.resume and last.is_file() else None

    def _build_model(self, resume: dict[str, Any] | None) -> nn.Module:
        torch.manual_seed(self.cfg.seed)  # identical initial weights on every rank
        source = resume
        if source is None and self.cfg.init_from:
            source = read_checkpoint(self.cfg.init_from)
        if source is None:
            model = build_model(self.cfg.model, self.cfg.preset, self.cfg.context)
        else:  # its own size (the authors' files carry none: the paper's)
            model = model_from_checkpoint(
                {**source, "context": self.cfg.context}, self.cfg.init_from or "resume")
            if model.family != self.cfg.model:
                raise LipsyncError(f"the checkpoint holds a {model.family} model, but the "
                                   f"config trains {self.cfg.model}")
        return model.to(self.device)

    def _datasets(self) -> tuple[SyncPairDataset, SyncPairDataset | None]:
        cfg, log = self.cfg, self.log
        train_ds = SyncPairDataset.from_split(
            cfg.data_root, cfg.train_split, context=cfg.context, seed=cfg.seed,
            rank=self.ctx.rank, epoch_length=cfg.epoch_length, cache_size=cfg.cache_size,
        )
        log.say(f"train: {len(train_ds.clips)} clips ({len(train_ds.skipped)} skipped)")
        val_ds = None
        if cfg.val_every > 0 or cfg.validate_at_start:
            if not (Path(cfg.data_root) / "filelists" / f"{cfg.val_split}.txt").is_file():
                log.say(f"no filelists/{cfg.val_split}.txt: validation is off")
            else:
                try:
                    # Rank 0's stream of a fixed seed: the same pairs whatever the world size.
                    val_ds = SyncPairDataset.from_split(
                        cfg.data_root, cfg.val_split, context=cfg.context,
                        seed=cfg.seed ^ _VAL_SEED_SALT, rank=0, cache_size=cfg.cache_size,
                    )
                except LipsyncError as exc:
                    log.say(f"validation is off: {exc}")
        return train_ds, val_ds

    def _loader(self, ds: Dataset, sampler: Sampler[int], batch: int) -> DataLoader:
        kwargs: dict[str, Any] = {}
        if self.num_workers > 0:
            kwargs.update(prefetch_factor=2, worker_init_fn=_worker_init)
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
        ckpt = read_checkpoint(resume_path) if resume_path else None
        self.global_step = int(ckpt["global_step"]) if ckpt else 0
        self.log = _RunLog(cfg, self.run_dir, ctx.main, self.global_step)
        if ckpt:
            self.log.say(f"resuming from {resume_path} at step {self.global_step}")
            self._check_resume_compat(ckpt)
        elif (self.run_dir / "last.pth").is_file():
            self.log.say(f"{self.run_dir} already holds last.pth: starting afresh and "
                         "overwriting it (resume=True continues it instead)")
        train_ds, val_ds = self._datasets()
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
        loader = self._loader(train_ds, _StreamSampler(start_index), self.micro_batch)
        origin = cfg.preset if ckpt is None and not cfg.init_from else "from checkpoint"
        name = "SyncNet*" if cfg.model == "syncnet" else "VocaLiST"
        self.log.say(
            f"training {count_parameters(model) / 1e6:.2f}M-param {name} ({origin}), "
            f"context {cfg.context}, on "
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
                    loss_sum, wait_sum = _all_reduce_sum(
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
            k for k in ("batch_size", "grad_accum", "seed", "context", "data_root")
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
        sampler = _StreamSampler(ctx.rank, cfg.val_samples, ctx.world_size)
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
        loss_sum, tp, fp, fn, tn = _all_reduce_sum([loss_sum, tp, fp, fn, tn], ctx, self.device)
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
        states = _gather(_rng_state(self.device), self.ctx)
        if not self.ctx.main:
            return
        step = self.global_step
        extra = {
            "config": self.cfg.to_dict(),
            "context": self.cfg.context,
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
        digests = _gather(_param_digest(model), self.ctx)
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
    ctx = _dist_from_env()
    created = False
    if ctx.enabled and not dist.is_initialized():
        cuda = config.device.startswith("cuda") or (
            config.device == "auto" and torch.cuda.is_available()
        )
        if cuda:
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
        created = True
    try:
        return _Trainer(config, ctx).run()
    finally:
        if created:
            dist.destroy_process_group()


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


if __name__ == "__main__":
    raise SystemExit(main())
