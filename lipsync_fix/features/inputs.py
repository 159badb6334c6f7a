"""What each model family reads, and how stored crops and audio become those inputs.

A sync model names its inputs (``model.inputs``); the front end and the scorer ask the
recipe of that name, so neither needs to know a model family:

* ``"wav2lip"`` (VocaLiST, SyncNet*): 96x96 crops cut as Wav2Lip cuts them, of which only
  the lower half (mouth and chin, 48x96) is kept; BGR scaled to 0..1, frames stacked
  frame-major into 3*T channels; audio as the 80-band log-mel, 80 frames per second.

Per-frame crops are stored as uint8 (13.8 KB a frame for the lower half) and turned into
float windows only for the batch being scored, so a long clip's features stay small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lipsync_fix.faces import WAV2LIP_PADS, crop_face
from lipsync_fix.features.constants import CROP_SIZE, SAMPLES_PER_FRAME
from lipsync_fix.features.mel import (
    HOP_LENGTH,
    log_mel_spectrogram,
    mel_frame_of,
    mel_frames_for,
)

CropFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``crop(frame_bgr, box_xywh) -> uint8 crop``."""


@dataclass(frozen=True)
class InputRecipe:
    """How a model family's inputs are made; see the module docstring."""

    name: str
    crop_size: int
    crop_pad: tuple[int, int, int, int]
    stored_rows: slice  # rows of the crop that are kept per frame
    audio_hop: int  # samples per audio feature frame
    audio_margin: int  # feature frames at a chunk's edges that differ from a whole-clip run

    def crop(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The stored part of one frame's crop, uint8."""
        return crop_face(frame_bgr, box, self.crop_size, self.crop_pad)[self.stored_rows]

    def stored_shape(self) -> tuple[int, int, int]:
        rows = len(range(*self.stored_rows.indices(self.crop_size)))
        return (rows, self.crop_size, 3)

    def video_windows(
        self, frames: np.ndarray | Tensor, starts: np.ndarray, window_frames: int
    ) -> Tensor:
        """Stored frames (N, h, w, 3) uint8, or float (N, 3, h, w) in 0..1, and local
        window starts -> model input (B, 3*T, h, w) float32."""
        x = torch.as_tensor(frames)
        idx = torch.as_tensor(np.asarray(starts, dtype=np.int64))
        offsets = idx[:, None] + torch.arange(window_frames)[None, :]
        if len(idx) and int(offsets.max()) >= x.shape[0]:
            raise ValueError("a video window runs past the last frame")
        windows = x[offsets]  # (B, T, ...)
        if windows.dtype == torch.uint8:
            windows = windows.permute(0, 1, 4, 2, 3).float().div_(255.0)
        return windows.flatten(1, 2).contiguous()

    def audio_features(self, wav: np.ndarray | Tensor) -> Tensor:
        """Float samples at 16 kHz (n,) -> features (80, 1 + n // 200)."""
        return log_mel_spectrogram(wav)

    def audio_index(self, video_frame: int) -> int:
        """Feature frame where the window of ``video_frame`` starts (``int(80*v/25)``)."""
        return mel_frame_of(video_frame)

    def audio_window_length(self, window_frames: int) -> int:
        return mel_frames_for(window_frames)

    def audio_windows(
        self, features: Tensor, starts: np.ndarray, window_frames: int, offset: int = 0
    ) -> Tensor:
        """Windows of ``features`` (whose column 0 is feature frame ``offset`` of the
        clip) at global video-frame ``starts`` -> (B, 1, 80, L)."""
        length = self.audio_window_length(window_frames)
        idx = torch.tensor([self.audio_index(int(v)) - offset for v in starts],
                           dtype=torch.long)
        cols = idx[:, None] + torch.arange(length)[None, :]
        if len(idx) and (int(cols.min()) < 0 or int(cols.max()) >= features.shape[-1]):
            raise ValueError("an audio window runs outside the audio features")
        return features[:, cols].permute(1, 0, 2).unsqueeze(1).contiguous()

    def audio_span(self, first: int, stop: int, window_frames: int) -> tuple[int, int]:
        """Samples ``[a, b)`` whose features cover the audio windows starting at video
        frames ``first .. stop - 1`` exactly as features of the whole clip would: ``a`` is
        on the feature grid, and a margin keeps the chunk's edge effects (the STFT's
        reflect padding) out of the frames that are used. ``a`` is returned as a feature
        index times the hop, so the chunk's features start at ``a // audio_hop``."""
        a = max(0, self.audio_index(first) - self.audio_margin) * self.audio_hop
        b = (stop - 1 + window_frames) * SAMPLES_PER_FRAME + self.audio_margin * self.audio_hop
        return a, b


WAV2LIP = InputRecipe(
    name="wav2lip",
    crop_size=CROP_SIZE,
    crop_pad=WAV2LIP_PADS,
    stored_rows=slice(CROP_SIZE // 2, CROP_SIZE),
    audio_hop=HOP_LENGTH,
    audio_margin=4,
)

RECIPES = {WAV2LIP.name: WAV2LIP}


def recipe_for(model: object) -> InputRecipe:
    """The input recipe a model reads (``model.inputs``; VocaLiST and SyncNet* read
    ``wav2lip``)."""
    name = getattr(model, "inputs", "wav2lip")
    if name not in RECIPES:
        raise ValueError(f"no input recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]
