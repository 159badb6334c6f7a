"""The original SyncNet against the numbers of its reference code (joonson/syncnet_python).

Small golden files live in tests/data/syncnet (see its README); the large ones are read from
``../shared/syncnet/golden`` by tests marked ``needs_shared``. Tolerances are those of the
golden README.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA, SHARED, needs_shared

from lipsync_fix.errors import CheckpointError
from lipsync_fix.evaluation.golden import rule_state_dict, rule_tensor, rule_weights
from lipsync_fix.faces.reference import Detection, crop_geometry, crop_track, track_shot
from lipsync_fix.features.inputs import SYNCNET
from lipsync_fix.features.mfcc import mfcc, mfcc_filterbank, mfcc_matrix
from lipsync_fix.lse import distance_matrix, embed_audio, embed_clip, lse_from_distances
from lipsync_fix.models import SyncNetV2, count_parameters, load_model
from lipsync_fix.sync.scoring import num_windows

LOCAL = DATA / "syncnet"
GOLDEN = SHARED / "syncnet" / "golden"
MANIFEST = LOCAL / "state_dict_manifest.json"
COUNTER_SUFFIX = "num_batches_tracked"


def rel_err(ours: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    ours = ours.numpy() if isinstance(ours, torch.Tensor) else ours
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def balanced_state_dict() -> dict:
    """The golden README's balanced variant: the lip head's last Linear is a quarter of
    the rule's draw for the audio head's last Linear."""
    state = rule_state_dict(MANIFEST)
    for part in ("weight", "bias"):
        audio = state[f"netfcaud.3.{part}"]
        state[f"netfclip.3.{part}"] = 0.25 * rule_tensor(f"netfcaud.3.{part}",
                                                          tuple(audio.shape), audio.dtype)
    return state


@pytest.fixture(scope="module")
def rule_model() -> SyncNetV2:
    model = SyncNetV2()
    model.load_state_dict(rule_state_dict(MANIFEST), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def balanced_model() -> SyncNetV2:
    model = SyncNetV2()
    model.load_state_dict(balanced_state_dict(), strict=True)
    return model.eval()


# --------------------------------------------------------------------------- weights


def test_state_dict_matches_manifest():
    manifest = json.loads(MANIFEST.read_text())
    model = SyncNetV2()
    state = model.state_dict()
    assert [e["key"] for e in manifest["entries"]] == list(state)
    for entry in manifest["entries"]:
        assert list(state[entry["key"]].shape) == entry["shape"], entry["key"]
        assert str(state[entry["key"]].dtype) == f"torch.{entry['dtype']}", entry["key"]
    assert len(state) == 102
    assert sum(k.endswith(COUNTER_SUFFIX) for k in state) == 14
    assert count_parameters(model) == manifest["num_parameters"] == 13_631_616


def test_rule_from_manifest_equals_rule_from_model():
    """One rule implementation serves the manifest and the model's own layout."""
    from_manifest = rule_state_dict(MANIFEST)
    from_model = rule_weights(SyncNetV2())
    assert list(from_manifest) == list(from_model)
    assert all(torch.equal(from_manifest[k], from_model[k]) for k in from_model)
    assert from_model["netcnnaud.1.running_var"].min() >= 0.5
    assert from_model[f"netcnnaud.1.{COUNTER_SUFFIX}"].dtype == torch.int64


@pytest.mark.parametrize("counters", [True, False])
@pytest.mark.parametrize("zipped", [True, False])
def test_published_format_loads(tmp_path, counters, zipped):
    """A plain dict of tensors, as syncnet_v2.model is: zip or legacy serialization, with or
    without the BatchNorm counters, through the one loader (weights_only=True)."""
    state = balanced_state_dict()
    if not counters:
        state = {k: v for k, v in state.items() if not k.endswith(COUNTER_SUFFIX)}
        assert len(state) == 88
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path, _use_new_zipfile_serialization=zipped)
    model = load_model(path, family="syncnet-v2")
    assert isinstance(model, SyncNetV2) and not model.training
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert all(int(loaded[k]) == 0 for k in loaded if k.endswith(COUNTER_SUFFIX))


def _save(tmp_path, state, name="bad.model"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    """The older syncnetl2.model has 2048-wide last layers: one line, not a traceback."""
    state = rule_weights(SyncNetV2())
    state["netfcaud.3.weight"] = torch.zeros(2048, 512)
    state["netfcaud.3.bias"] = torch.zeros(2048)
    with pytest.raises(CheckpointError,
                       match=r"does not fit a syncnet_v2 model: 2 shape mismatches") as info:
        load_model(_save(tmp_path, state))
    assert "\n" not in str(info.value)


def test_checkpoint_missing_weights_or_extra_keys_is_refused(tmp_path):
    state = rule_weights(SyncNetV2())
    del state["netcnnlip.0.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing keys, e\.g\. netcnnlip\.0\.weight"):
        load_model(_save(tmp_path, state, "missing.model"))
    state = rule_weights(SyncNetV2())
    state["netcnnaud.99.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"1 unexpected keys, e\.g\. netcnnaud\.99\.weight"):
        load_model(_save(tmp_path, state, "extra.model"))


def test_checkpoint_with_code_is_refused(tmp_path):
    """weights_only=True: a pickle that would run code is refused in one line."""
    path = tmp_path / "evil.model"
    torch.save({"netcnnaud.0.weight": torch.zeros(1), "x": np.dtype("float32")}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_scores_are_negated_distances(rule_model):
    torch.manual_seed(0)
    video = torch.randint(0, 256, (2, 3, 5, 224, 224)).float()
    audio = torch.randn(2, 1, 13, 20) * 10
    with torch.no_grad():
        lips, sounds = rule_model.encode_video(video), rule_model.encode_audio(audio)
        scores = rule_model(video, audio)
        pairs = rule_model.pair_scorer(lips, sounds)(torch.tensor([0, 1]), torch.tensor([1, 1]))
    assert lips.shape == sounds.shape == (2, 1024)
    expected = -torch.sqrt(((lips - sounds + 1e-6) ** 2).sum(1))
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(pairs[1], scores[1])
    torch.testing.assert_close(pairs[0], -torch.linalg.norm(lips[0] - sounds[1] + 1e-6))
    with pytest.raises(ValueError, match=r"\(B, 3, 5, 224, 224\)"):
        rule_model.encode_video(torch.zeros(1, 3, 5, 96, 96))
    with pytest.raises(ValueError, match=r"\(B, 1, 13, 20\)"):
        rule_model.encode_audio(torch.zeros(1, 1, 80, 16))


# --------------------------------------------------------------------------- features


@needs_shared
def test_forward_matches_reference(rule_model):
    g = np.load(GOLDEN / "forward_golden.npz")
    lips = torch.from_numpy(g["lip_in"]).float()
    sounds = torch.from_numpy(g["aud_in"])
    with torch.no_grad():
        for trunk, x, name in ((rule_model.netcnnlip, lips, "lip"),
                               (rule_model.netcnnaud, sounds, "aud")):
            for index, layer in enumerate(trunk):
                x = layer(x)
                key = f"{name}_stage{index:02d}"
                if key in g:
                    assert rel_err(x[0], g[key]) < 1e-4, key
        assert rel_err(rule_model.lip_features(lips), g["lip_cnn"]) < 1e-4
        assert rel_err(rule_model.audio_features(sounds), g["aud_cnn"]) < 1e-4
        assert rel_err(rule_model.encode_video(lips), g["lip_out"]) < 1e-4
        assert rel_err(rule_model.encode_audio(sounds), g["aud_out"]) < 1e-4


def test_mfcc_matches_reference():
    g = np.load(LOCAL / "mfcc_golden.npz")
    # float64 throughout, as python_speech_features computes it: equal to ~1e-14, not bit
    # for bit (numpy's FFT and BLAS kernels differ in the last bits between machines)
    np.testing.assert_allclose(mfcc_filterbank(), g["filterbank"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mfcc(g["audio"]), g["mfcc_f64"], rtol=1e-10, atol=1e-10)
    for audio, ref in (("audio", "mfcc"), ("audio_delay3", "mfcc_delay3")):
        cct = mfcc_matrix(g[audio])
        assert cct.dtype == torch.float32 and cct.shape == (13, 159)
        assert np.abs(cct.numpy() - g[ref][0, 0]).max() < 1e-4
    silence = mfcc_matrix(g["audio_delay3"])[:, :10].numpy()  # all-zero frames: the eps rule
    assert np.allclose(silence[0], -36.0437, atol=1e-3)
    assert np.abs(silence[1:]).max() < 1e-6


def test_mfcc_windows_follow_the_video():
    g = np.load(LOCAL / "mfcc_golden.npz")
    cct = mfcc_matrix(g["audio"])
    windows = SYNCNET.audio_windows(cct, np.array([0, 9, 30]), 5)
    assert windows.shape == (3, 1, 13, 20)
    assert torch.equal(windows[1, 0], cct[:, 36:56])
    with pytest.raises(ValueError, match="runs outside"):
        SYNCNET.audio_windows(cct, np.array([36]), 5)


# --------------------------------------------------------------------------- evaluate()


@pytest.fixture(scope="module")
def eval_golden(rule_model):
    g = np.load(GOLDEN / "eval_golden.npz")
    n = num_windows(len(g["frames"]), len(g["audio"]))
    lips, synced = embed_clip(rule_model, g["frames"], mfcc_matrix(g["audio"]), n)
    delayed = embed_audio(rule_model, mfcc_matrix(g["audio_delay3"]), n)
    return g, n, lips, {"sync": synced, "delay3": delayed}


@needs_shared
def test_eval_embeddings_match_reference(eval_golden):
    g, n, lips, sounds = eval_golden
    assert n == 35
    assert rel_err(lips, g["im_feat"]) < 1e-4
    for name, emb in sounds.items():
        assert rel_err(emb, g[f"cc_feat_{name}"]) < 1e-4


@needs_shared
@pytest.mark.parametrize("run", ["sync_v15", "sync_v10", "delay3_v15", "delay3_v10"])
def test_eval_matrices_and_numbers_match_reference(eval_golden, run):
    g, _, lips, sounds = eval_golden
    case = json.loads((LOCAL / "eval_golden.json").read_text())["cases"][run]
    audio, vshift = run.split("_v")
    result = lse_from_distances(distance_matrix(lips, sounds[audio], int(vshift)), int(vshift))
    assert result.distances.shape == g[f"dists_{run}"].shape
    assert np.abs(result.distances - g[f"dists_{run}"]).max() < 1e-2
    assert np.abs(result.mean_distances - g[f"mdist_{run}"]).max() < 1e-2
    assert case["min_lead"] > 1e-3  # so the offset must be exact
    assert (result.offset, result.min_index) == (case["offset"], case["minidx"])
    assert abs(result.lse_d - case["minval"]) < 1e-2
    assert abs(result.lse_c - case["conf"]) < 2e-3
    assert np.abs(result.framewise_confidence - g[f"fconfm_{run}"]).max() < 2e-3
    assert np.abs(result.framewise_confidence - np.array(case["fconfm"])).max() < 2e-3


@needs_shared
@pytest.mark.slow
def test_balanced_case_pins_the_sign(balanced_model):
    """End to end from the stored inputs: in sync 0, audio 3 frames late -3 (our +120 ms),
    audio 3 frames early +3 (our -120 ms)."""
    g = np.load(GOLDEN / "eval_balanced.npz")
    cases = json.loads((LOCAL / "eval_balanced.json").read_text())["cases"]
    frames = g["images"][g["plan"]]
    n = num_windows(len(frames), len(g["audio_sync"]))
    lips, _ = embed_clip(balanced_model, frames, mfcc_matrix(g["audio_sync"]), n)
    assert rel_err(lips, g["im_feat"]) < 1e-4
    expected_delay = {"sync": 0.0, "delay3": 120.0, "advance3": -120.0}
    for run, case in cases.items():
        audio, vshift = run.split("_v")
        cct = mfcc_matrix(g[f"audio_{audio}"])
        assert np.abs(cct.numpy() - g[f"mfcc_{audio}"][0, 0]).max() < 1e-4
        sounds = embed_audio(balanced_model, cct, n)
        assert rel_err(sounds, g[f"cc_feat_{audio}"]) < 1e-4
        result = lse_from_distances(distance_matrix(lips, sounds, int(vshift)), int(vshift))
        assert np.abs(result.distances - g[f"dists_{run}"]).max() < 1e-2
        assert np.abs(result.mean_distances - g[f"mdist_{run}"]).max() < 1e-2
        assert (result.offset, result.min_index) == (case["offset"], case["minidx"])
        assert result.audio_delay_ms == expected_delay[audio]
        assert abs(result.lse_d - case["minval"]) < 1e-2
        assert abs(result.lse_c - case["conf"]) < 2e-3
        margin = np.sort(result.mean_distances)[1] - result.lse_d
        assert abs(margin - case["margin"]) < 2e-3
        assert np.abs(result.framewise_confidence - g[f"fconfm_{run}"]).max() < 2e-3


def test_sign_on_constructed_features():
    """The golden sign check, on features built here: video window i shows what audio
    window i + d holds (d > 0: the audio lags) -> offset -d, audio_delay_ms +40 d."""
    rng = np.random.default_rng(5)
    audio = torch.from_numpy(rng.normal(0, 1, (35, 64)).astype(np.float32))
    for d in (3, -3, 0, 7):
        index = np.arange(35) + d
        video = audio[np.clip(index, 0, 34)].clone()
        video[(index < 0) | (index > 34)] += 5.0
        result = lse_from_distances(distance_matrix(video, audio, 15), 15)
        assert result.offset == -d
        assert result.audio_delay_ms == 40.0 * d
        assert result.min_index == 15 + d


# --------------------------------------------------------------------------- preprocessing


def test_crop_geometry_matches_reference():
    g = np.load(LOCAL / "crop_geometry.npz")
    geometry = crop_geometry(g["bbox"])
    for ours, ref in (("raw_s", "raw_s"), ("raw_x", "raw_x"), ("raw_y", "raw_y"),
                      ("s", "det_s"), ("x", "det_x"), ("y", "det_y")):
        assert np.abs(getattr(geometry, ours) - g[ref]).max() < 1e-9, ours
    np.testing.assert_array_equal(geometry.bsi, g["bsi"])
    np.testing.assert_array_equal(geometry.rect, g["rect"])
    assert len(set(geometry.x[-6:])) == 1  # frozen by the zero-padded median at the end


def golden_crop_frames(g) -> np.ndarray:
    """The 30 source frames of crop_golden.npz, rebuilt from its rule."""
    frames = np.empty((len(g["offsets"]), 288, 360, 3), np.uint8)
    frames[:] = g["canvas_bgr"]
    sprite = g["sprite"]
    for frame, (ox, oy) in zip(frames, g["offsets"], strict=True):
        y0, x0 = max(oy, 0), max(ox, 0)
        y1, x1 = min(oy + sprite.shape[0], 288), min(ox + sprite.shape[1], 360)
        frame[y0:y1, x0:x1] = sprite[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return frames


@needs_shared
def test_crops_match_reference():
    import hashlib

    g = np.load(GOLDEN / "crop_golden.npz")
    frames = golden_crop_frames(g)
    assert hashlib.sha256(frames.tobytes()).hexdigest().startswith("5e2821b4defccb2e")
    crops = crop_track(frames, g["bbox"])
    np.testing.assert_array_equal(crops, g["crops"])
    assert (crops[0] == 110).all(axis=-1).any()  # the grey padding shows


def _detections(golden: dict) -> list[list[Detection]]:
    return [[Detection(f["frame"], tuple(f["bbox"]), f["conf"]) for f in frame]
            for frame in golden["scenefaces"]]


@pytest.mark.parametrize("run", range(3))
def test_track_shot_matches_reference(run):
    golden = json.loads((LOCAL / "track_golden.json").read_text())
    spec = golden["runs"][run]
    scene = _detections(golden)
    before = [list(frame) for frame in scene]
    tracks = track_shot(scene, spec["opt"]["num_failed_det"], spec["opt"]["min_track"],
                        spec["opt"]["min_face_size"])
    assert scene == before  # the input is left alone
    assert len(tracks) == len(spec["tracks"])
    for ours, ref in zip(tracks, spec["tracks"], strict=True):
        assert ours.frames.tolist() == ref["frame"]
        assert np.abs(ours.boxes - np.array(ref["bbox"])).max() < 1e-9


def test_track_shot_skips_the_face_after_a_removed_one():
    """The reference removes joined faces from the list it iterates, so the next face of
    that frame is not looked at in that pass: here it starts its own track next pass."""
    box = (0.0, 0.0, 200.0, 200.0)
    scene = [[Detection(0, box)], [Detection(1, box), Detection(1, box)],
             [Detection(2, box)]]
    tracks = track_shot(scene, min_track=0, min_face_size=0)
    assert [t.frames.tolist() for t in tracks] == [[0, 1, 2], [1]]
