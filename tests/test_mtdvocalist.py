"""MTDVocaLiST: its authors' reference numbers (tests/data/mtdvocalist, made with the
golden weight rule at its widths), its input recipe, and its authors' file format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA

from lipsync_fix.evaluation.golden import rule_state_dict
from lipsync_fix.features.inputs import MTDVOCALIST, WAV2LIP, recipe_for
from lipsync_fix.features.visual import frames_from_stacked, torchvision_resize
from lipsync_fix.models import MTD_DIMS, MTDVocaLiST, VocaLiST, count_parameters
from lipsync_fix.models.checkpoint import model_from_checkpoint, read_checkpoint
from lipsync_fix.models.store import LAYOUTS
from lipsync_fix.sync.scoring import OUT_OF_RANGE, ScoreOptions, score_matrix

MTD_DATA = DATA / "mtdvocalist"
MANIFEST = LAYOUTS / "mtdvocalist.json"


def rel_err(ours: torch.Tensor, ref: np.ndarray) -> float:
    ref_t = torch.from_numpy(ref)
    return float((ours - ref_t).abs().max() / ref_t.abs().max())


@pytest.fixture(scope="module")
def mtd_model() -> MTDVocaLiST:
    model = MTDVocaLiST()
    model.load_state_dict(rule_state_dict(MANIFEST), strict=True)
    return model.eval()


def test_state_dict_matches_manifest():
    manifest = json.loads(MANIFEST.read_text())
    state = MTDVocaLiST().state_dict()
    assert [e["key"] for e in manifest["entries"]] == list(state)
    for entry in manifest["entries"]:
        tensor = state[entry["key"]]
        assert list(tensor.shape) == entry["shape"], entry["key"]
        assert str(tensor.dtype) == f"torch.{entry['dtype']}", entry["key"]
    assert count_parameters(MTDVocaLiST()) == manifest["num_parameters"] == 13_280_961
    assert MTDVocaLiST().dims == MTD_DIMS


def test_forward_matches_reference_at_every_stage(mtd_model):
    g = np.load(MTD_DATA / "forward_golden.npz")
    vid, mel = torch.from_numpy(g["vid"]), torch.from_numpy(g["mel"])
    with torch.no_grad():
        video_tokens = mtd_model.encode_video(vid)
        audio_tokens = mtd_model.encode_audio(mel)
        av, va, mem = mtd_model.transformers(audio_tokens, video_tokens)
        logits = mtd_model.head(mem)
        full = mtd_model(vid, mel)
    # the reference returns (B, D, T) from the encoders and (L, B, D) from the transformers
    assert rel_err(video_tokens.transpose(1, 2), g["vid_prenet"]) < 1e-4
    assert rel_err(audio_tokens.transpose(1, 2), g["aud_prenet"]) < 1e-4
    assert rel_err(av.transpose(0, 1), g["av_transformer"]) < 1e-4
    assert rel_err(va.transpose(0, 1), g["va_transformer"]) < 1e-4
    assert rel_err(mem.transpose(0, 1), g["mem_transformer"]) < 1e-4
    assert rel_err(logits, g["logits"]) < 1e-4
    assert torch.equal(full, logits)
    # the position quirk is exercised: 4 visual and 2 audio tokens have channel 0 == 0.0
    assert int((video_tokens[:, :, 0] == 0).sum()) == 4
    assert int((audio_tokens[:, :, 0] == 0).sum()) == 2


def test_clip_score_matrix_matches_reference(mtd_model):
    g = np.load(MTD_DATA / "clip_scores_golden.npz")
    frames = frames_from_stacked(g["vid"])  # RGB 0..255: already the model's recipe
    n_frames = frames.shape[0]
    scores = score_matrix(mtd_model, frames, torch.from_numpy(g["mel"][0, 0]),
                          n_frames * 640, ScoreOptions(row_block=9))
    ref = g["dists"]
    assert scores.shape == ref.shape == (int(g["lastframe"]), 31)
    masked = ref == OUT_OF_RANGE
    np.testing.assert_array_equal(scores == OUT_OF_RANGE, masked)
    assert np.abs(scores[~masked] - ref[~masked]).max() < 1e-3


def test_the_family_names_its_recipe():
    assert recipe_for(MTDVocaLiST()) is MTDVOCALIST
    assert recipe_for(VocaLiST(MTD_DIMS)) is WAV2LIP


def test_recipe_reads_rgb_0_255_where_vocalist_reads_bgr_over_255():
    rng = np.random.default_rng(5)
    crops = rng.integers(0, 256, (7, 48, 96, 3), dtype=np.uint8)  # stored: BGR
    starts = np.array([0, 2])
    ours = MTDVOCALIST.video_windows(crops, starts, 5)
    theirs = WAV2LIP.video_windows(crops, starts, 5)
    assert ours.shape == theirs.shape == (2, 15, 48, 96)
    # frame f's channels: R, G, B (MTD) versus B, G, R / 255 (VocaLiST)
    flipped = theirs.view(2, 5, 3, 48, 96).flip(2).reshape(2, 15, 48, 96) * 255.0
    torch.testing.assert_close(ours, flipped, rtol=0, atol=1e-4)
    assert float(ours[0, 0, 0, 0]) == float(crops[0, 0, 0, 2])  # R of frame 0, unscaled
    assert ours.max() > 1.0


def test_torchvision_resize_averages_when_downscaling():
    """Antialiased bilinear (torchvision's tensor Resize) averages the whole footprint;
    OpenCV's INTER_LINEAR (VocaLiST's recipe) samples two of every four columns here."""
    import cv2

    stripes = np.zeros((384, 384, 3), np.uint8)
    stripes[:, ::4] = 255  # one lit column in four
    ours = torchvision_resize(stripes, 96)
    assert ours.shape == (96, 96, 3) and ours.dtype == np.uint8
    assert abs(float(ours[10:-10, 10:-10].mean()) - 63.75) < 1.0
    assert int(cv2.resize(stripes, (96, 96))[10:-10, 10:-10].max()) == 0
    flat = np.full((57, 131, 3), 77, np.uint8)
    assert np.array_equal(torchvision_resize(flat, 96), np.full((96, 96, 3), 77, np.uint8))
    crop = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    assert np.array_equal(torchvision_resize(crop, 96), crop)


def test_full_crop_resizes_the_padded_box_like_torchvision():
    frame = np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    box = np.array([100.0, 50.0, 120.0, 130.0])  # x, y, w, h
    region = frame[50:190, 100:220]  # Wav2Lip's pads: 10 px more at the bottom
    assert np.array_equal(MTDVOCALIST.full_crop(frame, box), torchvision_resize(region, 96))
    assert not np.array_equal(MTDVOCALIST.full_crop(frame, box), WAV2LIP.full_crop(frame, box))
    assert MTDVOCALIST.crop(frame, box).shape == MTDVOCALIST.stored_shape() == (48, 96, 3)


def test_authors_file_is_recognised_by_its_shapes_and_loads_strict(tmp_path, mtd_model):
    path = tmp_path / "pure_MTDVocaLiST.pth"
    torch.save({"state_dict": rule_state_dict(MANIFEST)}, path)
    ckpt = read_checkpoint(path)
    assert set(ckpt) == {"state_dict"}
    model = model_from_checkpoint(ckpt, str(path))
    assert type(model) is MTDVocaLiST and model.family == "mtdvocalist"
    for key, value in mtd_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    broken = dict(ckpt["state_dict"])
    broken["fc.weight"] = broken["fc.weight"][:, :199]
    torch.save({"state_dict": broken}, path)
    with pytest.raises(Exception, match="shape mismatches"):
        model_from_checkpoint(read_checkpoint(path), str(path))
