"""The second stage: find the speaking face, track it across frames and shots, crop it.

``boxes`` (geometry), ``detectors`` (Haar, S3FD, a fixed box), ``follow`` (a face followed
by its appearance between detections), ``scenes`` (cuts),
``tracking`` (linking detections, choosing the speaker), ``crop`` (the authors' crop
recipe) and ``pipeline`` (all of them over a stream of frames in one pass).
"""

from lipsync_fix.faces.boxes import Box, non_max_suppression
from lipsync_fix.faces.crop import (
    WAV2LIP_PADS,
    WAV2LIP_SIZE,
    crop_face,
    crop_faces,
    face_region,
)
from lipsync_fix.faces.detectors import (
    FaceDetector,
    FixedBoxDetector,
    HaarFaceDetector,
    RegionFaceDetector,
    S3FDDetector,
    haar_available,
    haar_to_s3fd,
    make_detector,
    parse_face_box,
    s3fd_available,
    s3fd_to_haar,
    s3fd_weights_path,
)
from lipsync_fix.faces.follow import FaceFollower
from lipsync_fix.faces.pipeline import FaceCropper, FaceCrops, extract_face_crops
from lipsync_fix.faces.scenes import SceneCutDetector, detect_scene_cuts
from lipsync_fix.faces.tracking import (
    MIN_TRACK_FRAMES,
    FaceTrack,
    rank_tracks,
    select_main_tracks,
    select_track,
    track_boxes_per_frame,
    track_faces,
)

__all__ = [
    "MIN_TRACK_FRAMES",
    "WAV2LIP_PADS",
    "WAV2LIP_SIZE",
    "Box",
    "FaceCropper",
    "FaceCrops",
    "FaceDetector",
    "FaceFollower",
    "FaceTrack",
    "FixedBoxDetector",
    "HaarFaceDetector",
    "RegionFaceDetector",
    "S3FDDetector",
    "SceneCutDetector",
    "crop_face",
    "crop_faces",
    "detect_scene_cuts",
    "extract_face_crops",
    "face_region",
    "haar_available",
    "haar_to_s3fd",
    "make_detector",
    "non_max_suppression",
    "parse_face_box",
    "rank_tracks",
    "s3fd_available",
    "s3fd_to_haar",
    "s3fd_weights_path",
    "select_main_tracks",
    "select_track",
    "track_boxes_per_frame",
    "track_faces",
]
