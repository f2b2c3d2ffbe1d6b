"""AVE: audio-visual event localisation with audio-guided visual attention and DMRN fusion.

Yapeng Tian, Jing Shi, Bochen Li, Zhiyao Duan, Chenliang Xu. "Audio-Visual Event Localization in
Unconstrained Videos", ECCV 2018. Section 4, equation by equation: the audio-guided visual
attention (4.2, eqs. 2-4), one LSTM per modality (4.1, eq. 1), the audio-visual fusion (4.3,
eqs. 5-6 for the dual multimodal residual network, DMRN), a classifier per step, the MIL pooling
of weak supervision (4.4, eq. 7), and the DMRFE ensemble of section 6.2.

Registered models: ``"ave"`` (attention, LSTMs, one fusion, one classifier) and ``"dmrfe"``
(the same front with two DMRN blocks whose predicted probabilities are averaged).
"""

from __future__ import annotations

from typing import Literal
import math

import torch
from torch import nn

from avloc.losses import classification_loss
from avloc.models._registry import register_model
from avloc.models.contract import LocalizationModel
from avloc.models.blocks import POOLS, SequenceLSTM, check_choice, check_features, check_positive, spatial_pool
from avloc.types import AVOutput

FUSIONS = ("concat", "additive", "gated", "dmrn")
TEMPORAL_POOLS = ("mean", "max")


class AudioGuidedAttention(nn.Module):
    """Audio-guided visual attention (eqs. 2-4) on any leading dims.

    ``x = W_f tanh(W_v U_v(v) + W_a U_a(a) 1^T)`` over the k = h*w positions, ``w = softmax(x)``
    and ``v_att = sum_i w_i v_i`` (the attended vector is a sum of the *input* visual features).
    ``forward(visual (..., Cv, h, w), audio (..., Ca)) -> (attended (..., Cv), weights (..., h, w))``.

    Args:
        visual_channels: Cv.
        audio_channels: Ca.
        channels: d, the width U_v and U_a (dense layer + ReLU) project both modalities to.
        hidden: the width of the additive attention (rows of W_v and W_a; k = 49 in the paper).
    """

    def __init__(self, visual_channels: int, audio_channels: int, *, channels: int = 512, hidden: int = 49) -> None:
        super().__init__()
        self.visual_transform = nn.Sequential(nn.Linear(visual_channels, channels), nn.ReLU())  # U_v
        self.audio_transform = nn.Sequential(nn.Linear(audio_channels, channels), nn.ReLU())  # U_a
        self.visual_weight = nn.Linear(channels, hidden, bias=False)  # W_v
        self.audio_weight = nn.Linear(channels, hidden, bias=False)  # W_a
        self.score = nn.Linear(hidden, 1, bias=False)  # W_f (a bias would cancel in the softmax)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = visual.flatten(-2).transpose(-1, -2)  # (..., Cv, h, w) -> (..., h*w, Cv)
        visual_term = self.visual_weight(self.visual_transform(positions))  # (..., h*w, hidden)
        audio_term = self.audio_weight(self.audio_transform(audio)).unsqueeze(-2)  # (..., hidden) -> (..., 1, hidden)
        scores = self.score(torch.tanh(visual_term + audio_term)).squeeze(-1)  # (..., h*w, 1) -> (..., h*w)
        weights = scores.softmax(dim=-1)
        attended = torch.einsum("...p,...pc->...c", weights, positions)  # (..., h*w), (..., h*w, Cv) -> (..., Cv)
        return attended, weights.unflatten(-1, visual.shape[-2:])  # (..., h*w) -> (..., h, w)


class ConcatFusion(nn.Module):
    """``[h_a ; h_v]``: ``(..., F), (..., F) -> (..., 2F)``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_features = 2 * features

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return torch.cat((audio, visual), dim=-1)  # (..., F), (..., F) -> (..., 2F)


class AdditiveFusion(nn.Module):
    """``h_a + h_v``: ``(..., F), (..., F) -> (..., F)``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_features = features

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return audio + visual


class GatedFusion(nn.Module):
    """The visual state gates the audio state: ``h_a * sigmoid(W h_v + b)``, ``(..., F) -> (..., F)``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.gate = nn.Linear(features, features)
        self.out_features = features

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return audio * torch.sigmoid(self.gate(visual))


def _tanh_mlp(features: int) -> nn.Sequential:
    """``Linear -> tanh -> Linear``, F -> F: one modality's transform inside a DMRN block."""
    return nn.Sequential(nn.Linear(features, features), nn.Tanh(), nn.Linear(features, features))


class DMRNBlock(nn.Module):
    """One residual block of DMRN (eqs. 5-6), both modalities updated.

    ``f(h_a, h_v) = (U_a(h_a) + U_v(h_v)) / 2`` (additive fusion), ``h_a' = tanh(h_a + f)``,
    ``h_v' = tanh(h_v + f)``. ``forward((..., F), (..., F)) -> ((..., F), (..., F))``.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.audio_transform = _tanh_mlp(features)  # U_a
        self.visual_transform = _tanh_mlp(features)  # U_v

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        merged = 0.5 * (self.audio_transform(audio) + self.visual_transform(visual))
        return torch.tanh(audio + merged), torch.tanh(visual + merged)


class DMRN(nn.Module):
    """Dual multimodal residual network: ``blocks`` stacked :class:`DMRNBlock`, then the
    average of the two updated states as the joint representation h*: ``(..., F) -> (..., F)``."""

    def __init__(self, features: int, blocks: int = 1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(DMRNBlock(features) for _ in range(blocks))
        self.out_features = features

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            audio, visual = block(audio, visual)
        return 0.5 * (audio + visual)


def make_fusion(fusion: str, features: int, dmrn_blocks: int = 1) -> nn.Module:
    """The fusion module ``fusion`` (one of :data:`FUSIONS`) of two ``features``-wide states."""
    check_choice("fusion", fusion, FUSIONS)
    if fusion == "dmrn":
        return DMRN(features, dmrn_blocks)
    return {"concat": ConcatFusion, "additive": AdditiveFusion, "gated": GatedFusion}[fusion](features)


class FusionHead(nn.Module):
    """A fusion network and the per-step classifier on its output: ``(B, T, F) x 2 -> (B, T, K)``."""

    def __init__(self, fusion: str, features: int, num_classes: int, dmrn_blocks: int = 1) -> None:
        super().__init__()
        self.fusion = make_fusion(fusion, features, dmrn_blocks)
        self.classifier = nn.Linear(self.fusion.out_features, num_classes)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fusion(audio, visual))


def average_probabilities(logits: list[torch.Tensor]) -> torch.Tensor:
    """Logits whose softmax is the mean of the members' softmax: ``log(mean_m softmax(z_m))``.

    ``M`` tensors ``(..., K)`` -> ``(..., K)``; one member's logits come back unchanged.
    """
    if len(logits) == 1:
        return logits[0]
    log_probabilities = torch.stack([z.log_softmax(dim=-1) for z in logits])  # M x (..., K) -> (M, ..., K)
    return torch.logsumexp(log_probabilities, dim=0) - math.log(len(logits))


@register_model("ave")
class AVE(LocalizationModel):
    """AVE on feature maps: audio-guided visual attention, a BiLSTM per modality, fusion, classifier.

    ``forward(visual (B, T, Cv, h, w), audio (B, T, Ca, m, n)) -> AVOutput`` with ``heatmap
    (B, T, h, w)`` the attention weights w_t of eq. 3 (each map sums to 1), ``logits (B, T, K)``,
    ``video_logits (B, K)`` and ``embeddings``: ``"audio_vector"`` a_t ``(B, T, Ca)``,
    ``"attended_visual"`` v_att_t ``(B, T, Cv)``, ``"audio_state"`` h^a_t and ``"visual_state"``
    h^v_t ``(B, T, 2H)``.

    Choices where the paper is vague (defaults in brackets):

    - Audio vector a_t: global ``audio_pool`` of the audio map, ["mean"] (the paper's a_t is the
      128-D VGGish embedding of the second, and its models without attention use global
      average pooling) or "max".
    - Attention (eq. 4), as the authors' code: U_v, U_a = one dense layer + ReLU to d =
      ``attention_channels`` [512]; W_v, W_a bias-free with ``attention_hidden`` rows [49: the
      paper's k, the 7x7 positions of VGG-19 pool5; here a width, independent of h*w]; W_f
      bias-free. The audio term is broadcast over positions as eq. 4 writes it (the authors'
      code broadcasts it over the hidden units instead, indexing it by position).
    - LSTMs (eq. 1): bidirectional, ``lstm_hidden`` H [128] per direction (supplementary
      material), zero initial state, on a_t and v_att_t (not on the projected features).
    - ``fusion`` of the two LSTM outputs (late fusion, the paper's best): "concat" [h_a; h_v];
      "additive" h_a + h_v; "gated" h_a * sigmoid(W h_v + b) (the visual state gates the
      audio state; [36] leaves which way open); ["dmrn"] eqs. 5-6 with f = (U_a(h_a) +
      U_v(h_v)) / 2, U = Linear -> tanh -> Linear (authors' code), h* = (h_a' + h_v') / 2,
      ``dmrn_blocks`` [1] stacked blocks (the paper: more do not help), each with its own U.
    - Classifier: one shared linear layer per step (the paper's "FC layer with Softmax"; the
      authors' concat model has a 64-wide hidden layer instead). K = ``num_classes``,
      background included, last. The loss is cross-entropy on logits (their code applies it
      to softmax outputs).
    - ``members`` [1]: M > 1 fusion + classifier heads on the same attention and LSTMs; the
      logits are log(mean_m softmax(z_m)), so their softmax is the averaged probability (DMRFE,
      see :func:`dmrfe`) and the training loss is the cross-entropy of that average.
    - Weak supervision (MIL, eq. 7): video_logits = ``temporal_pool`` ["mean"] of the step logits,
      i.e. the average of the last FC layer's outputs m_t, then softmax (the cross-entropy).
      "max" is the authors' code. With ``members`` > 1, m_t are the combined log-probabilities.
    - ``supervisions``: "segment" (the paper's supervised setting, per-step labels) first, then
      "video" (weak, MIL).
    """

    paper = 'Tian, Shi, Li, Duan, Xu. "Audio-Visual Event Localization in Unconstrained Videos", ECCV 2018 (section 4)'
    supervisions: tuple[str, ...] = ("segment", "video")

    def __init__(
        self,
        *,
        visual_channels: int,
        audio_channels: int,
        num_classes: int,
        fusion: Literal[FUSIONS] = "dmrn",
        members: int = 1,
        attention_channels: int = 512,
        attention_hidden: int = 49,
        lstm_hidden: int = 128,
        dmrn_blocks: int = 1,
        audio_pool: Literal[POOLS] = "mean",
        temporal_pool: Literal[TEMPORAL_POOLS] = "mean",
    ) -> None:
        super().__init__()
        check_choice("fusion", fusion, FUSIONS)
        check_choice("audio_pool", audio_pool, POOLS)
        check_choice("temporal_pool", temporal_pool, TEMPORAL_POOLS)
        check_positive(visual_channels=visual_channels, audio_channels=audio_channels, num_classes=num_classes,
                       members=members, attention_channels=attention_channels, attention_hidden=attention_hidden,
                       lstm_hidden=lstm_hidden, dmrn_blocks=dmrn_blocks)
        self.visual_channels = visual_channels
        self.audio_channels = audio_channels
        self.num_classes = num_classes
        self.audio_pool = audio_pool
        self.temporal_pool = temporal_pool
        self.attention = AudioGuidedAttention(visual_channels, audio_channels, channels=attention_channels,
                                              hidden=attention_hidden)
        self.audio_lstm = SequenceLSTM(audio_channels, lstm_hidden)
        self.visual_lstm = SequenceLSTM(visual_channels, lstm_hidden)
        self.heads = nn.ModuleList(
            FusionHead(fusion, self.audio_lstm.out_features, num_classes, dmrn_blocks) for _ in range(members)
        )

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> AVOutput:
        check_features(type(self).__name__, visual, audio, self.visual_channels, self.audio_channels)
        audio_vector = spatial_pool(audio, self.audio_pool)  # (B, T, Ca, m, n) -> (B, T, Ca)
        attended, weights = self.attention(visual, audio_vector)  # (B, T, Cv), (B, T, h, w)
        audio_state, visual_state = self.audio_lstm(audio_vector), self.visual_lstm(attended)  # (B, T, 2H) each
        logits = average_probabilities([head(audio_state, visual_state) for head in self.heads])  # (B, T, K)
        return AVOutput(
            heatmap=weights,
            logits=logits,
            video_logits=self._pool_time(logits),
            embeddings={"audio_vector": audio_vector, "attended_visual": attended,
                        "audio_state": audio_state, "visual_state": visual_state},
        )

    def _pool_time(self, logits: torch.Tensor) -> torch.Tensor:
        """MIL pooling g of eq. 7: ``(B, T, K) -> (B, K)``."""
        return logits.mean(dim=1) if self.temporal_pool == "mean" else logits.amax(dim=1)

    def loss(self, output: AVOutput, batch: dict, supervision: str) -> torch.Tensor:
        """Cross-entropy on the step logits ("segment") or on the MIL video logits ("video")."""
        return classification_loss(output, batch, supervision)


@register_model("dmrfe")
def dmrfe(
    *,
    visual_channels: int,
    audio_channels: int,
    num_classes: int,
    members: int = 2,
    attention_channels: int = 512,
    attention_hidden: int = 49,
    lstm_hidden: int = 128,
    dmrn_blocks: int = 1,
    audio_pool: Literal[POOLS] = "mean",
    temporal_pool: Literal[TEMPORAL_POOLS] = "mean",
) -> AVE:
    """Build DMRFE, the dual multimodal residual fusion ensemble (section 6.2).

    "Feed audio and visual features into two separated blocks and then use average ensemble to
    combine the two predicted probabilities": the LSTM outputs h^a_t, h^v_t go to ``members``
    [2] DMRN blocks with their own parameters, each with its own classifier; the predicted
    probabilities are averaged (:func:`average_probabilities`) and the ensemble is trained as
    one model on that average. Attention and LSTMs are shared (the paper feeds the *same*
    features to both blocks). Every other argument as :class:`AVE`.
    """
    return AVE(
        visual_channels=visual_channels,
        audio_channels=audio_channels,
        num_classes=num_classes,
        fusion="dmrn",
        members=members,
        attention_channels=attention_channels,
        attention_hidden=attention_hidden,
        lstm_hidden=lstm_hidden,
        dmrn_blocks=dmrn_blocks,
        audio_pool=audio_pool,
        temporal_pool=temporal_pool,
    )
