"""Singing-voice separation (paper Table 3): Y-Net models, mixtures, metrics, training and
the ``separate`` / ``train-separation`` / ``eval-separation`` commands."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import invoke

from lipsync_fix import media
from lipsync_fix.data.synth import make_talking_head, write_synthetic_dataset
from lipsync_fix.errors import CheckpointError, LipsyncError
from lipsync_fix.models.checkpoint import build_model, read_checkpoint, save_checkpoint
from lipsync_fix.separation import (
    YNET_PRESETS,
    SeparationConfig,
    YNet,
    build_separator,
    evaluate_separator,
    load_separator,
    separate_clip,
    train_separator,
)
from lipsync_fix.separation.metrics import SystemScores, sdr_sir, significance, table_rows
from lipsync_fix.separation.mixing import (
    MixtureConfig,
    MixtureDataset,
    collate,
    synth_accompaniment,
)
from lipsync_fix.separation.model import checkpoint_payload
from lipsync_fix.separation.training import spectral_loss
from lipsync_fix.training import read_metrics


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning OpenMP threads stall
    each other badly whenever another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sepdata")
    return write_synthetic_dataset(root, 12, 7, crops="known", duration_s=3.0,
                                   size=(128, 128),
                                   splits=(("train", 0.5), ("val", 0.25), ("test", 0.25)))


@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory):
    """The CI configuration: tiny Y-Net-mr, 80 steps of six 1.5 s mixtures of generated
    clips (measured: held-out SDR 3.98 dB and SIR 6.19 dB against the mixture's -0.97 dB,
    in 33 s; eight 2 s mixtures per step gave 3.58 / 8.49 dB in 60 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("seprun")
    cfg = SeparationConfig(data_root=str(data_root), out_dir=str(run), visual="mc18",
                           preset="tiny", steps=80, batch_size=6, lr=3e-3, seconds=1.5,
                           val_mixtures=8, log_every=20, checkpoint_every=40, quiet=True)
    started = time.monotonic()
    last = train_separator(cfg)
    seconds = time.monotonic() - started
    torch.set_num_threads(before)
    return cfg, last, seconds


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("visual", ["mc18", "vocalist", "syncnet-star"])
def test_model_shapes_for_each_visual_encoder(visual):
    torch.manual_seed(0)
    model = build_separator("tiny", visual).eval()
    mixture = torch.randn(2, 16000) * 0.1  # 1 s: 25 video frames
    frames = torch.rand(2, 25, 3, 48, 96)
    with torch.no_grad():
        feats = model.visual_encoder(frames)
        spec = model.stft(mixture)
        mask = model.mask(spec, frames)
        est = model(mixture, frames)
    assert feats.shape[:2] == (2, 25)  # one feature per frame, whichever encoder
    assert spec.shape == (2, 256, 101) and mask.shape == spec.shape
    assert float(mask.abs().max()) <= 1.0 + 1e-5  # bounded complex mask
    assert est.shape == mixture.shape and torch.isfinite(est).all()


def test_mc18_is_mixed_convolution():
    """3-D kernels in the stem and first stage, 1xkxk kernels in the last three."""
    model = build_separator("tiny", "mc18")
    enc = model.visual_encoder
    assert enc.stem[0].kernel_size == (3, 7, 7)
    assert enc.stages[0][0].conv1.kernel_size == (3, 3, 3)
    for stage in enc.stages[1:]:
        assert all(block.conv1.kernel_size == (1, 3, 3) for block in stage)
    assert len(enc.stages) == 4 and all(len(s) == 2 for s in enc.stages)  # ResNet-18


def test_vocalist_encoder_matches_the_sync_models_own_tokens(tmp_path):
    """Over a 5-frame window the separator's encoder is VocaLiST's ``encode_video``."""
    torch.manual_seed(1)
    sync = build_model("vocalist", "tiny").eval()
    path = save_checkpoint(tmp_path / "sync.pth", sync)
    model = build_separator("tiny", "vocalist", str(path)).eval()
    frames = torch.rand(1, 5, 3, 48, 96)
    with torch.no_grad():
        ours = model.visual_encoder(frames)
        theirs = sync.encode_video(frames.flatten(1, 2))
    assert torch.allclose(ours, theirs, atol=1e-5)


def _one_step(model: YNet) -> None:
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    mixture, target = torch.randn(2, 6400) * 0.1, torch.randn(2, 6400) * 0.05
    est, spec = model.separate_spec(mixture, torch.rand(2, 10, 3, 48, 96))
    spectral_loss(est, model.stft(target), spec).backward()
    opt.step()


@pytest.mark.parametrize("family", ["vocalist", "syncnet-star"])
def test_pretrained_encoder_is_frozen_and_e2e_trains(tmp_path, family):
    torch.manual_seed(2)
    sync = build_model(family, "tiny")
    path = save_checkpoint(tmp_path / f"{family}.pth", sync)
    prefix = "vid_prenet." if family == "vocalist" else "face_encoder."
    sync_state = {k[len(prefix):]: v for k, v in sync.state_dict().items()
                  if k.startswith(prefix)}

    pt = build_separator("tiny", family, str(path))  # PT: frozen by default
    inner = "vid_prenet." if family == "vocalist" else "face_encoder."
    before = {k: v.clone() for k, v in pt.visual_encoder.state_dict().items()}
    for key, value in sync_state.items():  # starts from the sync weights
        assert torch.equal(before[inner + key], value), key
    unet_before = pt.encoder[0][0].weight.clone()
    _one_step(pt)
    assert not any(p.requires_grad for p in pt.visual_encoder.parameters())
    assert not pt.visual_encoder.training  # BatchNorm statistics stay the sync model's
    for key, value in pt.visual_encoder.state_dict().items():
        assert torch.equal(value, before[key]), f"frozen {key} changed"
    assert not torch.equal(pt.encoder[0][0].weight, unet_before)  # the U-Net trains

    e2e = build_separator("tiny", family, str(path), freeze=False)
    first_conv = next(n for n, _ in e2e.visual_encoder.named_parameters())
    weight_before = dict(e2e.visual_encoder.named_parameters())[first_conv].clone()
    _one_step(e2e)
    assert not torch.equal(dict(e2e.visual_encoder.named_parameters())[first_conv],
                           weight_before)


def test_wrong_sync_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "syncnet.pth", build_model("syncnet", "tiny"))
    with pytest.raises(CheckpointError, match="not vocalist"):
        build_separator("tiny", "vocalist", str(path))
    with pytest.raises(CheckpointError, match="mc18"):
        build_separator("tiny", "mc18", str(path))
    with pytest.raises(CheckpointError, match="not ynet"):
        load_separator(str(path))


def test_chunked_separation_equals_one_pass_inside_a_chunk():
    """Overlap-add over chunks: a clip no longer than one chunk is one model call, and a
    long clip comes back at full length with finite samples."""
    torch.manual_seed(3)
    model = build_separator("tiny", "mc18").eval()
    wav, frames = torch.randn(16000) * 0.1, torch.rand(25, 3, 48, 96)
    with torch.no_grad():
        direct = model(wav[None], frames[None])[0]
    chunked = separate_clip(model, wav, frames, chunk_s=1.0, overlap_s=0.2)
    assert torch.allclose(chunked, direct, atol=1e-5)
    long_wav, long_frames = torch.randn(3 * 16000 + 100) * 0.1, torch.rand(75, 3, 48, 96)
    out = separate_clip(model, long_wav, long_frames, chunk_s=1.0, overlap_s=0.4)
    assert out.shape == long_wav.shape and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_sir_of_a_known_interferer_leak():
    """Estimate = target + a * interferer: SIR is 10 log10(|s|^2 / (a^2 |i|^2))."""
    rng = np.random.default_rng(0)
    s, i = rng.standard_normal(32000), rng.standard_normal(32000)
    a = 0.1
    _, sir = sdr_sir(s + a * i, s, s + i)
    expected = 10 * np.log10(np.sum(s**2) / (a**2 * np.sum(i**2)))
    assert sir == pytest.approx(expected, abs=0.2)


def test_sdr_of_white_noise_of_known_power():
    """Estimate = target + independent noise 20 dB down: SDR ~ 20 dB, SIR much higher."""
    rng = np.random.default_rng(1)
    s, i = rng.standard_normal(32000), rng.standard_normal(32000)
    noise = 0.1 * rng.standard_normal(32000)
    sdr, sir = sdr_sir(s + noise, s, s + i)
    assert sdr == pytest.approx(10 * np.log10(np.sum(s**2) / np.sum(noise**2)), abs=0.2)
    assert sir > sdr + 10
    # The unprocessed mixture scores the target-to-interference ratio (here 0 dB).
    mix_sdr, mix_sir = sdr_sir(s + i, s, s + i)
    assert mix_sdr == pytest.approx(10 * np.log10(np.sum(s**2) / np.sum(i**2)), abs=0.2)
    assert mix_sir == pytest.approx(mix_sdr, abs=0.2)


def test_table_and_significance_test():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, 30)
    a = SystemScores("a", [{"sdr": v + 3, "sir": v + 10} for v in base])
    b = SystemScores("b", [{"sdr": v, "sir": v + 10 + rng.normal(0, 0.5)} for v in base])
    rows = table_rows([a, b])
    assert [r["system"] for r in rows] == ["a", "b"]
    assert rows[0]["sdr"] == pytest.approx(float(np.mean(base + 3)), abs=0.01)
    test = significance(a, b)
    assert test["p_sdr"] < 0.05 and test["significant_sdr"]
    assert test["p_sir"] > 0.05 and not test["significant_sir"]  # the paper's "p > 0.05"


# ---------------------------------------------------------------------------------------------
# Mixtures
# ---------------------------------------------------------------------------------------------


def test_mixtures_are_deterministic_and_half_have_a_second_voice(data_root):
    cfg = MixtureConfig(seconds=1.0, seed=5)
    ds = MixtureDataset(data_root, "train", 8, cfg)
    again = MixtureDataset(data_root, "train", 8, cfg)
    for i in (0, 3):
        a, b = ds[i], again[i]
        assert torch.equal(a["mixture"], b["mixture"]) and torch.equal(a["frames"], b["frames"])
    other_seed = MixtureDataset(data_root, "train", 8, MixtureConfig(seconds=1.0, seed=6))
    assert not torch.equal(ds[0]["mixture"], other_seed[0]["mixture"])
    flags = [ds[i]["second_voice"] for i in range(8)]
    assert flags == [False, True] * 4
    batch = collate([ds[i] for i in range(4)])
    assert batch["mixture"].shape == (4, 16000) and batch["frames"].shape == (4, 25, 3, 48, 96)
    assert float(batch["mixture"].abs().max()) <= 0.99 + 1e-6


def test_mixture_composition_with_given_accompaniment(data_root, tmp_path):
    """With a pure-tone 'backing track', an accompaniment-only mixture minus its target is
    that tone; a two-voice mixture holds more than the tone."""
    acc_dir = tmp_path / "acc"
    acc_dir.mkdir()
    t = np.arange(3 * 16000) / 16000
    sf.write(acc_dir / "tone.wav", 0.3 * np.sin(2 * np.pi * 1000 * t), 16000)
    ds = MixtureDataset(data_root, "train", 4, MixtureConfig(seconds=1.0, seed=1), acc_dir)

    def tone_share(item) -> float:
        residual = (item["mixture"] - item["target"]).numpy()
        power = np.abs(np.fft.rfft(residual)) ** 2
        return float(power[990:1011].sum() / power.sum())  # 1 Hz bins: 1000 +- 10 Hz

    assert tone_share(ds[0]) > 0.99 and tone_share(ds[2]) > 0.99
    assert tone_share(ds[1]) < 0.9 and tone_share(ds[3]) < 0.9


def test_synthesised_accompaniment_is_seeded():
    a = synth_accompaniment(np.random.default_rng(3), 16000)
    b = synth_accompaniment(np.random.default_rng(3), 16000)
    assert np.array_equal(a, b) and np.sqrt(np.mean(a**2)) == pytest.approx(1.0, rel=1e-3)


def test_too_few_clips_is_refused(data_root):
    with pytest.raises(LipsyncError, match="mixtures need two"):
        MixtureDataset(data_root, "train", 4, MixtureConfig(seconds=30.0))


# ---------------------------------------------------------------------------------------------
# Training and evaluation (the CI configuration)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # the trained_run fixture trains for ~30-60 s
def test_small_config_trains_and_beats_the_mixture(trained_run, data_root):
    cfg, last, seconds = trained_run
    model = load_separator(str(last))
    held_out = MixtureDataset(data_root, "test", 16, MixtureConfig(seconds=2.0, seed=99))
    ours, mixture = evaluate_separator(model, held_out)
    assert mixture is not None
    o, m = ours.mean(), mixture.mean()
    print(f"\nY-Net-mr tiny, {cfg.steps} steps in {seconds:.0f} s: held-out SDR {o['sdr']:.2f} "
          f"dB, SIR {o['sir']:.2f} dB; mixture SDR {m['sdr']:.2f} dB, SIR {m['sir']:.2f} dB")
    assert o["sdr"] > m["sdr"] + 3.0
    assert o["sir"] > m["sir"] + 3.0

    ckpt = read_checkpoint(last)
    assert ckpt["model"] == "ynet" and ckpt["visual"] == "mc18" and ckpt["global_step"] == 80
    assert ckpt["dims"] == YNET_PRESETS["tiny"].to_dict() and ckpt["config"]["steps"] == 80
    assert ckpt["optimizer"] is not None
    train_log = read_metrics(last.parent, "train")
    assert [r["step"] for r in train_log] == [20, 40, 60, 80]
    assert train_log[-1]["loss"] < train_log[0]["loss"]
    assert read_metrics(last.parent, "val")[-1]["sdr"] > \
        read_metrics(last.parent, "val")[-1]["mixture_sdr"]


@pytest.mark.slow  # the trained_run fixture trains for ~30-60 s
def test_training_resumes_from_last(trained_run, tmp_path):
    import shutil

    cfg, last, _ = trained_run
    run = tmp_path / "resumed"
    shutil.copytree(last.parent, run)
    cfg2 = SeparationConfig.from_dict(cfg.to_dict(), out_dir=str(run), steps=81, resume=True,
                                      val_mixtures=2)
    train_separator(cfg2)
    assert read_checkpoint(run / "last.pth")["global_step"] == 81
    assert read_metrics(run, "train")[-1]["step"] == 81


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def singing_clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A talking-head video whose soundtrack is its voice plus accompaniment."""
    folder = tmp_path_factory.mktemp("clip")
    head = make_talking_head(11, duration_s=3.0)
    voice = head.audio.astype(np.float32)
    voice = 0.08 * voice / np.sqrt(np.mean(voice**2))
    acc = 0.08 * synth_accompaniment(np.random.default_rng(4), len(voice))
    path = folder / "singer.mp4"
    media.write_video(path, head.frames, head.fps, audio=voice + acc, sample_rate=16000)
    return path, voice


@pytest.mark.slow  # the trained_run fixture trains for ~30-60 s
def test_separate_command_writes_the_voice(trained_run, singing_clip, tmp_path):
    _, last, _ = trained_run
    video, voice = singing_clip
    dst = tmp_path / "voice.wav"
    done = invoke("separate", video, "-o", dst, "-c", last, "--json")
    assert done.code == 0, done.stderr
    [record] = done.json_lines()
    assert record["system"] == "ynet-mr" and record["output"] == str(dst)
    est, sr = sf.read(dst, dtype="float32")
    assert sr == 16000 and est.ndim == 1 and abs(len(est) - len(voice)) <= 640
    mixture = media.decode_audio(video, 16000)
    n = min(len(est), len(voice), len(mixture))
    ours, _ = sdr_sir(est[:n], voice[:n], mixture[:n])
    baseline, _ = sdr_sir(mixture[:n], voice[:n], mixture[:n])
    print(f"\nseparate on a generated clip: SDR {ours:.2f} dB vs mixture {baseline:.2f} dB")
    assert ours > baseline  # AAC coding and the detector's crops still leave a gain

    # An existing output is kept without --force (exit 2, one line), replaced with it.
    before = dst.read_bytes()
    again = invoke("separate", video, "-o", dst, "-c", last)
    assert again.code == 2 and "--force" in again.stderr
    assert "Traceback" not in again.stderr and dst.read_bytes() == before


@pytest.mark.slow  # the trained_run fixture trains for ~30-60 s
def test_separate_refuses_a_video_without_audio(trained_run, tmp_path):
    _, last, _ = trained_run
    silent = tmp_path / "mute.mp4"
    head = make_talking_head(12, duration_s=1.0)
    media.write_video(silent, head.frames, head.fps)
    dst = tmp_path / "voice.wav"
    done = invoke("separate", silent, "-o", dst, "-c", last)
    assert done.code == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "audio" in done.stderr
    assert not dst.exists() and not list(tmp_path.glob(".voice.wav*"))


@pytest.mark.slow  # the trained_run fixture trains for ~30-60 s
def test_eval_separation_prints_the_table_and_the_test(trained_run, data_root, tmp_path):
    _, last, _ = trained_run
    untrained = build_separator("tiny", "mc18")
    other = tmp_path / "untrained.pth"

    torch.save({"state_dict": untrained.state_dict(), **checkpoint_payload(untrained)}, other)
    args = ["eval-separation", "--data-root", data_root, "-c", last, "-c", other,
            "--mixtures", "6", "--seconds", "2"]
    done = invoke(*args, "--json")
    assert done.code == 0, done.stderr
    [result] = done.json_lines()
    systems = [r["system"] for r in result["table"]]
    assert systems[0] == "mixture" and len(systems) == 3 and "ynet-mr" in systems[1]
    assert set(result["significance"]) >= {"p_sdr", "p_sir", "significant_sdr"}
    assert result["table"][1]["sdr"] > result["table"][0]["sdr"]
    text = invoke(*args)
    assert text.code == 0 and "SDR" in text.stdout and "wilcoxon" in text.stdout


def test_train_separation_command_runs(data_root, tmp_path):
    run = tmp_path / "cli_run"
    done = invoke("train-separation", "--data-root", data_root, "--out", run, "--preset",
                  "tiny", "--steps", "2", "--batch-size", "2", "--seconds", "1", "--quiet")
    assert done.code == 0, done.stderr
    assert read_checkpoint(run / "last.pth")["global_step"] == 2
