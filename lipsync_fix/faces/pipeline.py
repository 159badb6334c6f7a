"""Find the speaking face in a video and cut the 96x96 crops that VocaLiST scores.

VocaLiST was trained on faces prepared like Wav2Lip's: an S3FD face box, padded by
10 px at the bottom (pads top, bottom, left, right = 0, 10, 0, 0) and clipped to the frame,
smoothed over 5 frames, resized to 96x96 with ``cv2.resize`` (bilinear), BGR. The model
looks at the lower half of that crop only, so what matters most is that the mouth and chin
land in rows 48..95 the way they did in training. This module reproduces that geometry.

Pipeline (all of it streaming, so an hour of video never sits in memory):

1. detection on a downscaled copy of the first frame and of every frame that starts a new
   shot, with a :class:`FaceDetector`: OpenCV Haar cascades by default (offline, fast on a
   2-core CPU; boxes converted to S3FD geometry), the S3FD detector of ``face-alignment``
   when installed with its weights cached, or a fixed user-given box. On every
   ``detect_every``-th frame in between, each tracked face is followed by its appearance
   (:class:`~lipsync_fix.faces.follow.FaceFollower`) and detected again near its last box
   only when the follow's confidence drops; the whole frame is scanned again every
   ``rescan_s`` (on a smaller frame first, :meth:`HaarFaceDetector.rescan`);
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

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lipsync_fix.errors import NoFaceError
from lipsync_fix.faces.boxes import Box, non_max_suppression
from lipsync_fix.faces.crop import WAV2LIP_PADS, WAV2LIP_SIZE, crop_face
from lipsync_fix.faces.detectors import (
    FaceDetector,
    FixedBoxDetector,
    RegionFaceDetector,
    make_detector,
)
from lipsync_fix.faces.follow import FaceFollower
from lipsync_fix.faces.scenes import SceneCutDetector
from lipsync_fix.faces.tracking import (
    MIN_TRACK_FRAMES,
    FaceLinker,
    FaceTrack,
    TrackBuilder,
    rank_tracks,
    select_main_tracks,
)

CropFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``crop(frame_bgr, box_xywh) -> uint8 array``: what is kept of each frame of a track."""


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

    Faces are looked for on every ``detect_every``-th frame and on the first frame of each
    shot. The whole frame is scanned only when no face is tracked, at a cut and every
    ``rescan_s`` seconds (for faces that come into view); in between each tracked face is
    followed from its last detection by its appearance (:class:`FaceFollower`, under a
    millisecond), and detected again when the follow's confidence drops: near its last
    box with a :class:`RegionFaceDetector` (the Haar one, which also recovers faces the
    full scan misses), by a full scan with other detectors. ``follow=False`` looks for
    every tracked face with the detector instead (near its last box, or a full scan), as
    before followers existed; a fixed box is never followed (finding it costs nothing).

    A frame is cropped once every track's box in it is final, ``max_gap + smooth_radius +
    1`` frames later, so memory holds that many full frames plus one crop per frame and
    tracked face (crops are kept for every track because the main face is only known at
    the end). ``crop`` decides what is kept of a frame (default: the whole Wav2Lip crop,
    ``size`` x ``size`` with ``pad``; the main job keeps only the lower half a model reads),
    ``crop_shape`` its shape.
    """

    def __init__(
        self,
        detector: FaceDetector,
        *,
        fps: float,
        detect_every: int = 3,
        max_gap_s: float = 0.5,
        rescan_s: float = 1.0,
        smooth_radius: int = 2,
        detect_cuts: bool = True,
        size: int = WAV2LIP_SIZE,
        pad: tuple[int, int, int, int] = WAV2LIP_PADS,
        crop: CropFn | None = None,
        crop_shape: tuple[int, int, int] | None = None,
        follow: bool = True,
    ) -> None:
        if detect_every < 1:
            raise ValueError("detect_every must be at least 1")
        self.detector = detector
        self._region = detector if isinstance(detector, RegionFaceDetector) else None
        follow = follow and not isinstance(detector, FixedBoxDetector)
        self._follower = FaceFollower() if follow else None
        self.detect_every = detect_every
        self._rescan = max(round(rescan_s * fps), detect_every)
        self.smooth_radius = smooth_radius
        self.size = size
        self.pad = pad
        self._crop: CropFn = crop or (lambda frame, box: crop_face(frame, box, size, pad))
        self._crop_shape = crop_shape or (size, size, 3)
        max_gap = max(round(max_gap_s * fps), detect_every)
        self._linker = FaceLinker(max_gap=max_gap, hold=detect_every - 1)
        self._cuts = SceneCutDetector() if detect_cuts else None
        self.cut_frames: list[int] = []  # frames that start a new shot
        self._delay = max_gap + smooth_radius + 1
        self._buffer: deque[tuple[int, np.ndarray]] = deque()
        self._ended: list[TrackBuilder] = []
        self._finished: list[TrackBuilder] = []
        self._track_crops: dict[int, _TrackCrops] = {}
        self._tracks: list[FaceTrack] | None = None
        self._n_frames = 0
        self._last_detection = -detect_every
        self._last_scan = -self._rescan

    @property
    def n_frames(self) -> int:
        return self._n_frames

    def feed(self, chunk: np.ndarray, *, copy: bool = True) -> None:
        """Process a chunk ``(n, H, W, 3)`` (or one frame ``(H, W, 3)``) of uint8 BGR frames.

        Frames wait in the look-ahead until they are cropped; ``copy=False`` keeps the
        caller's arrays there instead of copies (a decoder that hands out a fresh array
        per chunk saves a copy of every frame), so the caller must not change them."""
        if self._tracks is not None:
            raise RuntimeError("FaceCropper.feed() called after the stream was closed")
        frames = chunk[None] if chunk.ndim == 3 else chunk
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 BGR frames (n, H, W, 3), got {chunk.shape}")
        for frame in frames:
            self._push(frame, copy)

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
        crops = np.zeros((n, *self._crop_shape), dtype=np.uint8)
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

    def _push(self, frame: np.ndarray, copy: bool) -> None:
        index = self._n_frames
        self._n_frames += 1
        cut = self._cuts.update(frame) if self._cuts is not None else False
        if cut:
            self.cut_frames.append(index)
        boxes: list[Box] = []
        followed: set[int] = set()
        looked = cut or index - self._last_detection >= self.detect_every
        if looked:
            boxes, followed = self._detect(index, frame, cut)
            self._last_detection = index
        self._ended += self._linker.update(index, boxes, cut)
        if looked and self._follower is not None:
            self._anchor(index, frame, followed)
        self._buffer.append((index, frame.copy() if copy else frame))
        self._emit(index - self._delay)

    def _detect(self, index: int, frame: np.ndarray, cut: bool) -> tuple[list[Box], set[int]]:
        """Full-frame scan when due, then each tracked face it missed: followed, or looked
        for near its last box (or by a full scan) when the follow is not confident.
        Returns the boxes and the ids of those that were followed, not detected."""
        boxes: list[Box] = []
        tracking = bool(self._linker.active) and not cut and (
            self._region is not None or self._follower is not None)
        scanned = not tracking or index - self._last_scan >= self._rescan
        if scanned:  # a tracker's periodic scan may be the detector's cheaper rescan
            scan = getattr(self.detector, "rescan", None) if tracking else None
            boxes = (scan or self.detector.detect)(frame)
            self._last_scan = index
        followed: list[Box] = []
        if tracking:
            for track in self._linker.unmatched(boxes):
                found = self._follow(track, frame)
                if found is not None:
                    followed.append(found)
                elif self._region is not None:
                    boxes += self._region.detect_near(frame, track.last_box)
                elif not scanned:  # detect again: the follow lost this face
                    boxes += self.detector.detect(frame)
                    self._last_scan = index
                    scanned = True
        kept = non_max_suppression(boxes + followed)
        return kept, {id(box) for box in followed if any(box is k for k in kept)}

    def _follow(self, track: TrackBuilder, frame: np.ndarray) -> Box | None:
        """The track's face followed into ``frame``, if the follow is confident."""
        if self._follower is None:
            return None
        found = self._follower.follow(track.track_id, frame, track.last_box)
        if found is None or found[1] < self._follower.min_confidence:
            return None
        return found[0]

    def _anchor(self, index: int, frame: np.ndarray, followed: set[int]) -> None:
        """Re-anchor every track detected in this frame; forget the tracks that ended."""
        if self._follower is None:
            return
        for track in self._linker.active:
            if track.last_detection == index and id(track.last_box) not in followed:
                self._follower.anchor(track.track_id, frame, track.last_box)
        self._follower.forget({t.track_id for t in self._linker.active})

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
                    store.crops.append(self._crop(frame, box))
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
    fps: float,
    detect_every: int = 3,
    max_gap_s: float = 0.5,
    rescan_s: float = 1.0,
    detect_cuts: bool = True,
    crop: CropFn | None = None,
    crop_shape: tuple[int, int, int] | None = None,
    follow: bool = True,
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
        crop=crop,
        crop_shape=crop_shape,
        follow=follow,
    )
    for chunk in frame_chunks:
        cropper.feed(chunk)
    return cropper.finish()
