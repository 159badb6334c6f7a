"""``eval`` reads each family's own crops: 96x96 Wav2Lip crops for VocaLiST and SyncNet*,
224x224 reference crops for the original SyncNet (``preprocess --inputs syncnet``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsync_fix import media
from lipsync_fix.data.layout import crop_side
from lipsync_fix.data.preprocess import preprocess_video
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.errors import LipsyncError
from lipsync_fix.evaluation.golden import rule_weights
from lipsync_fix.evaluation.protocols import PROTOCOLS, evaluate_folder
from lipsync_fix.models import PRESETS, VocaLiST
from lipsync_fix.models.syncnet_v2 import SyncNetV2


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval_inputs") / "talk.mp4"
    clip = make_talking_head(17, duration_s=2.4)
    media.write_video(path, clip.frames, clip.fps, audio=clip.audio, sample_rate=16000)
    return path


def test_syncnet_evaluates_its_own_crops_and_refuses_wav2lip_ones(video, tmp_path):
    preprocess_video(video, tmp_path / "sn" / "clip", inputs="syncnet-v2")
    preprocess_video(video, tmp_path / "w2l" / "clip", inputs="wav2lip")
    assert crop_side(tmp_path / "sn" / "clip") == 224
    assert crop_side(tmp_path / "w2l" / "clip") == 96
    model = SyncNetV2()
    model.load_state_dict(rule_weights(model))
    result = evaluate_folder(model.eval(), tmp_path / "sn", PROTOCOLS["lrs2"], split=None)
    assert result.clips == 1 and result.windows > 40
    assert all(0.0 <= v <= 1.0 for v in result.accuracy()["tolerance_1"].values())
    with pytest.raises(LipsyncError, match="224x224"):
        evaluate_folder(model.eval(), tmp_path / "w2l", PROTOCOLS["lrs2"], split=None)
    torch.manual_seed(0)
    with pytest.raises(LipsyncError, match="96x96"):
        evaluate_folder(VocaLiST(PRESETS["tiny"]).eval(), tmp_path / "sn", PROTOCOLS["lrs2"],
                        split=None)
    assert np.isfinite(result.seconds)
