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
from lipsync_fix.data.layout import DONE_MARK, clip_source, write_clip
from lipsync_fix.errors import InputChangedError, LipsyncError
from lipsync_fix.features.constants import SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS
from lipsync_fix.features.inputs import RECIPES, WAV2LIP, InputRecipe
from lipsync_fix.files import Fingerprint, describe_change, fingerprint, os_failure, stops_the_run
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


def clip_options(detector: str, inputs: str) -> dict:
    """The options a clip depends on (recorded in its folder, compared on a rerun)."""
    return {"detector": detector, "inputs": inputs}


def preprocess_video(
    src: Path, out_dir: Path, detector: str = "auto", inputs: str = "wav2lip"
) -> dict:
    """One video -> one clip folder; returns a summary line for the report. ``inputs``
    names the model family's crops (:data:`lipsync_fix.features.inputs.RECIPES`). The
    folder records the video's fingerprint and the options; a video that changes while
    it is read fails (:class:`InputChangedError`) and writes nothing."""
    before = fingerprint(src)
    info = media.probe(src)
    media.require_video_and_audio(info)
    frames = media.iter_video_frames(src, VIDEO_FPS, DECODE_CHUNK_FRAMES,
                                     max_side=DECODE_MAX_SIDE, info=info)
    crops, first = main_face_run(frames, VIDEO_FPS, detector, RECIPES[inputs])
    wav = media.decode_audio(src, SAMPLE_RATE, info=info)
    start = first * SAMPLES_PER_FRAME
    wav = wav[start : start + len(crops) * SAMPLES_PER_FRAME]
    after = fingerprint(src)
    if not before.same_content(after):
        raise InputChangedError(f"{src} changed while it was read "
                                f"({describe_change(before, after)}); no clip was written")
    write_clip(out_dir, crops, wav, {"input": str(src), "fingerprint": before.to_json(),
                                     "options": clip_options(detector, inputs)})
    return {"input": str(src), "clip": str(out_dir), "frames": len(crops)}


def stale_clip(folder: Path, src: Path, detector: str, inputs: str) -> str | None:
    """None when the finished clip ``folder`` was made from ``src`` as it is now, with
    these options; otherwise why it may not be reused."""
    source = clip_source(folder)
    if source is None:
        return "an older lipsync-fix made it without recording its video"
    if source.get("options") != clip_options(detector, inputs):
        return "it was made with other options"
    made_from = Fingerprint.from_json(source.get("fingerprint"))
    now = fingerprint(src)
    if made_from is None or not made_from.same_content(now):
        return "the video changed since it was made"
    return None


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
        if stops_the_run(exc):
            raise  # a full disk: every later clip would fail too
        return {"input": str(src), "error": str(exc)}
    except OSError as exc:
        failure = os_failure(exc, src)
        if stops_the_run(failure):
            raise failure from exc
        return {"input": str(src), "error": str(failure)}


def preprocess_folder(
    raw_dir: Path,
    out_dir: Path,
    detector: str = "auto",
    workers: int = 1,
    on_done: Callable[[int, int, dict], None] | None = None,
    shard: str | None = None,
    inputs: str = "wav2lip",
    force: bool = False,
) -> PreprocessSummary:
    """Every video under ``raw_dir`` -> a clip folder under ``out_dir`` (same relative
    path, without suffix). Resumable: a finished clip of the same video (same
    fingerprint) made with the same options is skipped; one that is not is remade only
    with ``force`` (skipped with the reason otherwise: it is not ours to replace
    unasked); parallel over files; ``shard`` ``K/N`` takes the K-th of N interleaved
    parts of the sorted list (see :func:`lipsync_fix.batch.select_shard`)."""
    planned = batch.plan_jobs([raw_dir])
    jobs, skipped = [], []
    failed: list[dict] = []
    for job in batch.select_shard(planned, shard):
        src = job.input
        dst = out_dir / job.label.with_suffix("")
        if (dst / DONE_MARK).is_file():
            try:
                why = stale_clip(dst, src, detector, inputs)
            except LipsyncError as exc:
                failed.append({"input": str(src), "error": str(exc)})
                continue
            if why is None:
                skipped.append({"input": str(src), "reason": "already done"})
                continue
            if not force:
                skipped.append({"input": str(src), "reason": f"its clip {dst} is out of date "
                                f"({why}); use --force to make it again"})
                continue
        jobs.append((src, dst, detector, inputs))
    done: list[dict] = []
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
