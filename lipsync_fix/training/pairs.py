"""Training pairs drawn the way the authors' trainer draws them, from clips on disk.

The sampling follows the authors' ``train_vocalist_lrs2.py`` (SPEC.md, "Training"): a
random clip with more than 25 frames, a random window start ``f``, a fair coin for in-sync
(its own audio) or out-of-sync (the audio of another start ``g`` of the same clip), and their
silence rule for negatives. Every sample is a pure function of ``(seed, rank, sample
index)``, so a run is reproducible whatever the number of loader workers, and resuming only
needs the step counter.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from lipsync_fix.data.layout import AUDIO_NAME, frame_count, list_clips, read_crop, read_wav
from lipsync_fix.errors import LipsyncError
from lipsync_fix.features.constants import FRAMES_PER_WINDOW, SAMPLE_RATE, SAMPLES_PER_FRAME
from lipsync_fix.features.mel import chunk_mel, chunk_rms, log_mel_spectrogram, mel_frames_for
from lipsync_fix.features.visual import lower_half

MIN_CLIP_FRAMES = 25
"""A clip is used only if it has *more* than this many frames (the reference's buffer)."""

SILENCE_RMS = 0.01
"""Positive audio at or below this RMS counts as silent: its negative must not be silent too."""

MAX_NEGATIVE_DRAWS = 11
"""Draws of ``g`` allowed against a silent positive before the sample is dropped. The reference
counts failures from 0 and gives up once its counter exceeds 10, which is 11 draws."""

_MAX_SAMPLE_ATTEMPTS = 10_000
"""Guard against an endless sampling loop. Positives are never dropped, so only a freak run
of coin flips could reach it; a data set of silent clips shows up as too many positives."""


def window_mel(
    wav: np.ndarray, start_frame: int, window_frames: int = FRAMES_PER_WINDOW
) -> Tensor:
    """Training-recipe mel of the ``window_frames``-frame audio window at video frame
    ``start_frame`` -> (1, 80, :func:`mel_frames_for` (window_frames)).

    For 5 frames this is exactly :func:`lipsync_fix.features.mel.chunk_mel`; longer windows use the
    same recipe on a longer chunk (the chunk is cut before the STFT, last frame dropped).
    """
    start = start_frame * SAMPLES_PER_FRAME
    if window_frames == FRAMES_PER_WINDOW:
        return chunk_mel(wav, start)
    n = window_frames * SAMPLES_PER_FRAME
    chunk = np.asarray(wav, dtype=np.float32)[start : start + n]
    if len(chunk) != n:
        raise ValueError(f"audio window at frame {start_frame} runs past the end of the audio")
    return log_mel_spectrogram(chunk)[:, : mel_frames_for(window_frames)].unsqueeze(0)


@dataclass(frozen=True)
class PairDraw:
    """Which pair one sample index stands for, before any pixels or audio are decoded.

    ``video_start`` is ``f``; ``audio_start`` is ``f`` for a positive (``label`` 1) and the
    other start ``g`` for a negative. ``dropped`` counts the samples thrown away by the
    silence rule before this one was accepted (the reference's ``continue``).
    """

    clip: int
    video_start: int
    audio_start: int
    label: int
    dropped: int


@dataclass(frozen=True)
class _ClipAudio:
    wav: np.ndarray
    rms: np.ndarray  # chunk RMS (reference quirk: all-zero -> 1.0) of every window start


class SyncPairDataset(Dataset):
    """Random (lip window, audio window, in-sync?) pairs drawn as the authors' trainer draws.

    The data set is *sampled*, not enumerated: item ``i`` is drawn from a generator seeded
    with ``(seed, rank, i)``, so any index gives a valid sample, the same index always gives
    the same sample, and a resumed run simply continues at the next index. ``len()`` is the
    nominal epoch length (the reference uses the number of clips), used for epoch counting.

    Item ``i`` is ``(video (3*window_frames, 48, 96) float32 BGR 0..1, mel (1, 80, M) float32,
    label float32 scalar)`` with ``M = mel_frames_for(window_frames)`` (16 for 5 frames).

    Clips with at most :data:`MIN_CLIP_FRAMES` frames are skipped when the data set is built
    (listed in :attr:`skipped`), as are clips whose audio is missing or not 16 kHz, with the
    reason. ``N = min(frames, audio frames)`` of a clip bounds its window starts
    ``0..N-window_frames``.
    """

    def __init__(
        self,
        clips: Sequence[str | Path],
        *,
        window_frames: int = FRAMES_PER_WINDOW,
        seed: int = 0,
        rank: int = 0,
        epoch_length: int | None = None,
        cache_size: int = 32,
        min_frames: int = MIN_CLIP_FRAMES,
        scan_threads: int = 16,
    ):
        if window_frames < 1:
            raise ValueError(f"window_frames must be at least 1 frame, got {window_frames}")
        self.window_frames = window_frames
        self.seed = int(seed)
        self.rank = int(rank)
        self.cache_size = max(1, int(cache_size))
        self.min_frames = min_frames
        self.mel_frames = mel_frames_for(window_frames)
        self.skipped: list[tuple[Path, str]] = []
        paths = [Path(p) for p in clips]
        with ThreadPoolExecutor(max_workers=max(1, min(scan_threads, len(paths)))) as pool:
            scans = list(pool.map(_scan_clip, paths))
        kept: list[Path] = []
        usable: list[int] = []
        for path, (frames, audio_frames, problem) in zip(paths, scans, strict=True):
            n = min(frames, audio_frames)
            if problem is None and frames <= min_frames:
                problem = f"{frames} frames (needs more than {min_frames})"
            if problem is None and n - window_frames < 1:
                problem = (f"only {n} frames with audio (a {window_frames}-frame pair "
                           "needs 2 starts)")
            if problem is not None:
                self.skipped.append((path, problem))
                continue
            kept.append(path)
            usable.append(n)
        if not kept:
            detail = f"; e.g. {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""
            raise LipsyncError(f"no usable training clips among {len(paths)}{detail}")
        self.clips = kept
        self.usable_frames = np.asarray(usable, dtype=np.int64)
        self.epoch_length = int(epoch_length) if epoch_length else len(kept)
        self._cache: OrderedDict[int, _ClipAudio] = OrderedDict()

    @classmethod
    def from_split(
        cls, data_root: str | Path, split: str = "train", **kwargs: Any
    ) -> SyncPairDataset:
        """The clips of ``filelists/<split>.txt`` under ``data_root`` (see
        :func:`lipsync_fix.data.layout.list_clips`)."""
        return cls(list_clips(data_root, split), **kwargs)

    def __len__(self) -> int:
        return self.epoch_length

    def __getstate__(self) -> dict[str, Any]:
        # Loader workers start with an empty cache rather than a copy of the parent's.
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def _audio(self, clip: int) -> _ClipAudio:
        """The clip's audio and per-start RMS, from a small LRU cache (lazy loading)."""
        cached = self._cache.get(clip)
        if cached is not None:
            self._cache.move_to_end(clip)
            return cached
        wav = read_wav(self.clips[clip] / AUDIO_NAME)
        n_starts = int(self.usable_frames[clip]) - self.window_frames + 1
        length = self.window_frames * SAMPLES_PER_FRAME
        rms = np.array([chunk_rms(wav, s * SAMPLES_PER_FRAME, length) for s in range(n_starts)])
        entry = _ClipAudio(wav, rms)
        self._cache[clip] = entry
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index``: depends on (seed, rank, index) only."""
        if index < 0:
            raise IndexError(f"sample index must be non-negative, got {index}")
        return np.random.default_rng([self.seed, self.rank, int(index)])

    def draw(self, index: int) -> PairDraw:
        """Decide the pair of sample ``index`` exactly as the reference's ``__getitem__`` loop.

        Per attempt: a random clip, a start ``f`` in ``0..N-window_frames``, a fair coin. Heads: the
        positive. Tails: draw ``g != f``; if the positive's RMS is above :data:`SILENCE_RMS`
        any ``g`` will do, otherwise ``g`` is redrawn until its audio is louder than that,
        and after :data:`MAX_NEGATIVE_DRAWS` failures the attempt is dropped and the loop
        starts over (new clip, new coin). Dropping only ever hits negatives, so the share of
        positives rises above one half by the share of dropped attempts, as in the reference.
        """
        rng = self.rng(index)
        for dropped in range(_MAX_SAMPLE_ATTEMPTS):
            clip = int(rng.integers(len(self.clips)))
            last_start = int(self.usable_frames[clip]) - self.window_frames
            f = int(rng.integers(0, last_start + 1))
            if rng.random() < 0.5:
                return PairDraw(clip, f, f, 1, dropped)
            rms = self._audio(clip).rms
            failures = 0
            while failures < MAX_NEGATIVE_DRAWS:
                g = int(rng.integers(0, last_start + 1))
                if g == f:
                    continue
                if rms[f] > SILENCE_RMS or rms[g] > SILENCE_RMS:
                    return PairDraw(clip, f, g, 0, dropped)
                failures += 1
        raise LipsyncError(
            f"{_MAX_SAMPLE_ATTEMPTS} samples in a row were dropped by the silence rule: "
            "the clips' audio is (nearly) silent everywhere"
        )

    def load(self, pair: PairDraw) -> tuple[Tensor, Tensor, Tensor]:
        """Decode the frames and audio of a drawn pair into model inputs."""
        folder = self.clips[pair.clip]
        frames = range(pair.video_start, pair.video_start + self.window_frames)
        crops = np.stack([read_crop(folder / f"{i}.jpg") for i in frames])
        video = lower_half(crops).flatten(0, 1)  # (3*window_frames, 48, 96), frame-major BGR
        mel = window_mel(self._audio(pair.clip).wav, pair.audio_start, self.window_frames)
        return video, mel, torch.tensor(float(pair.label))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.load(self.draw(index))


def _scan_clip(folder: Path) -> tuple[int, int, str | None]:
    """(jpg frames, whole audio frames, problem or None) without decoding anything."""
    frames = frame_count(folder)
    wav = folder / AUDIO_NAME
    if not wav.is_file():
        return frames, 0, f"no {AUDIO_NAME}"
    try:
        info = sf.info(str(wav))
    except Exception as exc:  # soundfile raises several types for broken files
        return frames, 0, f"unreadable {AUDIO_NAME}: {exc}"
    if info.samplerate != SAMPLE_RATE:
        return frames, 0, f"audio at {info.samplerate} Hz (needs {SAMPLE_RATE})"
    return frames, int(info.frames) // SAMPLES_PER_FRAME, None


class StreamSampler(Sampler[int]):
    """Sample indices ``start, start+1, ...`` (endless or up to ``stop``), optionally strided.

    The data set is index-keyed, so this is all the sampler a resumable stream needs.
    """

    def __init__(self, start: int, stop: int | None = None, step: int = 1):
        self.start, self.stop, self.step = start, stop, step

    def __iter__(self) -> Iterator[int]:
        i = self.start
        while self.stop is None or i < self.stop:
            yield i
            i += self.step

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless stream has no length")
        return max(0, math.ceil((self.stop - self.start) / self.step))


def worker_init(_: int) -> None:
    # Loader workers each decode a few JPEGs per sample; OpenCV's own thread pool would only
    # oversubscribe the cores the training process needs.
    cv2.setNumThreads(1)
