"""Building blocks shared by the localisation models: projections, pooling, spatial attention, MLP.

STM (Space-Time Memory Network, BMVC 2021) uses all of them; AVE, TAVLO and EZ-VSL reuse them.
Shapes follow :mod:`avloc.types`; the blocks work on flattened steps ``(N, C, h, w)`` or on any
leading dims ``(..., C, h, w)`` where noted.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from avloc.types import AvlocError, FeatureShapeError

POOLS = ("max", "mean")
DISTANCE_EPS = 1e-12  # inside the square root: finite gradients when two embeddings coincide


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise AvlocError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise AvlocError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")


def check_positive(**values: int) -> None:
    """Raise AvlocError unless every keyword's value is >= 1."""
    for name, value in values.items():
        if value < 1:
            raise AvlocError(f"{name} must be >= 1, got {value}")


def spatial_pool(x: torch.Tensor, kind: str = "max") -> torch.Tensor:
    """Global pooling phi over the two last (spatial) dims: ``(..., C, h, w) -> (..., C)``."""
    if kind == "max":
        return x.amax(dim=(-2, -1))
    if kind == "mean":
        return x.mean(dim=(-2, -1))
    raise AvlocError(f"unknown pool {kind!r}; expected one of {', '.join(POOLS)}")


SIMILARITIES = ("dot", "cosine")
UNIT_EPS = 1e-12  # F.normalize's: vectors shorter than this are divided by it instead of their norm


def unit_vectors(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` scaled to unit L2 norm along ``dim``: ``F.normalize(x, dim=dim)`` to float
    round-off, computed as a sum of squares and a reciprocal square root. Along a dim that is
    not the last (the channels of a ``(..., C, h, w)`` map) this is about 6x faster than
    ``F.normalize``, whose norm reduction walks the strided dim."""
    return x * x.square().sum(dim=dim, keepdim=True).clamp_min(UNIT_EPS**2).rsqrt()


def similarity_logits(
    visual: torch.Tensor, audio: torch.Tensor, temperature: float = 1.0, similarity: str = "dot"
) -> torch.Tensor:
    """The logits of the spatial attention f: ``visual(i, j) . audio / temperature``, ``(..., h, w)``.

    Args:
        visual: ``(..., C, h, w)`` visual (or audio-visual) map.
        audio: ``(..., C)`` audio vector, already pooled (phi) by the caller.
        temperature: divides the similarities.
        similarity: "dot" (eq. 1) or "cosine" (both vectors L2-normalised first, so that the
            logits follow the direction of the features, not their magnitude; the STM authors'
            ``--normalize``).
    """
    check_choice("similarity", similarity, SIMILARITIES)
    keys, query = visual, audio
    if similarity == "cosine":
        keys, query = unit_vectors(visual, dim=-3), unit_vectors(audio, dim=-1)
    return torch.einsum("...chw,...c->...hw", keys, query) / temperature  # (..., C, h, w), (..., C) -> (..., h, w)


def cross_modal_attention(
    visual: torch.Tensor, audio: torch.Tensor, temperature: float = 1.0, similarity: str = "dot"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-modal spatial attention f (STM eq. 1): where in the visual map the audio vector is.

    ``alpha(i, j) = softmax_{i,j}(visual(i, j) . audio / temperature)`` and the attended map
    ``alpha(i, j) * visual(i, j, c)`` on every channel c. Eq. 1 is ``temperature = 1``.

    Args:
        visual, audio, temperature, similarity: as for :func:`similarity_logits`.

    Returns:
        ``(attended, alpha)``: ``(..., C, h, w)`` and ``(..., h, w)``, alpha summing to 1 over (h, w).
    """
    scores = similarity_logits(visual, audio, temperature, similarity)  # (..., h, w)
    alpha = scores.flatten(-2).softmax(dim=-1).view_as(scores)  # (..., h*w) -> (..., h, w)
    return alpha.unsqueeze(-3) * visual, alpha  # (..., 1, h, w) * (..., C, h, w)


def affinity_propagation(heatmap: torch.Tensor, features: torch.Tensor, temperature: float) -> torch.Tensor:
    """Spread a map over the cells that look like where it points: one random-walk step.

    ``T(i, j) = softmax_j(cos(features(i), features(j)) / temperature)`` and ``map'(i) =
    sum_j T(i, j) map(j)``, renormalised to sum to 1 over (h, w). A cell gains mass in proportion
    to how alike it is to the cells the map already weighs, so a map that peaks on part of an
    object spreads over the cells of that object (whose features are alike when the encoder
    delimits objects) and not over its surroundings. Affinity propagation of a weak map, as in
    Ahn & Kwak, CVPR 2018 (AffinityNet), with the frozen encoder's cosine similarity as the
    affinity and a single step.

    Args:
        heatmap: ``(..., h, w)`` non-negative map.
        features: ``(..., C, h, w)`` feature map of the same frames.
        temperature: > 0; smaller keeps the mass on the most alike cells.

    Returns:
        ``(..., h, w)`` summing to 1 over (h, w).
    """
    unit = unit_vectors(features.flatten(-2), dim=-2)  # (..., C, h, w) -> (..., C, h*w), unit over C
    affinity = torch.einsum("...ci,...cj->...ij", unit, unit)  # (..., h*w, h*w) cosine similarities
    walk = (affinity / temperature).softmax(dim=-1)  # (..., h*w, h*w), rows sum to 1
    spread = (walk @ heatmap.flatten(-2).unsqueeze(-1)).squeeze(-1)  # (..., h*w, 1) -> (..., h*w)
    spread = spread / spread.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(spread.dtype).tiny)
    return spread.view_as(heatmap)  # (..., h*w) -> (..., h, w)


def euclidean_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """AVE eq. 9: ``||x - y||_2`` over the last dim, broadcasting: ``(..., D), (..., D) -> (...)``."""
    return ((x - y).square().sum(dim=-1) + DISTANCE_EPS).sqrt()


class Projection(nn.Sequential):
    """A stack of 1x1 convolutions into the joint space: ``(N, C_in, h, w) -> (N, C_out, h, w)``.

    ``layers`` convolutions, all ``out_channels`` wide. Between two convolutions:
    ``[BatchNorm] -> ReLU``; after the last: ``[BatchNorm]`` and no ReLU, so that joint features
    keep their sign (after a final ReLU every dot product of the attention would be >= 0).
    This is the authors' code (1x1 conv + BN, ReLU between); ``norm=False`` gives the paper's
    "stack of 1x1 convolutions with ReLU" with biased convolutions.

    Args:
        in_channels: C_in of the encoder map.
        out_channels: C of the joint space (STM: 256).
        layers: number of 1x1 convolutions (default 2).
        norm: BatchNorm after every convolution (default True). In training mode BatchNorm mixes
            the statistics of every sample and step of the batch.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, *, layers: int = 2, norm: bool = True) -> None:
        if layers < 1:
            raise AvlocError(f"a projection needs at least one layer, got {layers}")
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        for index in range(layers):
            width_in = in_channels if index == 0 else out_channels
            modules[f"conv{index}"] = nn.Conv2d(width_in, out_channels, kernel_size=1, bias=not norm)
            if norm:
                modules[f"bn{index}"] = nn.BatchNorm2d(out_channels)
            if index < layers - 1:
                modules[f"relu{index}"] = nn.ReLU(inplace=True)
        super().__init__(modules)


class MLP(nn.Sequential):
    """``Linear -> ReLU -> Linear``: ``(..., in_features) -> (..., out_features)``."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__(
            OrderedDict(
                fc1=nn.Linear(in_features, hidden_features),
                relu=nn.ReLU(inplace=True),
                fc2=nn.Linear(hidden_features, out_features),
            )
        )


class SequenceLSTM(nn.Module):
    """An LSTM over steps: ``(B, T, in_features) -> (B, T, hidden * directions)``.

    The temporal model of AVE (one per modality, bidirectional) and of AVFB's fusion.

    Args:
        in_features: size of each step's input vector.
        hidden: LSTM hidden size per direction.
        bidirectional: read the sequence both ways (the output concatenates both).
    """

    def __init__(self, in_features: int, hidden: int, *, bidirectional: bool = True) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_features, hidden, batch_first=True, bidirectional=bidirectional)
        self.out_features = hidden * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


def check_features(model: str, visual: torch.Tensor, audio: torch.Tensor, visual_channels: int,
                   audio_channels: int) -> None:
    """Raise FeatureShapeError unless ``visual (B, T, Cv, h, w)`` and ``audio (B, T, Ca, m, n)`` fit the model."""
    for x, channels, what in ((visual, visual_channels, "visual"), (audio, audio_channels, "audio")):
        if x.ndim != 5 or x.shape[2] != channels:
            raise FeatureShapeError(f"{model}: expected {what} features (B, T, {channels}, h, w), "
                                    f"got {tuple(x.shape)}")
    if visual.shape[:2] != audio.shape[:2]:
        raise FeatureShapeError(f"{model}: visual and audio differ in (B, T): {tuple(visual.shape)}, "
                                f"{tuple(audio.shape)}")
