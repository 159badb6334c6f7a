"""Shared fixtures: the golden data of the authors' reference code and its weight rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipsync_fix import golden
from lipsync_fix.model import VocaLiST

DATA = Path(__file__).parent / "data"  # golden files only the tests need
GOLDEN = golden.GOLDEN  # golden files the package ships (lipsync-fix check)
REALWORLD = Path(__file__).resolve().parents[1].parent / "shared" / "realworld"


@pytest.fixture(scope="session")
def golden_model() -> VocaLiST:
    return golden.golden_model()


@pytest.fixture(scope="session")
def golden_data():
    def load(name: str):
        folder = GOLDEN if (GOLDEN / f"{name}.npz").is_file() else DATA
        return np.load(folder / f"{name}.npz")

    return load
