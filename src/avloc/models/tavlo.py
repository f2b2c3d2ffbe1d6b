"""TAVLO: Temporal-aware Audio-Visual Localization for fine-grained videO understanding.

Hahyeon Choi, Junhoo Lee, Nojun Kwak. "What's Making That Sound Right Now? Video-centric
Audio-Visual Localization" (AVATAR), ICCV 2025, Section 4, equation by equation:

- 4.1, eqs. 1-3: visual maps V (T, h, w, C) and one audio token per frame, A (T, C), from a
  rectangular 2-D convolution whose kernel spans the whole frequency axis and one frame's share
  of the time axis (:meth:`TAVLO.audio_tokens`).
- 4.1, eqs. 4-5: a spatial positional encoding PE_s (h*w, D_s = C) added to V; a temporal one
  PE_t (T, D_t) concatenated to both V and A, giving C + D_t channels.
- 4.2, eqs. 6-11: tokens X^0 = [A ; flatten(V)] (T, 1 + h*w, C + D_t) and L Audio-Spatial-
  Temporal blocks: multi-head self-attention over the 1 + h*w tokens of each frame (spatial),
  then over the T frames of each token (temporal) (:class:`ASTBlock`).
- 4.3, eqs. 12-15: the temporal multiple-instance contrastive loss
  (:func:`avloc.models.contrastive.temporal_mil_loss`); eq. 16, the localisation map: cosine
  similarity of a frame's audio token with each of its visual tokens after the blocks.

Our copy of the paper lost its formulas; where an equation is rebuilt from the prose, the
class docstring says what was assumed.
"""

from __future__ import annotations

from typing import Literal
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from avloc.models._registry import register_model
from avloc.models.contract import LocalizationModel
from avloc.models.blocks import MLP, Projection, check_choice, check_features, check_positive
from avloc.models.contrastive import (
    NEGATIVE_POOLS,
    check_self_supervision,
    check_temperature,
    cosine_map,
    temporal_mil_loss,
)
from avloc.types import AVOutput, AvlocError


def sinusoidal_encoding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """The Transformer's fixed encoding of ``positions (L,)``: ``(L, dim)``, ``dim`` even.

    Channel pairs (2k, 2k + 1) hold sin and cos of ``position / 10000^(2k / dim)``.
    """
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=positions.dtype, device=positions.device)
                            * (-math.log(10000.0) / dim))  # (dim/2,)
    angles = positions[:, None] * frequencies[None, :]  # (L, 1) * (1, dim/2) -> (L, dim/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (L, dim/2, 2) -> (L, dim)


def spatial_encoding(h: int, w: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """2-D sin-cos encoding ``(dim, h, w)``: the first dim/2 channels encode the row, the last
    dim/2 the column (MAE's layout); ``dim`` divisible by 4. Device and dtype of ``like``."""
    rows = sinusoidal_encoding(torch.arange(h, dtype=like.dtype, device=like.device), dim // 2)  # (h, dim/2)
    columns = sinusoidal_encoding(torch.arange(w, dtype=like.dtype, device=like.device), dim // 2)  # (w, dim/2)
    grid = torch.cat([rows[:, None, :].expand(h, w, dim // 2),
                      columns[None, :, :].expand(h, w, dim // 2)], dim=-1)  # (h, w, dim)
    return grid.permute(2, 0, 1)  # (h, w, dim) -> (dim, h, w)


def self_attention(attention: nn.MultiheadAttention, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """Pre-norm multi-head self-attention along the middle axis: ``(N, L, D) -> (N, L, D)``."""
    x = norm(x)
    return attention(x, x, x, need_weights=False)[0]


class ASTBlock(nn.Module):
    """One Audio-Spatial-Temporal block (eqs. 7-11): ``(B, T, S, D) -> (B, T, S, D)``, S = 1 + h*w.

    Eq. 7: X_s = X + MSA_spatial(LN(X)), the S tokens of each frame attending to each other.
    Eq. 8: X' = X_s + MSA_temporal(LN(X_s)), each token attending to itself at every frame.
    With ``mlp_ratio > 0``, then X' + MLP(LN(X')) (Linear-ReLU-Linear, hidden D * mlp_ratio).

    Args:
        dim: D = C + D_t, the token width.
        heads: attention heads of both attentions (dim must be divisible by them).
        mlp_ratio: hidden width of the optional feed-forward layer, in multiples of D (0: none).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 0.0) -> None:
        super().__init__()
        self.spatial_norm = nn.LayerNorm(dim)
        self.spatial_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.temporal_norm = nn.LayerNorm(dim)
        self.temporal_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        hidden = round(dim * mlp_ratio)
        self.feed_forward = nn.Sequential(nn.LayerNorm(dim), MLP(dim, hidden, dim)) if hidden > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, s, d = x.shape
        spatial = self_attention(self.spatial_attention, self.spatial_norm, x.flatten(0, 1))  # (B*T, S, D)
        x = x + spatial.view(b, t, s, d)  # (B*T, S, D) -> (B, T, S, D)
        across_time = x.transpose(1, 2).flatten(0, 1)  # (B, T, S, D) -> (B, S, T, D) -> (B*S, T, D)
        temporal = self_attention(self.temporal_attention, self.temporal_norm, across_time)  # (B*S, T, D)
        x = x + temporal.view(b, s, t, d).transpose(1, 2)  # (B*S, T, D) -> (B, S, T, D) -> (B, T, S, D)
        if self.feed_forward is not None:
            x = x + self.feed_forward(x)
        return x


@register_model("tavlo")
class TAVLO(LocalizationModel):
    """TAVLO on feature maps: AST blocks over [audio token; h*w visual tokens] of every frame.

    ``forward(visual (B, T, Cv, h, w), audio (B, T, Ca, m, n)) -> AVOutput`` with
    ``heatmap (B, T, h, w)`` = cos(audio token of frame t, visual token (i, j) of frame t) after
    the blocks (eq. 16), ``logits = video_logits = None`` and ``embeddings``: ``"audio"``
    ``(B, T, D)`` and ``"visual"`` ``(B, T, D, h, w)``, the blocks' outputs, D = C + D_t.

    Choices where the paper is vague or where avloc differs (defaults in brackets):

    - Inputs are encoder feature maps, not frames and spectrograms. Visual: a learned 1x1
      convolution (``blocks.Projection``, one layer, no BatchNorm) from Cv to ``channels`` C,
      since the encoders here are frozen and of any width. C [256, STM's joint width]: the
      paper's C is its ResNet-18's 512 (``channels=512``); 256 quarters the blocks' parameters.
    - Audio (eqs. 2-3): the paper slides a (F, N/T)-sized kernel with stride N/T over the
      clip's whole spectrogram, one output per frame. avloc already cuts the audio into one
      segment per step, so the same thing is one convolution per step whose kernel covers the
      step's whole map: ``audio_kernel`` (frequency, time) [(4, 2)]. A map of another size is
      first adaptive-average-pooled to it; (4, 2) is exactly the map of the VGGish-shaped
      encoders on a 0.25-s step (64 mel bins x 23 frames -> 4 x 2), where the pooling is the
      identity. One linear convolution, no normalisation or activation after it (the paper
      names none).
    - Positional encodings (eqs. 4-5): fixed sinusoidal, not learned (the paper does not say).
      Temporal: the Transformer's 1-D encoding of the step index within the input, D_t =
      ``temporal_channels`` [32] channels, concatenated to the audio token and to every visual
      token. Spatial: a 2-D sin-cos encoding of (row, column), C channels, added to the visual
      tokens only (the audio token has no position in the frame). Fixed encodings work for any
      T and any h, w: training windows are T = 4 steps and evaluation passes whole clips
      (T = 40), so learned rows for steps 4..39 would never be trained. Step indices count
      from the first step of the input, wherever it lies in the clip.
    - AST blocks (eqs. 7-11): ``depth`` L [2] blocks of pre-LayerNorm residual multi-head
      self-attention, spatial then temporal (the layout of the factorised video transformers
      the paper follows, ViViT and TimeSformer; our copy lost the formulas), ``heads`` [8]
      heads over D = C + D_t channels (``nn.MultiheadAttention``: per-head width D / heads,
      scaling by its square root). The
      paper's block has the two attentions only; ``mlp_ratio`` [0.0] adds a ViT-style
      feed-forward layer after them. No dropout. The temporal attention sees every step of the
      input, both ways (no causal mask), so at evaluation it spans the whole clip, 10 times the
      training window.
    - Outputs: the blocks' audio and visual tokens as they are (all D channels, no final
      LayerNorm); the heat map is their cosine similarity in [-1, 1].
    - Loss (eqs. 12-15): negative bags are the same timestamp in the other videos of the batch,
      scored by the ``negative`` pool ["mean", the paper; "max" gives EZ-VSL's scoring], both
      directions summed, ``temperature`` tau [0.03, EZ-VSL's; the paper gives none]. A batch of
      one video has no negatives and a loss of exactly 0.
    - No classifier: ``num_classes`` is accepted (the model contract) and unused;
      ``supervisions = ("self",)``.

    Note: the loss as the paper defines it has two shortcuts that need no audio-visual
    correspondence. Mean-scored negatives reward any map whose max exceeds its mean (a bag
    holding +a and -a scores 1 as a positive and 0 as a negative: tests/test_contrastive.py),
    and the spatial attention lets a frame's visual tokens read its audio token (and the audio
    token its visual tokens), which pairs them without localising anything. On a toy task with
    a sounding and a silent object per frame (tests/test_ezvsl.py's), EZ-VSL's map peaks on the
    sounding one in 65-85% of frames after 300 Adam steps (3 seeds); TAVLO's loss falls to
    about 0 (mean negatives) or 0.02-0.9 (max) while its peak stays at or below chance (1/16).
    """

    paper = "Choi, Lee, Kwak. \"What's Making That Sound Right Now? Video-centric Audio-Visual Localization\", ICCV 2025"
    supervisions: tuple[str, ...] = ("self",)

    def __init__(
        self,
        *,
        visual_channels: int,
        audio_channels: int,
        num_classes: int | None = None,
        channels: int = 256,
        temporal_channels: int = 32,
        depth: int = 2,
        heads: int = 8,
        mlp_ratio: float = 0.0,
        audio_kernel: Sequence[int] = (4, 2),
        temperature: float = 0.03,
        negative: Literal[NEGATIVE_POOLS] = "mean",
    ) -> None:
        super().__init__()
        audio_kernel = tuple(audio_kernel)
        _check_options(channels, temporal_channels, depth, heads, mlp_ratio, audio_kernel)
        check_temperature(temperature)
        check_choice("negative", negative, NEGATIVE_POOLS)
        self.visual_channels = visual_channels
        self.audio_channels = audio_channels
        self.channels = channels
        self.temporal_channels = temporal_channels
        self.audio_kernel = audio_kernel
        self.temperature = temperature
        self.negative = negative
        self.audio_conv = nn.Conv2d(audio_channels, channels, kernel_size=audio_kernel)
        self.visual_projection = Projection(visual_channels, channels, layers=1, norm=False)
        self.blocks = nn.ModuleList(
            ASTBlock(channels + temporal_channels, heads, mlp_ratio) for _ in range(depth)
        )

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> AVOutput:
        check_features("TAVLO", visual, audio, self.visual_channels, self.audio_channels)
        h, w = visual.shape[-2:]
        tokens = self.tokens(visual, audio)  # (B, T, 1 + h*w, D)
        for block in self.blocks:
            tokens = block(tokens)
        audio_out = tokens[:, :, 0]  # (B, T, 1 + h*w, D) -> (B, T, D)
        visual_out = tokens[:, :, 1:].transpose(-2, -1).unflatten(-1, (h, w))  # (B, T, h*w, D) -> (B, T, D, h, w)
        heatmap = cosine_map(audio_out, visual_out)  # (B, T, h, w), eq. 16
        return AVOutput(heatmap=heatmap, embeddings={"audio": audio_out, "visual": visual_out})

    def audio_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """One token per frame (eqs. 2-3): ``(B, T, Ca, m, n) -> (B, T, C)``."""
        b, t = audio.shape[:2]
        x = F.adaptive_avg_pool2d(audio.flatten(0, 1), self.audio_kernel)  # (B*T, Ca, m, n) -> (B*T, Ca, F, N)
        return self.audio_conv(x).view(b, t, self.channels)  # (B*T, C, 1, 1) -> (B, T, C)

    def tokens(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The AST blocks' input X^0 (eqs. 4-6): ``(B, T, 1 + h*w, C + D_t)``."""
        b, t, _, h, w = visual.shape
        visual = self.visual_projection(visual.flatten(0, 1)).unflatten(0, (b, t))  # (B*T, Cv, h, w) -> (B, T, C, h, w)
        visual = visual + spatial_encoding(h, w, self.channels, visual)  # + (C, h, w), eq. 4
        visual = visual.flatten(-2).transpose(-2, -1)  # (B, T, C, h, w) -> (B, T, C, h*w) -> (B, T, h*w, C)
        tokens = torch.cat([self.audio_tokens(audio).unsqueeze(2), visual], dim=2)  # (B, T, 1 + h*w, C), eq. 6
        steps = torch.arange(t, dtype=tokens.dtype, device=tokens.device)
        temporal = sinusoidal_encoding(steps, self.temporal_channels)  # (T, D_t)
        temporal = temporal[None, :, None, :].expand(b, t, tokens.shape[2], -1)  # (T, D_t) -> (B, T, 1 + h*w, D_t)
        return torch.cat([tokens, temporal], dim=-1)  # (B, T, 1 + h*w, C + D_t), eqs. 4-5

    def loss(self, output: AVOutput, batch: dict, supervision: str) -> torch.Tensor:
        """The temporal MIL contrastive loss (eqs. 12-15); ``batch`` is not read."""
        check_self_supervision("tavlo", supervision)
        return temporal_mil_loss(output.embeddings["audio"], output.embeddings["visual"],
                                 self.temperature, self.negative)


def _check_options(
    channels: int, temporal_channels: int, depth: int, heads: int, mlp_ratio: float, audio_kernel: tuple
) -> None:
    """Raise AvlocError on options the model cannot be built with."""
    if channels < 4 or channels % 4:
        raise AvlocError(f"channels must be a positive multiple of 4 (2-D sin-cos encoding), got {channels}")
    if temporal_channels < 2 or temporal_channels % 2:
        raise AvlocError(f"temporal_channels must be a positive even number, got {temporal_channels}")
    check_positive(depth=depth)
    if heads < 1 or (channels + temporal_channels) % heads:
        width = channels + temporal_channels
        raise AvlocError(f"heads must divide channels + temporal_channels = {width}, got {heads}")
    if mlp_ratio < 0:
        raise AvlocError(f"mlp_ratio must be >= 0, got {mlp_ratio}")
    if len(audio_kernel) != 2 or any(not isinstance(k, int) or k < 1 for k in audio_kernel):
        raise AvlocError(f"audio_kernel must be two positive integers (frequency, time), got {audio_kernel}")
