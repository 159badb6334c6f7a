"""The original SyncNet (Chung and Zisserman, 2016), as published in joonson/syncnet_python.

This is the network whose ``syncnet_v2.model`` the talking-head literature uses to *measure*
lip sync (LSE-D, LSE-C; see :mod:`lipsync_fix.lse`). It is a third model family
beside VocaLiST and the SyncNet* baseline, and it reads different inputs from both:

* video: five 224x224 face crops (the reference's ``crop_video`` geometry, see
  :mod:`lipsync_fix.faces.reference`), BGR, float 0..255, no normalisation;
* audio: 20 MFCC frames x 13 coefficients (:mod:`lipsync_fix.features.mfcc`) computed from
  int16-scale samples.

Each stream is a conv trunk and a two-layer head that ends in a 1024-d embedding, used
as it is (no ReLU, no normalisation). The reference compares embeddings by Euclidean
distance (smaller = more in sync); the scorer protocol wants scores (larger = more in sync),
so :meth:`SyncNetV2.pair_scorer` and :meth:`SyncNetV2.forward` return the negated distance.

Module names, layer indices and the order of the state-dict keys are those of the
reference's model ``S`` so that ``syncnet_v2.model`` (a plain dict of tensors) loads as it
is, with or without the 14 BatchNorm ``num_batches_tracked`` counters the published file is
said to lack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lipsync_fix.errors import CheckpointError
from lipsync_fix.features.constants import FRAMES_PER_WINDOW
from lipsync_fix.models.checkpoint import check_state_dict, register_reader
from lipsync_fix.models.scorer import PairScorer

SYNCNET_V2_FAMILY = "syncnet-v2"
"""Family name of this model in checkpoints and the registry."""

SYNCNET_CROP_SIZE = 224
"""Side of the face crops the lip stream reads."""

MFCC_PER_WINDOW = 20
"""MFCC frames (10 ms each) per 5-frame video window: 4 per video frame."""

EMBEDDING_DIM = 1024
PAIRWISE_EPS = 1e-6
"""The ``eps`` of :func:`torch.nn.functional.pairwise_distance` the reference relies on: it
is added to every component of the difference, so it must be the same to match its numbers."""


def _audio_trunk() -> nn.Sequential:
    """Conv trunk over (13 coefficients, 20 MFCC frames) -> 512 x 1 x 1; indices as ``S``."""
    return nn.Sequential(
        nn.Conv2d(1, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.MaxPool2d(1, 1),
        nn.Conv2d(64, 192, 3, 1, 1), nn.BatchNorm2d(192), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, (1, 2)),
        nn.Conv2d(192, 384, 3, 1, 1), nn.BatchNorm2d(384), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, 1, 1), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, 1, 1), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 512, (5, 4), 1, 0), nn.BatchNorm2d(512), nn.ReLU(),
    )


def _lip_trunk() -> nn.Sequential:
    """Conv trunk over (5 frames, 224, 224) -> 512 x 1 x 1 x 1; the first conv spans all 5
    frames, so time is gone after it. Indices as ``S``."""
    return nn.Sequential(
        nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), nn.BatchNorm3d(96), nn.ReLU(inplace=True),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        # The reference pads this pool with -inf; after a ReLU zero padding is the same.
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        nn.Conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.Conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.Conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        nn.Conv3d(256, 512, (1, 6, 6), 1, 0), nn.BatchNorm3d(512), nn.ReLU(inplace=True),
    )


def _head() -> nn.Sequential:
    """512 -> 512 (BN, ReLU) -> 1024, the embedding (no activation after the last layer)."""
    return nn.Sequential(
        nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, EMBEDDING_DIM),
    )


class SyncNetV2(nn.Module):
    """SyncNet as in joonson/syncnet_python (``syncnet_v2.model``): distance of embeddings.

    Input contract (``inputs = "syncnet-v2"``; VocaLiST and SyncNet* have ``inputs =
    "wav2lip"``), which a front end must honour for the numbers to mean anything:

    * :meth:`encode_video` takes ``(B, 3, 5, 224, 224)`` float32: batch, channel, time,
      height, width. Channel 0 is **B**, 1 G, 2 R (OpenCV order); values are the uint8 pixel
      values cast to float, **0..255, not scaled, not mean-subtracted**. The frames are face
      crops cut with the reference's ``crop_video`` geometry
      (:func:`lipsync_fix.faces.reference.crop_frame`), the whole crop, not a lower half.
      Window ``v`` holds video frames ``v .. v+4`` at 25 fps.
    * :meth:`encode_audio` takes ``(B, 1, 13, 20)`` float32: 13 MFCC coefficients by 20
      frames of 10 ms (see :class:`lipsync_fix.features.inputs.SyncNetInputs`), from 16 kHz
      mono samples **at int16 scale** (-32768..32767, not divided by 32768). Window ``v``
      starts at sample ``640 v``, the start of video frame ``v``, and spans 0.2 s.
    * :meth:`pair_scorer` and :meth:`forward` return ``-||v - a + 1e-6||_2``: higher means
      more in sync (the reference's distance, negated). Scores are unbounded, not
      probabilities (``outputs_probability = False``).
    """

    family = SYNCNET_V2_FAMILY
    inputs = "syncnet-v2"
    window_frames = FRAMES_PER_WINDOW
    outputs_probability = False

    def __init__(self) -> None:
        super().__init__()
        # Assignment order fixes the state-dict key order: audio trunk, audio head, lip
        # head, lip trunk, as in the reference's file.
        self.netcnnaud = _audio_trunk()
        self.netfcaud = _head()
        self.netfclip = _head()
        self.netcnnlip = _lip_trunk()

    def lip_features(self, video: Tensor) -> Tensor:
        """(B, 3, 5, 224, 224) -> the lip trunk's flattened 512-d output
        (the reference's ``forward_lipfeat``)."""
        if video.dim() != 5 or tuple(video.shape[1:]) != (3, FRAMES_PER_WINDOW,
                                                           SYNCNET_CROP_SIZE, SYNCNET_CROP_SIZE):
            raise ValueError(f"SyncNet reads (B, 3, 5, 224, 224) face windows, "
                             f"got {tuple(video.shape)}")
        return self.netcnnlip(video).flatten(1)

    def audio_features(self, mfcc: Tensor) -> Tensor:
        """(B, 1, 13, 20) -> the audio trunk's flattened 512-d output."""
        if mfcc.dim() != 4 or tuple(mfcc.shape[1:]) != (1, 13, MFCC_PER_WINDOW):
            raise ValueError(f"SyncNet reads (B, 1, 13, 20) MFCC windows, got {tuple(mfcc.shape)}")
        return self.netcnnaud(mfcc).flatten(1)

    def encode_video(self, video: Tensor) -> Tensor:
        """(B, 3, 5, 224, 224) BGR 0..255 -> 1024-d lip embeddings (``forward_lip``)."""
        return self.netfclip(self.lip_features(video))

    def encode_audio(self, mfcc: Tensor) -> Tensor:
        """(B, 1, 13, 20) MFCC windows -> 1024-d audio embeddings (``forward_aud``)."""
        return self.netfcaud(self.audio_features(mfcc))

    def pair_scorer(self, video_tokens: Tensor, audio_tokens: Tensor) -> PairScorer:
        """Scores (negated distances) of (video window, audio window) index pairs."""
        return lambda vi, ai: -F.pairwise_distance(
            video_tokens[vi], audio_tokens[ai], eps=PAIRWISE_EPS)

    def forward(self, video: Tensor, mfcc: Tensor) -> Tensor:
        """Score of each (video window, MFCC window) pair -> (B,), higher = more in sync."""
        return -F.pairwise_distance(self.encode_video(video), self.encode_audio(mfcc),
                                    eps=PAIRWISE_EPS)


def syncnet_v2_from_checkpoint(ckpt: Mapping[str, Any], source: str) -> SyncNetV2:
    """Build a :class:`SyncNetV2` from a read checkpoint (``syncnet_v2.model`` format).

    Every entry of the model must be in the file except the BatchNorm
    ``num_batches_tracked`` counters, which evaluation never reads and which the
    published file is reported to lack; an unknown key or a wrong shape is refused, so a
    file of another model (the older 2048-wide ``syncnetl2.model``, say) fails with one line.
    """
    state = ckpt["state_dict"]
    model = SyncNetV2()
    expected = model.state_dict()
    optional = frozenset(k for k in expected if k.endswith("num_batches_tracked"))
    check_state_dict(model, state, source, optional, what="a syncnet_v2 model")
    floats = [k for k in expected if k not in optional and not state[k].is_floating_point()]
    if floats:
        raise CheckpointError(f"checkpoint {source} holds non-float weights, e.g. {floats[0]}")
    full = {k: state.get(k, torch.zeros((), dtype=torch.long)) for k in expected}
    model.load_state_dict(full, strict=True)
    return model.eval()


register_reader(SYNCNET_V2_FAMILY, syncnet_v2_from_checkpoint)
