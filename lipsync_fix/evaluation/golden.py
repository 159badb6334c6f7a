"""The authors' reference numbers, shipped with the package, and the check against them.

``assets/golden/`` holds a 32-frame clip scored by the authors' evaluation code, the
state-dict manifest of their model, and their accuracy lines. The weights that produced
those numbers follow a deterministic rule (below), so no 320 MB checkpoint is needed to
check that an installation computes what the reference computes.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipsync_fix.evaluation.protocols import PROTOCOLS, clip_accuracies, progress_line
from lipsync_fix.features.mel import log_mel_spectrogram
from lipsync_fix.features.visual import frames_from_stacked
from lipsync_fix.models.vocalist import VocaLiST
from lipsync_fix.sync.scoring import OUT_OF_RANGE, ScoreOptions, score_matrix

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden"


def rule_tensor(key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """One entry of the golden weight rule: drawn from a generator seeded by the CRC32 of
    its key, in a range that depends on what the entry is (so no checkpoint file is needed
    to reproduce the reference's numbers). The rule is shared by the VocaLiST and the
    SyncNet golden data."""
    if key.endswith(("num_batches_tracked", "_float_tensor")):
        return torch.zeros(shape, dtype=dtype)
    if key.endswith(".version"):
        return torch.full(shape, 2.0, dtype=dtype)
    if key.endswith("running_var"):
        lo, hi = 0.5, 1.5
    elif key.endswith("running_mean"):
        lo, hi = -0.1, 0.1
    elif len(shape) == 1 and key.endswith("weight"):
        lo, hi = 0.8, 1.2
    elif len(shape) == 1:
        lo, hi = -0.05, 0.05
    else:
        bound = float(np.sqrt(3.0 / np.prod(shape[1:])))
        lo, hi = -bound, bound
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    values = rng.uniform(lo, hi, int(np.prod(shape))).astype(np.float32)
    return torch.from_numpy(values.reshape(shape))


def rule_state_dict(manifest_path: Path = GOLDEN / "state_dict_manifest.json") -> dict:
    """The weights the golden numbers were made with, for every entry of a manifest
    (``{"entries": [{"key", "shape", "dtype"}, ...]}``), in its order."""
    manifest = json.loads(manifest_path.read_text())
    return {
        entry["key"]: rule_tensor(entry["key"], tuple(entry["shape"]),
                                  getattr(torch, entry["dtype"]))
        for entry in manifest["entries"]
    }


def rule_weights(model: torch.nn.Module) -> dict:
    """The golden rule's weights for ``model``'s own state-dict layout (no manifest file
    needed: for benchmarks and tests of models whose manifest is not shipped)."""
    return {key: rule_tensor(key, tuple(value.shape), value.dtype)
            for key, value in model.state_dict().items()}


def golden_model() -> VocaLiST:
    model = VocaLiST()
    model.load_state_dict(rule_state_dict(), strict=True)
    return model.eval()


@dataclass
class GoldenCheck:
    max_score_error: float
    out_of_range_identical: bool
    lines: dict[str, tuple[str, str]]  # protocol -> (ours, reference)
    seconds: float

    @property
    def passed(self) -> bool:
        return (self.max_score_error < 1e-3 and self.out_of_range_identical
                and all(ours == ref for ours, ref in self.lines.values()))


def check_against_reference(model: VocaLiST | None = None, device: str = "cpu") -> GoldenCheck:
    """Score the golden clip (cached scorer) and compare matrix and accuracy lines."""
    model = (model or golden_model()).to(device)
    data = np.load(GOLDEN / "eval_golden.npz")
    expected = json.loads((GOLDEN / "eval_golden.json").read_text())
    start = time.perf_counter()
    scores = score_matrix(model, frames_from_stacked(data["vid"]),
                         log_mel_spectrogram(data["wav"]), len(data["wav"]),
                         ScoreOptions(device=device))
    seconds = time.perf_counter() - start
    ref = data["dists"]  # the golden file keeps the reference's name
    masked = ref == OUT_OF_RANGE
    lines = {
        name: (progress_line(clip_accuracies(scores, PROTOCOLS[name]), PROTOCOLS[name]),
               expected[f"{name}_progress_line"])
        for name in ("lrs2", "acappella")
    }
    return GoldenCheck(
        max_score_error=float(np.abs(scores[~masked] - ref[~masked]).max()),
        out_of_range_identical=bool(np.array_equal(scores == OUT_OF_RANGE, masked)),
        lines=lines,
        seconds=seconds,
    )
