"""Tests for lipsync_fix.faces: detection, tracking, selection and Wav2Lip-style crops."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import skimage.data
from conftest import REALWORLD, needs_shared

from lipsync_fix import faces
from lipsync_fix.errors import LipsyncError, NoFaceError
from lipsync_fix.faces import Box

# Where the astronaut's face is in skimage's 512x512 photo (checked by eye): brows at
# y ~88, mouth centre at (225, 145), chin at y ~187, cheeks at x ~180 and ~275.
ASTRONAUT_FACE = Box(178, 82, 100, 108)
ASTRONAUT_MOUTH = (225.0, 145.0)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def haar() -> faces.HaarFaceDetector:
    return faces.HaarFaceDetector()


def face_patch(astronaut: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The astronaut's head and some background around it, optionally resized."""
    patch = astronaut[30:230, 140:320]
    return cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> np.ndarray:
    out = canvas.copy()
    out[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return out


def background(name: str, width: int, height: int) -> np.ndarray:
    image = cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def chunks(frames: np.ndarray, size: int = 16) -> Iterator[np.ndarray]:
    for start in range(0, len(frames), size):
        yield frames[start : start + size]


def mouth_in_crop(
    box: Box, frame_shape: tuple[int, ...], mouth: tuple[float, float]
) -> tuple[float, float]:
    """Row and column of a frame point inside the 96x96 crop of ``box`` (with Wav2Lip pads)."""
    height, width = frame_shape[:2]
    y1, y2 = max(0, int(box.y)), min(height, int(box.y2 + 10))
    x1, x2 = max(0, int(box.x)), min(width, int(box.x2))
    return (mouth[1] - y1) / (y2 - y1) * 96, (mouth[0] - x1) / (x2 - x1) * 96


# ---------------------------------------------------------------- boxes and parsing


def test_box_helpers() -> None:
    a, b = Box(0, 0, 10, 10), Box(5, 0, 10, 10)
    assert a.area == 100 and a.center == (5, 5) and (a.x2, a.y2) == (10, 10)
    assert a.iou(b) == pytest.approx(50 / 150)
    assert a.iou(Box(20, 20, 5, 5)) == 0
    assert a.scaled(2) == Box(0, 0, 20, 20)


def test_haar_s3fd_conversion_round_trips() -> None:
    haar_box = Box(100, 50, 80, 80, 7)
    s3fd_box = faces.haar_to_s3fd(haar_box)
    assert s3fd_box.y > haar_box.y and s3fd_box.y2 > haar_box.y2  # lower: chin, not forehead
    assert s3fd_box.center[0] == pytest.approx(haar_box.center[0])
    back = faces.s3fd_to_haar(s3fd_box)
    assert np.allclose(back.to_array(), haar_box.to_array())


def test_parse_face_box() -> None:
    assert faces.parse_face_box("10,20,100,120") == Box(10, 20, 100, 120)
    assert faces.parse_face_box(" 1.5, 2 ,3,4") == Box(1.5, 2, 3, 4)
    for bad in [
        "",
        "1,2,3",
        "1,2,3,4,5",
        "a,b,c,d",
        "1,2,0,5",
        "1,2,-3,4",
        "-1,2,3,4",
        "nan,1,2,3",
    ]:
        with pytest.raises(LipsyncError):
            faces.parse_face_box(bad)


def test_make_detector() -> None:
    fixed = faces.make_detector("haar", face_box="1,2,30,40")
    assert isinstance(fixed, faces.FixedBoxDetector) and fixed.box == Box(1, 2, 30, 40)
    assert isinstance(faces.make_detector("haar"), faces.HaarFaceDetector)
    with pytest.raises(LipsyncError, match="Unknown face detector"):
        faces.make_detector("dlib")
    if not faces.s3fd_available():
        assert isinstance(faces.make_detector("auto"), faces.HaarFaceDetector)
        with pytest.raises(LipsyncError):
            faces.make_detector("s3fd")


def test_s3fd_never_downloads_missing_weights(monkeypatch, tmp_path) -> None:
    """With face-alignment present but no cached weights, S3FD fails fast and clearly."""
    import torch

    monkeypatch.setattr(faces.detectors, "_face_alignment_installed", lambda: True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert faces.s3fd_weights_path() == tmp_path / "checkpoints" / faces.detectors.S3FD_WEIGHTS_FILE
    assert not faces.s3fd_available()
    assert isinstance(faces.make_detector("auto"), faces.HaarFaceDetector)
    with pytest.raises(LipsyncError, match="not cached"):
        faces.S3FDDetector()


def test_fixed_box_detector(astronaut) -> None:
    detector = faces.FixedBoxDetector(ASTRONAUT_FACE)
    assert detector.detect(astronaut) == [ASTRONAUT_FACE]
    with pytest.raises(LipsyncError, match="outside"):
        faces.FixedBoxDetector(Box(600, 10, 50, 50)).detect(astronaut)
    frames = np.stack([astronaut] * 6 + [astronaut[:, ::-1]] * 6)  # two shots
    result = faces.extract_face_crops([frames], detector, fps=25.0)
    assert result.face_coverage == 1.0 and len(result.tracks) == 2
    np.testing.assert_array_equal(result.crops[7], faces.crop_face(frames[7], ASTRONAUT_FACE))
    np.testing.assert_array_equal(result.boxes[0], ASTRONAUT_FACE.to_array())


# ---------------------------------------------------------------- detection and crops


def test_astronaut_face_detected(astronaut, haar) -> None:
    boxes = haar.detect(astronaut)
    assert len(boxes) == 1
    box = boxes[0]
    assert box.iou(ASTRONAUT_FACE) > 0.5
    assert 170 < box.center[0] < 290 and 70 < box.center[1] < 230
    near = haar.detect_near(astronaut, box)
    assert len(near) == 1 and near[0].iou(box) > 0.8


def test_astronaut_crop_puts_mouth_in_lower_half(astronaut, haar) -> None:
    box = haar.detect(astronaut)[0]
    crop = faces.crop_face(astronaut, box)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    row, col = mouth_in_crop(box, astronaut.shape, ASTRONAUT_MOUTH)
    assert 56 <= row <= 85, row  # VocaLiST sees rows 48..95
    assert 30 <= col <= 66, col


def test_crop_face_matches_wav2lip_geometry() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crop = faces.crop_face(frame, Box(20.7, 30.2, 50.0, 40.0))
    np.testing.assert_array_equal(crop, cv2.resize(frame[30:80, 20:70], (96, 96)))
    clipped = faces.crop_face(frame, Box(130, 100, 50, 40), pad=(5, 10, 0, 0))
    np.testing.assert_array_equal(clipped, cv2.resize(frame[95:120, 130:160], (96, 96)))
    with pytest.raises(ValueError):
        faces.crop_face(frame, Box(500, 500, 10, 10))
    boxes = np.array([[20.7, 30.2, 50.0, 40.0], [np.nan] * 4])
    batch = faces.crop_faces(np.stack([frame, frame]), boxes)
    np.testing.assert_array_equal(batch[0], crop)
    assert batch.shape == (2, 96, 96, 3) and not batch[1].any()


def test_no_face_in_noise_or_blank(haar) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert haar.detect(noise) == []
    assert haar.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    with pytest.raises(NoFaceError, match="no face found in 10 frames"):
        faces.extract_face_crops([np.stack([noise] * 10)], haar, fps=25.0)


# ---------------------------------------------------------------- tracking


def test_track_faces_bridges_short_gaps_and_splits_long_ones() -> None:
    def moving(frame: int) -> Box:
        return Box(100 + 2 * frame, 50, 80, 80)

    detections = [[moving(i)] if not 10 <= i < 18 else [] for i in range(40)]
    (track,) = faces.track_faces(detections, smooth_radius=0)
    assert (track.first, track.last, track.n_detections) == (0, 39, 32)
    assert track.box_at(14).x == pytest.approx(moving(14).x)  # interpolated
    assert track.coverage(40) == 1.0

    detections = [[moving(i)] if not 10 <= i < 30 else [] for i in range(40)]
    assert [(t.first, t.last) for t in faces.track_faces(detections, max_gap=12)] == [
        (0, 9),
        (30, 39),
    ]
    held = faces.track_faces(detections[:12], max_gap=12, hold=2)
    assert held[0].last == 11


def test_track_faces_breaks_at_cuts_and_smooths() -> None:
    jitter = np.random.default_rng(2).normal(0, 3, (30, 2))
    detections = [[Box(200 + jx, 100 + jy, 90, 90)] for jx, jy in jitter]
    cuts = np.zeros(30, dtype=bool)
    cuts[15] = True
    tracks = faces.track_faces(detections, cuts)
    assert [(t.first, t.last) for t in tracks] == [(0, 14), (15, 29)]
    smoothed_x = np.concatenate([t.boxes[:, 0] for t in tracks])
    assert smoothed_x.std() < 0.6 * jitter[:, 0].std()
    per_frame = faces.track_boxes_per_frame(tracks[1], 30)
    assert np.isnan(per_frame[:15]).all() and not np.isnan(per_frame[15:]).any()


def test_select_track_prefers_longest_times_largest() -> None:
    big_short = [[Box(0, 0, 100, 100)] if i < 50 else [] for i in range(100)]
    small_long = [[Box(300, 0, 60, 60)] for _ in range(100)]
    both = [a + b for a, b in zip(big_short, small_long, strict=True)]
    tracks = faces.track_faces(both)
    assert faces.select_track(tracks, 100).mean_width == pytest.approx(60)  # 1.0*60 > 0.5*100
    bigger = [[Box(0, 0, 150, 150)] if i < 50 else [] for i in range(100)]
    tracks = faces.track_faces([a + b for a, b in zip(bigger, small_long, strict=True)])
    assert faces.select_track(tracks, 100).mean_width == pytest.approx(150)
    assert faces.select_track([], 100) is None


def test_select_main_tracks_chains_shots_but_not_listeners() -> None:
    speaker = [[Box(0, 0, 100, 100)]] * 40 + [[Box(400, 50, 120, 120)]] * 40
    listener = [[Box(250, 0, 60, 60)]] * 40 + [[]] * 40
    blip = [[]] * 70 + [[Box(600, 300, 90, 90)]] * 2 + [[]] * 8
    cuts = np.zeros(80, dtype=bool)
    cuts[40] = True
    detections = [a + b + c for a, b, c in zip(speaker, listener, blip, strict=True)]
    tracks = faces.track_faces(detections, cuts)
    assert len(tracks) == 4
    main = faces.select_main_tracks(tracks, 80)
    assert [(t.first, t.last, round(t.mean_width)) for t in main] == [(0, 39, 100), (40, 79, 120)]


# ---------------------------------------------------------------- streaming driver


def test_translating_face_gives_one_smooth_track(astronaut, haar) -> None:
    canvas = np.full((512, 720, 3), 90, np.uint8)
    frames = np.stack([paste(canvas, astronaut, 4 * i, 0) for i in range(50)])
    result = faces.extract_face_crops(chunks(frames), haar, fps=25.0)
    assert len(result.tracks) == 1 and result.n_faces == 1
    assert result.face_coverage >= 0.95
    boxes = result.boxes[result.has_face]
    steps = np.diff(boxes[:, 0] + boxes[:, 2] / 2)
    assert np.abs(steps - 4).max() < 2.5, steps
    assert np.abs(np.diff(boxes[:, 1])).max() < 2.5
    assert boxes[:, 2].std() < 3
    np.testing.assert_allclose(result.tracks[0].boxes, boxes, atol=1e-6)
    assert result.crops.shape == (50, 96, 96, 3) and result.crops.dtype == np.uint8


def test_two_faces_select_the_larger(astronaut, haar) -> None:
    canvas = background("coffee", 960, 540)
    frame = paste(canvas, face_patch(astronaut, 1.0), 80, 150)
    frame = paste(frame, face_patch(astronaut, 0.6), 650, 200)
    result = faces.extract_face_crops([np.stack([frame] * 12)], haar, fps=25.0)
    assert result.n_faces == 2 and len(result.all_tracks) == 2 and len(result.tracks) == 1
    assert result.face_coverage == 1.0
    assert result.boxes[:, 0].max() < 480  # the large face on the left
    big, small = result.all_tracks
    assert result.tracks[0] is big and big.mean_width > 1.4 * small.mean_width


def test_scene_cut_ignores_a_flicker_across_a_histogram_bin(astronaut) -> None:
    """A flat background on a histogram bin's edge (grey 127, bins of 8 levels) that
    flickers by one level moves most of the picture into the next bin: the histogram says
    "new shot", the picture does not change. Before the picture had to change too, every
    such flicker ended the face track."""
    canvas = np.full((480, 640, 3), 127, np.uint8)
    frame = paste(canvas, face_patch(astronaut), 200, 100)
    flicker = np.where(frame == 127, 128, frame).astype(np.uint8)
    frames = np.stack([frame, flicker] * 6)
    assert not faces.detect_scene_cuts(frames).any()
    # a new background behind the same face is still a cut
    moved = paste(background("coffee", 640, 480), face_patch(astronaut), 200, 100)
    assert faces.detect_scene_cuts(np.stack([frame, frame, moved])).tolist() == [
        False, False, True]


def test_scene_cut_breaks_track(astronaut, haar) -> None:
    patch = face_patch(astronaut)
    shot_a = paste(background("coffee", 640, 480), patch, 200, 100)
    shot_b = paste(background("chelsea", 640, 480), patch, 200, 100)
    frames = np.stack([shot_a] * 10 + [shot_b] * 10)
    assert np.flatnonzero(faces.detect_scene_cuts(frames)).tolist() == [10]
    result = faces.extract_face_crops(chunks(frames, 7), haar, fps=25.0)
    assert [(t.first, t.last) for t in result.tracks] == [(0, 9), (10, 19)]
    assert result.face_coverage == 1.0 and result.n_faces == 1
    merged = faces.extract_face_crops(chunks(frames, 7), haar, fps=25.0, detect_cuts=False)
    assert [(t.first, t.last) for t in merged.all_tracks] == [(0, 19)]


# ---------------------------------------------------------------- real footage


def decode_chunks(path: Path, chunk: int = 50) -> Iterator[np.ndarray]:
    """Decode ``path`` at 25 fps to BGR frames, streamed from ffmpeg in chunks."""
    capture = cv2.VideoCapture(str(path))
    width, height = (
        int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    capture.release()
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path)]
    command += ["-vf", "fps=25", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    frame_bytes = width * height * 3
    with subprocess.Popen(command, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        while data := process.stdout.read(frame_bytes * chunk):
            yield np.frombuffer(data, np.uint8).reshape(-1, height, width, 3)
        assert process.wait(timeout=60) == 0


@needs_shared
@pytest.mark.parametrize(
    "name",
    [
        "speech_chaplin_850x480_30fps.mp4",
        "speech_painting_1280x720_29.97fps.mp4",
        "speech_phone_600x480_25fps.mp4",
    ],
)
def test_real_clips_keep_the_face(name, haar) -> None:
    path = REALWORLD / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    result = faces.extract_face_crops(decode_chunks(path), haar, fps=25.0)
    assert result.n_frames > 150
    assert result.face_coverage >= 0.95
    assert result.n_faces == 1
    widths = result.boxes[result.has_face, 2]
    assert widths.max() < 1.4 * widths.min()  # one face, no jumps to background


# ---------------------------------------------------------------- following between detections


def test_follower_finds_a_moved_face_to_a_fraction_of_a_pixel(astronaut, haar) -> None:
    canvas = np.full((512, 760, 3), 90, np.uint8)
    first = paste(canvas, astronaut, 100, 0)
    box = haar.detect(first)[0]
    follower = faces.FaceFollower()
    follower.anchor(7, first, box)
    for dx, dy in ((5, 0), (-9, 3), (17, -6)):
        moved = np.roll(first, (dy, dx), axis=(0, 1))
        found, confidence = follower.follow(7, moved, box)
        assert confidence > 0.95
        assert found.x == pytest.approx(box.x + dx, abs=0.5)
        assert found.y == pytest.approx(box.y + dy, abs=0.5)
        assert (found.w, found.h) == (box.w, box.h)
    # where the face was, there is now only a wall: the follow says it is not sure
    _, confidence = follower.follow(7, canvas, box)
    assert confidence < faces.follow.MIN_CONFIDENCE
    assert follower.follow(8, first, box) is None  # a face it never saw
    follower.forget(set())
    assert follower.follow(7, first, box) is None


class CountingHaar(faces.HaarFaceDetector):
    """The Haar detector, counting full scans (detect, rescan) and local searches."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"detect": 0, "rescan": 0, "near": 0}

    def detect(self, frame_bgr):
        self.calls["detect"] += 1
        return super().detect(frame_bgr)

    def rescan(self, frame_bgr):
        self.calls["rescan"] += 1
        return super().rescan(frame_bgr)

    def detect_near(self, frame_bgr, box):
        self.calls["near"] += 1
        return super().detect_near(frame_bgr, box)


def test_followed_face_needs_few_detections_and_keeps_its_boxes(astronaut) -> None:
    canvas = np.full((512, 760, 3), 90, np.uint8)
    frames = np.stack([paste(canvas, astronaut, 3 * i, 0) for i in range(75)])
    counted = CountingHaar()
    followed = faces.extract_face_crops(chunks(frames), counted, fps=25.0)
    looked = faces.extract_face_crops(chunks(frames), CountingHaar(), fps=25.0, follow=False)
    # one scan at the start, a rescan each second; the 22 other looks are follows
    assert counted.calls == {"detect": 1, "rescan": 2, "near": 0}
    assert followed.face_coverage == 1.0 and len(followed.tracks) == 1
    width = looked.boxes[:, 2].mean()
    assert np.abs(followed.boxes - looked.boxes).max() < 0.05 * width
    centre = followed.boxes[:, 0] + followed.boxes[:, 2] / 2
    inner = np.diff(centre)[3:-5]  # the ends are held and smoothed over fewer frames
    assert np.abs(inner - 3).max() < 0.5  # smooth: the face moves 3 px a frame


def test_a_face_the_follow_loses_is_detected_again(astronaut) -> None:
    """The face gives way to something else mid-shot (here: noise): the follow's
    confidence drops, the detector is asked near the last box, and the track ends
    instead of following the wrong thing."""
    canvas = np.full((512, 760, 3), 90, np.uint8)
    face = paste(canvas, astronaut, 100, 0)
    noise = np.random.default_rng(5).integers(0, 256, astronaut.shape, dtype=np.uint8)
    frames = np.stack([face] * 20 + [paste(canvas, noise, 100, 0)] * 20)
    counted = CountingHaar()
    result = faces.extract_face_crops(chunks(frames), counted, fps=25.0, detect_cuts=False)
    assert counted.calls["near"] >= 4  # each look after the change
    assert result.has_face[:20].all() and not result.has_face[24:].any()


def test_rescan_finds_large_faces_on_a_small_frame(astronaut, haar) -> None:
    wide = paste(background("coffee", 960, 540), face_patch(astronaut), 300, 150)
    (full,) = haar.detect(wide)
    (quick,) = haar.rescan(wide)
    assert quick.iou(full) > 0.8
    noise = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert haar.rescan(noise) == []
    assert faces.HaarFaceDetector(coarse_side=None).rescan(wide)[0].iou(full) > 0.99
