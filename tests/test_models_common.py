"""The model contract, for every registered model: shapes, finiteness, gradients, learning, types."""

import math

import pytest
import torch

from avloc.models import create_model, list_models
from avloc.models.contract import LocalizationModel
from avloc.types import AVOutput, AvlocError

B, T, CV, CA, K = 4, 3, 16, 12, 5


def _batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "visual": torch.randn(B, T, CV, 4, 4, generator=generator),
        "audio": torch.randn(B, T, CA, 2, 2, generator=generator),
        "label": torch.tensor([0, 1, 2, 3]),
        "step_labels": torch.tensor([[0, 0, 4], [1, 1, 1], [4, 2, 2], [3, 3, 3]]),
    }


def _model(name: str) -> LocalizationModel:
    torch.manual_seed(0)
    return create_model(name, visual_channels=CV, audio_channels=CA, num_classes=K)


def _supervisions(name: str) -> tuple[str, ...]:
    return _model(name).supervisions


pytestmark = pytest.mark.usefixtures("one_thread")


CASES = [(name, supervision) for name in list_models() for supervision in _supervisions(name)]


@pytest.mark.parametrize("name", list_models())
def test_outputs_have_the_contract_shapes_in_train_and_eval(name):
    model, batch = _model(name), _batch()
    for training in (True, False):
        model.train(training)
        output = model(visual=batch["visual"], audio=batch["audio"])
        assert isinstance(output, AVOutput)
        assert output.heatmap.shape == (B, T, 4, 4) and torch.isfinite(output.heatmap).all()
        if output.logits is not None:
            assert output.logits.shape == (B, T, K) and torch.isfinite(output.logits).all()
            assert output.video_logits.shape == (B, K)
    model.eval()
    whole = model(visual=batch["visual"][:1].repeat(1, 5, 1, 1, 1), audio=batch["audio"][:1].repeat(1, 5, 1, 1, 1))
    assert whole.heatmap.shape == (1, 3 * 5, 4, 4)  # any number of steps


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_gets_a_gradient_from_some_supervision(name):
    batch, reached = _batch(), set()
    for supervision in _supervisions(name):
        model = _model(name).train()
        model.loss(model(visual=batch["visual"], audio=batch["audio"]), batch, supervision).backward()
        reached |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    missing = {n for n, p in _model(name).named_parameters() if p.requires_grad} - reached
    assert not missing, f"no gradient for {sorted(missing)}"


@pytest.mark.parametrize(("name", "supervision"), CASES)
def test_a_few_training_steps_lower_the_loss(name, supervision):
    model, batch = _model(name), _batch()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def evaluate() -> float:  # in training mode (batch statistics), with the same randomness each time
        torch.manual_seed(2)
        with torch.no_grad():
            return model.loss(model(visual=batch["visual"], audio=batch["audio"]), batch, supervision).item()

    before = evaluate()
    assert math.isfinite(before)
    for _ in range(25):
        optimizer.zero_grad()
        model.loss(model(visual=batch["visual"], audio=batch["audio"]), batch, supervision).backward()
        optimizer.step()
    assert evaluate() < before


@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_the_contract_and_streams_only_as_it_says(name):
    """A model that streams gives, chunk by chunk, the outputs of the whole clip; one that cannot
    says why in one line and refuses a stream; a declared common embedding has its shape."""
    model, batch = _model(name).eval(), _batch()
    assert isinstance(model, LocalizationModel) and model.supervisions
    if model.common_embedding:  # what cross-modal localisation reads: (B, T, D) vectors of one space
        with torch.no_grad():
            embeddings = model(visual=batch["visual"], audio=batch["audio"]).embeddings
        assert embeddings["audio"].ndim == 3 and embeddings["audio"].shape == embeddings["visual"].shape
        assert embeddings["audio"].shape[:2] == (B, T)
    refusal = model.stream_refusal()
    if refusal is not None:
        assert isinstance(refusal, str) and refusal and "\n" not in refusal
        with pytest.raises(AvlocError, match="cannot stream"):
            model.init_state()
        return
    with torch.no_grad():
        whole = model(visual=batch["visual"], audio=batch["audio"])
        first, state = model.stream(batch["visual"][:, :2], batch["audio"][:, :2], model.init_state())
        rest, _ = model.stream(batch["visual"][:, 2:], batch["audio"][:, 2:], state)
    torch.testing.assert_close(torch.cat([first.heatmap, rest.heatmap], dim=1), whole.heatmap, rtol=0, atol=1e-5)
