"""SyncNet*: the paper's baseline, Wav2Lip's lip-sync expert discriminator.

Two 2-D conv encoders, one over the 5 lower-half frames stacked as 15 channels and one
over the 80x16 mel window, each ending in a 512-d embedding; the score of a pair is the
cosine similarity of the two L2-normalised embeddings. Both embeddings come out of a ReLU,
so the similarity lies in 0..1 and is trained directly with binary cross-entropy, as in
Wav2Lip (VocaLiST's Table 2 calls this model trained on Acappella "SyncNet*").

It reads exactly what VocaLiST reads (BGR, frame-major channels, lower half, the same
mel), so the data pipeline, the scorer and the evaluation are shared. Module names
follow Wav2Lip's ``SyncNet_color`` so its released ``lipsync_expert.pth`` loads strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from lipsync_fix.features.constants import FRAMES_PER_WINDOW
from lipsync_fix.models.layers import Conv2dBlock, Dimensions

SYNCNET_STAR_FAMILY = "syncnet-star"
"""The family of the paper's SyncNet* baseline (lipsync-fix 0.2 called it ``syncnet``; see
:data:`lipsync_fix.models.checkpoint.FAMILY_ALIASES`)."""


@dataclass(frozen=True)
class SyncNetDimensions(Dimensions):
    """Widths of a SyncNet* model; the defaults are Wav2Lip's (16.4M parameters)."""

    video_widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    audio_widths: tuple[int, ...] = (32, 64, 128, 256)
    embed_dim: int = 512


SYNCNET_PRESETS: dict[str, SyncNetDimensions] = {
    "paper": SyncNetDimensions(),
    # Same widths as VocaLiST's small preset, so the two families compare at equal cost.
    "small": SyncNetDimensions((8, 16, 32, 64, 128), (16, 24, 32, 64), 128),
    "tiny": SyncNetDimensions((4, 8, 8, 16, 32), (4, 8, 8, 16), 32),
}


def face_encoder(widths: tuple[int, ...], embed_dim: int, frames: int) -> nn.Sequential:
    """17 conv blocks over (H, W) with the frames stacked as channels: 48x96 -> 1x1."""
    w0, w1, w2, w3, w4 = widths
    return nn.Sequential(
        Conv2dBlock(3 * frames, w0, 7, 1, 3),
        Conv2dBlock(w0, w1, 5, (1, 2), 1),
        Conv2dBlock(w1, w1, 3, 1, 1, residual=True),
        Conv2dBlock(w1, w1, 3, 1, 1, residual=True),
        Conv2dBlock(w1, w2, 3, 2, 1),
        Conv2dBlock(w2, w2, 3, 1, 1, residual=True),
        Conv2dBlock(w2, w2, 3, 1, 1, residual=True),
        Conv2dBlock(w2, w2, 3, 1, 1, residual=True),
        Conv2dBlock(w2, w3, 3, 2, 1),
        Conv2dBlock(w3, w3, 3, 1, 1, residual=True),
        Conv2dBlock(w3, w3, 3, 1, 1, residual=True),
        Conv2dBlock(w3, w4, 3, 2, 1),
        Conv2dBlock(w4, w4, 3, 1, 1, residual=True),
        Conv2dBlock(w4, w4, 3, 1, 1, residual=True),
        Conv2dBlock(w4, embed_dim, 3, 2, 1),
        Conv2dBlock(embed_dim, embed_dim, 3, 1, 0),
        Conv2dBlock(embed_dim, embed_dim, 1, 1, 0),
    )


def mel_encoder(widths: tuple[int, ...], embed_dim: int) -> nn.Sequential:
    """14 conv blocks over (mel, time): 80x16 -> 1x1."""
    w0, w1, w2, w3 = widths
    return nn.Sequential(
        Conv2dBlock(1, w0, 3, 1, 1),
        Conv2dBlock(w0, w0, 3, 1, 1, residual=True),
        Conv2dBlock(w0, w0, 3, 1, 1, residual=True),
        Conv2dBlock(w0, w1, 3, (3, 1), 1),
        Conv2dBlock(w1, w1, 3, 1, 1, residual=True),
        Conv2dBlock(w1, w1, 3, 1, 1, residual=True),
        Conv2dBlock(w1, w2, 3, 3, 1),
        Conv2dBlock(w2, w2, 3, 1, 1, residual=True),
        Conv2dBlock(w2, w2, 3, 1, 1, residual=True),
        Conv2dBlock(w2, w3, 3, (3, 2), 1),
        Conv2dBlock(w3, w3, 3, 1, 1, residual=True),
        Conv2dBlock(w3, w3, 3, 1, 1, residual=True),
        Conv2dBlock(w3, embed_dim, 3, 1, 0),
        Conv2dBlock(embed_dim, embed_dim, 1, 1, 0),
    )


class SyncNetStar(nn.Module):
    """(5 lip frames, 16 mel frames) -> cosine similarity in 0..1 (a probability, not a
    logit: train it with :func:`torch.nn.functional.binary_cross_entropy`)."""

    family = SYNCNET_STAR_FAMILY
    inputs = "wav2lip"  # 96x96 Wav2Lip crops (lower half read) + 80-band mel
    outputs_probability = True
    window_frames = FRAMES_PER_WINDOW

    def __init__(self, dims: SyncNetDimensions | None = None):
        super().__init__()
        self.dims = dims or SyncNetDimensions()
        self.face_encoder = face_encoder(self.dims.video_widths, self.dims.embed_dim,
                                         FRAMES_PER_WINDOW)
        self.audio_encoder = mel_encoder(self.dims.audio_widths, self.dims.embed_dim)

    def encode_video(self, video: Tensor) -> Tensor:
        """(B, 15, 48, 96) -> unit-norm embeddings (B, D)."""
        x = self.face_encoder(video)
        if x.shape[2:] != (1, 1):
            raise ValueError(f"SyncNet* reads 5-frame 48x96 windows, got {tuple(video.shape[1:])}")
        return F.normalize(x.flatten(1), p=2, dim=1)

    def encode_audio(self, mel: Tensor) -> Tensor:
        """(B, 1, 80, 16) -> unit-norm embeddings (B, D)."""
        x = self.audio_encoder(mel)
        if x.shape[2:] != (1, 1):
            raise ValueError(f"SyncNet* reads 80x16 mel windows, got {tuple(mel.shape[2:])}")
        return F.normalize(x.flatten(1), p=2, dim=1)

    def pair_scorer(self, video_tokens: Tensor, audio_tokens: Tensor):
        """Scores of (video window, audio window) index pairs from cached embeddings."""
        return lambda vi, ai: (video_tokens[vi] * audio_tokens[ai]).sum(-1)

    def forward(self, video: Tensor, mel: Tensor) -> Tensor:
        """Cosine similarity of each (video, mel) pair -> (B,)."""
        return (self.encode_video(video) * self.encode_audio(mel)).sum(-1)
