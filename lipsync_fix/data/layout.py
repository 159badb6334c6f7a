"""Preprocessed clips on disk, in the layout the authors' code reads.

One folder per clip: ``0.jpg, 1.jpg, ...`` (96x96 face crops at 25 fps, read as BGR) and
``audio.wav`` (16 kHz mono). A data root lists clips in ``filelists/<split>.txt``, one
clip path per line relative to the root (LRS2 style, e.g. ``main/5535415699068794046/00001``),
optionally with an extra column that is ignored. Without a filelist, every folder below
the root that holds ``0.jpg`` and ``audio.wav`` is a clip (the generic layout for anyone's
own data).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from lipsync_fix.errors import LipsyncError, MediaError, UsageError
from lipsync_fix.features.constants import CROP_SIZE, SAMPLE_RATE
from lipsync_fix.files import partial_name

AUDIO_NAME = "audio.wav"

DONE_MARK = ".complete"
"""Written last into a clip folder: a folder without it is unfinished. It holds what the
clip was made from (``source``: the video's path, fingerprint and the options), so a
resumed run skips only clips of the same video made the same way."""


def write_clip(out_dir: Path, crops: np.ndarray, wav: np.ndarray,
               source: dict | None = None) -> Path:
    """Write one clip folder: ``crops`` (N, 96, 96, 3) uint8 BGR and ``wav`` 16 kHz mono,
    and :data:`DONE_MARK` holding ``source`` as JSON (empty without one).

    The folder is filled under a temporary name and renamed when complete, so a reader (or
    a resumed run) never sees half a clip; an existing folder of that name is replaced.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(out_dir)
    tmp.mkdir()
    for i, crop in enumerate(crops):
        if not cv2.imwrite(str(tmp / f"{i}.jpg"), crop):
            raise LipsyncError(f"cannot write {tmp / f'{i}.jpg'}")
    sf.write(tmp / AUDIO_NAME, np.asarray(wav, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    (tmp / DONE_MARK).write_text(json.dumps(source) if source is not None else "")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


@dataclass
class Clip:
    """A preprocessed clip: BGR crops (N, 96, 96, 3) uint8 and 16 kHz mono float32 audio."""

    path: Path
    crops: np.ndarray
    wav: np.ndarray


def clip_source(folder: Path) -> dict | None:
    """What a finished clip folder was made from (see :data:`DONE_MARK`); None when it is
    unfinished, or was made by an older lipsync-fix that did not record it."""
    try:
        text = (folder / DONE_MARK).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        source = json.loads(text)
    except json.JSONDecodeError:
        return None
    return source if isinstance(source, dict) else None


def frame_count(folder: Path) -> int:
    """Number of consecutive ``<i>.jpg`` frames from 0 (the authors stop at the first gap)."""
    n = 0
    while (folder / f"{n}.jpg").is_file():
        n += 1
    return n


def read_wav(path: Path) -> np.ndarray:
    """A 16 kHz wav as mono float32; other rates are refused (re-run preprocessing)."""
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise MediaError(f"cannot read audio {path}: {exc}") from exc
    if sr != SAMPLE_RATE:
        raise MediaError(f"{path} is sampled at {sr} Hz; clips must hold 16000 Hz audio")
    return wav.mean(axis=1)


def load_clip(folder: str | Path, size: int = CROP_SIZE,
              fit: Callable[[np.ndarray], np.ndarray] | None = None) -> Clip:
    """Read a clip folder: all frames (``size`` x ``size``) and the audio. ``fit`` resizes
    an image of another size as the model family's loader does (an input recipe's
    ``fit_crop``); by default OpenCV's bilinear resize, as VocaLiST's authors read them."""
    folder = Path(folder)
    n = frame_count(folder)
    if n == 0:
        raise MediaError(f"clip folder {folder} holds no 0.jpg")
    crops = np.stack([read_crop(folder / f"{i}.jpg", size, fit) for i in range(n)])
    return Clip(folder, crops, read_wav(folder / AUDIO_NAME))


def crop_side(folder: str | Path) -> int:
    """The side of a clip folder's crops (96 for Wav2Lip's recipe, 224 for SyncNet's)."""
    img = cv2.imread(str(Path(folder) / "0.jpg"), cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"cannot read image {Path(folder) / '0.jpg'}")
    return int(img.shape[0])


def read_crop(path: Path, size: int = CROP_SIZE,
              fit: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """One BGR crop as the reference reads it (cv2, resized to ``size`` if needed, with
    ``fit`` when given)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"cannot read image {path}")
    if img.shape[:2] != (size, size):
        img = fit(img) if fit is not None else cv2.resize(img, (size, size))
    return img


def list_clips(data_root: str | Path, split: str | None = "test") -> list[Path]:
    """Clip folders of a split.

    LRS2 style: ``filelists/<split>.txt`` lists clip folders relative to the root.
    Acappella style (a folder per split, e.g. ``unseen_unheard_test/``, with language and
    singer folders below): every clip folder under ``<root>/<split>``. Anyone's data: with
    neither, every clip folder under the root.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise UsageError(f"data root {root} is not a folder")
    filelist = root / "filelists" / f"{split}.txt"
    if split and filelist.is_file():
        clips = []
        for line in filelist.read_text().splitlines():
            name = line.strip().split()[0] if line.strip() else ""
            if name:
                clips.append(root / name)
        return clips
    if split and (root / split).is_dir():
        root = root / split
    elif split and (root / "filelists").is_dir():
        raise LipsyncError(f"no filelist for split {split!r} under {root / 'filelists'}")
    return sorted(p.parent for p in root.rglob(AUDIO_NAME) if (p.parent / "0.jpg").is_file())
