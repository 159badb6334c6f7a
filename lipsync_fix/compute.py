"""Where and in which precision the models run: device names and autocast dtypes.

One place turns what a user typed (``--device cuda:1``, ``--precision bf16``) into torch
objects, so a CPU-only install asked for CUDA, or a typo, gets one clear line instead of a
traceback from deep inside torch.
"""

from __future__ import annotations

import contextlib
import platform
import re
from collections.abc import Iterator

import torch

from lipsync_fix.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16")

_DEVICE_RE = re.compile(r"^(cpu|cuda|mps)(:\d+)?$")


def check_device_name(name: str | torch.device, allow_auto: bool = True) -> str:
    """``name`` when it names a kind of device lipsync-fix runs on (``cpu``, ``cuda``,
    ``cuda:N``, ``mps``, and ``auto`` if allowed), whether or not this machine has one:
    options objects check this when made, so ``device="tpu"`` is refused at once and not
    when the first input is scored. :func:`resolve_device` also checks it exists here."""
    if isinstance(name, torch.device):
        return str(name)
    text = str(name).strip().lower()
    if not (_DEVICE_RE.match(text) or (allow_auto and text == "auto")):
        raise UsageError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps")
    return text


def resolve_device(name: str | torch.device) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` -> a device that exists here."""
    if isinstance(name, torch.device):
        return name
    text = check_device_name(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no usable GPU"
            raise UsageError(f"device {name} was asked for, but this machine has {build}; "
                             "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name} does not exist; this machine has "
                             f"{torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name} was asked for, but MPS is not available here")
    return device


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain float32).

    ``auto`` picks bf16 where the hardware runs it natively (recent GPUs, CPUs with
    AVX512-BF16 or AMX) and float32 elsewhere; ``fp32`` is the reference precision.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        supported = cpu_supports_bf16()
    else:
        supported = False
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if supported else None


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """No TF32 inside: on NVIDIA GPUs, cuDNN convolutions use TF32 (10-bit mantissas) by
    default, which moves float32 results by about 1e-3; the reference numbers are float32."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``; with ``dtype`` None, true float32 (no TF32)."""
    if dtype is None:
        return full_float32()
    return torch.autocast(device.type, dtype=dtype)


def device_name(device: torch.device) -> str:
    """The device as a benchmark's figures should name it: the GPU's model, or the CPU's
    kind and how many threads torch uses on it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer stopped next measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
