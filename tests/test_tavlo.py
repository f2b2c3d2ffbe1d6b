"""TAVLO: the model contract, the rectangular audio kernel, the positional encodings, the AST
blocks' mixing of space and time, and the temporal MIL loss."""

from __future__ import annotations

import math

import pytest
import torch

from avloc.models import create_model, list_models
from avloc.models.contrastive import cosine_map, temporal_mil_loss
from avloc.models.tavlo import TAVLO, sinusoidal_encoding, spatial_encoding
from avloc.types import AVOutput, AvlocError
from model_checks import assert_every_parameter_gets_a_gradient

B, T, CV, CA, K = 2, 4, 16, 8, 5
C, DT = 16, 8  # tiny token width: C + D_t = 24


def features(t: int = T, audio_size: tuple[int, int] = (2, 3), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, t, CV, 4, 4, generator=g), torch.randn(B, t, CA, *audio_size, generator=g)


def small(**kwargs) -> TAVLO:
    torch.manual_seed(0)
    kwargs = {"channels": C, "temporal_channels": DT, "heads": 2, **kwargs}
    return create_model("tavlo", visual_channels=CV, audio_channels=CA, num_classes=K, **kwargs)


@pytest.mark.parametrize("t", [1, 4, 40, 64])
@pytest.mark.parametrize("kwargs", [{}, {"depth": 1, "mlp_ratio": 2.0, "negative": "max"}])
def test_contract(t, kwargs):
    assert "tavlo" in list_models() and TAVLO.supervisions == ("self",)
    model = small(**kwargs)
    visual, audio = features(t)
    out = model(visual, audio)
    assert isinstance(out, AVOutput) and out.logits is None and out.video_logits is None
    assert out.heatmap.shape == (B, t, 4, 4)
    assert out.embeddings["audio"].shape == (B, t, C + DT)
    assert out.embeddings["visual"].shape == (B, t, C + DT, 4, 4)
    assert all(torch.isfinite(x).all() for x in (out.heatmap, *out.embeddings.values()))
    assert out.heatmap.abs().max() <= 1 + 1e-6  # a cosine similarity

    loss = model.loss(out, {}, "self")
    assert loss.ndim == 0 and torch.isfinite(loss)
    g = torch.Generator().manual_seed(1)
    probe = (out.heatmap * torch.randn(out.heatmap.shape, generator=g)).sum()  # the heat map's own gradients
    assert_every_parameter_gets_a_gradient(model, loss + probe)

    model.eval()
    with torch.no_grad():
        evaluated = model(visual, audio)
    assert type(evaluated) is AVOutput and evaluated.embeddings.keys() == out.embeddings.keys()
    assert evaluated.logits is None and evaluated.video_logits is None


def test_defaults_build_and_run():
    model = create_model("tavlo", visual_channels=CV, audio_channels=CA, num_classes=K)
    assert len(model.blocks) == 2 and model.blocks[0].spatial_attention.num_heads == 8
    with torch.no_grad():
        out = model(*features(t=2))
    assert out.embeddings["audio"].shape == (B, 2, 256 + 32)


def test_adam_steps_on_a_fixed_batch_lower_the_loss():
    model = small()
    visual, audio = features()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = model.loss(model(visual, audio), {}, "self")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_rectangular_kernel_gives_one_token_per_frame():
    model = small()
    assert model.audio_conv.weight.shape == (C, CA, 4, 2)  # the whole (frequency, time) extent of a step
    # A (4, 2) map, the VGGish-shaped encoders' on a 0.25-s step, is not pooled: one dot product.
    audio = torch.randn(B, T, CA, 4, 2)
    expected = torch.einsum("ocft,bncft->bno", model.audio_conv.weight, audio) + model.audio_conv.bias
    torch.testing.assert_close(model.audio_tokens(audio), expected)
    # Any other size is average-pooled to (4, 2) first: a (2, 1) map is repeated.
    small_map = torch.randn(B, T, CA, 2, 1)
    repeated = small_map.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)  # (.., 2, 1) -> (.., 4, 2)
    torch.testing.assert_close(model.audio_tokens(small_map), model.audio_tokens(repeated))
    # Step t's token reads step t's audio only.
    changed = audio.clone()
    changed[:, 1] += 1.0
    difference = (model.audio_tokens(changed) - model.audio_tokens(audio)).abs().amax(dim=(0, 2))  # (T,)
    assert difference[1] > 1e-3 and torch.all(difference[[0, 2, 3]] == 0)


def test_sinusoidal_encodings_by_hand():
    positions = torch.tensor([0.0, 1.0, 2.0])
    # dim 4: frequencies 1 and 1/10000^(2/4) = 1/100; channels (sin, cos) per frequency.
    expected = torch.tensor([[math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)] for p in (0, 1, 2)])
    torch.testing.assert_close(sinusoidal_encoding(positions, 4), expected)
    # 2-D: the first half of the channels encodes the row, the second half the column.
    grid = spatial_encoding(2, 3, 8, torch.zeros(()))  # (8, 2, 3)
    rows, columns = sinusoidal_encoding(torch.arange(2.0), 4), sinusoidal_encoding(torch.arange(3.0), 4)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(grid[:, i, j], torch.cat([rows[i], columns[j]]))


def test_tokens_follow_eqs_4_to_6():
    model = small()
    visual, audio = features()
    tokens = model.tokens(visual, audio)  # (B, T, 1 + 16, C + D_t)
    assert tokens.shape == (B, T, 17, C + DT)
    # Eq. 5: the audio token of frame t, then PE_t(t).
    torch.testing.assert_close(tokens[:, :, 0, :C], model.audio_tokens(audio))
    temporal = sinusoidal_encoding(torch.arange(float(T)), DT)  # (T, D_t)
    torch.testing.assert_close(tokens[..., C:], temporal[None, :, None, :].expand(B, T, 17, DT))
    # Eq. 4: the projected visual map plus PE_s, positions in row-major order, then PE_t(t).
    projected = model.visual_projection(visual.flatten(0, 1)).unflatten(0, (B, T))  # (B, T, C, 4, 4)
    expected = (projected + spatial_encoding(4, 4, C, projected)).flatten(-2).transpose(-2, -1)  # (B, T, 16, C)
    torch.testing.assert_close(tokens[:, :, 1:, :C], expected)


def test_spatial_attention_mixes_a_frame_and_temporal_attention_mixes_frames():
    model = small().eval()
    visual, audio = features()
    changed = visual.clone()
    changed[:, 3, :, 0, 0] += 3.0  # one position of the last frame
    with torch.no_grad():
        out, moved = model(visual, audio), model(changed, audio)
    # Spatial: the audio token of frame 3 read the changed position; temporal: frame 0 did too.
    assert (out.embeddings["audio"][:, 3] - moved.embeddings["audio"][:, 3]).abs().max() > 1e-4
    assert (out.heatmap[:, 0] - moved.heatmap[:, 0]).abs().max() > 1e-4


def test_positional_encodings_tell_steps_and_positions_apart():
    model = small().eval()
    visual, audio = features()
    same_steps = visual[:, :1].expand(B, T, CV, 4, 4), audio[:, :1].expand(B, T, CA, 2, 3)
    flat = visual[..., :1, :1].expand(B, T, CV, 4, 4)  # one feature vector at every position
    with torch.no_grad():
        by_step = model(*same_steps).heatmap
        by_position = model(flat, audio).heatmap
    assert (by_step[:, 0] - by_step[:, 1]).abs().max() > 1e-4
    assert (by_position.amax(dim=(-2, -1)) - by_position.amin(dim=(-2, -1))).min() > 1e-4


def test_heatmap_and_loss_come_from_the_embeddings():
    model = small()
    out = model(*features())
    audio, visual = out.embeddings["audio"], out.embeddings["visual"]
    torch.testing.assert_close(out.heatmap, cosine_map(audio, visual))
    torch.testing.assert_close(model.loss(out, {}, "self"), temporal_mil_loss(audio, visual, 0.03, "mean"))
    torch.testing.assert_close(small(negative="max", temperature=0.5).loss(out, {}, "self"),
                               temporal_mil_loss(audio, visual, 0.5, "max"))
    one = model(*(x[:1] for x in features()))
    assert model.loss(one, {}, "self").item() == 0.0  # a single video has no negative bag


def test_bad_inputs_options_and_supervision():
    model = small()
    visual, audio = features()
    with pytest.raises(ValueError, match=r"expected audio features \(B, T, 8, h, w\)"):
        model(visual, audio[:, :, :4])
    with pytest.raises(ValueError, match="differ in"):
        model(visual[:, :2], audio)
    with pytest.raises(AvlocError, match="supervision 'self'"):
        model.loss(model(visual, audio), {}, "segment")
    bad = [
        ({"channels": 18}, "multiple of 4"),
        ({"temporal_channels": 7}, "positive even"),
        ({"depth": 0}, "depth"),
        ({"heads": 5}, "heads must divide"),
        ({"mlp_ratio": -1.0}, "mlp_ratio"),
        ({"audio_kernel": (4, 0)}, "audio_kernel"),
        ({"audio_kernel": (4,)}, "audio_kernel"),
        ({"temperature": -0.1}, "temperature"),
        ({"negative": "median"}, "option negative expects one of 'max', 'mean', got 'median'"),
    ]
    for kwargs, message in bad:
        with pytest.raises(AvlocError, match=message):
            small(**kwargs)
