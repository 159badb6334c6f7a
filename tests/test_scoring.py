"""The cached scorer computes what the per-pair reference computes, in bounded blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsync_fix.features.mel import log_mel_spectrogram
from lipsync_fix.models.vocalist import PRESETS, VocaLiST
from lipsync_fix.sync.offsets import best_shifts, context_average
from lipsync_fix.sync.scoring import (
    OUT_OF_RANGE,
    ScoreOptions,
    VideoCache,
    clip_source,
    num_windows,
    pairs_in_range,
    score_matrix,
    score_rows,
    scored_pairs,
    shift_mask,
    valid_columns,
)


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    model = VocaLiST(PRESETS["tiny"]).eval()
    rng = np.random.default_rng(0)
    n_frames = 60
    frames = torch.from_numpy(rng.uniform(0, 1, (n_frames, 3, 48, 96)).astype(np.float32))
    wav = (0.3 * rng.standard_normal(n_frames * 640)).astype(np.float32)
    return model, frames, log_mel_spectrogram(wav), len(wav)


@pytest.mark.parametrize(
    ("edge_rule", "max_shift", "n_frames"),
    [("reference", 3, 60), ("strict", 15, 30), ("reference", 15, 30), ("reference", 50, 16)],
)
def test_cached_equals_reference(tiny_clip, edge_rule, max_shift, n_frames):
    """Includes a 2 s search range on a clip shorter than it (pad columns scored)."""
    model, frames, mel, n = tiny_clip
    frames, n = frames[:n_frames], min(n, n_frames * 640)
    ref = score_matrix(model, frames, mel, n, ScoreOptions(mode="reference",
                                                           max_shift=max_shift,
                                                           edge_rule=edge_rule))
    cached = score_matrix(model, frames, mel, n, ScoreOptions(max_shift=max_shift,
                                                              edge_rule=edge_rule,
                                                              row_block=7, pair_batch=37))
    assert ref.shape == cached.shape == (n_frames - 5, 2 * max_shift + 1)
    np.testing.assert_array_equal(ref == OUT_OF_RANGE, cached == OUT_OF_RANGE)
    assert np.abs(ref - cached).max() < 1e-4


def test_block_size_does_not_change_scores(tiny_clip):
    model, frames, mel, n = tiny_clip
    whole = score_matrix(model, frames, mel, n, ScoreOptions(row_block=10_000))
    blocks = score_matrix(model, frames, mel, n, ScoreOptions(row_block=4, pair_batch=11))
    assert np.abs(whole - blocks).max() < 1e-5


def test_num_windows_follows_reference():
    assert num_windows(32, 20480) == 27  # golden clip: min(32, 32) - 5
    assert num_windows(100, 640 * 40) == 35  # audio shorter than video bounds it
    assert num_windows(4, 10_000) == 0


def test_edge_rules():
    strict = valid_columns(np.arange(10), 10, 15, "strict")
    reference = valid_columns(np.arange(10), 10, 15, "reference")
    audio = np.arange(10)[:, None] + np.arange(-15, 16)[None, :]
    np.testing.assert_array_equal(strict, (audio >= 0) & (audio < 10))
    # Short clip: rows < S keep the right-hand pad columns, as the reference does.
    assert reference[3, 30] and not strict[3, 30]
    long_ref = valid_columns(np.arange(100), 100, 15, "reference")
    np.testing.assert_array_equal(long_ref, valid_columns(np.arange(100), 100, 15, "strict"))
    with pytest.raises(ValueError):
        valid_columns(np.arange(3), 3, 2, "other")


def test_offsets_sign_and_context():
    dists = np.full((20, 31), -1.0, dtype=np.float32)
    dists[:, 15 + 4] = 1.0  # best column: audio taken 4 frames later -> shift +4 (late)
    dists[7, 15 + 4] = -2.0
    dists[7, 15 - 2] = 1.0  # one noisy row
    shifts = best_shifts(dists)
    assert shifts[0] == 4 and shifts[7] == -2
    assert best_shifts(context_average(dists, 9))[7] == 4  # context fixes the noisy row
    with pytest.raises(ValueError):
        context_average(dists, 4)


def test_context_specific_models_score_their_own_window_length(tiny_clip):
    """A "Var" model trained on 10 frames reads 10-frame video and 32-frame mel windows."""
    _, frames, mel, n = tiny_clip
    torch.manual_seed(3)
    model = VocaLiST(PRESETS["tiny"], window_frames=10).eval()
    ref = score_matrix(model, frames, mel, n, ScoreOptions(mode="reference", max_shift=4))
    cached = score_matrix(model, frames, mel, n, ScoreOptions(max_shift=4, row_block=13))
    assert ref.shape == cached.shape == (60 - 10, 9)
    assert np.abs(ref - cached).max() < 1e-4
    five = score_matrix(model, frames, mel, n, ScoreOptions(max_shift=4, window_frames=5))
    assert five.shape == (55, 9) and np.abs(five[:50] - cached).max() > 1e-3


def test_context_average_for_longer_model_windows():
    dists = np.arange(20, dtype=np.float32).reshape(10, 2)
    # 10-frame rows averaged to K = 12: 3 rows around each one.
    averaged = context_average(dists, 12, window_frames=10)
    np.testing.assert_allclose(averaged[4], dists[3:6].mean(0))
    np.testing.assert_array_equal(context_average(dists, 10, window_frames=10), dists)
    with pytest.raises(ValueError):
        context_average(dists, 9, window_frames=10)


@pytest.mark.parametrize("edge_rule", ["strict", "reference"])
def test_a_subset_of_shifts_scores_those_cells_as_the_whole_matrix_does(tiny_clip, edge_rule):
    """Focused search: the asked shifts equal the full matrix's, the other in-range cells
    are NOT_SCORED, out-of-range cells stay OUT_OF_RANGE; widening later with a video
    cache fills the rest with the same numbers."""
    model, frames, mel, n = tiny_clip
    opts = ScoreOptions(max_shift=6, edge_rule=edge_rule, row_block=9, pair_batch=13)
    source = clip_source(frames, mel, n)
    rows = np.arange(source.n_rows)
    full = score_rows(model, source, rows, opts)
    cache = VideoCache()
    focus = score_rows(model, source, rows, opts, shifts=range(1, 4), video_cache=cache)
    asked = shift_mask(range(1, 4), 6)
    assert asked.sum() == 3
    in_range = full != OUT_OF_RANGE
    np.testing.assert_array_equal(focus == OUT_OF_RANGE, ~in_range)
    assert np.isnan(focus[in_range & ~asked[None, :]]).all()
    assert np.abs(focus[:, asked] - full[:, asked]).max() < 1e-5
    assert scored_pairs(focus) == int((in_range & asked[None, :]).sum()) < scored_pairs(full)
    encoded = len(cache.tokens)
    rest = score_rows(model, source, rows, opts, shifts=[c for c in range(-6, 7)
                                                         if not 1 <= c <= 3],
                      video_cache=cache)
    assert len(cache.tokens) == encoded == len(rows)  # no video window encoded twice
    merged = np.where(np.isnan(focus), rest, focus)
    assert np.abs(merged - full).max() < 1e-5


def test_pairs_in_range_counts_what_a_full_matrix_scores(tiny_clip):
    for n_rows, s in ((55, 6), (10, 15), (1, 3)):
        assert pairs_in_range(n_rows, s) == int(
            valid_columns(np.arange(n_rows), n_rows, s, "strict").sum())
