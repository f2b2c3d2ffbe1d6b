"""The model registry: duplicate names, unknown names, every model registered on import."""

from __future__ import annotations

import pytest
from torch import nn

from avloc.models import _registry, create_model, list_models, register_model
from avloc.models.contract import LocalizationModel
from avloc.types import AvlocError


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry, so that the test's models do not outlive it."""
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))


def test_list_models_holds_stm():
    assert "stm" in list_models()
    assert list_models() == sorted(list_models())


def test_duplicate_name_raises(registry):
    with pytest.raises(ValueError, match="already registered"):
        register_model("stm")(lambda: nn.Identity())


class _Width(LocalizationModel):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width


def test_register_and_create(registry):
    @register_model("identity-test")
    def identity(*, width: int = 1) -> _Width:
        return _Width(width)

    assert "identity-test" in list_models()
    assert create_model("identity-test", width=3).width == 3
    with pytest.raises(AvlocError, match="identity-test.*unexpected keyword"):
        create_model("identity-test", depth=3)


def test_a_builder_must_return_a_localization_model(registry):
    register_model("linear-test")(lambda: nn.Linear(1, 1))
    with pytest.raises(TypeError, match="linear-test.*returned a Linear, not a LocalizationModel"):
        create_model("linear-test")


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(AvlocError, match="unknown model 'nope'.*stm"):
        create_model("nope")


def test_model_names_are_case_insensitive():
    assert _registry.model_name("EZVSL") == "ezvsl" and _registry.model_name("Stm") == "stm"
    assert type(create_model("STM", visual_channels=8, audio_channels=8, num_classes=2)).__name__ == "STM"
    assert _registry.model_accepts("STM", "variant") and not _registry.model_accepts("STM", "nope")
    with pytest.raises(AvlocError, match="unknown model 'STMX'"):
        _registry.model_name("STMX")


@pytest.mark.parametrize("name", list_models())
def test_describe_model_reads_the_contract(name):
    described = _registry.describe_model(name.upper())
    model = create_model(name, visual_channels=8, audio_channels=8, num_classes=2)
    assert described["name"] == name
    assert described["paper"] and described["paper"] == model.paper
    assert described["supervisions"] == model.supervisions
    assert described["streams"] == model.stream_refusal()
    assert described["classifier"] == (name not in ("avdln", "ezvsl", "tavlo"))
