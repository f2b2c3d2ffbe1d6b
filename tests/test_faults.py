"""Faults: `avloc train` and `avloc extract` killed with SIGKILL mid-run, then rerun to the end.

The killed runs are subprocesses (one thread each); the reruns and the clean reference runs
run here with one torch thread too, so that every number is computed the same way and the
comparisons can be exact.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tone_video
from tiny_features import REPO, train_args, write_feature_dataset

from avloc.checkpoint import load_checkpoint
from avloc.cli import main
from avloc.data.cache import FeatureCache

EPOCHS = 6
# 120 clips (80 train, batch 4: 20 steps an epoch) with the default STM width: ~0.5 s an epoch.
TRAIN = ("--epochs", str(EPOCHS), "--batch-size", "4", "--option", "channels=256")
RUN_FILES = {"best.pt", "config.yaml", "last.pt", "log.csv", "loss.png"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "avloc", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(process: subprocess.Popen, ready, delay: float = 0.0, timeout: float = 60.0) -> None:
    """SIGKILL ``process`` ``delay`` seconds after ``ready()`` holds (it must still be running then)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"finished before it could be killed: {process.stderr.read().decode()}"
        assert time.monotonic() < deadline, "timed out waiting for the run to get going"
        time.sleep(0.005)
    time.sleep(delay)
    assert process.poll() is None, "finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL


def _log_rows(run: Path) -> list[list[str]]:
    """log.csv without the wall-clock column."""
    return [row.split(",")[:-1] for row in (run / "log.csv").read_text().splitlines()]


def test_train_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path):
    """Killed in epoch 2 or later, resumed with --resume: the same run, bit for bit.

    Equality is exact (torch.equal): the epoch's order and windows are seeded by (seed,
    epoch), last.pt holds the model, Adam's state and the RNG state, so the resumed epochs
    repeat the same float operations in the same order on one thread.
    """
    data, features = write_feature_dataset(tmp_path, clips=120)
    killed = tmp_path / "killed"
    process = _start(*train_args(data, features, killed, *TRAIN))
    # 0.2 s after the first last.pt: inside an epoch (~0.5 s), not at its boundary.
    _kill_when(process, lambda: (killed / "last.pt").is_file(), delay=0.2)
    stopped = load_checkpoint(killed / "last.pt")  # atomic writes: whole, never half a file
    assert 1 <= stopped["epoch"] < EPOCHS and stopped["step"] == 20 * stopped["epoch"]
    leftovers = {p.name for p in killed.iterdir()} - RUN_FILES
    assert all(name.startswith(".") and ".tmp" in name for name in leftovers), leftovers  # stray temporaries only
    assert main(train_args(data, features, killed, *TRAIN, "--resume")) == 0
    assert main(train_args(data, features, tmp_path / "straight", *TRAIN)) == 0

    resumed, straight = load_checkpoint(killed / "last.pt"), load_checkpoint(tmp_path / "straight" / "last.pt")
    assert resumed["epoch"] == EPOCHS and resumed["step"] == straight["step"] == 20 * EPOCHS
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    for index, state in straight["optimizer"]["state"].items():
        assert int(resumed["optimizer"]["state"][index]["step"]) == 20 * EPOCHS  # Adam's count continued
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(resumed["optimizer"]["state"][index][name], state[name]), (index, name)
    assert _log_rows(killed) == _log_rows(tmp_path / "straight")  # losses and accuracy of every epoch
    assert [int(row[1]) for row in _log_rows(killed)[1:]] == [20 * (e + 1) for e in range(EPOCHS)]
    assert load_checkpoint(killed / "best.pt")["epoch"] == load_checkpoint(tmp_path / "straight" / "best.pt")["epoch"]


@pytest.fixture
def videos(tmp_path):
    """16 clips of 3 s (8 fps, 64 px) in the native format."""
    root = tmp_path / "videos_dataset"
    (root / "videos").mkdir(parents=True)
    lines = []
    for index in range(16):
        make_tone_video(root / "videos" / f"{index}.mp4", seconds=3.0, tone_hz=200.0 + 50 * index, seed=index)
        lines.append({"id": f"clip/{index:02d}", "video": f"videos/{index}.mp4", "split": "train", "label": "tone"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def test_extract_killed_mid_run_keeps_whole_parts_and_the_rerun_skips_them(videos, tmp_path, capsys):
    out = tmp_path / "features.h5"
    parts = tmp_path / "features.h5.parts"
    settings = ["--size", "128", "-q"]

    def finished_parts():
        return sorted(p for p in parts.glob("*.npz") if not p.name.startswith(".")) if parts.is_dir() else []

    _kill_when(_start("extract", str(videos), "--out", str(out), *settings), lambda: len(finished_parts()) >= 2)
    assert not out.exists()  # nothing merged
    done = finished_parts()
    assert 2 <= len(done) < 16
    for part in done:  # every part present is whole
        with np.load(part) as arrays:
            assert arrays["visual"].shape[0] == arrays["audio"].shape[0] == len(arrays["times"]) == 12
    leftovers = {p.name for p in parts.iterdir()} - {p.name for p in done} - {"meta.json"}
    assert all(name.startswith(".") and ".tmp" in name for name in leftovers), leftovers

    assert main(["extract", str(videos), "--out", str(out), *settings]) == 0
    assert f"encoded {16 - len(done)} clips, {len(done)} already done" in capsys.readouterr().out
    assert main(["extract", str(videos), "--out", str(tmp_path / "clean.h5"), *settings]) == 0
    resumed, clean = FeatureCache(out), FeatureCache(tmp_path / "clean.h5")
    assert resumed.ids == clean.ids and len(resumed) == 16 and resumed.meta == clean.meta
    for clip_id in clean.ids:
        a, b = resumed.read(clip_id), clean.read(clip_id)
        for name in ("visual", "audio", "times"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{clip_id} {name}")
