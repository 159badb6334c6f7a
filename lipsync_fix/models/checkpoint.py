"""Reading and writing checkpoints of the sync model families.

The authors save ``torch.save({"state_dict", "optimizer", "global_step", "global_epoch"})``
(Wav2Lip's SyncNet does the same). We read that, a bare state dict, and keys prefixed
``module.`` (DataParallel/DDP), always with ``weights_only=True`` so a checkpoint cannot run
code. Our own checkpoints use the same layout plus ``"model"`` (the family: ``vocalist``,
``mtdvocalist`` or ``syncnet``), ``"dims"`` (its widths) and ``"window_frames"`` (T, frames
per input window; older files call it ``"context"``), so a model of any size loads
without guesswork. A file without them is the paper's size, its window 5 frames, its
family told by its keys (SyncNet* has ``face_encoder.*``, the original SyncNet
``netcnnaud.*``) or, for VocaLiST's key names, by its shapes (MTDVocaLiST's authors' file,
``{"state_dict"}`` only, has narrower layers).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lipsync_fix.errors import CheckpointError
from lipsync_fix.features.constants import FRAMES_PER_WINDOW
from lipsync_fix.files import write_atomically
from lipsync_fix.models.mtdvocalist import MTD_PRESETS, MTDVocaLiST, is_mtdvocalist_state
from lipsync_fix.models.syncnet_star import (
    SYNCNET_PRESETS,
    SYNCNET_STAR_FAMILY,
    SyncNetDimensions,
    SyncNetStar,
)
from lipsync_fix.models.vocalist import PRESETS, ModelDimensions, VocaLiST

FAMILIES = {
    "vocalist": (VocaLiST, ModelDimensions, PRESETS),
    "mtdvocalist": (MTDVocaLiST, ModelDimensions, MTD_PRESETS),
    SYNCNET_STAR_FAMILY: (SyncNetStar, SyncNetDimensions, SYNCNET_PRESETS),
}
"""Model family name -> (class, dimensions class, presets)."""

FAMILY_ALIASES = {"syncnet": SYNCNET_STAR_FAMILY}
"""Old family names and the families they are now. lipsync-fix 0.2 called SyncNet*
``syncnet``, a word that also meant the original SyncNet; checkpoints, configs and
options written with the old name still read (until 1.0)."""


def canonical_family(name: str) -> str:
    """The family ``name`` means today (an old name is mapped, any other is kept)."""
    return FAMILY_ALIASES.get(name, name)


CheckpointReader = Callable[[Mapping[str, Any], str], nn.Module]
"""``reader(checkpoint, source)``: build the model a read checkpoint holds, weights loaded."""

READERS: dict[str, CheckpointReader] = {}
"""Family name -> its checkpoint reader. The sync families register below; a package that
adds a family (the separators) registers its reader when imported."""


def register_reader(family: str, reader: CheckpointReader) -> None:
    """Make :func:`model_from_checkpoint` build checkpoints of ``family`` with ``reader``."""
    READERS[family] = reader


def build_model(
    family: str, dims: Any = None, window_frames: int = FRAMES_PER_WINDOW
) -> nn.Module:
    """A fresh sync model of ``family``: ``dims`` is a preset name, a dims dict or object,
    or None for the paper's size; ``window_frames`` is its input window length T."""
    family = canonical_family(family)
    if family not in FAMILIES:
        raise CheckpointError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}")
    cls, dims_cls, presets = FAMILIES[family]
    if isinstance(dims, str):
        if dims not in presets:
            raise CheckpointError(
                f"unknown {family} preset {dims!r}; choose from {sorted(presets)}")
        dims = presets[dims]
    elif isinstance(dims, Mapping):
        dims = dims_cls.from_dict(dims)
    if cls is SyncNetStar:
        if window_frames != FRAMES_PER_WINDOW:
            raise CheckpointError(f"SyncNet* reads {FRAMES_PER_WINDOW}-frame windows only")
        return SyncNetStar(dims)
    return cls(dims, window_frames=window_frames)


def family_of(ckpt: Mapping[str, Any]) -> str:
    """The family a read checkpoint holds: its ``"model"`` entry, else told by its keys."""
    if isinstance(ckpt.get("model"), str):
        return canonical_family(ckpt["model"])
    if any(k.startswith("netcnnaud.") for k in ckpt["state_dict"]):
        return "syncnet-v2"  # joonson/syncnet_python's syncnet_v2.model (models/syncnet_v2.py)
    if any(k.startswith("face_encoder.") for k in ckpt["state_dict"]):
        return SYNCNET_STAR_FAMILY
    return "mtdvocalist" if is_mtdvocalist_state(ckpt["state_dict"]) else "vocalist"


def _looks_like_torch_file(path: Path) -> bool:
    """``torch.save`` writes a zip archive (or, before torch 1.6, a pickle stream): any
    other file (a text file, a video) is told apart here, because ``torch.load`` fails on
    it with messages such as "list index out of range"."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return True  # let torch.load report why it cannot be read
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file safely; always returns a dict with a ``"state_dict"``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (a .pth/.pt file saved "
                              "by torch.save)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from exc
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(raw).__name__}, not a dict")
    ckpt = dict(raw) if "state_dict" in raw else {"state_dict": dict(raw)}
    state = ckpt["state_dict"]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} has no state dict of tensors")
    ckpt["state_dict"] = strip_prefix(state)
    return ckpt


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict:
    """Drop a DataParallel/DDP ``module.`` prefix when every key has it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


Layout = Mapping[str, tuple[tuple[int, ...], str | None]]
"""Key -> (shape, dtype name such as ``"float32"``, or None to leave the dtype unchecked)."""


def layout_problems(state: Mapping[str, torch.Tensor], wanted: Layout,
                    optional: frozenset[str] = frozenset()) -> list[str]:
    """How ``state`` differs from ``wanted``: missing keys (but those in ``optional``),
    unexpected keys, wrong shapes (and dtypes where ``wanted`` names them), each with a few
    examples; empty when it fits. One wording for a checkpoint read into a model and for a
    downloaded file checked against its manifest."""
    def dtype(tensor: torch.Tensor) -> str:
        return str(tensor.dtype).removeprefix("torch.")

    checks_dtypes = any(kind is not None for _, kind in wanted.values())
    missing = [k for k in wanted if k not in state and k not in optional]
    unexpected = [k for k in state if k not in wanted]
    wrong = []
    for key, (shape, kind) in wanted.items():
        if key not in state:
            continue
        got = state[key]
        if tuple(got.shape) != tuple(shape) or (kind is not None and dtype(got) != kind):
            wrong.append(f"{key} {tuple(got.shape)} {dtype(got)} (expected {tuple(shape)} "
                         f"{kind})" if checks_dtypes
                         else f"{key} {tuple(got.shape)} (model wants {tuple(shape)})")
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
    if wrong:
        label = "wrong shapes or dtypes" if checks_dtypes else "shape mismatches"
        problems.append(f"{len(wrong)} {label}, e.g. {'; '.join(wrong[:3])}")
    return problems


def check_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
    optional: frozenset[str] = frozenset(), what: str = "the model",
) -> None:
    """Raise a CheckpointError naming the first mismatching keys and shapes; keys in
    ``optional`` may be missing."""
    wanted = {k: (tuple(v.shape), None) for k, v in model.state_dict().items()}
    problems = layout_problems(state, wanted, optional)
    if problems:
        raise CheckpointError(f"checkpoint {source} does not fit {what}: {'; '.join(problems)}")


def window_frames_of(ckpt: Mapping[str, Any]) -> int:
    """The input window length T a checkpoint was trained for (files written before the
    rename call it ``context``; the authors' files hold none: 5 frames)."""
    return int(ckpt.get("window_frames") or ckpt.get("context") or FRAMES_PER_WINDOW)


def sync_model_from_checkpoint(ckpt: Mapping[str, Any], source: str) -> nn.Module:
    """Build the VocaLiST, MTDVocaLiST or SyncNet* a read checkpoint describes; load its
    weights strictly."""
    dims = ckpt["dims"] if isinstance(ckpt.get("dims"), Mapping) else None
    model = build_model(family_of(ckpt), dims, window_frames_of(ckpt))
    check_state_dict(model, ckpt["state_dict"], source)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model


for _family in FAMILIES:
    register_reader(_family, sync_model_from_checkpoint)


def model_from_checkpoint(ckpt: Mapping[str, Any], source: str) -> nn.Module:
    """Build whichever model a read checkpoint holds (any registered family)."""
    family = family_of(ckpt)
    if family not in READERS:
        raise CheckpointError(f"checkpoint {source} holds a model of unknown family {family!r}")
    return READERS[family](ckpt, source)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    global_step: int = 0,
    global_epoch: int = 0,
    **extra: Any,
) -> Path:
    """Write the authors' layout plus ``model``, ``dims`` and ``window_frames`` atomically (temp
    file, then rename).

    ``extra`` entries (e.g. a training config, a sampler's RNG state) must be plain data
    (tensors, numbers, strings, lists, dicts) so the file stays loadable with
    ``weights_only=True``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inner = getattr(model, "module", model)  # unwrap DDP
    payload: dict[str, Any] = {
        "state_dict": inner.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "global_step": int(global_step),
        "global_epoch": int(global_epoch),
    }
    if isinstance(inner, (VocaLiST, SyncNetStar)):
        payload["model"] = inner.family
        payload["dims"] = inner.dims.to_dict()
        payload["window_frames"] = int(inner.window_frames)
    payload.update(extra)
    return write_atomically(path, lambda tmp: torch.save(payload, tmp))


INFERENCE_KEYS = ("state_dict", "model", "dims", "window_frames", "context", "global_step",
                  "global_epoch", "config")
"""What :func:`export_for_inference` keeps: weights and what they are, not how to resume."""


def export_for_inference(src: str | Path, dst: str | Path) -> Path:
    """Copy a checkpoint without its optimizer, loss-scaler and RNG states (about a third
    of the size for Adam), after checking that it loads; for sharing and bundling."""
    ckpt = read_checkpoint(src)
    model_from_checkpoint(ckpt, str(src))  # refuse to export something that does not load
    slim = {k: ckpt[k] for k in INFERENCE_KEYS if k in ckpt}
    slim["state_dict"] = {k: v.contiguous().clone() for k, v in slim["state_dict"].items()}
    # Serialised in memory first: torch.save names the archive after the file it writes,
    # and the temp file's random name would make the bytes (and the sha256) differ per run.
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    return write_atomically(Path(dst), lambda tmp: tmp.write_bytes(buffer.getvalue()))
