"""MTDVocaLiST: its authors' reference numbers (tests/data/mtdvocalist, made with the
golden weight rule at its widths), its input recipe, and its authors' file format."""

from __future__ import annotations

import hashlib
import inspect
import json
import re

import cv2
import numpy as np
import pytest
import torch
from conftest import DATA, assert_forward_stages, invoke

from lipsync_fix import media
from lipsync_fix.cli import lse as lse_cli
from lipsync_fix.data.layout import load_clip, write_clip
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.errors import CheckpointError
from lipsync_fix.evaluation.bench_folder import checkpoint_for
from lipsync_fix.evaluation.bench_main_job import COMPARED_MODELS
from lipsync_fix.evaluation.golden import rule_state_dict
from lipsync_fix.evaluation.protocols import PROTOCOLS, evaluate_folder
from lipsync_fix.features.inputs import MTDVOCALIST, WAV2LIP, recipe_for
from lipsync_fix.features.visual import frames_from_stacked, torchvision_resize
from lipsync_fix.models import MTD_DIMS, MTDVocaLiST, VocaLiST, count_parameters
from lipsync_fix.models.checkpoint import model_from_checkpoint, read_checkpoint
from lipsync_fix.models.registry import (
    REGISTRY_FILE,
    default_model_name,
    load_model,
    load_registry,
)
from lipsync_fix.models.store import ASSETS, LAYOUTS, trust_path
from lipsync_fix.models.vocalist import PRESETS
from lipsync_fix.sync.scoring import OUT_OF_RANGE, ScoreOptions, score_matrix

MTD_DATA = DATA / "mtdvocalist"
MANIFEST = LAYOUTS / "mtdvocalist.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    video_tokens, audio_tokens = assert_forward_stages(
        mtd_model, np.load(MTD_DATA / "forward_golden.npz"))
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


# --- mtdvocalist-lrs2: trust on first use, the default model ------------------------------

RELEASE = "https://github.com/xjchenGit/MTDVocaLiST/releases/download/v1.0/pure_MTDVocaLiST.pth"


@pytest.fixture(scope="module")
def mtd_file(tmp_path_factory) -> bytes:
    """What the release holds, as far as can be known here: the authors' format
    (``{"state_dict"}`` only) at MTDVocaLiST's widths, weights from the golden rule."""
    path = tmp_path_factory.mktemp("release") / "pure_MTDVocaLiST.pth"
    torch.save({"state_dict": rule_state_dict(MANIFEST)}, path)
    return path.read_bytes()


def registry_with(tmp_path, monkeypatch, url: str, **changes) -> dict:
    """The package's registry with mtdvocalist-lrs2's release URL pointing at ``url`` (the
    ``$LIPSYNC_FIX_REGISTRY`` override); the other entries as shipped."""
    registry = json.loads(REGISTRY_FILE.read_text())
    registry["mtdvocalist-lrs2"]["urls"] = [url]
    registry["mtdvocalist-lrs2"].update(changes)
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(registry))
    monkeypatch.setenv("LIPSYNC_FIX_REGISTRY", str(path))
    return registry


def cache_files(cache) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_the_entry_is_the_release():
    entry = json.loads(REGISTRY_FILE.read_text())["mtdvocalist-lrs2"]
    assert entry["urls"] == [RELEASE] and entry["filename"] == "pure_MTDVocaLiST.pth"
    assert entry["family"] == "mtdvocalist" and entry["parameters"] == 13_280_961
    assert entry["sha256"] is None and (ASSETS / entry["layout"]) == MANIFEST
    assert entry["card"] == "mtdvocalist.md" and entry["download_by_default"] is True
    assert entry["accuracy"]["by_context"]["5"] == 91.46
    assert entry["accuracy"]["by_context"]["15"] == 99.68
    listing = {r["name"]: r for r in invoke("models", "--json").json_lines()}
    for name, k5, k15 in (("vocalist-lrs2", 92.8, 99.8), ("mtdvocalist-lrs2", 91.46, 99.68),
                          ("syncnet-v2", 75.8, 96.1)):
        row = listing[name]
        assert row["accuracy"]["by_context"]["5"] == k5, name
        assert row["accuracy"]["by_context"]["15"] == k15, name
        assert row["cost_per_window"]["seconds"] > 0 and row["parameters"] > 0, name
        assert row["cost_per_window"]["command"].startswith("lipsync-fix bench main-job")
    assert listing["mtdvocalist-lrs2"]["weights_mb"] == 53.1
    text = invoke("models").stdout
    assert "accuracy: LRS2 test, within ±1 frame: 91.5 % (K=5), 99.7 % (K=15)" in text
    assert re.search(r"cost: \d+\.\d{3} s per window \(", text)


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """A 2 s generated talking head with its audio 120 ms late."""
    clip = make_talking_head(4, duration_s=2.0, audio_delay_ms=120)
    path = tmp_path_factory.mktemp("talk") / "talk.mp4"
    media.write_video(path, clip.frames, clip.fps, audio=clip.audio, sample_rate=16000)
    return path


def test_first_use_downloads_checks_records_prints_and_fixes(
        tmp_path, monkeypatch, server, mtd_file, talk, private_cache):
    """The issue's Done-when: an empty cache, a server standing in for GitHub, and the
    README's first command with no -c. (Rule weights score nothing real, so the estimate
    is uncertain and --apply-uncertain makes the fix be written.)"""
    server.files["pure_MTDVocaLiST.pth"] = mtd_file
    registry_with(tmp_path, monkeypatch, f"{server.base}/v1.0/pure_MTDVocaLiST.pth")
    out = tmp_path / "fixed.mp4"
    run = invoke(talk, "-o", out, "--apply-uncertain", "--max-segments", "2")
    assert run.code == 0, run.stderr
    digest = sha256(mtd_file)
    target = private_cache / "pure_MTDVocaLiST.pth"
    assert target.read_bytes() == mtd_file and out.is_file()
    record = json.loads(trust_path(target).read_text())
    assert record["sha256"] == digest and record["size_bytes"] == len(mtd_file)
    assert record["source"] == f"{server.base}/v1.0/pure_MTDVocaLiST.pth"
    lines = run.error_lines
    [printed] = [line for line in lines if digest in line]
    assert printed.startswith("mtdvocalist-lrs2: no published sha256; trusting this first "
                              f"download: sha256 {digest}, {len(mtd_file):,} bytes")
    [chosen] = [line for line in lines if line.startswith("using ")]
    assert chosen.startswith(f"using mtdvocalist-lrs2 (mtdvocalist, from {target}); for "
                             "better accuracy get vocalist-lrs2: run lipsync-fix models "
                             "download vocalist-lrs2")
    assert server.hits == ["/v1.0/pure_MTDVocaLiST.pth"]

    # later uses take the cached file, checked against the record, without downloading
    assert default_model_name(quiet=True) == "mtdvocalist-lrs2"
    loaded = load_model("mtdvocalist-lrs2")
    assert loaded.origin["name"] == "mtdvocalist-lrs2" and loaded.origin["sha256"] == digest[:12]
    assert server.hits == ["/v1.0/pure_MTDVocaLiST.pth"]
    verify = invoke("models", "verify", "mtdvocalist-lrs2")
    assert verify.code == 0 and "verified (against the sha256 recorded on first use)" \
        in verify.stdout
    listing = {r["name"]: r for r in invoke("models", "--json").json_lines()}
    assert listing["mtdvocalist-lrs2"]["trust"] == "recorded on first use"
    assert listing["mtdvocalist-lrs2"]["verified"] is True

    # a file changed afterwards is caught by the record: verify fails, a load fetches the
    # release again and accepts it only with the recorded hash
    target.write_bytes(mtd_file[:-1] + b"!")
    broken = invoke("models", "verify", "mtdvocalist-lrs2")
    assert broken.code == 1 and f"not the recorded on first use {digest}" in broken.stderr
    assert load_model("mtdvocalist-lrs2").family == "mtdvocalist"
    assert target.read_bytes() == mtd_file and len(server.hits) == 2

    # a sha256 written into the registry later wins over the record
    registry_with(tmp_path, monkeypatch, f"{server.base}/v1.0/pure_MTDVocaLiST.pth",
                  sha256="0" * 64)
    with pytest.raises(CheckpointError, match="did not match its sha256"):
        load_model("mtdvocalist-lrs2")


def test_offline_with_no_model_fails_in_one_line_naming_it(tmp_path, monkeypatch, dead_url,
                                                            talk, private_cache):
    registry_with(tmp_path, monkeypatch, f"{dead_url}/pure_MTDVocaLiST.pth")
    out = tmp_path / "fixed.mp4"
    run = invoke(talk, "-o", out)
    assert run.code == 1  # a checkpoint that cannot be downloaded (README: exit status)
    [line] = run.error_lines
    assert "cannot download mtdvocalist-lrs2: no network" in line
    assert "--checkpoint PATH" in line and "lipsync-fix models download mtdvocalist-lrs2" in line
    assert not out.exists() and cache_files(private_cache) == []


@pytest.mark.parametrize("served", ["garbage", "vocalist-layout"])
def test_a_wrong_download_is_refused_and_leaves_nothing(tmp_path, monkeypatch, server,
                                                        served, private_cache):
    if served == "garbage":
        body = b"<html>rate limited</html>"
    else:  # a real checkpoint, of the wrong model
        path = tmp_path / "tiny.pth"
        torch.save({"state_dict": VocaLiST(PRESETS["tiny"]).state_dict()}, path)
        body = path.read_bytes()
    server.files["pure_MTDVocaLiST.pth"] = body
    registry_with(tmp_path, monkeypatch, f"{server.base}/pure_MTDVocaLiST.pth")
    run = invoke("models", "download", "mtdvocalist-lrs2")
    assert run.code == 1
    [line] = run.error_lines
    assert "cannot download mtdvocalist-lrs2" in line and "is not the expected model file" in line
    assert cache_files(private_cache) == []


def test_default_policy(tmp_path, monkeypatch, server, dead_url, mtd_file, private_cache):
    """vocalist-lrs2 when cached and verified; else mtdvocalist-lrs2 (downloaded); offline,
    syncnet-v2 when cached."""
    registry = registry_with(tmp_path, monkeypatch, f"{dead_url}/pure_MTDVocaLiST.pth")
    syncnet = tmp_path / "syncnet.pth"
    torch.save({"state_dict": {"netcnnaud.0.weight": torch.zeros(1)}}, syncnet)
    registry["syncnet-v2"]["sha256"] = sha256(syncnet.read_bytes())
    registry["vocalist-lrs2"]["sha256"] = "1" * 64  # published, and not what is cached
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    private_cache.mkdir(parents=True)
    (private_cache / "syncnet_v2.model").write_bytes(syncnet.read_bytes())
    assert default_model_name(quiet=True) == "syncnet-v2"  # offline: the cached fallback
    (private_cache / "vocalist_5f_lrs2.pth").write_bytes(b"not the published file")
    assert default_model_name(quiet=True) == "syncnet-v2"  # cached but not verified
    server.files["pure_MTDVocaLiST.pth"] = mtd_file
    registry["mtdvocalist-lrs2"]["urls"] = [f"{server.base}/pure_MTDVocaLiST.pth"]
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    assert default_model_name(quiet=True) == "mtdvocalist-lrs2"  # online: downloaded
    registry["vocalist-lrs2"]["sha256"] = sha256(b"not the published file")
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    assert default_model_name(quiet=True) == "vocalist-lrs2"
    assert load_registry()["syncnet-v2"]["default"] > load_registry()["mtdvocalist-lrs2"][
        "default"] > load_registry()["vocalist-lrs2"]["default"]


def test_lse_keeps_syncnet_v2():
    """LSE-D/LSE-C are defined by SyncNet: `lse` never takes the default model."""
    default = inspect.signature(lse_cli.lse_command).parameters["checkpoint"].default
    assert default == "syncnet-v2"


def test_benchmarks_build_mtdvocalist_with_rule_weights(tmp_path, mtd_model):
    """`bench folder -c mtd-size` and `bench main-job --compare-models` time the real
    family (its recipe included), with the golden rule's weights."""
    model = load_model(checkpoint_for("mtd-size", tmp_path))
    assert type(model) is MTDVocaLiST and recipe_for(model) is MTDVOCALIST
    for key, value in mtd_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert [name for name, _, _ in COMPARED_MODELS] == [
        "vocalist-lrs2", "mtdvocalist-lrs2", "syncnet-v2"]


def test_a_data_set_of_other_sized_crops_is_read_with_the_family_resize(tmp_path):
    """`eval` reads a clip folder's images through the recipe: stored faces of another
    size are resized as the family's authors' loader resized them."""
    faces = np.random.default_rng(3).integers(0, 256, (3, 120, 100, 3), dtype=np.uint8)
    folder = write_clip(tmp_path / "clip", faces, np.zeros(3 * 640, np.float32))
    stored = [cv2.imread(str(folder / f"{i}.jpg")) for i in range(3)]  # as JPEG decodes
    mtd = load_clip(folder, MTDVOCALIST.crop_size, MTDVOCALIST.fit_crop).crops
    vocalist = load_clip(folder, WAV2LIP.crop_size, WAV2LIP.fit_crop).crops
    for i, image in enumerate(stored):
        assert np.array_equal(mtd[i], torchvision_resize(image, 96))
        assert np.array_equal(vocalist[i], cv2.resize(image, (96, 96)))
    assert np.array_equal(load_clip(folder).crops, vocalist)  # the default stays OpenCV's


def test_eval_reads_faces_saved_at_their_detected_size(tmp_path):
    """The authors' layout as Wav2Lip's preprocessing writes it (faces at the size they
    were detected): eval resizes them with the family's resize instead of refusing."""
    clip = make_talking_head(6, duration_s=2.4)
    faces = np.stack([cv2.resize(np.ascontiguousarray(f[:, :, ::-1]), (100, 120))
                      for f in clip.frames])
    write_clip(tmp_path / "raw" / "clip", faces, clip.audio)
    torch.manual_seed(0)
    model = MTDVocaLiST(PRESETS["tiny"]).eval()
    result = evaluate_folder(model, tmp_path / "raw", PROTOCOLS["lrs2"], split=None)
    assert result.clips == 1 and result.windows > 40 and not result.skipped
