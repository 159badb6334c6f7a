"""Shared fixtures: the golden data of the authors' reference code and its weight rule, the
``needs_shared`` mark, and :func:`invoke` (the command line, in-process).

**How results are compared** (machines of one kind pick different float kernels, so a
float result may differ in its last bits from one machine to the next):

* exactly: integers, copies (bytes, packets), masks and whole-sample shifts;
* floats: with the golden data's tolerances (``assert_allclose``, ``max() < tol``), never
  bit for bit;
* an argmax (a row's best shift, an accuracy line): only where the best score leads the
  second best by more than the tolerance of the scores it is taken from
  (:func:`clear_lead`); elsewhere two correct implementations may pick either.

Every test gets its own model cache (``$LIPSYNC_FIX_CACHE``) and torch hub folder, so no
test reads or writes the user's ``~/.cache``.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lipsync_fix import cli
from lipsync_fix.evaluation import golden
from lipsync_fix.evaluation.protocols import clip_accuracies, progress_line
from lipsync_fix.models.vocalist import VocaLiST
from lipsync_fix.sync.offsets import best_shifts, context_average

DATA = Path(__file__).parent / "data"  # golden files only the tests need
GOLDEN = golden.GOLDEN  # golden files the package ships (lipsync-fix check)
SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the checkout
REALWORLD = SHARED / "realworld"

SHARED_FOLDERS = ("realworld", "syncnet/golden", "vocalist/golden", "mtdvocalist/golden")
_missing_shared = [name for name in SHARED_FOLDERS if not (SHARED / name).is_dir()]
needs_shared = pytest.mark.skipif(
    bool(_missing_shared),
    reason=f"{SHARED} lacks {', '.join(_missing_shared)} (the real clips and golden data)")
"""Mark for tests that read ``../shared``: they are reported as skipped, not passed, when a
checkout has no complete ``shared`` folder beside it."""


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model cache and torch hub folder of the test's own: no test touches the user's."""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LIPSYNC_FIX_CACHE", str(root / "lipsync-fix"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    return root / "lipsync-fix"


def clear_lead(scores: np.ndarray, tolerance: float) -> np.ndarray:
    """Rows of ``scores`` whose best column leads the second best by more than
    ``2 * tolerance``: there, two results within ``tolerance`` of each other must pick
    the same column."""
    top = np.sort(np.asarray(scores, dtype=np.float64), axis=1)
    return top[:, -1] - top[:, -2] > 2 * tolerance


def parse_progress_line(line: str) -> dict[int, dict[int, float]]:
    """The reference's accuracy line (``K5:0.1111,...``, or ``[Tolerance 1]:K5:...,
    [Tolerance 5]:K5:...``) -> ``{tolerance: {K: accuracy}}`` (tolerance 1 when unnamed)."""
    out: dict[int, dict[int, float]] = {}
    tolerance = 1
    for part in line.split(","):
        if part.startswith("[Tolerance "):
            head, part = part.split("]:", 1)
            tolerance = int(head[len("[Tolerance "):])
        k, value = part.split(":")
        out.setdefault(tolerance, {})[int(k.lstrip("K"))] = float(value)
    return out


def assert_accuracy_line(ours: np.ndarray, reference: np.ndarray, protocol, line: str,
                         tolerance: float = 0.0) -> None:
    """Our score matrix gives the reference's accuracy line (``protocol``), compared as the
    golden README asks: each row's context-averaged best shift must equal the reference's
    where the reference's best leads by more than twice the averaged rows' largest
    difference (at least ``tolerance``, the float error of averaging itself); the accuracy
    itself may differ by at most the share of the other rows."""
    golden_lines = parse_progress_line(line)
    assert progress_line(golden_lines, protocol) == line  # our printout has its format
    accuracies = clip_accuracies(ours, protocol)
    for tolerance, by_k in golden_lines.items():
        assert set(by_k) == set(protocol.contexts)
        for k, expected in by_k.items():
            a, b = context_average(reference, k), context_average(ours, k)
            clear = clear_lead(a, max(tolerance, float(np.abs(a - b).max())))
            assert np.array_equal(best_shifts(a)[clear], best_shifts(b)[clear]), (tolerance, k)
            assert abs(accuracies[tolerance][k] - expected) <= (~clear).mean() + 5e-5, \
                (tolerance, k, accuracies[tolerance][k], expected)


def rel_err(ours: torch.Tensor, ref: np.ndarray) -> float:
    """Largest error relative to the reference's largest magnitude (the golden READMEs'
    measure)."""
    ref_t = torch.from_numpy(ref)
    return float((ours - ref_t).abs().max() / ref_t.abs().max())


def assert_forward_stages(model, golden,
                          tolerance: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """A VocaLiST-family model's forward pass on the golden inputs matches the reference
    at every stage (encoders, the three cross-modal transformers, logits); returns the
    video and audio tokens for checks of the model's own. The reference returns (B, D, T) from the
    encoders and (L, B, D) from the transformers."""
    vid, mel = torch.from_numpy(golden["vid"]), torch.from_numpy(golden["mel"])
    with torch.no_grad():
        video_tokens = model.encode_video(vid)
        audio_tokens = model.encode_audio(mel)
        av, va, mem = model.transformers(audio_tokens, video_tokens)
        logits = model.head(mem)
        full = model(vid, mel)
    assert rel_err(video_tokens.transpose(1, 2), golden["vid_prenet"]) < tolerance
    assert rel_err(audio_tokens.transpose(1, 2), golden["aud_prenet"]) < tolerance
    assert rel_err(av.transpose(0, 1), golden["av_transformer"]) < tolerance
    assert rel_err(va.transpose(0, 1), golden["va_transformer"]) < tolerance
    assert rel_err(mem.transpose(0, 1), golden["mem_transformer"]) < tolerance
    assert rel_err(logits, golden["logits"]) < tolerance
    assert torch.equal(full, logits)
    return video_tokens, audio_tokens


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


# --- downloads: a server on 127.0.0.1 stands in for the publishers -----------------------

@pytest.fixture()
def server():
    """Serves ``files`` by name; ``/missing/...`` is a 404, ``/broken/...`` sends the full
    Content-Length but only half the bytes, then closes. ``hits`` logs every request."""
    state = SimpleNamespace(files={}, hits=[])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state.hits.append(self.path)
            body = state.files.get(self.path.rsplit("/", 1)[-1])
            if body is None or self.path.startswith("/missing/"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if self.path.startswith("/broken/") else body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def dead_url():
    """A URL on 127.0.0.1 where nothing listens (connection refused, as when offline)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


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
