"""Audio-visual singing-voice separation (the paper's Table 3): Y-Net-mr and its VocaLiST /
SyncNet* visual encoders.

``model`` holds the separators, ``apply`` runs one over a whole video in chunks,
``mixing`` makes training and test mixtures, ``metrics`` scores them (SDR, SIR, Wilcoxon),
``training`` trains a separator, ``evaluate`` compares separators on the same mixtures.
"""

from lipsync_fix.separation.apply import separate_clip, separate_video
from lipsync_fix.separation.evaluate import (
    SeparationComparison,
    compare_separators,
    evaluate_separator,
)
from lipsync_fix.separation.model import (
    SYSTEMS,
    YNET_PRESETS,
    YNet,
    YNetDimensions,
    build_separator,
    load_separator,
    system_name,
)
from lipsync_fix.separation.training import SeparationConfig, train_separator

__all__ = [
    "SYSTEMS",
    "YNET_PRESETS",
    "SeparationComparison",
    "SeparationConfig",
    "YNet",
    "YNetDimensions",
    "build_separator",
    "compare_separators",
    "evaluate_separator",
    "load_separator",
    "separate_clip",
    "separate_video",
    "system_name",
    "train_separator",
]
