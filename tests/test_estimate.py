"""The main job's estimator: segments sampled in rounds, its stopping rule, the evidence
rules, bounded feature memory, bf16 agreement and the JSON contract."""

from __future__ import annotations

import subprocess
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import clear_lead

from lipsync_fix import media
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.evaluation.golden import GOLDEN, golden_model
from lipsync_fix.features.inputs import RECIPES
from lipsync_fix.features.mel import log_mel_spectrogram
from lipsync_fix.features.visual import frames_from_stacked
from lipsync_fix.models import load_model
from lipsync_fix.sync import SyncOptions, estimate_sync
from lipsync_fix.sync.estimate import Evidence, SegmentScores, segment_starts, spread_order
from lipsync_fix.sync.frontend import ClipReader
from lipsync_fix.sync.offsets import best_shifts, context_average
from lipsync_fix.sync.scoring import OUT_OF_RANGE, ScoreOptions, score_matrix

CONTRACT = {"input", "fps", "duration_s", "audio_delay_ms", "audio_delay_frames", "confidence",
            "verdict", "face_coverage", "windows_used", "faces_seen", "scores",
            "offsets_over_time", "windows_scored", "windows_available"}


@pytest.fixture(scope="module")
def demo_model():
    return load_model("demo-small")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """20 s of a generated talker whose audio is 160 ms late."""
    path = tmp_path_factory.mktemp("estimate") / "late160.mp4"
    clip = make_talking_head(31, duration_s=20.0, audio_delay_ms=160.0)
    media.write_video(path, clip.frames, clip.fps, audio=clip.audio, sample_rate=16000)
    return path


def test_spread_order_is_a_permutation_whose_prefixes_cover_the_clip():
    for n in (1, 2, 7, 16, 61):
        order = spread_order(n)
        assert sorted(order) == list(range(n))
    first = spread_order(16)[:4]
    assert sorted(i // 4 for i in first) == [0, 1, 2, 3]  # one per quarter


def test_segments_tile_the_windows():
    assert segment_starts(50, 21, partial=False) == [0, 21]
    assert segment_starts(50, 21, partial=True) == [0, 21, 42]
    assert segment_starts(42, 21, partial=True) == [0, 21]


def _segment(first: int, peak: int, rows: int = 21, s: int = 15, noise: float = 0.0,
             seed: int = 0) -> SegmentScores:
    rng = np.random.default_rng(seed)
    scores = -np.abs(np.arange(2 * s + 1) - (s + peak))[None, :].repeat(rows, 0) / 10.0
    scores = (scores + noise * rng.standard_normal(scores.shape)).astype(np.float32)
    return SegmentScores(first, 25, np.arange(first, first + rows), scores, 25, 1)


def test_stability_is_high_for_agreeing_segments_and_low_for_disagreeing_ones():
    agreeing = Evidence(15, 10)
    for i in range(8):
        agreeing.add(_segment(25 * i, peak=4, noise=0.05, seed=i))
    assert agreeing.best()[0] == 15 + 4 and agreeing.stability() >= 0.95
    scattered = Evidence(15, 10)
    for i, peak in enumerate([-9, 0, 7, -3, 11, 4, -12, 2]):
        scattered.add(_segment(25 * i, peak=peak, seed=i))
    assert scattered.stability() < 0.8


def test_sampled_estimate_stops_early_and_agrees_with_exhaustive(long_clip, demo_model):
    fast = estimate_sync(long_clip, demo_model, SyncOptions(precision="fp32"))
    full = estimate_sync(long_clip, demo_model, SyncOptions(precision="fp32", exhaustive=True))
    assert fast.windows_available == full.windows_available > 400
    assert fast.windows_scored < 0.7 * full.windows_scored  # the stopping rule fired
    voiced = ClipReader(long_clip).voiced(full.windows_available, 5, 0.005).sum()
    assert full.windows_scored >= 0.95 * voiced  # every window with a voice (and a face)
    for estimate in (fast, full):
        assert abs(estimate.audio_delay_ms - 160.0) <= 40.0, estimate.describe()
        assert estimate.verdict == "out_of_sync" and not estimate.notes
    assert abs(fast.audio_delay_ms - full.audio_delay_ms) <= 40.0
    # focused shifts: fewer pairs per window than the full search, the same offset
    assert fast.pairs_available == full.pairs_available >= full.pairs_scored
    assert fast.pairs_scored / fast.windows_scored < 0.8 * full.pairs_scored / full.windows_scored
    times = [r.time_s for r in fast.offsets_over_time]
    assert times == sorted(times) and times[0] < 5.0 and times[-1] > 15.0  # whole clip
    assert CONTRACT <= set(fast.to_json())


def test_thin_evidence_is_uncertain(tmp_path, demo_model):
    """A 1.4 s clip gives one segment: one vote cannot be cross-checked."""
    path = tmp_path / "short.mp4"
    clip = make_talking_head(5, duration_s=1.4, audio_delay_ms=120.0)
    media.write_video(path, clip.frames, clip.fps, audio=clip.audio, sample_rate=16000)
    estimate = estimate_sync(path, demo_model, SyncOptions(precision="fp32"))
    assert estimate.verdict == "uncertain"
    assert any("windows" in note or "segment" in note for note in estimate.notes)


def test_offset_beyond_the_search_range_is_uncertain(tmp_path, demo_model):
    """Audio 1000 ms late searched within +-200 ms: the peak sits on the range's edge."""
    path = tmp_path / "far.mp4"
    clip = make_talking_head(8, duration_s=8.0, audio_delay_ms=1000.0)
    media.write_video(path, clip.frames, clip.fps, audio=clip.audio, sample_rate=16000)
    estimate = estimate_sync(path, demo_model, SyncOptions(max_delay_ms=200.0,
                                                          precision="fp32"))
    assert estimate.verdict == "uncertain", estimate.describe()
    assert any("edge" in note or "agree" in note or "settle" in note
               for note in estimate.notes)


@pytest.mark.slow
def test_feature_memory_does_not_grow_with_the_clip(tmp_path):
    """The same talker as it is (4 s) and looped to 16 s: the numpy memory the reader and
    the estimator hold at their peak differs by no more than the 16-bit audio itself."""
    seconds = 4.0
    base = tmp_path / "base.mp4"
    clip = make_talking_head(12, duration_s=seconds)
    media.write_video(base, clip.frames, clip.fps, audio=clip.audio, sample_rate=16000)
    model = load_model("demo-small")
    peaks = {}
    for loops in (1, 4):
        path = tmp_path / f"loop{loops}.mp4"
        _loop(base, path, loops)
        tracemalloc.start()
        estimate_sync(path, model, SyncOptions(precision="fp32", exhaustive=True))
        peaks[loops] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    audio_growth = (4 - 1) * seconds * 16000 * 2  # bytes of int16 audio added
    assert peaks[4] - peaks[1] < audio_growth + 4e6, peaks
    assert peaks[4] < 80e6, peaks


def _loop(src, dst, loops: int) -> None:
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-stream_loop", str(loops - 1),
                    "-i", str(src), "-c", "copy", str(dst)], check=True, timeout=120)


def test_clip_reader_keeps_the_audio_as_16_bit(long_clip):
    reader = ClipReader(long_clip)
    assert reader.audio.dtype == np.int16
    assert abs(reader.n_samples - 20.0 * 16000) <= 640
    segment = reader.segment(100, 25)
    assert segment.crops.dtype == np.uint8 and segment.crops.shape == (25, 48, 96, 3)
    assert segment.has_face.all()


def test_bf16_picks_the_offsets_fp32_picks_on_the_golden_clip():
    data = np.load(GOLDEN / "eval_golden.npz")
    model = golden_model()
    frames = frames_from_stacked(data["vid"])
    mel, n = log_mel_spectrogram(data["wav"]), len(data["wav"])
    fp32 = score_matrix(model, frames, mel, n, ScoreOptions(edge_rule="strict"))
    bf16 = score_matrix(model, frames, mel, n,
                        ScoreOptions(edge_rule="strict", autocast=torch.bfloat16))
    valid = fp32 != OUT_OF_RANGE
    assert np.abs(fp32 - bf16)[valid].max() < 0.05  # logits span about 0.5 here
    a = context_average(np.where(valid, fp32, -1.0), 15)
    b = context_average(np.where(valid, bf16, -1.0), 15)
    # Where fp32's best shift leads by more than twice the largest difference between the
    # two averaged rows, bf16 cannot pick another one; elsewhere either may be right.
    clear = clear_lead(a, float(np.abs(a - b).max()))
    assert clear.sum() >= 5  # 8 of the 27 rows, measured: the check compares something
    assert np.array_equal(best_shifts(a)[clear], best_shifts(b)[clear])


@pytest.mark.parametrize("name", ["wav2lip", "syncnet-v2"])
def test_audio_windows_of_a_chunk_equal_the_whole_clips(name):
    """A segment's features come from an audio chunk; inside its span they must equal
    the features of the whole clip, or a segment would score other numbers than the
    same windows scored in one piece."""
    recipe = RECIPES[name]
    rng = np.random.default_rng(3)
    wav = (0.1 * rng.standard_normal(16000 * 6)).astype(np.float32)
    wav = np.round(wav * 32768) / 32768  # what a 16-bit decode gives
    whole = recipe.audio_features(wav)
    for first, stop in ((0, 30), (37, 71), (100, 141)):
        a, b = recipe.audio_span(first, stop, 5)
        chunk = recipe.audio_features(wav[a:b])
        starts = np.arange(first, stop)
        ours = recipe.audio_windows(chunk, starts, 5, a // recipe.audio_hop)
        theirs = recipe.audio_windows(whole, starts, 5)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-4)
