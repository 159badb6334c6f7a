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

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
from scipy import interpolate, signal

from lipsync_fix.faces import crop_face

__all__ = [
    "CROP_PAD_BOTTOM",
    "CROP_SIZE",
    "DATASET_SAMPLE_RATE",
    "CropFn",
    "Syllable",
    "TalkingHead",
    "articulation_tracks",
    "crop_face",
    "delay_audio",
    "make_talking_head",
    "render_frames",
    "speech_timeline",
    "synthesize_voice",
    "write_clip_folder",
]

DATASET_SAMPLE_RATE = 16000
"""Sample rate of ``audio.wav`` in the authors' dataset layout (VocaLiST uses 16 kHz)."""

CROP_SIZE = 96
"""Side of the square face crops VocaLiST reads."""

CROP_PAD_BOTTOM = 10
"""Extra pixels below the face box in the authors' preprocessing, so the chin is never cut."""

CropFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``crop_fn(frame_bgr, box) -> crop``: a replacement for :func:`crop_face`."""

# ---------------------------------------------------------------------------------------------
# Phonetic inventory
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Vowel:
    """Acoustic and visual target of one vowel.

    Formants are those of an adult male voice (scaled per speaker); ``opening`` is the lip
    aperture relative to a wide /a/, ``width`` the mouth width relative to rest, ``rounding``
    how much the lips are pursed. ``intensity`` is the vowel's intrinsic loudness: open vowels
    are louder, which is part of why lip opening can be heard.
    """

    formants: tuple[float, float, float, float]
    bandwidths: tuple[float, float, float, float]
    opening: float
    width: float
    rounding: float
    intensity: float
    weight: float


_VOWELS: dict[str, _Vowel] = {
    "a": _Vowel((750, 1200, 2500, 3500), (90, 110, 160, 250), 1.00, 1.00, 0.0, 1.00, 0.25),
    "e": _Vowel((500, 1800, 2500, 3500), (70, 100, 160, 250), 0.55, 1.08, 0.0, 0.85, 0.20),
    "i": _Vowel((300, 2250, 3000, 3700), (50, 100, 180, 250), 0.25, 1.15, 0.0, 0.70, 0.18),
    "o": _Vowel((550, 900, 2450, 3500), (80, 100, 160, 250), 0.65, 0.78, 0.7, 0.90, 0.14),
    "u": _Vowel((320, 850, 2300, 3400), (60, 100, 160, 250), 0.22, 0.68, 1.0, 0.70, 0.10),
    "@": _Vowel((520, 1450, 2500, 3500), (80, 110, 160, 250), 0.45, 0.95, 0.1, 0.80, 0.13),
}

_REST = (0.0, 1.0, 0.0)
"""Mouth (opening, width, rounding) at rest: lips closed, neutral width."""


@dataclass(frozen=True)
class _Consonant:
    """How one consonant sounds and what the lips do during it.

    ``manner`` selects the acoustic recipe (stop: closure + burst, fricative: noise, nasal and
    approximant: voiced resonances). ``channel`` names the filter that colours its sound.
    Bilabials hold the lips shut for their whole closure. The opening of other consonants is
    ``opening`` plus ``coarticulation`` times the next vowel's opening, because the jaw already
    moves towards the vowel; ``width``/``rounding`` of None likewise follow the next vowel.
    """

    manner: str
    voiced: bool
    channel: str
    bilabial: bool
    opening: float
    coarticulation: float
    width: float | None
    rounding: float | None
    weight: float


_CONSONANTS: dict[str, _Consonant] = {
    "p": _Consonant("stop", False, "burst_labial", True, 0.0, 0.0, None, None, 0.09),
    "b": _Consonant("stop", True, "burst_labial", True, 0.0, 0.0, None, None, 0.08),
    "m": _Consonant("nasal", True, "nasal_m", True, 0.0, 0.0, None, None, 0.10),
    "f": _Consonant("fricative", False, "fric_f", False, 0.06, 0.0, 1.0, 0.0, 0.05),
    "v": _Consonant("fricative", True, "fric_f", False, 0.06, 0.0, 1.0, 0.0, 0.03),
    "t": _Consonant("stop", False, "burst_alveolar", False, 0.12, 0.3, None, None, 0.09),
    "d": _Consonant("stop", True, "burst_alveolar", False, 0.12, 0.3, None, None, 0.07),
    "n": _Consonant("nasal", True, "nasal_n", False, 0.12, 0.35, None, None, 0.08),
    "s": _Consonant("fricative", False, "fric_s", False, 0.08, 0.15, 1.05, 0.0, 0.08),
    "z": _Consonant("fricative", True, "fric_s", False, 0.08, 0.15, 1.05, 0.0, 0.03),
    "sh": _Consonant("fricative", False, "fric_sh", False, 0.12, 0.1, 0.8, 0.6, 0.04),
    "k": _Consonant("stop", False, "burst_velar", False, 0.10, 0.6, None, None, 0.07),
    "g": _Consonant("stop", True, "burst_velar", False, 0.10, 0.6, None, None, 0.04),
    "l": _Consonant("approximant", True, "approx_l", False, 0.20, 0.4, None, None, 0.07),
    "w": _Consonant("approximant", True, "approx_w", False, 0.08, 0.05, 0.7, 1.0, 0.04),
    "y": _Consonant("approximant", True, "approx_y", False, 0.12, 0.2, 1.1, 0.0, 0.04),
}

_NO_CONSONANT_PROB = 0.15
"""Share of syllables that start with their vowel."""

_CONSONANT_DURATION_S = {"stop": 0.085, "fricative": 0.10, "nasal": 0.07, "approximant": 0.055}
"""Typical consonant durations at a normal rate; scaled by the clip's speaking rate."""

_BURST_S = 0.012
_ASPIRATION_S = 0.025

_VOICED_RESONANCES: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]] = {
    "nasal_m": ((250, 1200, 2300, 3300), (60, 300, 300, 400), 0.30),
    "nasal_n": ((250, 1600, 2600, 3400), (60, 300, 300, 400), 0.30),
    "approx_l": ((350, 1100, 2700, 3500), (70, 120, 200, 250), 0.45),
    "approx_w": ((300, 700, 2200, 3300), (60, 90, 160, 250), 0.45),
    "approx_y": ((280, 2200, 3000, 3700), (50, 100, 180, 250), 0.45),
}
"""Formants, bandwidths and loudness of the voiced consonants."""

_NOISE_BANDS: dict[str, tuple[float, float, float]] = {
    "fric_s": (4000.0, 7800.0, 0.30),
    "fric_sh": (2000.0, 5500.0, 0.30),
    "fric_f": (1200.0, 7000.0, 0.08),
    "burst_labial": (300.0, 2000.0, 0.45),
    "burst_alveolar": (2500.0, 6000.0, 0.45),
    "burst_velar": (1200.0, 3000.0, 0.45),
    "aspiration": (500.0, 5000.0, 0.12),
}
"""Noise band (Hz) and loudness of frication, release bursts and aspiration."""

_VOICE_BAR_LOUDNESS = 0.12
"""Low-frequency voicing heard through the closed tract of b/d/g/v/z."""


@dataclass(frozen=True)
class Syllable:
    """One consonant-vowel syllable of the synthetic speech, times in seconds.

    The consonant (``""`` when there is none) spans ``start..vowel_start``, the vowel
    ``vowel_start..end``. For stops ``release`` is the burst, when closed lips open; otherwise it
    equals ``vowel_start``. ``stress`` scales loudness, pitch accent and mouth opening together,
    so stressed syllables are louder *and* wider, as in real speech. ``phrase`` numbers the
    breath group the syllable belongs to (pauses separate phrases).
    """

    start: float
    release: float
    vowel_start: float
    end: float
    consonant: str
    vowel: str
    stress: float
    phrase: int

    @property
    def bilabial(self) -> bool:
        """Whether the lips are fully closed during the consonant (p, b, m)."""
        return bool(self.consonant) and _CONSONANTS[self.consonant].bilabial


# ---------------------------------------------------------------------------------------------
# Timeline
# ---------------------------------------------------------------------------------------------


def _weighted_choice(
    rng: np.random.Generator, table: dict[str, _Vowel] | dict[str, _Consonant]
) -> str:
    names = list(table)
    weights = np.array([table[name].weight for name in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _syllable(
    rng: np.random.Generator, start: float, mean_s: float, rate_factor: float, phrase: int
) -> Syllable:
    """Draw one syllable starting at ``start``, about ``mean_s`` long (0.65-1.6 times)."""
    duration = mean_s * float(np.clip(rng.lognormal(0.0, 0.25), 0.65, 1.6))
    vowel = _weighted_choice(rng, _VOWELS)
    consonant = "" if rng.random() < _NO_CONSONANT_PROB else _weighted_choice(rng, _CONSONANTS)
    consonant_s = 0.0
    release_s = 0.0
    if consonant:
        spec = _CONSONANTS[consonant]
        consonant_s = _CONSONANT_DURATION_S[spec.manner] * rate_factor * rng.uniform(0.8, 1.25)
        consonant_s = min(consonant_s, 0.45 * duration)
        if spec.manner == "stop":
            release_s = _BURST_S
    vowel_start = start + consonant_s
    return Syllable(
        start=start,
        release=vowel_start - release_s,
        vowel_start=vowel_start,
        end=start + duration,
        consonant=consonant,
        vowel=vowel,
        stress=float(rng.uniform(0.6, 1.0)),
        phrase=phrase,
    )


def speech_timeline(rng: np.random.Generator, duration_s: float) -> tuple[Syllable, ...]:
    """Draw a random syllable timeline that fits in ``duration_s`` seconds.

    Speaking rate is 3-6 syllables/s per clip, phrases hold 2-10 syllables and are separated
    by 0.2-0.8 s pauses; the clip starts with 0.1-0.5 s of silence. Only whole syllables are
    kept, so speech never stops mid-vowel at the end of the clip.
    """
    rate = rng.uniform(3.0, 6.0)
    mean_s = 1.0 / rate
    rate_factor = float(np.clip(4.5 / rate, 0.75, 1.3))
    syllables: list[Syllable] = []
    t = rng.uniform(0.1, 0.5)
    phrase = 0
    while True:
        for _ in range(int(rng.integers(2, 11))):
            syllable = _syllable(rng, t, mean_s, rate_factor, phrase)
            if syllable.end > duration_s - 0.05:
                return tuple(syllables)
            syllables.append(syllable)
            t = syllable.end
        t += rng.uniform(0.2, 0.8)
        phrase += 1


def _phrases(syllables: Sequence[Syllable]) -> list[list[Syllable]]:
    groups: dict[int, list[Syllable]] = {}
    for syllable in syllables:
        groups.setdefault(syllable.phrase, []).append(syllable)
    return list(groups.values())


# ---------------------------------------------------------------------------------------------
# Voice
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Speaker:
    """Per-clip voice: pitch, vocal-tract length, voice quality, recording noise."""

    f0: float
    formant_scale: float
    tilt: float
    breathiness: float
    jitter: float
    shimmer: float
    noise_floor_db: float


def _draw_speaker(rng: np.random.Generator) -> _Speaker:
    f0 = rng.uniform(90.0, 250.0)
    # Higher voices come with shorter vocal tracts, hence higher formants.
    formant_scale = 0.92 + 0.22 * (f0 - 90.0) / 160.0 + rng.normal(0.0, 0.03)
    return _Speaker(
        f0=f0,
        formant_scale=float(np.clip(formant_scale, 0.88, 1.2)),
        tilt=rng.uniform(0.0, 0.6),
        breathiness=rng.uniform(0.0, 0.08),
        jitter=rng.uniform(0.004, 0.015),
        shimmer=rng.uniform(0.02, 0.08),
        noise_floor_db=rng.uniform(-65.0, -50.0),
    )


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """Raised-cosine ramp of ``x`` clipped to 0..1: smooth edges avoid clicks and jumps."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))


def _add_segment(
    envelope: np.ndarray,
    sample_rate: int,
    start: float,
    end: float,
    gain: float,
    ramp_in: float,
    ramp_out: float,
) -> None:
    """Add a gain envelope that ramps in around ``start`` and out around ``end``.

    Ramps are centred on the segment edges, so two abutting segments of one channel cross-fade
    to a constant level and neighbouring vowels glide into each other.
    """
    a = start - ramp_in / 2
    b = end + ramp_out / 2
    i0 = max(0, int(np.floor(a * sample_rate)))
    i1 = min(envelope.size, int(np.ceil(b * sample_rate)))
    if i1 <= i0:
        return
    t = np.arange(i0, i1) / sample_rate
    envelope[i0:i1] += gain * _smoothstep((t - a) / ramp_in) * _smoothstep((b - t) / ramp_out)


def _pitch_contour(
    rng: np.random.Generator, syllables: Sequence[Syllable], speaker: _Speaker, n: int, sr: int
) -> np.ndarray:
    """F0 in Hz per sample: phrase declination, pitch accents on stressed vowels, drift, jitter."""
    step = 0.005
    t = np.arange(int(np.ceil(n / sr / step)) + 2) * step
    log_f0 = np.zeros_like(t)
    for phrase in _phrases(syllables):
        start, end = phrase[0].start, phrase[-1].end
        inside = (t >= start - 0.1) & (t <= end + 0.1)
        # Declination, ending in a fall (statement) or, now and then, a rise (question).
        final = rng.choice([-0.15, 0.15], p=[0.8, 0.2])
        log_f0[inside] += np.interp(t[inside], [start, end - 0.2, end], [0.12, -0.1, final])
        for syllable in phrase:
            centre = (syllable.vowel_start + syllable.end) / 2
            accent = 0.4 * (syllable.stress - 0.55) * rng.uniform(0.5, 1.5)
            log_f0 += accent * np.exp(-0.5 * ((t - centre) / 0.07) ** 2)
    drift = signal.sosfiltfilt(
        signal.butter(2, 2.0, fs=1 / step, output="sos"), rng.standard_normal(t.size)
    )
    log_f0 += 0.04 * drift / (np.std(drift) + 1e-9)
    log_f0 += speaker.jitter * rng.standard_normal(t.size)
    return speaker.f0 * np.exp(np.interp(np.arange(n) / sr, t, log_f0))


def _glottal_source(
    rng: np.random.Generator, f0: np.ndarray, speaker: _Speaker, sr: int
) -> np.ndarray:
    """Band-limited sawtooth pulse train with per-period shimmer, spectral tilt and breath noise.

    A sawtooth has the -6 dB/octave slope of glottal flow seen through lip radiation; polyBLEP
    correction removes the aliasing a naive sawtooth would fold back below 8 kHz.
    """
    increment = f0 / sr
    phase = np.cumsum(increment)
    frac = phase % 1.0
    saw = 1.0 - 2.0 * frac
    head = frac < increment
    x = frac[head] / increment[head]
    saw[head] += x + x - x * x - 1.0
    tail = frac > 1.0 - increment
    x = (frac[tail] - 1.0) / increment[tail]
    saw[tail] += x * x + x + x + 1.0
    period = phase.astype(np.int64)
    saw *= 1.0 + speaker.shimmer * rng.standard_normal(int(period[-1]) + 1)[period]
    saw = signal.lfilter([1.0 - speaker.tilt], [1.0, -speaker.tilt], saw)
    return saw + speaker.breathiness * rng.standard_normal(saw.size)


def _resonator_sos(formants: Sequence[float], bandwidths: Sequence[float], sr: int) -> np.ndarray:
    """Cascade of two-pole formant resonators with unit gain at 0 Hz (Klatt-style).

    A cascade gives each vowel its natural relative formant amplitudes without tuning.
    Formants too close to Nyquist for this sample rate are left out.
    """
    sections = []
    for frequency, bandwidth in zip(formants, bandwidths, strict=True):
        if frequency >= 0.45 * sr:
            continue
        r = np.exp(-np.pi * bandwidth / sr)
        c = -2.0 * r * np.cos(2.0 * np.pi * frequency / sr)
        sections.append([1.0 + c + r * r, 0.0, 0.0, 1.0, c, r * r])
    return np.array(sections)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _voiced_channels(speaker: _Speaker, sr: int) -> dict[str, tuple[np.ndarray, float]]:
    """Resonance filter and loudness of every voiced channel: vowels and voiced consonants."""
    channels: dict[str, tuple[np.ndarray, float]] = {}
    for name, vowel in _VOWELS.items():
        formants = [f * speaker.formant_scale for f in vowel.formants]
        channels[name] = (_resonator_sos(formants, vowel.bandwidths, sr), vowel.intensity)
    for name, (formants, bandwidths, loudness) in _VOICED_RESONANCES.items():
        scaled = [f * speaker.formant_scale for f in formants]
        channels[name] = (_resonator_sos(scaled, bandwidths, sr), loudness)
    channels["voice_bar"] = (signal.butter(2, 400.0, fs=sr, output="sos"), _VOICE_BAR_LOUDNESS)
    return channels


def _noise_filter(low: float, high: float, sr: int) -> np.ndarray:
    high = min(high, 0.45 * sr)
    return signal.butter(2, [min(low, 0.5 * high), high], btype="bandpass", fs=sr, output="sos")


def _channel_envelopes(syllables: Sequence[Syllable], n: int, sr: int) -> dict[str, np.ndarray]:
    """Gain over time of every sound channel, following the syllable timeline."""
    envelopes: dict[str, np.ndarray] = {}

    def add(
        channel: str, start: float, end: float, gain: float, ramp_in: float, ramp_out: float
    ) -> None:
        envelope = envelopes.setdefault(channel, np.zeros(n))
        _add_segment(envelope, sr, start, end, gain, ramp_in, ramp_out)

    for phrase in _phrases(syllables):
        for index, syllable in enumerate(phrase):
            # Loudness declines over a phrase, as the speaker runs out of breath.
            gain = syllable.stress * (1.0 - 0.3 * index / max(1, len(phrase) - 1))
            vowel_ramp_in = 0.03
            if syllable.consonant:
                spec = _CONSONANTS[syllable.consonant]
                start, release, vowel_start = syllable.start, syllable.release, syllable.vowel_start
                if spec.manner == "stop":
                    vowel_ramp_in = 0.008
                    if spec.voiced:
                        add("voice_bar", start, release, gain, 0.01, 0.005)
                    add(spec.channel, release, release + _BURST_S, gain, 0.002, _BURST_S)
                    if not spec.voiced:
                        aspiration_end = vowel_start + _ASPIRATION_S
                        add("aspiration", vowel_start, aspiration_end, gain, 0.004, 0.02)
                elif spec.manner == "fricative":
                    add(spec.channel, start, vowel_start, gain, 0.02, 0.02)
                    if spec.voiced:
                        add("voice_bar", start, vowel_start, gain, 0.02, 0.02)
                else:
                    add(spec.channel, start, vowel_start, gain, 0.02, 0.03)
            # A phrase-final vowel dies away more slowly.
            ramp_out = 0.08 if index == len(phrase) - 1 else 0.03
            add(syllable.vowel, syllable.vowel_start, syllable.end, gain, vowel_ramp_in, ramp_out)
    return envelopes


def synthesize_voice(
    rng: np.random.Generator,
    syllables: Sequence[Syllable],
    n_samples: int,
    sample_rate: int = DATASET_SAMPLE_RATE,
    peak: float = 0.5,
) -> np.ndarray:
    """Render the syllable timeline as speech-like audio, float32 mono, peak ``peak``.

    A random speaker (F0 90-250 Hz, vocal-tract length, breathiness, spectral tilt) is drawn
    from ``rng``. Every vowel and voiced consonant filters the one glottal source through its
    own formant cascade and every noisy consonant filters one noise source through its band;
    channel envelopes then mix them, which cross-fades formants between neighbouring sounds.
    A faint noise floor keeps pauses from being digital silence, as in a real recording.
    """
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {sample_rate}.")
    speaker = _draw_speaker(rng)
    f0 = _pitch_contour(rng, syllables, speaker, n_samples, sample_rate)
    source = _glottal_source(rng, f0, speaker, sample_rate)
    noise = rng.standard_normal(n_samples)
    voiced = _voiced_channels(speaker, sample_rate)
    mix = np.zeros(n_samples)
    for channel, envelope in _channel_envelopes(syllables, n_samples, sample_rate).items():
        if channel in voiced:
            sos, loudness = voiced[channel]
            sound = signal.sosfilt(sos, source)
        else:
            low, high, loudness = _NOISE_BANDS[channel]
            sound = signal.sosfilt(_noise_filter(low, high, sample_rate), noise)
        mix += loudness * envelope * _unit_rms(sound)
    mix = signal.sosfilt(
        signal.butter(2, 60.0, btype="highpass", fs=sample_rate, output="sos"), mix
    )
    mix *= peak / (np.max(np.abs(mix)) + 1e-12)
    mix += peak * 10 ** (speaker.noise_floor_db / 20) * rng.standard_normal(n_samples)
    return mix.astype(np.float32)


def delay_audio(audio: np.ndarray, delay_ms: float, sample_rate: int) -> np.ndarray:
    """Delay ``audio`` by ``delay_ms`` (advance it when negative), keeping its length.

    A positive delay makes the sound come later than the lips: silence is padded at the start
    and the end is trimmed. The shift is ``round(delay_ms * sample_rate / 1000)`` samples.
    """
    shift = round(delay_ms * sample_rate / 1000.0)
    out = np.zeros_like(audio)
    if shift >= 0:
        out[shift:] = audio[: max(0, audio.size - shift)]
    else:
        out[: max(0, audio.size + shift)] = audio[-shift:]
    return out


# ---------------------------------------------------------------------------------------------
# Articulation
# ---------------------------------------------------------------------------------------------


def _consonant_target(syllable: Syllable) -> tuple[float, float, float]:
    spec = _CONSONANTS[syllable.consonant]
    vowel = _VOWELS[syllable.vowel]
    width = vowel.width if spec.width is None else spec.width
    rounding = vowel.rounding if spec.rounding is None else spec.rounding
    opening = spec.opening + spec.coarticulation * vowel.opening * syllable.stress
    return opening, width, rounding


def _articulation_knots(
    syllables: Sequence[Syllable], duration_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Times and (opening, width, rounding) targets the mouth passes through.

    Bilabial closures contribute a closed knot at both ends so the interpolated lips stay shut
    for the whole closure; pauses contribute rest knots so the mouth is closed between phrases.
    """
    knots: list[tuple[float, tuple[float, float, float]]] = [(-1.0, _REST)]
    for phrase in _phrases(syllables):
        knots.append((phrase[0].start, _REST))
        for syllable in phrase:
            vowel = _VOWELS[syllable.vowel]
            if syllable.bilabial:
                closed = (0.0, 0.5 + 0.5 * vowel.width, 0.5 * vowel.rounding)
                knots += [(syllable.start, closed), (syllable.release, closed)]
            elif syllable.consonant:
                knots.append(
                    ((syllable.start + syllable.vowel_start) / 2, _consonant_target(syllable))
                )
            vowel_time = syllable.vowel_start + 0.45 * (syllable.end - syllable.vowel_start)
            opening = vowel.opening * (0.7 + 0.35 * syllable.stress)
            knots.append((vowel_time, (opening, vowel.width, vowel.rounding)))
        knots.append((phrase[-1].end + 0.06, _REST))
    knots.append((max(duration_s, knots[-1][0]) + 1.0, _REST))
    knots.sort(key=lambda knot: knot[0])
    times, values = [knots[0][0]], [knots[0][1]]
    for time, value in knots[1:]:
        if time - times[-1] > 1e-4:  # coinciding knots are both closed; keep one
            times.append(time)
            values.append(value)
    return np.array(times), np.array(values)


def articulation_tracks(
    syllables: Sequence[Syllable],
    n_frames: int,
    fps: float = 25.0,
    lip_lead_ms: float = 0.0,
) -> np.ndarray:
    """Mouth (opening, width, rounding) per video frame, shape ``(n_frames, 3)`` float32.

    Frame ``i`` shows the mouth at the centre of its audio window, ``(i + 0.5) / fps`` seconds,
    shifted by ``lip_lead_ms`` (lips lead the sound by a few tens of ms in real speech). Targets
    are joined by monotone cubic (PCHIP) interpolation: smooth like real articulators, with no
    overshoot, and exactly closed wherever a bilabial closure or pause covers the frame.
    Opening is 0 (closed) to 1 (wide /a/); width is relative to rest; rounding is 0..1.
    """
    duration_s = n_frames / fps
    times, values = _articulation_knots(syllables, duration_s)
    t = (np.arange(n_frames) + 0.5) / fps + lip_lead_ms / 1000.0
    tracks = interpolate.PchipInterpolator(times, values, axis=0)(t)
    tracks[:, 0] = np.clip(tracks[:, 0], 0.0, 1.0)
    return tracks.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Face
# ---------------------------------------------------------------------------------------------

# Geometry of the astronaut photograph (512x512), measured on the image.
_MOUTH_CENTRE = (224.0, 146.0)
"""Where the lips meet at the middle of the mouth (the smile spans x 203-245, y 139-153)."""
_ORIGINAL_MOUTH_AXES = (27, 11)
"""Half-axes of the ellipse that covers the photo's own smiling mouth, painted over as skin."""
_CHIN_Y = 177.0
"""Bottom of the chin at the face's centre line; the jaw moves the skin above it."""
_FACE_BOX = (170.0, 72.0, 110.0, 110.0)
"""S3FD-style face box (x, y, w, h): forehead to just below the chin, cheek to cheek."""
_PATCH = (168, 120, 280, 206)
"""Region (x0, y0, x1, y1) redrawn per frame: the mouth, the lips' reach and the jaw."""
_PERSON_OUTLINE = (
    (228, 15), (252, 17), (276, 29), (292, 47), (300, 70), (301, 92), (297, 112), (289, 124),
    (276, 131), (268, 140), (262, 150), (257, 158), (255, 172), (272, 185), (290, 200), (300, 215),
    (305, 230), (315, 237), (324, 241), (345, 260), (358, 288), (366, 340), (420, 345), (470, 360),
    (500, 390), (512, 430), (512, 512), (22, 512), (20, 440), (28, 360), (45, 290), (70, 245),
    (100, 216), (113, 200), (119, 184), (135, 168), (160, 155), (178, 150), (180, 136), (170, 126),
    (159, 106), (154, 84), (156, 64), (167, 44), (187, 30), (204, 21),
)  # fmt: skip
"""Outline of the astronaut (hair, face, collar ring, suit, helmet), traced on the photo."""


@dataclass(frozen=True)
class _MouthStyle:
    """Per-clip look of the drawn mouth, in photo pixels, so models see more than one mouth."""

    half_width: float
    max_opening: float
    upper_lip: float
    lower_lip: float
    lip_tint: tuple[float, float, float]
    teeth: float


@dataclass(frozen=True)
class _Look:
    """Per-clip placement, background and colour treatment of the face."""

    scale: float
    centre: tuple[float, float]
    flip: bool
    background: str
    gain: tuple[float, float, float]
    bias: float
    contrast: float
    gamma: float
    blur_sigma: float
    noise_sigma: float
    mouth: _MouthStyle


@functools.lru_cache(maxsize=1)
def _photo() -> np.ndarray:
    """The astronaut photo (RGB uint8) with its smiling mouth painted over with skin.

    The drawn mouth must be the only mouth in the picture, otherwise the smile's teeth would
    stay visible while the lips are meant to be closed.
    """
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut())
    mask = np.zeros(photo.shape[:2], np.uint8)
    centre = (round(_MOUTH_CENTRE[0]), round(_MOUTH_CENTRE[1]) - 1)
    cv2.ellipse(mask, centre, _ORIGINAL_MOUTH_AXES, 0.0, 0.0, 360.0, 255, -1)
    painted = cv2.inpaint(photo, mask, 9, cv2.INPAINT_TELEA)
    # Inpainting leaves a flat smear; blend its edge and add skin-like grain to hide it.
    alpha = cv2.GaussianBlur(mask, (0, 0), 3.0).astype(np.float32)[..., None] / 255.0
    grain = np.random.default_rng(0).normal(0.0, 2.0, photo.shape).astype(np.float32)
    painted = painted.astype(np.float32) + alpha * grain
    return np.clip(photo * (1 - alpha) + painted * alpha, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _person_alpha() -> np.ndarray:
    """Soft mask (float32, 1 = astronaut) used to swap the background."""
    mask = np.zeros((512, 512), np.uint8)
    cv2.fillPoly(mask, [np.array(_PERSON_OUTLINE, np.int32)], 255, cv2.LINE_AA)
    return cv2.GaussianBlur(mask, (0, 0), 2.0).astype(np.float32)[..., None] / 255.0


@functools.lru_cache(maxsize=1)
def _patch_grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of the mouth patch, the identity map that the jaw warp displaces."""
    x0, y0, x1, y1 = _PATCH
    xs, ys = np.arange(x1 - x0, dtype=np.float32), np.arange(y1 - y0, dtype=np.float32)
    grid_x, grid_y = np.meshgrid(xs, ys)
    return grid_x, grid_y


@functools.lru_cache(maxsize=1)
def _jaw_weight() -> np.ndarray:
    """How far each patch pixel moves with the jaw (1: fully, 0: not at all).

    Skin between the lower lip and the chin moves with the jaw. The moving region narrows
    from the mouth corners down to the chin, following the jaw line, and fades out just below
    the chin, so cheeks, neck and collar stay put (the chin slides over the neck).
    """
    x0, y0, x1, y1 = _PATCH
    xs = np.arange(x0, x1, dtype=np.float32) - _MOUTH_CENTRE[0]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    jaw_half_width = np.interp(ys, [_MOUTH_CENTRE[1], _CHIN_Y], [44.0, 30.0])
    across = _smoothstep((jaw_half_width - np.abs(xs)[None, :]) / 14.0)
    down = _smoothstep((ys - (_MOUTH_CENTRE[1] - 4.0)) / 6.0) * _smoothstep(
        (_CHIN_Y + 14.0 - ys) / 12.0
    )
    return (down * across).astype(np.float32)


def _draw_mouth_style(rng: np.random.Generator) -> _MouthStyle:
    tint = np.array([0.86, 0.60, 0.64]) * rng.uniform(0.92, 1.05, 3)
    return _MouthStyle(
        half_width=19.0 * rng.uniform(0.92, 1.08),
        max_opening=15.0 * rng.uniform(0.85, 1.15),
        upper_lip=3.6 * rng.uniform(0.8, 1.25),
        lower_lip=4.6 * rng.uniform(0.8, 1.25),
        lip_tint=(float(tint[0]), float(tint[1]), float(tint[2])),
        teeth=rng.uniform(0.5, 1.0),
    )


def _centre_coordinate(
    rng: np.random.Generator,
    extent: int,
    half_box: float,
    margin: float,
    reach: tuple[float, float],
) -> float:
    """Draw the face centre along one axis of the frame.

    The face box (plus ``margin`` for head motion) must stay inside the frame, and if possible
    the photo must still cover the frame: ``reach`` is how far the photo extends before and
    after the face centre, in frame pixels. Beyond the photo's edge only smeared border pixels
    could be shown.
    """
    low, high = half_box + margin, extent - half_box - margin
    covered_low, covered_high = max(low, extent - reach[1]), min(high, reach[0])
    if covered_high > covered_low:
        low, high = covered_low, covered_high
    return float(rng.uniform(low, high)) if high > low else extent / 2


def _draw_look(
    rng: np.random.Generator,
    size: tuple[int, int],
    background: str | None,
    flip: bool | None,
) -> _Look:
    """Random framing and colour for one clip; the face box stays inside the frame."""
    width, height = size
    box_side = rng.uniform(0.47, 0.7) * min(width, height)
    scale = box_side / _FACE_BOX[2]
    margin = 0.06 * box_side
    photo_h, photo_w = _photo().shape[:2]
    anchor_x, anchor_y = _FACE_BOX[0] + _FACE_BOX[2] / 2, _FACE_BOX[1] + _FACE_BOX[3] / 2
    # 10 % spare for head motion; the nearer photo edge either side, since the face may flip.
    side_reach = 0.9 * scale * min(anchor_x, photo_w - anchor_x)
    # The crop extends CROP_PAD_BOTTOM below the box, so the frame is that much shorter for it.
    vertical_reach = (
        0.9 * scale * anchor_y,
        0.9 * scale * (photo_h - anchor_y) - CROP_PAD_BOTTOM,
    )
    centre_x = _centre_coordinate(rng, width, box_side / 2, margin, (side_reach, side_reach))
    centre_y = _centre_coordinate(
        rng, height - CROP_PAD_BOTTOM, box_side / 2, margin, vertical_reach
    )
    centre = (centre_x, centre_y)
    return _Look(
        scale=scale,
        centre=centre,
        flip=bool(rng.random() < 0.5) if flip is None else flip,
        background=background or str(rng.choice(["photo", "photo", "plain", "noise"])),
        gain=tuple(float(g) for g in rng.uniform(0.9, 1.1, 3)),
        bias=rng.uniform(-20.0, 20.0),
        contrast=rng.uniform(0.75, 1.2),
        gamma=rng.uniform(0.8, 1.25),
        blur_sigma=rng.uniform(0.0, 1.0) if rng.random() < 0.5 else 0.0,
        noise_sigma=rng.uniform(0.0, 4.0),
        mouth=_draw_mouth_style(rng),
    )


def _background(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A 512x512 RGB float32 backdrop: a plain gradient or smooth coloured noise."""
    if kind == "plain":
        top, bottom = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
        ramp = np.linspace(0.0, 1.0, 512, dtype=np.float32)[:, None, None]
        return np.broadcast_to(top + (bottom - top) * ramp, (512, 512, 3)).astype(np.float32)
    if kind == "noise":
        coarse = rng.uniform(20, 235, (int(rng.integers(3, 12)),) * 2 + (3,)).astype(np.float32)
        smooth = cv2.resize(coarse, (512, 512), interpolation=cv2.INTER_CUBIC)
        return smooth + rng.normal(0.0, 6.0, (512, 512, 3)).astype(np.float32)
    raise ValueError(f"Unknown background {kind!r}; use 'photo', 'plain' or 'noise'.")


def _canvas(rng: np.random.Generator, kind: str) -> np.ndarray:
    """The mouthless photo with the clip's background behind the astronaut."""
    photo = _photo()
    if kind == "photo":
        return photo.copy()
    alpha = _person_alpha()
    mixed = photo * alpha + _background(rng, kind) * (1.0 - alpha)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def _lip_curves(
    opening: float, width: float, rounding: float, style: _MouthStyle
) -> dict[str, np.ndarray]:
    """Outlines (patch pixel coordinates) of lips, opening, teeth and tongue for one frame.

    The lower lip carries three quarters of the opening because the jaw does most of the work.
    Spread mouths open as a lens with pointed corners, rounded ones as an ellipse; pursed lips
    protrude (look thicker) and stretched, open lips thin out.
    """
    cx = _MOUTH_CENTRE[0] - _PATCH[0]
    cy = _MOUTH_CENTRE[1] - _PATCH[1]
    half = style.half_width * width
    gap = style.max_opening * opening
    up, down = 0.25 * gap, 0.75 * gap

    def inner(u: np.ndarray) -> np.ndarray:
        return np.clip(1.0 - u * u, 0.0, 1.0) ** (0.5 + 0.4 * (1.0 - rounding))

    u = np.linspace(-1.0, 1.0, 41)
    x = cx + half * u
    taper = np.clip(1.0 - u * u, 0.0, 1.0)
    thickness = (1.0 + 0.35 * rounding) * (1.0 - 0.2 * opening)
    cupid_bow = (
        1.0 + 0.3 * np.exp(-(((np.abs(u) - 0.3) / 0.15) ** 2)) - 0.25 * np.exp(-((u / 0.1) ** 2))
    )
    upper_inner = cy - up * inner(u)
    lower_inner = cy + down * inner(u)
    upper_outer = upper_inner - style.upper_lip * thickness * taper**0.45 * cupid_bow
    lower_outer = lower_inner + style.lower_lip * thickness * taper**0.5
    lower_mid = lower_inner + 0.5 * (lower_outer - lower_inner)
    ut = np.linspace(-0.75, 0.75, 25)
    teeth_top = cy - up * inner(ut) - 1.0  # tucked under the upper lip
    # The incisors' biting edge is a gentle arc below the highest point of the opening.
    teeth_edge = cy - up + 1.0 + min(0.35 * gap, 3.5) * style.teeth * inner(ut / 0.75) ** 0.5
    teeth_bottom = np.maximum(teeth_edge, teeth_top)
    angle = np.linspace(0.0, 2.0 * np.pi, 25)
    tongue = np.stack(
        [cx + 0.55 * half * np.cos(angle), cy + down * (0.95 + 0.45 * np.sin(angle))], 1
    )

    def band(xs: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.stack([np.r_[xs, xs[::-1]], np.r_[top, bottom[::-1]]], 1)

    seam_x = cx + (half + 1.5) * u
    return {
        "upper_lip": band(x, upper_outer, upper_inner),
        "lower_lip": band(x, lower_inner, lower_outer),
        "lip_highlight": band(x[10:31], lower_mid[10:31] - 0.8, lower_mid[10:31] + 0.8),
        "cavity": band(x, upper_inner, lower_inner),
        "teeth": band(cx + half * ut, teeth_top, teeth_bottom),
        "tongue": tongue,
        "seam": np.stack([seam_x, upper_inner], 1),
    }


_SHIFT = 4
"""Sub-pixel bits for OpenCV drawing: outlines move smoothly, not in whole-pixel steps."""

_CAVITY_RGB = np.array([52.0, 18.0, 24.0], np.float32)
_TEETH_RGB = np.array([222.0, 214.0, 198.0], np.float32)
_TONGUE_RGB = np.array([135.0, 55.0, 62.0], np.float32)


def _fill(shape: tuple[int, int], polygon: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """Anti-aliased coverage (float32, HxWx1) of a polygon, optionally softened."""
    mask = np.zeros(shape, np.uint8)
    points = np.round(polygon * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [points], 255, cv2.LINE_AA, _SHIFT)
    coverage = mask.astype(np.float32) / 255.0
    if blur > 0:
        coverage = cv2.GaussianBlur(coverage, (0, 0), blur)
    return coverage[..., None]


def _blend(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return image + (colour - image) * alpha


def _render_mouth(patch: np.ndarray, mouth: np.ndarray, style: _MouthStyle) -> np.ndarray:
    """Draw lips, mouth opening, teeth and tongue into a copy of the photo's mouth patch.

    The jaw first drags the skin below the mouth down with the lower lip. The lips are the
    underlying skin tinted lip-red, so they keep the photo's lighting and grain; the upper lip
    is shaded (it faces down), the lower lip carries a highlight.
    """
    opening, width, rounding = (float(v) for v in mouth)
    drop = 0.75 * style.max_opening * opening
    h, w = patch.shape[:2]
    grid_x, grid_y = _patch_grid()
    moved = cv2.remap(
        patch,
        grid_x,
        grid_y - drop * _jaw_weight(),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    ).astype(np.float32)
    curves = _lip_curves(opening, width, rounding, style)
    tint = np.array(style.lip_tint, np.float32)
    out = _blend(moved, moved * tint * 0.8, _fill((h, w), curves["upper_lip"], 0.8))
    out = _blend(out, moved * tint, _fill((h, w), curves["lower_lip"], 0.8))
    out = _blend(out, np.minimum(out * 1.12, 255.0), _fill((h, w), curves["lip_highlight"], 1.0))
    if opening > 0.02:
        cavity = _fill((h, w), curves["cavity"], 0.4)
        out = _blend(out, _CAVITY_RGB, cavity)
        out = _blend(out, _TONGUE_RGB, _fill((h, w), curves["tongue"], 1.5) * cavity * 0.6)
        out = _blend(out, _TEETH_RGB, _fill((h, w), curves["teeth"], 0.5) * cavity)
    seam = np.zeros((h, w), np.uint8)
    points = np.round(curves["seam"] * (1 << _SHIFT)).astype(np.int32)
    cv2.polylines(seam, [points], False, 255, 1, cv2.LINE_AA, _SHIFT)
    out = _blend(out, out * 0.35, 0.6 * seam.astype(np.float32)[..., None] / 255.0)
    return np.clip(out, 0, 255).astype(np.uint8)


def _head_motion(rng: np.random.Generator, n: int, fps: float, amount: float) -> np.ndarray:
    """Per-frame (dx, dy, rotation, log-scale) of the head: slow sway plus tiny jitter.

    Translations are in face-box widths, rotation in degrees. Each component is a sum of three
    slow sinusoids (0.05-0.8 Hz) so motion is smooth, never a random walk that wanders off.
    """
    t = np.arange(n) / fps
    limits = np.array([0.03, 0.025, 3.0, 0.02]) * amount
    motion = np.zeros((n, 4))
    for k, limit in enumerate(limits):
        for _ in range(3):
            frequency = rng.uniform(0.05, 0.8)
            motion[:, k] += np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi)) / 3
        motion[:, k] = limit * (motion[:, k] + 0.08 * rng.standard_normal(n))
    return motion


def _frame_affine(look: _Look, motion: np.ndarray) -> tuple[np.ndarray, float]:
    """Photo-to-frame affine matrix for one frame, and the scale it applies."""
    dx, dy, angle, log_scale = motion
    scale = look.scale * float(np.exp(log_scale))
    box_x, box_y, box_w, box_h = _FACE_BOX
    anchor = (box_x + box_w / 2, box_y + box_h / 2)
    affine = cv2.getRotationMatrix2D(anchor, float(angle), scale)
    if look.flip:  # mirror the photo about the face's vertical centre line first
        affine[:, 2] += 2.0 * anchor[0] * affine[:, 0]
        affine[:, 0] *= -1.0
    side = look.scale * box_w
    target = (look.centre[0] + dx * side, look.centre[1] + dy * side)
    affine[:, 2] += np.array(target) - anchor
    return affine, scale


def _colour_lut(look: _Look, flicker: float) -> np.ndarray:
    """Per-channel lookup table: gamma, contrast, brightness, white balance, flicker."""
    levels = (np.arange(256) / 255.0) ** look.gamma * 255.0
    levels = (levels - 128.0) * look.contrast + 128.0 + look.bias
    lut = np.stack([levels * g * flicker for g in look.gain], axis=-1)
    return np.clip(lut, 0, 255).astype(np.uint8).reshape(1, 256, 3)


def render_frames(
    rng: np.random.Generator,
    tracks: np.ndarray,
    fps: float = 25.0,
    size: tuple[int, int] = (256, 256),
    background: str | None = None,
    flip: bool | None = None,
    head_motion: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the talking face for mouth ``tracks`` (from :func:`articulation_tracks`).

    ``size`` is (width, height). The face box takes 47-70 % of the shorter side (at 256x256 the
    face is over 100 px wide, enough for a Haar detector), with a random position, a slow head
    sway scaled by ``head_motion`` (0 for a still head), colour/brightness/contrast jitter, mild
    blur and sensor noise. ``background`` is ``"photo"``, ``"plain"``, ``"noise"`` or None
    (random); ``flip`` mirrors the face (None: random).

    Returns RGB frames ``(N, height, width, 3)`` uint8 and face boxes ``(N, 4)`` int32 as
    (x, y, w, h) in frame pixels: the S3FD-style box around the moving face.
    """
    width, height = size
    look = _draw_look(rng, size, background, flip)
    canvas = _canvas(rng, look.background)
    motion = _head_motion(rng, len(tracks), fps, head_motion)
    flicker = 1.0 + 0.01 * rng.standard_normal(len(tracks))
    noise = [rng.normal(0.0, look.noise_sigma, (height, width, 3)) for _ in range(3)]
    noise_pairs = [
        (np.clip(z, 0, 255).astype(np.uint8), np.clip(-z, 0, 255).astype(np.uint8)) for z in noise
    ]
    x0, y0, x1, y1 = _PATCH
    base_patch = canvas[y0:y1, x0:x1].copy()
    frames = np.empty((len(tracks), height, width, 3), np.uint8)
    boxes = np.empty((len(tracks), 4), np.int32)
    box_x, box_y, box_w, box_h = _FACE_BOX
    anchor = np.array([box_x + box_w / 2, box_y + box_h / 2, 1.0])
    for i, mouth in enumerate(tracks):
        canvas[y0:y1, x0:x1] = _render_mouth(base_patch, mouth, look.mouth)
        affine, scale = _frame_affine(look, motion[i])
        frame = cv2.warpAffine(
            canvas,
            affine,
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        frame = cv2.LUT(frame, _colour_lut(look, float(flicker[i])))
        if look.blur_sigma > 0:
            frame = cv2.GaussianBlur(frame, (0, 0), look.blur_sigma)
        positive, negative = noise_pairs[int(rng.integers(len(noise_pairs)))]
        frames[i] = cv2.subtract(cv2.add(frame, positive), negative)
        centre_x, centre_y = affine @ anchor
        box_width, box_height = scale * box_w, scale * box_h
        boxes[i] = np.round(
            [centre_x - box_width / 2, centre_y - box_height / 2, box_width, box_height]
        )
    return frames, boxes


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

    @property
    def duration_s(self) -> float:
        """Length of the clip in seconds."""
        return len(self.frames) / self.fps


def make_talking_head(
    seed: int,
    duration_s: float = 6.0,
    fps: float = 25.0,
    sample_rate: int = DATASET_SAMPLE_RATE,
    audio_delay_ms: float = 0.0,
    size: tuple[int, int] = (256, 256),
    lip_lead_ms: float = 0.0,
    background: str | None = None,
    flip: bool | None = None,
    head_motion: float = 1.0,
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
    """
    n_frames = round(duration_s * fps)
    if n_frames < 1:
        raise ValueError(f"duration_s must cover at least one frame, got {duration_s}.")
    n_samples = round(n_frames * sample_rate / fps)
    timeline_rng, voice_rng, face_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    syllables = speech_timeline(timeline_rng, n_frames / fps)
    audio = synthesize_voice(voice_rng, syllables, n_samples, sample_rate)
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
    )


def write_clip_folder(
    clip: TalkingHead, out_dir: str | Path, crop_fn: CropFn | None = None
) -> Path:
    """Write ``clip`` in the authors' dataset layout and return the folder.

    The folder gets ``0.jpg``, ``1.jpg``, ... (96x96 BGR face crops, one per frame) and
    ``audio.wav`` (16 kHz mono PCM_16, resampled if the clip has another rate). Crops use the
    clip's known face boxes via :func:`crop_face`, unless ``crop_fn(frame_bgr, box)`` is given,
    e.g. the project's detector-based cropper; its crops are resized to 96x96 if needed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    crop = crop_fn or crop_face
    for index, (frame, box) in enumerate(zip(clip.frames, clip.face_boxes, strict=True)):
        face = crop(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), box)
        if face.shape[:2] != (CROP_SIZE, CROP_SIZE):
            face = cv2.resize(face, (CROP_SIZE, CROP_SIZE))
        if not cv2.imwrite(str(out / f"{index}.jpg"), face):
            raise OSError(f"Could not write {out / f'{index}.jpg'}.")
    audio = clip.audio
    if clip.sample_rate != DATASET_SAMPLE_RATE:
        divisor = np.gcd(clip.sample_rate, DATASET_SAMPLE_RATE)
        audio = signal.resample_poly(
            audio, DATASET_SAMPLE_RATE // divisor, clip.sample_rate // divisor
        ).astype(np.float32)
    sf.write(out / "audio.wav", audio, DATASET_SAMPLE_RATE, subtype="PCM_16")
    return out


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


def _split_counts(n_clips: int, fractions: Sequence[float]) -> list[int]:
    """Clips per split: proportional, every split with a positive share gets at least one clip
    when there are enough clips, and the counts always add up to ``n_clips``."""
    weights = np.asarray(fractions, dtype=np.float64)
    if weights.ndim != 1 or len(weights) == 0 or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"Split fractions must be non-negative and not all zero: {fractions}.")
    ideal = n_clips * weights / weights.sum()
    counts = np.floor(ideal).astype(int)
    wanted = weights > 0
    if n_clips >= int(wanted.sum()):
        counts[wanted & (counts == 0)] = 1
    while counts.sum() > n_clips:  # the minimum-one rule overshot: take from the biggest split
        counts[int(np.argmax(counts))] -= 1
    while counts.sum() < n_clips:  # rounding left clips over: give them where most is missing
        counts[int(np.argmax(np.where(wanted, ideal - counts, -np.inf)))] += 1
    return [int(c) for c in counts]


def write_synthetic_dataset(
    out_dir: str | Path,
    n_clips: int,
    seed: int,
    duration_s: float = 4.0,
    splits: Sequence[tuple[str, float]] = (("train", 0.8), ("val", 0.1), ("test", 0.1)),
    **clip_options: object,
) -> Path:
    """Write ``n_clips`` synthetic talking heads as a training data root and return it.

    The layout is what the authors' training code (and :mod:`lipsync_fix.datasets`) reads:
    ``clips/00000/0.jpg ... audio.wav`` per clip and ``filelists/<split>.txt`` listing clip
    folders relative to ``out_dir``, plus ``dataset.json`` recording how it was made. Clip ``i``
    is made from a seed derived from ``(seed, i)`` alone, so a bigger dataset with the same
    seed starts with the same clips; clips are assigned to splits in order, by the given
    fractions (e.g. 80/10/10), with at least one clip per split whenever ``n_clips`` allows.
    ``clip_options`` are passed to :func:`make_talking_head` (e.g. ``size``, ``head_motion``).
    Existing clip folders are replaced, so a rewrite never leaves stale frames behind.
    """
    import json
    import shutil

    if n_clips < 1:
        raise ValueError(f"n_clips must be at least 1, got {n_clips}.")
    names = [name for name, _ in splits]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"Split names must be distinct and non-empty: {names}.")
    root = Path(out_dir)
    (root / "filelists").mkdir(parents=True, exist_ok=True)
    counts = _split_counts(n_clips, [fraction for _, fraction in splits])
    assignment = [name for name, count in zip(names, counts, strict=True) for _ in range(count)]
    clips = []
    for index, split in enumerate(assignment):
        clip_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        rel = f"clips/{index:05d}"
        folder = root / rel
        if folder.exists():
            shutil.rmtree(folder)
        head = make_talking_head(clip_seed, duration_s=duration_s, **clip_options)  # type: ignore[arg-type]
        write_clip_folder(head, folder)
        clips.append({"path": rel, "seed": clip_seed, "split": split, "frames": len(head.frames)})
    for name in names:
        lines = [c["path"] for c in clips if c["split"] == name]
        (root / "filelists" / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))
    manifest = {
        "generator": "lipsync_fix.synth.write_synthetic_dataset",
        "seed": seed,
        "n_clips": n_clips,
        "duration_s": duration_s,
        "clip_options": {k: repr(v) for k, v in clip_options.items()},
        "clips": clips,
    }
    (root / "dataset.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return root
