"""Benchmark: the authors' per-pair scoring against the cached scorer, and float32 against
bf16, side by side.

Both modes score the same clip with the same paper-size model in one process. The
reference mode is slow (the whole 80M model per window and shift), so by default it
scores a slice of rows from the middle of the clip, where every shift is in range; the
cached mode scores the whole clip. Seconds per window are compared, and offsets are
compared on the rows both scored (only where the best score leads the second by more than
1e-3: below that, the last bits of a float sum decide). The cached scorer then runs again
under bf16 autocast: its speed ratio, whether it picks the same offsets, and (with the
measured bf16 matmul rate as the peak) the share of peak it reaches.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from lipsync_fix.compute import device_name, resolve_device
from lipsync_fix.data.synth import clip_crops, make_talking_head
from lipsync_fix.errors import UsageError
from lipsync_fix.features.mel import log_mel_spectrogram
from lipsync_fix.features.visual import lower_half
from lipsync_fix.models.vocalist import PRESETS, VocaLiST
from lipsync_fix.sync.offsets import best_shifts
from lipsync_fix.sync.scoring import ScoreOptions, num_windows, reference_rows, score_matrix


@dataclass
class ScorerBenchmark:
    preset: str
    device: str
    windows: int
    reference_windows: int
    reference_s_per_window: float
    cached_s_per_window: float
    speedup: float
    offsets_identical: bool
    offsets_compared: int
    max_abs_score_diff: float
    gflops: float
    matmul_gflops: float
    bf16_s_per_window: float
    bf16_speedup: float  # float32 cached time / bf16 cached time
    bf16_offsets_agree: float  # share of clearly decided rows with the same best shift
    bf16_gflops: float
    bf16_matmul_gflops: float
    bf16_peak_share: float  # achieved bf16 rate / measured bf16 matmul rate

    def to_json(self) -> dict:
        return asdict(self)


def bench_clip(duration_s: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A generated talking-head clip: lower-half crops, whole-clip mel, sample count."""
    clip = make_talking_head(seed, duration_s=duration_s)
    return lower_half(clip_crops(clip)), log_mel_spectrogram(clip.audio), len(clip.audio)


def matmul_gflops(
    device: torch.device, size: int = 2048, repeats: int = 10,
    dtype: torch.dtype = torch.float32,
) -> float:
    """The machine's matmul rate in ``dtype``: the ceiling any scorer can approach."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _margin_mask(scores: np.ndarray, min_margin: float = 1e-3) -> np.ndarray:
    top2 = np.sort(scores, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > min_margin


def run_scorer_benchmark(
    preset: str = "paper",
    duration_s: float = 4.0,
    reference_windows: int | None = 6,
    device: str = "cpu",
    seed: int = 0,
) -> ScorerBenchmark:
    """Time both modes on one generated clip; ``reference_windows=None`` scores all rows."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; use {', '.join(sorted(PRESETS))}")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model = VocaLiST(PRESETS[preset]).to(dev).eval()
    frames, mel, n_samples = bench_clip(duration_s, seed)
    n_rows = num_windows(frames.shape[0], n_samples)
    opts = ScoreOptions(device=dev).for_device()
    bf16 = ScoreOptions(device=dev, autocast=torch.bfloat16).for_device()

    score_matrix(model, frames[:12], mel, n_samples, opts)  # warm-up (allocator, kernels)
    _sync(dev)
    start = time.perf_counter()
    cached = score_matrix(model, frames, mel, n_samples, opts)
    _sync(dev)
    cached_s = (time.perf_counter() - start) / n_rows

    # The reference scores a slice of rows from the middle, where every shift is in range.
    s = opts.max_shift
    rows = n_rows if reference_windows is None else min(reference_windows, n_rows)
    r0 = max(0, min(n_rows // 2 - rows // 2, n_rows - rows))
    ref_opts = ScoreOptions(device=dev, mode="reference")
    start = time.perf_counter()
    reference = reference_rows(model, frames, mel, n_samples, range(r0, r0 + rows), ref_opts)
    _sync(dev)
    reference_s = (time.perf_counter() - start) / rows

    compared = cached[r0 : r0 + rows]
    mask = _margin_mask(reference) & _margin_mask(compared)
    identical = bool(np.array_equal(best_shifts(reference)[mask], best_shifts(compared)[mask]))

    score_matrix(model, frames[:12], mel, n_samples, bf16)  # warm-up
    _sync(dev)
    start = time.perf_counter()
    lower = score_matrix(model, frames, mel, n_samples, bf16)
    _sync(dev)
    bf16_s = (time.perf_counter() - start) / n_rows
    clear = _margin_mask(cached, 0.05)
    agree = float(np.mean(best_shifts(cached)[clear] == best_shifts(lower)[clear])) \
        if clear.any() else float("nan")

    with FlopCounterMode(display=False) as counter:
        score_matrix(model, frames[: 5 + 2 * s + 8], mel, n_samples, opts)
    counted_rows = num_windows(5 + 2 * s + 8, n_samples)
    flops_per_window = counter.get_total_flops() / counted_rows
    peak_size = 8192 if dev.type == "cuda" else 2048
    bf16_peak = matmul_gflops(dev, peak_size, dtype=torch.bfloat16)
    return ScorerBenchmark(
        preset=preset,
        device=device_name(dev),
        windows=n_rows,
        reference_windows=rows,
        reference_s_per_window=reference_s,
        cached_s_per_window=cached_s,
        speedup=reference_s / cached_s,
        offsets_identical=identical,
        offsets_compared=int(mask.sum()),
        max_abs_score_diff=float(np.abs(reference - compared).max()),
        gflops=flops_per_window / cached_s / 1e9,
        matmul_gflops=matmul_gflops(dev, peak_size),
        bf16_s_per_window=bf16_s,
        bf16_speedup=cached_s / bf16_s,
        bf16_offsets_agree=agree,
        bf16_gflops=flops_per_window / bf16_s / 1e9,
        bf16_matmul_gflops=bf16_peak,
        bf16_peak_share=flops_per_window / bf16_s / 1e9 / bf16_peak,
    )
