"""The MIL contrastive losses of EZ-VSL and TAVLO against hand computations on tiny inputs.

Two items, 2-D vectors, 2x2 visual maps. With r = 1/sqrt(2), the audio vectors a1 = (1, 0),
a2 = (0, 1) and the maps (positions in row-major order)

    v1: (2, 0), (0, 1), (0, -3), (1, 1)      v2: (-1, 0), (1, 1), (0, -1), (-1, 0)

give the cosine similarities

    cos(a1, v1) = 1, 0,  0, r    max 1   mean (1 + r) / 4
    cos(a2, v1) = 0, 1, -1, r    max 1   mean r / 4
    cos(a1, v2) = -1, r, 0, -1   max r   mean (r - 2) / 4
    cos(a2, v2) = 0, r, -1, 0    max r   mean (r - 1) / 4

For logits [p, n] and the target p, the cross-entropy is -log(e^p / (e^p + e^n)) = softplus(n - p).
"""

from __future__ import annotations

import math

import pytest
import torch

from avloc.models.contrastive import (
    bag_similarities,
    cosine_map,
    ezvsl_loss,
    mil_logits,
    symmetric_info_nce,
    temporal_mil_loss,
)
from avloc.types import AvlocError

R = 1 / math.sqrt(2)
A1, A2 = [1.0, 0.0], [0.0, 1.0]
V1 = [[[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [-3.0, 1.0]]]  # (C=2, h=2, w=2): channel 0, channel 1
V2 = [[[-1.0, 1.0], [0.0, -1.0]], [[0.0, 1.0], [-1.0, 0.0]]]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def close(x: torch.Tensor, expected: float) -> None:
    torch.testing.assert_close(x, torch.tensor(expected, dtype=x.dtype), rtol=1e-5, atol=1e-6)


def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """``audio (2, 2)``, ``visual (2, 2, 2, 2)``: (a1, v1) and (a2, v2)."""
    return torch.tensor([A1, A2]), torch.tensor([V1, V2])


def test_cosine_map_and_bag_similarities_by_hand():
    audio, visual = pair()
    torch.testing.assert_close(cosine_map(audio, visual), torch.tensor([[[1, 0], [0, R]], [[0, R], [-1, 0]]]))
    expected = torch.tensor([
        [[1, 0, 0, R], [-1, R, 0, -1]],  # a1 against v1, v2
        [[0, 1, -1, R], [0, R, -1, 0]],  # a2 against v1, v2
    ])
    torch.testing.assert_close(bag_similarities(audio, visual), expected)
    # Cosine: the scale of either vector does not matter.
    torch.testing.assert_close(bag_similarities(3 * audio, 0.5 * visual), expected)


def test_mil_logits_max_and_mean_by_hand():
    audio, visual = pair()
    torch.testing.assert_close(mil_logits(audio, visual, 0.5, "max"), torch.tensor([[1, R], [1, R]]) / 0.5)
    # Diagonal: max (positive bag); off-diagonal: mean (negative bags).
    mean = torch.tensor([[1, (R - 2) / 4], [R / 4, R]]) / 0.5
    torch.testing.assert_close(mil_logits(audio, visual, 0.5, "mean"), mean)
    with pytest.raises(AvlocError, match="negative pool"):
        mil_logits(audio, visual, 0.5, "median")


def test_symmetric_info_nce_by_hand():
    # Equal logits: each of the two directions is log N.
    close(symmetric_info_nce(torch.zeros(3, 3)), 2 * math.log(3))
    # Rows: CE([2, 0], 0) = softplus(-2), CE([1, 3], 1) = softplus(-2); columns: [2, 1] -> softplus(-1),
    # [0, 3] -> softplus(-3). Each direction is a mean over its rows, the two are summed.
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    close(symmetric_info_nce(logits), softplus(-2) + (softplus(-1) + softplus(-3)) / 2)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.03])
def test_ezvsl_loss_by_hand(temperature):
    audio, visual = pair()
    # logits = [[1, r], [1, r]] / tau (max for every bag).
    audio_to_visual = (softplus((R - 1) / temperature) + softplus((1 - R) / temperature)) / 2
    visual_to_audio = math.log(2)  # both columns hold two equal logits
    close(ezvsl_loss(audio, visual, temperature), audio_to_visual + visual_to_audio)


def tavlo_step_loss(logits: list[list[float]], temperature: float) -> float:
    """The two directions of eqs. 14-15 on one 2x2 logit matrix (before the temperature)."""
    (p1, n12), (n21, p2) = logits  # row i: audio i; column j: visual bag j
    audio_to_visual = (softplus((n12 - p1) / temperature) + softplus((n21 - p2) / temperature)) / 2
    visual_to_audio = (softplus((n21 - p1) / temperature) + softplus((n12 - p2) / temperature)) / 2
    return audio_to_visual + visual_to_audio


def test_temporal_mil_loss_by_hand():
    tau = 0.5
    audio, visual = pair()
    # P = max for (a_i, v_i); a->v negatives: mean cos(a_i, v_j); v->a negatives: mean cos(a_j, v_i).
    step0 = [[1, (R - 2) / 4], [R / 4, R]]
    close(temporal_mil_loss(audio[:, None], visual[:, None], tau), tavlo_step_loss(step0, tau))

    # Two steps: at step 1 the two videos' sounds are swapped (video 1 hears a2, video 2 hears a1).
    audio_steps = torch.stack([audio, audio.flip(0)], dim=1)  # (B=2, T=2, 2)
    visual_steps = torch.stack([visual, visual], dim=1)  # (B=2, T=2, 2, 2, 2)
    step1 = [[1, (R - 1) / 4], [(1 + R) / 4, R]]  # a2 with v1 (max 1), a1 with v2 (max r)
    # Bags are compared within a timestamp only: the mean of the two steps' losses.
    expected = (tavlo_step_loss(step0, tau) + tavlo_step_loss(step1, tau)) / 2
    close(temporal_mil_loss(audio_steps, visual_steps, tau), expected)
    # With max negatives it is EZ-VSL's loss, timestamp by timestamp.
    ezvsl_per_step = (ezvsl_loss(audio, visual, tau) + ezvsl_loss(audio.flip(0), visual, tau)) / 2
    torch.testing.assert_close(temporal_mil_loss(audio_steps, visual_steps, tau, negative="max"), ezvsl_per_step)


def test_temporal_mil_loss_never_compares_two_timestamps():
    g = torch.Generator().manual_seed(0)
    audio, visual = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, 2, 2, generator=g)
    per_step = [temporal_mil_loss(audio[:, t : t + 1], visual[:, t : t + 1]) for t in range(4)]
    torch.testing.assert_close(temporal_mil_loss(audio, visual), torch.stack(per_step).mean())


def test_one_video_has_no_negatives():
    g = torch.Generator().manual_seed(0)
    audio, visual = torch.randn(1, 4, 5, generator=g), torch.randn(1, 4, 5, 2, 2, generator=g)
    close(temporal_mil_loss(audio, visual), 0.0)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match=r"audio \(\.\.\., N, C\)"):
        ezvsl_loss(torch.randn(2, 3), torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match=r"audio \(\.\.\., N, C\)"):
        temporal_mil_loss(torch.randn(2, 3, 4), torch.randn(2, 2, 4, 2, 2))


def test_mean_negatives_reward_peaked_maps_even_without_any_pairing():
    """A property of TAVLO's eq. 13 (see the report): B identical videos whose bags hold +a and -a
    and whose audio is a. Every bag scores max = 1 as a positive and mean = 0 as a negative, so
    the loss is 2 log(1 + (B - 1) e^(-1/tau)), nearly 0, although nothing tells the videos apart;
    EZ-VSL's max scores every bag 1 and the loss is chance, 2 log B."""
    b, tau = 4, 0.1
    audio = torch.tensor([1.0, 0.0]).expand(b, 1, 2)  # (B, T=1, C=2)
    bag = torch.tensor([[[1.0, -1.0]], [[0.0, 0.0]]])  # (C=2, h=1, w=2): positions +a and -a
    visual = bag.expand(b, 1, 2, 1, 2)  # (B, T=1, C, h, w)
    close(temporal_mil_loss(audio, visual, tau, "mean"), 2 * math.log1p((b - 1) * math.exp(-1 / tau)))
    close(temporal_mil_loss(audio, visual, tau, "max"), 2 * math.log(b))
