"""Audio features: the log-mel spectrogram VocaLiST was trained on, and its windows.

Everything that knows the STFT parameters, the mel filterbank or the mel/video frame
alignment lives here. Decoding a media file to 16 kHz mono float is done by
:func:`lipsync_fix.media.decode_audio`; this module starts from samples.

The recipe (Wav2Lip's ``audio.py``, reused by VocaLiST): STFT with n_fft 800, hop 200
(80 frames/s at 16 kHz), Hann window, centred with reflect padding; magnitude; an 80-band
Slaney mel filterbank over 55..7600 Hz; ``20*log10(max(mel, 1e-5)) - 20`` dB; then a
symmetric normalisation to [-4, 4] with a -100 dB floor.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from lipsync_fix.features.constants import (
    FRAMES_PER_WINDOW,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    VIDEO_FPS,
)

N_FFT = 800
HOP_LENGTH = 200
WIN_LENGTH = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
MEL_FPS = SAMPLE_RATE / HOP_LENGTH  # 80 mel frames per second
CHUNK_SAMPLES = FRAMES_PER_WINDOW * SAMPLES_PER_FRAME  # 3200 samples = 0.2 s
MEL_FRAMES_PER_WINDOW = 16  # mel frames of one 5-frame window

_REF_LEVEL_DB = 20.0
_MIN_LEVEL_DB = -100.0
_MAX_ABS = 4.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.atleast_1d(np.asarray(hz, dtype=np.float64))
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log_part = hz >= min_log_hz
    mels[log_part] = min_log_mel + np.log(hz[log_part] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.atleast_1d(np.asarray(mels, dtype=np.float64))
    f_sp = 200.0 / 3
    hz = f_sp * mels
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log_part = mels >= min_log_mel
    hz[log_part] = min_log_hz * np.exp(logstep * (mels[log_part] - min_log_mel))
    return hz


@lru_cache(maxsize=4)
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
    fmin: float = FMIN, fmax: float = FMAX,
) -> np.ndarray:
    """Slaney-normalised triangular filters, shape (n_fft // 2 + 1, n_mels), float32.

    Equal to ``librosa.filters.mel(..., htk=False, norm="slaney").T``; computed here so
    the package needs neither librosa nor torchaudio.
    """
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(fmin)[0], _hz_to_mel(fmax)[0], n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.T.astype(np.float32)


def log_mel_spectrogram(wav: np.ndarray | Tensor) -> Tensor:
    """16 kHz mono samples (n,) -> normalised log-mel (80, 1 + n // 200), float32.

    This is the whole-clip recipe used at evaluation: compute once, then slice windows
    with :meth:`lipsync_fix.features.inputs.InputRecipe.audio_windows`.
    """
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    if x.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {tuple(x.shape)}")
    spec = torch.stft(
        x, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
        window=torch.hann_window(WIN_LENGTH), center=True, pad_mode="reflect",
        return_complex=True,
    ).abs()
    mel = torch.from_numpy(mel_filterbank()).T @ spec
    db = 20.0 * torch.log10(torch.clamp(mel, min=1e-5)) - _REF_LEVEL_DB
    norm = 2 * _MAX_ABS * (db - _MIN_LEVEL_DB) / (-_MIN_LEVEL_DB) - _MAX_ABS
    return torch.clamp(norm, -_MAX_ABS, _MAX_ABS)


def chunk_mel(wav: np.ndarray | Tensor, start_sample: int) -> Tensor:
    """The training recipe: mel of the 3200-sample chunk at ``start_sample``, last frame
    dropped -> (1, 80, 16).

    Training windows are cut from the waveform before the STFT, so their edge frames see
    reflect padding rather than neighbouring audio; the evaluation recipe differs here,
    and both are kept because checkpoints were trained with this one.
    """
    x = np.asarray(wav, dtype=np.float32)[start_sample : start_sample + CHUNK_SAMPLES]
    if len(x) != CHUNK_SAMPLES:
        raise ValueError(f"chunk at sample {start_sample} runs past the end of the audio")
    return log_mel_spectrogram(x)[:, :MEL_FRAMES_PER_WINDOW].unsqueeze(0)


def mel_frame_of(video_frame: int, fps: float = VIDEO_FPS) -> int:
    """First mel frame of the window that starts at ``video_frame`` (the reference's
    ``int(80 * v / 25)``)."""
    return int(MEL_FPS * (video_frame / fps))


def mel_frames_for(window_frames: int) -> int:
    """Mel frames matching a ``window_frames``-frame video window: 16 for 5 frames, 32 for
    10, 80 for 25 (the chunk of ``640 * window_frames`` samples, one STFT frame per 200)."""
    return window_frames * SAMPLES_PER_FRAME // HOP_LENGTH


def chunk_rms(wav: np.ndarray, start_sample: int, length: int = CHUNK_SAMPLES) -> float:
    """RMS of a chunk as the reference's training sampler computes it.

    Quirk kept on purpose: the reference reports an all-zero chunk's RMS as 1.0, so its
    silence rule (re-draw negatives against quiet positives) never fires on digital
    silence. Training on the authors' data depends on that, so it is reproduced.
    """
    x = np.asarray(wav[start_sample : start_sample + length], dtype=np.float64)
    if not np.any(x):
        return 1.0
    return float(np.sqrt(np.mean(x**2)))
