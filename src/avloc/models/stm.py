"""STM: Space-Time Memory Network for Sounding Object Localization in Videos.

Sizhe Li, Yapeng Tian, Chenliang Xu. BMVC 2021. Section 3 of the paper, equation by equation:
projections to a joint space (3.1, 4.2), the spatio-temporal memory layer (3.2, Algorithm 1, in
:mod:`avloc.models.memory`), the localisation map (3.3) and the classifier (3.4).
"""

from __future__ import annotations

from typing import Literal
import os

import torch

from avloc.models._registry import register_model
from avloc.models.contract import LocalizationModel
from avloc.models.blocks import (
    MLP,
    POOLS,
    SIMILARITIES,
    Projection,
    affinity_propagation,
    check_choice,
    check_features,
    check_positive,
    cross_modal_attention,
    spatial_pool,
)
from avloc.models.encoders import Encoder, create_encoder
from avloc.models.memory import VARIANTS, MemoryBank, MemoryOutput, SpaceTimeMemory
from avloc.types import AVOutput, AvlocError, FeatureShapeError

TEMPORAL_POOLS = ("max", "mean")


@register_model("stm")
class STM(LocalizationModel):
    """Space-Time Memory Network on feature maps (optionally with its encoders).

    ``forward(visual (B, T, Cv, h, w), audio (B, T, Ca, m, n)) -> AVOutput`` with
    ``heatmap (B, T, h, w)`` (softmax over positions), ``logits (B, T, K)``,
    ``video_logits (B, K)`` and ``embeddings``: ``"audio"`` phi(hat x_a) ``(B, T, C)``,
    ``"audio_visual"`` sum_ij hat x_av ``(B, T, C)``, ``"alpha"`` the line-4 map ``(B, T, h, w)``.

    On features: give ``visual_channels`` and ``audio_channels`` (the encoders' C). End to end:
    give ``visual_encoder`` / ``audio_encoder`` names (and ``visual_weights`` / ``audio_weights``,
    see :func:`avloc.models.encoders.create_encoder`); the channels then default to theirs.

    Choices where the paper is vague (defaults in brackets):

    - Projections: ``projection_layers`` [2] 1x1 convolutions of width C [256]; BatchNorm after
      each [norm=True, the authors' code], ReLU between, none after the last (signed features).
    - phi: global ``pool`` over positions, ["max"] as the authors' code, or "mean"; the same phi
      in the spatial attention, the temporal attention and the classifier's audio vector.
    - Spatial attention f (lines 4 and 3.3): ``spatial_similarity`` ["cosine", the authors'
      released training script, which runs with ``--normalize``: audio and visual vectors
      L2-normalised] or "dot" (eq. 1), divided by ``spatial_temperature`` [None = the
      similarity's own: 1.0 for cosine (the authors'), sqrt(C) for dot (the scaling eq. 2
      uses); 1.0 with dot is eq. 1 exactly]. Why cosine: the dot product of the BatchNorm'd
      C = 256 features is unbounded, and weak training sharpens its softmax onto one cell (mean
      map peak 0.995 with dot / 1.0 and 0.51 with dot / sqrt(C) after training on the synthetic
      benchmark); a map of one cell has no extent. Measured by a reviewer on a held-out
      benchmark, same frozen default encoders and features, ``--variant c+u --audio-dropout 0.5
      --lr 1e-3 --epochs 40``: single-source cIoU@0.5 0.230 and pointing 0.49 with cosine / 1.0,
      against 0.008 and 0.25 with dot / sqrt(C). Cosine logits lie in [-1/tau, 1/tau], so the map
      can never collapse onto one cell; the price is a soft attended sum: on the toy task of
      tests/test_stm.py (one sounding cell of 16) cosine / 1.0 still puts the map's argmax on it
      (95% after 300 steps) but peaks at 0.12, and the class read from sum_ij hat x_av drops to
      about 52% against 100% with dot / sqrt(C). (The default was dot / sqrt(C) before, and cosine's
      temperature 0.1; checkpoints of that time keep theirs, see
      :meth:`avloc.config.TrainConfig.from_dict`.)
    - ``audio_dropout`` p [0.5; the paper has none, 0.0]: in training, phi(hat x_a) in the classifier input
      O^t is zeroed for a whole sample with probability p; at inference it is fed scaled by
      (1 - p), its expectation in training (dropout without the 1 / (1 - p) rescaling, which
      p = 1 would make infinite). So p = 1 means the audio vector never reaches the classifier,
      in training or at inference: the audio half of its first layer gets no gradient and is
      never read. (Inference used to feed the audio vector unscaled, so with p = 1 that
      never-trained half, still at its random initialisation, was added to every logit.) With
      the audio vector always present the class is predictable from audio alone and nothing
      forces the attention onto the sounding object (see docs/results.md); dropping it makes
      sum_ij hat x_av, i.e. the region the audio selects, carry the class. Why 0.5: chosen on
      the validation split of the composite benchmark (bundled ``stamps`` features, lr 1e-3):
      all-frame cIoU@0.5 0.260-0.270 with p = 0.5 against 0.251 with p = 1.0 (segment accuracy
      0.28), and 0.236 with p = 0 (the same recipe on an equivalent pretraining run's features;
      docs/results.md, "Visual pretraining for localisation").
    - ``affinity_temperature`` tau [0.1; ours, not in the paper; None: the paper's map]: the
      map of 3.3 is spread by one step of affinity propagation over the encoder's own cells
      (:func:`avloc.models.blocks.affinity_propagation`: each cell takes the map's mass of the
      cells whose frozen features are most alike, softmax of their cosine similarity / tau), so a
      map that peaks on part of an object covers the object. It changes only the ``heatmap``
      output (not the classifier, not the loss), so it can be switched on or off for a trained
      model. Why: weakly trained, the map marks the most class-telling cells of an object, not
      its extent; the pretrained encoder's cells of one object are alike (its "delimiting gap").
      Chosen on the validation split of the composite benchmark, the three c+u runs of
      docs/results.md ("Map refinement"): one step beat two for every tau in {0.1, 0.2, 0.4};
      all-frame cIoU@0.5 0.268 unrefined, 0.309 / 0.307 / 0.303 / 0.296 with tau 0.05 / 0.07 /
      0.1 / 0.15 (mean of the runs), pointing 0.414 unrefined, 0.504 / 0.543 / 0.556 / 0.546.
      Rule: the best pointing among the tau within 0.01 of the best cIoU.
    - Temporal attention g: ``heads`` L [1], each of C/L dims scaled by sqrt(C/L)
      (``nn.MultiheadAttention``'s layout; the paper's sqrt(C) for L = 1); bias-free W_q, W_k;
      the values are the feature maps themselves; heads averaged (eq. 2).
    - Memory: ``memory_size`` K [3: a one-second sample of T = 4 steps sees all its past].
      ``causal`` [True]: steps t-K..t-1; False: t-K//2..t+K//2 (authors' code, reads the
      future). Steps outside the clip are masked, never wrapped around, so early steps have a
      shorter memory. The memory holds the layer's inputs x_a, x_v of the earlier steps and
      their line-4 cross-modal maps x_av (not the propagated line-5 maps), so a clip is one
      masked attention and a stream is the same computation with a bank of K steps. Through
      the stored x_av, a "c+u" output depends on up to 2K earlier steps.
    - ``variant``: ["c+u"] Algorithm 1; "u" skips line 5; "none" skips lines 2, 3, 5. The
      attention modules of skipped lines are not built.
    - Localisation map (3.3): "c+u": f(hat x_a, hat x_av) = softmax_ij(sim(hat x_av(i, j),
      phi(hat x_a))); "u" and "none" have no line 5, so their map is the line-4 alpha itself, as
      in the authors' code (f applied to x_av = alpha * x_v would apply alpha twice).
    - Classifier (3.4): O^t = [sum_ij hat x_av ; phi(hat x_a)] -> Linear(2C, C) -> ReLU ->
      Linear(C, K); K = ``num_classes``, background included (the caller's class order).
    - ``temporal_pool`` of the per-step logits into video logits: ["max"] (authors' code) or "mean".
    - Encoders (optional, end-to-end): ``train_visual`` [False] and ``train_audio`` [True], the
      authors' split: the pretrained visual network frozen, the audio network trained (from
      scratch when it has no weights). A frozen encoder gets no gradient and stays in eval mode
      (BatchNorm statistics fixed) even when the model trains.

    Note: in training mode BatchNorm mixes the statistics of all steps of the batch, so the
    causality of the memory holds exactly in eval mode (or with ``norm=False``).
    """

    paper = 'Li, Tian, Xu. "Space-Time Memory Network for Sounding Object Localization in Videos", BMVC 2021'

    def __init__(
        self,
        *,
        visual_channels: int | None = None,
        audio_channels: int | None = None,
        num_classes: int,
        channels: int = 256,
        variant: Literal[VARIANTS] = "c+u",
        memory_size: int = 3,
        heads: int = 1,
        causal: bool = True,
        norm: bool = True,
        projection_layers: int = 2,
        pool: Literal[POOLS] = "max",
        temporal_pool: Literal[TEMPORAL_POOLS] = "max",
        spatial_temperature: float | None = None,
        spatial_similarity: Literal[SIMILARITIES] = "cosine",
        audio_dropout: float = 0.5,
        affinity_temperature: float | None = 0.1,
        visual_encoder: str | None = None,
        audio_encoder: str | None = None,
        visual_weights: str | os.PathLike | None = None,
        audio_weights: str | os.PathLike | None = None,
        train_visual: bool = False,
        train_audio: bool = True,
    ) -> None:
        super().__init__()
        check_choice("pool", pool, POOLS)
        check_choice("temporal_pool", temporal_pool, TEMPORAL_POOLS)
        check_positive(num_classes=num_classes)
        visual = create_encoder(visual_encoder, visual_weights) if visual_encoder is not None else None
        audio = create_encoder(audio_encoder, audio_weights) if audio_encoder is not None else None
        visual_channels = visual_channels if visual_channels is not None else getattr(visual, "out_channels", None)
        audio_channels = audio_channels if audio_channels is not None else getattr(audio, "out_channels", None)
        if visual_channels is None or audio_channels is None:
            raise AvlocError("stm needs visual_channels and audio_channels (or visual_encoder and audio_encoder)")
        for encoder, expected, what in ((visual, visual_channels, "visual"), (audio, audio_channels, "audio")):
            if encoder is not None and encoder.out_channels != expected:
                raise AvlocError(f"{what}_channels={expected} but the {what} encoder gives {encoder.out_channels}")
        self.visual_channels = visual_channels
        self.audio_channels = audio_channels
        self.num_classes = num_classes
        self.pool = pool
        self.temporal_pool = temporal_pool
        self.train_visual = train_visual
        self.train_audio = train_audio
        self.visual_encoder = visual
        self.audio_encoder = audio
        for encoder in self._frozen_encoders():
            encoder.requires_grad_(False).eval()
        self.visual_projection = Projection(visual_channels, channels, layers=projection_layers, norm=norm)
        self.audio_projection = Projection(audio_channels, channels, layers=projection_layers, norm=norm)
        check_choice("spatial_similarity", spatial_similarity, SIMILARITIES)
        default_temperature = channels**0.5 if spatial_similarity == "dot" else 1.0
        self.spatial_temperature = default_temperature if spatial_temperature is None else spatial_temperature
        self.spatial_similarity = spatial_similarity
        if not 0.0 <= audio_dropout <= 1.0:
            raise AvlocError(f"audio_dropout must be in [0, 1], got {audio_dropout}")
        self.audio_dropout = audio_dropout
        if affinity_temperature is not None and not affinity_temperature > 0:
            raise AvlocError(f"affinity_temperature must be > 0 (or None: no refinement), got {affinity_temperature}")
        self.affinity_temperature = affinity_temperature
        self.memory = SpaceTimeMemory(
            channels, variant=variant, memory_size=memory_size, heads=heads, causal=causal, pool=pool,
            spatial_temperature=self.spatial_temperature, spatial_similarity=spatial_similarity,
        )
        self.classifier = MLP(2 * channels, channels, num_classes)

    def _frozen_encoders(self) -> list[Encoder]:
        """The encoders this model holds and does not train."""
        return [encoder for encoder, trained in ((self.visual_encoder, self.train_visual),
                                                 (self.audio_encoder, self.train_audio))
                if encoder is not None and not trained]

    def train(self, mode: bool = True) -> STM:
        super().train(mode)
        for encoder in self._frozen_encoders():
            encoder.eval()  # frozen: BatchNorm keeps its pretrained statistics
        return self

    def forward(
        self,
        visual: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        *,
        frames: torch.Tensor | None = None,
        logmel: torch.Tensor | None = None,
    ) -> AVOutput:
        """A whole clip: feature maps, or ``frames (B, T, 3, H, W)`` in [0, 1] and
        ``logmel (B, T, 1, M, F)`` when the model holds encoders (one of each modality)."""
        visual, audio = self._features(visual, audio, frames, logmel)
        return self._run(visual, audio)[0]

    def stream_refusal(self) -> str | None:
        """A causal memory streams (a bank of the last K steps); a symmetric one reads the future."""
        return None if self.memory.causal else "its memory reads future steps (causal=False)"

    def init_state(self) -> MemoryBank:
        """The empty memory of a new stream for :meth:`step`."""
        return MemoryBank()

    def step(
        self,
        visual: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        state: MemoryBank | None = None,
        *,
        frames: torch.Tensor | None = None,
        logmel: torch.Tensor | None = None,
    ) -> tuple[AVOutput, MemoryBank]:
        """One step of a stream: ``visual (B, Cv, h, w)``, ``audio (B, Ca, m, n)`` (or
        ``frames (B, 3, H, W)``, ``logmel (B, 1, M, F)``) -> (AVOutput with T = 1, new state).

        The state holds at most K steps; in eval mode the outputs equal those of ``forward`` on
        the whole clip (causal models only).
        """
        def one(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.unsqueeze(1)  # (B, ...) -> (B, 1, ...)

        return self.stream(one(visual), one(audio), state, frames=one(frames), logmel=one(logmel))

    def stream(
        self,
        visual: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        state: MemoryBank | None = None,
        *,
        frames: torch.Tensor | None = None,
        logmel: torch.Tensor | None = None,
    ) -> tuple[AVOutput, MemoryBank]:
        """The next T steps of a stream at once, ``(B, T, ...)`` inputs as for ``forward``: the
        same outputs as T calls of :meth:`step`, in one masked attention (causal models only)."""
        visual, audio = self._features(visual, audio, frames, logmel)
        return self._run(visual, audio, state if state is not None else self.init_state())

    def _run(
        self, visual: torch.Tensor, audio: torch.Tensor, bank: MemoryBank | None = None
    ) -> tuple[AVOutput, MemoryBank | None]:
        """Project, run the memory layer (streaming when ``bank`` is given) and read out."""
        b, t = visual.shape[:2]
        x_v = self.visual_projection(visual.flatten(0, 1)).unflatten(0, (b, t))  # (B*T, Cv, h, w) -> (B, T, C, h, w)
        x_a = self.audio_projection(audio.flatten(0, 1)).unflatten(0, (b, t))  # (B*T, Ca, m, n) -> (B, T, C, m, n)
        if bank is None:
            memory = self.memory(x_a, x_v)
        else:
            memory, bank = self.memory.step(x_a, x_v, bank)
        return self.read_out(memory, visual), bank

    def read_out(self, memory: MemoryOutput, visual: torch.Tensor) -> AVOutput:
        """Localisation map (3.3) and classifier (3.4) from the memory layer's outputs; ``visual``
        ``(B, T, Cv, h, w)`` the encoder's maps, for the map's affinity refinement."""
        audio = spatial_pool(memory.audio, self.pool)  # (B, T, C, m, n) -> (B, T, C)
        if self.memory.variant == "c+u":
            heatmap = cross_modal_attention(
                memory.audio_visual, audio, self.spatial_temperature, self.spatial_similarity
            )[1]  # (B, T, h, w)
        else:  # no line 5: hat x_av = alpha * x_v, whose map is alpha (authors' code)
            heatmap = memory.alpha
        if self.affinity_temperature is not None:
            heatmap = affinity_propagation(heatmap, visual, self.affinity_temperature)  # (B, T, h, w)
        audio_visual = memory.audio_visual.sum(dim=(-2, -1))  # (B, T, C, h, w) -> (B, T, C)
        if not self.training:
            classifier_audio = audio * (1.0 - self.audio_dropout)  # the expectation of training's input
        elif self.audio_dropout > 0:
            keep = torch.rand(audio.shape[0], 1, 1, device=audio.device) >= self.audio_dropout  # (B, 1, 1)
            classifier_audio = audio * keep
        else:
            classifier_audio = audio
        logits = self.classifier(torch.cat([audio_visual, classifier_audio], dim=-1))  # (B, T, 2C) -> (B, T, K)
        video_logits = logits.amax(dim=1) if self.temporal_pool == "max" else logits.mean(dim=1)  # (B, K)
        embeddings = {"audio": audio, "audio_visual": audio_visual, "alpha": memory.alpha}
        return AVOutput(heatmap=heatmap, logits=logits, video_logits=video_logits, embeddings=embeddings)

    def _features(
        self,
        visual: torch.Tensor | None,
        audio: torch.Tensor | None,
        frames: torch.Tensor | None,
        logmel: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Check the inputs; encode frames / log-mel. Returns ``(B, T, Cv, h, w), (B, T, Ca, m, n)``."""
        visual = self._encode("visual", visual, frames, self.visual_encoder, 3)
        audio = self._encode("audio", audio, logmel, self.audio_encoder, 1)
        check_features("STM", visual, audio, self.visual_channels, self.audio_channels)
        return visual, audio

    def _encode(
        self, what: str, features: torch.Tensor | None, raw: torch.Tensor | None, encoder: Encoder | None, channels: int
    ) -> torch.Tensor:
        """``features`` as they are, or ``raw (B, T, channels, H, W)`` through ``encoder``."""
        raw_name = "frames" if what == "visual" else "logmel"
        if (features is None) == (raw is None):
            raise TypeError(f"STM: pass exactly one of {what} features and {raw_name}")
        if raw is None:
            return features
        if encoder is None:
            raise ValueError(f"STM: {raw_name} given but the model holds no {what} encoder")
        if raw.ndim != 5 or raw.shape[2] != channels:
            raise FeatureShapeError(f"STM: expected {raw_name} (B, T, {channels}, H, W), got {tuple(raw.shape)}")
        trained = self.train_visual if what == "visual" else self.train_audio
        with torch.set_grad_enabled(trained and torch.is_grad_enabled()):
            maps = encoder(raw.flatten(0, 1))  # (B*T, channels, H, W) -> (B*T, C, h, w)
        return maps.unflatten(0, raw.shape[:2])  # (B*T, C, h, w) -> (B, T, C, h, w)
