"""Videos -> the authors' dataset layout, with the same faces and crops as the main job.

A clip folder holds ``0.jpg, 1.jpg, ...`` (96x96 BGR face crops at 25 fps) and
``audio.wav`` (16 kHz mono PCM). Training on crops made by the very pipeline that runs at
inference keeps the model from learning a crop geometry it will never see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipsync_fix import batch, faces, media
from lipsync_fix.data.layout import DONE_MARK, write_clip
from lipsync_fix.errors import LipsyncError
from lipsync_fix.features.constants import SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS
from lipsync_fix.features.inputs import RECIPES, WAV2LIP, InputRecipe
from lipsync_fix.sync.frontend import DECODE_CHUNK_FRAMES, DECODE_MAX_SIDE


def main_face_run(
    frame_chunks: Iterable[np.ndarray], fps: float = VIDEO_FPS, detector: str = "auto",
    recipe: InputRecipe = WAV2LIP,
) -> tuple[np.ndarray, int]:
    """Crops of the longest run of frames showing the main face, and its first frame.

    The authors' layout has no gaps (frames are numbered 0..N-1 and stop at the first
    missing one), so frames without the face cannot be kept. ``recipe`` decides the crops:
    Wav2Lip's 96x96 (VocaLiST, SyncNet*) or the original SyncNet's 224x224."""
    side = recipe.crop_size
    found = faces.extract_face_crops(
        frame_chunks, faces.make_detector(detector), fps=fps, crop=recipe.full_crop,
        crop_shape=(side, side, 3))
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


def preprocess_video(
    src: Path, out_dir: Path, detector: str = "auto", inputs: str = "wav2lip"
) -> dict:
    """One video -> one clip folder; returns a summary line for the report. ``inputs``
    names the model family's crops (:data:`lipsync_fix.features.inputs.RECIPES`)."""
    info = media.probe(src)
    media.require_video_and_audio(info)
    frames = media.iter_video_frames(src, VIDEO_FPS, DECODE_CHUNK_FRAMES,
                                     max_side=DECODE_MAX_SIDE, info=info)
    crops, first = main_face_run(frames, VIDEO_FPS, detector, RECIPES[inputs])
    wav = media.decode_audio(src, SAMPLE_RATE, info=info)
    start = first * SAMPLES_PER_FRAME
    wav = wav[start : start + len(crops) * SAMPLES_PER_FRAME]
    write_clip(out_dir, crops, wav)
    return {"input": str(src), "clip": str(out_dir), "frames": len(crops)}


@dataclass
class PreprocessSummary:
    done: list[dict]
    skipped: list[dict]  # finished by an earlier run: {"input", "reason"}
    failed: list[dict] = field(default_factory=list)  # could not be used: {"input", "error"}


def _one(job: tuple[Path, Path, str, str]) -> dict:
    src, dst, detector, inputs = job
    try:
        return preprocess_video(src, dst, detector, inputs)
    except LipsyncError as exc:
        return {"input": str(src), "error": str(exc)}


def preprocess_folder(
    raw_dir: Path,
    out_dir: Path,
    detector: str = "auto",
    workers: int = 1,
    on_done: Callable[[int, int, dict], None] | None = None,
    shard: str | None = None,
    inputs: str = "wav2lip",
) -> PreprocessSummary:
    """Every video under ``raw_dir`` -> a clip folder under ``out_dir`` (same relative
    path, without suffix). Resumable: finished clips are skipped; parallel over files;
    ``shard`` ``K/N`` takes the K-th of N interleaved parts of the sorted list (see
    :func:`lipsync_fix.batch.select_shard`)."""
    planned = batch.plan_jobs([raw_dir])
    jobs, skipped = [], []
    for job in batch.select_shard(planned, shard):
        src = job.input
        dst = out_dir / job.label.with_suffix("")
        if (dst / DONE_MARK).is_file():
            skipped.append({"input": str(src), "reason": "already done"})
        else:
            jobs.append((src, dst, detector, inputs))
    done: list[dict] = []
    failed: list[dict] = []
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Serial() as pool:
        for i, result in enumerate(pool.map(_one, jobs)):
            if "error" in result:
                failed.append(result)
            else:
                done.append(result)
            if on_done:
                on_done(i + 1, len(jobs), result)
    return PreprocessSummary(done, skipped, failed)


class _Serial:
    """Stands in for a process pool when one worker is asked for."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, items):
        return map(fn, items)
