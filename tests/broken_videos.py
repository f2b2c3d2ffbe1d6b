"""A tiny native dataset whose manifest names good, broken and missing videos (tests of unreadable clips)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avloc.io.write import write_video
from conftest import make_tone_video

# (id, file, split, label, kind): kind good / text (a text file named .mp4) / empty (0 bytes) /
# silent (no audio stream) / missing (no file). Ids sort in this order.
CLIPS = [
    ("a-good", "a.mp4", "train", "bell", "good"),
    ("b-text", "b.mp4", "train", "dog", "text"),
    ("c-good", "c.mp4", "train", "dog", "good"),
    ("d-silent", "d.mp4", "train", "bell", "silent"),
    ("e-good", "e.mp4", "val", "bell", "good"),
    ("f-empty", "f.mp4", "val", "dog", "empty"),
    ("g-good", "g.mp4", "test", "bell", "good"),
    ("h-missing", "h.mp4", "test", "dog", "missing"),
]
BROKEN = {clip_id: kind for clip_id, _, _, _, kind in CLIPS if kind != "good"}


def make_broken_dataset(root: Path, seconds: float = 2.0, size: int = 32) -> Path:
    """``root`` with ``manifest.jsonl`` over :data:`CLIPS` (one annotated frame per clip)."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (clip_id, name, split, label, kind) in enumerate(CLIPS):
        path = root / "videos" / name
        if kind == "good":
            make_tone_video(path, seconds=seconds, size=size, tone_hz=300.0 * (index + 1), seed=index)
        elif kind == "text":
            path.write_text("this is a text file, not a video\n")
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "silent":
            frames = np.full((round(seconds * 8), size, size, 3), 90, np.uint8)
            write_video(path, frames, 8)
        lines.append({"id": clip_id, "video": f"videos/{name}", "split": split, "label": label,
                      "segments": [{"start": 0.0, "end": seconds, "label": label}],
                      "frames": [{"t": 0.125, "boxes": [[4, 4, 20, 20]], "scenario": "single"}]})
    (root / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def skipped_ids(path: Path) -> dict[str, str]:
    """``{id: reason}`` of a skipped list (``<id><TAB><reason>`` per line)."""
    return dict(line.split("\t", 1) for line in path.read_text().splitlines())
