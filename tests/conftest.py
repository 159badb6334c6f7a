"""Shared fixtures: the golden data of the authors' reference code and its weight rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipsync_fix.evaluation import golden
from lipsync_fix.models.vocalist import VocaLiST

DATA = Path(__file__).parent / "data"  # golden files only the tests need
GOLDEN = golden.GOLDEN  # golden files the package ships (lipsync-fix check)
SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the checkout
REALWORLD = SHARED / "realworld"

needs_shared = pytest.mark.skipif(
    not REALWORLD.is_dir(), reason=f"{SHARED} is missing (the real clips and specs)")
"""Mark for tests that read ``../shared``: they are reported as skipped, not passed, when a
checkout has no ``shared`` folder beside it."""


@pytest.fixture(scope="session")
def golden_model() -> VocaLiST:
    return golden.golden_model()


@pytest.fixture(scope="session")
def golden_data():
    def load(name: str):
        folder = GOLDEN if (GOLDEN / f"{name}.npz").is_file() else DATA
        return np.load(folder / f"{name}.npz")

    return load
