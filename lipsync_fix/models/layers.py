"""Building blocks shared by the model families: conv blocks and the dimensions mixin."""

from __future__ import annotations

from dataclasses import asdict

import torch.nn.functional as F
from torch import Tensor, nn


class Dimensions:
    """Mixin for a frozen dataclass of widths: plain-dict round trip for checkpoints, where
    tuples come back as lists and entries from other versions may be unknown."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}
        return cls(**known)


class ConvBlock(nn.Module):
    """Conv -> BatchNorm -> (+ input) -> ReLU, with the authors' ``conv_block`` names.

    ``dims`` is 3 for the video encoder (axes H, W, T) and 2 for the audio one (mel, time).
    """

    def __init__(self, dims: int, cin: int, cout: int, kernel, stride, padding,
                 residual: bool = False):
        super().__init__()
        conv, norm = (nn.Conv3d, nn.BatchNorm3d) if dims == 3 else (nn.Conv2d, nn.BatchNorm2d)
        self.conv_block = nn.Sequential(conv(cin, cout, kernel, stride, padding), norm(cout))
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return F.relu(out)


def Conv3dBlock(*args, **kwargs) -> ConvBlock:  # noqa: N802 - reads like a layer
    return ConvBlock(3, *args, **kwargs)


def Conv2dBlock(*args, **kwargs) -> ConvBlock:  # noqa: N802 - reads like a layer
    return ConvBlock(2, *args, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
