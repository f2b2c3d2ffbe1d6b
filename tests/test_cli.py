import subprocess
import sys

import pytest

from avloc.cli import build_parser, main
from avloc.models import list_models
from avloc.models.encoders import list_encoders


def _subcommands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: avloc {command}" in capsys.readouterr().out


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "avloc", "--help"], capture_output=True, text=True, check=True)
    assert "synth" in result.stdout and "extract" in result.stdout


_NO_TORCH = """
import contextlib, io, sys
from avloc.cli import build_parser, main
(sub,) = [action for action in build_parser()._actions if action.dest == "command"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    for command in [[], *([name] for name in sub.choices), ["datasets", "check"], ["datasets", "convert"]]:
        try:
            main([*command, "--help"])
        except SystemExit as exit_:
            assert exit_.code == 0, command
    assert main(["models"]) == 0 and main(["encoders"]) == 0
heavy = sorted({name.partition(".")[0] for name in sys.modules} & {"torch", "torchvision", "numpy", "cv2"})
assert not heavy, heavy
assert out.getvalue().count("usage: avloc") == len(sub.choices) + 3, out.getvalue()
"""


_DEMO_IMPORTS = """
import sys
from avloc.audio import mel_filterbank
from avloc.demo import run_demo
from avloc.trained import load_trained
load_trained("default").encoders("cpu")
mel_filterbank()
slow = sorted({name.partition(".")[0] for name in sys.modules} & {"torchvision", "librosa", "scipy", "numba"})
assert not slow, slow
"""


def test_the_demo_path_imports_neither_torchvision_nor_librosa():
    """Each takes seconds to import (torchvision pulls torch._dynamo); `avloc demo` and the built-in
    model need neither (the ResNet / VGG encoders import torchvision when built)."""
    result = subprocess.run([sys.executable, "-c", _DEMO_IMPORTS], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_help_models_and_encoders_import_no_torch():
    """``avloc --help``, ``avloc COMMAND --help``, ``avloc models`` and ``avloc encoders`` start in well
    under a second: importing torch alone takes seconds."""
    result = subprocess.run([sys.executable, "-c", _NO_TORCH], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_encoders_lists_every_encoder(capsys):
    assert main(["encoders"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list_encoders()


def test_models_shows_paper_supervision_and_streaming(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    blocks = out.split("\n  paper:")
    assert len(blocks) == len(list_models()) + 1
    assert "stm\n  paper:       Li, Tian, Xu." in out
    assert "supervision: self\n  localises:   yes (a heat map per step)\n  event class: no (heat maps only)" in out
    assert "streams:     no: " in out and "streams:     yes" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--clips", "0", "--seed", "1"], "--clips"),
        (["--clips", "2", "--seed", "1", "--size", "33"], "--size"),
        (["--clips", "2", "--seed", "1", "--seconds", "0"], "--seconds"),
    ],
)
def test_synth_bad_arguments_give_one_line(tmp_path, capsys, args, message):
    assert main(["synth", str(tmp_path / "out"), "-q", *args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("avloc: error: ") and message in error and error.count("\n") == 1
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_synth_refuses_a_foreign_nonempty_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["synth", str(tmp_path), "--clips", "1", "--seed", "0", "-q"]) == 2
    assert "avloc: error: " in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_synth_seed_defaults_to_zero():
    assert build_parser().parse_args(["synth", "out", "--clips", "1"]).seed == 0
