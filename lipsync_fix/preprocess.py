"""Videos -> the authors' dataset layout, with the same faces and crops as the main job.

A clip folder holds ``0.jpg, 1.jpg, ...`` (96x96 BGR face crops at 25 fps) and
``audio.wav`` (16 kHz mono PCM). Training on crops made by the very pipeline that runs at
inference keeps the model from learning a crop geometry it will never see.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from lipsync_fix import faces, media
from lipsync_fix.audio import SAMPLE_RATE, VIDEO_FPS
from lipsync_fix.datasets import AUDIO_NAME
from lipsync_fix.errors import LipsyncError
from lipsync_fix.synth import make_talking_head

DONE_MARK = ".complete"


def write_clip(out_dir: Path, crops: np.ndarray, wav: np.ndarray) -> Path:
    """Write one clip folder atomically (a temp folder renamed when complete)."""
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, crop in enumerate(crops):
        if not cv2.imwrite(str(tmp / f"{i}.jpg"), crop):
            raise LipsyncError(f"cannot write {tmp / f'{i}.jpg'}")
    sf.write(tmp / AUDIO_NAME, np.asarray(wav, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    (tmp / DONE_MARK).touch()
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def face_crops(
    frame_chunks: Iterable[np.ndarray], detector: str = "auto"
) -> tuple[np.ndarray, int]:
    """Crops of the longest run of frames showing the main face, and its first frame.

    The authors' layout has no gaps (frames are numbered 0..N-1 and stop at the first
    missing one), so frames without the face cannot be kept."""
    found = faces.extract_face_crops(frame_chunks, faces.make_detector(detector))
    has = np.asarray(found.has_face, dtype=bool)
    best_start, best_len, start = 0, 0, None
    for i, flag in enumerate([*has, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = None
    return found.crops[best_start : best_start + best_len], best_start


def preprocess_video(src: Path, out_dir: Path, detector: str = "auto") -> dict:
    """One video -> one clip folder; returns a summary line for the report."""
    info = media.probe(src)
    media.require_video_and_audio(info)
    crops, first = face_crops(media.iter_video_frames(src, fps=VIDEO_FPS), detector)
    wav = media.decode_audio(src, SAMPLE_RATE)
    start = round(first * SAMPLE_RATE / VIDEO_FPS)
    wav = wav[start : start + round(len(crops) * SAMPLE_RATE / VIDEO_FPS)]
    write_clip(out_dir, crops, wav)
    return {"input": str(src), "clip": str(out_dir), "frames": len(crops)}


@dataclass
class PreprocessSummary:
    done: list[dict]
    skipped: list[dict]


def _one(job: tuple[Path, Path, str]) -> dict:
    src, dst, detector = job
    try:
        return preprocess_video(src, dst, detector)
    except LipsyncError as exc:
        return {"input": str(src), "error": str(exc)}


def preprocess_folder(
    raw_dir: Path,
    out_dir: Path,
    detector: str = "auto",
    workers: int = 1,
    on_done: Callable[[int, int, dict], None] | None = None,
) -> PreprocessSummary:
    """Every video under ``raw_dir`` -> a clip folder under ``out_dir`` (same relative
    path, without suffix). Resumable: finished clips are skipped; parallel over files."""
    videos = sorted(p for p in raw_dir.rglob("*") if p.suffix.lower() in media.VIDEO_SUFFIXES)
    jobs, skipped = [], []
    for src in videos:
        dst = out_dir / src.relative_to(raw_dir).with_suffix("")
        if (dst / DONE_MARK).is_file():
            skipped.append({"input": str(src), "reason": "already done"})
        else:
            jobs.append((src, dst, detector))
    done = []
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Serial() as pool:
        for i, result in enumerate(pool.map(_one, jobs)):
            if "error" in result:
                skipped.append({"input": result["input"], "reason": result["error"]})
            else:
                done.append(result)
            if on_done:
                on_done(i + 1, len(jobs), result)
    return PreprocessSummary(done, skipped)


class _Serial:
    """Stands in for a process pool when one worker is asked for."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, items):
        return map(fn, items)


def synthesize_dataset(
    out_dir: Path,
    n_clips: int,
    seed: int = 0,
    duration_s: float = 4.0,
    splits: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1)),
    on_done: Callable[[int, int], None] | None = None,
) -> Path:
    """Generated talking heads in the authors' layout, cropped by the main job's face
    pipeline, with ``filelists/<split>.txt``. Deterministic for a seed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n_clips):
        clip = make_talking_head(seed * 100_003 + i, duration_s=duration_s)
        bgr = np.ascontiguousarray(clip.frames[..., ::-1])
        crops, first = face_crops([bgr])
        start = first * int(SAMPLE_RATE / VIDEO_FPS)
        wav = clip.audio[start : start + len(crops) * int(SAMPLE_RATE / VIDEO_FPS)]
        name = f"clips/{i:05d}"
        write_clip(out_dir / name, crops, wav)
        names.append(name)
        if on_done:
            on_done(i + 1, n_clips)
    (out_dir / "filelists").mkdir(exist_ok=True)
    # Every split but the first gets its share (at least one clip); the first the rest.
    counts = [max(1, int(fraction * n_clips)) for _, fraction in splits[1:]]
    counts.insert(0, n_clips - sum(counts))
    start = 0
    for (split, _), count in zip(splits, counts, strict=True):
        chosen = names[start : start + max(0, count)]
        (out_dir / "filelists" / f"{split}.txt").write_text("".join(f"{n}\n" for n in chosen))
        start += max(0, count)
    return out_dir
