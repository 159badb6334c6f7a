"""The front end: a video -> the speaker's face crops and the audio, in bounded memory.

Decode at 25 fps and 16 kHz (media), track the speaker and cut the crops a model reads
(faces, with the model's input recipe from features). Two ways in:

* :class:`ClipReader` serves the main job. It probes a video once, keeps its audio as
  16-bit samples (115 MB an hour), and decodes *segments* on demand: a few seconds from
  anywhere in the clip, after a seek (:meth:`ClipReader.segment`), or every segment in
  order from one decoder (:meth:`ClipReader.segments_in_order`). Frames are scaled inside
  ffmpeg (:data:`DECODE_MAX_SIDE`), only the part of each crop the model reads is kept
  (uint8), and a segment's crops are dropped once it is scored: memory does not grow with
  the video's length.
* :func:`extract_features` reads a whole clip at once (separation works on whole clips).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipsync_fix import faces, media
from lipsync_fix.errors import NoFaceError
from lipsync_fix.features.constants import SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS
from lipsync_fix.features.inputs import WAV2LIP, InputRecipe
from lipsync_fix.features.visual import lower_half

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: how far a long step is."""

DECODE_MAX_SIDE = 1280
"""Frames are scaled inside ffmpeg so their longer side is at most this many pixels: a 4K
frame (25 MB) never reaches Python, and a face large enough to matter still spans more
pixels than the 96 (or 224) of a crop."""

DECODE_CHUNK_FRAMES = 16
"""Frames per read from the decoder: with the face tracker's short look-ahead, all the
full-size frames held at once."""


@dataclass
class Segment:
    """The main face in frames ``first .. first + len(has_face) - 1`` of a clip.

    ``crops`` holds what the model's recipe keeps of each frame (uint8, black where there is
    no face), ``has_face`` which frames show the face, ``faces_seen`` the most faces tracked
    at once, ``cuts`` the frames (of the clip) where a new shot starts.
    """

    first: int
    crops: np.ndarray
    has_face: np.ndarray
    faces_seen: int
    cuts: tuple[int, ...] = ()

    @property
    def n_frames(self) -> int:
        return len(self.has_face)


class ClipReader:
    """One video, probed once, read segment by segment (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        recipe: InputRecipe = WAV2LIP,
        detector: str = "auto",
        face_box: str | None = None,
        max_side: int = DECODE_MAX_SIDE,
    ):
        self.path = Path(path)
        self.info = media.probe(self.path)
        media.require_video_and_audio(self.info)
        self.recipe = recipe
        self.max_side = max_side
        self.detector = faces.make_detector(detector, face_box)
        self.audio = media.decode_audio(self.path, SAMPLE_RATE, info=self.info, dtype="int16")
        duration = self.info.duration_s or len(self.audio) / SAMPLE_RATE
        # Frames the 25 fps grid is sure to hold (the container's duration may count the
        # last frame's full length, or the audio's, so a frame less is the safe count).
        self.n_frames = max(0, int(duration * VIDEO_FPS) - 1)

    @property
    def fps(self) -> float:
        return float(self.info.fps or VIDEO_FPS)

    @property
    def duration_s(self) -> float:
        return float(self.info.duration_s or len(self.audio) / SAMPLE_RATE)

    @property
    def n_samples(self) -> int:
        return len(self.audio)

    def audio_float(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` (clipped to the clip) as float32 in [-1, 1]."""
        start, stop = max(0, start), min(len(self.audio), stop)
        return self.audio[start:stop].astype(np.float32) / 32768.0

    def frame_power(self) -> np.ndarray:
        """Mean square (full scale 1.0) of the audio of every 25 fps frame, computed in
        chunks so a long soundtrack is never copied to float whole."""
        n = len(self.audio) // SAMPLES_PER_FRAME
        power = np.empty(n, dtype=np.float64)
        step = 4096  # frames per chunk (2.6 M samples)
        for a in range(0, n, step):
            b = min(n, a + step)
            chunk = self.audio[a * SAMPLES_PER_FRAME : b * SAMPLES_PER_FRAME]
            x = chunk.reshape(b - a, SAMPLES_PER_FRAME).astype(np.float32) / 32768.0
            power[a:b] = np.einsum("ij,ij->i", x, x) / SAMPLES_PER_FRAME
        return power

    def voiced(self, n_windows: int, window_frames: int, min_rms: float) -> np.ndarray:
        """Whether the audio of each of the first ``n_windows`` windows (``window_frames``
        frames from each start) holds a voice: RMS above ``min_rms`` (full scale 1.0)."""
        power = np.concatenate([[0.0], np.cumsum(self.frame_power())])
        starts = np.arange(n_windows)
        stops = np.minimum(starts + window_frames, len(power) - 1)
        rms = np.sqrt((power[stops] - power[starts]) / window_frames)
        return rms > min_rms

    def segment(self, first: int, count: int) -> Segment:
        """Frames ``first .. first + count - 1``, decoded after a seek, through the face
        tracker."""
        chunks = media.iter_video_frames(
            self.path, VIDEO_FPS, DECODE_CHUNK_FRAMES, max_side=self.max_side,
            first_frame=first, n_frames=count, info=self.info)
        return self._track(first, chunks)

    def segments_in_order(self, starts: Sequence[int], count: int) -> Iterator[Segment]:
        """Segments of ``count`` frames at ascending ``starts`` (they may overlap), from one
        decoder reading the video once from the start."""
        wanted = deque(sorted(starts))
        if not wanted:
            return
        held: deque[tuple[int, np.ndarray]] = deque()  # (frame index, frame)
        index = 0
        chunks = media.iter_video_frames(self.path, VIDEO_FPS, DECODE_CHUNK_FRAMES,
                                         max_side=self.max_side, info=self.info)
        for chunk in chunks:
            for frame in chunk:
                if frame_index_needed(index, wanted, count):
                    held.append((index, frame))
                index += 1
            while wanted and (index >= wanted[0] + count):
                first = wanted.popleft()
                frames = [f for i, f in held if first <= i < first + count]
                yield self._track(first, [np.stack(frames)] if frames else [])
                while held and (not wanted or held[0][0] < wanted[0]):
                    held.popleft()
        while wanted:  # the video ended inside these segments
            first = wanted.popleft()
            frames = [f for i, f in held if first <= i < first + count]
            yield self._track(first, [np.stack(frames)] if frames else [])

    def _track(self, first: int, chunks) -> Segment:
        cropper = faces.FaceCropper(
            self.detector, fps=VIDEO_FPS, crop=self.recipe.crop,
            crop_shape=self.recipe.stored_shape())
        for chunk in chunks:
            cropper.feed(chunk)
        tracks = cropper.close()
        cuts = tuple(first + i for i in cropper.cut_frames)
        if not tracks:
            n = cropper.n_frames
            return Segment(first, np.zeros((n, *self.recipe.stored_shape()), np.uint8),
                           np.zeros(n, bool), 0, cuts)
        found = cropper.crops_for(faces.select_main_tracks(tracks, cropper.n_frames))
        return Segment(first, found.crops, np.asarray(found.has_face, bool), found.n_faces,
                       cuts)


def frame_index_needed(index: int, wanted: deque[int], count: int) -> bool:
    """Whether frame ``index`` falls in any wanted segment (ascending starts)."""
    return any(first <= index < first + count for first in wanted)


@dataclass
class ClipFeatures:
    """A whole clip's crops and audio (for separation, which works on whole clips)."""

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
    """Decode the video at 25 fps, track the speaker's face over the whole clip, and
    decode 16 kHz audio. Frames are streamed (scaled in ffmpeg); crops are kept."""
    info = media.probe(path)
    media.require_video_and_audio(info)
    cropper = faces.FaceCropper(faces.make_detector(detector, face_box), fps=VIDEO_FPS)
    expected = max(1, round(info.duration_s * VIDEO_FPS)) if info.duration_s else 0
    for chunk in media.iter_video_frames(path, VIDEO_FPS, DECODE_CHUNK_FRAMES,
                                         max_side=DECODE_MAX_SIDE, info=info):
        cropper.feed(chunk)
        if progress:
            progress("faces", cropper.n_frames, max(expected, cropper.n_frames))
    try:
        found = cropper.finish()
    except NoFaceError as exc:
        raise NoFaceError(f"{path}: {exc}") from exc
    wav = media.decode_audio(path, SAMPLE_RATE, info=info)
    return ClipFeatures(
        frames=lower_half(found.crops),
        has_face=np.asarray(found.has_face, dtype=bool),
        wav=wav,
        fps=info.fps or VIDEO_FPS,
        duration_s=info.duration_s or len(wav) / SAMPLE_RATE,
        face_coverage=float(found.face_coverage),
        faces_seen=int(found.n_faces),
    )

