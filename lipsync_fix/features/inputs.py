"""What each model family reads, and how stored crops and audio become those inputs.

A sync model names its inputs (``model.inputs``); the front end and the scorer ask the
recipe of that name, so neither needs to know a model family:

* ``"wav2lip"`` (VocaLiST, SyncNet*): 96x96 crops cut as Wav2Lip cuts them, of which only
  the lower half (mouth and chin, 48x96) is kept; BGR scaled to 0..1, frames stacked
  frame-major into 3*T channels; audio as the 80-band log-mel, 80 frames per second.
* ``"mtdvocalist"`` (MTDVocaLiST): the same 48x96 lower halves and mel, but as its
  authors' loader reads them (torchvision): the padded face box resized to 96x96 with
  torchvision's antialiased bilinear resize
  (:func:`~lipsync_fix.features.visual.torchvision_resize`), channels RGB, values 0..255
  (not divided by 255).
* ``"syncnet-v2"`` (the original SyncNet): 224x224 crops of the reference's geometry, BGR
  0..255 as ``(3, T, 224, 224)``; audio as 13 MFCCs of int16-scale samples, 100 frames per
  second, 4 per video frame.

Per-frame crops are stored as uint8 BGR (the order frames are decoded in, whatever the
recipe) and turned into float windows only for the batch being
scored, so a long clip's features stay small. Features of an audio chunk equal those of
the whole clip wherever they are used (:meth:`InputRecipe.audio_span` leaves a margin for
the edge effects of the STFT's padding or the pre-emphasis).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from lipsync_fix.faces import WAV2LIP_PADS, crop_face, face_region
from lipsync_fix.faces.reference import REFERENCE_CROP_SIZE, box_rect, crop_frame
from lipsync_fix.features.constants import CROP_SIZE, SAMPLES_PER_FRAME
from lipsync_fix.features.mel import (
    HOP_LENGTH,
    log_mel_spectrogram,
    mel_frame_of,
    mel_frames_for,
)
from lipsync_fix.features.mfcc import MFCC_HOP, MFCC_PER_VIDEO_FRAME, int16_scale, mfcc_matrix
from lipsync_fix.features.visual import torchvision_resize


class InputRecipe:
    """How a model family's inputs are made (see the module docstring)."""

    name: str
    crop_size: int  # side of the square crop the recipe cuts (and a data set holds)
    audio_hop: int  # samples per audio feature frame
    audio_margin: int  # feature frames kept clear of a chunk's edges

    def full_crop(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        """One frame's whole face crop, uint8 (crop_size, crop_size, 3): what a data set
        in the authors' layout stores."""
        raise NotImplementedError

    def keep(self, crops: np.ndarray) -> np.ndarray:
        """The part of whole crops (N, s, s, 3) the model reads."""
        return crops

    def fit_crop(self, image_bgr: np.ndarray) -> np.ndarray:
        """A stored face image of any size (a data set's ``N.jpg``) -> the square crop
        this recipe reads, resized as the family's authors' loader resized it."""
        if image_bgr.shape[:2] == (self.crop_size, self.crop_size):
            return image_bgr
        return cv2.resize(image_bgr, (self.crop_size, self.crop_size))

    def crop(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The stored part of one frame's face crop, uint8 (h, w, 3)."""
        return self.keep(self.full_crop(frame_bgr, box)[None])[0]

    def stored_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def video_windows(
        self, frames: np.ndarray | Tensor, starts: np.ndarray, window_frames: int
    ) -> Tensor:
        """Stored frames and local window starts -> the model's video input batch."""
        raise NotImplementedError

    def audio_features(self, wav: np.ndarray | Tensor) -> Tensor:
        """Float samples at 16 kHz (n,) in -1..1 -> features (bands, frames)."""
        raise NotImplementedError

    def audio_index(self, video_frame: int) -> int:
        """Feature frame where the audio window of ``video_frame`` starts."""
        raise NotImplementedError

    def audio_window_length(self, window_frames: int) -> int:
        raise NotImplementedError

    @staticmethod
    def _frame_windows(x: Tensor, starts: np.ndarray, window_frames: int) -> Tensor:
        """(N, ...) per-frame tensor -> (B, T, ...) windows at ``starts``."""
        idx = torch.as_tensor(np.asarray(starts, dtype=np.int64))
        offsets = idx[:, None] + torch.arange(window_frames)[None, :]
        if len(idx) and (int(offsets.min()) < 0 or int(offsets.max()) >= x.shape[0]):
            raise ValueError("a video window runs outside the frames given")
        return x[offsets]

    def audio_windows(
        self, features: Tensor, starts: np.ndarray, window_frames: int, offset: int = 0
    ) -> Tensor:
        """Windows of ``features`` (whose column 0 is feature frame ``offset`` of the
        clip) at global video-frame ``starts`` -> (B, 1, bands, L)."""
        length = self.audio_window_length(window_frames)
        idx = torch.tensor([self.audio_index(int(v)) - offset for v in starts],
                           dtype=torch.long)
        cols = idx[:, None] + torch.arange(length)[None, :]
        if len(idx) and (int(cols.min()) < 0 or int(cols.max()) >= features.shape[-1]):
            raise ValueError("an audio window runs outside the audio features")
        return features[:, cols].permute(1, 0, 2).unsqueeze(1).contiguous()

    def audio_span(self, first: int, stop: int, window_frames: int) -> tuple[int, int]:
        """Samples ``[a, b)`` whose features cover the audio windows starting at video
        frames ``first .. stop - 1`` exactly as features of the whole clip would. ``a``
        lies on the feature grid, so the chunk's features start at ``a // audio_hop``."""
        a = max(0, self.audio_index(first) - self.audio_margin) * self.audio_hop
        b = (stop - 1 + window_frames) * SAMPLES_PER_FRAME + self.audio_margin * self.audio_hop
        return a, b


class Wav2LipInputs(InputRecipe):
    """VocaLiST and SyncNet*: lower halves of 96x96 Wav2Lip crops, 80-band log-mel."""

    name = "wav2lip"
    crop_size = CROP_SIZE
    audio_hop = HOP_LENGTH
    audio_margin = 4  # the STFT reflects 400 samples (2 hops) at a chunk's edges

    def full_crop(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        return crop_face(frame_bgr, box, CROP_SIZE, WAV2LIP_PADS)

    def keep(self, crops: np.ndarray) -> np.ndarray:
        return crops[:, CROP_SIZE // 2 :]

    def stored_shape(self) -> tuple[int, int, int]:
        return (CROP_SIZE // 2, CROP_SIZE, 3)

    def video_windows(
        self, frames: np.ndarray | Tensor, starts: np.ndarray, window_frames: int
    ) -> Tensor:
        """uint8 BGR (N, 48, 96, 3), or float (N, 3, 48, 96) already in this recipe's
        values (BGR, 0..1) -> (B, 3*T, 48, 96)."""
        windows = self._frame_windows(torch.as_tensor(frames), starts, window_frames)
        if windows.dtype == torch.uint8:
            windows = self._channels_first(windows)
        return windows.flatten(1, 2).contiguous()

    @staticmethod
    def _channels_first(windows: Tensor) -> Tensor:
        """uint8 BGR (B, T, h, w, 3) -> float (B, T, 3, h, w) in 0..1."""
        return windows.permute(0, 1, 4, 2, 3).float().div_(255.0)

    def audio_features(self, wav: np.ndarray | Tensor) -> Tensor:
        return log_mel_spectrogram(wav)

    def audio_index(self, video_frame: int) -> int:
        return mel_frame_of(video_frame)

    def audio_window_length(self, window_frames: int) -> int:
        return mel_frames_for(window_frames)


class MTDVocaLiSTInputs(Wav2LipInputs):
    """MTDVocaLiST: Wav2Lip's crop geometry and mel, read as torchvision reads them.

    Its authors load each stored face image with ``torchvision.io.read_image`` (RGB),
    resize it with ``torchvision.transforms.Resize([96, 96])`` and cast to float without
    dividing by 255. Fed VocaLiST's BGR/255 input instead, its scores are meaningless;
    owning that here means no call site has to know it.
    """

    name = "mtdvocalist"

    def full_crop(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        return torchvision_resize(face_region(frame_bgr, box, WAV2LIP_PADS), CROP_SIZE)

    def fit_crop(self, image_bgr: np.ndarray) -> np.ndarray:
        return torchvision_resize(image_bgr, self.crop_size)

    @staticmethod
    def _channels_first(windows: Tensor) -> Tensor:
        """uint8 BGR (B, T, h, w, 3) -> float (B, T, 3, h, w), RGB, 0..255 (float frames
        given to :meth:`video_windows` must already be RGB 0..255)."""
        return windows.flip(-1).permute(0, 1, 4, 2, 3).float()


class SyncNetInputs(InputRecipe):
    """The original SyncNet: whole 224x224 crops of the reference geometry, 13 MFCCs."""

    name = "syncnet-v2"
    crop_size = REFERENCE_CROP_SIZE
    audio_hop = MFCC_HOP
    audio_margin = 2  # pre-emphasis reaches one sample back; frames are not centred

    def full_crop(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        bsi, rect = box_rect(box)
        return crop_frame(frame_bgr, bsi, rect, REFERENCE_CROP_SIZE)

    def stored_shape(self) -> tuple[int, int, int]:
        return (REFERENCE_CROP_SIZE, REFERENCE_CROP_SIZE, 3)

    def video_windows(
        self, frames: np.ndarray | Tensor, starts: np.ndarray, window_frames: int
    ) -> Tensor:
        """uint8 (N, 224, 224, 3) -> (B, 3, T, 224, 224) float, 0..255, BGR."""
        windows = self._frame_windows(torch.as_tensor(frames), starts, window_frames)
        return windows.permute(0, 4, 1, 2, 3).float().contiguous()

    def audio_features(self, wav: np.ndarray | Tensor) -> Tensor:
        return mfcc_matrix(int16_scale(np.asarray(wav)))

    def audio_index(self, video_frame: int) -> int:
        return MFCC_PER_VIDEO_FRAME * video_frame

    def audio_window_length(self, window_frames: int) -> int:
        return MFCC_PER_VIDEO_FRAME * window_frames


WAV2LIP = Wav2LipInputs()
MTDVOCALIST = MTDVocaLiSTInputs()
SYNCNET = SyncNetInputs()
RECIPES: dict[str, InputRecipe] = {r.name: r for r in (WAV2LIP, MTDVOCALIST, SYNCNET)}


def recipe_for(model: object) -> InputRecipe:
    """The input recipe a model reads (``model.inputs``)."""
    name = getattr(model, "inputs", "wav2lip")
    if name not in RECIPES:
        raise ValueError(f"no input recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]
