"""Training and test mixtures for singing-voice separation, built on the fly from clips.

As in VocaLiST's separation experiment (after A Cappella), a mixture holds a target voice
(one clip's audio, whose mouth frames the model sees) plus accompaniment; half of the
mixtures (odd indices) also hold a second voice from another clip, the case where only
the face tells which voice to keep. Clips are folders in the authors' layout
(:mod:`lipsync_fix.data.layout`). Accompaniment comes from a folder of wavs when one is
given (e.g. Acappella's backing tracks) and is otherwise synthesised: chords of harmonic
tones over a kick-and-hi-hat pattern, so tests and CI need no music files.

Item ``i`` depends on ``(seed, i)`` alone, so a validation set is the same every epoch and
a run can be reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lipsync_fix.data.layout import frame_count, list_clips, read_crop, read_wav
from lipsync_fix.errors import LipsyncError
from lipsync_fix.features.mel import SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS
from lipsync_fix.features.visual import lower_half

_SEMITONE = 2.0 ** (1 / 12)


def synth_accompaniment(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``n`` samples of a backing track: a chord progression plus drums, unit RMS.

    Chords are three notes of a random key, each a few harmonics with 1/k amplitudes and
    a soft attack, changing every 0.5-1 s; drums are a pitch-falling kick on the beats and
    short high noise bursts between them. Stationary tones and broadband clicks are what
    real accompaniment adds around a voice, without needing any audio files.
    """
    t = np.arange(n) / sr
    out = np.zeros(n)
    pos = 0
    root = 110.0 * _SEMITONE ** rng.integers(0, 12)
    while pos < n:
        length = int(rng.uniform(0.5, 1.0) * sr)
        seg = slice(pos, min(pos + length, n))
        tt = t[seg] - t[pos]
        env = np.minimum(1.0, tt / 0.02) * np.exp(-tt * rng.uniform(0.3, 1.5))
        degree = rng.choice([0, 3, 5, 7, 8, 10])
        for step in (0, 4 if rng.random() < 0.5 else 3, 7):
            f0 = root * _SEMITONE ** (degree + step) * (2.0 if rng.random() < 0.3 else 1.0)
            for k in range(1, 6):
                if f0 * k < sr / 2:
                    out[seg] += env * np.sin(2 * np.pi * f0 * k * tt + rng.uniform(0, 6.3)) / k
        pos += length
    beat = 60.0 / rng.uniform(90, 140)
    kick_len, hat_len = int(0.15 * sr), int(0.04 * sr)
    kt = np.arange(kick_len) / sr
    kick = np.sin(2 * np.pi * (50 * kt + 60 * (1 - np.exp(-kt * 30)) / 30)) * np.exp(-kt * 25)
    hat_noise = np.diff(rng.standard_normal(hat_len + 1)) * np.exp(-np.arange(hat_len) / sr * 80)
    drums = np.zeros(n)
    start = rng.uniform(0, beat)
    while start < n / sr:
        a = int(start * sr)
        drums[a : a + kick_len] += 2.0 * kick[: n - a]
        h = int((start + beat / 2) * sr)
        if h < n:
            drums[h : h + hat_len] += 0.5 * hat_noise[: n - h]
        start += beat
    out = out / (np.sqrt(np.mean(out**2)) + 1e-8) + drums / (np.sqrt(np.mean(drums**2)) + 1e-8)
    return (out / (np.sqrt(np.mean(out**2)) + 1e-8)).astype(np.float32)


@dataclass(frozen=True)
class MixtureConfig:
    """How mixtures are made; levels are dB relative to the target voice."""

    seconds: float = 4.0  # the paper trains on ~4 s segments
    accompaniment_db: tuple[float, float] = (-3.0, 3.0)
    second_voice_db: tuple[float, float] = (-3.0, 3.0)
    target_rms: float = 0.08
    seed: int = 0

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * VIDEO_FPS))

    @property
    def samples(self) -> int:
        return self.frames * SAMPLES_PER_FRAME


class MixtureDataset(Dataset):
    """Items ``{"mixture", "target", "frames", "second_voice", "clip"}``: 16 kHz mono
    waveforms (n,), the target's lower-half frames (T, 3, 48, 96) in 0..1, whether a
    second voice is in the mix, and the target clip's folder.

    ``length`` is how many mixtures one pass holds (mixtures are drawn, not enumerated).
    Clips shorter than a segment are skipped; a split with fewer than two usable clips is
    refused, since the second voice must come from another clip.
    """

    def __init__(
        self, data_root: str | Path, split: str | None = "train", length: int = 1000,
        config: MixtureConfig | None = None, accompaniment_dir: str | Path | None = None,
        cache: bool = True,
    ):
        self.config = config or MixtureConfig()
        self.length = int(length)
        need = self.config.frames
        self.clips = [c for c in list_clips(data_root, split) if frame_count(c) >= need]
        if len(self.clips) < 2:
            raise LipsyncError(
                f"{data_root} ({split}) has {len(self.clips)} clips of at least "
                f"{self.config.seconds:g} s; mixtures need two")
        self.accompaniments: list[Path] = []
        if accompaniment_dir is not None:
            self.accompaniments = sorted(Path(accompaniment_dir).rglob("*.wav"))
            if not self.accompaniments:
                raise LipsyncError(f"no .wav accompaniment under {accompaniment_dir}")
        self.cache = cache
        self._audio: dict[int, np.ndarray] = {}
        self._frames: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.length

    def _wav(self, i: int) -> np.ndarray:
        if i in self._audio:
            return self._audio[i]
        wav = read_wav(self.clips[i] / "audio.wav")
        if self.cache:
            self._audio[i] = wav
        return wav

    def _clip_frames(self, i: int, start: int, count: int) -> torch.Tensor:
        if i in self._frames:
            return self._frames[i][start : start + count]
        folder = self.clips[i]
        if self.cache:
            crops = np.stack([read_crop(folder / f"{k}.jpg") for k in range(frame_count(folder))])
            self._frames[i] = _as_uint8(lower_half(crops))
            return self._frames[i][start : start + count]
        crops = np.stack([read_crop(folder / f"{k}.jpg") for k in range(start, start + count)])
        return _as_uint8(lower_half(crops))

    def _segment(self, rng: np.random.Generator, i: int) -> tuple[int, np.ndarray]:
        """A random frame-aligned segment of clip ``i``'s audio (zero-padded if short)."""
        cfg = self.config
        wav = self._wav(i)
        n_frames = min(frame_count(self.clips[i]), len(wav) // SAMPLES_PER_FRAME)
        start = int(rng.integers(0, max(1, n_frames - cfg.frames + 1)))
        seg = wav[start * SAMPLES_PER_FRAME :][: cfg.samples]
        return start, np.pad(seg, (0, cfg.samples - len(seg))).astype(np.float32)

    def _accompaniment(self, rng: np.random.Generator) -> np.ndarray:
        n = self.config.samples
        if not self.accompaniments:
            return synth_accompaniment(rng, n)
        wav = read_wav(self.accompaniments[int(rng.integers(len(self.accompaniments)))])
        if len(wav) < n:
            wav = np.tile(wav, -(-n // max(1, len(wav))))
        start = int(rng.integers(0, len(wav) - n + 1))
        return _unit_rms(wav[start : start + n])

    def __getitem__(self, index: int) -> dict:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, int(index)])
        target_clip = int(rng.integers(len(self.clips)))
        start, target = self._segment(rng, target_clip)
        target = _unit_rms(target) * cfg.target_rms
        acc = self._accompaniment(rng) * cfg.target_rms * _gain(rng, cfg.accompaniment_db)
        mixture = target + acc
        second = index % 2 == 1
        if second:
            other = int(rng.integers(len(self.clips) - 1))
            other += other >= target_clip
            _, voice = self._segment(rng, other)
            mixture = mixture + _unit_rms(voice) * cfg.target_rms * _gain(rng, cfg.second_voice_db)
        peak = float(np.abs(mixture).max())
        if peak > 0.99:  # keep the mixture a valid wav; scale the target with it
            mixture, target = mixture * (0.99 / peak), target * (0.99 / peak)
        frames = self._clip_frames(target_clip, start, cfg.frames).float() / 255.0
        return {
            "mixture": torch.from_numpy(mixture.astype(np.float32)),
            "target": torch.from_numpy(target.astype(np.float32)),
            "frames": frames,
            "second_voice": second,
            "clip": str(self.clips[target_clip]),
        }


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return (x / (np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-8)).astype(np.float32)


def _gain(rng: np.random.Generator, db_range: tuple[float, float]) -> float:
    return float(10 ** (rng.uniform(*db_range) / 20))


def collate(items: list[dict]) -> dict:
    """Stack tensors; keep the flags and clip names as lists."""
    return {
        "mixture": torch.stack([it["mixture"] for it in items]),
        "target": torch.stack([it["target"] for it in items]),
        "frames": torch.stack([it["frames"] for it in items]),
        "second_voice": [it["second_voice"] for it in items],
        "clip": [it["clip"] for it in items],
    }


def _as_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Lower halves in 0..1 back to uint8: a quarter of the memory for cached clips."""
    return frames.mul(255).round().to(torch.uint8)
