"""AVFB + SWAB: "See the Sound, Hear the Pixels".

Janani Ramaswamy, Sukhendu Das. WACV 2020. Section 3 of the paper, equation by equation: the
Audio Visual Fusion Block (3.2: LSTM-based fusion, eq. 1, and MFB attention over positions,
eqs. 3-7), the temporal LSTMs (3.3, eq. 8), the Segment-Wise Attention Block (3.4, eqs. 9-11),
the similarity aggregation (3.5, eq. 12), the classifier for supervised and weakly-supervised
event localisation (3.6) and the Audio Visual Triplet Gram Matrix Loss for unsupervised sound
source localisation (3.7, eqs. 13-16).
"""

from __future__ import annotations

from typing import Literal
import math

import torch
import torch.nn.functional as F
from torch import nn

from avloc.losses import classification_loss
from avloc.models._registry import register_model
from avloc.models.contract import LocalizationModel
from avloc.models.blocks import (
    MLP,
    POOLS,
    SequenceLSTM,
    check_choice,
    check_features,
    check_positive,
    spatial_pool,
)
from avloc.types import AVOutput, AvlocError

SEGMENT_POOLS = ("mean+max", "mean", "max")  # SWAB's global pooling over segments (Table 3)
POWER_EPS = 1e-12  # inside eq. 4's square root: a finite gradient at 0, values off by < 1e-6


def signed_sqrt(z: torch.Tensor) -> torch.Tensor:
    """Eq. 4's power normalisation ``sign(z) |z|^0.5``, element-wise.

    ``POWER_EPS`` is added under the root so that the gradient stays finite where ``z`` is 0
    (exact zeros are common: a position whose ReLU'd features are all 0); the value at 0 is
    exactly 0 and elsewhere it differs from ``sign(z) |z|^0.5`` by less than 1e-6.
    """
    return z.sign() * (z.abs() + POWER_EPS).sqrt()


class MFBAttention(nn.Module):
    """Multi-modal factorised bilinear attention over positions (eqs. 3-6, MFB of Yu et al. 2017).

    ``forward(visual (..., S, Cv), audio (..., Ca)) -> (MF (..., Cv), lambda (..., S))``: at every
    position i, ``z_i = normalise(signed_sqrt(SumPool_k(U^T F^v_i o V^T F^a)))`` (eqs. 3-4,
    ``o`` the Hadamard product, the sum pooling adding non-overlapping windows of k consecutive
    entries of the k*o vector), ``lambda = softmax_i(W_z z_i)`` (eq. 5) and
    ``MF = sum_i lambda_i F^v_i`` (eq. 6).

    Args:
        visual_channels: d_v.
        audio_channels: d_a.
        factor: k (the paper's q), the rank of the factorisation [5, MFB's default].
        out_features: o (the paper's p), the size of the fused vector z [1000, MFB's default].

    U, V and W_z have no bias (eqs. 3 and 5); eq. 5's b_z is dropped because one scalar added
    to every position cancels in the softmax over positions (it would never get a gradient).
    The L2 normalisation of eq. 4 is per position, over the o entries (MFB's co-attention).
    """

    def __init__(self, visual_channels: int, audio_channels: int, factor: int = 5, out_features: int = 1000) -> None:
        super().__init__()
        self.factor = factor
        self.out_features = out_features
        self.visual = nn.Linear(visual_channels, factor * out_features, bias=False)  # U^T
        self.audio = nn.Linear(audio_channels, factor * out_features, bias=False)  # V^T
        self.score = nn.Linear(out_features, 1, bias=False)  # W_z

    def fuse(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Eqs. 3-4: ``visual (..., S, Cv), audio (..., Ca) -> z (..., S, o)``, unit-norm per position."""
        joint = self.visual(visual) * self.audio(audio).unsqueeze(-2)  # (..., S, k*o) * (..., 1, k*o)
        pooled = joint.unflatten(-1, (self.out_features, self.factor)).sum(dim=-1)  # (..., S, o, k) -> (..., S, o)
        return F.normalize(signed_sqrt(pooled), dim=-1)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.score(self.fuse(visual, audio)).squeeze(-1).softmax(dim=-1)  # (..., S, 1) -> (..., S)
        attended = torch.einsum("...s,...sc->...c", weights, visual)  # (..., S), (..., S, Cv) -> (..., Cv)
        return attended, weights


class AVFB(nn.Module):
    """Audio Visual Fusion Block (eqs. 1-7): audio-assisted visual features and the spatial attention.

    ``forward(visual (B, T, Cv, h, w), audio (B, T, Ca)) -> (IF (B, T, Cv), lambda (B, T, h, w))``
    with ``IF_t = LF_t + MF_t`` (eq. 7): LF the LSTM-based fusion (eq. 1), MF the MFB-attended
    visual vector (eq. 6).

    LSTM-based fusion: ``l^v_t`` = global average pooling of ``F^v_t``, so the common embedding
    size d_e is d_v (the paper converts ``F^v_t`` to ``l^v_t in R^{d_e}`` by pooling alone);
    ``l^a_t`` = "dense layers" on ``F^a_t``: Linear(d_a, d_v) -> ReLU -> Linear(d_v, d_v). The
    LSTM reads ``[l^v_t + l^a_t, l^a_t]`` forwards only (eq. 1 carries ``h'_{t-1}``) and its
    hidden size is d_v, so that eq. 7 adds vectors of the same size.
    """

    def __init__(self, visual_channels: int, audio_channels: int, factor: int = 5, out_features: int = 1000) -> None:
        super().__init__()
        self.audio_embedding = MLP(audio_channels, visual_channels, visual_channels)
        self.fusion = SequenceLSTM(2 * visual_channels, visual_channels, bidirectional=False)
        self.mfb = MFBAttention(visual_channels, audio_channels, factor, out_features)

    def lstm_fusion(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Eq. 1: ``visual (B, T, Cv, h, w), audio (B, T, Ca) -> LF (B, T, Cv)``."""
        l_visual = spatial_pool(visual, "mean")  # (B, T, Cv, h, w) -> (B, T, Cv)
        l_audio = self.audio_embedding(audio)  # (B, T, Ca) -> (B, T, Cv)
        return self.fusion(torch.cat([l_visual + l_audio, l_audio], dim=-1))  # (B, T, 2*Cv) -> (B, T, Cv)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = visual.flatten(-2).transpose(-1, -2)  # (B, T, Cv, h, w) -> (B, T, Cv, S) -> (B, T, S, Cv)
        attended, weights = self.mfb(positions, audio)  # (B, T, Cv), (B, T, S)
        heatmap = weights.unflatten(-1, visual.shape[-2:])  # (B, T, S) -> (B, T, h, w)
        return self.lstm_fusion(visual, audio) + attended, heatmap


class SWAB(nn.Module):
    """Segment-Wise Attention Block (eqs. 9-11): ``h (B, T, H) -> s (B, T, H)``.

    ``g_ave = relu(W_g R_ave + b_g)``, ``g_max = relu(W_g R_max + b_g)`` with R the mean / max of
    ``h_t`` over the T segments and W_g shared by both (CBAM's shared MLP); ``g~ = g_ave + g_max``;
    ``P_t = relu(W_g' h_t + b_g') * g~``; ``alpha_t = softmax_t(W_alpha P_t)``; ``s_t = alpha_t h_t``.

    Args:
        features: H, the size of ``h_t``; g, g' and P are H wide too (the paper leaves it open).
        pool: "mean+max" [eqs. 9], "mean" (``g~ = g_ave``) or "max" (``g~ = g_max``): Table 3.
        rescale: multiply alpha by T [True], so that the weights average 1 whatever T. At a fixed
            T (the paper's T = 10) this is a constant the next linear layer absorbs and the Gram
            loss ignores; here training windows have T = 4 and evaluation clips T = 40, and
            without it ``s_t`` would shrink tenfold between the two. False = eq. 10-11 exactly.

    alpha_t is one scalar per segment, a softmax over the T segments; eq. 10's b_alpha is dropped
    because a scalar added to every segment cancels in that softmax.
    """

    def __init__(self, features: int, pool: str = "mean+max", rescale: bool = True) -> None:
        super().__init__()
        check_choice("segment_pool", pool, SEGMENT_POOLS)
        self.pools = pool.split("+")
        self.rescale = rescale
        self.glob = nn.Linear(features, features)  # W_g, b_g
        self.local = nn.Linear(features, features)  # W_g', b_g'
        self.score = nn.Linear(features, 1, bias=False)  # W_alpha

    def global_context(self, h: torch.Tensor) -> torch.Tensor:
        """``g~``: ``(B, T, H) -> (B, H)``, the pooled segments through the shared layer."""
        pooled = {"mean": h.mean(dim=1), "max": h.amax(dim=1)}  # (B, T, H) -> (B, H)
        return sum(F.relu(self.glob(pooled[kind])) for kind in self.pools)

    def segment_weights(self, h: torch.Tensor) -> torch.Tensor:
        """Eqs. 9-10: ``h (B, T, H) -> alpha (B, T)`` (times T when ``rescale``)."""
        attention = F.relu(self.local(h)) * self.global_context(h).unsqueeze(1)  # (B, T, H) * (B, 1, H)
        alpha = self.score(attention).squeeze(-1).softmax(dim=1)  # (B, T, 1) -> (B, T)
        return alpha * h.shape[1] if self.rescale else alpha

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.segment_weights(h).unsqueeze(-1) * h  # (B, T, 1) * (B, T, H), eq. 11


def segment_similarity(
    h_audio: torch.Tensor, h_visual: torch.Tensor, s_audio: torch.Tensor, s_visual: torch.Tensor
) -> torch.Tensor:
    """Eq. 12: ``sim_t = (h^a_t - h^v_t) o (s^a_t - s^v_t)``, all ``(B, T, H)``."""
    return (h_audio - h_visual) * (s_audio - s_visual)


def mil_mean(logits: torch.Tensor) -> torch.Tensor:
    """MIL pooling of section 3.6: the video prediction is the average of the segment predictions.

    ``logits (B, T, K) -> (B, K)``: the predictions are the segments' softmax distributions, so
    the video logits are ``log(mean_t softmax(logits_t))``; their softmax is that average and
    cross-entropy on them is ``-log mean_t p_t(y)``.
    """
    return torch.logsumexp(logits.log_softmax(dim=-1), dim=1) - math.log(logits.shape[1])  # (B, T, K) -> (B, K)


def normalised_gram(x: torch.Tensor) -> torch.Tensor:
    """Eqs. 13-14: Gram matrices over steps divided by their Frobenius norm: ``(B, T, D) -> (B, T, T)``."""
    gram = x @ x.transpose(-1, -2)  # (B, T, D) @ (B, D, T) -> (B, T, T)
    return F.normalize(gram.flatten(-2), dim=-1).view_as(gram)  # (B, T*T) -> (B, T, T)


def avtgml_loss(visual: torch.Tensor, audio: torch.Tensor, margin: float = 0.7) -> torch.Tensor:
    """Audio Visual Triplet Gram Matrix Loss (eqs. 13-16).

    One triplet per clip i of the batch: anchor ``Z_i`` = its visual SWAB outputs, positive
    ``Y+_i`` = its own audio SWAB outputs, negative ``Y-_i`` = the audio SWAB outputs of the next
    clip of the batch, ``(i + 1) mod B`` ("an audio from a random video": batches are shuffled).
    The audio branch (eq. 8 LSTM + audio SWAB) never sees the frames, so these are exactly the
    features the paper computes for a negative audio. ``d_pos`` / ``d_neg`` are Frobenius inner
    products of the normalised T x T Gram matrices (eq. 15, a cosine similarity between them);
    the loss is ``mean_i max(d_neg_i - d_pos_i + margin, 0)`` (eq. 16).

    Args:
        visual: ``(B, T, D)``, ``s^v_t``.
        audio: ``(B, T, D)``, ``s^a_t``.
        margin: gamma [0.7].

    Raises:
        AvlocError: fewer than 2 clips (no negative) or fewer than 2 steps (a 1 x 1 normalised
            Gram matrix is always 1: the loss would be the constant margin).
    """
    b, t = visual.shape[:2]
    if b < 2:
        raise AvlocError(f"AVTGML needs at least 2 clips in a batch (negatives: the other clips' audio), got {b}")
    if t < 2:
        raise AvlocError(f"AVTGML needs at least 2 steps per clip (Gram matrices over steps), got {t}")
    anchor, positive = normalised_gram(visual), normalised_gram(audio)
    negative = positive.roll(-1, dims=0)  # row i <- clip (i + 1) mod B
    d_pos = (anchor * positive).sum(dim=(-2, -1))  # (B, T, T) -> (B,)
    d_neg = (anchor * negative).sum(dim=(-2, -1))  # (B, T, T) -> (B,)
    return F.relu(d_neg - d_pos + margin).mean()


@register_model("avfb")
class AVFBNet(LocalizationModel):
    """AVFB + SWAB on feature maps: supervised, weakly-supervised and unsupervised localisation.

    ``forward(visual (B, T, Cv, h, w), audio (B, T, Ca, m, n)) -> AVOutput`` with
    ``heatmap (B, T, h, w)`` = AVFB's spatial attention lambda_t (eq. 5, a softmax over
    positions, so each map sums to 1), ``logits (B, T, K)``, ``video_logits (B, K)`` and
    ``embeddings``: ``"visual_segments"`` s^v, ``"audio_segments"`` s^a (the AVTGML inputs) and
    ``"similarity"`` sim (eq. 12), all ``(B, T, H)``.

    ``supervisions``: "segment" (supervised, per-step cross-entropy; the default), "video"
    (weakly supervised: cross-entropy of the MIL-pooled video prediction) and "self" (AVTGML,
    no labels). One model serves all three; the supervision only picks the loss.

    Choices where the paper is vague (defaults in brackets):

    - The heat map is lambda_t of eq. 5, the "attention over the spatial regions" AVFB computes
      and the only map over positions in the model (what the paper's attention maps show):
      SWAB, eq. 12 and the classifier work on vectors. It depends on step t alone.
    - Audio: the paper's ``F^a_t`` is a vector; the (m, n) audio map is pooled first with
      ``audio_pool`` ["mean", global average pooling as for ``l^v_t``] or "max".
    - AVFB (see :class:`AVFB`, :class:`MFBAttention`): d_e = d_v = ``visual_channels``; the
      "dense layers" are Linear -> ReLU -> Linear; the fusion LSTM is forward-only with hidden
      size d_v; MFB ``mfb_factor`` k [5] and ``mfb_out`` o [1000] (MFB's defaults: the paper
      gives none), no biases in U, V, W_z, signed square root with a 1e-12 guard, L2 norm per
      position; no dropout.
    - Eq. 8: two forward-only LSTMs (``h_{t-1}`` only), hidden size ``hidden`` [128, the AVE
      baseline's], reading IF^v_t and the pooled F^a_t. Both are ``hidden`` wide (eq. 12
      subtracts h^v from h^a).
    - SWAB (see :class:`SWAB`): one per modality; ``segment_pool`` ["mean+max"] / "mean" / "max";
      global pooling over the T segments of the clip (so s_t reads the whole clip);
      ``rescale_segments`` [True]: alpha times T.
    - Aggregation (3.5): ``[sim_t, h^v_t, h^a_t, s^v_t, s^a_t]`` (5H) -> "a series of fully
      connected layers": Linear(5H, H) -> ReLU -> Linear(H, K); K = ``num_classes``, background
      included (the caller's class order), shared by all steps.
    - Weak supervision: video logits = log of the mean over steps of the step softmax
      distributions (MIL average pooling, section 3.6; AVE's code max-pools, the paper averages).
    - "self": :func:`avtgml_loss`, ``margin`` [0.7]; the negative of clip i is the audio of
      clip (i + 1) mod B of the batch (a window of the same clip twice in one batch would make
      a negative a positive); needs B >= 2 and T >= 2. The classifier is not trained.
    """

    paper = 'Ramaswamy, Das. "See the Sound, Hear the Pixels", WACV 2020'
    supervisions: tuple[str, ...] = ("segment", "video", "self")

    def __init__(
        self,
        *,
        visual_channels: int,
        audio_channels: int,
        num_classes: int,
        hidden: int = 128,
        mfb_factor: int = 5,
        mfb_out: int = 1000,
        segment_pool: Literal[SEGMENT_POOLS] = "mean+max",
        audio_pool: Literal[POOLS] = "mean",
        rescale_segments: bool = True,
        margin: float = 0.7,
    ) -> None:
        super().__init__()
        check_positive(visual_channels=visual_channels, audio_channels=audio_channels, num_classes=num_classes,
                       hidden=hidden, mfb_factor=mfb_factor, mfb_out=mfb_out)
        check_choice("segment_pool", segment_pool, SEGMENT_POOLS)
        check_choice("audio_pool", audio_pool, POOLS)
        if not margin >= 0:
            raise AvlocError(f"margin must be >= 0, got {margin}")
        self.visual_channels = visual_channels
        self.audio_channels = audio_channels
        self.num_classes = num_classes
        self.audio_pool = audio_pool
        self.margin = margin
        self.avfb = AVFB(visual_channels, audio_channels, mfb_factor, mfb_out)
        self.visual_lstm = SequenceLSTM(visual_channels, hidden, bidirectional=False)
        self.audio_lstm = SequenceLSTM(audio_channels, hidden, bidirectional=False)
        self.visual_swab = SWAB(hidden, segment_pool, rescale_segments)
        self.audio_swab = SWAB(hidden, segment_pool, rescale_segments)
        self.classifier = MLP(5 * hidden, hidden, num_classes)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> AVOutput:
        check_features("AVFB", visual, audio, self.visual_channels, self.audio_channels)
        audio = spatial_pool(audio, self.audio_pool)  # (B, T, Ca, m, n) -> (B, T, Ca)
        fused, heatmap = self.avfb(visual, audio)  # (B, T, Cv), (B, T, h, w)
        h_visual, h_audio = self.visual_lstm(fused), self.audio_lstm(audio)  # (B, T, H) each
        s_visual, s_audio = self.visual_swab(h_visual), self.audio_swab(h_audio)  # (B, T, H) each
        similarity = segment_similarity(h_audio, h_visual, s_audio, s_visual)
        aggregated = [similarity, h_visual, h_audio, s_visual, s_audio]
        logits = self.classifier(torch.cat(aggregated, dim=-1))  # 5 x (B, T, H) -> (B, T, 5H) -> (B, T, K)
        embeddings = {"visual_segments": s_visual, "audio_segments": s_audio, "similarity": similarity}
        return AVOutput(heatmap=heatmap, logits=logits, video_logits=mil_mean(logits), embeddings=embeddings)

    def loss(self, output: AVOutput, batch: dict, supervision: str) -> torch.Tensor:
        """Cross-entropy for "segment" / "video" (:func:`avloc.losses.classification_loss`), AVTGML for "self"."""
        check_choice("supervision", supervision, self.supervisions)
        if supervision == "self":
            return avtgml_loss(output.embeddings["visual_segments"], output.embeddings["audio_segments"], self.margin)
        return classification_loss(output, batch, supervision)

