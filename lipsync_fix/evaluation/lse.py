"""LSE-D and LSE-C: the lip-sync metrics of the talking-head literature, from the original
SyncNet (joonson/syncnet_python ``SyncNetInstance.evaluate``), over crops or over a video.

Papers on talking-head generation (Wav2Lip and those that follow it) report the mean over
their test clips of two numbers from that ``evaluate()`` with ``syncnet_v2.model`` and a
search range of +-15 frames (``vshift``):

* **LSE-D** (``minval``): the smallest mean embedding distance over the 31 shifts (lower =
  better sync);
* **LSE-C** (``conf``): the median of those 31 mean distances minus the smallest (higher =
  more confident).

It also reports an offset in frames with the reference's sign: **positive when the audio
leads the picture** (the sound comes early). Our library's ``audio_delay_ms`` is positive
when the audio comes late, so ``audio_delay_ms = -offset * 40``.

The arithmetic reproduces the reference exactly, quirks included: the audio embeddings are
padded with ``vshift`` **zero vectors** at each end, so shifts that fall off the clip are
compared with zeros and still count in the mean (they are not masked); the last complete
5-frame window is dropped; the framewise confidence is median-filtered over 9 windows with
zero padding. :func:`evaluate_crops` does that on 224x224 crops and int16-scale audio and
matches the reference's golden numbers.

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

A video whose face track breaks gives several segments; each is scored on its own (as
``run_syncnet.py`` scores each track) and the video's numbers are those of the longest.
"""

from __future__ import annotations

import math
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

from lipsync_fix import faces, media
from lipsync_fix.compute import check_device_name, full_float32, resolve_device
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.errors import (
    ClipTooShortError,
    LipsyncError,
    MediaError,
    NoFaceError,
    UsageError,
)
from lipsync_fix.evaluation.golden import rule_weights
from lipsync_fix.faces.reference import (
    MIN_FACE_SIZE,
    MIN_TRACK,
    NUM_FAILED_DET,
    REFERENCE_CROP_SIZE,
    Detection,
    crop_frame,
    crop_geometry,
    track_shot,
    zero_padded_median,
)
from lipsync_fix.features.constants import (
    FRAME_MS,
    FRAMES_PER_WINDOW,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    VIDEO_FPS,
)
from lipsync_fix.features.inputs import SYNCNET
from lipsync_fix.features.mfcc import int16_scale, mfcc_matrix
from lipsync_fix.models.syncnet import PAIRWISE_EPS, SyncNetV2
from lipsync_fix.records import Field, record_schema
from lipsync_fix.sync.frontend import Progress

VSHIFT = 15
"""Shifts searched either way, in frames: what ``run_syncnet.py`` uses and papers report."""

EVAL_BATCH = 20
"""Windows per forward pass, as the reference (in eval mode it changes no result)."""

FRAMEWISE_FILTER = 9
"""Median filter length of the framewise confidence."""

FRAME_MEMORY_BYTES = 1 << 30
"""Decoded frames are kept for the cropping pass up to this size; a longer video is
decoded a second time instead of holding more."""

MIN_SEGMENT_FRAMES = 7
"""Shortest face segment scored: under 7 frames the reference's 13-tap median filter, which
pads with zeros, smooths every box of the track to zero (more padding than values)."""

SYNCNET_INPUTS = "syncnet"
"""The ``inputs`` attribute of a model that reads 224x224 crops and MFCC (SyncNetV2)."""


# --------------------------------------------------------------------------- the metric


@dataclass(frozen=True, eq=False)
class LseScores:
    """The reference ``evaluate()``'s results for one clip.

    ``offset`` uses the reference's sign (positive: audio leads); ``audio_delay_ms`` is
    ours (positive: audio late). ``distances`` ``(windows, 2 vshift + 1)`` are embedding
    distances (lower = more in sync), ``mean_distances`` their column means,
    ``framewise_confidence`` the median-filtered per-window confidence (``fconfm``).
    """

    offset: int
    min_index: int
    lse_d: float
    lse_c: float
    median: float
    vshift: int
    distances: np.ndarray
    mean_distances: np.ndarray
    framewise_confidence: np.ndarray

    @property
    def windows(self) -> int:
        return int(self.distances.shape[0])

    @property
    def audio_delay_ms(self) -> float:
        """The offset in our convention: > 0 when the sound comes after the lips."""
        return -self.offset * FRAME_MS if self.offset else 0.0

    def to_json(self) -> dict:
        return {
            "lse_d": round(self.lse_d, 4),
            "lse_c": round(self.lse_c, 4),
            "syncnet_offset": self.offset,
            "audio_delay_ms": self.audio_delay_ms,
            "offset_frames": -self.offset,
            "windows": self.windows,
            "vshift": self.vshift,
        }


def count_windows(n_frames: int, n_samples: int) -> int:
    """Windows the reference scores: ``min(frames, samples // 640) - 5`` (one fewer than
    the complete 5-frame windows; never negative)."""
    return max(0, min(n_frames, n_samples // SAMPLES_PER_FRAME) - FRAMES_PER_WINDOW)


def distance_matrix(video_emb: torch.Tensor, audio_emb: torch.Tensor,
                    vshift: int = VSHIFT) -> torch.Tensor:
    """``(N, 2 vshift + 1)``: entry ``[i, j]`` is the distance of video window i to audio
    window ``i + j - vshift``, where audio windows outside ``0..N-1`` are zero vectors
    (the reference's ``calc_pdist``; distances use the +1e-6 eps of ``pairwise_distance``)."""
    if video_emb.shape != audio_emb.shape or video_emb.dim() != 2:
        raise ValueError(f"embeddings must both be (N, D), got {tuple(video_emb.shape)} "
                         f"and {tuple(audio_emb.shape)}")
    n = video_emb.shape[0]
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))
    return torch.stack([F.pairwise_distance(video_emb, padded[j:j + n], eps=PAIRWISE_EPS)
                        for j in range(2 * vshift + 1)], dim=1)


def lse_from_distances(distances: torch.Tensor, vshift: int = VSHIFT) -> LseScores:
    """Offset, LSE-D, LSE-C and framewise confidence from a distance matrix, computed in
    float32 as the reference does (mean over every row, padded shifts included)."""
    if distances.dim() != 2 or distances.shape[1] != 2 * vshift + 1 or distances.shape[0] < 1:
        raise ValueError(f"expected (N >= 1, {2 * vshift + 1}) distances, "
                         f"got {tuple(distances.shape)}")
    mean = distances.mean(dim=0)
    min_index = int(torch.argmin(mean))  # the first of equal minima, like torch.min
    minval = mean[min_index]
    median = torch.median(mean)  # 2 vshift + 1 values: the middle one
    framewise = (median - distances[:, min_index]).numpy()
    return LseScores(
        offset=vshift - min_index,
        min_index=min_index,
        lse_d=float(minval),
        lse_c=float(median - minval),
        median=float(median),
        vshift=vshift,
        distances=distances.numpy(),
        mean_distances=mean.numpy(),
        framewise_confidence=zero_padded_median(framewise, FRAMEWISE_FILTER),
    )


def _embed_in_batches(
    encode: Callable[[np.ndarray], torch.Tensor], n_windows: int, batch_size: int
) -> torch.Tensor:
    """``encode(starts)`` over windows ``0 .. n_windows - 1`` in batches of ``batch_size``,
    in true float32 (the metric is the reference's), gathered on the CPU."""
    out = []
    with torch.inference_mode(), full_float32():
        for start in range(0, n_windows, batch_size):
            starts = np.arange(start, min(start + batch_size, n_windows))
            out.append(encode(starts).float().cpu())
    return torch.cat(out)


def embed_video(
    model: nn.Module,
    crops: np.ndarray,
    n_windows: int,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Lip embeddings ``(n_windows, 1024)`` of 224x224 BGR ``crops`` ``(N, 224, 224, 3)``
    uint8; window ``v`` is frames ``v .. v+4``. Batches of ``batch_size`` windows."""
    return _embed_in_batches(
        lambda starts: model.encode_video(
            SYNCNET.video_windows(crops, starts, FRAMES_PER_WINDOW).to(device)),
        n_windows, batch_size)


def embed_audio(
    model: nn.Module,
    cct: torch.Tensor,
    n_windows: int,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Audio embeddings ``(n_windows, 1024)`` of an MFCC matrix ``cct`` ``(13, M)``;
    window ``v`` is columns ``4 v .. 4 v + 19``."""
    return _embed_in_batches(
        lambda starts: model.encode_audio(
            SYNCNET.audio_windows(cct, starts, FRAMES_PER_WINDOW).to(device)),
        n_windows, batch_size)


def embed_clip(
    model: nn.Module,
    crops: np.ndarray,
    cct: torch.Tensor,
    n_windows: int,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings of a clip (:func:`embed_video`, :func:`embed_audio`)."""
    return (embed_video(model, crops, n_windows, batch_size, device),
            embed_audio(model, cct, n_windows, batch_size, device))


def evaluate_crops(
    model: nn.Module,
    crops: np.ndarray,
    audio: np.ndarray,
    vshift: int = VSHIFT,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device = "cpu",
) -> LseScores:
    """The reference ``evaluate()`` on in-memory inputs: ``crops`` ``(N, 224, 224, 3)``
    uint8 BGR face crops at 25 fps, ``audio`` 16 kHz mono **int16-scale** samples."""
    _require_syncnet(model)
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (REFERENCE_CROP_SIZE, REFERENCE_CROP_SIZE, 3) \
            or crops.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops (N, 224, 224, 3), got {crops.dtype} "
                         f"{crops.shape}")
    n_windows = count_windows(len(crops), len(audio))
    if n_windows < 1:
        raise ClipTooShortError(
            f"{len(crops)} frames and {len(audio) / SAMPLE_RATE:.2f} s of audio are too short "
            f"for SyncNet, which needs at least {FRAMES_PER_WINDOW + 1} frames of both")
    video_emb, audio_emb = embed_clip(model, crops, mfcc_matrix(audio), n_windows,
                                      batch_size, device)
    return lse_from_distances(distance_matrix(video_emb, audio_emb, vshift), vshift)


def _require_syncnet(model: nn.Module) -> None:
    if getattr(model, "inputs", None) != SYNCNET_INPUTS:
        raise UsageError(
            f"LSE needs the original SyncNet (syncnet-v2), not a {getattr(model, 'family', '?')} "
            "model; pass -c syncnet-v2 or a syncnet_v2.model file")


# --------------------------------------------------------------------------- video pipeline


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
class FaceSegment:
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
class SegmentScores:
    first_frame: int
    last_frame: int
    scores: LseScores

    def to_json(self) -> dict:
        return {"first_frame": self.first_frame, "last_frame": self.last_frame,
                **self.scores.to_json()}


@dataclass
class LseVideo:
    """LSE of one video: every scored face segment, and the longest one's numbers."""

    input: str
    n_frames: int
    tracker: str
    segments: list[SegmentScores] = field(default_factory=list)

    @property
    def main(self) -> SegmentScores:
        return _longest(self.segments)

    @property
    def face_coverage(self) -> float:
        covered = sum(s.last_frame - s.first_frame + 1 for s in self.segments)
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
            "segments": [s.to_json() for s in self.segments],
        }


def _corners(boxes_xywh: np.ndarray) -> np.ndarray:
    x, y, w, h = (boxes_xywh[:, k] for k in range(4))
    return np.stack([x, y, x + w, y + h], axis=1)


def segments_ours(
    chunks: Iterable[np.ndarray], detector: faces.FaceDetector
) -> tuple[list[FaceSegment], int]:
    """Our face pipeline (:class:`~lipsync_fix.faces.FaceCropper`): the main face's tracks
    as segments, and the number of frames seen."""
    cropper = faces.FaceCropper(detector, fps=VIDEO_FPS)
    for chunk in chunks:
        cropper.feed(chunk)
    tracks = cropper.close()
    chosen = faces.select_main_tracks(tracks, cropper.n_frames)
    return [FaceSegment(t.first, _corners(t.boxes)) for t in chosen], cropper.n_frames


def segments_reference(
    chunks: Iterable[np.ndarray],
    detector: faces.FaceDetector,
    min_track: int = MIN_TRACK,
    min_face_size: float = MIN_FACE_SIZE,
) -> tuple[list[FaceSegment], int]:
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
                 min_face_size: float) -> list[FaceSegment]:
    segments = []
    for start, stop in zip(starts, [*starts[1:], len(detections)], strict=True):
        if stop - start < min_track:
            continue
        for track in track_shot(detections[start:stop], NUM_FAILED_DET, min_track,
                                min_face_size):
            segments.append(FaceSegment(int(track.frames[0]), track.boxes))
    return sorted(segments, key=lambda s: s.first)


def crop_segments(
    chunks: Iterable[np.ndarray], segments: Sequence[FaceSegment]
) -> list[np.ndarray]:
    """The reference's 224x224 crops of every segment, from one pass over the frames."""
    geometry = [crop_geometry(s.boxes) for s in segments]
    crops = [np.empty((len(s), REFERENCE_CROP_SIZE, REFERENCE_CROP_SIZE, 3), np.uint8)
             for s in segments]
    index = 0
    for chunk in chunks:
        for frame in chunk:
            for segment, geo, out in zip(segments, geometry, crops, strict=True):
                if segment.first <= index <= segment.last:
                    k = index - segment.first
                    out[k] = crop_frame(frame, int(geo.bsi[k]), geo.rect[k])
            index += 1
    if segments and max(s.last for s in segments) >= index:
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


def score_segments(
    model: nn.Module,
    crops: Sequence[np.ndarray],
    segments: Sequence[FaceSegment],
    audio: np.ndarray,
    options: LseOptions,
) -> list[SegmentScores]:
    """LSE of every segment long enough for one window (audio cut to its frames)."""
    results = []
    for segment, clip in zip(segments, crops, strict=True):
        sound = audio[segment.first * SAMPLES_PER_FRAME:(segment.last + 1) * SAMPLES_PER_FRAME]
        if count_windows(len(clip), len(sound)) < 1:
            continue
        scores = evaluate_crops(model, clip, sound, options.vshift, options.batch_size,
                                options.device)
        results.append(SegmentScores(segment.first, segment.last, scores))
    return results


def lse_video(
    path: str | Path,
    model: nn.Module,
    options: LseOptions | None = None,
    progress: Progress | None = None,
) -> LseVideo:
    """LSE-D, LSE-C and the offset of a video (see the module docstring for the pipeline
    and what differs from the reference's)."""
    _require_syncnet(model)
    opts = options or LseOptions()
    path = Path(path)
    info = media.probe(path)
    media.require_video_and_audio(info)
    detector = faces.make_detector(opts.detector, opts.face_box)
    expected = max(1, round((info.duration_s or 0) * VIDEO_FPS))
    frames = FramePasses(path, opts.frame_memory_bytes,
                         (lambda n: progress("faces", n, max(expected, n))) if progress else None)
    if opts.tracker_name == "reference":
        segments, n_frames = segments_reference(frames.first(), detector, opts.min_track,
                                                opts.min_face_size)
    else:
        segments, n_frames = segments_ours(frames.first(), detector)
    segments = [s for s in segments if len(s) >= MIN_SEGMENT_FRAMES]
    if not segments:
        raise NoFaceError(f"{path}: no face track of {MIN_SEGMENT_FRAMES} frames or more was "
                          f"found in {n_frames} frames")
    crops = crop_segments(frames.again(), segments)
    del frames
    if progress:
        progress("lse", 0, len(segments))
    audio = int16_scale(media.decode_audio(path, SAMPLE_RATE))
    scored = score_segments(model, crops, segments, audio, opts)
    if not scored:
        raise ClipTooShortError(
            f"{path}: no face segment has the {FRAMES_PER_WINDOW + 1} frames and the audio "
            "SyncNet needs")
    return LseVideo(str(path), n_frames, opts.tracker_name, scored)


LSE_RECORD = record_schema("lse", [
    Field("lse_d", "float"), Field("lse_c", "float"), Field("syncnet_offset", "int"),
    Field("audio_delay_ms", "float"), Field("offset_frames", "int"), Field("windows", "int"),
    Field("vshift", "int"), Field("first_frame", "int"), Field("last_frame", "int"),
    Field("frames", "int"), Field("face_coverage", "float"), Field("tracker", "str"),
    Field("model", "dict", nullable=True), Field("segments", "list", in_csv=False),
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


# --------------------------------------------------------------------------- benchmark

JPEG_QUALITY = 95
"""Quality of the frame-by-frame pipeline's JPEGs (close to ffmpeg's ``-qscale:v 2``)."""

BENCH_MIN_TRACK = 10
"""The frame-by-frame pipeline's ``min_track`` in the benchmark: the reference's 100 would
reject every generated clip shorter than 4 s."""


def lse_video_frame_by_frame(
    path: str | Path,
    model: nn.Module,
    detector: faces.FaceDetector,
    scratch: Path,
    options: LseOptions,
) -> tuple[LseVideo, list[FaceSegment]]:
    """The same measurement done the way the reference pipeline does it, step by step
    through files, as the baseline of ``bench lse``.

    Every frame is written to a JPEG and read back, faces are detected on every frame
    (full-frame scans only), shots are tracked with the reference's ``track_shot``, each
    crop re-reads its frame's JPEG, the crops are written to JPEGs and read back (the
    reference's ``evaluate()`` dumps its cropped video that way), the audio goes through an
    int16 WAV file. Only the XVID encoding of the crops is left out. Returns the result and
    the face segments it found.
    """
    path = Path(path)
    frames_dir, crops_dir = scratch / "frames", scratch / "crops"
    frames_dir.mkdir(parents=True)
    crops_dir.mkdir()
    names: list[Path] = []
    quality = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    for chunk in media.iter_video_frames(path, fps=VIDEO_FPS):
        for frame in chunk:
            names.append(frames_dir / f"{len(names) + 1:06d}.jpg")
            cv2.imwrite(str(names[-1]), frame, quality)
    wav = scratch / "audio.wav"
    sf.write(wav, int16_scale(media.decode_audio(path, SAMPLE_RATE)).astype(np.int16),
             SAMPLE_RATE, subtype="PCM_16")
    audio = sf.read(wav, dtype="int16")[0].astype(np.float64)

    def read_frames() -> Iterator[np.ndarray]:
        for name in names:
            yield cv2.imread(str(name))[None]

    segments, n_frames = segments_reference(read_frames(), detector, options.min_track,
                                            options.min_face_size)
    round_trip = []
    for k, clip in enumerate(crop_segments(read_frames(), segments)):
        folder = crops_dir / f"{k:03d}"
        folder.mkdir()
        files = [folder / f"{i + 1:06d}.jpg" for i in range(len(clip))]
        for file, crop in zip(files, clip, strict=True):
            cv2.imwrite(str(file), crop, quality)
        round_trip.append(np.stack([cv2.imread(str(file)) for file in files]))
    scored = score_segments(model, round_trip, segments, audio, options)
    if not scored:
        raise NoFaceError(f"{path}: the frame-by-frame pipeline found no face track to score")
    return LseVideo(str(path), n_frames, "reference", scored), segments


@dataclass
class LseBenchmark:
    """``bench lse``: our pipeline against the frame-by-frame one on the same clips."""

    device: str
    clips: int
    seconds_per_clip: float
    frames: int
    ours_s: float
    frame_by_frame_s: float
    speedup: float
    lse_d_max_diff: float
    lse_c_max_diff: float
    offsets_equal: bool
    jpeg_lse_d_max_diff: float
    jpeg_lse_c_max_diff: float
    per_clip: list[dict]

    def to_json(self) -> dict:
        return asdict(self)


def benchmark_model() -> nn.Module:
    """A SyncNetV2 with the golden rule's weights (the benchmark needs no download)."""
    model = SyncNetV2()
    model.load_state_dict(rule_weights(model))
    return model.eval()


def run_lse_benchmark(
    clips: int = 2,
    seconds: float = 2.0,
    size: int = 256,
    detector: str = "auto",
    device: str = "cpu",
    seed: int = 0,
    model: nn.Module | None = None,
) -> LseBenchmark:
    """Time :func:`lse_video` and :func:`lse_video_frame_by_frame` on generated clips,
    alternating clip by clip in one process with one model.

    The numbers of the two are compared (offsets, LSE-D, LSE-C of each clip's main
    segment); so that the codec's share of the difference is known, the frame-by-frame
    pipeline's own face segments are also scored without any JPEG (untimed).
    """
    dev = resolve_device(device)
    model = (model or benchmark_model()).to(dev).eval()
    opts = LseOptions(detector=detector, device=str(dev))
    fbf_opts = LseOptions(detector=detector, device=str(dev), min_track=BENCH_MIN_TRACK)
    ours_s = fbf_s = 0.0
    frames = 0
    per_clip = []
    with tempfile.TemporaryDirectory(prefix="lse-bench-") as tmp:
        root = Path(tmp)
        paths = []
        for index in range(clips):
            clip = make_talking_head(seed + index, duration_s=seconds, size=(size, size))
            paths.append(root / f"clip{index}.mp4")
            media.write_video(paths[-1], clip.frames, clip.fps, clip.audio, clip.sample_rate)
        warm = np.zeros((FRAMES_PER_WINDOW + 1, REFERENCE_CROP_SIZE, REFERENCE_CROP_SIZE, 3),
                        np.uint8)
        evaluate_crops(model, warm, np.zeros(8 * SAMPLES_PER_FRAME), 1, device=dev)
        for index, path in enumerate(paths):
            start = time.perf_counter()
            try:
                ours = lse_video(path, model, opts)
                _sync(dev)
                ours_s += time.perf_counter() - start
                start = time.perf_counter()
                fbf, segments = lse_video_frame_by_frame(
                    path, model, faces.make_detector(detector), root / f"work{index}",
                    fbf_opts)
            except (NoFaceError, ClipTooShortError) as exc:
                # The clip is a temporary file, gone when this is read: say what it was.
                raise LipsyncError(
                    f"generated clip {index + 1} ({seconds:g} s, {size}x{size} px) cannot be "
                    f"scored: {str(exc).split(': ', 1)[-1]} (the reference tracker keeps faces "
                    f"of {fbf_opts.min_face_size:g} px or more, in tracks of more than "
                    f"{fbf_opts.min_track} frames); use a larger --size or --seconds"
                ) from None
            _sync(dev)
            fbf_s += time.perf_counter() - start
            audio = int16_scale(media.decode_audio(path, SAMPLE_RATE))
            crops = crop_segments(media.iter_video_frames(path, fps=VIDEO_FPS), segments)
            lossless = score_segments(model, crops, segments, audio, fbf_opts)
            frames += ours.n_frames
            main = {"ours": ours.main.scores, "frame_by_frame": fbf.main.scores,
                    "frame_by_frame_no_jpeg": _longest(lossless).scores}
            per_clip.append({"clip": path.name, "frames": ours.n_frames,
                             **{k: v.to_json() for k, v in main.items()}})
    return LseBenchmark(
        device=_device_name(dev),
        clips=clips,
        seconds_per_clip=seconds,
        frames=frames,
        ours_s=round(ours_s, 3),
        frame_by_frame_s=round(fbf_s, 3),
        speedup=round(fbf_s / ours_s, 3) if ours_s > 0 else math.inf,
        lse_d_max_diff=_max_diff(per_clip, "ours", "frame_by_frame", "lse_d"),
        lse_c_max_diff=_max_diff(per_clip, "ours", "frame_by_frame", "lse_c"),
        offsets_equal=all(c["ours"]["syncnet_offset"] == c["frame_by_frame"]["syncnet_offset"]
                          for c in per_clip),
        jpeg_lse_d_max_diff=_max_diff(per_clip, "frame_by_frame", "frame_by_frame_no_jpeg",
                                      "lse_d"),
        jpeg_lse_c_max_diff=_max_diff(per_clip, "frame_by_frame", "frame_by_frame_no_jpeg",
                                      "lse_c"),
        per_clip=per_clip,
    )


def _longest(segments: Sequence[SegmentScores]) -> SegmentScores:
    return max(segments, key=lambda s: (s.last_frame - s.first_frame, -s.first_frame))


def _max_diff(per_clip: list[dict], a: str, b: str, key: str) -> float:
    return round(max(abs(c[a][key] - c[b][key]) for c in per_clip), 4)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
