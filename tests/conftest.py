"""Shared fixtures: the golden data of the authors' reference code and its weight rule, the
``needs_shared`` mark, and :func:`invoke` (the command line, in-process)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lipsync_fix import cli
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


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n``) each worker gets its share of the cores for torch, so
    two workers on two cores do not fight over four threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding a slow test run first (in their own order), so that with
    ``-n 2 --dist loadfile`` the long files start at once instead of leaving one worker
    busy at the end while the other idles."""
    heavy = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in heavy)


@pytest.fixture(scope="session")
def golden_model() -> VocaLiST:
    return golden.golden_model()


@pytest.fixture(scope="session")
def golden_data():
    def load(name: str):
        folder = GOLDEN if (GOLDEN / f"{name}.npz").is_file() else DATA
        return np.load(folder / f"{name}.npz")

    return load


@dataclass
class Outcome:
    """What one command line did: its exit status and what it printed."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.splitlines()

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def train_config(folder: Path, **values: object) -> Path:
    """A training config file for ``lipsync-fix train --config``: ``values`` plus
    ``num_workers = 0`` and a small validation set (``val_samples = 16``) by default.

    In-process, the test's own process forks the loader workers; after this process has
    used OpenCV's thread pool (writing synthetic clips), a forked worker's
    ``cv2.setNumThreads`` can hang forever. A fresh ``lipsync-fix train`` process is not
    affected, so tests keep the data loading in the main process instead."""
    path = folder / "train_config.json"
    path.write_text(json.dumps({"num_workers": 0, "val_samples": 16, **values}))
    return path


def invoke(*args: object) -> Outcome:
    """Run ``lipsync-fix ARGS`` in this process, through the same error handling and exit
    codes as the installed command (:func:`lipsync_fix.cli.run`), with stdout and stderr
    captured apart. In-process, a call costs what the command does, not ~3 s of imports."""
    runner = CliRunner()
    with runner.isolation() as (stdout, stderr, _):
        code = cli.run([str(a) for a in args])
        sys.stdout.flush()
        sys.stderr.flush()
        return Outcome(code, stdout.getvalue().decode(), stderr.getvalue().decode())
