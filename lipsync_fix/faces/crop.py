"""Cutting face crops the way the authors' training data was cut (Wav2Lip's recipe).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from lipsync_fix.faces.boxes import Box

WAV2LIP_SIZE = 96
"""Side of the square crop in Wav2Lip's recipe, which VocaLiST and SyncNet* read."""

WAV2LIP_PADS = (0, 10, 0, 0)
"""Padding (top, bottom, left, right) in pixels added to the face box before cropping, as in
Wav2Lip's preprocessing: the extra 10 px at the bottom keep the chin inside the crop."""


def crop_face(
    frame_bgr: np.ndarray,
    box: Box | Sequence[float] | np.ndarray,
    size: int = WAV2LIP_SIZE,
    pad: tuple[int, int, int, int] = WAV2LIP_PADS,
) -> np.ndarray:
    """Cut the face out of ``frame_bgr`` exactly as Wav2Lip/VocaLiST preprocessing does.

    ``box`` is an S3FD-geometry box (a :class:`Box` or x, y, w, h). The box grows by
    ``pad`` (top, bottom, left, right pixels), is clipped to the frame, truncated to whole
    pixels and resized to ``size`` x ``size`` with bilinear interpolation; the result is a
    uint8 BGR array ``(size, size, 3)``.
    """
    return cv2.resize(face_region(frame_bgr, box, pad), (size, size))


def face_region(
    frame_bgr: np.ndarray,
    box: Box | Sequence[float] | np.ndarray,
    pad: tuple[int, int, int, int] = WAV2LIP_PADS,
) -> np.ndarray:
    """The padded face box of ``frame_bgr`` before any resizing (a view, uint8 BGR).

    This is what Wav2Lip's preprocessing writes to disk; each model family resizes it
    the way its authors' loader did (OpenCV for VocaLiST, torchvision for MTDVocaLiST).
    The box grows by ``pad`` (top, bottom, left, right), is clipped to the frame and
    truncated to whole pixels.
    """
    x, y, w, h = (box.x, box.y, box.w, box.h) if isinstance(box, Box) else box
    top, bottom, left, right = pad
    height, width = frame_bgr.shape[:2]
    y1 = math.floor(max(0.0, y - top))
    y2 = math.floor(min(float(height), y + h + bottom))
    x1 = math.floor(max(0.0, x - left))
    x2 = math.floor(min(float(width), x + w + right))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise ValueError(f"face box {x:.0f},{y:.0f},{w:.0f},{h:.0f} is outside the frame")
    return frame_bgr[y1:y2, x1:x2]


def crop_faces(
    frames_bgr: np.ndarray | Sequence[np.ndarray],
    boxes: np.ndarray,
    size: int = WAV2LIP_SIZE,
    pad: tuple[int, int, int, int] = WAV2LIP_PADS,
) -> np.ndarray:
    """Crop a chunk of frames with one box each (``(N, 4)``, NaN rows = no face).

    Returns ``(N, size, size, 3)`` uint8; frames without a box get a black crop.
    """
    crops = np.zeros((len(frames_bgr), size, size, 3), dtype=np.uint8)
    for i, (frame, box) in enumerate(zip(frames_bgr, boxes, strict=True)):
        if not np.isnan(box).any():
            crops[i] = crop_face(frame, box, size, pad)
    return crops
