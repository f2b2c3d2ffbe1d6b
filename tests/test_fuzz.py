"""Hostile inputs: hundreds of malformed files and flags through the CLI and the Python API.

Every case writes its files into a fresh folder ``in/``, then, with the working directory and
the temporary directory inside the case's own folder and under ``signal.alarm``, runs
``avloc.cli.main(argv)`` in-process and/or one public API call. A case passes when:

- the CLI exits non-zero with one line on stderr, ``avloc: error: ...``, that names the
  offending file (flag values that do not parse: an argparse usage error, exit 2);
- the API call raises :class:`avloc.types.AvlocError` whose message names the file;
- nothing outside ``out/`` changed, the temporary directory is empty, and ``out/`` holds no
  final output (a failing run leaves nothing half-written behind).

A few cases also run in a real process (``python -m avloc`` and the ``avloc`` script) for the
true exit code and a stderr without a traceback. The cases are in tests/fuzz_cases.py, the
files they write in tests/hostile_files.py; ``bench/fuzz_report.py`` runs the same cases and
writes their counts to docs/results.md.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fuzz_cases import Case, hostile_cases
from hostile_files import MARKER

from avloc.cli import main
from avloc.types import AvlocError

DEADLINE = 20  # seconds a case may take before it counts as a hang
FINAL_NAMES = {"manifest.jsonl", "overlay.mp4", "boxes.json", "heatmaps.npz", "contact_sheet.png", "log.csv",
               "loss.png", "Annotations.txt", "e.json"}
FINAL_SUFFIXES = (".pt", ".h5")


# ---------------------------------------------------------------------------------------
# Running a case


class CaseTimeout(BaseException):
    """Raised by the alarm: a BaseException, so that no ``except Exception`` in the code swallows it."""


@contextlib.contextmanager
def deadline(seconds: int):
    def expire(signum, frame):
        raise CaseTimeout(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    """What a case did: the CLI's exit code and stderr, the API's exception, and what was wrong."""

    case: Case
    exit_code: int | None = None
    stderr: str = ""
    api_error: str = ""
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        return (f"{self.case.name}: exit {self.exit_code}, stderr {self.stderr!r}, API {self.api_error!r}\n  "
                + "\n  ".join(self.problems))


def _content(value) -> bytes:
    value = value() if callable(value) else value
    return value.encode() if isinstance(value, str) else value


def _write_inputs(case: Case, folder: Path) -> None:
    for relative, value in case.files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(value))


def _argv(case: Case, inp: Path, out: Path) -> list[str]:
    return [arg.replace("{in}", str(inp)).replace("{out}", str(out)) for arg in case.argv]


def _snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``folder`` except ``skip``'s tree: relative path -> (size, mtime)."""
    found = {}
    for parent, folders, files in os.walk(folder):
        parent = Path(parent)
        folders[:] = [name for name in folders if parent / name != skip]
        for name in folders + files:
            stat = (parent / name).lstat()
            found[str((parent / name).relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return found


def _leftovers(out: Path) -> list[str]:
    """Final outputs and temporary files that a failing run left in ``out``."""
    bad = []
    for path in out.rglob("*") if out.is_dir() else []:
        temporary = path.name.startswith(".") and ".tmp" in path.name
        if path.is_file() and (temporary or path.name in FINAL_NAMES or path.suffix in FINAL_SUFFIXES):
            bad.append(str(path.relative_to(out)))
    return bad


def _names(text: str, path: Path | None) -> bool:
    return path is None or str(path) in text or str(path.resolve()) in text


def _check_cli(case: Case, argv: list[str], culprit: Path | None, outcome: Outcome) -> None:
    err = io.StringIO()
    log = logging.StreamHandler(err)  # log lines reach the terminal too: they count as stderr lines
    log.setFormatter(logging.Formatter("avloc: %(message)s"))
    logging.getLogger().addHandler(log)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            outcome.exit_code = main(argv)
    except SystemExit as exit_:
        outcome.exit_code = exit_.code if isinstance(exit_.code, int) else 1
    except CaseTimeout as error:
        outcome.problems.append(f"CLI hang: {error}")
    except Exception as error:  # noqa: BLE001 - the real CLI would print a traceback
        outcome.problems.append(f"CLI traceback: {type(error).__name__}: {str(error)[:300]}")
    finally:
        logging.getLogger().removeHandler(log)
    outcome.stderr = err.getvalue()
    lines = outcome.stderr.strip().splitlines()
    if outcome.exit_code == 0:
        outcome.problems.append("CLI exit code 0: the hostile input was accepted")
    if case.usage:
        if outcome.exit_code != 2 or not lines or "error:" not in lines[-1]:
            outcome.problems.append("expected an argparse usage error (exit 2)")
    elif outcome.exit_code not in (0, None):
        if len(lines) != 1 or not lines[0].startswith("avloc: error: "):
            outcome.problems.append("stderr is not one line 'avloc: error: ...'")
        elif not _names(outcome.stderr, culprit):
            outcome.problems.append(f"the message does not name {culprit}")


def _check_api(case: Case, folders: tuple[Path, Path], culprit: Path | None, outcome: Outcome) -> None:
    try:
        case.api(*folders)
    except AvlocError as error:
        outcome.api_error = f"{type(error).__name__}: {error}"
        if "\n" in str(error):
            outcome.problems.append("API message is not one line")
        if not _names(str(error), culprit):
            outcome.problems.append(f"API message does not name {culprit}")
    except CaseTimeout as error:
        outcome.problems.append(f"API hang: {error}")
    except Exception as error:  # noqa: BLE001 - anything but AvlocError is the finding
        outcome.api_error = f"{type(error).__name__}: {error}"
        outcome.problems.append(f"API raised {type(error).__name__}: {str(error)[:300]}")
    else:
        outcome.problems.append("API call returned: the hostile input was accepted")


def run_case(case: Case, work: Path) -> Outcome:
    """Run ``case`` in the empty folder ``work`` (cwd and temporary directory inside it)."""
    inp, out, scratch = work / "in", work / "out", work / "tmp"
    for folder in (inp, scratch):
        folder.mkdir(parents=True)
    _write_inputs(case, inp)
    culprit = case.culprit_path(inp)
    argv = _argv(case, inp, out)
    outcome = Outcome(case)
    before = _snapshot(work, skip=out)
    cwd, tempdir = os.getcwd(), tempfile.tempdir
    started = time.perf_counter()
    os.chdir(work)
    tempfile.tempdir = str(scratch)
    try:
        with warnings.catch_warnings(record=True) as warned, deadline(DEADLINE):
            warnings.simplefilter("always")
            if argv:
                _check_cli(case, argv, culprit, outcome)
            if case.api is not None:
                _check_api(case, (inp, out), culprit, outcome)
        outcome.problems += [f"a warning: {warning.category.__name__}: {warning.message}" for warning in warned]
    finally:
        os.chdir(cwd)
        tempfile.tempdir = tempdir
    outcome.seconds = time.perf_counter() - started
    after = _snapshot(work, skip=out)
    changed = sorted(name for name in before.keys() | after.keys()
                     if before.get(name) != after.get(name) and name != "tmp")
    if changed:
        outcome.problems.append(f"written outside the output folder: {', '.join(changed[:5])}")
    if (work / MARKER).exists():
        outcome.problems.append("the checkpoint's pickled code ran")
    if any(scratch.iterdir()):
        outcome.problems.append(f"temporary files left: {sorted(p.name for p in scratch.iterdir())[:5]}")
    leftovers = _leftovers(out)
    if leftovers:
        outcome.problems.append(f"a failing run left outputs: {', '.join(leftovers[:5])}")
    return outcome


# Spread over the kinds; run in a real process (the checkpoint one through the `avloc` script).
SUBPROCESS_SAMPLE = ("video/random-bytes-3", "video/truncated-faststart-2000", "manifest/binary-garbage",
                     "checkpoint/pickled-code", "features/random-bytes", "flags/localize-fps-zero",
                     "vggss/bbox-nan", "avatar/width-infinity")


def run_real_process(case: Case, work: Path) -> Outcome:
    """Run ``case``'s command line in a real process: a non-zero exit code, no traceback, one error line."""
    inp, out = work / "in", work / "out"
    _write_inputs(case, inp)
    script = Path(sys.executable).with_name("avloc")
    command = [str(script)] if case.kind == "checkpoint" and script.is_file() else [sys.executable, "-m", "avloc"]
    started = time.perf_counter()
    result = subprocess.run(command + _argv(case, inp, out), check=False, cwd=work, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    outcome = Outcome(case, exit_code=result.returncode, stderr=result.stderr,
                      seconds=time.perf_counter() - started)
    lines = result.stderr.strip().splitlines()
    if result.returncode == 0 or "Traceback" in result.stderr:
        outcome.problems.append("exit code 0 or a traceback")
    if len(lines) != 1 or not lines[0].startswith("avloc: error: "):
        outcome.problems.append("stderr is not one line 'avloc: error: ...'")
    if (work / MARKER).exists():
        outcome.problems.append("the checkpoint's pickled code ran")
    return outcome


# ---------------------------------------------------------------------------------------
# Tests

CASES = hostile_cases()


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=f"owned by another helper: {case.owner}")] if case.owner else []
    return pytest.param(case, id=case.name, marks=marks)


def test_at_least_200_cases_over_every_kind():
    kinds = {case.kind for case in CASES}
    assert len(CASES) >= 200
    assert {"video", "audio", "manifest", "checkpoint", "features", "flags", "ave", "vggss", "flickr", "avatar",
            "audioset-instrument"} <= kinds


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_hostile_input_gives_one_line_error(case, tmp_path):
    outcome = run_case(case, tmp_path)
    assert not outcome.problems, outcome.describe()


@pytest.mark.parametrize("name", SUBPROCESS_SAMPLE)
def test_real_process_exits_non_zero_without_a_traceback(name, tmp_path):
    outcome = run_real_process(next(case for case in CASES if case.name == name), tmp_path)
    assert not outcome.problems, outcome.describe()
