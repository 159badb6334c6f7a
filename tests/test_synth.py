"""Tests for the synthetic talking-head generator.

The generator is the ground truth for the demo and for training the bundled model, so these
tests check the properties those rely on: exact lengths and offsets, determinism, and lip
motion that is genuinely tied to the sound.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from lipsync_fix.data.synth import (
    TalkingHead,
    articulation_tracks,
    delay_audio,
    make_talking_head,
    write_clip_folder,
)
from lipsync_fix.faces import crop_face
from lipsync_fix.features.constants import CROP_SIZE

SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps


@pytest.fixture(scope="module")
def clip() -> TalkingHead:
    return make_talking_head(seed=7, duration_s=6.0)


@pytest.fixture(scope="module")
def still_clip() -> TalkingHead:
    """A clip without head motion, so frame differences come from the mouth alone."""
    return make_talking_head(seed=11, duration_s=4.0, head_motion=0.0, background="photo")


def frame_rms(clip: TalkingHead) -> np.ndarray:
    """Audio RMS over each frame's 40 ms window."""
    n = len(clip.frames)
    return np.sqrt(np.mean(clip.audio[: n * SAMPLES_PER_FRAME].reshape(n, -1) ** 2, axis=1))


def lagged_correlation(a: np.ndarray, b: np.ndarray, lag: int) -> float:
    """Correlation of a[i] with b[i - lag]."""
    if lag > 0:
        a, b = a[lag:], b[:-lag]
    elif lag < 0:
        a, b = a[:lag], b[-lag:]
    return float(np.corrcoef(a, b)[0, 1])


def crops(clip: TalkingHead) -> np.ndarray:
    return np.stack(
        [
            crop_face(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), box)
            for frame, box in zip(clip.frames, clip.face_boxes, strict=True)
        ]
    ).astype(np.float32)


def test_same_seed_gives_same_clip() -> None:
    a = make_talking_head(seed=3, duration_s=1.0)
    b = make_talking_head(seed=3, duration_s=1.0)
    c = make_talking_head(seed=4, duration_s=1.0)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
    np.testing.assert_array_equal(a.face_boxes, b.face_boxes)
    assert a.syllables == b.syllables
    assert not np.array_equal(a.audio, c.audio)
    assert not np.array_equal(a.frames, c.frames)


def test_shapes_and_lengths(clip: TalkingHead) -> None:
    assert clip.frames.shape == (150, 256, 256, 3)
    assert clip.frames.dtype == np.uint8
    assert clip.audio.shape == (96000,)
    assert clip.audio.dtype == np.float32
    assert clip.face_boxes.shape == (150, 4)
    assert clip.mouth_open.shape == clip.mouth_width.shape == clip.mouth_round.shape == (150,)
    assert 0.45 < np.max(np.abs(clip.audio)) < 0.55
    assert clip.mouth_open.min() >= 0.0 and clip.mouth_open.max() <= 1.0
    assert clip.syllables and clip.syllables[-1].end <= clip.duration_s


def test_custom_rates_and_size() -> None:
    clip = make_talking_head(seed=1, duration_s=2.0, fps=30.0, sample_rate=22050, size=(320, 240))
    assert clip.frames.shape == (60, 240, 320, 3)
    assert clip.audio.shape == (44100,)
    x, y, w, h = clip.face_boxes.T
    assert (x >= 0).all() and (y >= 0).all()
    assert (x + w <= 320).all() and (y + h <= 240).all()
    assert (w >= 100).all()


def test_rejects_empty_clip() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        make_talking_head(seed=0, duration_s=0.0)


def test_mouth_opening_follows_audio_energy(clip: TalkingHead) -> None:
    energy = np.log(frame_rms(clip) + 1e-4)
    in_sync = lagged_correlation(clip.mouth_open, energy, 0)
    assert in_sync > 0.5
    for lag in (-10, 10):
        assert lagged_correlation(clip.mouth_open, energy, lag) < in_sync - 0.3
    # The correlation peaks at zero lag, so the pairing is informative about sync.
    for lag in (-2, -1, 1, 2):
        assert lagged_correlation(clip.mouth_open, energy, lag) < in_sync


def test_bilabials_close_the_lips(clip: TalkingHead) -> None:
    centres = (np.arange(len(clip.frames)) + 0.5) / clip.fps
    closed = [
        i
        for syllable in clip.syllables
        if syllable.bilabial
        for i in np.flatnonzero((centres >= syllable.start) & (centres <= syllable.release))
    ]
    assert closed, "the clip should contain a bilabial closure spanning a frame"
    np.testing.assert_array_equal(clip.mouth_open[closed], 0.0)
    assert clip.mouth_open.max() > 0.5


def test_pauses_are_silent_with_closed_mouth(clip: TalkingHead) -> None:
    quiet = frame_rms(clip) < 0.02 * frame_rms(clip).max()
    edges = np.flatnonzero(np.diff(np.r_[0, quiet.astype(int), 0]))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= 5]
    assert any(start > 0 for start, _ in runs), "expected a pause between phrases"
    for start, stop in runs:
        # Allow two frames at each edge for the lips to finish closing or to start opening.
        np.testing.assert_array_equal(clip.mouth_open[start + 2 : stop - 2], 0.0)
    assert len({syllable.phrase for syllable in clip.syllables}) >= 2


@pytest.mark.parametrize("delay_ms", [80.0, -120.0, 37.5])
def test_audio_delay_shifts_audio_by_exact_samples(clip: TalkingHead, delay_ms: float) -> None:
    delayed = make_talking_head(seed=7, duration_s=6.0, audio_delay_ms=delay_ms)
    shift = round(delay_ms * 16)
    assert delayed.audio.shape == clip.audio.shape
    assert delayed.audio_delay_ms == delay_ms
    if shift > 0:
        np.testing.assert_array_equal(delayed.audio[shift:], clip.audio[:-shift])
        np.testing.assert_array_equal(delayed.audio[:shift], 0.0)
    else:
        np.testing.assert_array_equal(delayed.audio[:shift], clip.audio[-shift:])
        np.testing.assert_array_equal(delayed.audio[shift:], 0.0)
    np.testing.assert_array_equal(delayed.frames, clip.frames)
    np.testing.assert_array_equal(delayed.mouth_open, clip.mouth_open)


def test_delay_audio_keeps_length() -> None:
    audio = np.arange(1.0, 11.0, dtype=np.float32)
    np.testing.assert_array_equal(delay_audio(audio, 0.2, 10000), [0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(delay_audio(audio, -0.3, 10000), [4, 5, 6, 7, 8, 9, 10, 0, 0, 0])
    np.testing.assert_array_equal(delay_audio(audio, 5.0, 10000), 0.0)


def test_lip_lead_shifts_the_mouth_earlier(clip: TalkingHead) -> None:
    leading = articulation_tracks(clip.syllables, len(clip.frames), clip.fps, lip_lead_ms=40.0)
    np.testing.assert_allclose(leading[:-1, 0], clip.mouth_open[1:], atol=1e-6)


def test_write_clip_folder_writes_dataset_layout(clip: TalkingHead, tmp_path: Path) -> None:
    out = write_clip_folder(clip, tmp_path / "clip")
    jpgs = sorted(out.glob("*.jpg"), key=lambda p: int(p.stem))
    assert [p.name for p in jpgs] == [f"{i}.jpg" for i in range(len(clip.frames))]
    for path in jpgs[:: len(jpgs) // 5]:
        assert cv2.imread(str(path)).shape == (CROP_SIZE, CROP_SIZE, 3)
    info = sf.info(str(out / "audio.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.frames == len(clip.audio)
    audio, _ = sf.read(str(out / "audio.wav"), dtype="float32")
    np.testing.assert_allclose(audio, clip.audio, atol=1e-4)


def test_write_clip_folder_uses_crop_fn_and_resamples(tmp_path: Path) -> None:
    clip = make_talking_head(seed=2, duration_s=0.4, sample_rate=8000)
    calls = []

    def crop_fn(frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        calls.append(tuple(box))
        return frame_bgr[:64, :64]

    out = write_clip_folder(clip, tmp_path, crop_fn=crop_fn)
    assert len(calls) == len(clip.frames) == 10
    assert cv2.imread(str(out / "9.jpg")).shape == (CROP_SIZE, CROP_SIZE, 3)
    info = sf.info(str(out / "audio.wav"))
    assert (info.samplerate, info.frames) == (16000, 6400)


def test_crop_face_pads_bottom_and_clips_to_frame() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[95:, :] = 255  # rows only reached through the bottom padding
    crop = crop_face(frame, (10, 10, 80, 80))
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    assert crop[-4:].mean() > 200  # the 10 px pad reaches the white rows
    assert crop_face(frame, (-20, 50, 80, 80)).shape == (CROP_SIZE, CROP_SIZE, 3)


def test_mouth_pixels_change_with_opening(still_clip: TalkingHead) -> None:
    faces = crops(still_clip)
    open_frame = int(np.argmax(still_clip.mouth_open))
    first_closed, second_closed = np.flatnonzero(still_clip.mouth_open == 0.0)[[0, -1]]
    assert still_clip.mouth_open[open_frame] > 0.6

    def row_difference(a: int, b: int) -> np.ndarray:
        return np.abs(faces[a] - faces[b]).mean(axis=(1, 2))

    opened = row_difference(open_frame, first_closed)
    baseline = row_difference(second_closed, first_closed)  # flicker and sensor noise only
    half = CROP_SIZE // 2
    assert opened[half:].mean() > 3.0 * opened[:half].mean()
    assert opened[half:].mean() > 3.0 * baseline[half:].mean()
    # The mouth sits in the lower half VocaLiST looks at, roughly rows 60-80.
    assert 55 <= int(np.argmax(opened)) <= 85


def test_face_is_detectable(clip: TalkingHead) -> None:
    cascade = cv2.CascadeClassifier(
        str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
    )
    for index in (0, 75, 149):
        gray = cv2.cvtColor(clip.frames[index], cv2.COLOR_RGB2GRAY)
        detections = cascade.detectMultiScale(gray, 1.1, 5, minSize=(60, 60))
        assert len(detections) >= 1
        x, y, w, h = clip.face_boxes[index]
        dx, dy, dw, dh = max(detections, key=lambda d: d[2] * d[3])
        assert abs((dx + dw / 2) - (x + w / 2)) < 0.2 * w
        assert abs((dy + dh / 2) - (y + h / 2)) < 0.25 * h
