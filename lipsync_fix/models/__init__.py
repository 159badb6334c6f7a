"""The models and their files: VocaLiST, MTDVocaLiST, the SyncNet* baseline, the original
SyncNet, checkpoint I/O, the registry.

``vocalist``, ``mtdvocalist``, ``syncnet_star`` and ``syncnet`` hold the networks,
``layers`` their shared blocks, ``scorer`` the interface the scorer relies on,
``checkpoint`` reading and writing weights, ``registry`` names, the default model and
:func:`load_model`, ``store`` downloads, layouts and trust records.
"""

from lipsync_fix.models.checkpoint import (
    FAMILIES,
    build_model,
    export_for_inference,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from lipsync_fix.models.layers import count_parameters
from lipsync_fix.models.mtdvocalist import MTD_DIMS, MTDVocaLiST
from lipsync_fix.models.registry import (
    available_models,
    load_model,
    load_registry,
    resolve_checkpoint,
)
from lipsync_fix.models.scorer import PairScorer, SyncScorer
from lipsync_fix.models.store import sha256_of
from lipsync_fix.models.syncnet_star import SYNCNET_PRESETS, SyncNetDimensions, SyncNetStar
from lipsync_fix.models.syncnet_v2 import SYNCNET_V2_FAMILY, SyncNetV2
from lipsync_fix.models.vocalist import PRESETS, ModelDimensions, VocaLiST

__all__ = [
    "FAMILIES",
    "MTD_DIMS",
    "PRESETS",
    "SYNCNET_PRESETS",
    "SYNCNET_V2_FAMILY",
    "MTDVocaLiST",
    "ModelDimensions",
    "PairScorer",
    "SyncNetDimensions",
    "SyncNetStar",
    "SyncNetV2",
    "SyncScorer",
    "VocaLiST",
    "available_models",
    "build_model",
    "count_parameters",
    "export_for_inference",
    "load_model",
    "load_registry",
    "model_from_checkpoint",
    "read_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "sha256_of",
]
