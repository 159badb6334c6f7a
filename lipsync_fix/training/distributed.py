"""The few collective operations the trainer and the evaluation need, as no-ops in a
single process.

Multi-process training is plain :class:`~torch.nn.parallel.DistributedDataParallel` under
``torchrun``; each rank draws from its own seeded stream, which is what a
``DistributedSampler`` would give for a data set that is sampled rather than enumerated.
Evaluation under ``torchrun`` splits the clips over the ranks and gathers one table.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    """Rank layout as ``torchrun`` exports it; a plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return Dist(rank, world, local)


@contextlib.contextmanager
def process_group(cuda: bool) -> Iterator[Dist]:
    """The rank layout of this process; under ``torchrun`` (``WORLD_SIZE`` > 1) a process
    group is created for the duration (NCCL on CUDA, each rank on the GPU of its local
    rank; Gloo on CPU) unless the caller already made one."""
    ctx = dist_from_env()
    created = False
    if ctx.enabled and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
        created = True
    try:
        yield ctx
    finally:
        if created:
            dist.destroy_process_group()


def all_reduce_sum(values: Sequence[float], ctx: Dist, device: torch.device) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather(obj: Any, ctx: Dist) -> list[Any]:
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def param_digest(model: nn.Module) -> str:
    """SHA-1 of all parameters' bytes: ranks of a healthy DDP run hold identical weights."""
    h = hashlib.sha1()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
