"""Tests for the training pipeline: synthetic data sets, the authors' pair sampler, and the
training loop (checkpoints, exact resume, DDP on CPU).

Everything runs on a handful of ~2.4 s synthetic clips and the "tiny" model, so the file takes
well under a minute on two CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import invoke, train_config

from lipsync_fix.data.layout import frame_count, list_clips, read_wav
from lipsync_fix.data.synth import make_talking_head, write_clip_folder, write_synthetic_dataset
from lipsync_fix.data.synth.dataset import split_counts
from lipsync_fix.errors import LipsyncError
from lipsync_fix.features.mel import chunk_mel, chunk_rms, log_mel_spectrogram, mel_frames_for
from lipsync_fix.models import load_model, read_checkpoint
from lipsync_fix.models.vocalist import PRESETS, VocaLiST
from lipsync_fix.training import (
    SILENCE_RMS,
    SyncPairDataset,
    TrainConfig,
    read_metrics,
    train,
    window_mel,
)

REPO = Path(__file__).resolve().parents[1]
DURATION_S = 2.4  # 60 frames: comfortably more than the 25 a clip needs
SPF = 640  # audio samples per video frame


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic clips: 4 train, 1 val, 1 test."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), 6, seed=3, crops="known",
                                   duration_s=DURATION_S)


@pytest.fixture(scope="module")
def quiet_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip whose first 20 frames are digital silence (all zeros), the next 20 near-silent
    noise (RMS ~ 0.0006, non-zero after 16-bit quantisation), the rest ordinary speech."""
    head = make_talking_head(seed=5, duration_s=DURATION_S)
    audio = head.audio.copy()
    audio[: 20 * SPF] = 0.0
    noise = np.random.default_rng(0).normal(0.0, 6e-4, 20 * SPF).astype(np.float32)
    audio[20 * SPF : 40 * SPF] = noise
    head.audio = audio
    return write_clip_folder(head, tmp_path_factory.mktemp("quiet") / "clip")


def _quiet_region_ok(wav: np.ndarray) -> None:
    assert chunk_rms(wav, 0) == 1.0  # the reference's quirk: all-zero chunks report 1.0
    assert 0.0 < chunk_rms(wav, 25 * SPF) <= SILENCE_RMS


def _tiny_config(data_root: Path, out_dir: Path, **changes) -> TrainConfig:
    base = dict(
        data_root=str(data_root), out_dir=str(out_dir), preset="tiny", steps=4, batch_size=4,
        lr=1e-3, num_workers=0, val_every=2, val_samples=8, checkpoint_every=2, log_every=1,
        seed=11, quiet=True,
    )
    base.update(changes)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------------------------
# Synthetic data set
# ---------------------------------------------------------------------------------------------


def test_synthetic_dataset_layout(data_root: Path) -> None:
    splits = {s: list_clips(data_root, s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    every = [p for clips in splits.values() for p in clips]
    assert len(set(every)) == 6  # no clip in two splits
    for line in (data_root / "filelists" / "train.txt").read_text().splitlines():
        assert not Path(line).is_absolute()
    clip = splits["train"][0]
    assert frame_count(clip) == round(DURATION_S * 25)
    assert cv2.imread(str(clip / "0.jpg")).shape == (96, 96, 3)
    assert len(read_wav(clip / "audio.wav")) == frame_count(clip) * SPF
    manifest = json.loads((data_root / "dataset.json").read_text())
    assert manifest["n_clips"] == 6 and len(manifest["clips"]) == 6


def test_synthetic_dataset_is_deterministic_and_prefix_stable(
    data_root: Path, tmp_path: Path
) -> None:
    """Same seed: the same clips, whatever ``n_clips`` (clip i depends on (seed, i) only)."""
    small = write_synthetic_dataset(tmp_path / "again", 2, seed=3, crops="known",
                                    duration_s=DURATION_S, splits=(("train", 0.5), ("dev", 0.5)))
    assert [p.name for p in list_clips(small, "dev")] == ["00001"]
    assert not (small / "filelists" / "val.txt").exists()
    for i in range(2):
        a, b = data_root / f"clips/{i:05d}", small / f"clips/{i:05d}"
        assert (a / "audio.wav").read_bytes() == (b / "audio.wav").read_bytes()
        assert (a / "7.jpg").read_bytes() == (b / "7.jpg").read_bytes()
    other = write_synthetic_dataset(tmp_path / "other", 1, seed=4, crops="known",
                                    duration_s=DURATION_S)
    assert (other / "clips/00000/audio.wav").read_bytes() != (
        data_root / "clips/00000/audio.wav"
    ).read_bytes()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 9, 10, 40, 101])
def testsplit_counts(n: int) -> None:
    counts = split_counts(n, [0.8, 0.1, 0.1])
    assert sum(counts) == n
    if n >= 3:
        assert min(counts) >= 1
    assert counts[0] >= counts[1] and counts[0] >= counts[2]
    if n >= 10:
        assert abs(counts[0] - 0.8 * n) <= 1


# ---------------------------------------------------------------------------------------------
# Pair sampler
# ---------------------------------------------------------------------------------------------


def test_short_clips_are_skipped(data_root: Path, tmp_path: Path) -> None:
    source = list_clips(data_root, "train")[0]
    clips = []
    for n in (25, 26):  # the reference needs *more* than 25 frames
        clip = tmp_path / f"frames{n}"
        shutil.copytree(source, clip)
        for i in range(n, frame_count(source)):
            (clip / f"{i}.jpg").unlink()
        clips.append(clip)
    # Plenty of frames but only 30 frames of audio: N = min(frames, audio frames) = 30.
    short_audio = tmp_path / "short_audio"
    shutil.copytree(source, short_audio)
    sf.write(short_audio / "audio.wav", read_wav(source / "audio.wav")[: 30 * SPF], 16000)
    no_audio = tmp_path / "no_audio"
    shutil.copytree(source, no_audio)
    (no_audio / "audio.wav").unlink()
    ds = SyncPairDataset([*clips, short_audio, no_audio])
    assert ds.clips == [clips[1], short_audio]
    assert [p for p, _ in ds.skipped] == [clips[0], no_audio]
    assert list(ds.usable_frames) == [26, 30]
    draws = [ds.draw(i) for i in range(1000)]
    for clip, n in ((0, 26), (1, 30)):
        starts = [s for d in draws if d.clip == clip for s in (d.video_start, d.audio_start)]
        assert max(starts) == n - 5
    with pytest.raises(LipsyncError):
        SyncPairDataset([clips[0]])


def test_positives_and_negatives_are_balanced(data_root: Path) -> None:
    ds = SyncPairDataset.from_split(data_root, "train", seed=1)
    labels = np.array([ds.draw(i).label for i in range(4000)])
    assert abs(labels.mean() - 0.5) < 0.03  # 4000 fair coins: sd 0.008
    assert len({ds.draw(i).clip for i in range(200)}) == len(ds.clips)


def test_negatives_never_use_the_positive_start(data_root: Path) -> None:
    ds = SyncPairDataset.from_split(data_root, "train", seed=2)
    draws = [ds.draw(i) for i in range(3000)]
    for d in draws:
        last = int(ds.usable_frames[d.clip]) - ds.window_frames
        assert 0 <= d.video_start <= last and 0 <= d.audio_start <= last
        assert (d.audio_start == d.video_start) == (d.label == 1)
    starts = {d.video_start for d in draws}
    assert min(starts) == 0 and max(starts) == round(DURATION_S * 25) - 5  # ends included


def test_silent_positives_get_audible_negatives(quiet_clip: Path) -> None:
    """Near-silent positive audio is paired only with audio louder than the threshold; loud
    positives take any other window, quiet ones included."""
    wav = read_wav(quiet_clip / "audio.wav")
    _quiet_region_ok(wav)
    ds = SyncPairDataset([quiet_clip], seed=4)
    negatives = [d for d in (ds.draw(i) for i in range(6000)) if d.label == 0]
    rms = {s: chunk_rms(wav, s * SPF) for s in range(int(ds.usable_frames[0]) - 4)}
    quiet_f = [d for d in negatives if rms[d.video_start] <= SILENCE_RMS]
    loud_f = [d for d in negatives if rms[d.video_start] > SILENCE_RMS]
    assert len(quiet_f) > 100
    assert all(rms[d.audio_start] > SILENCE_RMS for d in quiet_f)
    assert any(rms[d.audio_start] <= SILENCE_RMS for d in loud_f)


def test_all_zero_audio_is_not_silence(quiet_clip: Path) -> None:
    """The reference's RMS of an all-zero chunk is 1, so digitally silent positives skip the
    rule (their negatives may be near-silent) and all-zero negatives count as audible."""
    wav = read_wav(quiet_clip / "audio.wav")
    ds = SyncPairDataset([quiet_clip], seed=5)
    negatives = [d for d in (ds.draw(i) for i in range(6000)) if d.label == 0]
    zero_f = [d for d in negatives if not np.any(wav[d.video_start * SPF :][: 5 * SPF])]
    assert len(zero_f) > 100
    near_silent = [d for d in zero_f if 0 < chunk_rms(wav, d.audio_start * SPF) <= SILENCE_RMS]
    assert near_silent, "digitally silent positives must not trigger the silence rule"
    quiet_f = [d for d in negatives if 0 < chunk_rms(wav, d.video_start * SPF) <= SILENCE_RMS]
    assert any(not np.any(wav[d.audio_start * SPF :][: 5 * SPF]) for d in quiet_f)


def test_silent_clips_drop_their_negatives(data_root: Path, tmp_path: Path) -> None:
    """A clip that is near-silent everywhere cannot give a negative: after the allowed
    redraws the sample is dropped and drawn anew (from any clip, with a new coin)."""
    head = make_talking_head(seed=8, duration_s=DURATION_S)
    head.audio = np.random.default_rng(1).normal(0, 3e-4, head.audio.shape).astype(np.float32)
    silent = write_clip_folder(head, tmp_path / "silent")
    loud = list_clips(data_root, "train")[0]
    ds = SyncPairDataset([silent, loud], seed=6)
    draws = [ds.draw(i) for i in range(2000)]
    assert all(d.clip == 1 for d in draws if d.label == 0)
    assert any(d.clip == 0 for d in draws if d.label == 1)
    assert any(d.dropped > 0 for d in draws)
    # Dropping only ever hits negatives, as in the reference: positives exceed one half.
    assert np.mean([d.label for d in draws]) > 0.55
    # Draw for draw, the same as the reference's loop replayed on the same generator: any
    # other number of redraws before a drop would consume the stream differently.
    wavs = [read_wav(clip / "audio.wav") for clip in ds.clips]
    for index in range(300):
        d = ds.draw(index)
        assert _reference_draw(ds, wavs, index) == (d.clip, d.video_start, d.audio_start,
                                                     d.label, d.dropped)


def _reference_draw(ds: SyncPairDataset, wavs: list[np.ndarray], index: int) -> tuple:
    """The authors' sampling loop as they wrote it: the failure counter starts at 0 and the
    sample is given up once the counter exceeds 10."""
    rng = ds.rng(index)
    dropped = 0
    while True:
        clip = int(rng.integers(len(ds.clips)))
        last = int(ds.usable_frames[clip]) - ds.window_frames
        f = int(rng.integers(0, last + 1))
        if rng.random() < 0.5:
            return clip, f, f, 1, dropped
        counter = 0
        while True:
            g = int(rng.integers(0, last + 1))
            if g == f:
                continue
            loud = [chunk_rms(wavs[clip], s * SPF) > SILENCE_RMS for s in (f, g)]
            if any(loud):
                return clip, f, g, 0, dropped
            counter += 1
            if counter > 10:
                break
        dropped += 1


def test_items_are_the_reference_inputs(data_root: Path) -> None:
    ds = SyncPairDataset.from_split(data_root, "train", seed=7)
    for index in range(6):
        pair = ds.draw(index)
        video, mel, label = ds[index]
        assert video.shape == (15, 48, 96) and video.dtype == torch.float32
        assert mel.shape == (1, 80, 16) and float(label) == pair.label
        folder = ds.clips[pair.clip]
        for k in range(5):  # frame-major BGR lower halves, 0..1
            crop = cv2.imread(str(folder / f"{pair.video_start + k}.jpg"))[48:]
            expected = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)
            torch.testing.assert_close(video[3 * k : 3 * k + 3], expected)
        wav = read_wav(folder / "audio.wav")
        torch.testing.assert_close(mel, chunk_mel(wav, pair.audio_start * SPF))


def test_sampling_is_reproducible_per_rank_and_across_workers(data_root: Path) -> None:
    ds = SyncPairDataset.from_split(data_root, "train", seed=9)
    again = SyncPairDataset.from_split(data_root, "train", seed=9)
    other_rank = SyncPairDataset.from_split(data_root, "train", seed=9, rank=1)
    first = [ds.draw(i) for i in range(50)]
    assert first == [again.draw(i) for i in range(50)]
    assert first == [ds.draw(i) for i in range(50)]  # the LRU cache changes nothing
    assert first != [other_rank.draw(i) for i in range(50)]

    def batches(workers: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(
            ds, batch_size=4, sampler=range(8), num_workers=workers
        )
        return [torch.cat([v.flatten(1), m.flatten(1)], 1) for v, m, _ in loader]

    for a, b in zip(batches(0), batches(2), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("window", [10, 25])
def test_longer_windows(data_root: Path, window: int) -> None:
    """The paper's window-specific models: windows of 10 or 25 frames, mel 3.2x as long."""
    assert mel_frames_for(window) == {10: 32, 25: 80}[window]
    ds = SyncPairDataset.from_split(data_root, "train", window_frames=window, seed=3)
    video, mel, _ = ds[0]
    assert video.shape == (3 * window, 48, 96)
    assert mel.shape == (1, 80, mel_frames_for(window))
    pair = ds.draw(0)
    wav = read_wav(ds.clips[pair.clip] / "audio.wav")
    start = pair.audio_start * SPF
    expected = log_mel_spectrogram(wav[start : start + window * SPF])[:, :-1]
    torch.testing.assert_close(mel[0], expected)
    assert all(d.video_start <= 60 - window for d in map(ds.draw, range(500)))
    model = VocaLiST(PRESETS["tiny"]).eval()
    with torch.no_grad():
        assert model(video[None], mel[None]).shape == (1,)


def test_window_mel_is_chunk_mel_for_five_frames(data_root: Path) -> None:
    wav = read_wav(list_clips(data_root, "train")[0] / "audio.wav")
    torch.testing.assert_close(window_mel(wav, 7), chunk_mel(wav, 7 * SPF))
    with pytest.raises(ValueError):
        window_mel(wav, 57, window_frames=10)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def test_config_files_and_overrides(tmp_path: Path) -> None:
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps({"data_root": "d", "out_dir": "o", "steps": 7}))
    cfg = TrainConfig.from_file(json_file, lr=1e-3, num_workers=None)
    assert (cfg.steps, cfg.lr, cfg.num_workers, cfg.batch_size) == (7, 1e-3, None, 128)
    toml_file = tmp_path / "run.toml"
    toml_file.write_text('[train]\ndata_root = "d"\nout_dir = "o"\npreset = "tiny"\n')
    cfg = TrainConfig.from_file(toml_file, steps="12", quiet="true", resume_from="none")
    assert (cfg.preset, cfg.steps, cfg.quiet, cfg.resume_from) == ("tiny", 12, True, None)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"data_root": "d", "out_dir": "o", "batchsize": 3})
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(data_root="d", out_dir="o", preset="huge")


# ---------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Steps 1..4 in one go (checkpoints at 2 and 4, validation at 2 and 4)."""
    out = tmp_path_factory.mktemp("straight")
    assert train(_tiny_config(data_root, out)) == out / "last.pth"
    return out


@pytest.mark.slow  # its fixture trains 4 steps of the tiny model: ~10-30 s
def test_training_writes_checkpoints_metrics_and_summary(straight_run: Path) -> None:
    for name in ("checkpoint_step000002.pth", "checkpoint_step000004.pth", "last.pth"):
        assert (straight_run / name).is_file()
    model = load_model(straight_run / "last.pth", family="vocalist")
    assert model.dims == PRESETS["tiny"]
    ckpt = read_checkpoint(straight_run / "last.pth")  # weights_only=True inside
    assert ckpt["global_step"] == 4 and ckpt["global_epoch"] == 4 * 4 // 4
    assert ckpt["config"]["preset"] == "tiny" and ckpt["window_frames"] == 5
    assert ckpt["optimizer"]["state"] and len(ckpt["rng"]["torch"]) == 1
    losses = [r["loss"] for r in read_metrics(straight_run, "train")]
    assert len(losses) == 4 and all(0.0 < x < 3.0 for x in losses)
    val = read_metrics(straight_run, "val")
    assert [r["step"] for r in val] == [2, 4]
    assert all(0.0 <= r["f1"] <= 1.0 and r["loss"] > 0 for r in val)
    summary = json.loads((straight_run / "summary.json").read_text())
    assert summary["samples_per_s"] > 0 and 0.0 <= summary["data_wait"] <= 1.0
    assert summary["ranks_identical"] and summary["world_size"] == 1
    initial = VocaLiST(PRESETS["tiny"]).state_dict()
    assert not torch.equal(model.state_dict()["fc.weight"], initial["fc.weight"])


def _assert_same_run(a: Path, b: Path) -> None:
    sa, sb = read_checkpoint(a / "last.pth"), read_checkpoint(b / "last.pth")
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    for key, value in sa["state_dict"].items():
        assert torch.equal(value, sb["state_dict"][key]), key
    for key, state in sa["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, sb["optimizer"]["state"][key][name]), (key, name)
    assert torch.equal(sa["rng"]["torch"][0], sb["rng"]["torch"][0])
    losses = [(r["step"], r["loss"]) for r in read_metrics(a, "train")]
    assert losses == [(r["step"], r["loss"]) for r in read_metrics(b, "train")]
    val = [(r["step"], r["loss"]) for r in read_metrics(a, "val")]
    assert val == [(r["step"], r["loss"]) for r in read_metrics(b, "val")]


@pytest.mark.slow  # six more training steps: ~15-40 s
def test_resume_continues_exactly(data_root: Path, straight_run: Path, tmp_path: Path) -> None:
    """Steps 1..2, then a new process-like run resuming 3..4 == steps 1..4 in one go."""
    out = tmp_path / "resumed"
    train(_tiny_config(data_root, out, steps=2))
    assert read_checkpoint(out / "last.pth")["global_step"] == 2
    train(_tiny_config(data_root, out, steps=4, resume=True))
    _assert_same_run(straight_run, out)

    other = tmp_path / "resumed_from"
    train(_tiny_config(data_root, other, steps=4,
                       resume_from=str(straight_run / "checkpoint_step000002.pth")))
    sa = read_checkpoint(straight_run / "last.pth")["state_dict"]
    sb = read_checkpoint(other / "last.pth")["state_dict"]
    assert all(torch.equal(v, sb[k]) for k, v in sa.items())


def test_gradient_accumulation_runs(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "accum"
    train(_tiny_config(data_root, out, steps=2, grad_accum=2, val_every=0,
                       checkpoint_every=0))
    assert read_checkpoint(out / "last.pth")["global_step"] == 2
    with pytest.raises(ValueError, match="divide"):
        train(_tiny_config(data_root, tmp_path / "bad", batch_size=5, grad_accum=2))


@pytest.mark.slow  # two training processes under torchrun: ~20 s
def test_torchrun_two_processes_on_cpu(data_root: Path, tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2`` with Gloo: ranks end with identical weights, only one
    set of files is written, and the loss curve looks like the one-process run's."""
    steps = 4
    single = tmp_path / "single"
    train(_tiny_config(data_root, single, steps=steps, val_every=steps, checkpoint_every=0))
    config = _tiny_config(data_root, tmp_path / "ddp", steps=steps, val_every=steps,
                          checkpoint_every=0)
    config_file = tmp_path / "ddp.json"
    config_file.write_text(json.dumps(config.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "lipsync_fix.training", "--config", str(config_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = Path(config.out_dir)
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(summary["param_digests"]) == 2
    assert summary["ranks_identical"], summary["param_digests"]
    ckpt = read_checkpoint(ddp / "last.pth")
    assert ckpt["global_step"] == steps and len(ckpt["rng"]["torch"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    load_model(ddp / "last.pth", family="vocalist")
    # Same initial weights, lr and global batch: the curves agree in level and length (the
    # samples differ, so they cannot agree exactly).
    one = np.array([r["loss"] for r in read_metrics(single, "train")])
    two = np.array([r["loss"] for r in read_metrics(ddp, "train")])
    assert len(one) == len(two) == steps and np.all(np.isfinite(two))
    assert abs(one.mean() - two.mean()) < 0.15
    val_one, val_two = read_metrics(single, "val")[-1], read_metrics(ddp, "val")[-1]
    assert abs(val_one["loss"] - val_two["loss"]) < 0.1


def test_train_command_writes_loadable_checkpoint(data_root: Path, tmp_path: Path) -> None:
    """`lipsync-fix train` is the CLI face of train(): a few steps, then load last.pth."""
    run = invoke("train", "--data-root", data_root, "--out", tmp_path / "run", "--preset",
                 "tiny", "--steps", "2", "--batch-size", "4", "--device", "cpu", "--quiet",
                 "--config", train_config(tmp_path))
    assert run.code == 0, run.stderr
    assert load_model(tmp_path / "run" / "last.pth", family="vocalist").dims.d_model == 32
