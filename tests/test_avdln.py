"""AVDLN (ECCV 2018, section 5) and cross-modality localisation: the contrastive loss (eq. 10,
margin 2.0) and its pairs by hand, the distance heat map, A2V / V2A (eq. 8) on constructed
cases, the accuracy over clips, and the model contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from avloc.cross_modal import a2v, cross_modal_accuracy, event_run, v2a, window_costs
from avloc.models.blocks import euclidean_distance
from avloc.models.contract import LocalizationModel
from avloc.models import create_model
from avloc.models.avdln import AVDLN, contrastive_loss, contrastive_pairs
from avloc.types import AVOutput, AvlocError
from model_checks import assert_adam_lowers, assert_every_parameter_gets_a_gradient

B, T, CV, CA, K = 3, 4, 6, 5, 4
VISUAL_SIZE, AUDIO_SIZE = (3, 4), (2, 2)
LABELS = torch.tensor([[3, 0, 0, 3], [1, 1, 1, 1], [3, 3, 2, 2]])  # background = K - 1 = 3


def features(t: int = T, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, t, CV, *VISUAL_SIZE, generator=g), torch.randn(B, t, CA, *AUDIO_SIZE, generator=g)


def small(**kwargs) -> AVDLN:
    torch.manual_seed(0)
    sizes = {"hidden": 16, "embedding": 8}
    return create_model("avdln", visual_channels=CV, audio_channels=CA, num_classes=K, **{**sizes, **kwargs})


# --- the contrastive loss (eq. 10) ----------------------------------------------------------------


def test_euclidean_distance_by_hand_and_finite_gradient_at_zero():
    assert euclidean_distance(torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0])).item() == pytest.approx(5.0)
    x = torch.ones(3, requires_grad=True)
    euclidean_distance(x, torch.ones(3)).backward()
    assert torch.isfinite(x.grad).all()


def test_contrastive_loss_by_hand():
    distance = torch.tensor([0.5, 1.5, 3.0, 0.0])
    target = torch.tensor([1, 0, 0, 0])
    # positive: 0.5^2 = 0.25; negatives: (2 - 1.5)^2 = 0.25, beyond the margin 0, (2 - 0)^2 = 4
    assert contrastive_loss(distance, target).item() == pytest.approx((0.25 + 0.25 + 0.0 + 4.0) / 4)
    assert contrastive_loss(distance, target, margin=1.0).item() == pytest.approx((0.25 + 0 + 0 + 1.0) / 4)


def test_pairs_and_loss_by_hand():
    # Two clips of two steps, D = 1: audio and visual embeddings on a line.
    audio = torch.tensor([[[0.0], [1.0]], [[2.0], [5.0]]])  # (B=2, T=2, 1)
    visual = torch.tensor([[[0.5], [1.0]], [[3.5], [4.0]]])
    synchronized = torch.tensor([[True, False], [True, True]])
    distance, target = contrastive_pairs(audio, visual, synchronized)
    # same-step pairs: |0-0.5|, |1-1|, |2-3.5|, |5-4|; then audio of clip b with visual of clip b-1:
    # clip 0 with clip 1's visual |0-3.5|, |1-4|; clip 1 with clip 0's visual |2-0.5|, |5-1|
    torch.testing.assert_close(distance, torch.tensor([0.5, 0.0, 1.5, 1.0, 3.5, 3.0, 1.5, 4.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(target, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    # positives 0.25 + 2.25 + 1; negatives (2 - 0)^2 = 4 for the background step, (2 - 1.5)^2 = 0.25, rest 0
    expected = (0.25 + 4.0 + 2.25 + 1.0 + 0 + 0 + 0.25 + 0) / 8
    assert contrastive_loss(distance, target).item() == pytest.approx(expected, abs=1e-5)

    model = small()
    output = AVOutput(heatmap=torch.zeros(2, 2, 1, 1), embeddings={"audio": audio, "visual": visual})
    loss = model.loss(output, {"step_labels": torch.tensor([[0, K - 1], [2, 2]])}, "segment")
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # "self": every same-step pair is positive, the background pair included: 0 instead of 4
    assert model.loss(output, {}, "self").item() == pytest.approx(expected - 4.0 / 8, abs=1e-5)
    # without batch negatives only the four same-step pairs count (the authors' code)
    loss = small(batch_negatives=False).loss(output, {"step_labels": torch.tensor([[0, K - 1], [2, 2]])}, "segment")
    assert loss.item() == pytest.approx((0.25 + 4.0 + 2.25 + 1.0) / 4, abs=1e-5)


def test_a_batch_of_one_clip_has_only_same_step_pairs():
    audio, visual = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    distance, target = contrastive_pairs(audio, visual, torch.ones(1, 3, dtype=torch.bool))
    assert distance.shape == target.shape == (3,)
    torch.testing.assert_close(distance, torch.full((3,), math.sqrt(2)))


# --- the model --------------------------------------------------------------------------------


def identity_mlp(mlp: nn.Module) -> None:
    for linear in (mlp.fc1, mlp.fc2):
        with torch.no_grad():
            linear.weight.copy_(torch.eye(linear.out_features, linear.in_features))
            linear.bias.zero_()


def test_heatmap_is_a_gaussian_of_the_distance_to_the_audio_embedding():
    # C = hidden = D = 2 and identity embeddings: on non-negative features R = x.
    model = create_model("avdln", visual_channels=2, audio_channels=2, num_classes=2, hidden=2, embedding=2)
    identity_mlp(model.visual_embedding), identity_mlp(model.audio_embedding)
    visual = torch.zeros(1, 1, 2, 2, 2)
    visual[0, 0, :, 0, 1] = torch.tensor([3.0, 4.0])  # the sounding position (0, 1)
    visual[0, 0, :, 1, 0] = torch.tensor([3.0, 2.0])  # at distance 2 = the margin
    audio = torch.tensor([3.0, 4.0]).view(1, 1, 2, 1, 1)
    out = model(visual, audio)
    # distances: (0, 0) -> 5, (0, 1) -> 0, (1, 0) -> 2, (1, 1) -> 5; map exp(-(D / 2)^2)
    expected = torch.tensor([[math.exp(-6.25), 1.0], [math.exp(-1.0), math.exp(-6.25)]])
    torch.testing.assert_close(out.heatmap[0, 0], expected)
    torch.testing.assert_close(out.embeddings["audio"][0, 0], torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(out.embeddings["visual"][0, 0], torch.tensor([1.5, 1.5]))  # the mean-pooled map
    assert out.logits is None and out.video_logits is None


@pytest.mark.parametrize("supervision", AVDLN.supervisions)
def test_contract_gradients_and_learning(supervision):
    model, (visual, audio) = small(), features()
    batch = {"step_labels": LABELS}
    for training in (True, False):
        model.train(training)
        out = model(visual, audio)
        assert isinstance(out, AVOutput) and out.heatmap.shape == (B, T, *VISUAL_SIZE)
        assert out.embeddings["audio"].shape == out.embeddings["visual"].shape == (B, T, 8)
        assert ((out.heatmap > 0) & (out.heatmap <= 1)).all()
    model.train()
    assert_every_parameter_gets_a_gradient(model, model.loss(model(visual, audio), batch, supervision))
    assert_adam_lowers(model, lambda: model.loss(model(visual, audio), batch, supervision), 20, 3e-2, 0.7)


@pytest.mark.parametrize("t", [1, 9])
def test_any_number_of_steps(t):
    out = small().eval()(*features(t=t))
    assert out.heatmap.shape == (B, t, *VISUAL_SIZE)


def test_defaults_are_the_papers():
    model = create_model("avdln", visual_channels=512, audio_channels=128, num_classes=29)
    assert model.margin == 2.0
    assert model.visual_embedding.fc1.out_features == 128 and model.visual_embedding.fc2.out_features == 64
    assert model.supervisions[0] == "segment"


@pytest.mark.parametrize("kwargs", [{"margin": 0.0}, {"pool": "median"}, {"embedding": 0}])
def test_invalid_options_raise(kwargs):
    with pytest.raises(AvlocError):
        small(**kwargs)


def test_video_supervision_is_refused():
    model = small()
    with pytest.raises(AvlocError, match="supervision"):
        model.loss(model(*features()), {"label": torch.zeros(B, dtype=torch.long)}, "video")


# --- cross-modality localisation (eq. 8) --------------------------------------------------------


def test_window_costs_and_starts_by_hand():
    query = torch.tensor([[0.0], [1.0]])
    sequence = torch.tensor([[5.0], [0.0], [1.0], [3.0]])
    # start 0: |5-0| + |0-1| = 6; start 1: 0 + 0 = 0; start 2: |1-0| + |3-1| = 3
    torch.testing.assert_close(window_costs(query, sequence), torch.tensor([6.0, 0.0, 3.0]), atol=1e-5, rtol=0)
    assert a2v(query, sequence) == 1 and v2a(query, sequence) == 1
    assert a2v(torch.tensor([[1.0]]), torch.tensor([[0.0], [2.0]])) == 0  # a tie goes to the earliest


def test_a2v_and_v2a_find_a_planted_segment():
    g = torch.Generator().manual_seed(0)
    visual = torch.randn(10, 8, generator=g)
    audio = visual + 0.05 * torch.randn(10, 8, generator=g)  # a clip whose two tracks agree
    assert a2v(audio[3:7], visual) == 3
    assert v2a(visual[6:8], audio) == 6
    assert a2v(audio, visual) == 0  # l = T: one window


def test_window_costs_reject_bad_shapes():
    with pytest.raises(AvlocError, match="steps"):
        window_costs(torch.zeros(5, 2), torch.zeros(4, 2))
    with pytest.raises(AvlocError, match="expected query"):
        window_costs(torch.zeros(2, 3), torch.zeros(4, 2))


def test_event_run():
    assert event_run(torch.tensor([4, 4, 1, 1, 1, 4]), background=4) == (2, 3)
    assert event_run(torch.tensor([1, 1, 4]), background=4) == (0, 2)
    assert event_run(torch.tensor([4, 4]), background=4) is None  # no event
    assert event_run(torch.tensor([1, 1]), background=4) is None  # the whole clip: nothing to find
    assert event_run(torch.tensor([1, 4, 1]), background=4) is None  # two runs


class PooledFeatures(LocalizationModel):
    """A stand-in model whose embeddings are the globally averaged feature maps (one space)."""

    common_embedding = True

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> AVOutput:
        return AVOutput(heatmap=visual.mean(2), embeddings={"audio": audio.mean((-2, -1)),
                                                            "visual": visual.mean((-2, -1))})


class NoCommonSpace(LocalizationModel):
    """A stand-in model with an audio embedding only (no common space declared)."""

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> AVOutput:
        return AVOutput(heatmap=visual.mean(2), embeddings={"audio": audio.mean((-2, -1))})


def planted_clip(start: int, length: int, shift: int = 0, steps: int = 8, seed: int = 0) -> dict:
    """A clip whose audio repeats its visual content; ``shift`` rolls the audio in time."""
    g = torch.Generator().manual_seed(seed)
    content = torch.randn(steps, 4, generator=g)  # (T, D)
    labels = torch.full((steps,), 2)
    labels[start:start + length] = 0
    return {"visual": content[:, :, None, None].expand(steps, 4, 2, 2),  # (T, D) -> (T, D, 2, 2)
            "audio": content.roll(shift, 0)[:, :, None, None],  # (T, D) -> (T, D, 1, 1)
            "step_labels": labels}


def test_cross_modal_accuracy_on_constructed_clips():
    clips = [planted_clip(2, 3, seed=0), planted_clip(5, 2, seed=1),
             planted_clip(3, 3, shift=2, seed=2),  # audio 2 steps late: A2V finds 1, V2A finds 5, not 3
             {**planted_clip(0, 2), "step_labels": torch.full((8,), 2)}]  # no event: skipped
    report = cross_modal_accuracy(PooledFeatures(), clips, background=2)
    assert report == {"a2v": 2 / 3, "v2a": 2 / 3, "clips": 3, "skipped": 1}


def test_cross_modal_accuracy_needs_a_common_space_and_an_event():
    with pytest.raises(AvlocError, match="no common audio-visual embedding"):
        cross_modal_accuracy(NoCommonSpace(), [planted_clip(2, 3)], background=2)
    with pytest.raises(AvlocError, match="none of the 1 clips"):
        cross_modal_accuracy(PooledFeatures(), [{**planted_clip(0, 2), "step_labels": torch.zeros(8)}], background=2)


def test_trained_avdln_localises_across_modalities():
    """A tiny learning task: audio is a fixed linear image of the visual content; after a few
    seconds of training, A2V and V2A find the planted event (1.0 over 3 seeds; chance 1 / 5)."""
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 5, generator=g)

    def clip(seed: int) -> dict:
        gen = torch.Generator().manual_seed(seed)
        visual = torch.randn(8, 6, 2, 2, generator=gen)  # (T, Cv, h, w)
        audio = torch.einsum("tc,ca->ta", visual.mean((-2, -1)), mixing)[:, :, None, None]  # (T, Ca, 1, 1)
        start = int(torch.randint(0, 5, (), generator=gen))
        labels = torch.full((8,), 2)
        labels[start:start + 4] = 0
        return {"visual": visual, "audio": audio, "step_labels": labels}

    torch.manual_seed(0)
    model = create_model("avdln", visual_channels=6, audio_channels=5, num_classes=3, hidden=32, embedding=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = [clip(seed) for seed in range(32)]
    visual = torch.stack([c["visual"] for c in train])
    audio = torch.stack([c["audio"] for c in train])
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(model(visual, audio), {}, "self").backward()
        optimizer.step()
    report = cross_modal_accuracy(model, [clip(seed) for seed in range(100, 140)], background=2)
    assert report["clips"] == 40
    assert report["a2v"] >= 0.9 and report["v2a"] >= 0.9  # untrained: 0.1-0.6 (3 seeds)
