"""The original SyncNet's face preprocessing (joonson/syncnet_python ``run_pipeline.py``).

``syncnet_v2.model`` was trained and is evaluated on 224x224 crops cut in one particular
way, different from Wav2Lip's 96x96 crops the other models read: a square around the face
box centre reaching 1 box half-size above it, 1.8 below and 1.4 to each side, on a frame
padded with grey 110, after a 13-tap median filter over the track's box sizes and centres.
LSE numbers are only comparable with published ones when the crops are cut the same way,
so this module reproduces that deterministic part exactly (the golden crops match bit for
bit with ``cv2.resize``'s bilinear interpolation):

* :func:`crop_geometry` - box sizes and centres, their median smoothing, the padding and
  the crop rectangle of every frame of a track;
* :func:`crop_frame` / :func:`crop_track` - the 224x224 BGR crops themselves;
* :func:`track_shot` - the reference's greedy tracker over per-frame detections of one
  shot, with its thresholds (IoU > 0.5, gaps up to 25 frames, more than 100 detections,
  mean face size above 100 px) and its interpolation of missed frames.

Not reproduced: the XVID and JPEG round trips of the reference (it writes the crops to an
XVID AVI, then has ffmpeg dump that to JPEG and reads them back), which only add codec
noise, and its S3FD detector and PySceneDetect scene splitter, which live elsewhere
(:mod:`lipsync_fix.faces.detectors`, :mod:`lipsync_fix.faces.scenes`).

Boxes here are in the reference's ``(x1, y1, x2, y2)`` corner form, not the ``(x, y, w, h)``
of :class:`~lipsync_fix.faces.boxes.Box`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.signal import medfilt

from lipsync_fix.errors import NoFaceError

CROP_SCALE = 0.4
"""``crop_scale``: the crop reaches ``1 + 2 * 0.4`` box half-sizes below the centre."""

SMOOTH_TAPS = 13
"""Median filter length over box sizes and centres (zero-padded at the track ends)."""

PAD_VALUE = 110
"""Grey level of the padding around the frame, in every channel."""

REFERENCE_CROP_SIZE = 224
"""Side of the crops the original SyncNet reads."""

TRACK_IOU = 0.5
"""A detection continues a track when its IoU with the track's last box is above this."""

NUM_FAILED_DET = 25
"""Most frames between two detections of one track (``num_failed_det``)."""

MIN_TRACK = 100
"""A track is kept only with more detections than this (``min_track``)."""

MIN_FACE_SIZE = 100
"""... and a mean interpolated box side above this many pixels (``min_face_size``)."""


@dataclass(frozen=True)
class Detection:
    """One face found in one frame: ``bbox`` is ``(x1, y1, x2, y2)`` in frame pixels."""

    frame: int
    bbox: tuple[float, float, float, float]
    conf: float = 1.0


@dataclass(frozen=True, eq=False)
class ReferenceTrack:
    """A track as the reference keeps it: every frame from the first detection to the
    last (``frames``) with its box ``(x1, y1, x2, y2)`` (``boxes``, interpolated where the
    detector missed)."""

    frames: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True, eq=False)
class CropGeometry:
    """Per-frame crop parameters of one track.

    ``raw_*`` are the box half-size and centre before smoothing, ``s``/``x``/``y`` after the
    13-tap median filter, ``bsi`` the padding in pixels and ``rect`` ``(row0, row1, col0,
    col1)`` the crop in padded coordinates (Python slice bounds, truncated with ``int``).
    """

    raw_s: np.ndarray
    raw_x: np.ndarray
    raw_y: np.ndarray
    s: np.ndarray
    x: np.ndarray
    y: np.ndarray
    bsi: np.ndarray
    rect: np.ndarray


def zero_padded_median(values: np.ndarray, taps: int) -> np.ndarray:
    """``scipy.signal.medfilt(values, taps)``: a running median that pads both ends with
    zeros, as the reference smooths with. Its warning for inputs shorter than ``taps`` is
    silenced: zero padding is exactly what is wanted then too."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="kernel_size exceeds volume extent")
        return medfilt(values, kernel_size=taps)


def crop_geometry(boxes: np.ndarray, crop_scale: float = CROP_SCALE) -> CropGeometry:
    """The reference ``crop_video``'s geometry for a track's boxes ``(N, 4)`` x1, y1, x2, y2.

    The median filter pads the track with zeros, so within 6 frames of either end the
    smoothed value is an order statistic of the nearby values rather than a centred median:
    a face that keeps moving appears frozen there. That is the reference's behaviour and it
    is kept.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0:
        raise ValueError(f"expected boxes of shape (N, 4), got {boxes.shape}")
    raw_s = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    raw_y = (boxes[:, 1] + boxes[:, 3]) / 2
    raw_x = (boxes[:, 0] + boxes[:, 2]) / 2
    s, x, y = (zero_padded_median(values, SMOOTH_TAPS) for values in (raw_s, raw_x, raw_y))
    below = 1 + 2 * crop_scale
    side = 1 + crop_scale
    bsi = np.array([int(v * below) for v in s], dtype=np.int64)
    rect = np.array([
        [int(my - bs), int(my + bs * below), int(mx - bs * side), int(mx + bs * side)]
        for bs, my, mx in zip(s, y + bsi, x + bsi, strict=True)
    ], dtype=np.int64)
    return CropGeometry(raw_s, raw_x, raw_y, s, x, y, bsi, rect)


def box_rect(box_xywh: Sequence[float], crop_scale: float = CROP_SCALE) -> tuple[int, list[int]]:
    """The reference's padding and crop rectangle for one box ``(x, y, w, h)``, without the
    track's median smoothing: for boxes a tracker has already smoothed (the main job's
    front end), so each frame can be cut as it is decoded."""
    x, y, w, h = (float(v) for v in box_xywh)
    s = max(w, h) / 2
    cx, cy = x + w / 2, y + h / 2
    bsi = int(s * (1 + 2 * crop_scale))
    my, mx = cy + bsi, cx + bsi
    return bsi, [int(my - s), int(my + s * (1 + 2 * crop_scale)),
                 int(mx - s * (1 + crop_scale)), int(mx + s * (1 + crop_scale))]


def crop_frame(
    frame_bgr: np.ndarray, bsi: int, rect: Sequence[int], size: int = REFERENCE_CROP_SIZE
) -> np.ndarray:
    """Cut ``rect`` (padded coordinates) out of ``frame_bgr`` padded by ``bsi`` pixels of
    grey 110, and resize it to ``size`` x ``size`` (``cv2.resize``, bilinear).

    The padded frame is never built: the rectangle is resolved with Python's slice rules
    against the padded size (so even a rectangle past the padding behaves as the
    reference's slicing does) and only its pixels are filled, from the frame or with grey.
    """
    height, width = frame_bgr.shape[:2]
    r0, r1, c0, c1 = (int(v) for v in rect)
    rows = range(*slice(r0, r1).indices(height + 2 * bsi))
    cols = range(*slice(c0, c1).indices(width + 2 * bsi))
    if len(rows) == 0 or len(cols) == 0:
        raise NoFaceError(
            f"the face box gives an empty crop (rows {r0}:{r1}, columns {c0}:{c1} of a "
            f"{width}x{height} frame padded by {bsi})")
    patch = np.full((len(rows), len(cols), frame_bgr.shape[2]), PAD_VALUE, dtype=frame_bgr.dtype)
    src_r0, src_r1 = max(rows.start - bsi, 0), min(rows.stop - bsi, height)
    src_c0, src_c1 = max(cols.start - bsi, 0), min(cols.stop - bsi, width)
    if src_r1 > src_r0 and src_c1 > src_c0:
        patch[src_r0 + bsi - rows.start: src_r1 + bsi - rows.start,
              src_c0 + bsi - cols.start: src_c1 + bsi - cols.start] = \
            frame_bgr[src_r0:src_r1, src_c0:src_c1]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)


def crop_track(
    frames_bgr: Iterable[np.ndarray],
    boxes: np.ndarray,
    size: int = REFERENCE_CROP_SIZE,
    crop_scale: float = CROP_SCALE,
) -> np.ndarray:
    """The reference crops ``(N, size, size, 3)`` uint8 BGR of a track: ``frames_bgr`` are
    its N frames in order, ``boxes`` their ``(N, 4)`` x1, y1, x2, y2 boxes."""
    geometry = crop_geometry(boxes, crop_scale)
    crops = np.empty((len(geometry.bsi), size, size, 3), dtype=np.uint8)
    count = 0
    for index, frame in enumerate(frames_bgr):
        if index >= len(crops):
            raise ValueError(f"more frames than the {len(crops)} boxes of the track")
        crops[index] = crop_frame(frame, int(geometry.bsi[index]), geometry.rect[index], size)
        count += 1
    if count != len(crops):
        raise ValueError(f"{count} frames for a track of {len(crops)} boxes")
    return crops


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes in continuous coordinates (no +1)."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def track_shot(
    scene_faces: Sequence[Sequence[Detection]],
    num_failed_det: int = NUM_FAILED_DET,
    min_track: int = MIN_TRACK,
    min_face_size: float = MIN_FACE_SIZE,
) -> list[ReferenceTrack]:
    """The reference's ``track_shot``: greedy tracks over one shot's detections.

    ``scene_faces[i]`` are the detections of the shot's i-th frame. Each pass scans the
    frames in order: the first face left starts a track, and a later face joins it when it
    comes at most ``num_failed_det`` frames after the track's last face and overlaps that
    face with IoU above 0.5; the first face too far in time ends the scan of its frame.
    Faces that join leave the pool, and, as in the reference, which removes them from
    the list it is iterating over, the face after a removed one in the same frame is not
    looked at in that pass. Passes repeat until the pool is empty.

    A track is kept when it has more than ``min_track`` detections and, with its boxes
    linearly interpolated over every frame from its first to its last detection, a mean
    width or height above ``min_face_size``. The input is not modified.
    """
    pool = [list(faces) for faces in scene_faces]
    tracks: list[ReferenceTrack] = []
    while True:
        track: list[Detection] = []
        for faces in pool:
            index = 0
            while index < len(faces):
                face = faces[index]
                if not track:
                    track.append(faces.pop(index))
                elif face.frame - track[-1].frame <= num_failed_det:
                    if box_iou(face.bbox, track[-1].bbox) > TRACK_IOU:
                        track.append(faces.pop(index))
                else:
                    break
                # A pop shifts the next face into ``index``; stepping on anyway skips it,
                # which is what removing from a list under iteration does in the reference.
                index += 1
        if not track:
            return tracks
        if len(track) <= min_track:
            continue
        detected = np.array([face.frame for face in track])
        corners = np.array([face.bbox for face in track], dtype=np.float64)
        frames = np.arange(detected[0], detected[-1] + 1)
        boxes = np.stack([np.interp(frames, detected, corners[:, k]) for k in range(4)], axis=1)
        mean_width = float(np.mean(boxes[:, 2] - boxes[:, 0]))
        mean_height = float(np.mean(boxes[:, 3] - boxes[:, 1]))
        if max(mean_width, mean_height) > min_face_size:
            tracks.append(ReferenceTrack(frames, boxes))
