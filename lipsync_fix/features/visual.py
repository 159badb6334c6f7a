"""Visual features: face crops -> the lower-half, frame-major windows VocaLiST reads.

The authors read crops with OpenCV, so channels are BGR; values are divided by 255 and
only rows 48..95 (the mouth half) are kept. A 5-frame window is a (15, 48, 96) tensor
whose channels run ``[f0.B, f0.G, f0.R, f1.B, ...]``.

MTDVocaLiST's authors read the same crops with torchvision instead (RGB, resized with
``torchvision.transforms.Resize``, values left in 0..255): :func:`torchvision_resize`
reproduces that resize without depending on torchvision.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lipsync_fix.features.constants import CROP_SIZE


def lower_half(crops_bgr: np.ndarray) -> Tensor:
    """uint8 BGR crops (N, 96, 96, 3) -> float32 lower halves (N, 3, 48, 96) in 0..1."""
    crops = np.asarray(crops_bgr)
    if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(f"expected face crops of shape (N, 96, 96, 3), got {crops.shape}")
    half = crops[:, CROP_SIZE // 2 :]
    return torch.from_numpy(np.ascontiguousarray(half)).permute(0, 3, 1, 2).float() / 255.0


def torchvision_resize(image: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """A uint8 image (h, w, c) resized to (size, size, c) as torchvision resizes a tensor.

    ``torchvision.transforms.Resize([size, size])`` on a uint8 tensor (torchvision >= 0.17,
    where ``antialias=True`` is the default for tensors too; the reference loader relies on
    it) casts to float32, calls ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False, antialias=True)``, rounds half to even and casts back to uint8.
    Downscaling therefore averages over the whole footprint of each output pixel (a
    triangle filter widened by the scale factor), unlike OpenCV's ``INTER_LINEAR``, which
    samples 2x2 neighbours: the two differ by several grey levels on a face crop, enough
    to change a model's scores, so each family gets the resize it was trained with.
    Upscaling is plain bilinear in both. Channels are resized independently, so BGR in
    gives BGR out. Checked identical (every pixel) to torchvision 0.28's tensor resize on
    random and blurred images of 60x70 to 300x250 when this was written; torchvision is
    not a dependency, so the test suite checks the properties instead.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (h, w, c), got {img.dtype} {img.shape}")
    if img.shape[:2] == (size, size):
        return img.copy()
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True)
    return y.round().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def frames_from_stacked(stacked: np.ndarray | Tensor) -> Tensor:
    """The reference's stacked layout (1, 3*N, 48, 96) -> per-frame (N, 3, 48, 96)."""
    x = torch.as_tensor(np.asarray(stacked, dtype=np.float32))
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    return x.view(-1, 3, x.shape[-2], x.shape[-1])
