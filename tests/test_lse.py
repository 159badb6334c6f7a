"""LSE-D / LSE-C: the metric's arithmetic, the video pipeline, and the ``lse`` and
``bench lse`` commands (the golden comparisons are in test_syncnet_golden.py)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from lipsync_fix import faces, media
from lipsync_fix.compute import full_float32
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.errors import ClipTooShortError, MediaError, NoFaceError, UsageError
from lipsync_fix.evaluation.bench_lse import benchmark_model
from lipsync_fix.faces.reference import crop_frame, crop_geometry
from lipsync_fix.features.mfcc import int16_scale, mfcc_matrix
from lipsync_fix.lse import (
    MIN_TRACK_FRAMES,
    FaceTrack,
    LseOptions,
    crop_tracks,
    distance_matrix,
    embed_clip,
    evaluate_crops,
    lse_from_distances,
    lse_video,
    summarize,
    tracks_ours,
    tracks_reference,
)
from lipsync_fix.models import sha256_of
from lipsync_fix.models.syncnet_star import SYNCNET_PRESETS, SyncNetStar
from lipsync_fix.models.vocalist import PRESETS, VocaLiST
from lipsync_fix.sync.scoring import num_windows

CLI = [sys.executable, "-m", "lipsync_fix"]


def run(*args, timeout=600):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def model():
    return benchmark_model()


def random_crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(("frames", "samples", "windows"), [
    (40, 25600, 35),  # the golden clip
    (40, 640 * 30 + 639, 25),  # the shorter stream decides, whole frames only
    (6, 640 * 6, 1),
    (5, 640 * 100, 0),
    (100, 100, 0),
])
def test_window_count(frames, samples, windows):
    assert num_windows(frames, samples) == windows


def test_distance_matrix_pads_with_zero_vectors():
    rng = np.random.default_rng(1)
    video = torch.from_numpy(rng.normal(size=(6, 8)).astype(np.float32))
    audio = torch.from_numpy(rng.normal(size=(6, 8)).astype(np.float32))
    d = distance_matrix(video, audio, vshift=2)
    assert d.shape == (6, 5)
    # column j pairs video i with audio i + j - 2; outside the clip, with a zero vector
    assert torch.isclose(d[3, 4], torch.linalg.norm(video[3] - audio[5] + 1e-6))
    assert torch.isclose(d[0, 0], torch.linalg.norm(video[0] + 1e-6))
    assert torch.isclose(d[5, 3], torch.linalg.norm(video[5] + 1e-6))
    assert torch.isclose(d[2, 2], torch.linalg.norm(video[2] - audio[2] + 1e-6))


def test_offset_confidence_and_ties():
    # column means 5, 3, 3, 4, 6: the first of the two minima wins, as torch.min does
    distances = torch.tensor([[5.0, 3.0, 3.0, 4.0, 6.0], [5.0, 3.0, 3.0, 4.0, 6.0]])
    result = lse_from_distances(distances, vshift=2)
    assert result.min_index == 1 and result.offset == 1
    assert result.audio_delay_ms == -40.0  # the reference's +1: the audio leads by a frame
    assert result.lse_d == 3.0 and result.median == 4.0 and result.lse_c == 1.0
    assert result.windows == 2
    record = result.to_json()
    assert record["syncnet_offset"] == 1 and record["audio_delay_frames"] == -1
    with pytest.raises(ValueError, match="expected"):
        lse_from_distances(distances, vshift=3)


def test_framewise_confidence_is_median_filtered_with_zero_ends():
    """fconf = median - distance at the best column, then a 9-tap median with zero padding:
    a lone spike is removed and the first values are pulled towards 0."""
    distances = torch.full((12, 3), 10.0)
    distances[:, 1] = 8.0  # best column: fconf = 2 everywhere ...
    distances[6, 1] = -20.0  # ... but one spike of 30
    result = lse_from_distances(distances, vshift=1)
    assert result.min_index == 1
    conf = result.framewise_confidence
    assert conf[6] == pytest.approx(2.0)  # the spike is gone
    assert conf[0] == pytest.approx(2.0) and conf[-1] == pytest.approx(2.0)
    distances[:4, 1] = 9.0  # fconf 1 at the start: zeros from the padding win there
    conf = lse_from_distances(distances, vshift=1).framewise_confidence
    assert conf[0] == pytest.approx(1.0) and conf[1] == pytest.approx(1.0)


def test_evaluate_crops_is_the_whole_evaluate(model):
    crops = random_crops(8)
    audio = int16_scale(np.random.default_rng(2).uniform(-0.3, 0.3, 8 * 640))
    whole = evaluate_crops(model, crops, audio, vshift=3, batch_size=1)
    lips, sounds = embed_clip(model, crops, mfcc_matrix(audio), 3, batch_size=20)
    parts = lse_from_distances(distance_matrix(lips, sounds, 3), 3)
    assert whole.windows == 3
    np.testing.assert_allclose(whole.distances, parts.distances, rtol=1e-5)
    assert whole.offset == parts.offset
    assert whole.lse_c == pytest.approx(parts.lse_c, abs=2e-3)


def test_evaluate_crops_refuses_what_it_cannot_score(model):
    audio = np.zeros(640 * 10)
    with pytest.raises(ClipTooShortError, match="at least 6 frames"):
        evaluate_crops(model, random_crops(5), audio)
    with pytest.raises(ValueError, match="uint8 crops"):
        evaluate_crops(model, random_crops(8)[:, :96, :96], audio)
    with pytest.raises(UsageError, match="original SyncNet"):
        evaluate_crops(VocaLiST(PRESETS["tiny"]).eval(), random_crops(8), audio)


def test_tf32_is_off_while_the_metric_runs_and_restored_after():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with full_float32():
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_models_name_their_inputs():
    """The front end picks crops and features by this attribute (see SyncNetV2's doc)."""
    assert benchmark_model().inputs == "syncnet-v2"
    assert VocaLiST(PRESETS["tiny"]).inputs == "wav2lip"
    assert SyncNetStar(SYNCNET_PRESETS["tiny"]).inputs == "wav2lip"


def test_summary_is_mean_and_std_over_scored_videos():
    records = [{"input": "a", "lse_d": 7.0, "lse_c": 6.0},
               {"input": "b", "lse_d": 9.0, "lse_c": 2.0},
               {"input": "c", "error": "no face"}]
    summary = summarize(records)
    assert summary == {"videos": 2, "failed": 1, "lse_d_mean": 8.0, "lse_d_std": 1.0,
                       "lse_c_mean": 4.0, "lse_c_std": 2.0}
    assert summarize([])["lse_d_mean"] is None


# --------------------------------------------------------------------------- crops


def test_crop_frame_equals_cropping_the_padded_frame():
    """crop_frame never builds the padded frame; it must cut what slicing a frame padded
    with grey 110 would, including rectangles past the padding (Python slice rules)."""
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    checked = 0
    for _ in range(300):
        bsi = int(rng.integers(0, 40))
        r0, c0 = (int(v) for v in rng.integers(-30, 130, 2))
        r1, c1 = r0 + int(rng.integers(-5, 90)), c0 + int(rng.integers(-5, 90))
        padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), constant_values=110)
        patch = padded[r0:r1, c0:c1]
        if patch.size == 0:
            with pytest.raises(NoFaceError, match="empty crop"):
                crop_frame(frame, bsi, (r0, r1, c0, c1), 32)
            continue
        expected = cv2.resize(patch, (32, 32), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(crop_frame(frame, bsi, (r0, r1, c0, c1), 32), expected)
        checked += 1
    assert checked > 80


class BoxDetector:
    """Finds one fixed face box in every frame (x, y, w, h)."""

    def __init__(self, box: faces.Box) -> None:
        self.box = box

    def detect(self, frame: np.ndarray) -> list[faces.Box]:
        return [self.box]


def test_reference_tracker_per_shot():
    """Detection on every frame, shots split at cuts, shots shorter than min_track skipped,
    one track per shot with more than min_track detections."""
    dark = np.full((1, 240, 320, 3), 30, np.uint8)
    bright = np.full((1, 240, 320, 3), 220, np.uint8)
    chunks = [np.repeat(dark, 20, axis=0), np.repeat(bright, 12, axis=0),
              np.repeat(dark, 3, axis=0)]
    detector = BoxDetector(faces.Box(50, 40, 120, 130))
    tracks, n = tracks_reference(iter(chunks), detector, min_track=10, min_face_size=100)
    assert n == 35
    assert [(s.first, s.last) for s in tracks] == [(0, 19), (20, 31)]
    np.testing.assert_array_equal(tracks[0].boxes[0], [50, 40, 170, 170])
    tracks, _ = tracks_reference(iter(chunks), detector, min_track=15, min_face_size=100)
    assert [(s.first, s.last) for s in tracks] == [(0, 19)]
    tracks, _ = tracks_reference(iter(chunks), detector, min_track=10, min_face_size=200)
    assert tracks == []


def test_crop_tracks_cuts_each_track_from_one_pass():
    frames = np.random.default_rng(4).integers(0, 256, (20, 120, 160, 3), dtype=np.uint8)
    box = np.array([[30.0, 20.0, 110.0, 100.0]])
    tracks = [FaceTrack(2, box.repeat(8, 0)), FaceTrack(9, box.repeat(9, 0))]
    crops = crop_tracks([frames[:3], frames[3:11], frames[11:]], tracks)
    assert [c.shape for c in crops] == [(8, 224, 224, 3), (9, 224, 224, 3)]
    geometry = crop_geometry(box.repeat(8, 0))  # a still box stays put, even at the ends
    assert len(set(geometry.bsi)) == 1 and len({tuple(r) for r in geometry.rect}) == 1
    for crop, frame in ((crops[0][1], 3), (crops[0][7], 9), (crops[1][0], 9)):
        np.testing.assert_array_equal(
            crop, crop_frame(frames[frame], int(geometry.bsi[0]), geometry.rect[0]))
    with pytest.raises(MediaError, match="fewer than"):
        crop_tracks([frames[:12]], tracks)


def test_tracks_shorter_than_the_median_filter_would_collapse():
    """The 13-tap median with zero padding turns every box of a track under 7 frames into
    zeros (more padding than values in each window): such tracks are not scored."""
    box = np.array([[30.0, 20.0, 110.0, 100.0]])
    assert (crop_geometry(box.repeat(6, 0)).s == 0).all()
    assert (crop_geometry(box.repeat(MIN_TRACK_FRAMES, 0)).s == 40.0).all()


# --------------------------------------------------------------------------- videos


@pytest.fixture(scope="module")
def clips(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("lse")
    folder = root / "videos"
    folder.mkdir()
    for seed, delay in ((0, 0.0), (1, 120.0)):
        clip = make_talking_head(seed, duration_s=0.6, audio_delay_ms=delay)
        media.write_video(folder / f"talk{seed}.mp4", clip.frames, clip.fps, clip.audio,
                          clip.sample_rate)
    checkpoint = root / "syncnet_v2.model"
    torch.save({k: v for k, v in model.state_dict().items()
                if not k.endswith("num_batches_tracked")}, checkpoint)
    return root, folder, checkpoint


@pytest.mark.slow
def test_lse_video_matches_evaluate_on_its_crops(clips, model):
    _, folder, _ = clips
    path = folder / "talk0.mp4"
    result = lse_video(path, model, LseOptions(vshift=5))
    assert result.n_frames == 15 and result.tracker == "ours"
    assert result.face_coverage == 1.0 and len(result.tracks) == 1
    record = result.to_json()
    assert record["windows"] == 10 and record["vshift"] == 5
    assert record["audio_delay_ms"] == -40 * record["syncnet_offset"]

    # the same numbers as evaluate() on crops cut from the decoded frames
    frames = np.concatenate(list(media.iter_video_frames(path)))
    tracks, _ = tracks_ours([frames], faces.make_detector())
    crops = crop_tracks([frames], tracks)[0]
    audio = int16_scale(media.decode_audio(path))
    direct = evaluate_crops(model, crops, audio[: 15 * 640], vshift=5)
    np.testing.assert_allclose(result.main.scores.distances, direct.distances, rtol=1e-5)
    assert result.main.scores.offset == direct.offset
    # frames decoded a second time instead of kept in memory: the same result
    again = lse_video(path, model, LseOptions(vshift=5, frame_memory_bytes=0))
    np.testing.assert_array_equal(again.main.scores.distances, result.main.scores.distances)


def test_lse_video_refuses_a_video_without_sound(tmp_path, model):
    path = tmp_path / "mute.mp4"
    media.write_video(path, make_talking_head(0, duration_s=0.4).frames, 25.0)
    with pytest.raises(Exception, match="audio") as info:
        lse_video(path, model)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_lse_command_over_a_folder(clips):
    root, folder, checkpoint = clips
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    report = root / "lse.csv"
    result = run("lse", folder, "-c", checkpoint, "--vshift", "5", "--json",
                 "--report", report)
    assert result.returncode == 1, result.stderr  # one input failed, the others ran
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    records, summary = lines[:-1], lines[-1]["summary"]
    scored = [r for r in records if "error" not in r]
    assert len(records) == 3 and len(scored) == 2
    assert summary["videos"] == 2 and summary["failed"] == 1
    values = [r["lse_d"] for r in scored]
    assert summary["lse_d_mean"] == pytest.approx(np.mean(values), abs=1e-3)
    assert summary["lse_d_std"] == pytest.approx(np.std(values), abs=1e-3)
    for record in scored:
        assert record["audio_delay_ms"] == -40 * record["syncnet_offset"]
        assert record["model"] == {"name": str(checkpoint), "family": "syncnet-v2",
                                   "sha256": sha256_of(checkpoint)[:12]}
    rows = list(csv.DictReader(report.open()))
    assert {row["input"] for row in rows} == {r["input"] for r in records}
    assert all(row["lse_d"] for row in rows if not row["error"])
    (folder / "broken.mp4").unlink()
    text = run("lse", folder / "talk0.mp4", "-c", checkpoint, "--vshift", "5")
    assert text.returncode == 0, text.stderr
    assert "LSE-D" in text.stdout and "mean ± std over 1 video)" in text.stdout


def test_lse_command_refuses_another_model_family(clips, tmp_path):
    _, folder, _ = clips
    from lipsync_fix.models.checkpoint import save_checkpoint

    other = save_checkpoint(tmp_path / "tiny.pth", VocaLiST(PRESETS["tiny"]))
    result = run("lse", folder / "talk0.mp4", "-c", other, timeout=300)
    assert result.returncode == 2  # a usage error: nothing ran
    assert "not the syncnet-v2" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_bench_lse_command():
    result = run("bench", "lse", "--clips", "1", "--seconds", "0.6", "--json")
    assert result.returncode == 0, result.stderr
    bench = json.loads(result.stdout)  # the JSON alone: no human lines before it
    assert bench["clips"] == 1 and bench["frames"] == 15
    assert bench["ours_s"] > 0 and bench["frame_by_frame_s"] > 0
    assert bench["speedup"] == pytest.approx(bench["frame_by_frame_s"] / bench["ours_s"],
                                             rel=1e-2)
    clip = bench["per_clip"][0]
    assert {"ours", "frame_by_frame", "frame_by_frame_no_jpeg"} <= set(clip)
    assert bench["jpeg_lse_d_max_diff"] == pytest.approx(
        abs(clip["frame_by_frame"]["lse_d"] - clip["frame_by_frame_no_jpeg"]["lse_d"]),
        abs=1e-3)
