"""``avloc datasets check``: recognise a dataset folder's layout, count it, list what is missing.

Layouts: avloc's native format (``manifest.jsonl``) and AVE (``Annotations.txt`` with the
``*_order.h5`` split files). Annotation-only folders are fine: missing videos are reported,
the counts are still printed.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from avloc.data import ave
from avloc.data.manifest import load_manifest
from avloc.types import AvlocError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
LISTED = 10  # missing files listed by name before "and N more"


def check_dataset(folder: str | os.PathLike) -> list[str]:
    """The report as lines of text. Raises AvlocError for an unknown layout or a broken file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AvlocError(f"{folder}: not a folder")
    if (folder / "manifest.jsonl").is_file():
        return _check_native(folder)
    if (folder / "Annotations.txt").is_file():
        return _check_ave(folder)
    raise AvlocError(f"{folder}: no manifest.jsonl (native) or Annotations.txt (AVE); layout not recognised")


def _counts(title: str, counter: Counter) -> list[str]:
    return [f"{title}:"] + [f"  {name:<24} {count}" for name, count in sorted(counter.items())]


def _missing(what: str, names: list[str]) -> list[str]:
    if not names:
        return [f"{what}: none missing"]
    shown = ", ".join(names[:LISTED]) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
    return [f"{what}: {len(names)} missing: {shown}"]


def _check_native(folder: Path) -> list[str]:
    dataset = load_manifest(folder)  # validates every line
    records = dataset.records
    lines = [f"{folder}: native layout, {len(records)} clips, {len(dataset.classes)} classes (background last)"]
    lines += _counts("clips per split", Counter(r.split for r in records))
    lines += _counts("clips per class", Counter(r.label for r in records))
    lines += _counts("annotated frames per scenario",
                     Counter(f.scenario or "unlabelled" for r in records for f in r.frames))
    absent = [str(Path(r.video).relative_to(folder)) for r in records if not Path(r.video).is_file()]
    lines += _missing("videos", absent)
    return lines


def _find_videos(folder: Path) -> dict[str, Path]:
    """Videos named by YouTube id anywhere below ``folder`` (AVE ships them in one folder)."""
    return {p.stem: p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES}


def _check_ave(folder: Path) -> list[str]:
    samples = ave.read_annotations(folder / "Annotations.txt")
    classes = ave.ave_classes(samples)
    videos = {s.video_id for s in samples}
    lines = [f"{folder}: AVE layout, {len(samples)} samples from {len(videos)} videos, "
             f"{len(classes) - 1} classes + background"]
    if all((folder / f"{name}_order.h5").is_file() for name in ave.SPLITS):
        split = ave.read_split(folder, len(samples))
        lines.append("samples per split: " + ", ".join(f"{name} {len(split[name])}" for name in ave.SPLITS))
    else:
        lines.append("samples per split: no *_order.h5 split files")
    lines += _counts("samples per class", Counter(s.category for s in samples))
    for name, expected in (("labels_closs.h5", ave.segment_mask(samples)),
                           ("mil_labels.h5", ave.video_labels(samples, classes))):
        if (folder / name).is_file():
            same = np.array_equal(ave.read_h5(folder / name, ave.FEATURE_KEY), expected)
            lines.append(f"{name}: {'matches' if same else 'DIFFERS FROM'} the labels recomputed from Annotations.txt")
    found = _find_videos(folder)
    if not found:
        lines.append(f"videos: none found below {folder} (an annotation-only folder): {len(videos)} missing")
    else:
        lines += _missing("videos", sorted(videos - found.keys()))
    return lines
