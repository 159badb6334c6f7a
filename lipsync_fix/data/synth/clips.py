"""Synthetic talking heads whose audio/video offset is known exactly.

Real talking-face clips never come with a ground-truth offset, so the demo, the tests and the
training of the small bundled sync model all use clips made here instead. A clip is built from
one random syllable timeline that drives both streams:

* the voice is a formant synthesiser (glottal pulse train through vowel resonators, noise
  bursts and frication for consonants, pauses between phrases), so its short-time spectrum
  tells which vowel or consonant is being produced at each instant;
* the mouth follows the same timeline (bilabials close the lips, open vowels open them wide,
  rounded vowels narrow them), so lip motion is predictable from the audio, as in real speech;
* the face is the astronaut photograph of :func:`skimage.data.astronaut` with its mouth
  replaced by a drawn one, placed, moved, lit and coloured differently for every seed so that a
  model trained on these clips does not learn one fixed picture.

Everything is seeded, offline and fast (about a second for ten seconds of video on two cores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import signal

from lipsync_fix.data.layout import write_clip
from lipsync_fix.data.synth.face import articulation_tracks, render_frames
from lipsync_fix.data.synth.speech import Syllable, delay_audio, speech_timeline, synthesize_voice
from lipsync_fix.faces import crop_face
from lipsync_fix.features.constants import CROP_SIZE, SAMPLE_RATE

CropFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``crop_fn(frame_bgr, box) -> crop``: a replacement for :func:`crop_face`."""

# ---------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------


@dataclass
class TalkingHead:
    """A synthetic clip with known sync.

    ``frames`` are RGB uint8 ``(N, H, W, 3)`` at ``fps``; ``audio`` is float32 mono at
    ``sample_rate`` covering exactly the same time span. ``face_boxes`` are (x, y, w, h) per
    frame. ``mouth_open``/``mouth_width``/``mouth_round`` are the articulation shown in each
    frame. ``audio_delay_ms`` > 0 means the sound lags the lips by that much; ``syllables`` is
    the timeline both streams were made from, in video time (undelayed).
    """

    frames: np.ndarray
    audio: np.ndarray
    fps: float
    sample_rate: int
    face_boxes: np.ndarray
    mouth_open: np.ndarray
    mouth_width: np.ndarray
    mouth_round: np.ndarray
    audio_delay_ms: float
    lip_lead_ms: float
    syllables: tuple[Syllable, ...]
    drift_ms_per_min: float = 0.0
    scene_starts_s: tuple[float, ...] = (0.0,)
    scene_delays_ms: tuple[float, ...] = ()

    @property
    def duration_s(self) -> float:
        """Length of the clip in seconds."""
        return len(self.frames) / self.fps

    def true_delay_ms(self, time_s: float | np.ndarray) -> np.ndarray | float:
        """The audio delay built into the clip at video time ``time_s``: the scene's own
        delay for a multi-scene clip, ``audio_delay_ms`` plus the drift so far otherwise."""
        t = np.asarray(time_s, dtype=np.float64)
        if self.scene_delays_ms:
            scene = np.searchsorted(np.asarray(self.scene_starts_s), t, side="right") - 1
            out = np.asarray(self.scene_delays_ms)[np.clip(scene, 0, None)]
        else:
            out = self.audio_delay_ms + self.drift_ms_per_min * t / 60.0
        return float(out) if out.ndim == 0 else out


def make_talking_head(
    seed: int,
    duration_s: float = 6.0,
    fps: float = 25.0,
    sample_rate: int = SAMPLE_RATE,
    audio_delay_ms: float = 0.0,
    size: tuple[int, int] = (256, 256),
    lip_lead_ms: float = 0.0,
    background: str | None = None,
    flip: bool | None = None,
    head_motion: float = 1.0,
    audio_clock_ppm: float = 0.0,
) -> TalkingHead:
    """Make a talking-head clip whose audio is offset from the lips by ``audio_delay_ms``.

    The clip has ``round(duration_s * fps)`` frames and exactly as many audio samples as those
    frames last. Voice, mouth and face are drawn from independent streams of ``seed``, so the
    same seed gives the same clip whatever the delay, and changing render options (size,
    background, flip) does not change the speech. See :func:`render_frames` for the options.

    A positive ``audio_delay_ms`` makes the sound come later than the lips (silence is padded
    at the start of the audio and its end trimmed); a negative one makes it come earlier.
    ``lip_lead_ms`` moves the lips ahead of the sound they make, as real speakers do, which is
    part of the clip's natural sync rather than an error to be fixed.

    ``audio_clock_ppm`` makes the audio drift: it is recorded by a clock that runs that many
    parts per million fast (slow when negative), as on a separate recorder, so the sound of
    video time ``t`` is heard at ``audio_delay_ms + t * (1 + ppm / 1e6)``; the delay grows by
    ``0.06 * ppm`` ms per minute (1000 ppm: 60 ms/min, about 23.976 vs 24 fps). The voice
    is rendered at the fast clock's rate and played at the nominal one, so its pitch moves
    by the same ratio, as a real clock error does.
    """
    n_frames = round(duration_s * fps)
    if n_frames < 1:
        raise ValueError(f"duration_s must cover at least one frame, got {duration_s}.")
    if not abs(audio_clock_ppm) < 1e5:
        raise ValueError(f"audio_clock_ppm must be within +-100000, got {audio_clock_ppm}.")
    n_samples = round(n_frames * sample_rate / fps)
    timeline_rng, voice_rng, face_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    syllables = speech_timeline(timeline_rng, n_frames / fps)
    # A clock running fast takes more samples per second of speech than the file claims.
    render_rate = sample_rate * (1.0 + audio_clock_ppm * 1e-6) if audio_clock_ppm else sample_rate
    audio = synthesize_voice(voice_rng, syllables, n_samples, render_rate)
    tracks = articulation_tracks(syllables, n_frames, fps, lip_lead_ms)
    frames, boxes = render_frames(face_rng, tracks, fps, size, background, flip, head_motion)
    return TalkingHead(
        frames=frames,
        audio=delay_audio(audio, audio_delay_ms, sample_rate),
        fps=fps,
        sample_rate=sample_rate,
        face_boxes=boxes,
        mouth_open=tracks[:, 0].copy(),
        mouth_width=tracks[:, 1].copy(),
        mouth_round=tracks[:, 2].copy(),
        audio_delay_ms=audio_delay_ms,
        lip_lead_ms=lip_lead_ms,
        syllables=syllables,
        drift_ms_per_min=0.06 * audio_clock_ppm,
    )


def clip_crops(clip: TalkingHead, crop_fn: CropFn | None = None) -> np.ndarray:
    """96x96 BGR face crops of every frame, cut on the clip's known face boxes with the
    authors' recipe (:func:`~lipsync_fix.faces.crop_face`), or with ``crop_fn(frame_bgr,
    box)``; crops of another size are resized to 96x96."""
    crop = crop_fn or crop_face
    faces = []
    for frame, box in zip(clip.frames, clip.face_boxes, strict=True):
        face = crop(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), box)
        if face.shape[:2] != (CROP_SIZE, CROP_SIZE):
            face = cv2.resize(face, (CROP_SIZE, CROP_SIZE))
        faces.append(face)
    return np.stack(faces)


def audio_at_16k(clip: TalkingHead) -> np.ndarray:
    """The clip's audio at the analysis rate (resampled when the clip has another)."""
    if clip.sample_rate == SAMPLE_RATE:
        return clip.audio
    divisor = np.gcd(clip.sample_rate, SAMPLE_RATE)
    return signal.resample_poly(
        clip.audio, SAMPLE_RATE // divisor, clip.sample_rate // divisor
    ).astype(np.float32)


def write_clip_folder(
    clip: TalkingHead, out_dir: str | Path, crop_fn: CropFn | None = None
) -> Path:
    """Write ``clip`` in the authors' dataset layout (:func:`~lipsync_fix.data.layout.
    write_clip`): crops on its known face boxes (:func:`clip_crops`) and 16 kHz audio."""
    return write_clip(Path(out_dir), clip_crops(clip, crop_fn), audio_at_16k(clip))
