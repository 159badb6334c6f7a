"""Synthetic data sets in the authors' layout: the one writer behind ``lipsync-fix synth``.

Clip ``i`` of a data set is made from a seed derived from ``(seed, i)`` alone, so a bigger
data set with the same seed starts with the same clips, and the recipe in a model card
(``lipsync-fix synth data/ --clips 120 --seed 7``) rebuilds the same data.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lipsync_fix.data.layout import write_clip
from lipsync_fix.data.preprocess import main_face_run
from lipsync_fix.data.synth.clips import audio_at_16k, clip_crops, make_talking_head
from lipsync_fix.errors import OutputError, OutputExistsError
from lipsync_fix.features.constants import SAMPLES_PER_FRAME, VIDEO_FPS


def split_counts(n_clips: int, fractions: Sequence[float]) -> list[int]:
    """Clips per split: proportional, every split with a positive share gets at least one clip
    when there are enough clips, and the counts always add up to ``n_clips``."""
    weights = np.asarray(fractions, dtype=np.float64)
    if weights.ndim != 1 or len(weights) == 0 or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"Split fractions must be non-negative and not all zero: {fractions}.")
    ideal = n_clips * weights / weights.sum()
    counts = np.floor(ideal).astype(int)
    wanted = weights > 0
    if n_clips >= int(wanted.sum()):
        counts[wanted & (counts == 0)] = 1
    while counts.sum() > n_clips:  # the minimum-one rule overshot: take from the biggest split
        counts[int(np.argmax(counts))] -= 1
    while counts.sum() < n_clips:  # rounding left clips over: give them where most is missing
        counts[int(np.argmax(np.where(wanted, ideal - counts, -np.inf)))] += 1
    return [int(c) for c in counts]


CROP_SOURCES = ("detected", "known")
"""Where the crops of a synthetic clip come from: the main job's face pipeline
(``detected``: detection, tracking, the authors' crop, so a model trains on the crops it
will see at inference) or the clip's known face boxes (``known``: faster, every frame)."""


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip ``index`` of a data set made with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_synthetic_dataset(
    out_dir: str | Path,
    n_clips: int,
    seed: int = 0,
    duration_s: float = 4.0,
    splits: Sequence[tuple[str, float]] = (("train", 0.8), ("val", 0.1), ("test", 0.1)),
    crops: str = "detected",
    force: bool = False,
    on_done: Callable[[int, int], None] | None = None,
    **clip_options: object,
) -> Path:
    """Write ``n_clips`` synthetic talking heads as a training data root and return it.

    The layout is what the authors' training code (and :mod:`lipsync_fix.data.layout`)
    reads: ``clips/00000/0.jpg ... audio.wav`` per clip and ``filelists/<split>.txt``
    listing clip folders relative to ``out_dir``, plus ``dataset.json`` recording how it was
    made. Clips are assigned to splits in order, by the given fractions (e.g. 80/10/10), with
    at least one clip per split whenever ``n_clips`` allows. ``crops``: see
    :data:`CROP_SOURCES`; with ``detected`` a clip keeps its longest run of frames with a
    face (the layout has no gaps). ``clip_options`` go to :func:`make_talking_head` (e.g.
    ``size``, ``head_motion``). A non-empty ``out_dir`` is refused unless ``force``, which
    replaces it.
    """
    if n_clips < 1:
        raise ValueError(f"n_clips must be at least 1, got {n_clips}.")
    if crops not in CROP_SOURCES:
        raise ValueError(f"crops must be one of {CROP_SOURCES}, not {crops!r}.")
    names = [name for name, _ in splits]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"Split names must be distinct and non-empty: {names}.")
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root} is a file; synth writes a folder.")
    if root.is_dir() and any(root.iterdir()):
        if not force:
            raise OutputExistsError(f"{root} is not empty; use --force to replace it.")
        shutil.rmtree(root)
    (root / "filelists").mkdir(parents=True, exist_ok=True)
    counts = split_counts(n_clips, [fraction for _, fraction in splits])
    assignment = [name for name, count in zip(names, counts, strict=True) for _ in range(count)]
    clips = []
    for index, split in enumerate(assignment):
        head = make_talking_head(clip_seed(seed, index), duration_s=duration_s,
                                 **clip_options)  # type: ignore[arg-type]
        wav = audio_at_16k(head)
        if crops == "known":
            faces, first = clip_crops(head), 0
        else:
            bgr = np.ascontiguousarray(head.frames[..., ::-1])
            faces, first = main_face_run([bgr], fps=head.fps)
        start = first * SAMPLES_PER_FRAME
        rel = f"clips/{index:05d}"
        write_clip(root / rel, faces, wav[start : start + len(faces) * SAMPLES_PER_FRAME])
        clips.append({"path": rel, "seed": clip_seed(seed, index), "split": split,
                      "frames": len(faces), "first_frame": first})
        if on_done:
            on_done(index + 1, n_clips)
    for name in names:
        lines = [c["path"] for c in clips if c["split"] == name]
        (root / "filelists" / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))
    manifest = {
        "generator": "lipsync_fix.data.synth.write_synthetic_dataset",
        "seed": seed,
        "n_clips": n_clips,
        "duration_s": duration_s,
        "crops": crops,
        "fps": VIDEO_FPS,
        "clip_options": {k: repr(v) for k, v in clip_options.items()},
        "clips": clips,
    }
    (root / "dataset.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return root
