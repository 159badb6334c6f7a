"""Reliability of lipsync_fix.media (issue 10): what a hostile or unlucky input gets.

Items: 3/6 (TS probes), 4/7 (every audio stream shifted, dispositions kept), 5/12 (inputs
are media files only), 6/11 (messages that say what is wrong, checked before decoding),
and the contract of rewrite_audio that drift correction and piecewise shifts build on.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import correlate

from lipsync_fix import media
from lipsync_fix.errors import (
    LipsyncError,
    MediaError,
    OutputError,
    OutputExistsError,
    UsageError,
)


def _ffmpeg(*args: str) -> None:
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", *args], check=True, timeout=120)


def _lag(reference: np.ndarray, shifted: np.ndarray) -> int:
    corr = correlate(shifted.astype(np.float64), reference.astype(np.float64), method="fft")
    return int(np.argmax(corr)) - (len(reference) - 1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clip(path: Path, *extra: str, audio: str = "-c:a aac", rates=(48000,)) -> Path:
    """1.5 s of test pattern (H.264) with one noise audio stream per entry of ``rates``."""
    inputs: list[str] = ["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25"]
    maps = ["-map", "0:v"]
    for k, rate in enumerate(rates):
        inputs += ["-f", "lavfi", "-i", f"anoisesrc=r={rate}:a=0.3:seed={k + 1}"]
        maps += ["-map", f"{k + 1}:a"]
    _ffmpeg(*inputs, *maps, "-t", "1.5", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            *audio.split(), *extra, str(path))
    return path


# --- item 6: MPEG-TS inputs were rejected as "a still image" now and then -----------------


def test_a_transport_stream_probes_the_same_forty_times_in_a_row(tmp_path):
    clip = _clip(tmp_path / "clip.ts", rates=(48000, 16000))
    infos = [media.probe(clip) for _ in range(40)]
    assert all(not info.is_still_image for info in infos)
    assert len({info for info in infos}) == 1  # every probe says exactly the same
    info = infos[0]
    assert (info.sample_rate, info.channels, info.fps) == (48000, 1, 25.0)
    assert [s.sample_rate for s in info.audio_streams] == [48000, 16000]
    # TS keeps AAC priming as an earlier start: the audio begins 1024 samples before
    # the picture (which starts 1.4 s into the file's clock).
    assert info.audio_start_s - info.video_start_s == pytest.approx(-1024 / 48000, abs=1e-4)
    assert info.stream(info.video_stream_index).start_s > 1.0


# --- item 12: inputs are media files only -------------------------------------------------


@pytest.fixture
def neighbour(tmp_path) -> Path:
    return _clip(tmp_path / "neighbour.ts")


def _ffconcat(tmp_path: Path, neighbour: Path) -> Path:
    path = tmp_path / "innocent.mp4"
    path.write_text(f"ffconcat version 1.0\nfile {neighbour.name}\n")
    return path


def _m3u8(tmp_path: Path, neighbour: Path) -> Path:
    path = tmp_path / "list.m3u8"
    path.write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"
                    f"#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1.5,\n{neighbour.name}\n#EXT-X-ENDLIST\n")
    return path


def _text(tmp_path: Path, neighbour: Path) -> Path:
    path = tmp_path / "README.txt"  # ffmpeg's tty demuxer renders text (over 1 kB) as video
    path.write_text("lipsync-fix finds and fixes audio/video offsets in talking heads.\n" * 30)
    return path


@pytest.mark.parametrize(("make", "read_as"), [(_ffconcat, "concat"), (_m3u8, "hls"),
                                               (_text, "tty")])
def test_playlists_and_text_are_refused_as_not_media_files(tmp_path, neighbour, make, read_as):
    path = make(tmp_path, neighbour)
    with pytest.raises(MediaError) as caught:
        media.probe(path)
    message = str(caught.value)
    assert "is not a media file" in message and f"'{read_as}'" in message
    assert path.name in message and "\n" not in message
    for use in (media.decode_audio, media.video_packets_md5):
        with pytest.raises(MediaError, match="is not a media file"):
            use(path)
    with pytest.raises(MediaError, match="is not a media file"):
        media.shift_audio(path, tmp_path / "out.mp4", 0.1)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("name", ["README.md", "README", "notes.mp4", "subs.srt"])
def test_text_fed_as_a_video_is_called_text(tmp_path, name):
    path = tmp_path / name
    path.write_text("# lipsync-fix\n\nFinds and fixes audio/video offsets. Ünïcode too.\n")
    with pytest.raises(MediaError, match=r"is a text file, not a media file\.$"):
        media.probe(path)


def test_a_file_named_like_a_protocol_is_read_as_a_file(tmp_path, neighbour, monkeypatch):
    monkeypatch.chdir(tmp_path)
    odd = Path("concat:neighbour.ts|neighbour.ts")  # ffmpeg would join the two, unguarded
    odd.write_bytes(neighbour.read_bytes())
    assert media.probe(odd).duration_s == pytest.approx(media.probe(neighbour).duration_s)


# --- item 11: messages that say what is wrong, before any decoding --------------------------


@pytest.mark.parametrize("name", ["out.mp3", "out.wav", "out.gif", "out.xyz", "out"])
def test_outputs_that_are_not_video_containers_are_refused_first(tmp_path, name):
    not_media = tmp_path / "notes.mp4"
    not_media.write_text("not a video\n")
    # The output is checked before the input is even probed: the error is about it.
    with pytest.raises(OutputError) as caught:
        media.shift_audio(not_media, tmp_path / name, 0.1)
    message = str(caught.value)
    assert "must be a video container: .mp4, .m4v, .mov, .mkv, .webm, .avi or .ts" in message
    assert "\n" not in message and list(tmp_path.iterdir()) == [not_media]


def test_check_destination_refuses_a_bad_output_without_reading_the_input(tmp_path):
    missing = tmp_path / "not-yet-scored.mp4"  # never opened: it does not even exist
    assert media.check_destination(missing, tmp_path / "ok.mkv") is media.CONTAINERS[".mkv"]
    with pytest.raises(OutputError, match="must be a video container"):
        media.check_destination(missing, tmp_path / "out.wav")
    with pytest.raises(OutputError, match=r"folder .* does not exist"):
        media.check_destination(missing, tmp_path / "no" / "out.mp4")
    (tmp_path / "taken.mp4").write_bytes(b"")
    with pytest.raises(OutputExistsError, match="use --force"):
        media.check_destination(missing, tmp_path / "taken.mp4")
    assert media.check_destination(missing, tmp_path / "taken.mp4", force=True)


def test_an_existing_output_is_refused_before_decoding(tmp_path):
    not_media = tmp_path / "notes.mp4"
    not_media.write_text("not a video\n")
    existing = tmp_path / "out.mkv"
    existing.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        media.shift_audio(not_media, existing, 0.1)
    assert existing.read_bytes() == b"keep"


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), float("-inf")])
def test_a_delay_that_is_not_a_number_is_a_usage_error(tmp_path, delay):
    clip = _clip(tmp_path / "clip.mp4")
    with pytest.raises(UsageError, match="finite"):
        media.shift_audio(clip, tmp_path / "out.mp4", delay)
    assert not (tmp_path / "out.mp4").exists()


def test_video_the_container_cannot_hold_is_refused_before_decoding(tmp_path):
    clip = _clip(tmp_path / "clip.mp4")
    with pytest.raises(OutputError, match=r"\.webm file can only hold av1, vp8, vp9 video"):
        media.shift_audio(clip, tmp_path / "out.webm", 0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@pytest.fixture
def with_subtitles(tmp_path) -> Path:
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,200 --> 00:00:01,000\nHello there\n\n"
                   "2\n00:00:01,100 --> 00:00:01,400\nGoodbye\n")
    clip = _clip(tmp_path / "base.mkv")
    path = tmp_path / "subtitled.mkv"
    _ffmpeg("-i", str(clip), "-i", str(srt), "-map", "0", "-map", "1", "-c", "copy",
            "-c:s", "srt", "-metadata:s:s:0", "language=eng", str(path))
    return path


def _subtitle_text(path: Path) -> str:
    return subprocess.run([media.ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:s:0",
                           "-f", "srt", "pipe:1"], capture_output=True, check=True,
                          timeout=60).stdout.decode()


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "mov_text"), (".mov", "mov_text"),
                                               (".mkv", "subrip")])
def test_text_subtitles_are_converted_to_what_the_container_holds(
    tmp_path, with_subtitles, suffix, codec
):
    dst = tmp_path / f"out{suffix}"
    report = media.shift_audio(with_subtitles, dst, 0.1)
    subtitles = [s for s in media.probe(dst).streams if s.kind == "subtitle"]
    assert [s.codec for s in subtitles] == [codec]
    assert "Hello there" in _subtitle_text(dst) and "Goodbye" in _subtitle_text(dst)
    converted = [note for note in report.notes if "Converted subtitle stream #2" in note]
    assert len(converted) == (0 if suffix == ".mkv" else 1)


@pytest.mark.parametrize("suffix", [".avi", ".ts"])
def test_subtitles_a_container_cannot_hold_are_left_out_with_a_note(
    tmp_path, with_subtitles, suffix
):
    dst = tmp_path / f"out{suffix}"
    report = media.shift_audio(with_subtitles, dst, 0.1)
    assert [s.kind for s in media.probe(dst).streams] == ["video", "audio"]
    assert report.notes == (f"Left out subtitle stream #2 (subrip): {suffix} files cannot "
                            "hold subrip subtitles.",)


# --- item 7: every audio stream shifted, dispositions and languages kept --------------------


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_every_audio_stream_is_shifted_and_keeps_its_flags(tmp_path, suffix):
    src = _clip(tmp_path / f"two{suffix}", "-disposition:a:0", "0",
                "-disposition:a:1", "default+comment", "-metadata:s:a:1", "language=fra",
                rates=(48000, 16000))
    dst = tmp_path / f"out{suffix}"

    report = media.shift_audio(src, dst, 0.120)

    assert report.audio_streams == 2
    info = media.probe(dst)
    assert [(s.sample_rate, sorted(s.dispositions)) for s in info.audio_streams] == [
        (48000, []), (16000, ["comment", "default"])]
    banner = subprocess.run([media.ffmpeg_exe(), "-hide_banner", "-i", str(dst)],
                            capture_output=True, timeout=60).stderr.decode()
    assert re.search(r"Stream #0:2(\[0x3\])?\(fra\): Audio", banner)
    for k, rate in enumerate((48000, 16000)):
        before = media.decode_audio(src, sample_rate=None, audio_stream=k)
        after = media.decode_audio(dst, sample_rate=None, audio_stream=k)
        assert _lag(before, after) == round(0.120 * rate), f"audio stream {k}"


def test_only_the_first_audio_stream_is_shifted_when_asked(tmp_path):
    src = _clip(tmp_path / "two.mkv", rates=(48000, 16000))
    dst = tmp_path / "out.mkv"
    report = media.shift_audio(src, dst, 0.120, all_audio=False)
    assert report.audio_streams == 1

    def packets(path: Path) -> list[str]:
        listing = subprocess.run(
            [media.ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:1", "-c", "copy",
             "-f", "framemd5", "pipe:1"], capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        return [line.rsplit(",", 1)[1] for line in listing.splitlines()
                if line and not line.startswith("#")]

    assert packets(dst) == packets(src)  # the second stream copied bit for bit


# --- the contract of rewrite_audio ----------------------------------------------------------


@pytest.fixture
def pcm_clip(tmp_path) -> Path:
    return _clip(tmp_path / "pcm.mkv", audio="-c:a pcm_s16le", rates=(16000,))


def _pcm(path: Path) -> np.ndarray:
    return media.decode_audio(path, sample_rate=None, mono=False)


def test_rewrite_audio_writes_back_exactly_what_the_transform_returns(tmp_path, pcm_clip):
    original = _pcm(pcm_clip)
    ramp = np.linspace(-0.5, 0.5, len(original), dtype=np.float32)[:, None]
    seen = []

    def replace(samples: np.ndarray, rate: int) -> np.ndarray:
        seen.append((samples.shape, samples.dtype, rate, samples.flags.writeable))
        return ramp

    report = media.rewrite_audio(pcm_clip, tmp_path / "out.mkv", replace)

    assert seen == [((len(original), 1), np.float32, 16000, True)]
    np.testing.assert_allclose(_pcm(tmp_path / "out.mkv"), ramp, atol=1 / 32768)
    assert [(a.sample_rate, a.channels, a.encoder, a.samples) for a in report.audio] == [
        (16000, 1, "pcm_s16le", len(original))]
    assert report.notes == ()


@pytest.mark.parametrize("extra", [-4000, -1, 1, 5000])
def test_a_longer_or_shorter_result_is_cut_or_padded_to_the_stream_length(
    tmp_path, pcm_clip, extra
):
    original = _pcm(pcm_clip)
    n = len(original)
    out = tmp_path / "out.mkv"
    media.rewrite_audio(pcm_clip, out, lambda a, r: np.full(n + extra, 0.25, np.float32))
    written = _pcm(out)
    assert written.shape == original.shape
    kept = min(n, n + extra)
    np.testing.assert_allclose(written[:kept], 0.25, atol=1 / 32768)
    np.testing.assert_array_equal(written[kept:], 0.0)


@pytest.mark.parametrize(("result", "match"), [
    (lambda a: np.zeros((len(a), 2), np.float32), r"shape \(\d+, 2\)"),
    (lambda a: np.full_like(a, np.nan), "NaN"),
])
def test_a_transform_result_of_the_wrong_kind_is_a_value_error(tmp_path, pcm_clip, result, match):
    with pytest.raises(ValueError, match=match):
        media.rewrite_audio(pcm_clip, tmp_path / "out.mkv", lambda a, r: result(a))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pcm.mkv"]


def test_a_transform_error_leaves_nothing_behind_and_the_input_untouched(tmp_path, pcm_clip):
    before = _sha256(pcm_clip)

    def fail(samples: np.ndarray, rate: int) -> np.ndarray:
        raise LipsyncError("the transform gave up.")

    with pytest.raises(LipsyncError, match="gave up"):
        media.rewrite_audio(pcm_clip, tmp_path / "out.mp4", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pcm.mkv"]
    assert _sha256(pcm_clip) == before


def test_audio_that_starts_before_the_picture_is_seen_from_the_first_frame(tmp_path):
    clip = _clip(tmp_path / "clip.mkv", audio="-c:a pcm_s16le", rates=(16000,))
    early = tmp_path / "early.mkv"  # the picture now starts 0.1 s after the sound
    _ffmpeg("-itsoffset", "0.1", "-i", str(clip), "-i", str(clip), "-map", "0:v", "-map", "1:a",
            "-c", "copy", str(early))
    lengths = []
    media.rewrite_audio(early, tmp_path / "out.mkv", lambda a, r: lengths.append(len(a)) or a)
    assert lengths == [len(media.decode_audio(early, sample_rate=None))]
    assert lengths[0] == pytest.approx(1.4 * 16000, abs=2)
    info = media.probe(tmp_path / "out.mkv")
    assert info.audio_start_s == info.video_start_s == 0.0


@pytest.mark.parametrize(("suffix", "kept"), [(".mp4", True), (".mkv", False), (".avi", False)])
def test_cover_art_is_kept_where_it_can_be_and_noted_where_not(tmp_path, suffix, kept):
    picture = tmp_path / "cover.png"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32", "-frames:v", "1", str(picture))
    clip = _clip(tmp_path / "clip.mp4")
    src = tmp_path / "with-cover.mp4"
    _ffmpeg("-i", str(clip), "-i", str(picture), "-map", "0", "-map", "1", "-c", "copy",
            "-c:v:1", "png", "-disposition:v:1", "attached_pic", str(src))
    report = media.shift_audio(src, tmp_path / f"out{suffix}", 0.05)
    streams = media.probe(tmp_path / f"out{suffix}").streams
    assert [s.attached_pic for s in streams if s.kind == "video"] == ([False, True] if kept
                                                                       else [False])
    assert report.notes == (() if kept else (
        f"Left out video stream #2 (png): cover art is not written into {suffix} files.",))
