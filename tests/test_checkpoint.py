"""Checkpoint reading and writing (the registry and downloads: test_registry.py)."""

from __future__ import annotations

import pytest
import torch

from lipsync_fix.errors import CheckpointError
from lipsync_fix.models import load_model, read_checkpoint, save_checkpoint
from lipsync_fix.models.vocalist import PRESETS, ModelDimensions, VocaLiST


class UnsafeObject:
    """Anything that is not plain data: loading it would need full unpickling."""


@pytest.fixture()
def tiny_model():
    torch.manual_seed(1)
    return VocaLiST(PRESETS["tiny"]).eval()


def test_round_trip_with_dims_and_optimizer(tmp_path, tiny_model):
    opt = torch.optim.Adam(tiny_model.parameters(), lr=5e-5)
    path = save_checkpoint(tmp_path / "a.pth", tiny_model, opt, global_step=7, global_epoch=2)
    ckpt = read_checkpoint(path)
    assert ckpt["global_step"] == 7 and ckpt["global_epoch"] == 2
    assert ModelDimensions.from_dict(ckpt["dims"]) == PRESETS["tiny"]
    loaded = load_model(path, family="vocalist")
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert not list(tmp_path.glob("*.tmp"))


def test_reads_authors_layouts(tmp_path):
    """A paper-size checkpoint without dims, as a bare dict or with DataParallel prefixes."""
    state = VocaLiST().state_dict()
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "dp.pth")
    torch.save({"state_dict": state, "optimizer": None, "global_step": 1, "global_epoch": 0},
               tmp_path / "authors.pth")
    for name in ("dp.pth", "authors.pth"):
        model = load_model(tmp_path / name, family="vocalist")
        assert model.dims == ModelDimensions()
        assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])


def test_rejects_mismatch_naming_keys(tmp_path, tiny_model):
    state = tiny_model.state_dict()
    state.pop("classifier.bias")
    state["fc.weight"] = torch.zeros(3, 3)
    torch.save({"state_dict": state, "dims": PRESETS["tiny"].to_dict()}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "bad.pth", family="vocalist")
    message = str(info.value)
    assert "classifier.bias" in message and "fc.weight (3, 3)" in message
    assert "\n" not in message


def test_rejects_garbage_and_unsafe_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "junk.pth")

    torch.save({"state_dict": {}, "payload": UnsafeObject()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError):  # weights_only=True refuses arbitrary objects
        read_checkpoint(tmp_path / "evil.pth")
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "missing.pth")


def test_a_checkpoint_of_the_old_syncnet_family_name_reads_as_syncnet_star(tmp_path):
    """lipsync-fix 0.2 saved SyncNet* as family "syncnet" (the word also meant the
    original SyncNet); such files, configs and options still read, under the new name."""
    from lipsync_fix.models import build_model
    from lipsync_fix.training import TrainConfig

    model = build_model("syncnet-star", "tiny")
    path = save_checkpoint(tmp_path / "old.pth", model)
    payload = torch.load(path, weights_only=True)
    assert payload["model"] == "syncnet-star"
    payload["model"] = "syncnet"  # as 0.2 wrote it
    torch.save(payload, path)
    loaded = load_model(path)
    assert loaded.family == "syncnet-star" and type(loaded) is type(model)
    assert build_model("syncnet", "tiny").family == "syncnet-star"
    assert TrainConfig(data_root=".", out_dir=".", model="syncnet", preset="tiny").model == \
        "syncnet-star"
    with pytest.raises(CheckpointError, match="unknown model family"):
        build_model("syncnet-v3")
