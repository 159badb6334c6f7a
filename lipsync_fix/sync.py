"""Estimate a video's audio delay, and fix it: the main job, as library functions.

The data flows one way: media (decode at 25 fps and 16 kHz) -> faces (track the speaker,
crop 96x96) -> features (lower halves, mel) -> scores (every window against every
shift) -> offset (aggregate, confidence) -> remux (shift the audio, copy the video).

Sign convention, everywhere in the output: ``audio_delay_ms > 0`` means the sound comes
after the lips; the fix moves the audio earlier by that much. ``offset_frames`` is the
same quantity in 25 fps frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lipsync_fix import faces, media
from lipsync_fix.audio import (
    SAMPLES_PER_FRAME,
    VIDEO_FPS,
    log_mel_spectrogram,
)
from lipsync_fix.errors import ClipTooShortError, NoFaceError, NoSpeechError
from lipsync_fix.model import FRAMES_PER_WINDOW
from lipsync_fix.offsets import context_average
from lipsync_fix.scoring import OUT_OF_RANGE, ScoreOptions, score_matrix, window_length
from lipsync_fix.visual import lower_half

FRAME_MS = 1000.0 / VIDEO_FPS
Progress = Callable[[str, int, int], None]


@dataclass
class SyncOptions:
    """Knobs of the estimate; defaults are what the CLI uses."""

    window: int = 25  # context K in frames for segment votes (1 s, the paper's best)
    max_offset_ms: float = 600.0  # search range: +-15 frames by default
    detector: str = "auto"
    face_box: str | None = None
    device: str = "cpu"
    min_voice_rms: float = 0.005  # a window quieter than this holds no voice
    uncertain_below: float = 0.5  # confidence under which the verdict is "uncertain"
    in_sync_ms: float = FRAME_MS  # |delay| up to one frame counts as in sync

    @property
    def max_shift(self) -> int:
        return max(1, math.ceil(self.max_offset_ms / FRAME_MS - 1e-9))


@dataclass
class SyncEstimate:
    """The output contract of ``score``/``fix`` (``--json``: one object per input)."""

    input: str
    fps: float
    duration_s: float
    audio_delay_ms: float
    offset_frames: float
    confidence: float
    verdict: str
    face_coverage: float
    windows_used: int
    faces_seen: int
    scores: list[dict] = field(default_factory=list)
    offsets_over_time: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One human sentence saying the same as the JSON."""
        delay = abs(self.audio_delay_ms)
        if self.verdict == "uncertain":
            what = f"uncertain (best guess: audio {_late_or_early(self.audio_delay_ms, delay)})"
        elif self.verdict == "in_sync":
            what = f"in sync (audio {_late_or_early(self.audio_delay_ms, delay)})"
        else:
            what = f"audio is {_late_or_early(self.audio_delay_ms, delay)}"
        return (f"{self.input}: {what}, confidence {self.confidence:.2f}, "
                f"{self.windows_used} windows, face in {100 * self.face_coverage:.0f}% of frames")


def _late_or_early(delay_ms: float, magnitude: float) -> str:
    if magnitude < 0.5:
        return "0 ms off"
    return f"{magnitude:.0f} ms {'late' if delay_ms > 0 else 'early'}"


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
    path: str | Path, options: SyncOptions, progress: Progress | None = None
) -> ClipFeatures:
    """Decode the video at 25 fps, track the speaker's face, and decode 16 kHz audio.

    Frames are streamed in chunks; only the lower-half crops are kept (14 KB a frame).
    """
    info = media.probe(path)
    media.require_video_and_audio(info)
    detector = faces.make_detector(options.detector, options.face_box)
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


def aggregate(
    dists: np.ndarray, used: np.ndarray, window: int, length: int = FRAMES_PER_WINDOW
) -> dict:
    """Clip-level estimate from a score matrix (strict edge rule) and the usable rows.

    ``length`` is the frames per row (the model's own window).

    * The clip's score curve is the mean score of each shift over the usable rows that
      have that shift in range; its peak, refined to a fraction of a frame by a parabola
      through the peak and its neighbours, is the estimate.
    * Confidence is the share of non-overlapping ``window``-frame segments whose own
      context-averaged best shift lies within one frame of the clip's estimate: how
      consistently the clip points at one offset. A clip with one segment gets at most
      0.5, because one vote cannot be cross-checked.
    """
    s = (dists.shape[1] - 1) // 2
    valid = (dists != OUT_OF_RANGE) & used[:, None]
    counts = valid.sum(axis=0)
    sums = np.where(valid, dists, 0.0).sum(axis=0, dtype=np.float64)
    curve = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    best = int(np.argmax(curve))
    refined = float(best)
    if 0 < best < len(curve) - 1 and np.isfinite(curve[best - 1 : best + 2]).all():
        left, mid, right = curve[best - 1 : best + 2]
        denom = left - 2 * mid + right
        if denom < 0:
            refined = best + float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))
    shift_frames = refined - s  # audio taken later by this much matches: the sound is late

    rows = np.nonzero(used)[0]
    averaged = context_average(np.where(valid, dists, OUT_OF_RANGE)[rows], window, length)
    seg_len = max(1, window - length + 1)
    votes = []
    for start in range(0, len(rows), seg_len):
        centre = min(start + seg_len // 2, len(rows) - 1)
        votes.append({"frame": int(rows[centre]),
                      "shift": int(np.argmax(averaged[centre])) - s})
    agree = sum(abs(v["shift"] - (best - s)) <= 1 for v in votes)
    confidence = agree / len(votes) if len(votes) > 1 else 0.5 * agree
    return {
        "shift_frames": shift_frames,
        "confidence": float(confidence),
        "curve": curve,
        "votes": votes,
    }


def estimate_sync(
    path: str | Path,
    model: nn.Module,
    options: SyncOptions | None = None,
    progress: Progress | None = None,
) -> SyncEstimate:
    """Measure how late (or early) the audio of ``path`` is relative to the lips."""
    opts = options or SyncOptions()
    features = extract_features(path, opts, progress)
    n_frames = features.frames.shape[0]
    if n_frames < opts.window or len(features.wav) < opts.window * SAMPLES_PER_FRAME:
        raise ClipTooShortError(
            f"{path}: {n_frames / VIDEO_FPS:.2f} s is shorter than one "
            f"{opts.window}-frame context window ({opts.window / VIDEO_FPS:.2f} s)"
        )
    score_opts = ScoreOptions(max_shift=opts.max_shift, edge_rule="strict", device=opts.device)
    with torch.inference_mode():
        dists = score_matrix(
            model, features.frames, log_mel_spectrogram(features.wav), len(features.wav),
            score_opts,
            progress=(lambda d, t: progress("scores", d, t)) if progress else None,
        )
    length = window_length(model, score_opts)
    has_face, voiced = usable_windows(features, dists.shape[0], opts.min_voice_rms, length)
    if not voiced.any():
        raise NoSpeechError(f"{path}: the audio is silent; there is no voice to align")
    used = has_face & voiced
    if not used.any():
        raise NoFaceError(f"{path}: no stretch of the clip has both a face and a voice")
    result = aggregate(dists, used, max(opts.window, length), length)
    delay_ms = result["shift_frames"] * FRAME_MS
    confidence = result["confidence"]
    if confidence < opts.uncertain_below:
        verdict = "uncertain"
    elif abs(delay_ms) <= opts.in_sync_ms:
        verdict = "in_sync"
    else:
        verdict = "out_of_sync"
    s = opts.max_shift
    return SyncEstimate(
        input=str(path),
        fps=round(float(features.fps), 3),
        duration_s=round(float(features.duration_s), 3),
        audio_delay_ms=round(float(delay_ms), 1),
        offset_frames=round(float(result["shift_frames"]), 2),
        confidence=round(confidence, 3),
        verdict=verdict,
        face_coverage=round(features.face_coverage, 3),
        windows_used=int(used.sum()),
        faces_seen=features.faces_seen,
        scores=[{"offset_ms": round((c - s) * FRAME_MS, 1), "score": round(float(v), 4)}
                for c, v in enumerate(result["curve"]) if np.isfinite(v)],
        offsets_over_time=[{"time_s": round(v["frame"] / VIDEO_FPS, 2),
                            "audio_delay_ms": v["shift"] * FRAME_MS} for v in result["votes"]],
    )


def fix_video(
    src: str | Path, dst: str | Path, estimate: SyncEstimate, force: bool = False
) -> media.ShiftReport:
    """Write ``dst`` with the audio moved earlier by the estimated delay."""
    return media.shift_audio(src, dst, -estimate.audio_delay_ms / 1000.0, force=force)
