"""Training the sync models (VocaLiST, SyncNet*) as the authors did: one CPU, one GPU or
many (``torchrun`` + DDP).

``pairs`` draws the training pairs, ``config`` holds the run settings, ``distributed`` the
collective helpers, ``runlog`` the metrics file, ``trainer`` the loop. Run it with
``lipsync-fix train`` or ``python -m lipsync_fix.training`` (also under ``torchrun
--nproc_per_node N``); any config field can be given on the command line.
"""

from lipsync_fix.training.config import RunConfig, TrainConfig
from lipsync_fix.training.pairs import (
    MAX_NEGATIVE_DRAWS,
    MIN_CLIP_FRAMES,
    SILENCE_RMS,
    PairDraw,
    SyncPairDataset,
    window_mel,
)
from lipsync_fix.training.runlog import RunLog, read_metrics
from lipsync_fix.training.trainer import main, sync_loss, train

__all__ = [
    "MAX_NEGATIVE_DRAWS",
    "MIN_CLIP_FRAMES",
    "SILENCE_RMS",
    "PairDraw",
    "RunConfig",
    "RunLog",
    "SyncPairDataset",
    "TrainConfig",
    "main",
    "read_metrics",
    "sync_loss",
    "train",
    "window_mel",
]
