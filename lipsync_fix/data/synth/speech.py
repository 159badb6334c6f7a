"""The synthetic voice: a random syllable timeline and a formant synthesiser that speaks it.

The voice is a glottal pulse train through vowel resonators, with noise bursts and
frication for consonants and pauses between phrases, so its short-time spectrum tells which
vowel or consonant is being produced at each instant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal

from lipsync_fix.features.constants import SAMPLE_RATE

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


VOWELS: dict[str, _Vowel] = {
    "a": _Vowel((750, 1200, 2500, 3500), (90, 110, 160, 250), 1.00, 1.00, 0.0, 1.00, 0.25),
    "e": _Vowel((500, 1800, 2500, 3500), (70, 100, 160, 250), 0.55, 1.08, 0.0, 0.85, 0.20),
    "i": _Vowel((300, 2250, 3000, 3700), (50, 100, 180, 250), 0.25, 1.15, 0.0, 0.70, 0.18),
    "o": _Vowel((550, 900, 2450, 3500), (80, 100, 160, 250), 0.65, 0.78, 0.7, 0.90, 0.14),
    "u": _Vowel((320, 850, 2300, 3400), (60, 100, 160, 250), 0.22, 0.68, 1.0, 0.70, 0.10),
    "@": _Vowel((520, 1450, 2500, 3500), (80, 110, 160, 250), 0.45, 0.95, 0.1, 0.80, 0.13),
}

REST_MOUTH = (0.0, 1.0, 0.0)
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


CONSONANTS: dict[str, _Consonant] = {
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
        return bool(self.consonant) and CONSONANTS[self.consonant].bilabial


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
    vowel = _weighted_choice(rng, VOWELS)
    consonant = "" if rng.random() < _NO_CONSONANT_PROB else _weighted_choice(rng, CONSONANTS)
    consonant_s = 0.0
    release_s = 0.0
    if consonant:
        spec = CONSONANTS[consonant]
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


def phrases(syllables: Sequence[Syllable]) -> list[list[Syllable]]:
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


def smoothstep(x: np.ndarray) -> np.ndarray:
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
    envelope[i0:i1] += gain * smoothstep((t - a) / ramp_in) * smoothstep((b - t) / ramp_out)


def _pitch_contour(
    rng: np.random.Generator, syllables: Sequence[Syllable], speaker: _Speaker, n: int, sr: int
) -> np.ndarray:
    """F0 in Hz per sample: phrase declination, pitch accents on stressed vowels, drift, jitter."""
    step = 0.005
    t = np.arange(int(np.ceil(n / sr / step)) + 2) * step
    log_f0 = np.zeros_like(t)
    for phrase in phrases(syllables):
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
    for name, vowel in VOWELS.items():
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

    for phrase in phrases(syllables):
        for index, syllable in enumerate(phrase):
            # Loudness declines over a phrase, as the speaker runs out of breath.
            gain = syllable.stress * (1.0 - 0.3 * index / max(1, len(phrase) - 1))
            vowel_ramp_in = 0.03
            if syllable.consonant:
                spec = CONSONANTS[syllable.consonant]
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
    sample_rate: int = SAMPLE_RATE,
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
