"""Following a detected face from frame to frame by its appearance, between detections.

A face detector run on every third frame costs most of the front end (OpenCV's Haar
cascades take 10-20 ms per call on a 2-core CPU, S3FD far more), yet a talking head
moves a few pixels between two detections. :class:`FaceFollower` keeps a small grey
picture of each face as it was last *detected* (the anchor) and finds it again in the
next frames by normalised cross-correlation (``cv2.matchTemplate``, ``TM_CCOEFF_NORMED``)
in a window around its last box: under a millisecond per face. The correlation peak is
the follow's **confidence**; when it drops below :data:`MIN_CONFIDENCE` (the face turned,
was covered, or left) the caller detects again. The box keeps the anchor's size: a face's
size changes slowly, and the caller's periodic full scans (and every detection after a
dropped follow) re-anchor it.

The anchor is never replaced by a followed picture, only by a detection, so the follow
cannot drift away from a face one small step at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipsync_fix.faces.boxes import Box

TEMPLATE_WIDTH = 48
"""Width in pixels of the anchor picture: enough texture (eyes, nose, mouth) to lock on,
small enough that a search costs well under a millisecond."""

SEARCH_MARGIN = 0.35
"""The search window reaches this many box widths past the last box on every side: a
face moving a third of its width in three frames is already a fast pan."""

MIN_CONFIDENCE = 0.6
"""Below this correlation the followed box is not trusted and the caller detects again.
A face that keeps its pose scores 0.8-0.99 against its anchor over a second of speech;
background or another pose stays well under 0.5."""


@dataclass
class _Anchor:
    covered: Box  # the part of the detected box inside the frame, which the template shows
    template: np.ndarray  # grey picture of ``covered``, about TEMPLATE_WIDTH wide
    scale: float  # template pixels per frame pixel
    box: Box  # the detected box itself (it may reach past the frame's edge)


def _grey_region(frame: np.ndarray, x1: int, y1: int, x2: int, y2: int,
                 scale: float) -> np.ndarray:
    """``frame[y1:y2, x1:x2]`` in grey, resized by ``scale`` (area averaging)."""
    patch = frame[y1:y2, x1:x2]
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY) if patch.ndim == 3 else patch
    size = (max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _clip_box(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    x1, y1 = max(0, int(box.x)), max(0, int(box.y))
    x2, y2 = min(width, int(np.ceil(box.x2))), min(height, int(np.ceil(box.y2)))
    return (x1, y1, x2, y2) if x2 - x1 >= 8 and y2 - y1 >= 8 else None


def _subpixel(values: np.ndarray, peak: int) -> float:
    """Offset (-0.5..0.5) of a parabola's vertex through ``values[peak-1:peak+2]``."""
    if 0 < peak < len(values) - 1:
        left, mid, right = (float(v) for v in values[peak - 1 : peak + 2])
        denom = left - 2 * mid + right
        if denom < 0:
            return float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))
    return 0.0


class FaceFollower:
    """Anchors of the faces being followed, keyed by the caller's track id."""

    def __init__(self, min_confidence: float = MIN_CONFIDENCE) -> None:
        self.min_confidence = min_confidence
        self._anchors: dict[int, _Anchor] = {}

    def anchor(self, key: int, frame: np.ndarray, box: Box) -> None:
        """Remember ``box`` (a detection in ``frame``) as face ``key``'s appearance."""
        height, width = frame.shape[:2]
        clipped = _clip_box(box, width, height)
        if clipped is None:
            self._anchors.pop(key, None)
            return
        x1, y1, x2, y2 = clipped
        scale = TEMPLATE_WIDTH / max(box.w, 1.0)
        template = _grey_region(frame, x1, y1, x2, y2, scale)
        if min(template.shape) < 8:
            self._anchors.pop(key, None)
            return
        covered = Box(float(x1), float(y1), float(x2 - x1), float(y2 - y1), box.score)
        self._anchors[key] = _Anchor(covered, template, scale, box)

    def knows(self, key: int) -> bool:
        return key in self._anchors

    def forget(self, keep: set[int]) -> None:
        """Drop the anchors of every face not in ``keep`` (their tracks ended)."""
        for key in [k for k in self._anchors if k not in keep]:
            del self._anchors[key]

    def follow(self, key: int, frame: np.ndarray, last: Box) -> tuple[Box, float] | None:
        """Face ``key`` in ``frame``, searched around ``last`` (its latest box): the box
        and the follow's confidence, or None when it has no anchor or the search window
        leaves the frame."""
        anchor = self._anchors.get(key)
        if anchor is None:
            return None
        height, width = frame.shape[:2]
        # The template's corner sits this far from the box's corner.
        dx, dy = anchor.box.x - anchor.covered.x, anchor.box.y - anchor.covered.y
        # Where the anchored picture would sit if the face were where ``last`` puts it.
        ax, ay = last.x - dx, last.y - dy
        aw, ah = anchor.covered.w, anchor.covered.h
        margin = SEARCH_MARGIN * max(aw, ah)
        sx1, sy1 = max(0, int(ax - margin)), max(0, int(ay - margin))
        sx2 = min(width, int(np.ceil(ax + aw + margin)))
        sy2 = min(height, int(np.ceil(ay + ah + margin)))
        th, tw = anchor.template.shape
        search = _grey_region(frame, sx1, sy1, sx2, sy2, anchor.scale)
        if search.shape[0] < th or search.shape[1] < tw:
            return None
        scores = cv2.matchTemplate(search, anchor.template, cv2.TM_CCOEFF_NORMED)
        _, confidence, _, (px, py) = cv2.minMaxLoc(scores)
        fx = px + _subpixel(scores[py], px)
        fy = py + _subpixel(scores[:, px], py)
        # Template pixel (0, 0) lands on search pixel (fx, fy); back to frame pixels.
        x = sx1 + fx * (sx2 - sx1) / search.shape[1] + dx
        y = sy1 + fy * (sy2 - sy1) / search.shape[0] + dy
        return Box(x, y, anchor.box.w, anchor.box.h, float(confidence)), float(confidence)
