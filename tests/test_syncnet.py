"""The SyncNet* baseline: Wav2Lip's expert layout, checkpoints, scoring and training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke, train_config

from lipsync_fix.errors import CheckpointError
from lipsync_fix.features.mel import log_mel_spectrogram
from lipsync_fix.models import load_model, save_checkpoint
from lipsync_fix.models.syncnet_star import SYNCNET_PRESETS, SyncNetStar
from lipsync_fix.sync.scoring import OUT_OF_RANGE, ScoreOptions, score_matrix
from lipsync_fix.training import TrainConfig, read_metrics, sync_loss, train


def test_paper_size_has_wav2lip_expert_layout():
    """Shapes of Wav2Lip's SyncNet_color: a 15-channel 7x7 stem over the stacked frames,
    a 1-channel stem over the mel, 512-d embeddings from 1x1 convs."""
    state = SyncNetStar().state_dict()
    assert state["face_encoder.0.conv_block.0.weight"].shape == (32, 15, 7, 7)
    assert state["face_encoder.1.conv_block.0.weight"].shape == (64, 32, 5, 5)
    assert state["face_encoder.16.conv_block.0.weight"].shape == (512, 512, 1, 1)
    assert state["audio_encoder.0.conv_block.0.weight"].shape == (32, 1, 3, 3)
    assert state["audio_encoder.13.conv_block.0.weight"].shape == (512, 512, 1, 1)
    assert "face_encoder.17.conv_block.0.weight" not in state
    assert "audio_encoder.14.conv_block.0.weight" not in state
    assert state["face_encoder.0.conv_block.1.running_mean"].shape == (32,)


def test_scores_are_cosine_similarities_in_unit_range():
    torch.manual_seed(0)
    model = SyncNetStar(SYNCNET_PRESETS["tiny"]).eval()
    video, mel = torch.rand(6, 15, 48, 96), torch.randn(6, 1, 80, 16)
    with torch.no_grad():
        scores = model(video, mel)
        v, a = model.encode_video(video), model.encode_audio(mel)
    assert scores.shape == (6,) and bool(((scores >= 0) & (scores <= 1 + 1e-6)).all())
    expected = torch.nn.functional.cosine_similarity(v, a)
    assert torch.allclose(scores, expected, atol=1e-6)
    assert torch.allclose(v.norm(dim=1), torch.ones(6), atol=1e-5)


def test_loss_treats_similarity_as_probability():
    model = SyncNetStar(SYNCNET_PRESETS["tiny"])
    scores, label = torch.tensor([0.9, 0.2, 1.0]), torch.tensor([1.0, 0.0, 1.0])
    expected = -(np.log(0.9) + np.log(0.8) + np.log(1 - 1e-6)) / 3
    assert float(sync_loss(model, scores, label)) == pytest.approx(expected, rel=1e-5)


def test_checkpoints_round_trip_and_bare_wav2lip_files_load(tmp_path):
    torch.manual_seed(1)
    model = SyncNetStar(SYNCNET_PRESETS["small"])
    loaded = load_model(save_checkpoint(tmp_path / "ours.pth", model))
    assert isinstance(loaded, SyncNetStar) and loaded.dims == SYNCNET_PRESETS["small"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    # Wav2Lip saves {"state_dict", "optimizer", ...} without dims: the paper's size, told
    # apart from VocaLiST by its keys, DataParallel prefix stripped.
    paper = SyncNetStar()
    torch.save({"state_dict": {f"module.{k}": v for k, v in paper.state_dict().items()},
                "optimizer": None, "global_step": 7, "global_epoch": 1}, tmp_path / "w2l.pth")
    assert isinstance(load_model(tmp_path / "w2l.pth"), SyncNetStar)
    with pytest.raises(CheckpointError, match="not vocalist"):
        load_model(tmp_path / "w2l.pth", family="vocalist")


@pytest.mark.slow  # the per-pair reference runs the model once per pair: ~15-40 s
@pytest.mark.parametrize("edge_rule", ["reference", "strict"])
def test_cached_scoring_equals_per_pair_reference(edge_rule):
    torch.manual_seed(2)
    model = SyncNetStar(SYNCNET_PRESETS["tiny"]).eval()
    rng = np.random.default_rng(2)
    frames = torch.from_numpy(rng.uniform(0, 1, (40, 3, 48, 96)).astype(np.float32))
    wav = (0.3 * rng.standard_normal(40 * 640)).astype(np.float32)
    mel = log_mel_spectrogram(wav)
    ref = score_matrix(model, frames, mel, len(wav),
                       ScoreOptions(mode="reference", max_shift=6, edge_rule=edge_rule))
    cached = score_matrix(model, frames, mel, len(wav),
                          ScoreOptions(max_shift=6, edge_rule=edge_rule, row_block=9))
    assert ref.shape == cached.shape == (35, 13)
    np.testing.assert_array_equal(ref == OUT_OF_RANGE, cached == OUT_OF_RANGE)
    assert np.abs(ref - cached).max() < 1e-5


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from lipsync_fix.data.synth import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("syncnet_data"), 4, seed=3,
                                   crops="known", duration_s=1.6)


def test_train_and_eval_syncnet_end_to_end(data_root, tmp_path):
    """`train --model syncnet` writes a SyncNet* checkpoint that `eval` scores."""
    run = invoke("train", "--data-root", data_root, "--out", tmp_path / "run", "--model",
                 "syncnet", "--preset", "tiny", "--steps", "3", "--batch-size", "4",
                 "--device", "cpu", "--quiet", "--config", train_config(tmp_path))
    assert run.code == 0, run.stderr
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert ckpt["model"] == "syncnet-star" and ckpt["global_step"] == 3  # "syncnet" was read as it
    assert isinstance(load_model(tmp_path / "run" / "last.pth"), SyncNetStar)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run", "train")]
    assert losses and all(np.isfinite(losses))

    out = tmp_path / "eval.json"
    run = invoke("eval", "--data-root", data_root, "--split", "test", "--checkpoint",
                 tmp_path / "run" / "last.pth", "--json-out", out, "--quiet")
    assert run.code == 0, run.stderr
    assert "SyncNet*" in run.stdout
    result = json.loads(out.read_text())
    assert result["clips"] >= 1 and list(result["accuracy"]["tolerance_1"]) == [
        "5", "7", "9", "11", "13", "15"]


def test_syncnet_refuses_longer_contexts(data_root, tmp_path):
    with pytest.raises(ValueError, match="5-frame"):
        TrainConfig(data_root=str(data_root), out_dir=str(tmp_path), model="syncnet",
                    window_frames=10)
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(data_root=str(data_root), out_dir=str(tmp_path), model="resnet")


def test_resume_keeps_the_family(data_root, tmp_path):
    cfg = TrainConfig(data_root=str(data_root), out_dir=str(tmp_path / "r"), model="syncnet",
                      preset="tiny", steps=2, batch_size=4, num_workers=0, val_every=0,
                      checkpoint_every=0, quiet=True)
    train(cfg)
    train(cfg.replace(steps=3, resume=True))
    assert torch.load(tmp_path / "r" / "last.pth", weights_only=True)["global_step"] == 3
    with pytest.raises(Exception, match="syncnet-star model"):
        train(cfg.replace(model="vocalist", steps=4, resume=True))
