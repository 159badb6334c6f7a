"""Run settings as dataclasses that load from JSON or TOML files and command-line strings.

Both trainers (sync models and separators) keep their settings in such a dataclass; it is
saved inside every checkpoint, so its values must stay plain data.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lipsync_fix.compute import check_device_name
from lipsync_fix.errors import UsageError
from lipsync_fix.features.constants import FRAMES_PER_WINDOW
from lipsync_fix.models.checkpoint import FAMILIES, canonical_family
from lipsync_fix.models.syncnet_star import SYNCNET_STAR_FAMILY

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from typing_extensions import Self

class RunConfig:
    """Mixin for a run's settings dataclass: plain-dict round trip, strict loading.

    Unknown keys are an error (a typo in a config file must not pass silently); values read
    as strings (command line, TOML) are converted to each field's type.
    """

    section: ClassVar[str] = "run"
    renamed: ClassVar[dict[str, str]] = {}
    """Old key -> current field, so configs saved by earlier versions still load."""

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, so the config can sit inside a ``weights_only`` checkpoint."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], **overrides: Any) -> Self:
        """Build from a mapping; unknown keys are an error (a typo must not pass silently).
        ``overrides`` whose value is None are ignored, so CLI defaults do not clobber files."""
        merged = {cls.renamed.get(k, k): v for k, v in values.items()}
        merged |= {k: v for k, v in overrides.items() if v is not None}
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        return cls(**{k: _coerce(hints[k], v, k) for k, v in merged.items()})

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Self:
        """Load a ``.json`` or ``.toml`` file: its top level, or its table named
        :attr:`section` (``[train]``, ``[separation]``)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix.lower() == ".toml":
            values: dict[str, Any] = tomllib.loads(text)
        else:
            values = json.loads(text)
        table = values.get(cls.section)
        if set(values) == {cls.section} and isinstance(table, dict):
            values = table
        return cls.from_dict(values, **overrides)


@dataclass
class TrainConfig(RunConfig):
    """Everything a training run depends on; saved in every checkpoint.

    ``batch_size`` is the batch of one optimiser step (the paper's 128) *summed over all
    ranks and accumulation steps*: each rank runs ``batch_size / (world_size * grad_accum)``
    samples per forward pass, so changing the hardware does not change the optimisation.
    ``steps`` counts optimiser steps in total (a resumed run stops at the same step).
    ``amp``: ``"auto"`` (bf16 autocast on GPUs that support it, else fp16 with loss scaling;
    off on CPU), ``"bf16"``, ``"fp16"`` or ``"off"``. ``device``: ``"auto"``, ``"cpu"``,
    ``"cuda"``. ``num_workers``: loader processes per rank (None: a share of the CPU cores).
    ``epoch_length``: samples per epoch, for ``global_epoch`` only (None: the number of
    training clips, as the reference). ``val_every``/``checkpoint_every``/``log_every`` are
    in steps (0 disables). ``log_dir``: TensorBoard folder (default ``<out_dir>/tensorboard``;
    used only if the ``tensorboard`` package is installed; ``metrics.jsonl`` is always
    written). ``resume``: continue from ``<out_dir>/last.pth`` if it exists;
    ``resume_from``: continue from that checkpoint. ``force``: start afresh in an
    ``out_dir`` that holds a run already (without it, or ``resume``, that is refused: its
    checkpoint and metrics would be overwritten). ``init_from``: start from a checkpoint's
    weights (fine-tuning; its size overrides ``preset``) with a fresh optimiser.
    ``model``: ``"vocalist"`` (BCE on logits) or ``"syncnet-star"`` (the SyncNet* baseline, BCE
    on its cosine similarity; 5-frame windows only).
    """

    section: ClassVar[str] = "train"
    renamed: ClassVar[dict[str, str]] = {"context": "window_frames"}

    data_root: str
    out_dir: str
    preset: str = "small"
    model: str = "vocalist"
    init_from: str | None = None
    window_frames: int = FRAMES_PER_WINDOW
    steps: int = 10_000
    batch_size: int = 128
    grad_accum: int = 1
    lr: float = 5e-5
    num_workers: int | None = None
    amp: str = "auto"
    device: str = "auto"
    seed: int = 0
    epoch_length: int | None = None
    train_split: str = "train"
    val_split: str = "val"
    val_every: int = 1000
    val_samples: int = 1024
    val_batch_size: int | None = None
    validate_at_start: bool = False
    checkpoint_every: int = 1000
    log_every: int = 50
    log_dir: str | None = None
    cache_size: int = 32
    resume: bool = False
    resume_from: str | None = None
    force: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        self.model = canonical_family(self.model)  # a config of 0.2 says "syncnet"
        if self.model not in FAMILIES:
            raise ValueError(f"unknown model {self.model!r}; choose from {sorted(FAMILIES)}")
        presets = FAMILIES[self.model][2]
        if self.preset not in presets:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(presets)}")
        if self.model == SYNCNET_STAR_FAMILY and int(self.window_frames) != FRAMES_PER_WINDOW:
            raise ValueError(f"SyncNet* is trained on {FRAMES_PER_WINDOW}-frame windows only")
        try:
            check_device_name(self.device)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, off, bf16 or fp16, not {self.amp!r}")
        for name in ("steps", "batch_size", "grad_accum", "window_frames", "val_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """Convert a value read from a file or the command line to the field's type."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "")):
        if not optional:
            raise ValueError(f"config {name} cannot be empty")
        return None
    if base is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"config {name}: {value!r} is not a boolean")
        return bool(value)
    if base is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"config {name}: {value!r} is not an integer")
        return int(float(value)) if isinstance(value, str) else int(value)
    if base is float:
        return float(value)
    return str(value)
