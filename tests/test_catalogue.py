"""avloc.catalogue: the torch-free tables the command line prints equal what the live code answers."""

from __future__ import annotations

import pytest

from avloc import catalogue
from avloc.cli import build_parser
from avloc.data.benchmarks.synth_scenes import RECIPES
from avloc.data.cache import DEFAULT_STORAGE, STORAGES
from avloc.devices import DEVICE_CHOICES
from avloc.models import list_models
from avloc.models._registry import describe_model
from avloc.models.encoders import create_encoder, list_encoders
from avloc.protocols import PROTOCOLS


def test_the_catalogue_lists_every_registered_model_in_order():
    assert [model["name"] for model in catalogue.MODELS] == list_models()


@pytest.mark.parametrize("name", list_models())
def test_each_model_entry_is_what_describe_model_says(name):
    (entry,) = [model for model in catalogue.MODELS if model["name"] == name]
    assert entry == describe_model(name)


def test_each_encoder_entry_is_what_the_encoder_says():
    live = []
    for name in list_encoders():
        encoder = create_encoder(name)
        live.append((name, encoder.modality, encoder.out_channels))
    assert list(catalogue.ENCODERS) == live


def _choices(command: str, flag: str) -> tuple:
    (sub,) = [action for action in build_parser()._actions if action.dest == "command"]
    (action,) = [action for action in sub.choices[command]._actions if flag in action.option_strings]
    return tuple(action.choices)


def test_flag_choices_spelled_out_in_the_cli_equal_the_live_ones():
    assert catalogue.DEVICE_CHOICES == DEVICE_CHOICES
    for command in ("extract", "train", "eval", "localize", "serve"):
        assert _choices(command, "--device") == DEVICE_CHOICES
    assert _choices("eval", "--protocol") == tuple(PROTOCOLS)
    assert _choices("demo", "--scenario") == tuple(RECIPES)
    assert catalogue.STORAGE_CHOICES == _choices("extract", "--storage") == STORAGES
    assert STORAGES[0] == DEFAULT_STORAGE
