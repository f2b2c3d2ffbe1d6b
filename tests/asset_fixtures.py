"""Tiny generated assets folders (cut-outs with transparency, short recordings) for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

COLOURS = {"bell": (220, 40, 40), "drum": (40, 90, 240), "horn": (40, 200, 80), "whistle": (240, 200, 40)}


def _picture(path: Path, colour: tuple[int, int, int], shape: str = "ellipse", side: int = 24) -> None:
    """A small RGBA cut-out: an opaque shape on a transparent margin of 2 px."""
    yy, xx = np.mgrid[0:side, 0:side]
    inner = (yy >= 2) & (yy < side - 2) & (xx >= 2) & (xx < side - 2)
    if shape == "ellipse":
        inner &= ((xx - side / 2 + 0.5) / (side / 2 - 2)) ** 2 + ((yy - side / 2 + 0.5) / (side / 2 - 2)) ** 2 <= 1
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[inner] = (*colour, 255)
    Image.fromarray(rgba, "RGBA").save(path)


def _sound(path: Path, hz: float, seconds: float = 0.3) -> None:
    t = np.arange(round(seconds * 22050)) / 22050
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * hz * t), 22050)


def make_assets(root: Path, classes: dict = COLOURS) -> Path:
    for k, (name, colour) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        _picture(root / name / "a.png", colour)
        _picture(root / name / "b.png", colour, "square")
        _sound(root / name / "a.wav", 300.0 * (k + 1))
    (root / "_silent").mkdir()
    _picture(root / "_silent" / "grey.png", (128, 128, 128), "square")
    _picture(root / "_silent" / "white.png", (240, 240, 240))
    (root / "README").write_text("tiny test assets\n")
    (root / "bell" / "notes.txt").write_text("not a picture\n")
    return root
