"""Linking per-frame detections into smoothed face tracks, and choosing the speaker's.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lipsync_fix.faces.boxes import Box

MIN_TRACK_FRAMES = 5
"""Tracks shorter than one VocaLiST window (5 frames) cannot be scored and are mostly false
hits; they are not chained into the main face nor counted as extra faces."""


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


class TrackBuilder:
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


class FaceLinker:
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
        self.active: list[TrackBuilder] = []
        self._next_id = 0

    def update(self, frame: int, boxes: Sequence[Box], cut: bool = False) -> list[TrackBuilder]:
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
            self.active.append(TrackBuilder(self._next_id, frame, boxes[index]))
            self._next_id += 1
        return ended

    def close(self, last_frame: int) -> list[TrackBuilder]:
        """End every track at the end of the video (``last_frame`` is its last index)."""
        for track in self.active:
            track.end = min(track.last_detection + self.hold, last_frame)
        ended, self.active = self.active, []
        return ended

    def unmatched(self, boxes: Sequence[Box]) -> list[TrackBuilder]:
        """Active tracks that none of ``boxes`` would continue."""
        matched = {track.track_id for track, _ in self._match(boxes)}
        return [t for t in self.active if t.track_id not in matched]

    def _match(self, boxes: Sequence[Box]) -> list[tuple[TrackBuilder, int]]:
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
        matched: list[tuple[TrackBuilder, int]] = []
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
    linker = FaceLinker(max_gap=max_gap, hold=hold)
    builders: list[TrackBuilder] = []
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
