"""--device auto|cpu|cuda|mps: the resolution (GPU availability faked) and the flag on every command."""

import pytest
import torch

import avloc.devices as devices
from avloc.cli import build_parser, main
from avloc.devices import DEVICE_CHOICES, resolve_device, training_device
from avloc.types import AvlocError

COMMANDS = {  # each command's arguments, the device-taking function it calls and that function's module
    "extract": (["DATASET", "--out", "features.h5"], "avloc.extract", "extract_features"),
    "train": (["DATASET"], "avloc.train", "fit"),
    "eval": (["checkpoint.pt", "DATASET"], "avloc.evaluate", "evaluate"),
    "localize": (["video.mp4"], "avloc.localize_video", "localize_video"),
}


def _gpus(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(devices, "_mps_available", lambda: mps)


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(True, True, "cuda"), (True, False, "cuda"),
                                                       (False, True, "mps"), (False, False, "cpu")])
def test_auto_takes_cuda_then_mps_else_the_cpu(monkeypatch, cuda, mps, expected):
    _gpus(monkeypatch, cuda, mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit cpu stays the cpu, GPU or not


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_an_absent_gpu_asked_for_is_a_one_line_error(monkeypatch, name):
    _gpus(monkeypatch, cuda=False, mps=False)
    with pytest.raises(AvlocError, match=f"--device {name}: ") as error:
        resolve_device(name)
    assert "\n" not in str(error.value) and "--device cpu or auto" in str(error.value)
    _gpus(monkeypatch, cuda=True, mps=True)
    assert resolve_device(name) == torch.device(name)


def test_an_unknown_name_is_refused():
    with pytest.raises(AvlocError, match="unknown device 'tpu': expected one of auto, cpu, cuda, mps"):
        resolve_device("tpu")


def test_under_torchrun_each_process_keeps_its_own_device(monkeypatch):
    _gpus(monkeypatch, cuda=False, mps=False)
    assert training_device("auto") == torch.device("cpu")  # a single process: the device itself
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert training_device("auto") is None and training_device("cpu") is None  # fit: distributed.device()
    _gpus(monkeypatch, cuda=True, mps=False)
    assert training_device("cuda") is None
    with pytest.raises(AvlocError, match="--device cpu under torchrun: the processes run on cuda here"):
        training_device("cpu")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_parses_the_flag_auto_by_default(command, capsys):
    arguments = COMMANDS[command][0]
    parser = build_parser()
    assert parser.parse_args([command, *arguments]).device == "auto"
    for name in DEVICE_CHOICES:
        assert parser.parse_args([command, *arguments, "--device", name]).device == name
    with pytest.raises(SystemExit):
        parser.parse_args([command, *arguments, "--device", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_hands_the_resolved_device_to_its_library_call(command, monkeypatch, tmp_path, tiny_dataset,
                                                                     capsys):
    arguments, module, function = COMMANDS[command]
    arguments = [str(tiny_dataset) if a == "DATASET" else a for a in arguments]
    if command == "train":
        arguments += ["--out", str(tmp_path / "run")]
    if command == "localize":
        arguments = [str(tiny_dataset / "videos" / "0.mp4"), "--out", str(tmp_path / "out")]
    seen = []

    def record(*args, device=None, **kwargs):
        seen.append(device)
        raise AvlocError("recorded")

    monkeypatch.setattr(f"{module}.{function}", record)
    _gpus(monkeypatch, cuda=True, mps=False)
    assert main([command, *arguments]) == 2 and "recorded" in capsys.readouterr().err
    assert main([command, *arguments, "--device", "cpu"]) == 2 and "recorded" in capsys.readouterr().err
    expected = [torch.device("cuda"), torch.device("cpu")]
    assert seen == expected
    _gpus(monkeypatch, cuda=False, mps=False)
    assert main([command, *arguments, "--device", "cuda"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("avloc: error: --device cuda: no CUDA GPU") and error.count("\n") == 1
    assert len(seen) == 2  # refused before the library call
