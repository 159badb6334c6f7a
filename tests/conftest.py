"""Shared fixtures: the golden data of the authors' reference code and its weight rule."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync_fix.model import VocaLiST

DATA = Path(__file__).parent / "data"
REALWORLD = Path(__file__).resolve().parents[1].parent / "shared" / "realworld"


def rule_state_dict() -> dict[str, torch.Tensor]:
    """The deterministic weights the golden numbers were produced with (GOLDEN_README.md)."""
    manifest = json.loads((DATA / "state_dict_manifest.json").read_text())
    state = {}
    for entry in manifest["entries"]:
        key, shape = entry["key"], tuple(entry["shape"])
        dtype = getattr(torch, entry["dtype"])
        if key.endswith(("num_batches_tracked", "_float_tensor")):
            state[key] = torch.zeros(shape, dtype=dtype)
            continue
        if key.endswith(".version"):
            state[key] = torch.full(shape, 2.0, dtype=dtype)
            continue
        n = int(np.prod(shape))
        if key.endswith("running_var"):
            lo, hi = 0.5, 1.5
        elif key.endswith("running_mean"):
            lo, hi = -0.1, 0.1
        elif len(shape) == 1 and key.endswith("weight"):
            lo, hi = 0.8, 1.2
        elif len(shape) == 1:
            lo, hi = -0.05, 0.05
        else:
            b = float(np.sqrt(3.0 / np.prod(shape[1:])))
            lo, hi = -b, b
        values = np.random.default_rng(zlib.crc32(key.encode("utf-8"))).uniform(lo, hi, n)
        state[key] = torch.from_numpy(values.astype(np.float32).reshape(shape))
    return state


@pytest.fixture(scope="session")
def golden_model() -> VocaLiST:
    model = VocaLiST()
    model.load_state_dict(rule_state_dict(), strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def golden():
    def load(name: str):
        return np.load(DATA / f"{name}.npz")

    return load
