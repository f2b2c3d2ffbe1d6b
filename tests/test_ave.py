"""AVE and DMRFE (ECCV 2018): attention (eqs. 2-4), fusions and DMRN (eqs. 5-6) by hand, MIL
averaging (eq. 7), the DMRFE probability average, and the model contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from avloc.models import create_model
from avloc.models.ave import (
    AVE,
    FUSIONS,
    AudioGuidedAttention,
    DMRNBlock,
    average_probabilities,
    make_fusion,
)
from avloc.types import AVOutput, AvlocError
from model_checks import assert_adam_lowers, assert_every_parameter_gets_a_gradient

B, T, CV, CA, K = 2, 4, 16, 8, 5
VISUAL_SIZE, AUDIO_SIZE = (4, 3), (2, 2)
CASES = [("ave", {"fusion": fusion}) for fusion in FUSIONS] + [("dmrfe", {})]
IDS = [f"ave-{fusion}" for fusion in FUSIONS] + ["dmrfe"]


def features(t: int = T, seed: int = 0, size: tuple[int, int] = VISUAL_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, t, CV, *size, generator=g), torch.randn(B, t, CA, *AUDIO_SIZE, generator=g)


def small(name: str = "ave", **kwargs) -> AVE:
    torch.manual_seed(0)
    sizes = {"attention_channels": 12, "attention_hidden": 6, "lstm_hidden": 8}
    return create_model(name, visual_channels=CV, audio_channels=CA, num_classes=K, **{**sizes, **kwargs})


def identity_(linear: nn.Linear, scale: float = 1.0) -> None:
    with torch.no_grad():
        linear.weight.copy_(scale * torch.eye(linear.out_features, linear.in_features))
        linear.bias.zero_()


# --- DMRN (eqs. 5-6) and the other fusions, by hand ---------------------------------------------


def test_dmrn_block_by_hand():
    # U_a = identity -> tanh -> identity, i.e. tanh(x); U_v = 2 * tanh(x) (second layer scaled by 2).
    block = DMRNBlock(2)
    identity_(block.audio_transform[0]), identity_(block.audio_transform[2])
    identity_(block.visual_transform[0]), identity_(block.visual_transform[2], scale=2.0)
    a, v = [0.5, -1.0], [1.0, 0.25]
    merged = [0.5 * (math.tanh(a[i]) + 2 * math.tanh(v[i])) for i in range(2)]  # f(h_a, h_v), additive
    # merged = [0.5 * (0.46212 + 1.52319), 0.5 * (-0.76159 + 0.48979)] = [0.99265, -0.13590]
    audio_out = [math.tanh(a[i] + merged[i]) for i in range(2)]  # eq. 5: tanh(1.49265), tanh(-1.13590)
    visual_out = [math.tanh(v[i] + merged[i]) for i in range(2)]  # eq. 6: tanh(1.99265), tanh(0.11410)
    got_audio, got_visual = block(torch.tensor([a]), torch.tensor([v]))
    torch.testing.assert_close(got_audio, torch.tensor([audio_out]))
    torch.testing.assert_close(got_visual, torch.tensor([visual_out]))
    assert got_audio[0, 0].item() == pytest.approx(0.90381, abs=1e-4)

    dmrn = make_fusion("dmrn", 2)
    dmrn.blocks[0].load_state_dict(block.state_dict())
    joint = dmrn(torch.tensor([a]), torch.tensor([v]))  # h* = average of the two updated states
    torch.testing.assert_close(joint, 0.5 * (torch.tensor([audio_out]) + torch.tensor([visual_out])))


def test_stacked_dmrn_blocks_feed_each_other():
    dmrn = make_fusion("dmrn", 3, dmrn_blocks=2)
    a, v = torch.randn(2, 3), torch.randn(2, 3)
    a1, v1 = dmrn.blocks[0](a, v)
    a2, v2 = dmrn.blocks[1](a1, v1)
    torch.testing.assert_close(dmrn(a, v), 0.5 * (a2 + v2))


def test_concat_additive_gated_by_hand():
    a, v = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 3.0]])
    torch.testing.assert_close(make_fusion("concat", 2)(a, v), torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    torch.testing.assert_close(make_fusion("additive", 2)(a, v), torch.tensor([[1.5, 1.0]]))
    gated = make_fusion("gated", 2)
    identity_(gated.gate)  # gate = sigmoid(h_v)
    sigmoid = [1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(-3.0))]  # [0.62246, 0.95257]
    torch.testing.assert_close(gated(a, v), torch.tensor([[1.0 * sigmoid[0], -2.0 * sigmoid[1]]]))


# --- attention (eqs. 2-4) ------------------------------------------------------------------------


def test_attention_by_hand():
    # Cv = Ca = d = hidden = 1, every weight 1, no biases: x_i = tanh(relu(v_i) + relu(a)).
    attention = AudioGuidedAttention(1, 1, channels=1, hidden=1)
    for linear in (attention.visual_transform[0], attention.audio_transform[0]):
        identity_(linear)
    for linear in (attention.visual_weight, attention.audio_weight, attention.score):
        nn.init.ones_(linear.weight)
    visual = torch.tensor([0.0, 1.0, -1.0, 2.0]).view(1, 1, 2, 2)  # (N, Cv, h, w)
    audio = torch.tensor([[0.5]])  # (N, Ca)
    scores = [math.tanh(max(x, 0.0) + 0.5) for x in (0.0, 1.0, -1.0, 2.0)]  # [0.46212, 0.90515, 0.46212, 0.98661]
    total = sum(math.exp(s) for s in scores)
    weights = [math.exp(s) / total for s in scores]
    attended, got = attention(visual, audio)
    torch.testing.assert_close(got, torch.tensor(weights).view(1, 2, 2))
    # eq. 2: the weighted sum of the *input* visual features, not of U_v(v).
    expected = sum(w * x for w, x in zip(weights, (0.0, 1.0, -1.0, 2.0)))
    torch.testing.assert_close(attended, torch.tensor([[expected]]))


def test_heatmap_is_the_attention_and_follows_the_audio():
    model = small().eval()
    visual, audio = features()
    out = model(visual, audio)
    torch.testing.assert_close(out.heatmap.sum(dim=(-2, -1)), torch.ones(B, T))
    positions = visual.flatten(-2)  # (B, T, Cv, h, w) -> (B, T, Cv, h*w)
    attended = (positions * out.heatmap.flatten(-2).unsqueeze(2)).sum(-1)  # (B, T, Cv)
    torch.testing.assert_close(out.embeddings["attended_visual"], attended)
    other = model(visual, features(seed=1)[1])
    assert (other.heatmap - out.heatmap).abs().max() > 1e-4  # audio-guided


# --- weak supervision (MIL, eq. 7) ---------------------------------------------------------------


def test_video_logits_average_the_step_logits():
    model = small()
    out = model(*features())
    torch.testing.assert_close(out.video_logits, out.logits.mean(dim=1))
    max_model = small(temporal_pool="max")
    out = max_model(*features())
    torch.testing.assert_close(out.video_logits, out.logits.amax(dim=1))


def test_mil_loss_by_hand():
    # Two steps m_1 = (1, 0, 0), m_2 = (0, 2, 0): m^ = (0.5, 1, 0), softmax, cross-entropy with class 1.
    logits = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    output = AVOutput(heatmap=torch.zeros(1, 2, 1, 1), logits=logits, video_logits=logits.mean(dim=1))
    expected = -math.log(math.exp(1.0) / (math.exp(0.5) + math.exp(1.0) + math.exp(0.0)))  # -log(2.71828 / 5.36700)
    loss = small().loss(output, {"label": torch.tensor([1])}, "video")
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.68027, abs=1e-5)
    # supervised: the mean of the per-step cross-entropies with labels (0, 1)
    step_expected = 0.5 * (-math.log(math.e / (math.e + 2)) - math.log(math.exp(2) / (math.exp(2) + 2)))
    loss = small().loss(output, {"step_labels": torch.tensor([[0, 1]])}, "segment")
    assert loss.item() == pytest.approx(step_expected, abs=1e-6)


# --- DMRFE ---------------------------------------------------------------------------------------


def test_average_probabilities_by_hand():
    z1, z2 = torch.tensor([0.0, math.log(3.0)]), torch.tensor([math.log(3.0), 0.0])  # (1/4, 3/4), (3/4, 1/4)
    combined = average_probabilities([z1, z2])
    torch.testing.assert_close(combined.softmax(-1), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(combined.exp(), torch.tensor([0.5, 0.5]))  # log-probabilities already
    assert average_probabilities([z1]) is z1


def test_dmrfe_averages_two_dmrn_members():
    model = small("dmrfe").eval()
    assert len(model.heads) == 2 and all(type(h.fusion).__name__ == "DMRN" for h in model.heads)
    first, second = (head.fusion.blocks[0].audio_transform[0].weight for head in model.heads)
    assert first is not second
    out = model(*features())
    states = out.embeddings["audio_state"], out.embeddings["visual_state"]
    probabilities = [head(*states).softmax(-1) for head in model.heads]
    torch.testing.assert_close(out.logits.softmax(-1), 0.5 * (probabilities[0] + probabilities[1]))
    assert (probabilities[0] - probabilities[1]).abs().max() > 1e-4  # two different members
    torch.testing.assert_close(out.video_logits, out.logits.mean(dim=1))


# --- the contract --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
@pytest.mark.parametrize("supervision", AVE.supervisions)
def test_contract_gradients_and_learning(name, kwargs, supervision):
    model = small(name, **kwargs)
    visual, audio = features()
    batch = {"label": torch.tensor([1, 3]), "step_labels": torch.tensor([[4, 1, 1, 4], [3, 3, 3, 3]])}
    for training in (True, False):
        model.train(training)
        out = model(visual, audio)
        assert isinstance(out, AVOutput)
        assert out.heatmap.shape == (B, T, *VISUAL_SIZE) and out.logits.shape == (B, T, K)
        assert out.video_logits.shape == (B, K)
        assert all(torch.isfinite(x).all() for x in (out.heatmap, out.logits, *out.embeddings.values()))
    model.train()
    assert_every_parameter_gets_a_gradient(model, model.loss(model(visual, audio), batch, supervision))
    assert_adam_lowers(model, lambda: model.loss(model(visual, audio), batch, supervision), 10, 3e-2, 0.8)


@pytest.mark.parametrize(("t", "size"), [(1, (1, 1)), (7, (3, 5))])
def test_any_number_of_steps_and_any_map_size(t, size):
    out = small().eval()(*features(t=t, size=size))
    assert out.heatmap.shape == (B, t, *size) and out.logits.shape == (B, t, K)


def test_defaults_are_the_papers():
    model = create_model("ave", visual_channels=512, audio_channels=128, num_classes=29)
    assert model.attention.visual_transform[0].out_features == 512  # d
    assert model.attention.visual_weight.out_features == 49  # k
    assert model.audio_lstm.lstm.hidden_size == 128 and model.audio_lstm.lstm.bidirectional
    assert type(model.heads[0].fusion).__name__ == "DMRN" and len(model.heads) == 1
    assert len(create_model("dmrfe", visual_channels=512, audio_channels=128, num_classes=29).heads) == 2


@pytest.mark.parametrize("kwargs", [{"fusion": "bilinear"}, {"audio_pool": "median"}, {"temporal_pool": "sum"},
                                    {"lstm_hidden": 0}, {"dmrn_blocks": 0}])
def test_invalid_options_raise(kwargs):
    with pytest.raises(AvlocError):
        small(**kwargs)


def test_an_ensemble_needs_members():
    with pytest.raises(AvlocError, match="members"):
        small("dmrfe", members=0)


def test_wrong_inputs_raise():
    visual, audio = features()
    with pytest.raises(ValueError, match="expected visual"):
        small()(visual[:, :, :3], audio)
    with pytest.raises(ValueError, match="differ in"):
        small()(visual, audio[:, :2])
