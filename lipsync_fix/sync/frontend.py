"""The front end shared by the main job and separation: a video -> face crops + audio.

Decode at 25 fps and 16 kHz (media), track the speaker and cut the authors' crops (faces),
keep the lower halves the models read (features).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipsync_fix import faces, media
from lipsync_fix.errors import NoFaceError
from lipsync_fix.features.constants import (
    FRAMES_PER_WINDOW,
    SAMPLES_PER_FRAME,
    VIDEO_FPS,
)
from lipsync_fix.features.visual import lower_half

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: how far a long step is."""


@dataclass
class ClipFeatures:
    """What the model needs from a video, plus what the report needs."""

    frames: torch.Tensor  # (N, 3, 48, 96) lower halves, 0..1
    has_face: np.ndarray  # (N,) bool
    wav: np.ndarray  # 16 kHz mono
    fps: float
    duration_s: float
    face_coverage: float
    faces_seen: int


def extract_features(
    path: str | Path,
    detector: str = "auto",
    face_box: str | None = None,
    progress: Progress | None = None,
) -> ClipFeatures:
    """Decode the video at 25 fps, track the speaker's face, and decode 16 kHz audio.

    Frames are streamed in chunks; only the lower-half crops are kept (14 KB a frame).
    """
    info = media.probe(path)
    media.require_video_and_audio(info)
    detector = faces.make_detector(detector, face_box)
    cropper = faces.FaceCropper(detector, fps=VIDEO_FPS)
    expected = max(1, round(info.duration_s * VIDEO_FPS)) if info.duration_s else 0
    for chunk in media.iter_video_frames(path, fps=VIDEO_FPS):
        cropper.feed(chunk)
        if progress:
            progress("faces", cropper.n_frames, max(expected, cropper.n_frames))
    try:
        found = cropper.finish()
    except NoFaceError as exc:
        raise NoFaceError(f"{path}: {exc}") from exc
    wav = media.decode_audio(path, 16000)
    return ClipFeatures(
        frames=lower_half(found.crops),
        has_face=np.asarray(found.has_face, dtype=bool),
        wav=wav,
        fps=info.fps or VIDEO_FPS,
        duration_s=info.duration_s or len(wav) / 16000,
        face_coverage=float(found.face_coverage),
        faces_seen=int(found.n_faces),
    )


def usable_windows(
    features: ClipFeatures, n_rows: int, min_rms: float, length: int = FRAMES_PER_WINDOW
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether its ``length`` frames all show the face, and whether its audio
    (0.2 s for 5 frames) holds voice (RMS above ``min_rms``)."""
    face = np.lib.stride_tricks.sliding_window_view(features.has_face, length)
    chunk = length * SAMPLES_PER_FRAME
    starts = np.arange(n_rows) * SAMPLES_PER_FRAME
    rms = np.array([np.sqrt(np.mean(features.wav[a : a + chunk] ** 2)) for a in starts])
    return face[:n_rows].all(axis=1), rms > min_rms
