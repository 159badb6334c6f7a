"""LSE-D and LSE-C, the metric itself: the lip-sync numbers of the talking-head
literature, as the original SyncNet (joonson/syncnet_python
``SyncNetInstance.evaluate``) computes them over face crops.

Papers on talking-head generation (Wav2Lip and those that follow it) report the mean over
their test clips of two numbers from that ``evaluate()`` with ``syncnet_v2.model`` and a
search range of +-15 frames (``vshift``):

* **LSE-D** (``minval``): the smallest mean embedding distance over the 31 shifts (lower =
  better sync);
* **LSE-C** (``conf``): the median of those 31 mean distances minus the smallest (higher =
  more confident).

It also reports an offset in frames with the reference's sign: **positive when the audio
leads the picture** (the sound comes early). Our library's ``audio_delay_ms`` is positive
when the audio comes late, so ``audio_delay_ms = -offset * 40``.

The arithmetic reproduces the reference exactly, quirks included: the audio embeddings are
padded with ``vshift`` **zero vectors** at each end, so shifts that fall off the clip are
compared with zeros and still count in the mean (they are not masked); the last complete
5-frame window is dropped; the framewise confidence is median-filtered over 9 windows with
zero padding. :func:`evaluate_crops` does that on 224x224 crops and int16-scale audio and
matches the reference's golden numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lipsync_fix.compute import full_float32
from lipsync_fix.errors import ClipTooShortError, UsageError
from lipsync_fix.faces.reference import REFERENCE_CROP_SIZE, zero_padded_median
from lipsync_fix.features.constants import FRAME_MS, FRAMES_PER_WINDOW, SAMPLE_RATE
from lipsync_fix.features.inputs import SYNCNET
from lipsync_fix.features.mfcc import mfcc_matrix
from lipsync_fix.models.syncnet_v2 import PAIRWISE_EPS
from lipsync_fix.sync.scoring import num_windows

VSHIFT = 15
"""Shifts searched either way, in frames: what ``run_syncnet.py`` uses and papers report."""

EVAL_BATCH = 20
"""Windows per forward pass, as the reference (in eval mode it changes no result)."""

FRAMEWISE_FILTER = 9
"""Median filter length of the framewise confidence."""

SYNCNET_INPUTS = "syncnet-v2"
"""The ``inputs`` attribute of a model that reads 224x224 crops and MFCC (SyncNetV2)."""


@dataclass(frozen=True, eq=False)
class LseScores:
    """The reference ``evaluate()``'s results for one clip.

    ``offset`` uses the reference's sign (positive: audio leads); ``audio_delay_ms`` is
    ours (positive: audio late). ``distances`` ``(windows, 2 vshift + 1)`` are embedding
    distances (lower = more in sync), ``mean_distances`` their column means,
    ``framewise_confidence`` the median-filtered per-window confidence (``fconfm``).
    """

    offset: int
    min_index: int
    lse_d: float
    lse_c: float
    median: float
    vshift: int
    distances: np.ndarray
    mean_distances: np.ndarray
    framewise_confidence: np.ndarray

    @property
    def windows(self) -> int:
        return int(self.distances.shape[0])

    @property
    def audio_delay_ms(self) -> float:
        """The offset in our convention: > 0 when the sound comes after the lips."""
        return -self.offset * FRAME_MS if self.offset else 0.0

    def to_json(self) -> dict:
        return {
            "lse_d": round(self.lse_d, 4),
            "lse_c": round(self.lse_c, 4),
            "syncnet_offset": self.offset,
            "audio_delay_ms": self.audio_delay_ms,
            "audio_delay_frames": -self.offset,
            "windows": self.windows,
            "vshift": self.vshift,
        }


def distance_matrix(video_emb: torch.Tensor, audio_emb: torch.Tensor,
                    vshift: int = VSHIFT) -> torch.Tensor:
    """``(N, 2 vshift + 1)``: entry ``[i, j]`` is the distance of video window i to audio
    window ``i + j - vshift``, where audio windows outside ``0..N-1`` are zero vectors
    (the reference's ``calc_pdist``; distances use the +1e-6 eps of ``pairwise_distance``)."""
    if video_emb.shape != audio_emb.shape or video_emb.dim() != 2:
        raise ValueError(f"embeddings must both be (N, D), got {tuple(video_emb.shape)} "
                         f"and {tuple(audio_emb.shape)}")
    n = video_emb.shape[0]
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))
    return torch.stack([F.pairwise_distance(video_emb, padded[j:j + n], eps=PAIRWISE_EPS)
                        for j in range(2 * vshift + 1)], dim=1)


def lse_from_distances(distances: torch.Tensor, vshift: int = VSHIFT) -> LseScores:
    """Offset, LSE-D, LSE-C and framewise confidence from a distance matrix, computed in
    float32 as the reference does (mean over every row, padded shifts included)."""
    if distances.dim() != 2 or distances.shape[1] != 2 * vshift + 1 or distances.shape[0] < 1:
        raise ValueError(f"expected (N >= 1, {2 * vshift + 1}) distances, "
                         f"got {tuple(distances.shape)}")
    mean = distances.mean(dim=0)
    min_index = int(torch.argmin(mean))  # the first of equal minima, like torch.min
    minval = mean[min_index]
    median = torch.median(mean)  # 2 vshift + 1 values: the middle one
    framewise = (median - distances[:, min_index]).numpy()
    return LseScores(
        offset=vshift - min_index,
        min_index=min_index,
        lse_d=float(minval),
        lse_c=float(median - minval),
        median=float(median),
        vshift=vshift,
        distances=distances.numpy(),
        mean_distances=mean.numpy(),
        framewise_confidence=zero_padded_median(framewise, FRAMEWISE_FILTER),
    )


def _embed_in_batches(
    encode: Callable[[np.ndarray], torch.Tensor], n_windows: int, batch_size: int
) -> torch.Tensor:
    """``encode(starts)`` over windows ``0 .. n_windows - 1`` in batches of ``batch_size``,
    in true float32 (the metric is the reference's), gathered on the CPU."""
    out = []
    with torch.inference_mode(), full_float32():
        for start in range(0, n_windows, batch_size):
            starts = np.arange(start, min(start + batch_size, n_windows))
            out.append(encode(starts).float().cpu())
    return torch.cat(out)


def embed_video(
    model: nn.Module,
    crops: np.ndarray,
    n_windows: int,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Lip embeddings ``(n_windows, 1024)`` of 224x224 BGR ``crops`` ``(N, 224, 224, 3)``
    uint8; window ``v`` is frames ``v .. v+4``. Batches of ``batch_size`` windows."""
    return _embed_in_batches(
        lambda starts: model.encode_video(
            SYNCNET.video_windows(crops, starts, FRAMES_PER_WINDOW).to(device)),
        n_windows, batch_size)


def embed_audio(
    model: nn.Module,
    cct: torch.Tensor,
    n_windows: int,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Audio embeddings ``(n_windows, 1024)`` of an MFCC matrix ``cct`` ``(13, M)``;
    window ``v`` is columns ``4 v .. 4 v + 19``."""
    return _embed_in_batches(
        lambda starts: model.encode_audio(
            SYNCNET.audio_windows(cct, starts, FRAMES_PER_WINDOW).to(device)),
        n_windows, batch_size)


def embed_clip(
    model: nn.Module,
    crops: np.ndarray,
    cct: torch.Tensor,
    n_windows: int,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings of a clip (:func:`embed_video`, :func:`embed_audio`)."""
    return (embed_video(model, crops, n_windows, batch_size, device),
            embed_audio(model, cct, n_windows, batch_size, device))


def evaluate_crops(
    model: nn.Module,
    crops: np.ndarray,
    audio: np.ndarray,
    vshift: int = VSHIFT,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
) -> LseScores:
    """The reference ``evaluate()`` on in-memory inputs: ``crops`` ``(N, 224, 224, 3)``
    uint8 BGR face crops at 25 fps, ``audio`` 16 kHz mono **int16-scale** samples."""
    require_syncnet(model)
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (REFERENCE_CROP_SIZE, REFERENCE_CROP_SIZE, 3) \
            or crops.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops (N, 224, 224, 3), got {crops.dtype} "
                         f"{crops.shape}")
    n_windows = num_windows(len(crops), len(audio))
    if n_windows < 1:
        raise ClipTooShortError(
            f"{len(crops)} frames and {len(audio) / SAMPLE_RATE:.2f} s of audio are too short "
            f"for SyncNet, which needs at least {FRAMES_PER_WINDOW + 1} frames of both")
    video_emb, audio_emb = embed_clip(model, crops, mfcc_matrix(audio), n_windows,
                                      batch_size, device)
    return lse_from_distances(distance_matrix(video_emb, audio_emb, vshift), vshift)


def require_syncnet(model: nn.Module) -> None:
    if getattr(model, "inputs", None) != SYNCNET_INPUTS:
        raise UsageError(
            f"LSE needs the original SyncNet (syncnet-v2), not a {getattr(model, 'family', '?')} "
            "model; pass -c syncnet-v2 or a syncnet_v2.model file")
