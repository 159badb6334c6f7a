"""MTDVocaLiST: VocaLiST distilled to 13.3M parameters (Chen et al., ICASSP 2024).

The network is VocaLiST's, layer for layer and with the same state-dict key names, at
narrower widths (:data:`MTD_DIMS`); the authors' file holds only ``{"state_dict": ...}``
and is told from VocaLiST's by its shapes (:func:`is_mtdvocalist_state`). What differs
is how it reads frames (RGB, 0..255, torchvision's resize): the family names its input
recipe (``inputs = "mtdvocalist"``, :class:`lipsync_fix.features.inputs.MTDVocaLiSTInputs`)
so that scoring, fixing, evaluation and the benchmarks feed it correctly without knowing.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from lipsync_fix.features.constants import FRAMES_PER_WINDOW
from lipsync_fix.models.vocalist import ModelDimensions, VocaLiST

MTD_DIMS = ModelDimensions(
    d_model=200,
    n_heads=8,
    n_layers=4,
    d_ffn=800,
    video_widths=(16, 32, 64, 128, 200),
    audio_widths=(16, 32, 64, 128),
)
"""The authors' ``SyncTransformer(d_model=200)``: 13,280,961 parameters."""

MTD_PRESETS: dict[str, ModelDimensions] = {"paper": MTD_DIMS}


class MTDVocaLiST(VocaLiST):
    """VocaLiST at MTDVocaLiST's widths, reading its authors' input recipe.

    Inputs: ``video`` (B, 3*T, 48, 96) lower-half crops, RGB, frame-major, values 0..255;
    ``mel`` (B, 1, 80, 16) as VocaLiST's.
    """

    family = "mtdvocalist"
    inputs = "mtdvocalist"

    def __init__(
        self, dims: ModelDimensions | None = None, window_frames: int = FRAMES_PER_WINDOW
    ):
        super().__init__(dims or MTD_DIMS, window_frames=window_frames)


def is_mtdvocalist_state(state: Mapping[str, Tensor]) -> bool:
    """Whether a state dict with VocaLiST's key names has MTDVocaLiST's widths: the
    first video conv has 16 filters and the classifier reads 200 features (VocaLiST: 32
    and 512). Files without a ``model`` entry (the authors') are told apart this way."""
    first = state.get("vid_prenet.0.conv_block.0.weight")
    head = state.get("classifier.weight")
    return (first is not None and head is not None
            and first.shape[0] == MTD_DIMS.video_widths[0]
            and tuple(head.shape) == (1, MTD_DIMS.d_model))
