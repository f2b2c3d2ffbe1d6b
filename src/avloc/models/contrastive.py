"""Multiple-instance (MIL) contrastive losses of the self-supervised models, and what they share.

A visual map is a *bag* of positions. An audio vector should be similar to at least one
position of its own (positive) bag and dissimilar to the bags of the other items of the batch.

- EZ-VSL (Mo & Morgado, "Localizing Visual Sounds the Easy Way", ECCV 2022), its cross-modal
  MIL loss as TAVLO's Sec. 4.3 and the authors' code describe it: the score of an (audio, bag)
  pair is the max over positions of the cosine similarity, for the positive and the negative
  bags alike; InfoNCE over the batch with temperature 0.03, in both directions (each audio
  against every bag, each bag against every audio). :func:`ezvsl_loss`.
- TAVLO (Choi, Lee & Kwak, "What's Making That Sound Right Now? Video-centric Audio-Visual
  Localization", ICCV 2025, Sec. 4.3): the bags are frames. The audio token a_t^i of video i at
  timestamp t has the positive bag V_t^i (all positions of frame t of video i) and the negative
  bags V_t^j, j != i: the same timestamp in the other videos of the batch. Eq. 12, positive
  response P_t^i = max_p cos(a_t^i, V_t^i(p)); eq. 13, negative response
  N_t^{ij} = mean_p cos(a_t^i, V_t^j(p)) (the mean, not EZ-VSL's max); eq. 14,
  L_av = -1/(BT) sum_{i,t} log exp(P_t^i / tau) / (exp(P_t^i / tau) + sum_{j != i} exp(N_t^{ij} / tau));
  eq. 15, L = L_av + L_va with L_va the same over the negative responses
  N'_t^{ij} = mean_p cos(a_t^j, V_t^i(p)) (each visual bag against the other videos' audio).
  :func:`temporal_mil_loss`. (Our copy of the paper lost its formulas; eqs. 12-15 above are
  rebuilt from its prose, which names every term: "high similarity with at least one instance
  in its positive bag" = max, "mean similarity for negative bags" = mean, "L_va symmetrically
  defined using negative response N'".)

Both are one computation over groups of N paired items: a logit matrix (:func:`mil_logits`) whose
diagonal holds the positive responses and whose off-diagonal entries hold the negative ones,
then cross-entropy along its rows (audio -> visual) and along its columns (visual -> audio)
(:func:`symmetric_info_nce`). EZ-VSL is one group of every (sample, step) pair of the batch;
TAVLO is one group of B videos per timestamp.

Choices where the papers are vague:

- The two directions are summed, not averaged: EZ-VSL's code sums its two cross-entropies, and
  TAVLO's eq. 15 "combines" the two (read as the same sum). Each direction is a mean over its
  rows (over i and t).
- TAVLO's temperature tau is not given; it defaults to EZ-VSL's 0.03, the loss it builds on.
- A group of one item (a batch of one video for TAVLO) has no negative: its loss is exactly 0.

Also here, because both contrastive models use them: :func:`cosine_map` (their heat map, the
diagonal of the similarities the losses score), the check of the input feature maps and of the
supervision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avloc.models.blocks import check_choice, unit_vectors
from avloc.types import AvlocError

NEGATIVE_POOLS = ("max", "mean")  # how a negative bag is scored: EZ-VSL (max), TAVLO (mean)


def cosine_map(audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of an audio vector with every position of its visual map.

    Args:
        audio: ``(..., C)``.
        visual: ``(..., C, h, w)``, the same leading dims.

    Returns:
        ``(..., h, w)`` in [-1, 1].
    """
    audio, visual = unit_vectors(audio, dim=-1), unit_vectors(visual, dim=-3)
    return torch.einsum("...c,...chw->...hw", audio, visual)  # (..., C), (..., C, h, w) -> (..., h, w)


def bag_similarities(audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every audio vector with every position of every bag of its group.

    Args:
        audio: ``(..., N, C)``, N items per group.
        visual: ``(..., N, C, h, w)``, item i's bag pairs with item i's audio.

    Returns:
        ``s (..., N, N, h*w)``: ``s[..., i, j, p] = cos(audio_i, visual_j(p))``.
    """
    if audio.shape[:-1] != visual.shape[:-3] or audio.shape[-1] != visual.shape[-3]:
        raise ValueError(f"expected audio (..., N, C) and visual (..., N, C, h, w), "
                         f"got {tuple(audio.shape)} and {tuple(visual.shape)}")
    audio, visual = unit_vectors(audio, dim=-1), unit_vectors(visual, dim=-3)
    # (..., N, C), (..., N, C, h, w) -> (..., N, N, h, w)
    similarity = torch.einsum("...ic,...jchw->...ijhw", audio, visual)
    return similarity.flatten(-2)  # (..., N, N, h, w) -> (..., N, N, h*w)


def mil_logits(
    audio: torch.Tensor, visual: torch.Tensor, temperature: float, negative: str = "max"
) -> torch.Tensor:
    """Logits of the MIL contrastive loss: ``(..., N, C)``, ``(..., N, C, h, w)`` -> ``(..., N, N)``.

    ``logits[..., i, j]`` scores audio i against bag j, divided by ``temperature``: the max over
    positions of the cosine similarity on the diagonal (the positive bag: at least one position
    matches); off the diagonal the max (``negative="max"``, EZ-VSL) or the mean
    (``negative="mean"``, TAVLO eq. 13) over positions.
    """
    check_choice("negative pool", negative, NEGATIVE_POOLS)
    similarity = bag_similarities(audio, visual)  # (..., N, N, h*w)
    positive = similarity.amax(dim=-1)  # (..., N, N, h*w) -> (..., N, N)
    if negative == "max":
        return positive / temperature
    diagonal = torch.eye(similarity.shape[-2], dtype=torch.bool, device=similarity.device)  # (N, N)
    return torch.where(diagonal, positive, similarity.mean(dim=-1)) / temperature  # (..., N, N)


def symmetric_info_nce(logits: torch.Tensor) -> torch.Tensor:
    """InfoNCE both ways on ``logits (..., N, N)`` (rows: audio, columns: visual bags): scalar.

    audio -> visual: cross-entropy of each row with its diagonal entry as the target;
    visual -> audio: the same for each column. Each is a mean over all rows (or columns) of all
    groups; the result is their sum.
    """
    n = logits.shape[-1]
    targets = torch.arange(n, device=logits.device).expand(logits.shape[:-1]).flatten()  # (..., N) -> (G*N,)
    audio_to_visual = F.cross_entropy(logits.flatten(0, -2), targets)  # (..., N, N) -> (G*N, N)
    visual_to_audio = F.cross_entropy(logits.transpose(-2, -1).flatten(0, -2), targets)  # (..., N, N) -> (G*N, N)
    return audio_to_visual + visual_to_audio


def ezvsl_loss(audio: torch.Tensor, visual: torch.Tensor, temperature: float = 0.03) -> torch.Tensor:
    """EZ-VSL's cross-modal MIL contrastive loss (max for every bag) over N pairs: scalar.

    Args:
        audio: ``(N, C)`` audio vectors.
        visual: ``(N, C, h, w)`` visual maps; pair i is the positive of audio i, the N - 1
            others its negatives.
        temperature: divides the cosine similarities (EZ-VSL: 0.03).
    """
    return symmetric_info_nce(mil_logits(audio, visual, temperature, negative="max"))


def temporal_mil_loss(
    audio: torch.Tensor, visual: torch.Tensor, temperature: float = 0.03, negative: str = "mean"
) -> torch.Tensor:
    """TAVLO's temporal MIL contrastive loss (eqs. 12-15): scalar.

    Args:
        audio: ``(B, T, C)``, one audio token per frame.
        visual: ``(B, T, C, h, w)``; frame t of video i is the positive bag of a_t^i, frame t of
            every other video j != i a negative bag (other timestamps are never compared).
        temperature: tau of eq. 14 (not given by the paper; EZ-VSL's 0.03).
        negative: how a negative bag is scored: ["mean"] (eq. 13) or "max" (EZ-VSL).
    """
    audio = audio.transpose(0, 1)  # (B, T, C) -> (T, B, C): one group of B bags per timestamp
    visual = visual.transpose(0, 1)  # (B, T, C, h, w) -> (T, B, C, h, w)
    return symmetric_info_nce(mil_logits(audio, visual, temperature, negative=negative))


def check_self_supervision(model: str, supervision: str) -> None:
    """Raise AvlocError unless ``supervision`` is "self" (the contrastive models use no labels)."""
    if supervision != "self":
        raise AvlocError(f"{model} trains with supervision 'self' (no labels), not {supervision!r}")


def check_temperature(temperature: float) -> None:
    """Raise AvlocError unless the contrastive temperature is positive."""
    if not temperature > 0:
        raise AvlocError(f"temperature must be > 0, got {temperature}")


