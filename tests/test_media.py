"""Tests for lipsync_fix.media on the real clips in shared/realworld and synthetic files."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from conftest import REALWORLD, needs_shared
from scipy.signal import correlate

from lipsync_fix import media
from lipsync_fix.errors import LipsyncError, MediaError, OutputExistsError

CHAPLIN = REALWORLD / "speech_chaplin_850x480_30fps.mp4"
PAINTING = REALWORLD / "speech_painting_1280x720_29.97fps.mp4"
PHONE = REALWORLD / "speech_phone_600x480_25fps.mp4"



def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lag_samples(reference: np.ndarray, shifted: np.ndarray) -> int:
    """How many samples later ``shifted`` carries the content of ``reference``."""
    corr = correlate(shifted.astype(np.float64), reference.astype(np.float64), method="fft")
    return int(np.argmax(corr)) - (len(reference) - 1)


def _ffmpeg(*args: str) -> None:
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def _flash_and_click_clip(path: Path, event_s: float = 1.0) -> None:
    """3 s at 25 fps: one white frame and one audio click, both at ``event_s``."""
    fps, rate = 25, 16000
    frames = np.zeros((3 * fps, 96, 128, 3), dtype=np.uint8)
    frames[round(event_s * fps)] = 255
    audio = np.zeros(3 * rate, dtype=np.float32)
    audio[round(event_s * rate) : round(event_s * rate) + 80] = 0.8
    media.write_video(path, frames, fps, audio, rate)


@needs_shared
@pytest.mark.parametrize(
    ("clip", "fps", "size", "rate", "channels", "duration"),
    [
        (CHAPLIN, 30.0, (850, 480), 48000, 2, 7.02),
        (PAINTING, 30000 / 1001, (1280, 720), 16000, 1, 14.22),
        (PHONE, 25.0, (600, 480), 48000, 2, 7.40),
    ],
)
def test_probe_real_clips(clip, fps, size, rate, channels, duration):
    info = media.probe(clip)
    assert info.fps == pytest.approx(fps, abs=1e-9)
    assert (info.width, info.height) == size
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert info.duration_s == pytest.approx(duration, abs=0.011)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.has_video and info.has_audio and not info.is_still_image
    assert (info.video_start_s, info.audio_start_s) == (0.0, 0.0)
    media.require_video_and_audio(info)


@needs_shared
def test_decode_audio_resamples_downmixes_or_keeps_native():
    mono = media.decode_audio(CHAPLIN)
    assert mono.dtype == np.float32 and mono.ndim == 1
    assert len(mono) == pytest.approx(7.02 * 16000, rel=0.01)
    assert -1.0 <= mono.min() < 0 < mono.max() <= 1.0

    native = media.decode_audio(CHAPLIN, sample_rate=None, mono=False)
    assert native.shape[1] == 2
    assert len(native) == pytest.approx(7.02 * 48000, rel=0.01)
    assert media.decode_audio(PAINTING, sample_rate=None, mono=False).shape[1] == 1


@needs_shared
def test_iter_video_frames_resamples_30fps_to_25fps_in_bounded_chunks():
    chunks = [chunk.shape for chunk in media.iter_video_frames(CHAPLIN, chunk_frames=64)]
    assert all(shape[0] <= 64 and shape[1:] == (480, 850, 3) for shape in chunks)
    total = sum(shape[0] for shape in chunks)
    assert total == pytest.approx(175, abs=1)
    assert media.count_frames_at(CHAPLIN, 25.0) == total

    small = next(media.iter_video_frames(CHAPLIN, max_side=256, pix_fmt="rgb24"))
    assert small.dtype == np.uint8 and small.shape[1:] == (145, 256, 3)
    assert small.flags.writeable


@needs_shared
def test_large_frames_come_in_smaller_chunks(monkeypatch):
    """A chunk never exceeds CHUNK_BYTES (a fresh mmap per huge block costs more than the
    frames), and the chunking does not change the frames."""
    whole = np.concatenate(list(media.iter_video_frames(CHAPLIN, max_side=256)))
    frame_bytes = whole[0].nbytes
    monkeypatch.setattr("lipsync_fix.media.decode.CHUNK_BYTES", 3 * frame_bytes + 1)
    chunks = list(media.iter_video_frames(CHAPLIN, chunk_frames=64, max_side=256))
    assert max(len(c) for c in chunks) == 3
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_frames_and_audio_start_together_when_the_audio_stream_starts_late(tmp_path):
    clip, late, fixed = tmp_path / "clip.mp4", tmp_path / "late.mp4", tmp_path / "fixed.mp4"
    _flash_and_click_clip(clip)
    # Same packets, but the container starts the audio stream 0.2 s after the video.
    _ffmpeg("-i", str(clip), "-itsoffset", "0.2", "-i", str(clip),
            "-map", "0:v", "-map", "1:a", "-c", "copy", str(late))

    def click_s(path: Path) -> float:
        audio = media.decode_audio(path)
        return float(np.argmax(audio > 0.4)) / 16000

    frames = np.concatenate(list(media.iter_video_frames(late)))
    assert int(np.argmax(frames.mean(axis=(1, 2, 3)))) == 25  # the flash, at 1.0 s
    assert click_s(clip) == pytest.approx(1.0, abs=0.002)
    assert click_s(late) == pytest.approx(1.2, abs=0.002)

    media.shift_audio(late, fixed, -0.2)
    assert click_s(fixed) == pytest.approx(1.0, abs=0.002)


@needs_shared
@pytest.mark.parametrize("delay_s", [0.120, -0.080])
def test_shift_audio_shifts_sound_exactly_and_copies_the_video(tmp_path, delay_s):
    src, dst = CHAPLIN, tmp_path / "fixed.mp4"
    src_hash = _sha256(src)

    report = media.shift_audio(src, dst, delay_s)

    assert _sha256(src) == src_hash
    assert report.shift_samples == round(delay_s * 48000)
    assert (report.sample_rate, report.channels, report.audio_encoder) == (48000, 2, "aac")
    assert media.video_packets_md5(dst) == media.video_packets_md5(src)
    before, after = media.probe(src), media.probe(dst)
    assert after.duration_s == pytest.approx(before.duration_s, abs=0.011)
    assert (after.sample_rate, after.channels, after.fps) == (48000, 2, 30.0)

    original = media.decode_audio(src, sample_rate=None, mono=False)
    shifted = media.decode_audio(dst, sample_rate=None, mono=False)
    assert shifted.shape == original.shape
    lag_s = _lag_samples(original[:, 0], shifted[:, 0]) / 48000
    assert lag_s == pytest.approx(delay_s, abs=0.001)
    assert not list(tmp_path.glob(".*partial*"))


@needs_shared
def test_shift_audio_refuses_to_overwrite_unless_forced(tmp_path):
    dst = tmp_path / "fixed.mp4"
    dst.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        media.shift_audio(PHONE, dst, 0.04)
    assert dst.read_bytes() == b"keep me"

    media.shift_audio(PHONE, dst, 0.04, force=True)
    assert media.probe(dst).has_audio


def test_shift_audio_rejects_the_input_as_output(tmp_path):
    clip = tmp_path / "clip.mp4"
    _flash_and_click_clip(clip)
    with pytest.raises(MediaError, match="is the input file"):
        media.shift_audio(clip, clip, 0.1, force=True)


def test_shift_audio_longer_than_the_audio_is_refused(tmp_path):
    clip = tmp_path / "clip.mp4"
    _flash_and_click_clip(clip)
    with pytest.raises(LipsyncError, match="longer than the audio"):
        media.shift_audio(clip, tmp_path / "out.mp4", -5.0)


def test_failed_writes_leave_no_file_behind(tmp_path):
    # ffmpeg creates the output, then finds that MP4 cannot hold HuffYUV video (which is
    # copied, never re-encoded): the error names the stream and nothing is left behind.
    src = tmp_path / "huffyuv.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-f", "lavfi",
            "-i", "sine=r=16000", "-t", "1", "-c:v", "huffyuv", "-c:a", "pcm_s16le", str(src))
    with pytest.raises(MediaError, match="cannot hold the huffyuv video stream #0"):
        media.shift_audio(src, tmp_path / "fixed.mp4", 0.1)
    assert [p.name for p in tmp_path.iterdir()] == ["huffyuv.mkv"]


@needs_shared
def test_truncated_file_with_intact_index_fails_when_read(tmp_path):
    faststart = tmp_path / "faststart.mp4"
    _ffmpeg("-i", str(CHAPLIN), "-c", "copy", "-movflags", "+faststart", str(faststart))
    cut = tmp_path / "cut.mp4"
    data = faststart.read_bytes()
    cut.write_bytes(data[: len(data) * 3 // 10])

    media.probe(cut)  # the index at the start still describes the whole clip
    with pytest.raises(MediaError, match="truncated"):
        media.decode_audio(cut)
    with pytest.raises(MediaError, match="truncated"):
        for _ in media.iter_video_frames(cut):
            pass
    with pytest.raises(MediaError, match="truncated"):
        media.shift_audio(cut, tmp_path / "fixed.mp4", 0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "faststart.mp4"]


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.mp4"


def _text_as_mp4(tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    return path


def _truncated_mp4(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.mp4"
    data = CHAPLIN.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 10])
    return path


def _audio_only(tmp_path: Path) -> Path:
    path = tmp_path / "voice.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    return path


def _silent_video(tmp_path: Path) -> Path:
    path = tmp_path / "silent.mp4"
    media.write_video(path, np.zeros((10, 64, 64, 3), dtype=np.uint8), 25)
    return path


def _png(tmp_path: Path) -> Path:
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), np.full((64, 64, 3), 128, dtype=np.uint8))
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_missing, "does not exist"),
        (_text_as_mp4, "is a text file, not a media file"),
        pytest.param(_truncated_mp4, "not a readable media file", marks=needs_shared),
        (_audio_only, "has no video stream"),
        (_silent_video, "has no audio stream"),
        (_png, "is a still image"),
    ],
)
def test_unusable_inputs_raise_one_line_media_errors(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(MediaError) as caught:
        media.require_video_and_audio(media.probe(path))
    message = str(caught.value)
    assert expected in message and path.name in message and "\n" not in message
    with pytest.raises(MediaError):
        media.shift_audio(path, tmp_path / "fixed.mp4", 0.1)
    assert not (tmp_path / "fixed.mp4").exists()


def test_write_video_round_trip(tmp_path):
    path = tmp_path / "odd.mp4"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (12, 121, 161, 3), dtype=np.uint8)
    rate = 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)

    media.write_video(path, iter(frames), 30000 / 1001, tone, rate)

    info = media.probe(path)
    assert (info.width, info.height) == (160, 120)  # cropped to even sizes for yuv420p
    assert info.fps == pytest.approx(30000 / 1001)
    assert (info.video_stream_index, info.audio_stream_index) == (0, 1)
    decoded = media.decode_audio(path, sample_rate=None)
    assert len(decoded) == len(tone)
    assert np.abs(decoded - tone).max() < 0.05
    assert media.count_frames_at(path, 30000 / 1001) == 12
    assert not list(tmp_path.glob(".*partial*"))


def test_write_video_rejects_frames_of_another_size(tmp_path):
    frames = [np.zeros((64, 64, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1"):
        media.write_video(tmp_path / "bad.mp4", frames, 25)
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_exe_honours_the_environment_override(monkeypatch, tmp_path):
    media.ffmpeg_exe.cache_clear()
    try:
        monkeypatch.setenv("LIPSYNC_FIX_FFMPEG", str(tmp_path / "no-ffmpeg"))
        with pytest.raises(LipsyncError, match="LIPSYNC_FIX_FFMPEG"):
            media.ffmpeg_exe()
        monkeypatch.delenv("LIPSYNC_FIX_FFMPEG")
        media.ffmpeg_exe.cache_clear()
        assert Path(media.ffmpeg_exe()).is_file()
    finally:
        media.ffmpeg_exe.cache_clear()


def test_iter_video_frames_rejects_unusable_files_at_the_call(tmp_path):
    with pytest.raises(MediaError, match="is a still image"):
        media.iter_video_frames(_png(tmp_path))


def test_an_avi_with_a_fine_time_base_reports_its_frame_rate_not_its_tick(tmp_path):
    """ffmpeg prints such a file as "600 fps, 25 tbr, 600 tbn": 600 is the container's
    time base, not a frame rate."""
    path = tmp_path / "tb600.avi"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-f", "lavfi", "-i",
            "sine=frequency=440:sample_rate=16000", "-t", "2", "-c:v", "mpeg4",
            "-enc_time_base", "1/600", "-c:a", "pcm_s16le", str(path))
    assert media.probe(path).fps == 25.0
