"""`synth` and `preprocess`: clips in the authors' layout, made by the main job's cropper."""

from __future__ import annotations

import numpy as np
from conftest import REALWORLD, invoke, needs_shared

from lipsync_fix.data.layout import list_clips, load_clip


def test_synth_writes_layout_and_filelists(tmp_path):
    run = invoke("synth", tmp_path, "--clips", "3", "--seconds", "1.2", "--quiet")
    assert run.code == 0, run.stderr
    for split in ("train", "val", "test"):
        assert len(list_clips(tmp_path, split)) == 1
    clip = load_clip(list_clips(tmp_path, "train")[0])
    assert clip.crops.shape == (30, 96, 96, 3)
    assert len(clip.wav) == 30 * 640
    # The mouth moves: the lower half of the crops varies more than the upper half.
    lower = clip.crops[:, 48:].astype(float).std(axis=0).mean()
    upper = clip.crops[:, :48].astype(float).std(axis=0).mean()
    assert lower > upper


@needs_shared
def test_preprocess_real_clip_resumable_and_reports_failures(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "phone.mp4").symlink_to(REALWORLD / "speech_phone_600x480_25fps.mp4")
    (raw / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    args = ["preprocess", raw, out, "--quiet"]
    first = invoke(*args)
    assert first.code == 1, first.stderr  # one video could not be used
    assert "1 clip written" in first.stdout and "0 done earlier, 1 failed" in first.stdout
    [error] = first.error_lines
    assert error.startswith("error: ") and "broken.mp4" in error
    clip = load_clip(out / "phone")
    assert len(clip.crops) >= 0.95 * 185  # faces in >= 95% of the 7.4 s at 25 fps
    assert abs(len(clip.wav) - 640 * len(clip.crops)) <= 640
    assert np.abs(clip.wav).max() > 0.01
    second = invoke(*args)
    assert second.code == 1  # broken.mp4 is tried again, and fails again
    assert "0 clips written" in second.stdout and "1 done earlier" in second.stdout


def test_split_folders_and_plain_folders_are_listed(tmp_path):
    """Acappella keeps a folder per split (language/singer/clip below it); anyone's data may
    be a plain tree of clip folders. Both are found without filelists."""
    def clip(path):
        path.mkdir(parents=True)
        (path / "0.jpg").write_bytes(b"")
        (path / "audio.wav").write_bytes(b"")

    clip(tmp_path / "unseen_unheard_test" / "Spanish" / "s1" / "a")
    clip(tmp_path / "unseen_unheard_test" / "English" / "s2" / "b")
    clip(tmp_path / "train" / "English" / "s3" / "c")
    (tmp_path / "train" / "English" / "s3" / "notes").mkdir()
    assert [p.name for p in list_clips(tmp_path, "unseen_unheard_test")] == ["b", "a"]
    assert [p.name for p in list_clips(tmp_path, "train")] == ["c"]
    assert len(list_clips(tmp_path, None)) == 3
