"""AVDLN: the audio-visual distance learning network for cross-modality localisation.

Yapeng Tian, Jing Shi, Bochen Li, Zhiyao Duan, Chenliang Xu. "Audio-Visual Event Localization in
Unconstrained Videos", ECCV 2018, section 5: two two-layer FC networks embed each step's visual
and audio features into one space, the distance of a pair is the Euclidean distance of its
embeddings (eq. 9), and the network is trained with the contrastive loss of Hadsell et al.
(eq. 10, margin 2.0). A2V / V2A localisation with the learned distance (eq. 8) is in
:mod:`avloc.cross_modal`.
"""

from __future__ import annotations

from typing import Literal
import torch

from avloc.models._registry import register_model
from avloc.models.contract import LocalizationModel
from avloc.models.blocks import (MLP, POOLS, check_choice, check_features, check_positive, euclidean_distance,
                                 spatial_pool)
from avloc.types import AVOutput, AvlocError

SUPERVISIONS = ("segment", "self")


def contrastive_loss(distance: torch.Tensor, target: torch.Tensor, margin: float = 2.0) -> torch.Tensor:
    """Eq. 10, averaged over pairs: ``y D^2 + (1 - y) max(0, margin - D)^2``.

    Args:
        distance: ``(N,)`` distances D of N pairs.
        target: ``(N,)`` 1 for a synchronized pair, 0 for a mismatched one.
        margin: th; mismatched pairs farther apart than it cost nothing.
    """
    target = target.to(distance.dtype)
    return (target * distance.square() + (1 - target) * (margin - distance).clamp_min(0).square()).mean()


def contrastive_pairs(
    audio: torch.Tensor, visual: torch.Tensor, synchronized: torch.Tensor, batch_negatives: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs of one batch: ``(distance (N,), target (N,))``.

    Every step gives its same-step pair ``(audio[b, t], visual[b, t])`` with target
    ``synchronized[b, t]``; with ``batch_negatives`` and B > 1 every step also gives the
    mismatched pair ``(audio[b, t], visual[b - 1, t])`` (the batch rolled by one clip), target 0.

    Args:
        audio: ``(B, T, D)`` audio embeddings.
        visual: ``(B, T, D)`` visual embeddings.
        synchronized: ``(B, T)`` bool, whether a step's own audio and visual form a positive pair.
        batch_negatives: add the mismatched pairs of other clips.
    """
    distance = euclidean_distance(audio, visual).flatten()  # (B, T) -> (B*T,)
    target = synchronized.flatten().float()  # (B, T) -> (B*T,)
    if batch_negatives and len(audio) > 1:
        mismatched = euclidean_distance(audio, visual.roll(1, dims=0)).flatten()  # (B, T) -> (B*T,)
        distance = torch.cat((distance, mismatched))
        target = torch.cat((target, torch.zeros_like(mismatched)))
    return distance, target


@register_model("avdln")
class AVDLN(LocalizationModel):
    """Audio-visual distance learning network on feature maps.

    ``forward(visual (B, T, Cv, h, w), audio (B, T, Ca, m, n)) -> AVOutput`` with ``heatmap
    (B, T, h, w)`` = ``exp(-(D(i, j) / margin)^2)`` in (0, 1], D(i, j) the distance between the
    step's audio embedding and the embedding of visual position (i, j); ``logits`` and
    ``video_logits`` None; ``embeddings``: ``"audio"`` R^a and ``"visual"`` R^v ``(B, T, D)``,
    the common space :func:`avloc.cross_modal.cross_modal_accuracy` reads.

    Choices where the paper is vague (defaults in brackets):

    - Inputs per step: global ``pool`` ["mean"] of each map (the authors' code reads pooled
      VGG-19 vectors and 128-D VGGish embeddings), or "max".
    - Embedding networks: :class:`avloc.models.blocks.MLP` (Linear -> ReLU -> Linear), ``hidden``
      [128] then ``embedding`` [64] wide, one per modality (the authors' Keras code: the same
      sizes with LeakyReLU(0.3)).
    - Distance: Euclidean (eq. 9), with 1e-12 under the square root.
    - Loss: eq. 10 with ``margin`` [2.0], the mean over all pairs of the batch.
    - Pairs (the paper: y = 1 when V_i and A_i are synchronized). Positives: the same-step pairs
      of event steps. Negatives: under "segment" supervision [default], the same-step pairs of
      background steps (label ``num_classes - 1``; the authors' code, whose labels mark which
      segments hold the event); with ``batch_negatives`` [True], also every step's audio with the
      same step of the previous clip in the batch (needs B > 1; the clips of a batch are assumed
      to be different videos, even of one class). Under "self" supervision (no labels) every
      same-step pair is positive and the batch pairs are the only negatives, so it needs
      ``batch_negatives`` and B > 1 to learn anything (a batch of one clip, e.g. validation
      of whole clips, scores the positives alone).
    - Heat map: the visual network applied at every position of the map (trained on pooled
      vectors, so a reading of the embedding, not a trained map); the Gaussian of the distance
      keeps it in (0, 1] on an absolute scale (1 = the audio's own embedding, exp(-1) = the margin).
    """

    paper = 'Tian, Shi, Li, Duan, Xu. "Audio-Visual Event Localization in Unconstrained Videos", ECCV 2018 (section 5)'
    supervisions: tuple[str, ...] = SUPERVISIONS
    stepwise = True  # each step's map and embeddings from that step's features alone
    common_embedding = True  # embeddings audio / visual: (B, T, D) in the space of eq. 9

    def __init__(
        self,
        *,
        visual_channels: int,
        audio_channels: int,
        num_classes: int,
        hidden: int = 128,
        embedding: int = 64,
        margin: float = 2.0,
        pool: Literal[POOLS] = "mean",
        batch_negatives: bool = True,
    ) -> None:
        super().__init__()
        check_choice("pool", pool, POOLS)
        check_positive(visual_channels=visual_channels, audio_channels=audio_channels, num_classes=num_classes,
                       hidden=hidden, embedding=embedding)
        if not margin > 0:
            raise AvlocError(f"margin must be > 0, got {margin}")
        self.visual_channels = visual_channels
        self.audio_channels = audio_channels
        self.num_classes = num_classes
        self.margin = margin
        self.pool = pool
        self.batch_negatives = batch_negatives
        self.visual_embedding = MLP(visual_channels, hidden, embedding)
        self.audio_embedding = MLP(audio_channels, hidden, embedding)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> AVOutput:
        check_features(type(self).__name__, visual, audio, self.visual_channels, self.audio_channels)
        audio_embedding = self.audio_embedding(spatial_pool(audio, self.pool))  # (B, T, Ca) -> (B, T, D)
        visual_embedding = self.visual_embedding(spatial_pool(visual, self.pool))  # (B, T, Cv) -> (B, T, D)
        positions = visual.movedim(2, -1)  # (B, T, Cv, h, w) -> (B, T, h, w, Cv)
        cells = audio_embedding[:, :, None, None]  # (B, T, D) -> (B, T, 1, 1, D)
        distance = euclidean_distance(self.visual_embedding(positions), cells)  # (B, T, h, w, D) -> (B, T, h, w)
        return AVOutput(
            heatmap=torch.exp(-(distance / self.margin).square()),
            embeddings={"audio": audio_embedding, "visual": visual_embedding},
        )

    def loss(self, output: AVOutput, batch: dict, supervision: str) -> torch.Tensor:
        """The contrastive loss (eq. 10) of the batch's pairs (see the class docstring)."""
        check_choice("supervision", supervision, SUPERVISIONS)
        audio, visual = output.embeddings["audio"], output.embeddings["visual"]
        if supervision == "segment":
            synchronized = batch["step_labels"] != self.num_classes - 1  # (B, T): event steps
        else:
            synchronized = torch.ones(audio.shape[:2], dtype=torch.bool, device=audio.device)  # (B, T)
        distance, target = contrastive_pairs(audio, visual, synchronized, self.batch_negatives)
        return contrastive_loss(distance, target, self.margin)
