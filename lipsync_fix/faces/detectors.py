"""Face detectors: OpenCV Haar cascades (offline default), S3FD (face-alignment), a fixed box.

Every detector returns boxes in S3FD geometry (brows or forehead to chin, cheek to cheek),
the geometry VocaLiST's training crops were cut from.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from lipsync_fix.errors import LipsyncError
from lipsync_fix.faces.boxes import Box, downscale, non_max_suppression

S3FD_WEIGHTS_FILE = "s3fd-619a316812.pth"

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


def haar_available() -> bool:
    """Whether this OpenCV build has Haar cascades (OpenCV 5 moved them out of the main
    package, so a machine with OpenCV 5 has none)."""
    return hasattr(cv2, "CascadeClassifier") and hasattr(cv2, "data")


def _load_cascade(name: str) -> cv2.CascadeClassifier:
    if not haar_available():
        raise LipsyncError(
            f"this OpenCV ({cv2.__version__}) has no Haar face detector; install "
            "'opencv-python-headless<5', use --detector s3fd, or give --face-box x,y,w,h")
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

    :meth:`rescan` is the cheaper scan a tracker runs now and then for faces that come
    into view: it looks on a smaller frame first (``coarse_side`` pixels, a quarter of
    the pixels of ``max_side``), since the smallest faces cost most of a scan (a
    cascade's window visits every position at every scale, and small scales have the
    most positions) while a face that matters is large. Each face found there is looked
    for again at ``max_side`` near where it was found and kept by the rule above, so its
    box is as precise as a full scan's; only when the small frame shows no face is the
    whole frame scanned. A small face beside a large one is not seen by a rescan, which
    is why the first scan of a stream is always :meth:`detect`.
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
        coarse_side: int | None = 240,
    ) -> None:
        self.max_side = max_side
        self.coarse_side = coarse_side
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.strong_neighbors = strong_neighbors
        self._frontal = [_load_cascade(name) for name in FRONTAL_CASCADES]
        self._profile = _load_cascade(PROFILE_CASCADE) if profile else None

    def detect(self, frame_bgr: np.ndarray) -> list[Box]:
        return self._scan(frame_bgr, coarse=False)

    def rescan(self, frame_bgr: np.ndarray) -> list[Box]:
        """Like :meth:`detect`, but large faces are looked for on a smaller frame first
        (see the class docstring); 2-3 times cheaper where a face is in view."""
        return self._scan(frame_bgr, coarse=True)

    def _scan(self, frame_bgr: np.ndarray, coarse: bool) -> list[Box]:
        gray, scale = self._prepare(frame_bgr)
        found = self._coarse(gray) if coarse else []
        if not found:
            found = self._frontal_scan(gray)
        if not found and self._profile is not None:
            sizes = self._scan_sizes(gray)
            found = self._run(self._profile, gray, self.scale_factor, sizes)
            found += self._run(self._profile, gray, self.scale_factor, sizes, mirrored=True)
        return [haar_to_s3fd(box.scaled(1 / scale)) for box in non_max_suppression(found)]

    def _frontal_scan(self, gray: np.ndarray) -> list[Box]:
        """Faces of at least ``min_face`` in ``gray``: the first frontal cascade that finds
        one wins; weak hits need another cascade's confirmation."""
        sizes = self._scan_sizes(gray)
        for index, cascade in enumerate(self._frontal):
            found = [box for box in self._run(cascade, gray, self.scale_factor, sizes)
                     if self._confirmed(gray, box, index)]
            if found:
                return found
        return []

    def _scan_sizes(self, gray: np.ndarray) -> tuple[int, int]:
        return max(20, round(self.min_face * min(gray.shape))), max(gray.shape)

    def _confirmed(self, gray: np.ndarray, box: Box, index: int) -> bool:
        """A hit of cascade ``index`` is a face when strong, or when another frontal
        cascade finds one at the same place and size."""
        others = self._frontal[:index] + self._frontal[index + 1 :]
        return box.score >= self.strong_neighbors or \
            self._search_near(others, gray, box) is not None

    def _coarse(self, gray: np.ndarray) -> list[Box]:
        """Faces found on a ``coarse_side`` copy of ``gray``, then found again and checked
        near that place in ``gray`` itself (its pixels); empty when there is none."""
        if self.coarse_side is None or max(gray.shape) <= self.coarse_side:
            return []
        small, factor = downscale(gray, self.coarse_side)
        sizes = (20, max(small.shape))
        candidates: list[Box] = []
        for cascade in self._frontal:
            candidates = self._run(cascade, small, self.scale_factor, sizes)
            if candidates:
                break
        found = []
        for candidate in non_max_suppression(candidates):
            for index, cascade in enumerate(self._frontal):
                hits = self._search_near([cascade], gray, candidate.scaled(1 / factor),
                                         self.scale_factor)
                if hits is not None and self._confirmed(gray, hits, index):
                    found.append(hits)
                    break
        return found

    def detect_near(self, frame_bgr: np.ndarray, box: Box) -> list[Box]:
        gray, scale = self._prepare(frame_bgr)
        found = self._search_near(self._frontal, gray, s3fd_to_haar(box).scaled(scale))
        return [haar_to_s3fd(found.scaled(1 / scale))] if found is not None else []

    def _prepare(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        small, scale = downscale(frame_bgr, self.max_side)
        return cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)), scale

    def _search_near(
        self, cascades: Sequence[cv2.CascadeClassifier], gray: np.ndarray, box: Box,
        scale_factor: float = REGION_SCALE_FACTOR,
    ) -> Box | None:
        """The best face of about ``box``'s size around it (Haar geometry, ``gray``
        pixels). The fine default steps recover a face a full scan missed; with a full
        scan's ``scale_factor`` the neighbour count is comparable to a full scan's."""
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
            found = self._run(cascade, gray[y1:y2, x1:x2], scale_factor, sizes)
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
    torch hub's cache (``s3fd_weights_path()``, where ``lipsync-fix models download s3fd``
    puts them after checking their sha256); it is loaded from that path, never
    downloaded here. Frames are downscaled to ``max_side`` for speed (S3FD boxes do not depend
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
                f"The S3FD weights are not cached at {weights}; run lipsync-fix models "
                "download s3fd (it checks their sha256) or choose the haar detector."
            )
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        self.max_side = max_side
        self._net = SFDDetector(device=device, path_to_detector=str(weights))

    def detect(self, frame_bgr: np.ndarray) -> list[Box]:
        small, scale = downscale(frame_bgr, self.max_side)
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
