"""Model options and training settings are typed: builder type hints, TrainConfig fields, run config files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import re

import pytest
import torch
import yaml
from tiny_features import train_args, write_feature_dataset

import avloc.train
from avloc.checkpoint import load_checkpoint, save_checkpoint
from avloc.cli import main
from avloc.config import CONFIG_NAME, TrainConfig, build_model, load_config, read_config_file, write_config_file
from avloc.trained import DEFAULT_MODEL, load_trained
from avloc.models import _registry, create_model
from avloc.models._registry import check_options
from avloc.types import AvlocError

CHANNELS = dict(visual_channels=8, audio_channels=8, num_classes=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_feature_dataset(tmp_path_factory.mktemp("tiny"), clips=12, steps=4)


@pytest.fixture
def captured(monkeypatch):
    """``avloc train`` builds its TrainConfig and stops: the config ``fit`` would have trained."""
    configs = []

    def fake_fit(config, resume=False, progress=True, device=None, skip_broken=False, precision="auto"):
        configs.append(config)
        return Path(config.out) / "best.pt"

    monkeypatch.setattr(avloc.train, "fit", fake_fit)
    return configs


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("avloc: error: ") and err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------------------------------
# Model options against the builders' type hints


@pytest.mark.parametrize(("options", "message"), [
    ({"causal": "False"}, "stm: option causal expects a bool (true/false), got 'False'"),
    ({"memory_size": 2.5}, "stm: option memory_size expects an int, got 2.5"),
    ({"heads": 1.0}, "stm: option heads expects an int, got 1.0"),
    ({"audio_dropout": float("nan")}, "stm: option audio_dropout expects a finite number, got nan"),
    ({"variant": 1}, "stm: option variant expects one of 'c+u', 'u', 'none', got 1"),
])
def test_create_model_refuses_a_value_of_another_type(options, message):
    with pytest.raises(AvlocError) as error:
        create_model("stm", **CHANNELS, **options)
    assert str(error.value) == message
    with pytest.raises(AvlocError, match="expects"):
        TrainConfig(dataset="d", model_options=options)


def test_an_unknown_option_lists_the_valid_ones():
    with pytest.raises(AvlocError, match="unexpected keyword argument 'bogus'; its options are .*memory_size"):
        create_model("stm", **CHANNELS, bogus=1)
    with pytest.raises(AvlocError) as error:
        TrainConfig(dataset="d", model="ezvsl", model_options={"variant": "u"})
    assert "ezvsl: got an unexpected keyword argument 'variant'" in str(error.value)
    assert "temperature" in str(error.value) and "num_classes" not in str(error.value)  # training sets it


def test_options_that_training_sets_are_refused():
    with pytest.raises(AvlocError, match="stm: option num_classes is set by the dataset's classes"):
        TrainConfig(dataset="d", model_options={"num_classes": 3})


def test_text_values_are_converted_by_the_expected_type():
    text = {"causal": "FALSE", "norm": "1", "memory_size": "+2", "audio_dropout": "1e-1", "spatial_temperature": "none",
            "variant": "u"}
    assert check_options("stm", text, parse_strings=True) == {
        "causal": False, "norm": True, "memory_size": 2, "audio_dropout": 0.1, "spatial_temperature": None,
        "variant": "u"}
    assert check_options("tavlo", {"audio_kernel": "4,2"}, parse_strings=True) == {"audio_kernel": [4, 2]}
    assert check_options("tavlo", {"audio_kernel": "[4, 2]"}, parse_strings=True) == {"audio_kernel": [4, 2]}
    for key, value, expected in [("memory_size", "2.5", "an int"), ("memory_size", "1.0", "an int"),
                                 ("causal", "maybe", "a bool (true/false)"), ("audio_dropout", "inf", "a finite number")]:
        with pytest.raises(AvlocError) as error:
            check_options("stm", {key: value}, parse_strings=True)
        assert str(error.value) == f"stm: option {key} expects {expected}, got {value!r}"
    with pytest.raises(AvlocError, match="audio_kernel expects a list \\(an int each\\), got '4.5,2'"):
        check_options("tavlo", {"audio_kernel": "4.5,2"}, parse_strings=True)


def test_python_values_are_not_parsed():
    assert check_options("stm", {"audio_dropout": 1}) == {"audio_dropout": 1.0}  # an int is a float
    for value in (True, "3", 3.0):
        with pytest.raises(AvlocError, match="memory_size expects an int"):
            check_options("stm", {"memory_size": value})


def test_literal_and_sequence_hints(monkeypatch):
    def toy(*, num_classes: int, mode: Literal["a", "b"] = "a", sizes: Sequence[int] = (1,),
            scale: float | None = None, anything=None) -> torch.nn.Module:
        return torch.nn.Identity()

    monkeypatch.setitem(_registry._MODELS, "toy", toy)
    assert check_options("toy", {"mode": "b", "sizes": (2, 3), "anything": object}) == {
        "mode": "b", "sizes": [2, 3], "anything": object}
    with pytest.raises(AvlocError, match="toy: option mode expects one of 'a', 'b', got 'c'"):
        create_model("toy", num_classes=2, mode="c")
    with pytest.raises(AvlocError, match="toy: option sizes expects a list \\(an int each\\), got \\[1.5\\]"):
        create_model("toy", num_classes=2, sizes=[1.5])
    with pytest.raises(AvlocError, match="toy: option scale expects a finite number or null, got 'x'"):
        check_options("toy", {"scale": "x"}, parse_strings=True)
    assert check_options("toy", {"scale": "null"}, parse_strings=True) == {"scale": None}


def test_every_model_builds_from_a_config_with_no_options():
    for model in ("ezvsl", "stm", "ave"):
        assert isinstance(build_model(TrainConfig(dataset="d", model=model), ["a", "b"], with_encoders=False),
                          torch.nn.Module)
    assert TrainConfig(dataset="d").model_options == {}


# ---------------------------------------------------------------------------------------
# The command line


@pytest.mark.parametrize(("option", "message"), [
    ("causal=maybe", "stm: option causal expects a bool (true/false), got 'maybe'"),
    ("memory_size=2.5", "stm: option memory_size expects an int, got '2.5'"),
    ("heads=1.0", "stm: option heads expects an int, got '1.0'"),
    ("num_classes=3", "stm: option num_classes is set by the dataset's classes"),
])
def test_train_refuses_a_badly_typed_option_in_one_line(capsys, captured, option, message):
    err = _one_line_error(capsys, ["train", "data", "--option", option, "-q"])
    assert message in err and not captured


def test_train_converts_options_and_names_the_run_from_them(captured, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "data", "--option", "causal=False", "--option", "variant=u", "-q"]) == 0
    config = captured[-1]
    assert config.model_options == {"variant": "u", "causal": False}  # what was given; STM's defaults hold
    assert config.out == "runs/stm-u-seed0"
    assert main(["train", "data", "--seed", "1", "-q"]) == 0
    assert captured[-1].model_options == {} and captured[-1].out == "runs/stm-c+u-seed1"  # named by the default
    assert main(["train", "data", "--variant", "none", "--symmetric", "--seed", "2", "-q"]) == 0
    assert captured[-1].model_options["causal"] is False and captured[-1].out == "runs/stm-none-seed2"
    assert main(["train", "data", "--model", "ezvsl", "-q"]) == 0
    assert captured[-1].model_options == {} and captured[-1].out == "runs/ezvsl-seed0"


def test_stm_flags_apply_to_stm_only(capsys, captured):
    err = _one_line_error(capsys, ["train", "data", "--model", "ezvsl", "--memory-size", "2", "-q"])
    assert "--memory-size applies to --model stm only" in err and not captured


# ---------------------------------------------------------------------------------------
# Configs from checkpoints and files


def test_from_dict_refuses_an_unknown_key_naming_it():
    values = {"dataset": "d", "model": "stm", "momentum": 0.9}
    with pytest.raises(AvlocError, match="^run/last.pt: unknown training config key 'momentum'"):
        TrainConfig.from_dict(values, source="run/last.pt")


def test_the_default_model_loads_and_a_foreign_key_names_the_checkpoint(tmp_path):
    # Trained by scripts/train_default_model.py with avloc train's defaults on stamps features.
    config = load_trained("default").config
    assert config.model == "stm" and config.model_options == {}
    assert (config.visual_weights, config.audio_weights, config.supervision) == ("stamps", "random", "segment")
    assert (config.train_visual, config.train_audio, config.augment) == (False, False, True)
    state = load_checkpoint(DEFAULT_MODEL)
    state["config"]["momentum"] = 0.9
    save_checkpoint(tmp_path / "edited.pt", state)
    with pytest.raises(AvlocError) as error:
        load_trained(tmp_path / "edited.pt")
    assert str(error.value).startswith(f"{tmp_path / 'edited.pt'}: ") and "'momentum'" in str(error.value)


def test_a_config_file_reads_back_equal(tmp_path):
    config = TrainConfig(dataset="d", out=str(tmp_path / "run"), model="tavlo", model_options={"audio_kernel": (2, 2)},
                         features=tmp_path / "f.h5", lr=3e-4, fps=4, supervision="self", visual="small-visual",
                         audio="small-audio", size=256)  # all inputs given: the (absent) cache is not read
    assert config.features == str(tmp_path / "f.h5") and config.fps == 4.0
    path = write_config_file(config, tmp_path / CONFIG_NAME)
    assert load_config(path) == config


@pytest.mark.parametrize(("text", "message"), [
    ("epochs: 2\nmomentum: 0.9\n", "unknown key 'momentum'"),
    ("epochs: 2.5\n", "epochs expects an int, got 2.5"),
    ("train_visual: maybe\n", "train_visual expects a bool (true/false), got 'maybe'"),
    ("finetune: true\n", "finetune is no longer a setting; use train_visual and train_audio"),
    ("model_options: {causal: maybe}\n", "stm: option causal expects a bool (true/false), got 'maybe'"),
    ("model: ezvsl\nmodel_options: {variant: u}\n", "ezvsl: got an unexpected keyword argument 'variant'"),
    ("lr: -1\n", "lr must be a finite number > 0"),
    ("[1, 2]\n", "expected a mapping of training settings"),
    ("epochs: [\n", "not valid YAML"),
])
def test_a_bad_config_file_is_one_line_naming_file_and_key(capsys, captured, tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(AvlocError) as error:
        read_config_file(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    err = _one_line_error(capsys, ["train", "data", "--config", str(path), "-q"])
    assert message in err and not captured


def test_flags_given_override_the_file(captured, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-2\nseed: 3\nepochs: 5\ntrain_visual: true\nmodel_options: {variant: u, causal: false}\n")
    assert main(["train", "data", "--config", str(path), "--lr", "1e-3", "--variant", "none", "--no-train-visual",
                 "-q"]) == 0
    config = captured[-1]
    assert (config.lr, config.seed, config.epochs, config.train_visual, config.train_audio) == (1e-3, 3, 5, False, True)
    assert config.model_options == {"variant": "none", "causal": False}
    assert config.out == "runs/stm-none-seed3" and config.dataset == "data"
    assert main(["train", "data", "--config", str(path), "--option", "variant=c+u", "--model", "ezvsl", "-q"]) == 2


def test_a_run_writes_its_config_and_repeats_from_it(tiny, tmp_path, one_thread):
    data, features = tiny
    first = tmp_path / "first"
    assert main(train_args(data, features, first, "--epochs", "1", "--batch-size", "4",
                           "--option", "causal=false")) == 0
    state = load_checkpoint(first / "last.pt")
    config = load_config(first / CONFIG_NAME)
    assert config == TrainConfig.from_dict(state["config"]) and config.model_options["causal"] is False
    again = tmp_path / "again"
    assert main(["train", str(data), "--config", str(first / CONFIG_NAME), "--out", str(again), "-q"]) == 0
    repeated = load_checkpoint(again / "last.pt")
    assert repeated["config"] == {**state["config"], "out": str(again)}
    for key, value in state["model"].items():
        torch.testing.assert_close(repeated["model"][key], value, rtol=0, atol=0, msg=key)
    assert yaml.safe_load((again / CONFIG_NAME).read_text()) == repeated["config"]


@pytest.mark.parametrize(("model", "option", "value", "choices"), [
    ("stm", "variant", "bogus", "'c+u', 'u', 'none'"), ("ave", "fusion", "bilinear", "'concat', 'additive', 'gated', 'dmrn'"),
    ("avfb", "segment_pool", "sum", "'mean+max', 'mean', 'max'"), ("tavlo", "negative", "median", "'max', 'mean'"),
])
def test_choice_options_are_checked_before_anything_is_built(model, option, value, choices):
    message = f"{model}: option {option} expects one of {choices}, got '{value}'"
    with pytest.raises(AvlocError, match=f"^{re.escape(message)}$"):
        check_options(model, {option: value})


def test_encoders_fps_and_size_come_from_the_feature_cache_in_python_too(tmp_path):
    """TrainConfig (what fit takes) reads what avloc train reads: the cache's encoders, fps and
    frame size (64 px here, not the 256 px default) unless given; without a cache, the defaults."""
    data, features = write_feature_dataset(tmp_path)
    cached = TrainConfig(dataset=str(data), features=str(features))
    assert (cached.visual, cached.audio, cached.fps, cached.size) == ("small-visual", "small-audio", 4.0, 64)
    assert TrainConfig(dataset=str(data), features=str(features), size=128, fps=2.0).size == 128
    plain = TrainConfig(dataset=str(data))
    assert (plain.visual, plain.audio, plain.fps, plain.size) == ("small-visual", "small-audio", 4.0, 256)
    with pytest.raises(AvlocError, match="missing.h5"):
        TrainConfig(dataset=str(data), features=str(tmp_path / "missing.h5"))
