"""EZ-VSL: Localizing Visual Sounds the Easy Way, applied frame by frame.

Shentong Mo, Pedro Morgado. ECCV 2022. A visual map and an audio vector are projected to a
joint space; the localisation map is their cosine similarity at every position; training is
self-supervised with the cross-modal multiple-instance contrastive loss
(:func:`avloc.models.contrastive.ezvsl_loss`): an audio vector must match at least one position
of its own frame's map (max over positions) and no position of the other frames of the batch.
"""

from __future__ import annotations

from typing import Literal
import torch

from avloc.models._registry import register_model
from avloc.models.contract import LocalizationModel
from avloc.models.blocks import POOLS, Projection, check_choice, check_features, spatial_pool
from avloc.models.contrastive import (
    check_self_supervision,
    check_temperature,
    cosine_map,
    ezvsl_loss,
)
from avloc.types import AVOutput


@register_model("ezvsl")
class EZVSL(LocalizationModel):
    """EZ-VSL on feature maps, one (frame, audio) pair per step.

    ``forward(visual (B, T, Cv, h, w), audio (B, T, Ca, m, n)) -> AVOutput`` with
    ``heatmap (B, T, h, w)`` = cos(audio vector of step t, visual map of step t at (i, j)),
    ``logits = video_logits = None`` and ``embeddings``: ``"audio"`` the projected audio vectors
    ``(B, T, C)``, ``"visual"`` the projected visual maps ``(B, T, C, h, w)`` (not normalised:
    the cosine normalises).

    Choices where the paper is vague or where avloc differs (defaults in brackets):

    - Frame level: EZ-VSL pairs one frame with the audio of the whole clip; here every step
      pairs its frame with its own audio segment (0.25 s at 4 steps per second), so the map can
      follow a sound that changes within the clip. All B*T (sample, step) pairs of the batch
      form one contrastive batch: every other step is a negative, those of the same clip too
      (which EZ-VSL, one frame per clip, never meets).
    - Projections (authors' code): visual map -> ``projection_layers`` [1] 1x1 convolution to
      ``channels`` C [512]; audio map -> global ``pool`` ["max", the authors' AdaptiveMaxPool;
      or "mean"] -> the same kind of projection, i.e. a linear layer. ``norm`` [False]: BatchNorm
      after each projection layer (``blocks.Projection``), which the authors do not use.
    - Loss: InfoNCE over cosine similarities divided by ``temperature`` [0.03], max over
      positions for every bag, audio -> visual + visual -> audio (summed, the authors' code).
    - Heat map: the plain cosine similarity in [-1, 1] (the authors divide it by the temperature,
      which the evaluation's min-max normalisation cancels). The object-guided refinement of
      the paper (EZ-VSL + OGL, mixing in a map of visual objectness) is not part of this model.
    - No classifier: ``num_classes`` is accepted (the model contract) and unused;
      ``supervisions = ("self",)``.
    """

    paper = 'Mo, Morgado. "Localizing Visual Sounds the Easy Way", ECCV 2022'
    supervisions: tuple[str, ...] = ("self",)
    stepwise = True  # each step's map and embeddings from that step's features alone

    def __init__(
        self,
        *,
        visual_channels: int,
        audio_channels: int,
        num_classes: int | None = None,
        channels: int = 512,
        projection_layers: int = 1,
        norm: bool = False,
        pool: Literal[POOLS] = "max",
        temperature: float = 0.03,
    ) -> None:
        super().__init__()
        check_choice("pool", pool, POOLS)
        check_temperature(temperature)
        self.visual_channels = visual_channels
        self.audio_channels = audio_channels
        self.pool = pool
        self.temperature = temperature
        self.visual_projection = Projection(visual_channels, channels, layers=projection_layers, norm=norm)
        self.audio_projection = Projection(audio_channels, channels, layers=projection_layers, norm=norm)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> AVOutput:
        check_features("EZ-VSL", visual, audio, self.visual_channels, self.audio_channels)
        b, t = visual.shape[:2]
        visual = self.visual_projection(visual.flatten(0, 1)).unflatten(0, (b, t))  # (B*T, Cv, h, w) -> (B, T, C, h, w)
        audio = self.audio_vectors(audio)  # (B, T, C)
        heatmap = cosine_map(audio, visual)  # (B, T, h, w)
        return AVOutput(heatmap=heatmap, embeddings={"audio": audio, "visual": visual})

    def audio_vectors(self, audio: torch.Tensor) -> torch.Tensor:
        """Pool, then project, each step's audio map: ``(B, T, Ca, m, n) -> (B, T, C)``."""
        pooled = spatial_pool(audio.flatten(0, 1), self.pool)  # (B*T, Ca, m, n) -> (B*T, Ca)
        projected = self.audio_projection(pooled[:, :, None, None])  # (B*T, Ca, 1, 1) -> (B*T, C, 1, 1)
        return projected.view(*audio.shape[:2], -1)  # (B*T, C, 1, 1) -> (B, T, C)

    def loss(self, output: AVOutput, batch: dict, supervision: str) -> torch.Tensor:
        """The MIL contrastive loss over the B*T (sample, step) pairs; ``batch`` is not read."""
        check_self_supervision("ezvsl", supervision)
        audio = output.embeddings["audio"].flatten(0, 1)  # (B, T, C) -> (B*T, C)
        visual = output.embeddings["visual"].flatten(0, 1)  # (B, T, C, h, w) -> (B*T, C, h, w)
        return ezvsl_loss(audio, visual, self.temperature)
