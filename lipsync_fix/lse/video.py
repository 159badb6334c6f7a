"""LSE of a video file: decode, find and track the face, crop as the reference does,
score each face track with :mod:`lipsync_fix.lse.metric`.

:func:`lse_video` runs the whole measurement on a video file. What differs from the
reference pipeline (``run_pipeline.py`` + ``run_syncnet.py``):

* frames are decoded once at 25 fps and 16 kHz int16-scale mono and kept in memory; there
  is no JPEG dump of the video, no XVID encoding of the crops and no JPEG dump of those
  (the reference's crops pass through two lossy codecs; ours do not, so numbers differ by
  that codec noise);
* faces come from our detector and tracker by default (the Haar cascades unless S3FD is
  installed, detection every 3rd frame, tracks smoothed over 5 frames); with
  ``--detector s3fd`` every frame goes through S3FD and the reference's ``track_shot``
  (IoU > 0.5, gaps up to 25 frames, more than 100 detections, faces above 100 px), with our
  scene-cut detector in place of PySceneDetect and S3FD run on frames scaled to 640 px
  rather than to a quarter of their size;
* either way the crops use the reference's geometry (13-tap median smoothing, crop scale
  0.4, grey-110 padding, 224x224 bilinear ``cv2.resize``), and the numbers come from the
  same MFCC, windows, distances and confidence as the reference.

A video whose face track breaks gives several tracks; each is scored on its own (as
``run_syncnet.py`` scores each) and the video's numbers are those of the longest.
"""


from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from lipsync_fix import faces, media
from lipsync_fix.compute import check_device_name
from lipsync_fix.errors import ClipTooShortError, MediaError, NoFaceError, UsageError
from lipsync_fix.faces.reference import (
    MIN_FACE_SIZE,
    MIN_TRACK,
    NUM_FAILED_DET,
    REFERENCE_CROP_SIZE,
    Detection,
    crop_frame,
    crop_geometry,
    track_shot,
)
from lipsync_fix.features.constants import (
    FRAMES_PER_WINDOW,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    VIDEO_FPS,
)
from lipsync_fix.features.mfcc import int16_scale
from lipsync_fix.lse.metric import EVAL_BATCH, VSHIFT, LseScores, evaluate_crops, require_syncnet
from lipsync_fix.records import Field, record_schema
from lipsync_fix.sync.frontend import Progress
from lipsync_fix.sync.scoring import num_windows

FRAME_MEMORY_BYTES = 1 << 30
"""Decoded frames are kept for the cropping pass up to this size; a longer video is
decoded a second time instead of holding more."""

MIN_TRACK_FRAMES = 7
"""Shortest face track scored: under 7 frames the reference's 13-tap median filter, which
pads with zeros, smooths every box of the track to zero (more padding than values)."""

@dataclass
class LseOptions:
    """Settings of :func:`lse_video`; the defaults are the reference's."""

    vshift: int = VSHIFT
    detector: str = "auto"
    face_box: str | None = None
    tracker: str | None = None  # "ours" or "reference"; None: reference for s3fd only
    min_track: int = MIN_TRACK  # reference tracker: detections a track needs (more than)
    min_face_size: float = MIN_FACE_SIZE  # reference tracker: mean box side, pixels
    batch_size: int = EVAL_BATCH
    device: str = "cpu"
    frame_memory_bytes: int = FRAME_MEMORY_BYTES

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if not 1 <= int(self.vshift) <= 100:
            raise UsageError(f"vshift must be 1 to 100 frames, got {self.vshift}")
        if int(self.batch_size) < 1:
            raise UsageError(f"the batch size must be at least 1, got {self.batch_size}")
        if self.tracker not in (None, "ours", "reference"):
            raise UsageError(f"unknown tracker {self.tracker!r}; use ours or reference")
        if int(self.min_track) < 0 or not self.min_face_size >= 0:
            raise UsageError("min_track and min_face_size must be 0 or more")

    @property
    def tracker_name(self) -> str:
        if self.tracker is not None:
            return self.tracker
        return "reference" if self.detector == "s3fd" and self.face_box is None else "ours"


@dataclass(frozen=True, eq=False)
class FaceTrack:
    """Consecutive frames ``first .. first + len - 1`` of one face, with their boxes
    ``(x1, y1, x2, y2)`` before the reference's smoothing."""

    first: int
    boxes: np.ndarray

    @property
    def last(self) -> int:
        return self.first + len(self.boxes) - 1

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class TrackScores:
    first_frame: int
    last_frame: int
    scores: LseScores

    def to_json(self) -> dict:
        return {"first_frame": self.first_frame, "last_frame": self.last_frame,
                **self.scores.to_json()}


@dataclass
class LseVideo:
    """LSE of one video: every scored face track, and the longest one's numbers."""

    input: str
    n_frames: int
    tracker: str
    tracks: list[TrackScores] = field(default_factory=list)

    @property
    def main(self) -> TrackScores:
        return longest(self.tracks)

    @property
    def face_coverage(self) -> float:
        covered = sum(s.last_frame - s.first_frame + 1 for s in self.tracks)
        return covered / self.n_frames if self.n_frames else 0.0

    def to_json(self) -> dict:
        main = self.main
        return {
            "input": self.input,
            **main.scores.to_json(),
            "first_frame": main.first_frame,
            "last_frame": main.last_frame,
            "frames": self.n_frames,
            "face_coverage": round(self.face_coverage, 3),
            "tracker": self.tracker,
            "tracks": [s.to_json() for s in self.tracks],
        }


def _corners(boxes_xywh: np.ndarray) -> np.ndarray:
    x, y, w, h = (boxes_xywh[:, k] for k in range(4))
    return np.stack([x, y, x + w, y + h], axis=1)


def tracks_ours(
    chunks: Iterable[np.ndarray], detector: faces.FaceDetector
) -> tuple[list[FaceTrack], int]:
    """Our face pipeline (:class:`~lipsync_fix.faces.FaceCropper`): the main face's
    tracks, and the number of frames seen."""
    cropper = faces.FaceCropper(detector, fps=VIDEO_FPS)
    for chunk in chunks:
        cropper.feed(chunk)
    tracks = cropper.close()
    chosen = faces.select_main_tracks(tracks, cropper.n_frames)
    return [FaceTrack(t.first, _corners(t.boxes)) for t in chosen], cropper.n_frames


def tracks_reference(
    chunks: Iterable[np.ndarray],
    detector: faces.FaceDetector,
    min_track: int = MIN_TRACK,
    min_face_size: float = MIN_FACE_SIZE,
) -> tuple[list[FaceTrack], int]:
    """The reference's way: detect on every frame, cut into shots, skip shots shorter
    than ``min_track`` frames, :func:`~lipsync_fix.faces.reference.track_shot` each shot."""
    cuts = faces.SceneCutDetector()
    detections: list[list[Detection]] = []
    starts = [0]
    for chunk in chunks:
        for frame in chunk:
            index = len(detections)
            if cuts.update(frame):
                starts.append(index)
            detections.append([Detection(index, (b.x, b.y, b.x2, b.y2), b.score)
                               for b in detector.detect(frame)])
    return _track_shots(detections, starts, min_track, min_face_size), len(detections)


def _track_shots(detections: list[list[Detection]], starts: list[int], min_track: int,
                 min_face_size: float) -> list[FaceTrack]:
    tracks = []
    for start, stop in zip(starts, [*starts[1:], len(detections)], strict=True):
        if stop - start < min_track:
            continue
        for track in track_shot(detections[start:stop], NUM_FAILED_DET, min_track,
                                min_face_size):
            tracks.append(FaceTrack(int(track.frames[0]), track.boxes))
    return sorted(tracks, key=lambda s: s.first)


def crop_tracks(
    chunks: Iterable[np.ndarray], tracks: Sequence[FaceTrack]
) -> list[np.ndarray]:
    """The reference's 224x224 crops of every track, from one pass over the frames."""
    geometry = [crop_geometry(s.boxes) for s in tracks]
    crops = [np.empty((len(s), REFERENCE_CROP_SIZE, REFERENCE_CROP_SIZE, 3), np.uint8)
             for s in tracks]
    index = 0
    for chunk in chunks:
        for frame in chunk:
            for track, geo, out in zip(tracks, geometry, crops, strict=True):
                if track.first <= index <= track.last:
                    k = index - track.first
                    out[k] = crop_frame(frame, int(geo.bsi[k]), geo.rect[k])
            index += 1
    if tracks and max(s.last for s in tracks) >= index:
        raise MediaError(f"the video gave {index} frames on the second decoding, fewer than "
                         "on the first")
    return crops


class FramePasses:
    """A video's frames for two passes (find the faces, then crop them) at one decoding.

    The first pass keeps the decoded chunks while they fit in ``budget`` bytes, so the
    second replays them from memory; a longer video is decoded again instead, which keeps
    memory bounded for any length.
    """

    def __init__(self, path: Path, budget: int = FRAME_MEMORY_BYTES,
                 on_chunk: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.budget = budget
        self.on_chunk = on_chunk
        self._kept: list[np.ndarray] | None = []
        self._complete = False

    def first(self) -> Iterator[np.ndarray]:
        """Decode, keeping what fits; ``on_chunk(frames so far)`` after each chunk."""
        size = seen = 0
        for chunk in media.iter_video_frames(self.path, fps=VIDEO_FPS):
            if self._kept is not None:
                size += chunk.nbytes
                if size <= self.budget:
                    self._kept.append(chunk)
                else:
                    self._kept = None
            seen += len(chunk)
            if self.on_chunk:
                self.on_chunk(seen)
            yield chunk
        self._complete = True

    def again(self) -> Iterable[np.ndarray]:
        """The same frames once more (from memory when they were kept)."""
        if self._complete and self._kept is not None:
            return self._kept
        return media.iter_video_frames(self.path, fps=VIDEO_FPS)


def score_tracks(
    model: nn.Module,
    crops: Sequence[np.ndarray],
    tracks: Sequence[FaceTrack],
    audio: np.ndarray,
    options: LseOptions,
) -> list[TrackScores]:
    """LSE of every track long enough for one window (audio cut to its frames)."""
    results = []
    for track, clip in zip(tracks, crops, strict=True):
        sound = audio[track.first * SAMPLES_PER_FRAME:(track.last + 1) * SAMPLES_PER_FRAME]
        if num_windows(len(clip), len(sound)) < 1:
            continue
        scores = evaluate_crops(model, clip, sound, options.vshift, options.batch_size,
                                options.device)
        results.append(TrackScores(track.first, track.last, scores))
    return results


def lse_video(
    path: str | Path,
    model: nn.Module,
    options: LseOptions | None = None,
    progress: Progress | None = None,
) -> LseVideo:
    """LSE-D, LSE-C and the offset of a video (see the module docstring for the pipeline
    and what differs from the reference's)."""
    require_syncnet(model)
    opts = options or LseOptions()
    path = Path(path)
    info = media.probe(path)
    media.require_video_and_audio(info)
    detector = faces.make_detector(opts.detector, opts.face_box)
    expected = max(1, round((info.duration_s or 0) * VIDEO_FPS))
    frames = FramePasses(path, opts.frame_memory_bytes,
                         (lambda n: progress("faces", n, max(expected, n))) if progress else None)
    if opts.tracker_name == "reference":
        tracks, n_frames = tracks_reference(frames.first(), detector, opts.min_track,
                                                opts.min_face_size)
    else:
        tracks, n_frames = tracks_ours(frames.first(), detector)
    tracks = [s for s in tracks if len(s) >= MIN_TRACK_FRAMES]
    if not tracks:
        raise NoFaceError(f"{path}: no face track of {MIN_TRACK_FRAMES} frames or more was "
                          f"found in {n_frames} frames")
    crops = crop_tracks(frames.again(), tracks)
    del frames
    if progress:
        progress("lse", 0, len(tracks))
    audio = int16_scale(media.decode_audio(path, SAMPLE_RATE))
    scored = score_tracks(model, crops, tracks, audio, opts)
    if not scored:
        raise ClipTooShortError(
            f"{path}: no face track has the {FRAMES_PER_WINDOW + 1} frames and the audio "
            "SyncNet needs")
    return LseVideo(str(path), n_frames, opts.tracker_name, scored)


LSE_RECORD = record_schema("lse", [
    Field("lse_d", "float"), Field("lse_c", "float"), Field("syncnet_offset", "int"),
    Field("audio_delay_ms", "float"), Field("audio_delay_frames", "int"), Field("windows", "int"),
    Field("vshift", "int"), Field("first_frame", "int"), Field("last_frame", "int"),
    Field("frames", "int"), Field("face_coverage", "float"), Field("tracker", "str"),
    Field("model", "dict", nullable=True), Field("tracks", "list", in_csv=False),
], signature={"lse_d", "lse_c"})
"""An ``lse`` report row: :meth:`LseVideo.to_json` and the model that produced it."""


def summarize(records: Iterable[dict]) -> dict:
    """Mean and standard deviation (population, ``ddof=0``) of LSE-D and LSE-C over the
    videos that were scored, the figures papers report, plus how many failed."""
    records = list(records)
    scored = [r for r in records if "error" not in r and "lse_d" in r]
    summary: dict = {"videos": len(scored), "failed": sum("error" in r for r in records)}
    for key in ("lse_d", "lse_c"):
        values = np.array([float(r[key]) for r in scored])
        summary[f"{key}_mean"] = round(float(values.mean()), 4) if len(values) else None
        summary[f"{key}_std"] = round(float(values.std()), 4) if len(values) else None
    return summary




def longest(tracks: Sequence[TrackScores]) -> TrackScores:
    """The track whose numbers stand for the video (the first of equally long ones)."""
    return max(tracks, key=lambda s: (s.last_frame - s.first_frame, -s.first_frame))
