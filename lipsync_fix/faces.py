"""Find the speaking face in a video and cut the 96x96 crops that VocaLiST scores.

VocaLiST was trained on faces prepared like Wav2Lip's: an S3FD face box, padded by
10 px at the bottom (pads top, bottom, left, right = 0, 10, 0, 0) and clipped to the frame,
smoothed over 5 frames, resized to 96x96 with ``cv2.resize`` (bilinear), BGR. The model
looks at the lower half of that crop only, so what matters most is that the mouth and chin
land in rows 48..95 the way they did in training. This module reproduces that geometry.

Pipeline (all of it streaming, so an hour of video never sits in memory):

1. detection on a downscaled copy of every ``detect_every``-th frame (and on every frame
   that starts a new shot) with a :class:`FaceDetector`: OpenCV Haar cascades by default
   (offline, fast on a 2-core CPU; boxes converted to S3FD geometry, tracked faces searched
   for near their last box), the S3FD detector of ``face-alignment`` when installed with
   its weights cached, or a fixed user-given box;
2. tracking (:func:`track_faces`): detections are linked across frames by overlap, gaps of
   up to ``max_gap`` frames are bridged by linear interpolation, scene cuts
   (:class:`SceneCutDetector`) end all tracks, and boxes are averaged over 5 frames as the
   reference preprocessing does;
3. selection of the main face (:func:`select_track`, :func:`select_main_tracks`): the track
   that covers the most frames weighted by its size, chained with the best face of the
   other shots;
4. cropping (:func:`crop_face`) with the Wav2Lip padding.

:class:`FaceCropper` drives this over chunks of frames in one pass. It cannot wait for the
end of the video before cropping (the frames would be gone), and it cannot re-read the video
without decoding it twice, so it holds a short look-ahead of full frames (``max_gap`` plus
the smoothing radius, about 0.6 s) until every track's box for the oldest frame is final,
then crops that frame for each track alive in it and drops the frame. Only boxes and 96x96
crops are kept, and the main face is chosen when the stream ends. (The alternative, two
passes over a re-creatable frame iterator, would decode the video twice: on a 2-core CPU
decoding HD costs as much as the whole face pipeline.)
"""

from __future__ import annotations

import importlib.util
import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from lipsync_fix.errors import LipsyncError, NoFaceError

CROP_SIZE = 96
"""Side of the square face crop VocaLiST takes."""

WAV2LIP_PADS = (0, 10, 0, 0)
"""Padding (top, bottom, left, right) in pixels added to the face box before cropping, as in
Wav2Lip's preprocessing: the extra 10 px at the bottom keep the chin inside the crop."""

MIN_TRACK_FRAMES = 5
"""Tracks shorter than one VocaLiST window (5 frames) cannot be scored and are mostly false
hits; they are not chained into the main face nor counted as extra faces."""

S3FD_WEIGHTS_FILE = "s3fd-619a316812.pth"
S3FD_WEIGHTS_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"

# Haar -> S3FD geometry, in units of the (square) Haar box side s, measured on the
# astronaut photo and the three real test clips. A frontal Haar box spans from the hairline
# (0.0 s) to just below the mouth (1.0 s); brows sit at about 0.3 s, the mouth at 0.8 s and
# the chin at 1.0-1.25 s, cheek to cheek is 0.8-1.0 s. An S3FD box starts lower, on the
# forehead, ends just below the chin and is as wide as the face, so:
HAAR_TO_S3FD_TOP = 0.15
HAAR_TO_S3FD_BOTTOM = 1.05
HAAR_TO_S3FD_WIDTH = 0.90

# A lost face is searched for again around its last box with finer pyramid steps over a
# narrow size range (0.7-1.4x): the coarse full-frame steps skip over a face that is tilted,
# half covered by a hand or looking down, the fine ones still catch it, and the small region
# keeps this at a few milliseconds.
REGION_SCALE_FACTOR = 1.05
REGION_SIZE_RANGE = (0.7, 1.4)
REGION_MARGIN = 1.1

# Haar cascades tried in order: the first that finds a (confirmed) face wins. Running one
# cascade per frame keeps detection near 30 ms at 480 px; the other two rescue frames the
# first one misses (glasses, a hand or a phone near the mouth, a slightly turned head).
FRONTAL_CASCADES = (
    "haarcascade_frontalface_default.xml",
    "haarcascade_frontalface_alt2.xml",
    "haarcascade_frontalface_alt.xml",
)
PROFILE_CASCADE = "haarcascade_profileface.xml"


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


# --------------------------------------------------------------------------- detectors


class FaceDetector(Protocol):
    """Anything that finds faces in one BGR frame and returns S3FD-like boxes."""

    def detect(self, frame_bgr: np.ndarray) -> list[Box]:
        """Face boxes in full-frame pixels, in S3FD geometry (brows/forehead to chin)."""
        ...


@runtime_checkable
class RegionFaceDetector(FaceDetector, Protocol):
    """A detector that can also look for one known face again, cheaply, near its last box.

    :class:`FaceCropper` uses this to follow a tracked face between full-frame scans and to
    recover it on frames where the full-frame scan missed it.
    """

    def detect_near(self, frame_bgr: np.ndarray, box: Box) -> list[Box]:
        """Faces of about ``box``'s size near ``box`` (S3FD geometry, full-frame pixels)."""
        ...


def _downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
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


def haar_to_s3fd(box: Box) -> Box:
    """Convert a Haar cascade box to the geometry of an S3FD box (see the factors above).

    Without this the crop would show forehead instead of chin and put the mouth near the
    bottom edge, where VocaLiST never saw it during training.
    """
    side = (box.w + box.h) / 2
    cx = box.x + box.w / 2
    width = HAAR_TO_S3FD_WIDTH * side
    return Box(
        x=cx - width / 2,
        y=box.y + HAAR_TO_S3FD_TOP * side,
        w=width,
        h=(HAAR_TO_S3FD_BOTTOM - HAAR_TO_S3FD_TOP) * side,
        score=box.score,
    )


def s3fd_to_haar(box: Box) -> Box:
    """Inverse of :func:`haar_to_s3fd`: where the Haar cascade would put this face's box."""
    side = box.w / HAAR_TO_S3FD_WIDTH
    cx = box.x + box.w / 2
    return Box(cx - side / 2, box.y - HAAR_TO_S3FD_TOP * side, side, side, box.score)


def _load_cascade(name: str) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / name))
    if cascade.empty():
        raise LipsyncError(
            f"OpenCV's face model {name} could not be loaded; reinstall opencv-python-headless."
        )
    return cascade


class HaarFaceDetector:
    """Offline face detector on OpenCV's Haar cascades (the default without S3FD).

    Frontal cascades are tried in turn on a downscaled, histogram-equalised grey frame
    until one finds a face; the profile cascade (both directions) is a last resort when
    ``profile`` is set, off by default because it fires on hands and shoulders. Faces
    smaller than ``min_face`` of the frame's shorter side are ignored: they are too small for
    a useful 96x96 crop and scanning for them costs most of the time.

    A cascade's score is its neighbour count: real faces of a good size collect dozens,
    false hits on textures (a poster, a hand with a phone) a few. A hit below
    ``strong_neighbors`` is kept only if another frontal cascade finds a face at the same
    place and size; small faces, which score low too, pass that check easily. Boxes come
    back in S3FD geometry (:func:`haar_to_s3fd`). :meth:`detect_near` re-finds a tracked
    face in a small window for a few milliseconds.
    """

    def __init__(
        self,
        *,
        max_side: int = 480,
        min_face: float = 0.08,
        scale_factor: float = 1.1,
        min_neighbors: int = 3,
        strong_neighbors: int = 10,
        profile: bool = False,
    ) -> None:
        self.max_side = max_side
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.strong_neighbors = strong_neighbors
        self._frontal = [_load_cascade(name) for name in FRONTAL_CASCADES]
        self._profile = _load_cascade(PROFILE_CASCADE) if profile else None

    def detect(self, frame_bgr: np.ndarray) -> list[Box]:
        gray, scale = self._prepare(frame_bgr)
        sizes = (max(20, round(self.min_face * min(gray.shape))), max(gray.shape))
        found: list[Box] = []
        for index, cascade in enumerate(self._frontal):
            others = self._frontal[:index] + self._frontal[index + 1 :]
            found = [
                box
                for box in self._run(cascade, gray, self.scale_factor, sizes)
                if box.score >= self.strong_neighbors
                or self._search_near(others, gray, box) is not None
            ]
            if found:
                break
        if not found and self._profile is not None:
            found = self._run(self._profile, gray, self.scale_factor, sizes)
            found += self._run(self._profile, gray, self.scale_factor, sizes, mirrored=True)
        return [haar_to_s3fd(box.scaled(1 / scale)) for box in non_max_suppression(found)]

    def detect_near(self, frame_bgr: np.ndarray, box: Box) -> list[Box]:
        gray, scale = self._prepare(frame_bgr)
        found = self._search_near(self._frontal, gray, s3fd_to_haar(box).scaled(scale))
        return [haar_to_s3fd(found.scaled(1 / scale))] if found is not None else []

    def _prepare(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        small, scale = _downscale(frame_bgr, self.max_side)
        return cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)), scale

    def _search_near(
        self, cascades: Sequence[cv2.CascadeClassifier], gray: np.ndarray, box: Box
    ) -> Box | None:
        """The best face of about ``box``'s size around it (Haar geometry, ``gray`` pixels)."""
        side = (box.w + box.h) / 2
        cx, cy = box.center
        half = REGION_MARGIN * side
        x1, y1 = max(0, round(cx - half)), max(0, round(cy - half))
        x2, y2 = min(gray.shape[1], round(cx + half)), min(gray.shape[0], round(cy + half))
        low, high = (round(f * side) for f in REGION_SIZE_RANGE)
        sizes = (max(20, low), max(21, high))
        if min(x2 - x1, y2 - y1) < sizes[0]:
            return None
        for cascade in cascades:
            found = self._run(cascade, gray[y1:y2, x1:x2], REGION_SCALE_FACTOR, sizes)
            if found:
                best = max(found, key=lambda b: b.score)
                return Box(best.x + x1, best.y + y1, best.w, best.h, best.score)
        return None

    def _run(
        self,
        cascade: cv2.CascadeClassifier,
        gray: np.ndarray,
        scale_factor: float,
        sizes: tuple[int, int],
        mirrored: bool = False,
    ) -> list[Box]:
        image = cv2.flip(gray, 1) if mirrored else gray
        min_px, max_px = sizes
        rects, neighbours = cascade.detectMultiScale2(
            image,
            scale_factor,
            self.min_neighbors,
            minSize=(min_px, min_px),
            maxSize=(max_px, max_px),
        )
        boxes = []
        for (x, y, w, h), n in zip(rects, neighbours, strict=True):
            left = gray.shape[1] - x - w if mirrored else x
            boxes.append(Box(float(left), float(y), float(w), float(h), float(n)))
        return boxes


def _face_alignment_installed() -> bool:
    return importlib.util.find_spec("face_alignment") is not None


def s3fd_weights_path() -> Path:
    """Where face-alignment caches the S3FD weights (torch hub's checkpoint folder)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / S3FD_WEIGHTS_FILE


def s3fd_available() -> bool:
    """True when face-alignment is importable and its S3FD weights are already on disk.

    Both are checked before anything is constructed so that using S3FD never starts a
    download (which would fail, or hang, on an offline machine).
    """
    return _face_alignment_installed() and s3fd_weights_path().is_file()


class S3FDDetector:
    """The S3FD detector of ``face-alignment``, the one the authors' preprocessing used.

    Optional: needs ``pip install 'lipsync-fix[s3fd]'`` and the weights file already in
    torch hub's cache (``s3fd_weights_path()``); it is loaded from that path, never
    downloaded. Frames are downscaled to ``max_side`` for speed (S3FD boxes do not depend
    on scale); on a CPU this is still far slower than the Haar cascades.
    """

    def __init__(self, *, device: str = "cpu", max_side: int = 640) -> None:
        if not _face_alignment_installed():
            raise LipsyncError(
                "The S3FD face detector needs the optional package face-alignment; "
                "install it with pip install 'lipsync-fix[s3fd]' or choose the haar detector."
            )
        weights = s3fd_weights_path()
        if not weights.is_file():
            raise LipsyncError(
                f"The S3FD weights are not cached at {weights}; download {S3FD_WEIGHTS_URL} "
                "to that path or choose the haar detector."
            )
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        self.max_side = max_side
        self._net = SFDDetector(device=device, path_to_detector=str(weights))

    def detect(self, frame_bgr: np.ndarray) -> list[Box]:
        small, scale = _downscale(frame_bgr, self.max_side)
        # face-alignment >= 1.3 takes RGB and flips it to BGR itself.
        detections = self._net.detect_from_image(np.ascontiguousarray(small[..., ::-1]))
        boxes = [
            Box(float(x1), float(y1), float(x2 - x1), float(y2 - y1), float(score))
            for x1, y1, x2, y2, score in (d[:5] for d in detections)
        ]
        return [box.scaled(1 / scale) for box in boxes if box.w > 0 and box.h > 0]


class FixedBoxDetector:
    """Returns one user-given face box on every frame (``--face-box x,y,w,h``).

    For footage where detection fails or picks the wrong person. The box is read like an
    S3FD box (brows or forehead to chin, cheek to cheek); the usual bottom padding is added
    when cropping.
    """

    def __init__(self, box: Box) -> None:
        self.box = box

    def detect(self, frame_bgr: np.ndarray) -> list[Box]:
        height, width = frame_bgr.shape[:2]
        if self.box.intersection(Box(0, 0, width, height)) < 0.5 * self.box.area:
            raise LipsyncError(
                f"The face box {self.box.x:g},{self.box.y:g},{self.box.w:g},{self.box.h:g} "
                f"lies mostly outside the {width}x{height} video frame."
            )
        return [self.box]


def parse_face_box(text: str) -> Box:
    """Parse ``"x,y,w,h"`` (pixels of the original frame) into a :class:`Box`.

    Raises :class:`LipsyncError` for anything but four finite numbers with x, y >= 0 and
    w, h > 0, so a typo on the command line gets a one-line explanation.
    """
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if (
        len(values) != 4
        or not all(math.isfinite(v) for v in values)
        or min(values[:2]) < 0
        or min(values[2:]) <= 0
    ):
        raise LipsyncError(
            f"The face box must be four numbers x,y,w,h in pixels with w and h above 0, "
            f"got {text!r}."
        )
    x, y, w, h = values
    return Box(x, y, w, h)


def make_detector(name: str = "auto", face_box: str | None = None) -> FaceDetector:
    """Build the detector the user asked for.

    ``face_box`` wins over ``name``. ``"auto"`` uses S3FD when it can run offline (see
    :func:`s3fd_available`) and the Haar cascades otherwise; ``"s3fd"`` fails with a
    :class:`LipsyncError` that says what is missing instead of falling back silently.
    """
    if face_box is not None:
        return FixedBoxDetector(parse_face_box(face_box))
    if name == "auto":
        return S3FDDetector() if s3fd_available() else HaarFaceDetector()
    if name == "haar":
        return HaarFaceDetector()
    if name == "s3fd":
        return S3FDDetector()
    raise LipsyncError(f"Unknown face detector {name!r}; choose auto, haar or s3fd.")


# --------------------------------------------------------------------------- scene cuts


class SceneCutDetector:
    """Flags the first frame of a new shot, one frame at a time.

    Compares a 64x64 grey thumbnail with the previous frame's: a cut changes the grey-level
    histogram (total variation distance) or the picture itself (mean absolute difference)
    far more than a talking head does. On the real test clips consecutive frames stay
    below 0.04 and 0.02; a switch between two photos gives 0.3 and 0.2 or more.
    """

    def __init__(self, hist_threshold: float = 0.25, diff_threshold: float = 0.15) -> None:
        self.hist_threshold = hist_threshold
        self.diff_threshold = diff_threshold
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, frame_bgr: np.ndarray) -> bool:
        """True when ``frame_bgr`` starts a new shot (never for the first frame)."""
        # Subsample to >= 128 px before area-averaging: as good a thumbnail, 6x faster on HD.
        step = max(1, min(frame_bgr.shape[:2]) // 128)
        small = cv2.resize(frame_bgr[::step, ::step], (64, 64), interpolation=cv2.INTER_AREA)
        thumb = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        current = (thumb.astype(np.float32), np.bincount(thumb.ravel() // 8, minlength=32))
        previous, self._previous = self._previous, current
        if previous is None:
            return False
        hist_distance = 0.5 * float(np.abs(current[1] - previous[1]).sum()) / thumb.size
        difference = float(np.abs(current[0] - previous[0]).mean()) / 255
        return hist_distance >= self.hist_threshold or difference >= self.diff_threshold


def detect_scene_cuts(frames: Iterable[np.ndarray], **thresholds: float) -> np.ndarray:
    """Per-frame cut flags (bool array) for a sequence of BGR frames."""
    detector = SceneCutDetector(**thresholds)
    return np.array([detector.update(frame) for frame in frames], dtype=bool)


# --------------------------------------------------------------------------- tracking


def _smoothed_boxes(
    det_frames: Sequence[int],
    det_boxes: np.ndarray,
    frames: np.ndarray,
    span: tuple[int, int],
    radius: int,
) -> np.ndarray:
    """Boxes (x, y, w, h) for ``frames``: interpolated between detections, then averaged.

    Linear interpolation bridges frames without a detection (skipped or missed); past the
    last detection the last box is held. The average runs over ``frame +- radius`` clipped
    to the track's ``span`` (first, last frame), like Wav2Lip's 5-frame mean, and removes
    the few-pixel jitter of per-frame detections that would make the crop shake.
    """
    first, last = span
    starts = np.maximum(frames - radius, first)
    stops = np.minimum(frames + radius, last)
    lo, hi = int(starts.min()), int(stops.max())
    times = np.arange(lo, hi + 1)
    raw = np.stack([np.interp(times, det_frames, det_boxes[:, k]) for k in range(4)], axis=1)
    csum = np.vstack([np.zeros((1, 4)), np.cumsum(raw, axis=0)])
    counts = (stops - starts + 1)[:, None]
    return (csum[stops - lo + 1] - csum[starts - lo]) / counts


@dataclass(frozen=True, eq=False)
class FaceTrack:
    """One face followed over consecutive frames (within one shot).

    ``frames`` holds every frame index from the first detection to the last covered frame,
    ``boxes`` the matching smoothed boxes (x, y, w, h) in S3FD geometry, ``n_detections``
    how many of those frames the detector itself confirmed.
    """

    track_id: int
    frames: np.ndarray
    boxes: np.ndarray
    n_detections: int

    @property
    def first(self) -> int:
        return int(self.frames[0])

    @property
    def last(self) -> int:
        return int(self.frames[-1])

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def mean_width(self) -> float:
        return float(self.boxes[:, 2].mean())

    def coverage(self, n_frames: int) -> float:
        """Fraction of the video's ``n_frames`` in which this track has a box."""
        return len(self.frames) / n_frames if n_frames else 0.0

    def box_at(self, frame: int) -> Box | None:
        """The track's box in ``frame``, None outside the track."""
        if not self.first <= frame <= self.last:
            return None
        return Box(*(float(v) for v in self.boxes[frame - self.first]))


class _TrackBuilder:
    """A track under construction: its detections so far and, once closed, its last frame."""

    def __init__(self, track_id: int, frame: int, box: Box) -> None:
        self.track_id = track_id
        self.det_frames = [frame]
        self.det_boxes = [box.to_array()]
        self.last_box = box
        self.end: int | None = None

    @property
    def first(self) -> int:
        return self.det_frames[0]

    @property
    def last_detection(self) -> int:
        return self.det_frames[-1]

    @property
    def last_covered(self) -> int:
        """Last frame with a final box: the closing frame, else the latest detection."""
        return self.end if self.end is not None else self.last_detection

    def add(self, frame: int, box: Box) -> None:
        self.det_frames.append(frame)
        self.det_boxes.append(box.to_array())
        self.last_box = box

    def box_at(self, frame: int, radius: int) -> np.ndarray:
        """Smoothed box at one frame, from the detections near it only (O(radius))."""
        lo = max(bisect_left(self.det_frames, frame - radius) - 1, 0)
        hi = bisect_right(self.det_frames, frame + radius) + 1
        frames = np.array([frame])
        span = (self.first, self.last_covered)
        return _smoothed_boxes(
            self.det_frames[lo:hi], np.array(self.det_boxes[lo:hi]), frames, span, radius
        )[0]

    def finish(self, radius: int) -> FaceTrack:
        frames = np.arange(self.first, self.last_covered + 1)
        span = (self.first, self.last_covered)
        boxes = _smoothed_boxes(self.det_frames, np.array(self.det_boxes), frames, span, radius)
        return FaceTrack(self.track_id, frames, boxes, len(self.det_frames))


class _FaceLinker:
    """Links per-frame detections into tracks, online, one frame at a time.

    A detection continues a track when it overlaps the track's latest detection
    (IoU >= ``min_iou``) or its centre moved by at most ``max_shift`` face widths, and the
    size changed by at most ``max_scale_change``; pairs are matched greedily, best first.
    A track ends at a scene cut, or when it has gone ``max_gap`` frames without a
    detection; it then covers ``hold`` frames past its last detection (the frames a
    detector that runs every ``hold + 1`` frames did not look at), never across a cut.
    """

    def __init__(
        self,
        *,
        max_gap: int = 12,
        hold: int = 0,
        min_iou: float = 0.2,
        max_shift: float = 0.5,
        max_scale_change: float = 1.5,
    ) -> None:
        self.max_gap = max_gap
        self.hold = hold
        self.min_iou = min_iou
        self.max_shift = max_shift
        self.max_scale_change = max_scale_change
        self.active: list[_TrackBuilder] = []
        self._next_id = 0

    def update(self, frame: int, boxes: Sequence[Box], cut: bool = False) -> list[_TrackBuilder]:
        """Add ``frame``'s detections; return the tracks that ended before this frame."""
        ended = [t for t in self.active if cut or frame - t.last_detection > self.max_gap]
        for track in ended:
            track.end = min(track.last_detection + self.hold, frame - 1)
        self.active = [t for t in self.active if t.end is None]
        unmatched = set(range(len(boxes)))
        for track, index in self._match(boxes):
            track.add(frame, boxes[index])
            unmatched.discard(index)
        for index in sorted(unmatched):
            self.active.append(_TrackBuilder(self._next_id, frame, boxes[index]))
            self._next_id += 1
        return ended

    def close(self, last_frame: int) -> list[_TrackBuilder]:
        """End every track at the end of the video (``last_frame`` is its last index)."""
        for track in self.active:
            track.end = min(track.last_detection + self.hold, last_frame)
        ended, self.active = self.active, []
        return ended

    def unmatched(self, boxes: Sequence[Box]) -> list[_TrackBuilder]:
        """Active tracks that none of ``boxes`` would continue."""
        matched = {track.track_id for track, _ in self._match(boxes)}
        return [t for t in self.active if t.track_id not in matched]

    def _match(self, boxes: Sequence[Box]) -> list[tuple[_TrackBuilder, int]]:
        candidates = []
        for track in self.active:
            ref = track.last_box
            for index, box in enumerate(boxes):
                if max(box.w, ref.w) > self.max_scale_change * min(box.w, ref.w):
                    continue
                iou = ref.iou(box)
                shift = math.dist(ref.center, box.center) / max(ref.w, box.w)
                if iou >= self.min_iou or shift <= self.max_shift:
                    candidates.append((iou, -shift, track, index))
        candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
        matched: list[tuple[_TrackBuilder, int]] = []
        used_tracks: set[int] = set()
        used_boxes: set[int] = set()
        for _, _, track, index in candidates:
            if track.track_id not in used_tracks and index not in used_boxes:
                matched.append((track, index))
                used_tracks.add(track.track_id)
                used_boxes.add(index)
        return matched


def track_faces(
    boxes_per_frame: Sequence[Sequence[Box]],
    cuts: Sequence[bool] | np.ndarray | None = None,
    *,
    max_gap: int = 12,
    hold: int = 0,
    smooth_radius: int = 2,
) -> list[FaceTrack]:
    """Link detections of a whole video into smoothed face tracks (offline version).

    ``boxes_per_frame[i]`` are frame i's detections (empty where the detector missed or
    was not run), ``cuts[i]`` is True where a new shot starts. ``max_gap`` (frames, 12 =
    0.48 s at 25 fps) bounds the gaps bridged by interpolation, ``hold`` extends a track
    past its last detection when detection ran only every ``hold + 1`` frames. Returns the
    tracks ordered by their first frame.
    """
    linker = _FaceLinker(max_gap=max_gap, hold=hold)
    builders: list[_TrackBuilder] = []
    for frame, boxes in enumerate(boxes_per_frame):
        builders += linker.update(frame, boxes, bool(cuts[frame]) if cuts is not None else False)
    builders += linker.close(len(boxes_per_frame) - 1)
    return sorted((b.finish(smooth_radius) for b in builders), key=lambda t: t.first)


def rank_tracks(tracks: Iterable[FaceTrack], n_frames: int) -> list[FaceTrack]:
    """Tracks ordered by how likely they are the main speaker, most likely first.

    The heuristic is the one a viewer uses without sound: the face seen longest and largest
    (coverage times mean box width). It cannot tell a listener from a speaker in a two-shot;
    a caller that can afford it should re-rank the top tracks by how well their lips agree
    with the audio (the sync model's confidence on each track's crops).
    """
    return sorted(tracks, key=lambda t: t.coverage(n_frames) * t.mean_width, reverse=True)


def select_track(tracks: Iterable[FaceTrack], n_frames: int) -> FaceTrack | None:
    """The main speaker's track (see :func:`rank_tracks`), None when there is no track."""
    ranked = rank_tracks(tracks, n_frames)
    return ranked[0] if ranked else None


def select_main_tracks(
    tracks: Iterable[FaceTrack], n_frames: int, min_frames: int = MIN_TRACK_FRAMES
) -> list[FaceTrack]:
    """The main face over the whole video, as a chain of tracks that never overlap in time.

    A video with several shots, or a face lost for longer than tracking bridges, splits the
    speaker into several tracks; one track alone would leave the other shots without a face.
    So this takes :func:`select_track`'s choice, then, in rank order, every other track of
    at least ``min_frames`` frames (see :data:`MIN_TRACK_FRAMES`) that does not overlap in
    time with a track already taken. A second face on screen at the same time as the chosen
    one, a listener say, is left out. Returned in time order.
    """
    chosen: list[FaceTrack] = []
    for track in rank_tracks(tracks, n_frames):
        if chosen and len(track) < min_frames:
            continue
        if all(track.last < c.first or track.first > c.last for c in chosen):
            chosen.append(track)
    return sorted(chosen, key=lambda t: t.first)


def track_boxes_per_frame(track: FaceTrack, n_frames: int) -> np.ndarray:
    """The track as an ``(n_frames, 4)`` float array of x, y, w, h, NaN where it is absent."""
    out = np.full((n_frames, 4), np.nan)
    inside = track.frames < n_frames
    out[track.frames[inside]] = track.boxes[inside]
    return out


# --------------------------------------------------------------------------- cropping


def crop_face(
    frame_bgr: np.ndarray,
    box: Box | Sequence[float] | np.ndarray,
    size: int = CROP_SIZE,
    pad: tuple[int, int, int, int] = WAV2LIP_PADS,
) -> np.ndarray:
    """Cut the face out of ``frame_bgr`` exactly as Wav2Lip/VocaLiST preprocessing does.

    ``box`` is an S3FD-geometry box (a :class:`Box` or x, y, w, h). The box grows by
    ``pad`` (top, bottom, left, right pixels), is clipped to the frame, truncated to whole
    pixels and resized to ``size`` x ``size`` with bilinear interpolation; the result is a
    uint8 BGR array ``(size, size, 3)``.
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
    return cv2.resize(frame_bgr[y1:y2, x1:x2], (size, size))


def crop_faces(
    frames_bgr: np.ndarray | Sequence[np.ndarray],
    boxes: np.ndarray,
    size: int = CROP_SIZE,
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


# --------------------------------------------------------------------------- streaming driver


@dataclass(frozen=True, eq=False)
class FaceCrops:
    """The main face of a video, ready for VocaLiST.

    ``crops`` ``(N, 96, 96, 3)`` uint8 BGR, black where ``has_face`` ``(N,)`` is False;
    ``boxes`` ``(N, 4)`` the S3FD-geometry boxes they were cut from (before padding), NaN
    where absent; ``tracks`` the chosen tracks in time order (one per shot, usually);
    ``all_tracks`` every track found, best ranked first; ``n_faces`` the most faces tracked
    at once; ``face_coverage`` the fraction of frames with a chosen face.
    """

    crops: np.ndarray
    has_face: np.ndarray
    boxes: np.ndarray
    tracks: tuple[FaceTrack, ...]
    all_tracks: tuple[FaceTrack, ...]
    n_faces: int
    face_coverage: float

    @property
    def n_frames(self) -> int:
        return len(self.has_face)


class _TrackCrops:
    """Crops and boxes of one track, appended frame by frame as they become final."""

    def __init__(self) -> None:
        self.frames: list[int] = []
        self.crops: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []


class FaceCropper:
    """Streams frames through detection, tracking and cropping in one pass.

    Feed chunks of BGR frames with :meth:`feed`, then call :meth:`finish` for the main
    face's crops. A caller that wants to choose the face itself (say, by how well each
    track's lips agree with the audio) calls :meth:`close` for all tracks, ranked, and
    :meth:`crops_for` with its choice.

    Detection runs on every ``detect_every``-th frame and on the first frame of each shot.
    With a :class:`RegionFaceDetector` (the Haar one) the whole frame is scanned only when
    no face is tracked, at a cut and every ``rescan_s`` seconds (for faces that come into
    view); in between each tracked face is looked for near its last box, which is several
    times cheaper and also recovers faces the full scan misses. Other detectors scan the
    whole frame every time.

    A frame is cropped once every track's box in it is final, ``max_gap + smooth_radius +
    1`` frames later, so memory holds that many full frames plus one 96x96 crop per frame
    and tracked face (crops are kept for every track because the main face is only known at
    the end).
    """

    def __init__(
        self,
        detector: FaceDetector,
        *,
        fps: float = 25.0,
        detect_every: int = 3,
        max_gap_s: float = 0.5,
        rescan_s: float = 1.0,
        smooth_radius: int = 2,
        detect_cuts: bool = True,
        size: int = CROP_SIZE,
        pad: tuple[int, int, int, int] = WAV2LIP_PADS,
    ) -> None:
        if detect_every < 1:
            raise ValueError("detect_every must be at least 1")
        self.detector = detector
        self._region = detector if isinstance(detector, RegionFaceDetector) else None
        self.detect_every = detect_every
        self._rescan = max(round(rescan_s * fps), detect_every)
        self.smooth_radius = smooth_radius
        self.size = size
        self.pad = pad
        max_gap = max(round(max_gap_s * fps), detect_every)
        self._linker = _FaceLinker(max_gap=max_gap, hold=detect_every - 1)
        self._cuts = SceneCutDetector() if detect_cuts else None
        self._delay = max_gap + smooth_radius + 1
        self._buffer: deque[tuple[int, np.ndarray]] = deque()
        self._ended: list[_TrackBuilder] = []
        self._finished: list[_TrackBuilder] = []
        self._track_crops: dict[int, _TrackCrops] = {}
        self._tracks: list[FaceTrack] | None = None
        self._n_frames = 0
        self._last_detection = -detect_every
        self._last_scan = -self._rescan

    @property
    def n_frames(self) -> int:
        return self._n_frames

    def feed(self, chunk: np.ndarray) -> None:
        """Process a chunk ``(n, H, W, 3)`` (or one frame ``(H, W, 3)``) of uint8 BGR frames."""
        if self._tracks is not None:
            raise RuntimeError("FaceCropper.feed() called after the stream was closed")
        frames = chunk[None] if chunk.ndim == 3 else chunk
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 BGR frames (n, H, W, 3), got {chunk.shape}")
        for frame in frames:
            self._push(frame)

    def close(self) -> list[FaceTrack]:
        """End the stream; return every track found, most likely main speaker first."""
        if self._tracks is None:
            self._ended += self._linker.close(self._n_frames - 1)
            self._emit(self._n_frames - 1)
            finished = (b.finish(self.smooth_radius) for b in self._finished)
            self._tracks = rank_tracks(finished, self._n_frames)
        return list(self._tracks)

    def finish(self) -> FaceCrops:
        """End the stream and return the crops of the main face (:func:`select_main_tracks`).

        Raises :class:`NoFaceError` when no face was found in any frame.
        """
        tracks = self.close()
        if not tracks:
            raise NoFaceError(
                f"no face found in {self._n_frames} frames; the video needs a visible, "
                "roughly frontal face (or give its position with --face-box x,y,w,h)."
            )
        return self.crops_for(select_main_tracks(tracks, self._n_frames))

    def crops_for(self, tracks: Sequence[FaceTrack]) -> FaceCrops:
        """Per-frame crops of ``tracks`` (from :meth:`close`); earlier ones win overlaps."""
        all_tracks = self.close()
        n = self._n_frames
        crops = np.zeros((n, self.size, self.size, 3), dtype=np.uint8)
        boxes = np.full((n, 4), np.nan)
        has_face = np.zeros(n, dtype=bool)
        for track in reversed(tracks):
            store = self._track_crops[track.track_id]
            crops[store.frames] = np.stack(store.crops)
            boxes[store.frames] = np.stack(store.boxes)
            has_face[store.frames] = True
        return FaceCrops(
            crops=crops,
            has_face=has_face,
            boxes=boxes,
            tracks=tuple(tracks),
            all_tracks=tuple(all_tracks),
            n_faces=self._max_simultaneous(all_tracks, tracks),
            face_coverage=float(has_face.mean()) if n else 0.0,
        )

    def _push(self, frame: np.ndarray) -> None:
        index = self._n_frames
        self._n_frames += 1
        cut = self._cuts.update(frame) if self._cuts is not None else False
        boxes: list[Box] = []
        if cut or index - self._last_detection >= self.detect_every:
            boxes = self._detect(index, frame, cut)
            self._last_detection = index
        self._ended += self._linker.update(index, boxes, cut)
        self._buffer.append((index, frame.copy()))
        self._emit(index - self._delay)

    def _detect(self, index: int, frame: np.ndarray, cut: bool) -> list[Box]:
        """Full-frame scan when due, plus a local search for each tracked face it missed."""
        boxes: list[Box] = []
        tracking = self._region is not None and self._linker.active and not cut
        if not tracking or index - self._last_scan >= self._rescan:
            boxes = self.detector.detect(frame)
            self._last_scan = index
        if tracking:
            for track in self._linker.unmatched(boxes):
                boxes += self._region.detect_near(frame, track.last_box)
        return non_max_suppression(boxes)

    def _emit(self, upto: int) -> None:
        """Crop every buffered frame up to ``upto`` for each track that covers it."""
        while self._buffer and self._buffer[0][0] <= upto:
            index, frame = self._buffer.popleft()
            for track in [*self._ended, *self._linker.active]:
                if track.first <= index <= track.last_covered:
                    box = track.box_at(index, self.smooth_radius)
                    store = self._track_crops.setdefault(track.track_id, _TrackCrops())
                    store.frames.append(index)
                    store.boxes.append(box)
                    store.crops.append(crop_face(frame, box, self.size, self.pad))
            done = [t for t in self._ended if t.last_covered <= index]
            self._ended = [t for t in self._ended if t.last_covered > index]
            self._finished += done

    def _max_simultaneous(
        self, all_tracks: Sequence[FaceTrack], chosen: Sequence[FaceTrack]
    ) -> int:
        """Most faces tracked in one frame, ignoring blips shorter than one model window."""
        counts = np.zeros(self._n_frames + 1, dtype=np.int64)
        for track in all_tracks:
            if track in chosen or len(track) >= MIN_TRACK_FRAMES:
                counts[track.first] += 1
                counts[track.last + 1] -= 1
        return int(np.cumsum(counts).max())


def extract_face_crops(
    frame_chunks: Iterable[np.ndarray],
    detector: FaceDetector | None = None,
    *,
    fps: float = 25.0,
    detect_every: int = 3,
    max_gap_s: float = 0.5,
    rescan_s: float = 1.0,
    detect_cuts: bool = True,
) -> FaceCrops:
    """Run a :class:`FaceCropper` over ``frame_chunks`` and return the main face's crops.

    ``detector`` defaults to ``make_detector("auto")``; the other arguments are
    FaceCropper's. Raises :class:`NoFaceError` when no frame shows a face.
    """
    cropper = FaceCropper(
        detector if detector is not None else make_detector(),
        fps=fps,
        detect_every=detect_every,
        max_gap_s=max_gap_s,
        rescan_s=rescan_s,
        detect_cuts=detect_cuts,
    )
    for chunk in frame_chunks:
        cropper.feed(chunk)
    return cropper.finish()
