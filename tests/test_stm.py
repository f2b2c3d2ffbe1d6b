"""STM and the model contract: shapes, gradients, the memory window, streaming, a tiny learning task.

Properties of the memory (causality, independence, streaming) are checked in eval mode: in
training mode BatchNorm mixes the statistics of every step of the batch.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from avloc.models import STM, create_model
from avloc.models.blocks import affinity_propagation, unit_vectors
from avloc.models.memory import VARIANTS, window_mask
from avloc.types import AVOutput, AvlocError, FeatureShapeError

B, T, CV, CA, K = 2, 4, 16, 8, 5
VISUAL_SIZE, AUDIO_SIZE = (4, 4), (2, 3)

# Every registered model with the common keyword arguments, then every STM variant.
CASES = [("stm", {})] + [("stm", {"variant": variant}) for variant in VARIANTS]  # every model: test_models_common


def features(t: int = T, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    visual = torch.randn(B, t, CV, *VISUAL_SIZE, generator=g)
    audio = torch.randn(B, t, CA, *AUDIO_SIZE, generator=g)
    return visual, audio


def small_stm(**kwargs) -> STM:
    torch.manual_seed(0)
    return create_model("stm", visual_channels=CV, audio_channels=CA, num_classes=K, channels=32, **kwargs).eval()


def assert_steps(a: AVOutput, b: AVOutput, steps: slice, same: bool = True, a_steps: slice | None = None) -> None:
    """Heat maps, logits and embeddings of ``b``'s ``steps`` equal (or, ``same=False``, differ
    from) those of ``a``'s ``a_steps`` (default: the same steps)."""
    a_steps = steps if a_steps is None else a_steps
    pairs = [(a.heatmap, b.heatmap), (a.logits, b.logits)]
    pairs += [(a.embeddings[key], b.embeddings[key]) for key in a.embeddings]
    if same:
        for x, y in pairs:
            torch.testing.assert_close(x[:, a_steps], y[:, steps], rtol=0, atol=1e-6)
    else:
        assert max((x[:, a_steps] - y[:, steps]).abs().max().item() for x, y in pairs) > 1e-4


@contextlib.contextmanager
def one_thread():
    """One intra-op thread: this machine's cores are shared, and oversubscription is slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}-{kw}" if kw else n for n, kw in CASES])
def test_outputs_and_gradients(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, visual_channels=CV, audio_channels=CA, num_classes=K, **kwargs)
    visual, audio = features()
    out = model(visual, audio)
    assert isinstance(out, AVOutput)
    assert out.heatmap.shape == (B, T, *VISUAL_SIZE)
    assert out.logits.shape == (B, T, K) and out.video_logits.shape == (B, K)
    tensors = [out.heatmap, out.logits, out.video_logits, *out.embeddings.values()]
    assert all(torch.isfinite(x).all() for x in tensors)
    torch.testing.assert_close(out.heatmap.sum(dim=(-2, -1)), torch.ones(B, T))

    # Random weights: a plain sum of the heat maps is constant and has no gradient.
    g = torch.Generator().manual_seed(1)
    loss = sum((x * torch.randn(x.shape, generator=g)).sum() for x in tensors)
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient for {pname}"

    model.eval()
    with torch.no_grad():
        evaluated = model(visual, audio)
    assert type(evaluated) is type(out)
    present = {key for key, value in vars(out).items() if value is not None}
    assert present == {key for key, value in vars(evaluated).items() if value is not None}
    assert evaluated.embeddings.keys() == out.embeddings.keys()


def test_variants_build_only_the_attention_they_use():
    def temporal(model: STM) -> list[str]:
        return sorted({name.split(".")[1] for name, _ in model.named_parameters() if name.startswith("memory.")})

    assert temporal(small_stm(variant="c+u")) == ["audio_memory", "audio_visual_memory", "visual_memory"]
    assert temporal(small_stm(variant="u")) == ["audio_memory", "visual_memory"]
    assert temporal(small_stm(variant="none")) == []


def test_window_mask():
    causal = window_mask(4, 4, 3)
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal, expected)
    assert torch.equal(window_mask(5, 5, 2)[4], torch.tensor([0, 0, 1, 1, 1], dtype=torch.bool))
    symmetric = window_mask(5, 5, 2, causal=False)  # t-1..t+1, nothing past either end
    assert symmetric[0].tolist() == [True, True, False, False, False]
    assert symmetric[4].tolist() == [False, False, False, True, True]
    # Streaming: one query after a bank of three steps sees all four.
    assert window_mask(1, 4, 3).tolist() == [[True, True, True, True]]


@pytest.mark.parametrize("variant", ["c+u", "u"])
def test_causal_memory_ignores_the_future(variant):
    model = small_stm(variant=variant)
    visual, audio = features()
    changed_visual, changed_audio = visual.clone(), audio.clone()
    changed_visual[:, -1] += torch.randn_like(visual[:, -1])
    changed_audio[:, -1] += torch.randn_like(audio[:, -1])
    with torch.no_grad():
        out, changed = model(visual, audio), model(changed_visual, changed_audio)
    assert_steps(out, changed, slice(0, T - 1))
    assert_steps(out, changed, slice(T - 1, T), same=False)


def test_causal_prefix_equals_the_short_clip():
    """No wrap-around: step t of a clip sees exactly what a clip ending at t sees."""
    model = small_stm()
    visual, audio = features(t=6)
    with torch.no_grad():
        full = model(visual, audio)
        for t in range(1, 7):
            assert_steps(model(visual[:, :t], audio[:, :t]), full, slice(0, t))


def test_symmetric_memory_reads_the_future_but_never_wraps_around():
    model = small_stm(causal=False, memory_size=2)  # window t-1..t+1
    visual, audio = features(t=6)
    with torch.no_grad():
        out = model(visual, audio)
        last = visual.clone()
        last[:, 5] += torch.randn_like(visual[:, 5])
        changed = model(last, audio)
        # Step 5 reaches step 4 through line 3 and step 3 through line 5 (x_av of step 4).
        assert_steps(out, changed, slice(0, 3))  # a negative index at t=0 would read step 5
        for t in (3, 4, 5):
            assert_steps(out, changed, slice(t, t + 1), same=False)
        first = visual.clone()
        first[:, 1] += torch.randn_like(visual[:, 1])
        assert_steps(out, model(first, audio), slice(0, 1), same=False)  # step 0 reads step 1


def test_variant_none_makes_steps_independent():
    model = small_stm(variant="none")
    visual, audio = features()
    with torch.no_grad():
        full = model(visual, audio)
        for t in range(T):
            alone = model(visual[:, t : t + 1], audio[:, t : t + 1])
            assert_steps(alone, full, slice(t, t + 1), a_steps=slice(0, 1))


@pytest.mark.parametrize("variant", VARIANTS)
def test_streaming_equals_the_causal_forward(variant):
    model = small_stm(variant=variant, memory_size=3)
    visual, audio = features(t=7)
    with torch.no_grad():
        full = model(visual, audio)
        state = model.init_state()
        steps = []
        for t in range(7):
            out, state = model.step(visual[:, t], audio[:, t], state)
            assert len(state) == min(t + 1, 3)
            steps.append(out)
    torch.testing.assert_close(torch.cat([s.heatmap for s in steps], 1), full.heatmap, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, rtol=0, atol=1e-5)
    for key in full.embeddings:
        streamed = torch.cat([s.embeddings[key] for s in steps], 1)
        torch.testing.assert_close(streamed, full.embeddings[key], rtol=0, atol=1e-5)


def test_streaming_needs_a_causal_model():
    model = small_stm(causal=False)
    visual, audio = features()
    with pytest.raises(AvlocError, match="causal"):
        model.step(visual[:, 0], audio[:, 0], model.init_state())


@pytest.mark.parametrize(("train_visual", "train_audio"), [(None, None), (False, False), (True, False),
                                                        (False, True), (True, True)])
def test_end_to_end_trains_exactly_the_encoders_asked_for(train_visual, train_audio):
    frames = torch.rand(1, 2, 3, 32, 32)  # small-visual: stride 16 -> 2 x 2
    logmel = torch.randn(1, 2, 1, 64, 23)  # small-audio: stride 16 -> 4 x 2
    flags = {key: value for key, value in (("train_visual", train_visual), ("train_audio", train_audio))
             if value is not None}
    model = create_model("stm", visual_encoder="small-visual", audio_encoder="small-audio", num_classes=K,
                         channels=32, **flags)
    trains = {"visual": bool(train_visual), "audio": True if train_audio is None else train_audio}  # authors' split
    assert model.visual_channels == 128 and model.audio_channels == 128
    model.train()
    out = model(frames=frames, logmel=logmel)
    assert out.heatmap.shape == (1, 2, 2, 2) and out.logits.shape == (1, 2, K)
    out.video_logits.sum().backward()
    for modality, encoder in (("visual", model.visual_encoder), ("audio", model.audio_encoder)):
        assert encoder.training == trains[modality]  # a frozen encoder keeps its BatchNorm statistics
        assert all(p.requires_grad == trains[modality] for p in encoder.parameters())
        grads = [p.grad is not None for p in encoder.parameters()]
        assert all(grads) if trains[modality] else not any(grads), modality
    # Everything outside the encoders always trains.
    head = [name for name, p in model.named_parameters() if not name.startswith(("visual_encoder.", "audio_encoder."))]
    assert head and all(dict(model.named_parameters())[name].requires_grad for name in head)
    model.eval()
    streamed, state = model.step(frames=frames[:, 0], logmel=logmel[:, 0], state=model.init_state())
    assert streamed.heatmap.shape == (1, 1, 2, 2) and len(state) == 1
    with pytest.raises(TypeError, match="exactly one"):
        model(frames=frames, logmel=logmel, visual=torch.randn(1, 2, 128, 2, 2))
    with pytest.raises(FeatureShapeError, match=r"expected frames \(B, T, 3, H, W\), got \(1, 2, 1, 32, 32\)"):
        model(frames=frames[:, :, :1], logmel=logmel)


def test_bad_inputs_and_options():
    model = small_stm()
    visual, audio = features()
    with pytest.raises(ValueError, match=r"visual features \(B, T, 16, h, w\)"):
        model(visual[:, :, :8], audio)
    with pytest.raises(ValueError, match="differ in"):
        model(visual, audio[:, :2])
    with pytest.raises(ValueError, match="no visual encoder"):
        model(frames=torch.rand(B, T, 3, 32, 32), audio=audio)
    with pytest.raises(AvlocError, match="stm: option variant expects one of 'c\\+u', 'u', 'none', got 'cu'"):
        small_stm(variant="cu")
    with pytest.raises(AvlocError, match="heads must divide"):
        small_stm(heads=3)
    with pytest.raises(AvlocError, match="visual_channels"):
        create_model("stm", num_classes=K)


# The learning task: 4 x 4 visual maps whose channels hold an identity code (8 dims) and a class
# code (4 dims, one-hot). The audio map carries the identity of the sounding position; the
# other positions have random identities and random classes. The label is the class of the
# sounding position, so the classifier must find it by matching audio and visual.
IDENTITY, CLASSES, SIDE = 8, 4, 4


def sounding_task(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(visual (n, T, 12, 4, 4), audio (n, T, 8, 1, 2), label (n,), position (n,))``."""
    rows = torch.arange(n)
    label = torch.randint(CLASSES, (n,), generator=g)
    position = torch.randint(SIDE * SIDE, (n,), generator=g)
    identity = torch.randn(n, IDENTITY, generator=g)
    visual_identity = torch.randn(n, T, IDENTITY, SIDE * SIDE, generator=g)
    visual_identity[rows, :, :, position] = identity[:, None] + 0.3 * torch.randn(n, T, IDENTITY, generator=g)
    classes = torch.randint(CLASSES, (n, SIDE * SIDE), generator=g)
    classes[rows, position] = label
    class_code = torch.nn.functional.one_hot(classes, CLASSES).float().transpose(1, 2)  # (n, 16, 4) -> (n, 4, 16)
    visual = torch.cat([visual_identity, class_code[:, None].expand(n, T, CLASSES, SIDE * SIDE)], dim=2)
    visual = visual.view(n, T, IDENTITY + CLASSES, SIDE, SIDE)  # (n, T, 12, 16) -> (n, T, 12, 4, 4)
    audio = identity[:, None, :, None, None] + 0.3 * torch.randn(n, T, IDENTITY, 1, 2, generator=g)
    return visual, audio, label, position


@pytest.mark.parametrize(("options", "min_accuracy"), [({}, 0.4), ({"spatial_similarity": "dot"}, 0.8)],
                         ids=["cosine-default", "dot"])
def test_tiny_stm_learns_to_localise_the_sounding_position(options, min_accuracy):
    """Both similarities find the sounding position. Cosine at temperature 1 (the default) bounds
    the logits to [-1, 1], so its map peaks near 0.12 of 16 cells and the attended sum mixes in
    the other positions' class codes: the class is read less well here (about 52%, chance 25%)
    than with the dot product (about 98%)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = create_model("stm", visual_channels=IDENTITY + CLASSES, audio_channels=IDENTITY,
                         num_classes=CLASSES, channels=32, **options)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with one_thread():
        for _ in range(200):
            visual, audio, label, _ = sounding_task(64, g)
            loss = torch.nn.functional.cross_entropy(model(visual, audio).video_logits, label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        visual, audio, label, position = sounding_task(512, torch.Generator().manual_seed(1))
        with torch.no_grad():
            out = model(visual, audio)
    hits = (out.heatmap.flatten(2).argmax(dim=-1) == position[:, None]).float().mean().item()
    accuracy = (out.video_logits.argmax(dim=-1) == label).float().mean().item()
    assert hits > 0.8, f"argmax of the heat map on the sounding position in {hits:.0%} (random: 6%)"
    assert accuracy > min_accuracy, f"accuracy {accuracy:.0%} (chance: 25%)"


def projected(model: STM, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_v (B, T, C, h, w)`` and ``phi(x_a) (B, T, C)``: the memory layer's inputs, by hand."""
    b, t = visual.shape[:2]
    x_v = model.visual_projection(visual.flatten(0, 1)).unflatten(0, (b, t))  # (B*T, C, h, w) -> (B, T, C, h, w)
    x_a = model.audio_projection(audio.flatten(0, 1)).unflatten(0, (b, t))  # (B*T, C, m, n) -> (B, T, C, m, n)
    return x_v, x_a.amax(dim=(-2, -1))


def hand_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the two last dims, written out: ``exp(x - max) / sum exp(x - max)``."""
    e = (logits - logits.amax(dim=(-2, -1), keepdim=True)).exp()
    return e / e.sum(dim=(-2, -1), keepdim=True)


def test_spatial_attention_defaults_to_cosine_with_temperature_one():
    """The authors' released training runs with --normalize: L2-normalised vectors, temperature 1."""
    model = small_stm(variant="none", affinity_temperature=None)  # the paper's map, unrefined
    assert (model.spatial_similarity, model.spatial_temperature) == ("cosine", 1.0)
    visual, audio = features()
    with torch.no_grad():
        out = model(visual, audio)
        x_v, a = projected(model, visual, audio)
        cosine = (x_v * a[..., None, None]).sum(2) / (x_v.norm(dim=2) * a.norm(dim=-1)[..., None, None])
        torch.testing.assert_close(out.heatmap, hand_softmax(cosine))
        assert cosine.abs().max() <= 1 + 1e-6  # bounded logits: the map cannot collapse onto one cell
        # dot keeps its own default, sqrt(C) (eq. 2's scaling); 1.0 is eq. 1 exactly.
        dot = small_stm(spatial_similarity="dot")
        assert dot.spatial_temperature == 32**0.5
        scaled = small_stm(spatial_similarity="dot", spatial_temperature=32**0.5)
        assert small_stm().affinity_temperature == 0.1  # refined by default (see the next tests)
        torch.testing.assert_close(dot(visual, audio).heatmap, scaled(visual, audio).heatmap)
        assert not torch.allclose(small_stm()(visual, audio).heatmap, dot(visual, audio).heatmap)


@pytest.mark.parametrize("variant", ["none", "u"])
def test_without_line_5_the_map_is_the_line_4_alpha(variant):
    """f(x_a, alpha * x_v) would apply alpha twice; the authors' code reads alpha itself.

    Checked with the dot product: the cosine of alpha * x_v equals that of x_v (alpha > 0), so
    only an unnormalised similarity tells the two apart.
    """
    model = small_stm(variant=variant, spatial_similarity="dot", spatial_temperature=1.0, affinity_temperature=None)
    visual, audio = features()
    with torch.no_grad():
        out = model(visual, audio)
        torch.testing.assert_close(out.heatmap, out.embeddings["alpha"], rtol=0, atol=0)
        if variant == "none":  # no memory at all: alpha of the projected inputs, by hand
            x_v, a = projected(model, visual, audio)
            alpha = hand_softmax((x_v * a[..., None, None]).sum(2))  # (B, T, h, w)
            torch.testing.assert_close(out.heatmap, alpha)
            twice = hand_softmax((alpha[:, :, None] * x_v * a[..., None, None]).sum(2))
            assert (out.heatmap - twice).abs().max() > 1e-3  # what the map used to be


def test_audio_dropout_one_keeps_the_audio_vector_out_of_the_classifier_always():
    visual, audio = features()
    model = small_stm(audio_dropout=1.0).train()
    model(visual, audio).video_logits.sum().backward()
    audio_half = model.classifier.fc1.weight.grad[:, 32:]  # columns of phi(hat x_a) in O^t = [sum x_av ; phi(x_a)]
    assert audio_half.abs().max() == 0 and model.classifier.fc1.weight.grad[:, :32].abs().max() > 0
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            before = model(visual, audio).logits
            model.classifier.fc1.weight[:, 32:] += torch.randn_like(model.classifier.fc1.weight[:, 32:])
            torch.testing.assert_close(model(visual, audio).logits, before, rtol=0, atol=0)
    with pytest.raises(AvlocError, match="audio_dropout"):
        small_stm(audio_dropout=1.5)


def test_audio_dropout_feeds_its_expectation_at_inference():
    visual, audio = features(t=2)
    model = small_stm(audio_dropout=0.5)
    with torch.no_grad():
        out = model(visual, audio)  # eval: (1 - p) * phi(hat x_a)
        emb = out.embeddings
        scaled = model.classifier(torch.cat([emb["audio_visual"], 0.5 * emb["audio"]], dim=-1))
        torch.testing.assert_close(out.logits, scaled)
        model.train()
        kept = set()
        for seed in range(8):  # training: each sample's whole audio vector, or nothing
            torch.manual_seed(seed)
            out = model(visual, audio)
            emb = out.embeddings
            for b in range(B):
                full, none = (model.classifier(torch.cat([emb["audio_visual"][b], s * emb["audio"][b]], dim=-1))
                              for s in (1.0, 0.0))
                if torch.allclose(out.logits[b], full):
                    kept.add(True)
                else:
                    torch.testing.assert_close(out.logits[b], none)
                    kept.add(False)
        assert kept == {True, False}


def test_affinity_propagation_spreads_a_peak_over_the_cells_alike_to_it():
    """Cells 0-3 share one feature direction, the others another: a peak on cell 0 spreads evenly
    over cells 0-3 and hardly anywhere else; a high temperature makes every cell alike."""
    object_cells = torch.zeros(16, dtype=torch.bool)
    object_cells[:4] = True
    directions = torch.eye(8)
    features = torch.where(object_cells[None], directions[0][:, None], directions[1][:, None])  # (8, 16)
    features = (features + 0.01 * torch.randn(8, 16, generator=torch.Generator().manual_seed(0))).view(1, 8, 4, 4)
    peak = torch.zeros(1, 4, 4)
    peak[0, 0, 0] = 1.0
    spread = affinity_propagation(peak, features, 0.1).flatten()  # (16,)
    torch.testing.assert_close(spread.sum(), torch.tensor(1.0))
    assert spread[object_cells].min() > 0.24 and spread[~object_cells].max() < 1e-3
    flat = affinity_propagation(peak, features, 1e3).flatten()
    torch.testing.assert_close(flat, torch.full((16,), 1 / 16), rtol=0, atol=1e-3)


def test_the_map_is_the_papers_map_spread_over_the_encoder_cells():
    """With refinement (the default) the heat map is the unrefined map of the same weights, one
    affinity step over the input visual maps; the classifier's outputs do not change."""
    visual, audio = features()
    refined, plain = small_stm(), small_stm(affinity_temperature=None)
    with torch.no_grad():
        out, paper = refined(visual, audio), plain(visual, audio)
    torch.testing.assert_close(out.heatmap, affinity_propagation(paper.heatmap, visual, 0.1))
    assert (out.heatmap - paper.heatmap).abs().max() > 1e-3
    torch.testing.assert_close(out.logits, paper.logits, rtol=0, atol=0)
    for bad in (0.0, -1.0):
        with pytest.raises(AvlocError, match="affinity_temperature"):
            small_stm(affinity_temperature=bad)


@pytest.mark.parametrize("dim", [-3, -2, -1])
def test_unit_vectors_equal_f_normalize_and_keep_zero_vectors_zero(dim):
    x = torch.randn(2, 5, 7, 3) * 10.0 ** torch.randint(-3, 4, (2, 1, 1, 1)).float()
    x[0, :, :, 0] = 0.0  # zero vectors along dims -3 and -2: F.normalize leaves them zero
    x.requires_grad_(True)
    unit = unit_vectors(x, dim)
    torch.testing.assert_close(unit, torch.nn.functional.normalize(x, dim=dim), rtol=1e-6, atol=1e-7)
    nonzero = x.detach().abs().sum(dim=dim) > 0
    norms = unit.detach().norm(dim=dim)
    torch.testing.assert_close(norms[nonzero], torch.ones(int(nonzero.sum())))
    assert (norms[~nonzero] == 0).all() and (~nonzero).any() == (dim != -1)
    unit.sum().backward()  # differentiable, finite even at the zero vectors
    assert torch.isfinite(x.grad).all()
