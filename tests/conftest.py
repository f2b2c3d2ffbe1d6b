"""Shared fixtures: tiny generated videos and datasets (no network, no real data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avloc.io.write import write_video

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_tone_video(path: Path, seconds: float, size: int = 64, fps: int = 8, tone_hz: float = 440.0,
                    sample_rate: int = 16000, seed: int = 0) -> Path:
    """A video whose every frame has its own flat colour, with a pure tone as audio."""
    rng = np.random.default_rng(seed)
    count = round(seconds * fps)
    colours = rng.integers(0, 256, size=(count, 1, 1, 3), dtype=np.uint8)
    frames = np.broadcast_to(colours, (count, size, size, 3)).copy()  # (T, 1, 1, 3) -> (T, H, W, 3)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    write_video(path, frames, fps, (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32), sample_rate)
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Three 2-second clips in the native format."""
    root = tmp_path_factory.mktemp("tiny_dataset")
    (root / "videos").mkdir()
    lines = []
    for index, (label, split) in enumerate([("bell", "train"), ("dog", "train"), ("bell", "test")]):
        clip_id = f"clip/{index}"
        make_tone_video(root / "videos" / f"{index}.mp4", seconds=2.0, tone_hz=300.0 * (index + 1), seed=index)
        lines.append({
            "id": clip_id, "video": f"videos/{index}.mp4", "split": split, "label": label,
            "segments": [{"start": 0.0, "end": 1.0, "label": label}, {"start": 1.0, "end": 2.0, "label": "background"}],
            "frames": [{"t": 0.125, "boxes": [[4, 4, 20, 20]], "scenario": "single"}],
        })
    (root / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny models on a shared 2-core machine run much faster without threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def interrupt_after(monkeypatch, module, name: str, calls: int):
    """Make ``module.name`` raise KeyboardInterrupt on its call number ``calls + 1`` (a killed run).

    Returns the real function, to put back for the rerun.
    """
    real, made = getattr(module, name), []

    def then_die(*args, **kwargs):
        if len(made) == calls:
            raise KeyboardInterrupt
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, then_die)
    return real
