"""Visual features: 96x96 face crops -> the lower-half, frame-major windows VocaLiST reads.

The authors read crops with OpenCV, so channels are BGR; values are divided by 255 and
only rows 48..95 (the mouth half) are kept. A 5-frame window is a (15, 48, 96) tensor
whose channels run ``[f0.B, f0.G, f0.R, f1.B, ...]``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lipsync_fix.features.constants import CROP_SIZE


def lower_half(crops_bgr: np.ndarray) -> Tensor:
    """uint8 BGR crops (N, 96, 96, 3) -> float32 lower halves (N, 3, 48, 96) in 0..1."""
    crops = np.asarray(crops_bgr)
    if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(f"expected face crops of shape (N, 96, 96, 3), got {crops.shape}")
    half = crops[:, CROP_SIZE // 2 :]
    return torch.from_numpy(np.ascontiguousarray(half)).permute(0, 3, 1, 2).float() / 255.0


def frames_from_stacked(stacked: np.ndarray | Tensor) -> Tensor:
    """The reference's stacked layout (1, 3*N, 48, 96) -> per-frame (N, 3, 48, 96)."""
    x = torch.as_tensor(np.asarray(stacked, dtype=np.float32))
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    return x.view(-1, 3, x.shape[-2], x.shape[-1])
