"""The numbers of the authors' reference implementation (tests/data, see GOLDEN_README.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA, GOLDEN, assert_accuracy_line, assert_forward_stages, invoke

from lipsync_fix.evaluation import golden
from lipsync_fix.evaluation.protocols import PROTOCOLS
from lipsync_fix.features.mel import chunk_mel, log_mel_spectrogram, mel_filterbank
from lipsync_fix.features.visual import frames_from_stacked
from lipsync_fix.models import VocaLiST, count_parameters
from lipsync_fix.sync.scoring import OUT_OF_RANGE, ScoreOptions, score_matrix


def test_state_dict_matches_manifest():
    manifest = json.loads((GOLDEN / "state_dict_manifest.json").read_text())
    state = VocaLiST().state_dict()
    assert [e["key"] for e in manifest["entries"]] == list(state)
    for entry in manifest["entries"]:
        tensor = state[entry["key"]]
        assert list(tensor.shape) == entry["shape"], entry["key"]
        assert str(tensor.dtype) == f"torch.{entry['dtype']}", entry["key"]
    assert count_parameters(VocaLiST()) == manifest["num_parameters"] == 80_106_561


def test_forward_matches_reference(golden_model, golden_data):
    assert_forward_stages(golden_model, golden_data("forward_golden"))


def test_position_quirk_is_exercised(golden_model, golden_data):
    """Tokens with channel 0 exactly 0.0 get no position embedding; the golden has some."""
    g = golden_data("forward_golden")
    with torch.no_grad():
        tokens = golden_model.encode_video(torch.from_numpy(g["vid"]))
    assert int((tokens[:, :, 0] == 0).sum()) == 4
    pos = golden_model.av_transformer.embed_positions(tokens)
    assert torch.all(pos[tokens[:, :, 0] == 0] == 0)
    assert torch.all(pos[tokens[:, :, 0] != 0].abs().sum(-1) > 0)


def test_mel_matches_reference(golden_data):
    g = golden_data("mel_golden")
    assert np.abs(mel_filterbank() - g["fbank"]).max() < 1e-6
    full = log_mel_spectrogram(g["wav"]).numpy()
    assert full.shape == g["full_mel"].shape
    assert np.abs(full - g["full_mel"]).max() < 1e-4
    chunk = chunk_mel(g["wav"], int(g["chunk_start"])).numpy()
    assert chunk.shape == (1, 80, 16)
    assert np.abs(chunk - g["chunk_mel"]).max() < 1e-4


@pytest.fixture(scope="module")
def golden_scores(golden_model, golden_data) -> np.ndarray:
    """The paper-size model on the reference clip (27 windows x 31 shifts): the costliest
    forward pass of the suite, computed once for the two tests below."""
    g = golden_data("eval_golden")
    frames = frames_from_stacked(g["vid"])
    mel = log_mel_spectrogram(g["wav"])
    return score_matrix(golden_model, frames, mel, len(g["wav"]), ScoreOptions(row_block=10))


@pytest.mark.slow  # the paper-size model on 27 x 31 pairs (shared fixture): ~20 s
def test_score_matrix_and_accuracy_match_reference(golden_scores, golden_data):
    g = golden_data("eval_golden")
    mel = log_mel_spectrogram(g["wav"])
    assert np.abs(mel.numpy() - g["mel"][0, 0]).max() < 1e-4
    dists = golden_scores
    ref = g["dists"]
    assert dists.shape == ref.shape == (int(g["lastframe"]), 31)
    out_of_range = ref == OUT_OF_RANGE
    np.testing.assert_array_equal(dists == OUT_OF_RANGE, out_of_range)
    assert np.abs(dists[~out_of_range] - ref[~out_of_range]).max() < 1e-3
    lines = json.loads((GOLDEN / "eval_golden.json").read_text())
    for name in ("lrs2", "acappella"):
        assert_accuracy_line(dists, ref, PROTOCOLS[name], lines[f"{name}_progress_line"])


@pytest.mark.parametrize("case", range(6))
def test_protocol_rules_match_reference(case):
    cases = json.loads((DATA / "protocol_golden.json").read_text())["cases"]
    spec = cases[case]
    dists = np.load(DATA / "protocol_golden.npz")[spec["name"]]
    assert dists.shape[0] == spec["rows"]
    for name in ("lrs2", "acappella"):
        proto = PROTOCOLS[name]
        # the reference averages in float32: rows whose lead is within its rounding may
        # go either way
        assert_accuracy_line(dists, dists, proto, spec[f"{name}_progress_line"],
                             tolerance=1e-5)


@pytest.mark.slow  # needs the paper-size scores above
def test_check_command_passes(golden_model, golden_scores, monkeypatch):
    """`lipsync-fix check`: the shipped self-test of an installation, with its comparisons
    and report run for real on the model and scores computed above (the scorer's block
    size, the one difference, is checked by tests/test_scoring.py)."""
    monkeypatch.setattr(golden, "golden_model", lambda: golden_model)
    monkeypatch.setattr(golden, "score_matrix", lambda *args, **kwargs: golden_scores)
    run = invoke("check", "--json")
    assert run.code == 0, run.stderr
    [result] = run.json_lines()
    assert result["passed"] and result["max_score_error"] < 1e-3
    human = invoke("check")
    assert human.code == 0 and human.stdout.rstrip().endswith("PASS")
