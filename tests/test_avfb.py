"""AVFB + SWAB (Ramaswamy & Das, WACV 2020): MFB, SWAB, eq. 12, MIL pooling, AVTGML by hand; the contract."""

from __future__ import annotations

import math

import pytest
import torch

from avloc.models import create_model
from avloc.models.avfb import (
    AVFB,
    SWAB,
    AVFBNet,
    MFBAttention,
    avtgml_loss,
    mil_mean,
    normalised_gram,
    segment_similarity,
)
from avloc.types import AVOutput, AvlocError

B, T, CV, CA, K = 4, 4, 16, 8, 5
VISUAL_SIZE, AUDIO_SIZE = (4, 4), (2, 2)


def features(t: int = T, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, t, CV, *VISUAL_SIZE, generator=g), torch.randn(B, t, CA, *AUDIO_SIZE, generator=g)


def labels(t: int = T, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"label": torch.randint(K, (B,), generator=g), "step_labels": torch.randint(K, (B, t), generator=g)}


def small_model(**kwargs) -> AVFBNet:
    torch.manual_seed(0)
    options = {"hidden": 16, "mfb_out": 32, **kwargs}
    return create_model("avfb", visual_channels=CV, audio_channels=CA, num_classes=K, **options)


# --- MFB attention (eqs. 3-6) ---------------------------------------------------------------


def hand_mfb(mfb: MFBAttention) -> None:
    """d_v = d_a = 2, k = 2, o = 2. U^T F = [F1, F2, F1 - F2, F1 + F2], V^T a = [a1, a2, a1, a2], W_z = [1, 2]."""
    with torch.no_grad():
        mfb.visual.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0], [1.0, 1.0]]))
        mfb.audio.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
        mfb.score.weight.copy_(torch.tensor([[1.0, 2.0]]))


# Two positions F^v_1 = [1, 2], F^v_2 = [3, -1]; audio a = [2, -1]. Sum pooling of windows of k = 2:
# z~ = [F1 a1 + F2 a2, (F1 - F2) a1 + (F1 + F2) a2]
#   position 1: [2 - 2, -2 - 3] = [0, -5]  -> sqrt: [0, -sqrt 5] -> L2: [0, -1]
#   position 2: [6 + 1, 8 - 2]  = [7, 6]   -> sqrt: [sqrt 7, sqrt 6] -> L2: [sqrt(7/13), sqrt(6/13)]
POSITIONS = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
AUDIO = torch.tensor([2.0, -1.0])
Z_BY_HAND = torch.tensor([[0.0, -1.0], [math.sqrt(7 / 13), math.sqrt(6 / 13)]])
SCORES = (-2.0, math.sqrt(7 / 13) + 2 * math.sqrt(6 / 13))  # W_z z_i
LAMBDA_2 = 1 / (1 + math.exp(SCORES[0] - SCORES[1]))
LAMBDA_BY_HAND = torch.tensor([1 - LAMBDA_2, LAMBDA_2])
MF_BY_HAND = (1 - LAMBDA_2) * POSITIONS[0] + LAMBDA_2 * POSITIONS[1]


def test_mfb_attention_by_hand():
    mfb = MFBAttention(2, 2, factor=2, out_features=2)
    hand_mfb(mfb)
    visual = POSITIONS[None].clone().requires_grad_(True)  # (1, S=2, Cv=2)
    audio = AUDIO[None]  # (1, Ca=2)
    torch.testing.assert_close(mfb.fuse(visual, audio)[0], Z_BY_HAND)
    attended, weights = mfb(visual, audio)
    torch.testing.assert_close(weights[0], LAMBDA_BY_HAND)
    torch.testing.assert_close(attended[0], MF_BY_HAND)
    attended.sum().backward()  # z~ has an exact 0: eq. 4's square root must not give inf / NaN there
    assert all(torch.isfinite(p.grad).all() for p in mfb.parameters()) and torch.isfinite(visual.grad).all()


def test_avfb_heatmap_is_lambda_on_the_grid_and_if_adds_lf_and_mf():
    torch.manual_seed(0)
    block = AVFB(2, 2, factor=2, out_features=2)
    hand_mfb(block.mfb)
    visual = POSITIONS.T.reshape(1, 1, 2, 1, 2)  # (S, Cv) -> (Cv, S) -> (B=1, T=1, Cv, h=1, w=2)
    audio = AUDIO.reshape(1, 1, 2)  # (B, T, Ca)
    fused, heatmap = block(visual, audio)
    torch.testing.assert_close(heatmap[0, 0, 0], LAMBDA_BY_HAND)  # position (0, j) = j-th position
    torch.testing.assert_close(fused[0, 0], block.lstm_fusion(visual, audio)[0, 0] + MF_BY_HAND)  # eq. 7


# --- SWAB (eqs. 9-11) -------------------------------------------------------------------------

# H = 2, T = 3; W_g = W_g' = I, biases 0, W_alpha = [1, 1]. h = [[1, 0], [0, -2], [3, 1]]:
# R_ave = [4/3, -1/3] -> g_ave = [4/3, 0]; R_max = [3, 1] -> g_max = [3, 1].
# relu(W_g' h_t) = [[1, 0], [0, 0], [3, 1]]; P_t = that * g~; alpha = softmax_t(P_t1 + P_t2).
H_SWAB = torch.tensor([[[1.0, 0.0], [0.0, -2.0], [3.0, 1.0]]])
G_TILDE = {"mean+max": (13 / 3, 1.0), "mean": (4 / 3, 0.0), "max": (3.0, 1.0)}


@pytest.mark.parametrize("pool", list(G_TILDE))
@pytest.mark.parametrize("rescale", [False, True])
def test_swab_by_hand(pool, rescale):
    swab = SWAB(2, pool=pool, rescale=rescale)
    with torch.no_grad():
        for layer in (swab.glob, swab.local):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
        swab.score.weight.fill_(1.0)
    g1, g2 = G_TILDE[pool]
    scores = [1 * g1, 0.0, 3 * g1 + 1 * g2]
    alpha = [math.exp(x) / sum(math.exp(y) for y in scores) for x in scores]
    alpha = [3 * a for a in alpha] if rescale else alpha  # rescaled: times T = 3
    torch.testing.assert_close(swab.segment_weights(H_SWAB)[0], torch.tensor(alpha))
    torch.testing.assert_close(swab(H_SWAB)[0], torch.tensor(alpha)[:, None] * H_SWAB[0])


def test_rescaled_segments_are_t_times_eq_11():
    model = small_model()
    visual, audio = features()
    out = model(visual, audio)
    for swab in (model.visual_swab, model.audio_swab):
        swab.rescale = False
    plain = model(visual, audio)
    for key in ("visual_segments", "audio_segments"):
        torch.testing.assert_close(out.embeddings[key], T * plain.embeddings[key])
    torch.testing.assert_close(out.heatmap, plain.heatmap)


# --- Aggregation (eq. 12) and MIL pooling (3.6) ------------------------------------------------


def test_segment_similarity_by_hand():
    h_a, h_v = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[3.0, -1.0]]])
    s_a, s_v = torch.tensor([[[0.5, 1.0]]]), torch.tensor([[[1.5, -2.0]]])
    # (1 - 3) (0.5 - 1.5) = 2; (2 + 1) (1 + 2) = 9
    torch.testing.assert_close(segment_similarity(h_a, h_v, s_a, s_v), torch.tensor([[[2.0, 9.0]]]))
    # The expanded form of eq. 12's second line.
    expanded = (h_a * s_a - h_v * s_a) + (h_v * s_v - h_a * s_v)
    torch.testing.assert_close(segment_similarity(h_a, h_v, s_a, s_v), expanded)


def test_model_aggregates_sim_and_the_four_features_into_the_classifier():
    model = small_model()
    captured = {}
    model.visual_lstm.register_forward_hook(lambda m, i, o: captured.update(h_v=o))
    model.audio_lstm.register_forward_hook(lambda m, i, o: captured.update(h_a=o))
    model.classifier.register_forward_hook(lambda m, i, o: captured.update(input=i[0]))
    out = model(*features())
    h_v, h_a = captured["h_v"], captured["h_a"]
    s_v, s_a = out.embeddings["visual_segments"], out.embeddings["audio_segments"]
    torch.testing.assert_close(out.embeddings["similarity"], (h_a - h_v) * (s_a - s_v))
    torch.testing.assert_close(captured["input"], torch.cat([(h_a - h_v) * (s_a - s_v), h_v, h_a, s_v, s_a], -1))


def test_mil_mean_averages_the_step_predictions():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [-1.0, 3.0]]])  # (B=1, T=3, K=2)
    p = [[math.exp(a) / (math.exp(a) + math.exp(b)), math.exp(b) / (math.exp(a) + math.exp(b))] for a, b in logits[0]]
    mean = [sum(row[k] for row in p) / 3 for k in range(2)]
    video = mil_mean(logits)
    torch.testing.assert_close(video.softmax(-1)[0], torch.tensor(mean))
    loss = torch.nn.functional.cross_entropy(video, torch.tensor([1]))
    torch.testing.assert_close(loss, torch.tensor(-math.log(mean[1])))


# --- AVTGML (eqs. 13-16) ----------------------------------------------------------------------


def test_avtgml_by_hand():
    # Clip 0: Z = [[1, 0], [0, 1]] -> G = I / sqrt 2;        Y+ = [[1, 0], [1, 0]] -> G = [[1, 1], [1, 1]] / 2
    # Clip 1: Z = [[1, 0], [1, 1]] -> G = [[1, 1], [1, 2]] / sqrt 7;  Y+ = [[2, 0], [0, 1]] -> G = diag(4, 1) / sqrt 17
    visual = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]])
    audio = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[2.0, 0.0], [0.0, 1.0]]])
    torch.testing.assert_close(normalised_gram(visual)[1], torch.tensor([[1.0, 1.0], [1.0, 2.0]]) / math.sqrt(7))
    d_pos = [2 / (math.sqrt(2) * 2), (4 + 2) / (math.sqrt(7) * math.sqrt(17))]
    d_neg = [(4 + 1) / (math.sqrt(2) * math.sqrt(17)), (1 + 1 + 1 + 2) / (math.sqrt(7) * 2)]  # audio of the other clip
    expected = sum(max(n - p + 0.7, 0.0) for p, n in zip(d_pos, d_neg)) / 2  # = 0.97264
    torch.testing.assert_close(avtgml_loss(visual, audio), torch.tensor(expected))
    assert abs(expected - 0.97264) < 1e-5


def test_avtgml_hinge_and_margin():
    # Clip 0: G(Z) = G(Y+) = diag(1, 0); clip 1: G(Z) = G(Y+) = diag(0, 1): d_pos = 1, d_neg = 0.
    visual = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    assert avtgml_loss(visual, visual.clone()).item() == 0.0  # max(0 - 1 + 0.7, 0)
    torch.testing.assert_close(avtgml_loss(visual, visual.clone(), margin=1.5), torch.tensor(0.5))


def test_avtgml_negative_is_the_next_clip_of_the_batch():
    g = torch.Generator().manual_seed(0)
    visual, audio = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)

    def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
        gx, gy = x @ x.T, y @ y.T
        return float((gx * gy).sum() / (gx.norm() * gy.norm()))

    terms = [max(cosine(visual[i], audio[(i + 1) % 3]) - cosine(visual[i], audio[i]) + 0.7, 0.0) for i in range(3)]
    torch.testing.assert_close(avtgml_loss(visual, audio), torch.tensor(sum(terms) / 3))


def test_avtgml_needs_two_clips_and_two_steps():
    with pytest.raises(AvlocError, match="at least 2 clips"):
        avtgml_loss(torch.randn(1, 4, 3), torch.randn(1, 4, 3))
    with pytest.raises(AvlocError, match="at least 2 steps"):
        avtgml_loss(torch.randn(2, 1, 3), torch.randn(2, 1, 3))


def test_self_loss_is_avtgml_on_the_segment_features():
    model = small_model(margin=0.5)
    out = model(*features())
    expected = avtgml_loss(out.embeddings["visual_segments"], out.embeddings["audio_segments"], margin=0.5)
    torch.testing.assert_close(model.loss(out, {}, "self"), expected)


# --- The contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, T])
def test_outputs_shapes_and_train_eval_types(t):
    torch.manual_seed(0)
    model = create_model("avfb", visual_channels=CV, audio_channels=CA, num_classes=K)  # the defaults
    visual, audio = features(t)
    out = model(visual, audio)
    assert isinstance(out, AVOutput)
    assert out.heatmap.shape == (B, t, *VISUAL_SIZE)
    assert out.logits.shape == (B, t, K) and out.video_logits.shape == (B, K)
    assert all(x.shape == (B, t, 128) for x in out.embeddings.values())
    tensors = [out.heatmap, out.logits, out.video_logits, *out.embeddings.values()]
    assert all(torch.isfinite(x).all() for x in tensors)
    torch.testing.assert_close(out.heatmap.sum(dim=(-2, -1)), torch.ones(B, t))
    model.eval()
    with torch.no_grad():
        evaluated = model(visual, audio)
    assert type(evaluated) is type(out) and evaluated.embeddings.keys() == out.embeddings.keys()
    torch.testing.assert_close(evaluated.logits, out.logits)  # no dropout, no BatchNorm


def test_heatmap_of_a_step_depends_on_that_step_alone():
    model = small_model().eval()
    visual, audio = features(t=6)
    with torch.no_grad():
        full = model(visual, audio).heatmap
        for t in range(6):
            torch.testing.assert_close(model(visual[:, t : t + 1], audio[:, t : t + 1]).heatmap[:, 0], full[:, t])


@pytest.mark.parametrize("supervision", AVFBNet.supervisions)
def test_gradients_reach_every_parameter(supervision):
    model = small_model()
    out = model(*features())
    model.loss(out, labels(), supervision).backward()
    for name, param in model.named_parameters():
        if supervision == "self" and name.startswith("classifier."):
            assert param.grad is None, f"{name}: the AVTGML loss does not use the classifier"
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient for {name}"


@pytest.mark.parametrize("supervision", AVFBNet.supervisions)
def test_adam_steps_lower_the_loss(supervision):
    model = small_model()
    visual, audio = features()
    batch = labels()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model.loss(model(visual, audio), batch, supervision)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0], f"{supervision}: {losses[0]:.4f} -> {losses[-1]:.4f}"


def test_supervisions_default_to_segment():
    assert AVFBNet.supervisions == ("segment", "video", "self")


def test_bad_options_and_inputs():
    for options, message in [
        ({"segment_pool": "sum"}, "option segment_pool expects one of 'mean\\+max', 'mean', 'max', got 'sum'"),
        ({"audio_pool": "median"}, "option audio_pool expects one of 'max', 'mean', got 'median'"),
        ({"mfb_factor": 0}, "mfb_factor must be >= 1"),
        ({"mfb_out": 0}, "mfb_out must be >= 1"),
        ({"hidden": 0}, "hidden must be >= 1"),
        ({"margin": -0.1}, "margin must be >= 0"),
    ]:
        with pytest.raises(AvlocError, match=message):
            small_model(**options)
    with pytest.raises(AvlocError, match="num_classes must be >= 1"):
        create_model("avfb", visual_channels=CV, audio_channels=CA, num_classes=0)
    model = small_model()
    visual, audio = features()
    with pytest.raises(ValueError, match=r"visual features \(B, T, 16, h, w\)"):
        model(visual[:, :, :8], audio)
    with pytest.raises(ValueError, match="differ in"):
        model(visual, audio[:, :2])
    with pytest.raises(AvlocError, match="unknown supervision 'boxes'"):
        model.loss(model(visual, audio), labels(), "boxes")
