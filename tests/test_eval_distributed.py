"""``eval`` under torchrun: the ranks share the clips and rank 0 prints one table that
equals a single process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from lipsync_fix.data.synth import make_talking_head, write_clip_folder
from lipsync_fix.models import PRESETS, VocaLiST, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_torchrun_eval_splits_clips_and_gathers_one_table(tmp_path):
    for i in range(5):
        write_clip_folder(make_talking_head(i, duration_s=1.6), tmp_path / "data" / f"c{i}")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pth", VocaLiST(PRESETS["tiny"]))
    args = ["-m", "lipsync_fix", "eval", "--data-root", str(tmp_path / "data"),
            "--checkpoint", str(ckpt), "--json", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    single = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ranks = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ranks.returncode == 0, ranks.stderr[-2000:]
    printed = [line for line in ranks.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0 only
    one, both = json.loads(single.stdout.splitlines()[-1]), json.loads(printed[0])
    assert both["clips"] == one["clips"] == 5 and both["windows"] == one["windows"]
    assert both["accuracy"] == one["accuracy"]
