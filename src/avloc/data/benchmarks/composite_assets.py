"""Assets of the composite benchmark: a folder of cut-out pictures and recordings, checked and loaded.

Layout (``scripts/build_assets.py`` writes one from Tux Paint's stamps)::

    DIR/<class>/*.png                 cut-outs with transparency (at least one per class)
    DIR/<class>/*.{ogg,wav,flac}      recordings of the class's sound (at least one per class)
    DIR/_silent/*.png                 distractors that never sound (optional)

Pictures and recordings of a class are paired at random. Other files (README, LICENSE, ...)
and folders starting with ``.`` or ``_`` (other than ``_silent``) are skipped and counted.
:func:`scan_assets` reads every header once and refuses a bad folder in one line naming it;
:func:`load_picture` and :func:`load_sound` decode lazily (and are cached per process).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile
import soxr
from PIL import Image

from avloc.data.benchmarks.synth_sounds import SAMPLE_RATE
from avloc.types import AvlocError

PICTURE_EXTENSIONS = (".png",)
SOUND_EXTENSIONS = (".ogg", ".wav", ".flac")
SILENT = "_silent"
MAX_SIDE = 768  # pictures are shrunk to this side on load: objects are drawn smaller than that at any sane size
TRIM_DB = 40.0  # leading/trailing silence of a recording (below its peak by this much) is cut


@dataclass(frozen=True)
class AssetLibrary:
    """The checked contents of an assets folder; paths are relative to ``root``, sorted."""

    root: Path
    classes: tuple[str, ...]
    pictures: tuple[tuple[str, ...], ...]  # per class
    sounds: tuple[tuple[str, ...], ...]  # per class
    silent: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def fingerprint(self) -> str:
        """A hash of every file's path and size: the same folder gives the same datasets."""
        digest = hashlib.sha256()
        for name in sorted({*self.silent, *(p for ps in self.pictures for p in ps), *(s for ss in self.sounds for s in ss)}):
            digest.update(f"{name}\0{(self.root / name).stat().st_size}\0".encode())
        return digest.hexdigest()[:16]


def scan_assets(folder: str | os.PathLike) -> AssetLibrary:
    """Check an assets folder (every picture's and recording's header) and list its contents.

    Raises:
        AvlocError: one line naming the folder and the problem: missing, fewer than two classes,
            a class without pictures or sounds, an unreadable picture or recording, a picture
            without transparency.
    """
    root = Path(folder)
    if not root.is_dir():
        raise AvlocError(f"assets folder {root}: not a folder")
    skipped: Counter = Counter()
    classes, pictures, sounds, silent = [], [], [], ()
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            skipped["files beside the class folders"] += 1
            continue
        if entry.name.startswith(".") or (entry.name.startswith("_") and entry.name != SILENT):
            skipped["folders starting with . or _"] += 1
            continue
        files = sorted(p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
        found = [f"{entry.name}/{p.name}" for p in files if p.suffix.lower() in PICTURE_EXTENSIONS]
        heard = [f"{entry.name}/{p.name}" for p in files if p.suffix.lower() in SOUND_EXTENSIONS]
        others = len(files) - len(found) - len(heard)
        if entry.name == SILENT:
            silent, others = tuple(found), others + len(heard)
        elif not found and not heard:
            skipped["folders without pictures or sounds"] += 1
        elif not found:
            raise AvlocError(f"assets folder {root}: class {entry.name!r} has sounds but no pictures (*.png)")
        elif not heard:
            raise AvlocError(f"assets folder {root}: class {entry.name!r} has pictures but no sound "
                             f"({', '.join('*' + e for e in SOUND_EXTENSIONS)})")
        else:
            classes.append(entry.name)
            pictures.append(tuple(found))
            sounds.append(tuple(heard))
        if others:
            skipped["files that are neither pictures nor sounds"] += others
    if len(classes) < 2:
        what = "no classes" if not classes else f"one class only ({classes[0]})"
        raise AvlocError(f"assets folder {root}: {what}; expected at least two folders <class>/ each holding "
                         f"*.png cut-outs and *.ogg/*.wav/*.flac recordings")
    for name in sorted({*silent, *(p for ps in pictures for p in ps)}):
        _check_picture(root, name)
    for name in sorted(s for ss in sounds for s in ss):
        _check_sound(root, name)
    return AssetLibrary(root, tuple(classes), tuple(pictures), tuple(sounds), silent, dict(sorted(skipped.items())))


def _check_picture(root: Path, name: str) -> None:
    try:
        with Image.open(root / name) as image:
            image.verify()
            mode, info = image.mode, image.info
    except Exception as error:  # PIL raises many types for damaged files
        raise AvlocError(f"assets folder {root}: unreadable picture {name} ({error})") from None
    if mode not in ("RGBA", "LA", "PA") and "transparency" not in info:
        raise AvlocError(f"assets folder {root}: picture {name} has no transparency (mode {mode}); "
                         "cut-outs need an alpha channel")


def _check_sound(root: Path, name: str) -> None:
    try:
        frames = soundfile.info(str(root / name)).frames
    except Exception as error:  # soundfile raises RuntimeError subclasses with libsndfile's message
        raise AvlocError(f"assets folder {root}: unreadable sound {name} ({error})") from None
    if frames == 0:
        raise AvlocError(f"assets folder {root}: sound {name} holds no samples")


@functools.lru_cache(maxsize=64)
def load_picture(path: str) -> np.ndarray:
    """``(h, w, 4)`` uint8 RGBA of a picture, cut to its visible pixels, at most :data:`MAX_SIDE` a side."""
    try:
        with Image.open(path) as image:
            rgba = np.asarray(image.convert("RGBA"))
    except Exception as error:
        raise AvlocError(f"{path}: unreadable picture ({error})") from None
    ys, xs = np.nonzero(rgba[..., 3] > 0)
    if len(xs) == 0:
        raise AvlocError(f"{path}: the picture is fully transparent")
    rgba = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = rgba.shape[:2]
    if max(h, w) > MAX_SIDE:
        scale = MAX_SIDE / max(h, w)
        premultiplied = rgba.astype(np.float32)
        premultiplied[..., :3] *= premultiplied[..., 3:] / 255.0  # resample colour weighted by coverage
        small = cv2.resize(premultiplied, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
        alpha = small[..., 3:]
        small[..., :3] = np.where(alpha > 0, small[..., :3] * 255.0 / np.maximum(alpha, 1e-6), 0)
        rgba = np.clip(small + 0.5, 0, 255).astype(np.uint8)
    rgba.setflags(write=False)
    return rgba


@functools.lru_cache(maxsize=None)
def load_sound(path: str) -> np.ndarray:
    """``(S,)`` float32 mono recording at 16 kHz, leading/trailing silence cut, unit RMS.

    Decoded by libsndfile (``soundfile``), channels averaged, resampled by ``soxr`` (both what
    librosa uses underneath, without its slow first call).
    """
    try:
        wave, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (S, C)
    except Exception as error:
        raise AvlocError(f"{path}: unreadable sound ({error})") from None
    wave = wave.mean(axis=1)  # (S, C) -> (S,)
    if rate != SAMPLE_RATE and wave.size:
        wave = soxr.resample(wave, rate, SAMPLE_RATE).astype(np.float32)
    if wave.size == 0 or not np.all(np.isfinite(wave)) or not np.any(wave):
        raise AvlocError(f"{path}: the sound is empty, silent or holds non-finite samples")
    wave = _trim(wave)
    wave = (wave / np.sqrt(np.mean(wave.astype(np.float64) ** 2))).astype(np.float32)
    wave.setflags(write=False)
    return wave


def _trim(wave: np.ndarray, frame: int = 512) -> np.ndarray:
    """Cut the frames at both ends whose RMS is :data:`TRIM_DB` below the loudest frame's."""
    frames = len(wave) // frame
    if frames < 2:
        return wave
    rms = np.sqrt(np.mean(wave[: frames * frame].reshape(frames, frame) ** 2, axis=1))  # (S,) -> (frames,)
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-TRIM_DB / 20))
    return wave[loud[0] * frame : min(len(wave), (loud[-1] + 1) * frame)]
