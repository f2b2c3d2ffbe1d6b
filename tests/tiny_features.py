"""A tiny native dataset with a feature cache of random maps: training runs without decoding video."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from avloc import __version__
from avloc.data.cache import CacheMeta, ClipFeatures, PartsStore
from avloc.models.encoders import create_encoder

CLASSES = ("bell", "dog", "guitar")
REPO = Path(__file__).resolve().parents[1]


def write_feature_dataset(root: Path, clips: int = 24, steps: int = 8, size: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """``root/data`` (manifest + empty placeholder videos) and ``root/features.h5``; returns both.

    Splits: every 6th clip val, the one after it test, the rest train. A clip's features are
    noise plus a pattern of its class, so that a model can learn something.
    """
    rng = np.random.default_rng(seed)
    data = root / "data"
    (data / "videos").mkdir(parents=True)
    visual, audio = create_encoder("small-visual"), create_encoder("small-audio")
    meta = CacheMeta(visual_encoder="small-visual", visual_weights=visual.weights_id, audio_encoder="small-audio",
                     audio_weights=audio.weights_id, fps=4.0, size=64, sample_rate=16000, audio_window=0.25,
                     mel="{}", avloc_version=__version__)
    store = PartsStore(root / "features.h5", meta)
    patterns = rng.normal(size=(len(CLASSES), audio.out_channels)).astype(np.float32)
    lines = []
    for index in range(clips):
        clip_id, label = f"clip_{index:03d}", CLASSES[index % len(CLASSES)]
        split = {0: "val", 1: "test"}.get(index % 6, "train")
        (data / "videos" / f"{clip_id}.mp4").touch()
        lines.append({"id": clip_id, "video": f"videos/{clip_id}.mp4", "split": split, "label": label})
        pattern = patterns[CLASSES.index(label)]
        store.write(clip_id, ClipFeatures(
            visual=rng.normal(size=(steps, visual.out_channels, size, size)).astype(np.float32),
            audio=(rng.normal(size=(steps, audio.out_channels, 2, 2)) + pattern[:, None, None]).astype(np.float32),
            times=(np.arange(steps) + 0.5) / meta.fps,
        ))
    (data / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return data, store.merge(line["id"] for line in lines)


def train_args(data: Path, features: Path, out: Path, *extra: str) -> list[str]:
    """``avloc train`` arguments for the tiny dataset (a small STM, lr 1e-3, no progress bars)."""
    return ["train", str(data), "--features", str(features), "--size", "64", "--out", str(out), "--lr", "1e-3",
            "--option", "channels=32", "-q", *extra]


def run_python(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``python ARGS`` (this interpreter, one thread per process) from the repository root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
