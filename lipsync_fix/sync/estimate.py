"""Estimate a video's audio delay: the main job's measurement, as a library function.

The data flows one way: media (decode at 25 fps and 16 kHz) -> faces (track the speaker,
crop 96x96) -> features (lower halves, mel) -> scores (every window against every
shift) -> offset (aggregate, confidence) -> remux (shift the audio, copy the video).

Sign convention, everywhere in the output: ``audio_delay_ms > 0`` means the sound comes
after the lips; the fix moves the audio earlier by that much. ``offset_frames`` is the
same quantity in 25 fps frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lipsync_fix.errors import ClipTooShortError, NoFaceError, NoSpeechError, UsageError
from lipsync_fix.features.constants import FRAME_MS, FRAMES_PER_WINDOW, SAMPLES_PER_FRAME, VIDEO_FPS
from lipsync_fix.features.mel import log_mel_spectrogram
from lipsync_fix.sync.frontend import Progress, extract_features, usable_windows
from lipsync_fix.sync.offsets import context_average
from lipsync_fix.sync.scoring import OUT_OF_RANGE, ScoreOptions, score_matrix, window_frames

MAX_CONTEXT_FRAMES = 250
"""10 s: a longer averaging context would blur offsets that change within a clip."""

MAX_OFFSET_LIMIT_MS = 5000.0
"""The widest search range allowed: every extra frame of range costs a column of scores."""


@dataclass
class SyncOptions:
    """Knobs of the estimate; defaults are what the CLI uses. Values are checked here, so
    the library and the command line refuse the same things with the same words."""

    context_frames: int = 25  # K: frames per segment vote (1 s, the paper's best context)
    max_offset_ms: float = 600.0  # search range: +-15 frames by default
    detector: str = "auto"
    face_box: str | None = None
    device: str = "cpu"
    min_voice_rms: float = 0.005  # a window quieter than this holds no voice
    uncertain_below: float = 0.5  # confidence under which the verdict is "uncertain"
    in_sync_ms: float = FRAME_MS  # |delay| up to one frame counts as in sync

    def __post_init__(self) -> None:
        if not (FRAMES_PER_WINDOW <= int(self.context_frames) <= MAX_CONTEXT_FRAMES):
            raise UsageError(
                f"the context window must be {FRAMES_PER_WINDOW} to {MAX_CONTEXT_FRAMES} "
                f"frames (25 = 1 s), got {self.context_frames}")
        if not (math.isfinite(self.max_offset_ms)
                and FRAME_MS <= self.max_offset_ms <= MAX_OFFSET_LIMIT_MS):
            raise UsageError(
                f"the largest offset searched must be {FRAME_MS:.0f} to "
                f"{MAX_OFFSET_LIMIT_MS:.0f} ms, got {self.max_offset_ms}")
        if not (math.isfinite(self.min_voice_rms) and self.min_voice_rms >= 0):
            raise UsageError(f"min_voice_rms must be a number >= 0, got {self.min_voice_rms}")
        if not (0.0 <= self.uncertain_below <= 1.0):
            raise UsageError(f"uncertain_below must be 0 to 1, got {self.uncertain_below}")

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

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> SyncEstimate:
        """The estimate a JSON record holds (extra keys such as ``output`` are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})

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




def aggregate(
    scores: np.ndarray,
    used: np.ndarray,
    context_frames: int,
    window_frames: int = FRAMES_PER_WINDOW,
) -> dict:
    """Clip-level estimate from a score matrix (strict edge rule) and the usable rows.

    ``window_frames`` is T, the frames per row (the model's own window).

    * The clip's score curve is the mean score of each shift over the usable rows that
      have that shift in range; its peak, refined to a fraction of a frame by a parabola
      through the peak and its neighbours, is the estimate.
    * Confidence is the share of non-overlapping ``context_frames``-frame segments whose own
      context-averaged best shift lies within one frame of the clip's estimate: how
      consistently the clip points at one offset. A clip with one segment gets at most
      0.5, because one vote cannot be cross-checked.
    """
    s = (scores.shape[1] - 1) // 2
    valid = (scores != OUT_OF_RANGE) & used[:, None]
    counts = valid.sum(axis=0)
    sums = np.where(valid, scores, 0.0).sum(axis=0, dtype=np.float64)
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
    averaged = context_average(np.where(valid, scores, OUT_OF_RANGE)[rows], context_frames,
                               window_frames)
    seg_len = max(1, context_frames - window_frames + 1)
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
    features = extract_features(path, opts.detector, opts.face_box, progress)
    n_frames = features.frames.shape[0]
    k = opts.context_frames
    if n_frames < k or len(features.wav) < k * SAMPLES_PER_FRAME:
        raise ClipTooShortError(
            f"{path}: {n_frames / VIDEO_FPS:.2f} s is shorter than one "
            f"{k}-frame context window ({k / VIDEO_FPS:.2f} s)"
        )
    score_opts = ScoreOptions(max_shift=opts.max_shift, edge_rule="strict", device=opts.device)
    with torch.inference_mode():
        scores = score_matrix(
            model, features.frames, log_mel_spectrogram(features.wav), len(features.wav),
            score_opts,
            progress=(lambda d, t: progress("scores", d, t)) if progress else None,
        )
    length = window_frames(model, score_opts)
    has_face, voiced = usable_windows(features, scores.shape[0], opts.min_voice_rms, length)
    if not voiced.any():
        raise NoSpeechError(f"{path}: the audio is silent; there is no voice to align")
    used = has_face & voiced
    if not used.any():
        raise NoFaceError(f"{path}: no stretch of the clip has both a face and a voice")
    result = aggregate(scores, used, max(k, length), length)
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
