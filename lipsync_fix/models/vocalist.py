"""The VocaLiST audio-visual synchronisation model.

VocaLiST (Kadandale, Montesinos, Haro, Interspeech 2022) scores how well 5 frames of lips
(0.2 s at 25 fps) match 16 mel frames of voice. A 3-D conv encoder turns the lips into 5
tokens, a 2-D conv encoder turns the mel into 16 tokens, and three cross-modal transformer
encoders (audio->video, video->audio, and a "memory" one over their outputs) feed a small
head that emits one logit per pair.

The module and buffer names follow the authors' code exactly so that their released
checkpoints load with ``strict=True``. The forward pass is split into encoder and
cross-modal stages (:meth:`VocaLiST.encode_video`, :meth:`VocaLiST.encode_audio`,
:meth:`VocaLiST.sync_logits`) because the scorer computes each encoder once per window
and only the cross-modal part once per (window, shift) pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lipsync_fix.features.constants import FRAMES_PER_WINDOW
from lipsync_fix.models.layers import Conv2dBlock, Conv3dBlock, Dimensions


@dataclass(frozen=True)
class ModelDimensions(Dimensions):
    """Widths and depths of a VocaLiST model; the defaults are the paper's (80.1M params).

    Stored beside the weights in our checkpoints so a model of any size loads without
    guesswork.
    """

    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 4
    d_ffn: int = 2048
    video_widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    audio_widths: tuple[int, ...] = (32, 64, 128, 256)
    embed_dropout: float = 0.25
    attn_dropout: float = 0.0
    relu_dropout: float = 0.1
    res_dropout: float = 0.1


PRESETS: dict[str, ModelDimensions] = {
    "paper": ModelDimensions(),
    # Small enough to train on a laptop CPU in minutes; used by the demo model and tests.
    # The first two video blocks run at full resolution and dominate the cost, so they
    # are the narrowest.
    "small": ModelDimensions(
        d_model=128,
        n_heads=4,
        n_layers=2,
        d_ffn=256,
        video_widths=(8, 16, 32, 64, 128),
        audio_widths=(16, 24, 32, 64),
    ),
    # The smallest model that still has every stage; for fast unit tests.
    "tiny": ModelDimensions(
        d_model=32,
        n_heads=2,
        n_layers=1,
        d_ffn=64,
        video_widths=(4, 8, 8, 16, 32),
        audio_widths=(4, 8, 8, 16),
    ),
}



def video_encoder(widths: tuple[int, ...], d_model: int) -> nn.Sequential:
    """17 conv blocks; axes are (H, W, T) so time keeps its 5 steps to the end."""
    w0, w1, w2, w3, w4 = widths
    blocks = [
        Conv3dBlock(3, w0, 7, 1, 3),
        Conv3dBlock(w0, w1, 5, (1, 2, 1), (1, 1, 2)),
        Conv3dBlock(w1, w1, 3, 1, 1, residual=True),
        Conv3dBlock(w1, w1, 3, 1, 1, residual=True),
        Conv3dBlock(w1, w2, 3, (2, 2, 1), 1),
        Conv3dBlock(w2, w2, 3, 1, 1, residual=True),
        Conv3dBlock(w2, w2, 3, 1, 1, residual=True),
        Conv3dBlock(w2, w2, 3, 1, 1, residual=True),
        Conv3dBlock(w2, w3, 3, (2, 2, 1), 1),
        Conv3dBlock(w3, w3, 3, 1, 1, residual=True),
        Conv3dBlock(w3, w3, 3, 1, 1, residual=True),
        Conv3dBlock(w3, w4, 3, (2, 2, 1), 1),
        Conv3dBlock(w4, w4, 3, 1, 1, residual=True),
        Conv3dBlock(w4, w4, 3, 1, 1, residual=True),
        Conv3dBlock(w4, d_model, 3, (2, 2, 1), 1),
        Conv3dBlock(d_model, d_model, 3, 1, (0, 0, 1)),
        Conv3dBlock(d_model, d_model, 1, 1, 0),
    ]
    return nn.Sequential(*blocks)


def audio_encoder(widths: tuple[int, ...], d_model: int) -> nn.Sequential:
    """14 conv blocks over (mel, time); the mel axis shrinks 80 -> 1, time stays 16."""
    w0, w1, w2, w3 = widths
    blocks = [
        Conv2dBlock(1, w0, 3, 1, 1),
        Conv2dBlock(w0, w0, 3, 1, 1, residual=True),
        Conv2dBlock(w0, w0, 3, 1, 1, residual=True),
        Conv2dBlock(w0, w1, 3, (3, 1), 1),
        Conv2dBlock(w1, w1, 3, 1, 1, residual=True),
        Conv2dBlock(w1, w1, 3, 1, 1, residual=True),
        Conv2dBlock(w1, w2, 3, (3, 1), 1),
        Conv2dBlock(w2, w2, 3, 1, 1, residual=True),
        Conv2dBlock(w2, w2, 3, 1, 1, residual=True),
        Conv2dBlock(w2, w3, 3, (3, 1), 1),
        Conv2dBlock(w3, w3, 3, 1, 1, residual=True),
        Conv2dBlock(w3, w3, 3, 1, 1, residual=True),
        Conv2dBlock(w3, d_model, 3, 1, (0, 1)),
        Conv2dBlock(d_model, d_model, 1, 1, 0),
    ]
    return nn.Sequential(*blocks)


def sinusoidal_table(length: int, dim: int, device=None) -> Tensor:
    """Rows 0..length of the sinusoidal embedding; row 0 is the all-zero padding row."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=device)
                     * -(math.log(10000.0) / (half - 1)))
    angles = torch.arange(length + 1, dtype=torch.float32, device=device)[:, None] * freq[None]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    table[0] = 0.0
    return table


class PositionalEmbedding(nn.Module):
    """Sinusoidal positions, 1-based; a token whose channel 0 is exactly 0.0 gets none.

    The authors' code derives positions from channel 0 of the (post-ReLU) tokens and treats
    0.0 as padding. That is a quirk, but the checkpoints were trained with it, so it is kept.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("_float_tensor", torch.zeros(1))

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` (B, L, D) -> position embeddings (B, L, D)."""
        b, length, _ = tokens.shape
        table = sinusoidal_table(length, self.dim, tokens.device).to(tokens.dtype)
        positions = torch.arange(1, length + 1, device=tokens.device).expand(b, length)
        positions = positions.masked_fill(tokens[:, :, 0] == 0, 0)
        return table[positions]


class CrossModalAttention(nn.Module):
    """Multi-head attention with packed q/k/v projections (``in_proj_weight``)."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, x: Tensor) -> Tensor:
        b, length, _ = x.shape
        return x.view(b, length, self.n_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised key/value tokens (B, L, D) -> per-head keys and values (B, H, L, d)."""
        dim = key.shape[-1]
        w, bias = self.in_proj_weight, self.in_proj_bias
        k = F.linear(key, w[dim : 2 * dim], bias[dim : 2 * dim])
        v = F.linear(value, w[2 * dim :], bias[2 * dim :])
        return self._split_heads(k), self._split_heads(v)

    def forward(self, query: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Attend ``query`` (B, Lq, D) to projected ``k``/``v`` (B, H, Lk, d)."""
        dim = query.shape[-1]
        q = F.linear(query, self.in_proj_weight[:dim], self.in_proj_bias[:dim])
        q = self._split_heads(q) * self.head_dim**-0.5
        weights = q @ k.transpose(-1, -2)
        if mask is not None:
            weights = weights + mask
        weights = torch.softmax(weights.float(), dim=-1).type_as(weights)
        weights = F.dropout(weights, self.dropout, self.training)
        out = (weights @ v).transpose(1, 2).reshape(query.shape)
        return self.out_proj(out)


class CrossModalLayer(nn.Module):
    """Pre-LayerNorm encoder layer whose keys and values come from the other modality."""

    def __init__(self, dims: ModelDimensions):
        super().__init__()
        d = dims.d_model
        self.self_attn = CrossModalAttention(d, dims.n_heads, dims.attn_dropout)
        self.fc1 = nn.Linear(d, dims.d_ffn)
        self.fc2 = nn.Linear(dims.d_ffn, d)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(d), nn.LayerNorm(d)])
        self.relu_dropout = dims.relu_dropout
        self.res_dropout = dims.res_dropout

    def project_kv(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """The same LayerNorm normalises query, key and value (the authors' ``LN0``)."""
        norm = self.layer_norms[0]
        return self.self_attn.project_kv(norm(key), norm(value))

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        h = self.self_attn(self.layer_norms[0](x), k, v, mask)
        x = x + F.dropout(h, self.res_dropout, self.training)
        h = F.relu(self.fc1(self.layer_norms[1](x)))
        h = F.dropout(h, self.relu_dropout, self.training)
        h = self.fc2(h)
        return x + F.dropout(h, self.res_dropout, self.training)


def cross_attention_mask(len_q: int, len_k: int, device=None) -> Tensor:
    """Additive mask: -inf where ``j - i >= 1 + |len_k - len_q|`` (the authors' rule)."""
    i = torch.arange(len_q, device=device)[:, None]
    j = torch.arange(len_k, device=device)[None, :]
    masked = (j - i) >= 1 + abs(len_k - len_q)
    return torch.zeros(len_q, len_k, device=device).masked_fill(masked, float("-inf"))


class CrossModalTransformer(nn.Module):
    """A stack of :class:`CrossModalLayer`; query from one stream, key/value from another.

    Split in two steps so the key/value side can be prepared once and reused:
    :meth:`prepare_kv` embeds the key/value tokens and projects them for every layer,
    :meth:`attend` runs the query side against those prepared keys and values.
    """

    def __init__(self, dims: ModelDimensions):
        super().__init__()
        self.embed_scale = math.sqrt(dims.d_model)
        self.embed_dropout = dims.embed_dropout
        self.embed_positions = PositionalEmbedding(dims.d_model)
        self.layers = nn.ModuleList([CrossModalLayer(dims) for _ in range(dims.n_layers)])
        self.layer_norm = nn.LayerNorm(dims.d_model)
        self.register_buffer("version", torch.tensor([2.0]))

    def embed(self, tokens: Tensor) -> Tensor:
        """Scale by sqrt(D), add positions, apply the embedding dropout."""
        x = self.embed_scale * tokens + self.embed_positions(tokens)
        return F.dropout(x, self.embed_dropout, self.training)

    def prepare_kv(self, tokens: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Key/value tokens (B, Lk, D) -> per-layer projected (k, v), each (B, H, Lk, d).

        Key and value are the same tokens in VocaLiST, but the reference embeds them
        separately (with independent dropout when training), so they are embedded twice.
        """
        k_emb, v_emb = self.embed(tokens), self.embed(tokens)
        return [layer.project_kv(k_emb, v_emb) for layer in self.layers]

    def attend(self, query: Tensor, kv: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Query tokens (B, Lq, D) against prepared ``kv`` -> (B, Lq, D)."""
        x = self.embed(query)
        mask = cross_attention_mask(x.shape[1], kv[0][0].shape[2], x.device).to(x.dtype)
        for layer, (k, v) in zip(self.layers, kv, strict=True):
            x = layer(x, k, v, mask)
        return self.layer_norm(x)

    def forward(self, query: Tensor, key_value: Tensor) -> Tensor:
        return self.attend(query, self.prepare_kv(key_value))


class VocaLiST(nn.Module):
    """Lip-voice synchronisation scorer: (5 lip frames, 16 mel frames) -> one logit.

    Inputs follow the authors' layout: ``video`` (B, 3*T, 48, 96) lower-half face crops in
    BGR, frame-major channels, values in 0..1; ``mel`` (B, 1, 80, 16) normalised log-mel.
    Those values are the family's input recipe (``inputs``, see
    :mod:`lipsync_fix.features.inputs`): a subclass at other widths may read others
    (:class:`~lipsync_fix.models.mtdvocalist.MTDVocaLiST`: RGB, 0..255).

    ``window_frames`` is the window length T in frames the model was trained for (the paper's
    "Var" models use 10 or 25 frames with 32 or 80 mel frames); the layers do not depend
    on it, so checkpoints record it and :func:`~lipsync_fix.models.registry.load_model` sets it.
    """

    family = "vocalist"
    inputs = "wav2lip"  # 96x96 Wav2Lip crops (lower half read) + 80-band mel
    outputs_probability = False

    def __init__(
        self, dims: ModelDimensions | None = None, window_frames: int = FRAMES_PER_WINDOW
    ):
        super().__init__()
        self.dims = dims or ModelDimensions()
        self.window_frames = window_frames
        d = self.dims.d_model
        self.vid_prenet = video_encoder(self.dims.video_widths, d)
        self.aud_prenet = audio_encoder(self.dims.audio_widths, d)
        self.av_transformer = CrossModalTransformer(self.dims)
        self.va_transformer = CrossModalTransformer(self.dims)
        self.mem_transformer = CrossModalTransformer(self.dims)
        self.fc = nn.Linear(d, d)
        self.classifier = nn.Linear(d, 1)

    def encode_video(self, video: Tensor) -> Tensor:
        """(B, 3*T, 48, 96) -> visual tokens (B, T, D)."""
        b, c, h, w = video.shape
        x = video.view(b, c // 3, 3, h, w).permute(0, 2, 3, 4, 1)  # (B, 3, H, W, T)
        x = self.vid_prenet(x)  # (B, D, 1, 1, T)
        if x.shape[2:4] != (1, 1):
            raise ValueError(f"video windows must be 48x96 lower-half crops, got {h}x{w}")
        return x.flatten(2).transpose(1, 2)

    def encode_audio(self, mel: Tensor) -> Tensor:
        """(B, 1, 80, 16) -> audio tokens (B, 16, D)."""
        x = self.aud_prenet(mel)  # (B, D, 1, 16)
        return x.squeeze(2).transpose(1, 2)

    def transformers(
        self,
        audio_tokens: Tensor,
        video_tokens: Tensor,
        video_kv: list[tuple[Tensor, Tensor]] | None = None,
        audio_kv: list[tuple[Tensor, Tensor]] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The three cross-modal encoders; returns (av, va, mem), each (B, L, D).

        ``video_kv`` / ``audio_kv`` may be given already prepared (see
        :meth:`CrossModalTransformer.prepare_kv`) so that windows shared by many pairs are
        projected once.
        """
        if video_kv is None:
            video_kv = self.av_transformer.prepare_kv(video_tokens)
        if audio_kv is None:
            audio_kv = self.va_transformer.prepare_kv(audio_tokens)
        av = self.av_transformer.attend(audio_tokens, video_kv)
        va = self.va_transformer.attend(video_tokens, audio_kv)
        mem = self.mem_transformer(av, va)
        return av, va, mem

    def head(self, mem: Tensor) -> Tensor:
        """Max over time -> fc -> tanh -> classifier: (B, L, D) -> logits (B,)."""
        pooled = mem.amax(dim=1)
        return self.classifier(torch.tanh(self.fc(pooled))).squeeze(-1)

    def sync_logits(self, audio_tokens: Tensor, video_tokens: Tensor, **prepared) -> Tensor:
        """Cross-modal stage only: encoder tokens of each pair -> logits (B,)."""
        return self.head(self.transformers(audio_tokens, video_tokens, **prepared)[2])

    def pair_scorer(self, video_tokens: Tensor, audio_tokens: Tensor):
        """Logits of (video window, audio window) index pairs from cached encoder tokens.

        Each window's keys and values are projected once per layer here, so the returned
        function runs only the query side per pair.
        """
        video_kv = self.av_transformer.prepare_kv(video_tokens)
        audio_kv = self.va_transformer.prepare_kv(audio_tokens)

        def score(vi: Tensor, ai: Tensor) -> Tensor:
            return self.sync_logits(
                audio_tokens[ai], video_tokens[vi],
                video_kv=[(k[vi], v[vi]) for k, v in video_kv],
                audio_kv=[(k[ai], v[ai]) for k, v in audio_kv],
            )

        return score

    def forward(self, video: Tensor, mel: Tensor) -> Tensor:
        """Full model, as the reference runs it: one logit per (video, mel) pair."""
        return self.sync_logits(self.encode_audio(mel), self.encode_video(video))
