"""``avloc localize DIR`` (or several files and folders): every video localised, one output folder each.

**Which videos.** A folder is searched recursively (symlinked files are followed, symlinked
folders are not) for files whose extension is in :data:`VIDEO_EXTENSIONS`, case-insensitive;
hidden files and folders (a name starting with ".") and anything under ``out`` itself are
left out. A file given by name is always tried, whatever its extension. The same file reached
twice is localised once.

**Where.** Each video gets the folder ``out/NAME`` with :func:`avloc.localize_video.localize_video`'s
four outputs. ``NAME`` is the video's path relative to the folder it was found in, without its
extension (``DIR/cats/a.mp4`` -> ``out/cats/a``); a file given by name is at the top
(``out/STEM``); with several inputs, a folder's videos sit under the folder's own name
(``out/DIR/cats/a``). Videos that would share a folder (``a.mp4`` and ``a.mkv``, or names that
differ only in case) keep their extension (``out/a.mp4``, ``out/a.mkv``), and any name still
taken gets ``-2``, ``-3``, ... in sorted order.

**Finished and broken videos.** When a video's four outputs are written, ``done.json`` is written
beside them (atomically, last) with the video's size and modification time, the settings and its
summary row. A rerun skips a video whose folder holds all of these for the same file and settings,
and redoes any other (a killed run leaves no ``done.json``). A video that cannot be localised
(unreadable, cut short, no soundtrack, a range beyond its end) is skipped with its reason; the
others go on. A bad model or bad settings fail the whole batch before the first video. The
model is loaded and its encoders built once for the whole batch
(:func:`avloc.localize_video.localizer_for`), not once per video: for ResNet-152 + VGGish that is
seconds a video.

**Summary.** ``out/summary.csv`` (written atomically at the end, also when interrupted) has one
row per video in :data:`SUMMARY_COLUMNS`: the video, its output folder, duration (s), steps, the
event class most steps show and the share of steps (= of time) it has (empty for a model without
a classifier), the mean score of its boxes (the share of the map's mass inside them; empty when
no step has a box), the seconds it took, its status (``localised``, ``finished earlier``,
``skipped``) and, when skipped, why.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avloc.atomic import atomic_path, make_folder
from avloc.io.decode import probe
from avloc.localize_video import Localization, localize_video, localizer_for, outputs
from avloc.localizer import Localizer, check_streams
from avloc.trained import resolve_source
from avloc.types import AvlocError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                              ".m2ts", ".flv", ".wmv", ".ogv", ".3gp"})
SUMMARY = "summary.csv"
DONE = "done.json"
SUMMARY_COLUMNS = ("video", "output", "duration", "steps", "top_class", "top_class_share", "mean_box_score",
                   "seconds", "status", "reason")
LOCALISED, FINISHED, SKIPPED = "localised", "finished earlier", "skipped"


@dataclass(frozen=True)
class BatchItem:
    """One video of a batch and its output folder, relative to ``out`` (POSIX separators)."""

    video: Path
    name: str


@dataclass
class BatchResult:
    """What :func:`localize_batch` did: one summary row per video, in order."""

    out: Path
    rows: list[dict] = field(default_factory=list)

    @property
    def summary(self) -> Path:
        return self.out / SUMMARY

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)


def find_videos(inputs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[BatchItem]:
    """The videos of ``inputs`` (files and folders) and their output folders (see the module docstring).

    Raises:
        AvlocError: no input, or no video in any of them.
    """
    if not inputs:
        raise AvlocError("no videos given")
    skip = Path(exclude).resolve() if exclude is not None else None
    several = len(inputs) > 1
    found: dict[Path, tuple[Path, tuple[str, ...]]] = {}  # resolved path -> (path, name parts with the file name)
    for given in map(Path, inputs):
        if not given.is_dir():
            found.setdefault(given.resolve(), (given, (given.name,)))
            continue
        prefix = (given.resolve().name,) if several else ()
        videos = 0
        for path in sorted(given.rglob("*")):
            relative = path.relative_to(given)
            if (path.suffix.lower() not in VIDEO_EXTENSIONS or any(part.startswith(".") for part in relative.parts)
                    or not path.is_file() or (skip is not None and path.resolve().is_relative_to(skip))):
                continue
            found.setdefault(path.resolve(), (path, (*prefix, *relative.parts)))
            videos += 1
        if not videos and several:  # alone, the error below says it
            log.warning("%s: no videos in this folder (extensions: %s)", given, " ".join(sorted(VIDEO_EXTENSIONS)))
    if not found:
        extensions = " ".join(sorted(VIDEO_EXTENSIONS))
        raise AvlocError(f"no videos in {', '.join(map(str, inputs))} (extensions: {extensions})")
    items = sorted(found.values(), key=lambda item: item[1])
    return [BatchItem(video=path, name=name) for (path, _), name in zip(items, _names([parts for _, parts in items]))]


def _names(parts: list[tuple[str, ...]]) -> list[str]:
    """Collision-free output folder names: the path without the extension, else with it, else numbered."""
    stems = ["/".join((*p[:-1], Path(p[-1]).stem)) for p in parts]
    shared = Counter(stem.casefold() for stem in stems)
    names, taken = [], {SUMMARY.casefold()}  # a video named summary.csv.mp4 must not take the summary's name
    for stem, p in zip(stems, parts):
        base = stem if shared[stem.casefold()] == 1 else "/".join(p)
        name, n = base, 1
        while name.casefold() in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name.casefold())
        names.append(name)
    return names


def localize_batch(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    model: str | os.PathLike = "default",
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    stream: bool = False,
    box_mode: str = "enclosing",
    sheet_frames: int = 8,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    precision: str = "auto",
    overlay: bool = True,
) -> BatchResult:
    """Localise every video of ``inputs`` into its own folder under ``out`` and write ``out/summary.csv``.

    The arguments after ``out`` are :func:`avloc.localize_video.localize_video`'s, the same for
    every video. Videos finished by an earlier run with the same settings are not redone.

    Raises:
        AvlocError: no videos, a bad model or bad settings (before any video is touched).
    """
    out = Path(out)
    items = find_videos(inputs, exclude=out)
    if sheet_frames < 1 or batch_size < 1:
        raise AvlocError(f"sheet_frames and batch_size must be >= 1, got {sheet_frames} and {batch_size}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise AvlocError(f"fps must be a positive number, got {fps}")
    localizer = localizer_for(model, device, precision)  # loaded once: a bad model fails here, not per video
    if stream:
        check_streams(localizer.trained)
    settings = {"model": str(model), "model_file": _stamp(resolve_source(model)), "fps": fps, "start": start,
                "end": end, "stream": stream, "box_mode": box_mode, "sheet_frames": sheet_frames, "overlay": overlay}
    make_folder(out)
    result = BatchResult(out=out)
    try:
        for item in tqdm(items, desc="videos", unit="video", disable=not progress):
            folder = out / item.name
            row = _finished(item, folder, settings)
            if row is None:
                row = _localize_one(item, folder, settings, localizer, batch_size=batch_size, progress=progress)
            result.rows.append(row)
    finally:
        _write_summary(result)
    return result


def _localize_one(item: BatchItem, folder: Path, settings: dict, localizer: Localizer, batch_size: int,
                  progress: bool) -> dict:
    """Localise one video; its summary row, ``skipped`` with the reason when it cannot be."""
    row = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(video=str(item.video), output=item.name)
    started = time.perf_counter()
    try:
        row["duration"] = round(probe(item.video).duration, 3)
        result = localize_video(item.video, folder, model=settings["model"], fps=settings["fps"],
                                start=settings["start"], end=settings["end"], stream=settings["stream"],
                                box_mode=settings["box_mode"], sheet_frames=settings["sheet_frames"],
                                batch_size=batch_size, progress=progress, overlay=settings["overlay"],
                                localizer=localizer)
    except AvlocError as error:
        reason = str(error)
    except Exception as error:  # noqa: BLE001 - one broken video must not stop a batch of thousands
        log.debug("%s", item.video, exc_info=True)
        reason = f"{item.video}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    else:
        row.update(_statistics(result), seconds=round(time.perf_counter() - started, 2), status=LOCALISED)
        with atomic_path(folder / DONE) as tmp:  # last: the video is finished once this exists
            tmp.write_text(json.dumps({"video": _stamp(item.video), "settings": settings, "row": row}, indent=1))
        return row
    log.warning("skipped %s", reason)
    row.update(seconds=round(time.perf_counter() - started, 2), status=SKIPPED, reason=reason)
    return row


def _finished(item: BatchItem, folder: Path, settings: dict) -> dict | None:
    """The summary row of a video an earlier run finished with the same file and settings, else None."""
    try:
        done = json.loads((folder / DONE).read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(done, dict) or done.get("video") != _stamp(item.video) or done.get("settings") != settings
            or not isinstance(done.get("row"), dict)
            or not all((folder / name).is_file() for name in outputs(settings["overlay"]))):
        return None
    row = {key: done["row"].get(key, "") for key in SUMMARY_COLUMNS}
    row.update(video=str(item.video), output=item.name, status=FINISHED)
    return row


def _stamp(path: Path) -> dict | None:
    """What identifies a file's content cheaply: its resolved path, size and modification time."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _statistics(result: Localization) -> dict:
    """Steps, the most frequent step class and its share of the steps, the mean box score."""
    steps = len(result.times)
    row: dict = {"steps": steps, "top_class": "", "top_class_share": "", "mean_box_score": ""}
    if result.probabilities.shape[1] and steps:
        counts = np.bincount(result.probabilities.argmax(axis=1), minlength=len(result.classes))  # (K,)
        top = int(counts.argmax())
        row.update(top_class=result.classes[top], top_class_share=round(float(counts[top]) / steps, 4))
    scores = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in result.scores]) if steps else []
    if len(scores):
        row["mean_box_score"] = round(float(np.mean(scores)), 4)
    return row


def _write_summary(result: BatchResult) -> None:
    with atomic_path(result.summary) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(result.rows)
