"""The GPU path: the same scores and offsets on CUDA as on the CPU. Skipped, and reported
as skipped, on a machine without CUDA; ``scripts/device-check`` runs them on one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsync_fix import media
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.errors import LipsyncError
from lipsync_fix.evaluation.golden import GOLDEN, golden_model
from lipsync_fix.faces import haar_available
from lipsync_fix.features.mel import log_mel_spectrogram
from lipsync_fix.features.visual import frames_from_stacked
from lipsync_fix.models import load_model
from lipsync_fix.sync import SyncOptions, estimate_sync
from lipsync_fix.sync.pipeline import FolderEstimates
from lipsync_fix.sync.scoring import OUT_OF_RANGE, ScoreOptions, score_matrix

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def golden():
    data = np.load(GOLDEN / "eval_golden.npz")
    return (frames_from_stacked(data["vid"]), log_mel_spectrogram(data["wav"]),
            len(data["wav"]), data["dists"])


def test_float32_on_cuda_reproduces_the_reference(golden):
    frames, mel, n, ref = golden
    model = golden_model().to("cuda")
    scores = score_matrix(model, frames, mel, n, ScoreOptions(device="cuda").for_device())
    valid = ref != OUT_OF_RANGE
    assert np.array_equal(scores == OUT_OF_RANGE, ~valid)
    assert np.abs(scores - ref)[valid].max() < 1e-3


def test_bf16_batches_on_cuda_match_the_cpu(golden):
    frames, mel, n, _ = golden
    cpu = score_matrix(golden_model(), frames, mel, n, ScoreOptions())
    gpu = score_matrix(golden_model().to("cuda"), frames, mel, n,
                       ScoreOptions(device="cuda", autocast=torch.bfloat16).for_device())
    valid = cpu != OUT_OF_RANGE
    assert np.abs(cpu - gpu)[valid].max() < 0.05


def _has_ffmpeg() -> bool:
    try:
        media.ffmpeg_exe()
    except LipsyncError:
        return False
    return True


@pytest.mark.skipif(not _has_ffmpeg(), reason="needs ffmpeg to write and read the clip")
def test_estimate_on_cuda_finds_the_delay(tmp_path):
    path = tmp_path / "late.mp4"
    clip = make_talking_head(41, duration_s=12.0, audio_delay_ms=200.0)
    media.write_video(path, clip.frames, clip.fps, audio=clip.audio, sample_rate=16000)
    # OpenCV 5 (common on GPU images) has no Haar detector: give the known face then.
    box = None if haar_available() else \
        ",".join(f"{v:.0f}" for v in np.median(clip.face_boxes, axis=0))
    gpu = estimate_sync(path, load_model("demo-small", "cuda"),
                        SyncOptions(device="cuda", precision="bf16", face_box=box))
    cpu = estimate_sync(path, load_model("demo-small"),
                        SyncOptions(precision="fp32", face_box=box))
    assert abs(gpu.audio_delay_ms - 200.0) <= 40.0 and gpu.precision == "bf16"
    assert abs(gpu.audio_delay_ms - cpu.audio_delay_ms) <= 40.0


@pytest.mark.skipif(not _has_ffmpeg() or not haar_available(),
                    reason="needs ffmpeg and OpenCV's Haar detector")
def test_a_folder_batched_on_cuda_gives_each_clips_own_estimate(tmp_path):
    """Three clips whose windows share forward passes (the default on a GPU) give the
    estimates each gives alone, with fewer encoder passes than requests."""
    paths = []
    for seed in (51, 52, 53):
        clip = make_talking_head(seed, duration_s=4.0, audio_delay_ms=120.0)
        paths.append(tmp_path / f"c{seed}.mp4")
        media.write_video(paths[-1], clip.frames, clip.fps, audio=clip.audio,
                          sample_rate=16000)
    model = load_model("demo-small", "cuda")
    options = SyncOptions(device="cuda", precision="fp32")
    alone = [estimate_sync(p, model, options) for p in paths]
    with FolderEstimates(paths, model, options, workers=1, at_once=3) as estimates:
        together = [estimates.estimate(p) for p in paths]
        batcher = estimates._batcher
    assert batcher.forward_passes < batcher.requests
    for a, b in zip(alone, together, strict=True):
        assert abs(a.audio_delay_ms - b.audio_delay_ms) < 1.0
