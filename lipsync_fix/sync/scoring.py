"""Score matrices: every video window of a clip against audio windows at shifts -S..+S.

Row ``v`` of the matrix is the video window starting at frame ``v`` (T = 5 frames, or the
``window_frames`` a "Var" model was trained for); column ``c`` pairs it with the audio
window starting at frame ``v + c - S`` (positive shift = audio taken later than the video).
Columns that fall outside the clip hold :data:`OUT_OF_RANGE` (-1000), as in the authors'
evaluation code.

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

The scorer reads windows through a :class:`WindowSource`, so it scores a whole clip held
in memory (evaluation) and a few seconds cut out of a long video (the main job) with the
same code; any model following :class:`~lipsync_fix.models.scorer.SyncScorer` works.
A caller may ask for some shifts only (``shifts``): the other in-range cells hold
:data:`NOT_SCORED`, and only the audio windows those shifts reach are encoded; a
:class:`VideoCache` kept across two calls on the same rows (a focused search widened)
encodes their video windows once.
Precision: ``ScoreOptions.autocast`` runs the model under bf16 autocast (about twice the
speed on CPUs with AVX512-BF16 and on GPUs); float32 stays the reference for evaluation
and the golden tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from lipsync_fix.compute import autocast
from lipsync_fix.features.constants import FRAMES_PER_WINDOW, SAMPLES_PER_FRAME
from lipsync_fix.features.inputs import WAV2LIP, InputRecipe, recipe_for

OUT_OF_RANGE = -1000.0
NOT_SCORED = float("nan")
"""A cell of a shift that was in range but not asked for (a focused search scores only
the shifts near where the offset is predicted); what reads a matrix skips it."""
DEFAULT_MAX_SHIFT = 15  # frames at 25 fps: +-0.6 s, the paper's search range

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ScoreOptions:
    """How to compute a score matrix; :meth:`for_device` sizes the batches for a GPU."""

    max_shift: int = DEFAULT_MAX_SHIFT
    mode: str = "cached"  # or "reference"
    pair_batch: int = 512  # (window, shift) pairs per cross-modal batch
    encoder_batch: int = 64  # windows per encoder batch
    row_block: int = 1024  # rows per block: bounds memory on long clips
    edge_rule: str = "reference"  # or "strict"
    device: str | torch.device = "cpu"
    autocast: torch.dtype | None = None  # bf16 autocast, or None for float32
    window_frames: int | None = None  # T; None: the model's own (5 for the paper's)

    def for_device(self) -> ScoreOptions:
        """These options with larger batches on a GPU, where a batch of 512 pairs leaves it
        mostly idle (a new object: options are values)."""
        if torch.device(self.device).type != "cuda":
            return self
        return replace(self, pair_batch=max(self.pair_batch, 8192),
                       encoder_batch=max(self.encoder_batch, 1024),
                       row_block=max(self.row_block, 4096))


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


@dataclass
class WindowSource:
    """Model inputs of a stretch of a clip, addressed by global window start.

    ``frames`` are the stored per-frame crops of frames ``frame_offset ..`` (uint8, or
    float 0..1 as (N, 3, h, w)); ``audio`` the audio features of the recipe whose column 0
    is feature frame ``audio_offset`` of the clip. ``n_rows`` is the number of windows of
    the whole clip (it decides which columns fall outside the clip).
    """

    recipe: InputRecipe
    frames: np.ndarray | Tensor
    audio: Tensor
    n_rows: int
    frame_offset: int = 0
    audio_offset: int = 0

    def video(self, starts: np.ndarray, window_frames: int) -> Tensor:
        return self.recipe.video_windows(
            self.frames, np.asarray(starts) - self.frame_offset, window_frames)

    def audio_windows(self, starts: np.ndarray, window_frames: int) -> Tensor:
        return self.recipe.audio_windows(self.audio, np.asarray(starts), window_frames,
                                         self.audio_offset)


def clip_source(frames: Tensor | np.ndarray, mel: Tensor, n_samples: int,
                window_frames_: int = FRAMES_PER_WINDOW,
                recipe: InputRecipe = WAV2LIP) -> WindowSource:
    """A whole clip held in memory: per-frame crops and the whole clip's features."""
    return WindowSource(recipe, frames, mel,
                        num_windows(len(frames), n_samples, window_frames_))


@torch.no_grad()
def score_matrix(
    model: nn.Module,
    frames: Tensor,
    mel: Tensor,
    n_samples: int,
    options: ScoreOptions | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Score a whole clip: per-frame lower halves (N, 3, 48, 96) and its whole-clip mel
    (80, M). ``frames`` are uint8 BGR crops or floats already in the values of the model's
    input recipe (:func:`~lipsync_fix.features.inputs.recipe_for`).

    ``n_samples`` is the clip's audio length at 16 kHz (it bounds the windows as in the
    reference). Returns float32 (R, 2S+1) with R = :func:`num_windows`.
    """
    opts = options or ScoreOptions()
    source = clip_source(frames, mel, n_samples, window_frames(model, opts),
                         recipe_for(model))
    return score_rows(model, source, np.arange(source.n_rows), opts, progress)


class VideoCache:
    """Video encoder outputs by window start, for rows scored more than once (a focused
    search that widens pays only for the audio side the second time). Meant for the rows
    of one segment: it holds what it is given until dropped."""

    def __init__(self) -> None:
        self.tokens: dict[int, Tensor] = {}

    def get(self, rows: np.ndarray, encode: Callable[[np.ndarray], Tensor]) -> Tensor:
        missing = np.array([r for r in rows.tolist() if r not in self.tokens], np.int64)
        if len(missing):
            for r, token in zip(missing.tolist(), encode(missing), strict=True):
                self.tokens[r] = token
        return torch.stack([self.tokens[r] for r in rows.tolist()])


def shift_mask(shifts: np.ndarray | range | None, max_shift: int) -> np.ndarray:
    """Which of the columns -S..+S ``shifts`` (frames; None: all) asks for."""
    if shifts is None:
        return np.ones(2 * max_shift + 1, bool)
    wanted = np.asarray(list(shifts), dtype=np.int64)
    if len(wanted) and (wanted.min() < -max_shift or wanted.max() > max_shift):
        raise ValueError(f"shifts must lie in -{max_shift}..{max_shift}")
    mask = np.zeros(2 * max_shift + 1, bool)
    mask[wanted + max_shift] = True
    return mask


@torch.no_grad()
def score_rows(
    model: nn.Module,
    source: WindowSource,
    rows: np.ndarray,
    options: ScoreOptions | None = None,
    progress: Progress | None = None,
    shifts: np.ndarray | range | None = None,
    video_cache: VideoCache | None = None,
) -> np.ndarray:
    """Rows ``rows`` (global window starts, ascending) of the clip's score matrix; with
    ``shifts`` (frames), only those columns are scored, the others in range hold
    :data:`NOT_SCORED`."""
    opts = options or ScoreOptions()
    rows = np.asarray(rows, dtype=np.int64)
    wanted = shift_mask(shifts, opts.max_shift)
    if len(rows) == 0:
        return np.zeros((0, 2 * opts.max_shift + 1), dtype=np.float32)
    model.eval()
    device = torch.device(opts.device)
    with autocast(device, opts.autocast):
        if opts.mode == "reference":
            out = _reference_rows(model, source, rows, opts, progress)
            out[(out != OUT_OF_RANGE) & ~wanted[None, :]] = NOT_SCORED
            return out
        if opts.mode == "cached":
            return _cached_rows(model, source, rows, opts, progress, wanted, video_cache)
    raise ValueError(f"unknown scoring mode {opts.mode!r}; use 'cached' or 'reference'")


def scored_pairs(scores: np.ndarray) -> int:
    """How many (window, shift) pairs of a score matrix were scored."""
    return int((np.isfinite(scores) & (scores != OUT_OF_RANGE)).sum())


def pairs_in_range(n_rows: int, max_shift: int) -> int:
    """How many (window, shift) pairs a clip of ``n_rows`` windows has in range (strict
    edge rule): what scoring every window against every shift costs."""
    v = np.arange(n_rows, dtype=np.int64)
    return int((np.minimum(max_shift, v) + np.minimum(max_shift, n_rows - 1 - v) + 1).sum())


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
    """The authors' loop for the given rows of a whole clip's matrix (see :func:`score_rows`
    with ``mode="reference"``)."""
    opts = options or ScoreOptions()
    source = clip_source(frames, mel, n_samples, window_frames(model, opts),
                         recipe_for(model))
    ref = ScoreOptions(**{**opts.__dict__, "mode": "reference"})
    return score_rows(model, source, np.asarray(rows), ref, progress)


def _reference_rows(model, source: WindowSource, rows, opts, progress) -> np.ndarray:
    """Per row, the video window repeated 2S+1 times against the zero-padded stack of
    audio windows, through the whole model."""
    s, t = opts.max_shift, window_frames(model, opts)
    device = torch.device(opts.device)
    out = np.empty((len(rows), 2 * s + 1), dtype=np.float32)
    for i, v in enumerate(rows):
        shifts = v + np.arange(-s, s + 1)
        inside = (shifts >= 0) & (shifts < source.n_rows)
        audio = source.audio_windows(np.clip(shifts, 0, max(0, source.n_rows - 1)), t)
        audio[~torch.as_tensor(inside)] = 0.0  # the reference's all-zero pad windows
        window = source.video(np.array([v]), t).to(device)
        scores = model(window.expand(2 * s + 1, *window.shape[1:]), audio.to(device))
        out[i] = scores.float().cpu().numpy()
        if progress:
            progress(i + 1, len(rows))
    out[~valid_columns(rows, source.n_rows, s, opts.edge_rule)] = OUT_OF_RANGE
    return out


def _encode(model: nn.Module, kind: str, source: WindowSource, idx: np.ndarray, opts) -> Tensor:
    """Encoder outputs for the windows starting at ``idx``, in batches."""
    t = window_frames(model, opts)
    device = torch.device(opts.device)
    chunks = []
    for i in range(0, len(idx), opts.encoder_batch):
        part = idx[i : i + opts.encoder_batch]
        if kind == "video":
            chunks.append(model.encode_video(source.video(part, t).to(device)))
        else:
            chunks.append(model.encode_audio(source.audio_windows(part, t).to(device)))
    return torch.cat(chunks)


def _cached_rows(model, source: WindowSource, rows: np.ndarray, opts, progress,
                 wanted: np.ndarray, video_cache: VideoCache | None) -> np.ndarray:
    s, n_rows = opts.max_shift, source.n_rows
    device = torch.device(opts.device)
    out = np.full((len(rows), 2 * s + 1), OUT_OF_RANGE, dtype=np.float32)
    if not wanted.any():
        out[valid_columns(rows, n_rows, s, opts.edge_rule)] = NOT_SCORED
        return out
    audio_cache = _WindowCache(lambda idx: _encode(model, "audio", source, idx, opts))
    lowest, highest = (int(c) - s for c in np.nonzero(wanted)[0][[0, -1]])
    pad_token = None
    for b0 in range(0, len(rows), opts.row_block):
        block = rows[b0 : b0 + opts.row_block]
        in_range = valid_columns(block, n_rows, s, opts.edge_rule)
        valid = in_range & wanted[None, :]
        out[b0 : b0 + len(block)][in_range & ~valid] = NOT_SCORED
        if video_cache is None:
            video_tok = _encode(model, "video", source, block, opts)
        else:
            video_tok = video_cache.get(
                block, lambda idx: _encode(model, "video", source, idx, opts))
        audio_lo = min(max(0, int(block[0]) + lowest), n_rows - 1)
        audio_hi = max(min(n_rows, int(block[-1]) + highest + 1), audio_lo + 1)
        audio_tok = audio_cache.get(audio_lo, audio_hi)
        pair_row, pair_col = np.nonzero(valid)
        pair_audio = block[pair_row] + pair_col - s
        outside = (pair_audio < 0) | (pair_audio >= n_rows)
        if outside.any():  # the reference edge rule scores all-zero pad windows
            if pad_token is None:
                silence = torch.zeros_like(source.audio_windows(np.array([block[0]]),
                                                                window_frames(model, opts)))
                pad_token = model.encode_audio(silence.to(device))
            audio_tok = torch.cat([audio_tok, pad_token])
        pair_audio = np.where(outside, audio_tok.shape[0] - 1, pair_audio - audio_lo)
        score_pairs = model.pair_scorer(video_tok, audio_tok)
        out_rows = b0 + pair_row
        for i in range(0, len(pair_row), opts.pair_batch):
            sel = slice(i, i + opts.pair_batch)
            vi = torch.as_tensor(pair_row[sel], device=device)
            ai = torch.as_tensor(pair_audio[sel], device=device)
            out[out_rows[sel], pair_col[sel]] = score_pairs(vi, ai).float().cpu().numpy()
        if progress:
            progress(b0 + len(block), len(rows))
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
