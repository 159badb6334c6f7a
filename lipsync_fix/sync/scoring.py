"""Score matrices: every video window of a clip against audio windows at shifts -S..+S.

Row ``v`` of the matrix is the video window starting at frame ``v`` (5 frames, or the
``window_frames`` a "Var" model was trained for); column ``c``
pairs it with the audio window starting at frame ``v + c - S`` (positive shift = audio
taken later than the video). Columns that fall outside the clip hold
:data:`OUT_OF_RANGE` (-1000), as in the authors' evaluation code.

Edge rule: the authors pad the stack of mel windows with S all-zero windows on each side
and overwrite columns with an if/elif: rows ``v < S`` lose the columns left of the clip,
rows ``v >= max(S, R - S)`` lose those right of it. On a clip with fewer than 2S windows
the rows in between keep columns that point at a zero pad window, and those pairs are
scored against an all-zero mel. ``edge_rule="reference"`` reproduces that (the golden
data and the paper's figures depend on it); ``"strict"`` masks every out-of-clip column.

Two ways to fill it:

* ``reference``: what the authors' code does, the whole model once per (window, shift)
  pair, zero-padded mel windows included. Kept for equivalence tests and benchmarks.
* ``cached`` (default): the encoders see one modality each, so each video window and each
  audio window is encoded once; the keys/values of each window are projected once per
  layer; only the cross-modal query side runs per pair, batched across windows and
  shifts. Rows are processed in blocks so memory stays bounded on long clips.

Any model with ``encode_video``, ``encode_audio`` and ``pair_scorer`` works: VocaLiST
(logits) and the SyncNet* baseline (cosine similarities).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lipsync_fix.features.constants import FRAMES_PER_WINDOW, SAMPLES_PER_FRAME
from lipsync_fix.features.mel import mel_frames_for, mel_windows
from lipsync_fix.features.visual import video_windows

OUT_OF_RANGE = -1000.0
DEFAULT_MAX_SHIFT = 15  # frames at 25 fps: +-0.6 s, the paper's search range

Progress = Callable[[int, int], None]


@dataclass
class ScoreOptions:
    """How to compute a score matrix; the defaults suit a CPU, raise ``pair_batch`` on GPU."""

    max_shift: int = DEFAULT_MAX_SHIFT
    mode: str = "cached"  # or "reference"
    pair_batch: int = 512  # (window, shift) pairs per cross-modal batch
    encoder_batch: int = 64  # windows per encoder batch
    row_block: int = 1024  # rows per block: bounds memory on long clips
    edge_rule: str = "reference"  # or "strict"
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.float32
    window_frames: int | None = None  # T; None: the model's own (5 for the paper's)


def num_windows(n_frames: int, n_samples: int, window_frames: int = FRAMES_PER_WINDOW) -> int:
    """The reference's ``lastframe``: how many ``window_frames``-frame windows a clip yields
    (one fewer than fit, as the authors' loop stops early)."""
    return max(0, min(n_frames, n_samples // SAMPLES_PER_FRAME) - window_frames)


def window_frames(model: nn.Module, options: ScoreOptions) -> int:
    """T, frames per scored window: the options' override, else what the model was trained
    on."""
    return int(options.window_frames or getattr(model, "window_frames", FRAMES_PER_WINDOW))


def valid_columns(
    rows: np.ndarray, n_rows: int, max_shift: int, edge_rule: str = "reference"
) -> np.ndarray:
    """Boolean (len(rows), 2S+1): which columns get a score (see the edge rule above)."""
    rows = np.asarray(rows)[:, None]
    audio = rows + np.arange(-max_shift, max_shift + 1)[None, :]
    if edge_rule == "strict":
        return (audio >= 0) & (audio < n_rows)
    if edge_rule != "reference":
        raise ValueError(f"unknown edge rule {edge_rule!r}; use 'reference' or 'strict'")
    left_masked = (rows < max_shift) & (audio < 0)
    right_masked = (rows >= max_shift) & (rows >= n_rows - max_shift) & (audio >= n_rows)
    return ~(left_masked | right_masked)


@torch.no_grad()
def score_matrix(
    model: nn.Module,
    frames: Tensor,
    mel: Tensor,
    n_samples: int,
    options: ScoreOptions | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Score a clip: per-frame lower halves (N, 3, 48, 96) and its whole-clip mel (80, M).

    ``n_samples`` is the clip's audio length at 16 kHz (it bounds the windows as in the
    reference). Returns float32 (R, 2S+1) with R = :func:`num_windows`.
    """
    opts = options or ScoreOptions()
    n_rows = num_windows(frames.shape[0], n_samples, window_frames(model, opts))
    if n_rows == 0:
        return np.zeros((0, 2 * opts.max_shift + 1), dtype=np.float32)
    model.eval()
    if opts.mode == "reference":
        return reference_rows(model, frames, mel, n_samples, range(n_rows), opts, progress)
    if opts.mode == "cached":
        return _cached_matrix(model, frames, mel, n_rows, opts, progress)
    raise ValueError(f"unknown scoring mode {opts.mode!r}; use 'cached' or 'reference'")


@torch.no_grad()
def reference_rows(
    model: nn.Module,
    frames: Tensor,
    mel: Tensor,
    n_samples: int,
    rows: range,
    options: ScoreOptions | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """The authors' loop for the given rows of the clip's matrix: per row, the video
    window repeated 2S+1 times against the zero-padded stack of mel windows."""
    opts = options or ScoreOptions()
    model.eval()
    s, t = opts.max_shift, window_frames(model, opts)
    n_rows = num_windows(frames.shape[0], n_samples, t)
    mels = mel_windows(mel, np.arange(n_rows), mel_frames_for(t))
    pad = torch.zeros(s, *mels.shape[1:])
    padded = torch.cat([pad, mels, pad])
    out = np.empty((len(rows), 2 * s + 1), dtype=np.float32)
    for i, v in enumerate(rows):
        window = video_windows(frames, [v], t).to(opts.device, opts.dtype)
        batch_mel = padded[v : v + 2 * s + 1].to(opts.device, opts.dtype)
        out[i] = model(window.expand(2 * s + 1, -1, -1, -1), batch_mel).float().cpu().numpy()
        if progress:
            progress(i + 1, len(rows))
    out[~valid_columns(np.asarray(rows), n_rows, s, opts.edge_rule)] = OUT_OF_RANGE
    return out


def _encode(model: nn.Module, kind: str, frames, mel, idx: np.ndarray, opts) -> Tensor:
    """Encoder tokens for the windows starting at ``idx``, in batches."""
    t = window_frames(model, opts)
    chunks = []
    for i in range(0, len(idx), opts.encoder_batch):
        part = idx[i : i + opts.encoder_batch]
        if kind == "video":
            x = video_windows(frames, part, t).to(opts.device, opts.dtype)
            chunks.append(model.encode_video(x))
        else:
            x = mel_windows(mel, part, mel_frames_for(t)).to(opts.device, opts.dtype)
            chunks.append(model.encode_audio(x))
    return torch.cat(chunks)


def _cached_matrix(model, frames, mel, n_rows, opts, progress) -> np.ndarray:
    s = opts.max_shift
    out = np.full((n_rows, 2 * s + 1), OUT_OF_RANGE, dtype=np.float32)
    audio_cache = _WindowCache(lambda idx: _encode(model, "audio", frames, mel, idx, opts))
    mel_len = mel_frames_for(window_frames(model, opts))
    silence = torch.zeros(1, 1, mel.shape[0], mel_len, device=opts.device, dtype=opts.dtype)
    pad_token = model.encode_audio(silence)  # the reference's zero-padded mel window
    for r0 in range(0, n_rows, opts.row_block):
        r1 = min(n_rows, r0 + opts.row_block)
        rows = np.arange(r0, r1)
        video_tok = _encode(model, "video", frames, mel, rows, opts)
        audio_lo, audio_hi = max(0, r0 - s), min(n_rows, r1 + s)
        audio_tok = torch.cat([audio_cache.get(audio_lo, audio_hi), pad_token])
        pad_index = audio_tok.shape[0] - 1
        score_pairs = model.pair_scorer(video_tok, audio_tok)

        pair_row, pair_col = np.nonzero(valid_columns(rows, n_rows, s, opts.edge_rule))
        pair_audio = rows[pair_row] + pair_col - s
        pair_audio = np.where(pair_audio < n_rows, pair_audio - audio_lo, pad_index)
        for i in range(0, len(pair_row), opts.pair_batch):
            vi = torch.as_tensor(pair_row[i : i + opts.pair_batch], device=opts.device)
            ai = torch.as_tensor(pair_audio[i : i + opts.pair_batch], device=opts.device)
            sel = slice(i, i + opts.pair_batch)
            out[rows[pair_row[sel]], pair_col[sel]] = score_pairs(vi, ai).float().cpu().numpy()
        if progress:
            progress(r1, n_rows)
    return out


class _WindowCache:
    """Encoder outputs for a sliding range of windows, so overlapping row blocks reuse
    the audio windows they share instead of encoding them twice."""

    def __init__(self, encode: Callable[[np.ndarray], Tensor]):
        self.encode = encode
        self.lo = self.hi = 0
        self.tokens: Tensor | None = None

    def get(self, lo: int, hi: int) -> Tensor:
        if self.tokens is None or lo >= self.hi or lo < self.lo:
            self.tokens = self.encode(np.arange(lo, hi))
        else:
            keep = self.tokens[lo - self.lo : min(hi, self.hi) - self.lo]
            new = self.encode(np.arange(self.hi, hi)) if hi > self.hi else keep[:0]
            self.tokens = torch.cat([keep, new])
        self.lo, self.hi = lo, hi
        return self.tokens
