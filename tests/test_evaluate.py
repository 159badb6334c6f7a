"""`lipsync-fix eval` on clips in the authors' layout, and `bench scorer` (in-process)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import invoke

from lipsync_fix.data.synth import make_talking_head, write_clip_folder
from lipsync_fix.models.checkpoint import save_checkpoint
from lipsync_fix.models.vocalist import PRESETS, VocaLiST


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for i, seconds in enumerate((1.6, 1.2)):
        write_clip_folder(make_talking_head(i, duration_s=seconds), root / "clips" / f"c{i}")
    write_clip_folder(make_talking_head(9, duration_s=0.16), root / "clips" / "too_short")
    (root / "filelists").mkdir()
    (root / "filelists" / "test.txt").write_text("clips/c0\nclips/c1\nclips/too_short\n")
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "tiny.pth", VocaLiST(PRESETS["tiny"]))
    return root, ckpt


@pytest.mark.parametrize("protocol", ["lrs2", "acappella"])
def test_eval_writes_paper_layout(dataset, protocol, tmp_path):
    root, ckpt = dataset
    out = tmp_path / "result.json"
    run = invoke("eval", "--protocol", protocol, "--data-root", root, "--checkpoint", ckpt,
                 "--json-out", out, "--csv", tmp_path / "r.csv", "--quiet")
    assert run.code == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["protocol"] == protocol and result["clips"] == 2
    assert result["windows"] == (40 - 5) + (30 - 5)
    assert result["seconds"] > 0
    ks = ["5", "7", "9", "11", "13", "15"] if protocol == "lrs2" else ["5", "10", "15", "20", "25"]
    tolerances = ["tolerance_1"] if protocol == "lrs2" else ["tolerance_1", "tolerance_5"]
    assert sorted(result["accuracy"]) == tolerances
    for tol in tolerances:
        assert list(result["accuracy"][tol]) == ks
        assert all(0.0 <= v <= 1.0 for v in result["accuracy"][tol].values())
    assert [s["reason"] for s in result["skipped"]] == ["shorter than one window"]
    assert "K=5" in run.stdout and (tmp_path / "r.csv").read_text().startswith("tolerance,")


def test_eval_errors_are_one_line(dataset, tmp_path):
    root, ckpt = dataset
    for args in (["--data-root", str(tmp_path / "nope"), "--checkpoint", str(ckpt)],
                 ["--data-root", str(root), "--checkpoint", "no-such-model"],
                 ["--data-root", str(root), "--checkpoint", str(ckpt), "--protocol", "x"]):
        run = invoke("eval", *args)
        assert run.code != 0
        assert len(run.stderr.strip().splitlines()) == 1 and "error" in run.stderr


def test_bench_scorer_json():
    """The benchmark's contract: one JSON object, scores equal in both modes. Whether the
    cached mode is faster is what the benchmark reports (a timing is no test: it says
    more about the machine's load than about the code)."""
    run = invoke("bench", "scorer", "--preset", "tiny", "--duration", "1.6",
                 "--reference-windows", "2", "--json")
    assert run.code == 0, run.stderr
    [result] = run.json_lines()  # nothing but the JSON object on stdout
    for key in ("reference_s_per_window", "cached_s_per_window", "speedup",
                "offsets_identical", "gflops", "matmul_gflops", "device"):
        assert key in result
    assert result["speedup"] > 0 and result["max_abs_score_diff"] < 1e-4
    # the two modes pick the same shifts wherever the best leads by more than 1e-3
    assert result["offsets_compared"] >= 1 and result["offsets_identical"] is True


def test_eval_var_uses_the_models_own_context(dataset, tmp_path):
    """A 10-frame model: --var evaluates K = 10 only; without it, every protocol K >= 10."""
    root, _ = dataset
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "var10.pth", VocaLiST(PRESETS["tiny"], window_frames=10))
    for extra, ks in ((["--var"], ["10"]), ([], ["11", "13", "15"])):
        out = tmp_path / f"r{len(extra)}.json"
        run = invoke("eval", "--data-root", root, "--checkpoint", ckpt, "--json-out", out,
                     "--quiet", *extra)
        assert run.code == 0, run.stderr
        result = json.loads(out.read_text())
        assert list(result["accuracy"]["tolerance_1"]) == ks
        assert result["model_window"] == 10 and result["windows"] == (40 - 10) + (30 - 10)
