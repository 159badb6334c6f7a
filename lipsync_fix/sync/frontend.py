"""The front end: a video -> the speaker's face crops and the audio, in bounded memory.

Decode at 25 fps and 16 kHz (media), track the speaker and cut the crops a model reads
(faces, with the model's input recipe from features). Two ways in:

* :class:`ClipReader` serves the main job. It probes a video once, keeps its audio as
  16-bit samples (115 MB an hour), and decodes *segments* on demand: a few seconds from
  anywhere in the clip, after a seek (:meth:`ClipReader.segment`), or every segment in
  order from one decoder (:meth:`ClipReader.segments_in_order`), a background thread
  reading the next segments while the caller scores this one (:func:`read_ahead`). Frames
  are decoded once, scaled inside ffmpeg to the analysis size (:data:`ANALYSIS_MAX_SIDE`)
  on which faces are both found and cropped; only the part of each crop the model reads is
  kept (uint8), and a segment's crops are dropped once it is scored: memory does not grow
  with the video's length. :meth:`ClipReader.preload` reads the first segments in
  advance, in another process (a reader pickles without its detector), so that a folder's
  next clips are ready when the model gets to them (:mod:`lipsync_fix.sync.pipeline`).
* :func:`extract_features` reads a whole clip at once (separation works on whole clips).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from lipsync_fix import faces, media
from lipsync_fix.errors import NoFaceError
from lipsync_fix.features.constants import SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS
from lipsync_fix.features.inputs import WAV2LIP, InputRecipe
from lipsync_fix.features.visual import lower_half
from lipsync_fix.files import Fingerprint

T = TypeVar("T")

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: how far a long step is."""

DECODE_MAX_SIDE = 1280
"""Frames are scaled inside ffmpeg so their longer side is at most this many pixels: a 4K
frame (25 MB) never reaches Python, and a face large enough to matter still spans more
pixels than the 96 (or 224) of a crop."""

ANALYSIS_MAX_SIDE = 960
"""The main job decodes its frames once, at this size (longer side), and both finds the
faces and cuts the crops on them. A talking head of 720p or 1080p keeps a face of 150-300
pixels, still more than the 96 of a crop (the authors' training faces, from 160x160
LRS2 video, had about 100), while ffmpeg's scaling and the pipe carry half the pixels of
720p and a quarter of 1080p."""

DECODE_CHUNK_FRAMES = 16
"""Frames per read from the decoder: with the face tracker's short look-ahead, all the
full-size frames held at once."""

READ_AHEAD = 2
"""Segments a reader's background thread decodes and tracks ahead of the one being scored:
the front end (ffmpeg, OpenCV) and the model then share the cores instead of taking turns."""


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
        max_side: int = ANALYSIS_MAX_SIDE,
    ):
        self.path = Path(path)
        self.info = media.probe(self.path)
        media.require_video_and_audio(self.info)
        self.recipe = recipe
        self.max_side = max_side
        self.detector_args = (detector, face_box)
        self._detector = faces.make_detector(detector, face_box)  # refuses a bad name now
        self.audio = media.decode_audio(self.path, SAMPLE_RATE, info=self.info, dtype="int16")
        duration = self.info.duration_s or len(self.audio) / SAMPLE_RATE
        # Frames the 25 fps grid is sure to hold (the container's duration may count the
        # last frame's full length, or the audio's, so a frame less is the safe count).
        self.n_frames = max(0, int(duration * VIDEO_FPS) - 1)
        self._ready: dict[tuple[int, int], Segment] = {}  # segments read by preload()
        # the input's fingerprint before a folder pipeline's worker read it (None: opened
        # where it is used)
        self.prepared_from: Fingerprint | None = None

    @property
    def detector(self) -> faces.FaceDetector:
        if self._detector is None:
            self._detector = faces.make_detector(*self.detector_args)
        return self._detector

    def __getstate__(self) -> dict:
        """A reader prepared in a worker process travels without its detector (OpenCV's
        cascades cannot be pickled); it is made again only if a segment must be read."""
        return self.__dict__ | {"_detector": None}

    def preload(self, firsts: Sequence[int], count: int, max_bytes: int) -> int:
        """Read the segments of ``count`` frames at ``firsts`` now, from one decoder pass,
        so that :meth:`segment` and :meth:`segments_in_order` hand them out without
        decoding (how a worker prepares the next clip of a folder while this one is
        scored). ``firsts`` come in the order they will be asked for; only as many as fit
        in ``max_bytes`` of crops are read. Returns how many were read."""
        per_segment = count * math.prod(self.recipe.stored_shape())
        keep = sorted(set(list(firsts)[: max(0, max_bytes // max(1, per_segment))]))
        for first, segment in zip(keep, self._decode_in_order(keep, count), strict=True):
            self._ready[(first, count)] = segment
        return len(keep)

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
        tracker (or as :meth:`preload` read them: the same frames, the same tracker)."""
        ready = self._ready.pop((first, count), None)
        if ready is not None:
            return ready
        chunks = media.iter_video_frames(
            self.path, VIDEO_FPS, DECODE_CHUNK_FRAMES, max_side=self.max_side,
            first_frame=first, n_frames=count, info=self.info)
        return self._track(first, chunks)

    def segments(self, firsts: Sequence[int], count: int, ahead: int = READ_AHEAD
                 ) -> Iterator[Segment]:
        """:meth:`segment` for each of ``firsts`` in turn, the next ones read by a
        background thread while the caller works on this one (at most ``ahead``
        waiting; ``ahead=0`` reads each when it is asked for)."""
        return read_ahead((self.segment(first, count) for first in firsts), ahead)

    def segments_in_order(self, starts: Sequence[int], count: int, ahead: int = READ_AHEAD
                          ) -> Iterator[Segment]:
        """Segments of ``count`` frames at ascending ``starts`` (they may overlap), from one
        decoder reading the video once from the start (none for segments :meth:`preload`
        read), by a background thread up to ``ahead`` segments in advance."""
        return read_ahead(self._in_order(sorted(starts), count), ahead)

    def _in_order(self, starts: list[int], count: int) -> Iterator[Segment]:
        missing = [first for first in starts if (first, count) not in self._ready]
        decoded = self._decode_in_order(missing, count)
        try:
            for first in starts:
                ready = self._ready.pop((first, count), None)
                yield ready if ready is not None else next(decoded)
        finally:
            decoded.close()

    def _decode_in_order(self, starts: Sequence[int], count: int) -> Iterator[Segment]:
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
                yield self._track(first, [f for i, f in held if first <= i < first + count])
                while held and (not wanted or held[0][0] < wanted[0]):
                    held.popleft()
        while wanted:  # the video ended inside these segments
            first = wanted.popleft()
            yield self._track(first, [f for i, f in held if first <= i < first + count])

    def _track(self, first: int, chunks) -> Segment:
        """The face tracker over ``chunks`` (arrays of frames, or single frames), which
        are the decoder's own fresh arrays: the tracker holds them without a copy."""
        cropper = faces.FaceCropper(
            self.detector, fps=VIDEO_FPS, crop=self.recipe.crop,
            crop_shape=self.recipe.stored_shape())
        for chunk in chunks:
            cropper.feed(chunk, copy=False)
        tracks = cropper.close()
        cuts = tuple(first + i for i in cropper.cut_frames)
        if not tracks:
            n = cropper.n_frames
            return Segment(first, np.zeros((n, *self.recipe.stored_shape()), np.uint8),
                           np.zeros(n, bool), 0, cuts)
        found = cropper.crops_for(faces.select_main_tracks(tracks, cropper.n_frames))
        return Segment(first, found.crops, np.asarray(found.has_face, bool), found.n_faces,
                       cuts)


ReaderSource = Callable[[Path], "ClipReader | None"]
"""``source(path)``: a reader of ``path`` prepared in advance, or None."""

_PREPARED: contextvars.ContextVar[ReaderSource | None] = contextvars.ContextVar(
    "lipsync_fix_prepared_readers", default=None)


@contextlib.contextmanager
def prepared_readers(source: ReaderSource) -> Iterator[None]:
    """Within this block (in this thread), :func:`open_reader` asks ``source`` first:
    how a folder pipeline hands its prepared readers to an estimate that opens its clip
    itself, without the estimate's callers passing them along."""
    token = _PREPARED.set(source)
    try:
        yield
    finally:
        _PREPARED.reset(token)


def open_reader(path: str | Path, recipe: InputRecipe = WAV2LIP, detector: str = "auto",
                face_box: str | None = None) -> ClipReader:
    """A :class:`ClipReader` of ``path``: the one prepared for it (see
    :func:`prepared_readers`) when it was prepared with this recipe and detector, else a
    new one."""
    source = _PREPARED.get()
    ready = source(Path(path)) if source is not None else None
    if ready is not None and ready.recipe.name == recipe.name and \
            ready.detector_args == (detector, face_box):
        return ready
    return ClipReader(path, recipe, detector, face_box)


_DONE = object()


def read_ahead(items: Iterator[T], ahead: int) -> Iterator[T]:
    """``items``, produced by a background thread at most ``ahead`` items in advance (all
    in this thread when ``ahead`` is 0). An exception raised by ``items`` is raised here, at
    the place it came in the sequence; a consumer that stops early stops the thread, and
    ``items`` is closed there (an ffmpeg process behind it is ended)."""
    if ahead <= 0:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_DONE, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="lipsync-fix read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()


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

