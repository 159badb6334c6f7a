"""The interface every sync model offers the scorer, whatever its family.

The scorer (:mod:`lipsync_fix.sync.scoring`) never asks which model it holds: it encodes
each video window and each audio window once, then scores (window, shift) pairs from those
encodings. A model family plugs in by offering these members.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor

PairScorer = Callable[[Tensor, Tensor], Tensor]
"""``score(video_index, audio_index) -> scores``: one score per pair of cached encodings,
higher meaning more in sync."""


@runtime_checkable
class SyncScorer(Protocol):
    """A model that scores how well a video window and an audio window match."""

    family: str
    """Registry family name (``vocalist``, ``syncnet``)."""

    window_frames: int
    """T: video frames per input window (5 for the paper's models)."""

    outputs_probability: bool
    """Whether scores are probabilities in 0..1 (trained with BCE on them) or logits."""

    def encode_video(self, video: Tensor) -> Tensor:
        """Video windows -> per-window encodings (tokens or embeddings)."""
        ...

    def encode_audio(self, audio: Tensor) -> Tensor:
        """Audio windows -> per-window encodings."""
        ...

    def pair_scorer(self, video_tokens: Tensor, audio_tokens: Tensor) -> PairScorer:
        """A function scoring index pairs of the given encodings (prepared once)."""
        ...

    def __call__(self, video: Tensor, audio: Tensor) -> Tensor:
        """The whole model on (video window, audio window) pairs, as its authors run it."""
        ...
