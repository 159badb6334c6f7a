"""Audio-visual singing-voice separation: Y-Net-mr and its VocaLiST / SyncNet* variants.

VocaLiST's Table 3 asks whether the visual encoder learned for synchronisation also helps
a separation network pick one singer's voice out of a mixture. The separator is the
authors' Y-Net-mr from A Cappella (Montesinos, Kadandale, Haro, BMVC 2021): a U-Net over
the mixture's spectrogram that predicts a complex ratio mask for the target voice, with
visual features of the singer's mouth joined in at the bottleneck. Only the visual
encoder changes between the systems of the table:

* ``mc18`` (Y-Net-mr): the separator's own mixed-convolution video ResNet-18 (3-D convs in
  the first stage, 1xkxk convs after it), trained with the separator;
* ``vocalist`` (Y-Net-mr-V): VocaLiST's ``vid_prenet``, frozen with weights from a sync
  checkpoint (PT) or trained end to end (E2E) from that initialisation;
* ``syncnet-star`` (Y-Net-mr-S*): SyncNet*'s ``face_encoder`` over 5-frame stacks, frozen.

All encoders read what the sync models read (lower-half 48x96 BGR crops in 0..1 at
25 fps) so the crops of the main job feed any of them. The STFT hop (160 samples at
16 kHz) makes exactly four spectrogram frames per video frame, which keeps the visual
features and the bottleneck aligned by a plain resampling in time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lipsync_fix.errors import CheckpointError
from lipsync_fix.models.checkpoint import (
    build_model,
    canonical_family,
    check_state_dict,
    register_reader,
)
from lipsync_fix.models.registry import load_model
from lipsync_fix.models.syncnet_star import SYNCNET_STAR_FAMILY
from lipsync_fix.models.vocalist import FRAMES_PER_WINDOW, Dimensions

N_FFT = 512
HOP = 160  # 10 ms; 4 STFT frames per 40 ms video frame
N_BINS = N_FFT // 2  # the Nyquist bin is dropped so the U-Net halves the axis cleanly

VISUAL_ENCODERS = ("mc18", "vocalist", SYNCNET_STAR_FAMILY)

SYSTEMS: dict[str, tuple[str, bool]] = {
    "ynet-mr": ("mc18", False),
    "ynet-mr-v-pt": ("vocalist", True),
    "ynet-mr-v-e2e": ("vocalist", False),
    "ynet-mr-s-pt": (SYNCNET_STAR_FAMILY, True),
}
"""The paper's system names -> (visual encoder, frozen)."""


def system_name(visual: str, frozen: bool) -> str:
    """The paper's name of a separator; an unfrozen SyncNet* encoder has no paper name."""
    for name, key in SYSTEMS.items():
        if key == (visual, frozen):
            return name
    return f"ynet-mr-{visual}-{'pt' if frozen else 'e2e'}"


@dataclass(frozen=True)
class YNetDimensions(Dimensions):
    """Widths of the U-Net and of the separator's own video network (``mc18``).

    ``sync_preset`` picks the size of a fresh VocaLiST / SyncNet* encoder when no sync
    checkpoint is given (tests, E2E from scratch); with a checkpoint its own size wins.
    """

    unet_widths: tuple[int, ...] = (32, 64, 128, 256, 512, 512)
    mc18_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    visual_channels: int = 256  # visual features after projection, joined at the bottleneck
    sync_preset: str = "paper"


YNET_PRESETS: dict[str, YNetDimensions] = {
    "paper": YNetDimensions(),
    # A laptop CPU trains this in minutes on generated mixtures.
    "small": YNetDimensions((16, 32, 64, 128), (16, 32, 64, 128), 64, "small"),
    # Every stage present, as cheap as possible: unit tests and the CI training test.
    "tiny": YNetDimensions((8, 16, 32), (4, 8, 16, 32), 16, "tiny"),
}


# ---------------------------------------------------------------------------------------------
# Visual encoders: (B, T, 3, 48, 96) lower halves -> (B, T, D) features, one per frame
# ---------------------------------------------------------------------------------------------


class BasicBlock3d(nn.Module):
    """ResNet basic block; ``temporal`` False makes its convs 1x3x3 (the "2-D" stages of
    a mixed-convolution network), True makes them 3x3x3."""

    def __init__(self, cin: int, cout: int, spatial_stride: int, temporal: bool):
        super().__init__()
        k = (3, 3, 3) if temporal else (1, 3, 3)
        pad = (1, 1, 1) if temporal else (0, 1, 1)
        stride = (1, spatial_stride, spatial_stride)  # time keeps one step per frame
        self.conv1 = nn.Conv3d(cin, cout, k, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, k, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.downsample = None
        if spatial_stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class MC18(nn.Module):
    """Mixed-convolution ResNet-18 (Tran et al., CVPR 2018, "MC3"): a 3x7x7 stem and the
    first stage in 3-D, the last three stages with 1x3x3 convs, two blocks per stage.

    Unlike the classification network, time is never strided (separation needs one
    feature per frame) and the head is a spatial average, not a classifier.
    """

    def __init__(self, widths: tuple[int, int, int, int]):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(
            nn.Conv3d(3, w1, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(w1), nn.ReLU(inplace=True))
        stages = []
        for i, (cin, cout) in enumerate([(w1, w1), (w1, w2), (w2, w3), (w3, w4)]):
            stride = 1 if i == 0 else 2
            temporal = i == 0
            stages.append(nn.Sequential(BasicBlock3d(cin, cout, stride, temporal),
                                        BasicBlock3d(cout, cout, 1, temporal)))
        self.stages = nn.Sequential(*stages)
        self.out_channels = w4

    def forward(self, frames: Tensor) -> Tensor:
        x = frames.permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
        x = self.stages(self.stem(x))
        return x.mean(dim=(3, 4)).transpose(1, 2)  # (B, T, D)


class VocaLiSTVisual(nn.Module):
    """VocaLiST's ``vid_prenet`` over the whole frame sequence.

    Its convs never stride time and pad it to keep the length, so one pass over T frames
    gives T tokens, the same the model computes inside each 5-frame window (up to the
    edge padding it saw in training), at a fifth of the cost of sliding windows.
    """

    def __init__(self, vid_prenet: nn.Module, d_model: int):
        super().__init__()
        self.vid_prenet = vid_prenet
        self.out_channels = d_model

    def forward(self, frames: Tensor) -> Tensor:
        x = frames.permute(0, 2, 3, 4, 1)  # (B, 3, H, W, T): the authors' axis order
        x = self.vid_prenet(x)  # (B, D, 1, 1, T)
        if x.shape[2:4] != (1, 1):
            raise ValueError(f"expected 48x96 lower-half crops, got {tuple(frames.shape[-2:])}")
        return x.flatten(2).transpose(1, 2)


class SyncNetVisual(nn.Module):
    """SyncNet*'s ``face_encoder`` over 5-frame stacks with hop one frame.

    SyncNet* folds its 5 frames into channels, so it has one embedding per window, not per
    frame; window ``i`` covers frames ``i-2..i+2`` (edge frames repeated) so the embedding
    of frame ``i`` is centred on it.
    """

    def __init__(self, face_encoder: nn.Module, embed_dim: int):
        super().__init__()
        self.face_encoder = face_encoder
        self.out_channels = embed_dim

    def forward(self, frames: Tensor) -> Tensor:
        b, t = frames.shape[:2]
        half = FRAMES_PER_WINDOW // 2
        idx = torch.arange(t, device=frames.device)[:, None] + torch.arange(-half, half + 1,
                                                                            device=frames.device)
        idx = idx.clamp(0, t - 1)  # (T, 5)
        stacks = frames[:, idx].flatten(2, 3).flatten(0, 1)  # (B*T, 15, 48, 96)
        x = self.face_encoder(stacks)
        if x.shape[2:] != (1, 1):
            raise ValueError(f"expected 48x96 lower-half crops, got {tuple(frames.shape[-2:])}")
        return x.flatten(1).view(b, t, -1)


def build_visual_encoder(
    visual: str, dims: YNetDimensions, sync_model: nn.Module | None = None,
    sync_dims: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict | None]:
    """The named encoder, and the sync model's dims it was built with (None for mc18).

    ``sync_model`` (a loaded VocaLiST / SyncNet*) gives both architecture and weights;
    otherwise ``sync_dims`` (from a separation checkpoint) or ``dims.sync_preset`` give
    the architecture of a freshly initialised one.
    """
    if visual == "mc18":
        return MC18(dims.mc18_widths), None
    visual = canonical_family(visual)
    if visual not in VISUAL_ENCODERS:
        raise CheckpointError(
            f"unknown visual encoder {visual!r}; use one of {', '.join(VISUAL_ENCODERS)}")
    if sync_model is None:
        sync_model = build_model(visual, dict(sync_dims) if sync_dims else dims.sync_preset)
    if sync_model.family != visual:
        raise CheckpointError(
            f"the sync checkpoint holds a {sync_model.family} model, not {visual}")
    if visual == "vocalist":
        enc: nn.Module = VocaLiSTVisual(sync_model.vid_prenet, sync_model.dims.d_model)
    else:
        enc = SyncNetVisual(sync_model.face_encoder, sync_model.dims.embed_dim)
    return enc, sync_model.dims.to_dict()


# ---------------------------------------------------------------------------------------------
# The U-Net
# ---------------------------------------------------------------------------------------------


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout),
                         nn.ReLU())


class YNet(nn.Module):
    """Mixture waveform + target's mouth frames -> the target voice's waveform.

    ``frames`` are (B, T, 3, 48, 96) lower halves with T = samples / 640 (25 fps at
    16 kHz). The mask is complex and bounded (magnitude ``tanh(|m|)``, at most 1): a
    voice rarely exceeds the mixture in a bin, and the bound keeps early training from
    amplifying the accompaniment.
    """

    family = "ynet"

    def __init__(
        self, dims: YNetDimensions | None = None, visual: str = "mc18",
        frozen_visual: bool = False, sync_model: nn.Module | None = None,
        sync_dims: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.dims = dims or YNetDimensions()
        self.visual = visual
        self.frozen_visual = frozen_visual
        self.visual_encoder, self.sync_dims = build_visual_encoder(
            visual, self.dims, sync_model, sync_dims)
        widths = self.dims.unet_widths
        self.visual_proj = nn.Linear(self.visual_encoder.out_channels, self.dims.visual_channels)
        self.encoder = nn.ModuleList(
            _down(cin, cout) for cin, cout in zip((3, *widths[:-1]), widths, strict=True))
        bottom = widths[-1]
        self.fuse = nn.Sequential(
            nn.Conv2d(bottom + self.dims.visual_channels, bottom, 3, 1, 1),
            nn.BatchNorm2d(bottom), nn.LeakyReLU(0.2))
        ups = []
        for i in range(len(widths) - 1, 0, -1):  # in: this level (+ skip), out: the next up
            cin = widths[i] if i == len(widths) - 1 else 2 * widths[i]
            ups.append(_up(cin, widths[i - 1]))
        self.decoder = nn.ModuleList(ups)
        self.head = nn.ConvTranspose2d(2 * widths[0], 2, 4, 2, 1)
        if frozen_visual:
            self.visual_encoder.requires_grad_(False)
        self.window: Tensor
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    # -- the pieces ------------------------------------------------------------------------

    def train(self, mode: bool = True) -> YNet:
        """A frozen (PT) encoder stays in eval mode, so its BatchNorm statistics are the
        sync model's and do not drift with the separation data."""
        super().train(mode)
        if self.frozen_visual:
            self.visual_encoder.eval()
        return self

    def stft(self, wav: Tensor) -> Tensor:
        """(B, n) -> complex (B, 256, 1 + n // 160), Nyquist bin dropped."""
        spec = torch.stft(wav, N_FFT, HOP, N_FFT, self.window, center=True,
                          return_complex=True)
        return spec[:, :N_BINS]

    def istft(self, spec: Tensor, length: int) -> Tensor:
        spec = F.pad(spec, (0, 0, 0, 1))  # the dropped Nyquist bin back, as zeros
        return torch.istft(spec, N_FFT, HOP, N_FFT, self.window, center=True, length=length)

    def visual_features(self, frames: Tensor) -> Tensor:
        """(B, T, 3, 48, 96) -> projected features (B, visual_channels, T)."""
        if self.frozen_visual:
            with torch.no_grad():
                feats = self.visual_encoder(frames)
        else:
            feats = self.visual_encoder(frames)
        return self.visual_proj(feats).transpose(1, 2)

    def mask(self, spec: Tensor, frames: Tensor) -> Tensor:
        """Complex mask (B, 256, S) for the mixture spectrogram ``spec``."""
        steps = spec.shape[-1]
        # Scale-free input: the mixture normalised by its own RMS over the segment, then
        # magnitude-compressed, as log-magnitude plus unit phasor.
        rms = spec.abs().pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-8)
        x = spec / rms
        mag = x.abs()
        phasor = x / mag.clamp_min(1e-8)
        feats = torch.stack([torch.log1p(mag), phasor.real, phasor.imag], dim=1)
        multiple = 2 ** len(self.encoder)
        pad = (-steps) % multiple
        h = F.pad(feats, (0, pad))
        skips = []
        for down in self.encoder:
            h = down(h)
            skips.append(h)
        vis = self.visual_features(frames)
        vis = F.interpolate(vis, size=h.shape[-1], mode="linear", align_corners=False)
        vis = vis[:, :, None, :].expand(-1, -1, h.shape[2], -1)
        h = self.fuse(torch.cat([h, vis], dim=1))
        for i, up in enumerate(self.decoder):
            h = up(h if i == 0 else torch.cat([h, skips[-1 - i]], dim=1))
        m = self.head(torch.cat([h, skips[0]], dim=1))[..., :steps]
        m = torch.complex(m[:, 0].float(), m[:, 1].float())
        size = m.abs()
        return m * (torch.tanh(size) / size.clamp_min(1e-8))

    def separate_spec(self, mixture: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(estimated target spectrogram, mixture spectrogram), both complex (B, 256, S)."""
        spec = self.stft(mixture)
        return self.mask(spec, frames) * spec, spec

    def forward(self, mixture: Tensor, frames: Tensor) -> Tensor:
        """(B, n) mixture and (B, n / 640, 3, 48, 96) frames -> (B, n) target estimate."""
        est, _ = self.separate_spec(mixture, frames)
        return self.istft(est, mixture.shape[-1])


def build_separator(
    preset: str | YNetDimensions = "small",
    visual: str = "mc18",
    sync_checkpoint: str | None = None,
    freeze: bool | None = None,
) -> YNet:
    """A fresh separator. With a ``sync_checkpoint`` (path or registry name) the VocaLiST /
    SyncNet* encoder starts from its weights, frozen unless ``freeze`` is False (PT vs
    E2E); without one it starts from scratch and is trained."""
    if isinstance(preset, str):
        if preset not in YNET_PRESETS:
            raise CheckpointError(
                f"unknown separation preset {preset!r}; choose from {sorted(YNET_PRESETS)}")
        dims = YNET_PRESETS[preset]
    else:
        dims = preset
    sync_model = None
    if sync_checkpoint is not None:
        if visual == "mc18":
            raise CheckpointError("the mc18 encoder takes no sync checkpoint; use --visual "
                                  "vocalist or syncnet")
        sync_model = load_model(sync_checkpoint, "cpu")
    if freeze is None:
        freeze = sync_model is not None
    return YNet(dims, visual, freeze, sync_model)


def separator_from_checkpoint(ckpt: Mapping[str, Any], source: str) -> YNet:
    """Build the separator a read checkpoint describes and load its weights strictly."""
    if ckpt.get("model") != YNet.family:
        raise CheckpointError(f"checkpoint {source} holds no separation model (Y-Net)")
    dims = YNetDimensions.from_dict(ckpt.get("dims") or {})
    model = YNet(dims, str(ckpt.get("visual", "mc18")), bool(ckpt.get("frozen_visual")),
                 sync_dims=ckpt.get("sync_dims"))
    check_state_dict(model, ckpt["state_dict"], source)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model


register_reader(YNet.family, separator_from_checkpoint)


def load_separator(name_or_path: str | Path, device: str | torch.device = "cpu") -> YNet:
    """A trained separator (path or registry name), in eval mode on ``device``."""
    model = load_model(name_or_path, device, family=YNet.family)
    assert isinstance(model, YNet)
    return model


def checkpoint_payload(model: YNet) -> dict[str, Any]:
    """What a separation checkpoint records besides weights and optimizer state."""
    return {"model": YNet.family, "dims": model.dims.to_dict(), "visual": model.visual,
            "frozen_visual": model.frozen_visual, "sync_dims": model.sync_dims,
            "system": system_name(model.visual, model.frozen_visual)}
