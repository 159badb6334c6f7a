"""The paper's evaluation protocols over a folder of preprocessed clips.

Each clip is scored with :func:`lipsync_fix.sync.scoring.score_matrix` (every window against
shifts -15..+15), then each context length K averages the rows and each row's offset is
compared with the ground truth (0: the clips are in sync). A clip's accuracy is the
fraction of correct rows; a dataset's figure is the mean over clips.

* LRS2 (speech, Table 1): tolerance 1 frame, K = 5, 7, 9, 11, 13, 15.
* Acappella (singing, Table 2): tolerances 1 and 5 frames, K = 5, 10, 15, 20, 25.

A context-specific ("Var") model trained on T-frame windows scores T-frame rows; with
``var=True`` it is evaluated at its own length only (K = T, no averaging), otherwise at
every protocol K >= T. SyncNet* checkpoints are scored the same way (cosine similarity
instead of a logit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from lipsync_fix.data.layout import crop_side, list_clips, load_clip
from lipsync_fix.errors import LipsyncError, UsageError
from lipsync_fix.features.constants import FRAMES_PER_WINDOW
from lipsync_fix.features.inputs import RECIPES, recipe_for
from lipsync_fix.files import write_atomically
from lipsync_fix.sync.offsets import accuracy
from lipsync_fix.sync.scoring import ScoreOptions, clip_source, score_rows, window_frames
from lipsync_fix.training.distributed import Dist, gather


@dataclass(frozen=True)
class Protocol:
    name: str
    tolerances: tuple[int, ...]
    contexts: tuple[int, ...]

    def for_model(self, window: int, var: bool = False) -> Protocol:
        """The contexts a model with ``window``-frame rows can be evaluated at: its own
        length only with ``var``, else every protocol K it does not exceed."""
        if var:
            return Protocol(self.name, self.tolerances, (window,))
        usable = tuple(k for k in self.contexts if k >= window)
        if not usable:
            raise LipsyncError(f"the model reads {window}-frame windows, longer than every "
                               f"{self.name} context; evaluate it with --var")
        return Protocol(self.name, self.tolerances, usable)


PROTOCOLS = {
    "lrs2": Protocol("lrs2", (1,), (5, 7, 9, 11, 13, 15)),
    "acappella": Protocol("acappella", (1, 5), (5, 10, 15, 20, 25)),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UsageError(f"unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def clip_accuracies(
    scores: np.ndarray, protocol: Protocol, true_shift: int = 0,
    window_frames: int = FRAMES_PER_WINDOW,
) -> dict:
    """``{tolerance: {K: accuracy}}`` for one clip's score matrix of ``window_frames``-frame
    rows."""
    return {
        tol: {k: accuracy(scores, k, tol, true_shift, window_frames) for k in protocol.contexts}
        for tol in protocol.tolerances
    }


def progress_line(acc: dict, protocol: Protocol) -> str:
    """The reference's progress description, e.g. ``K5:0.1111,K7:...``; Acappella lists
    ``[Tolerance 1]:K5:...,[Tolerance 5]:K5:...``."""
    def ks(tol: int) -> str:
        return ",".join(f"K{k}:{acc[tol][k]:.4f}" for k in protocol.contexts)

    if len(protocol.tolerances) == 1:
        return ks(protocol.tolerances[0])
    return ",".join(f"[Tolerance {tol}]:{ks(tol)}" for tol in protocol.tolerances)


@dataclass
class EvalResult:
    protocol: str
    contexts: tuple[int, ...] = ()
    window_frames: int = FRAMES_PER_WINDOW  # T: frames per scored row (the model's own)
    clips: int = 0
    windows: int = 0
    seconds: float = 0.0
    per_clip: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def accuracy(self) -> dict[str, dict[str, float]]:
        """Mean over clips, keyed ``tolerance_<t>`` then ``str(K)``."""
        out: dict[str, dict[str, float]] = {}
        for clip in self.per_clip:
            for tol, by_k in clip["accuracy"].items():
                slot = out.setdefault(f"tolerance_{tol}", {})
                for k, value in by_k.items():
                    slot.setdefault(str(k), []).append(value)  # type: ignore[arg-type]
        return {t: {k: float(np.mean(v)) for k, v in d.items()} for t, d in out.items()}

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol,
            "model_window": self.window_frames,
            "clips": self.clips,
            "windows": self.windows,
            "seconds": round(self.seconds, 3),
            "accuracy": self.accuracy(),
            "skipped": self.skipped,
        }


def evaluate_folder(
    model: nn.Module,
    data_root: str | Path,
    protocol: Protocol,
    split: str = "test",
    options: ScoreOptions | None = None,
    limit: int | None = None,
    on_clip: Callable[[int, int, dict], None] | None = None,
    var: bool = False,
    ranks: Dist | None = None,
) -> EvalResult:
    """Score every clip of a split and aggregate the protocol's accuracies.

    Clips too short for one window or unreadable are skipped and listed, not fatal:
    one bad folder in a dataset of thousands should not lose an evaluation run.
    ``var``: evaluate a context-specific model at its own window length only. Under
    ``torchrun`` (``ranks`` of several processes, from
    :func:`lipsync_fix.training.distributed.process_group`) each rank scores every N-th
    clip and every rank returns the whole table.
    """
    ctx = ranks or Dist(0, 1, 0)
    window = window_frames(model, options or ScoreOptions())
    protocol = protocol.for_model(window, var)
    recipe = recipe_for(model)
    clips = list_clips(data_root, split)[:limit]
    if not clips:
        raise UsageError(f"no clips found under {data_root} (split {split!r})")
    side = crop_side(clips[0])
    # Crops cut for another family (SyncNet's 224 px) are refused; faces saved at another
    # size (Wav2Lip's preprocessing keeps the detected size) are resized as the family's
    # authors' loader resized them (the recipe's fit_crop).
    made_for_another = {r.crop_size for r in RECIPES.values()} - {recipe.crop_size}
    if side != recipe.crop_size and side in made_for_another:
        raise LipsyncError(
            f"{model.family} reads {recipe.crop_size}x{recipe.crop_size} crops, but "
            f"{data_root} holds {side}x{side} ones (preprocess with --inputs {recipe.name})")
    result = EvalResult(protocol.name, contexts=protocol.contexts, window_frames=window)
    start = time.perf_counter()
    for i, folder in list(enumerate(clips))[ctx.rank :: ctx.world_size]:
        try:
            clip = load_clip(folder, recipe.crop_size, recipe.fit_crop)
        except LipsyncError as exc:
            result.skipped.append({"clip": str(folder), "reason": str(exc)})
            continue
        source = clip_source(recipe.keep(clip.crops), recipe.audio_features(clip.wav),
                             len(clip.wav), window, recipe)
        scores = score_rows(model, source, np.arange(source.n_rows), options)
        if scores.shape[0] == 0:
            result.skipped.append({"clip": str(folder), "reason": "shorter than one window"})
            continue
        acc = clip_accuracies(scores, protocol, window_frames=window)
        record = {"clip": str(folder), "windows": int(scores.shape[0]), "accuracy": acc}
        result.per_clip.append(record)
        result.clips += 1
        result.windows += scores.shape[0]
        if on_clip:
            on_clip(i + 1, len(clips), record)
    result.seconds = time.perf_counter() - start
    return _gathered(result, clips, ctx)


def _gathered(result: EvalResult, clips: list[Path], ctx: Dist) -> EvalResult:
    """Every rank's clips in one result, in the order of the split's list."""
    if not ctx.enabled:
        return result
    parts = gather(result, ctx)
    order = {str(path): i for i, path in enumerate(clips)}
    result.per_clip = sorted((r for p in parts for r in p.per_clip),
                             key=lambda r: order.get(r["clip"], 0))
    result.skipped = [s for p in parts for s in p.skipped]
    result.clips = sum(p.clips for p in parts)
    result.windows = sum(p.windows for p in parts)
    result.seconds = max(p.seconds for p in parts)
    return result


def write_result(result: EvalResult, path: str | Path) -> None:
    """JSON for ``.json`` paths, a CSV table (tolerance, K, accuracy) for ``.csv``."""
    path = Path(path)
    data = result.to_json()
    if path.suffix == ".csv":
        rows = ["tolerance,context,accuracy"]
        for tol, by_k in data["accuracy"].items():
            rows += [f"{tol.split('_')[1]},{k},{v:.6f}" for k, v in by_k.items()]
        text = "\n".join(rows) + "\n"
    else:
        text = json.dumps(data, indent=1) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))
