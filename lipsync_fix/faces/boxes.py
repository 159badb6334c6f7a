"""Face boxes: geometry helpers and non-maximum suppression shared by every detector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """An axis-aligned face box in full-frame pixels, with the detector's confidence."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    @property
    def x2(self) -> float:
        return self.x + self.w

    @property
    def y2(self) -> float:
        return self.y + self.h

    @property
    def area(self) -> float:
        return max(self.w, 0.0) * max(self.h, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)

    def intersection(self, other: Box) -> float:
        """Area shared with ``other``."""
        iw = min(self.x2, other.x2) - max(self.x, other.x)
        ih = min(self.y2, other.y2) - max(self.y, other.y)
        return max(iw, 0.0) * max(ih, 0.0)

    def iou(self, other: Box) -> float:
        """Intersection over union, 0 for disjoint boxes."""
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def scaled(self, factor: float) -> Box:
        """The box with coordinates multiplied by ``factor`` (detection scale to frame scale)."""
        return Box(self.x * factor, self.y * factor, self.w * factor, self.h * factor, self.score)

    def to_array(self) -> np.ndarray:
        """``[x, y, w, h]`` as float64."""
        return np.array([self.x, self.y, self.w, self.h], dtype=np.float64)



def downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``frame`` so its longer side is at most ``max_side``; return it and the scale.

    Detection cost grows with the pixel count while faces large enough to crop stay easy to
    find at 480-640 px, so detectors work on this copy and scale the boxes back up.
    """
    height, width = frame.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return frame, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale


def non_max_suppression(boxes: Sequence[Box], iou_threshold: float = 0.3) -> list[Box]:
    """Keep the best-scoring box of every group of overlapping or nested boxes.

    A box is dropped when it overlaps a better one by ``iou_threshold`` or lies mostly
    (70 %) inside it: cascades often report a face and a slightly larger or smaller box
    around the same face.
    """
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: (b.score, b.area), reverse=True):
        if all(
            box.iou(k) < iou_threshold and box.intersection(k) < 0.7 * min(box.area, k.area)
            for k in kept
        ):
            kept.append(box)
    return kept
