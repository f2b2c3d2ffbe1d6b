"""``avloc datasets check``: recognise a dataset folder's layout, count it, list what is missing.

Layouts, recognised in this order: avloc's native format (``manifest.jsonl``), AVE
(``Annotations.txt`` with the ``*_order.h5`` split files), the STM authors' AVE split files
(``trainSet.txt``, ``valSet.txt``, ``testSet.txt``), a VGG-SS JSON file (degenerate boxes and
unreadable entries reported, not fatal), the STM authors' CVAT folders (``<id>/annotations.xml``,
their ``annotations/<subset>/`` tree, or one video's folder holding ``annotations.xml``: never
taken for Flickr-SoundNet), AudioSet-Instrument split CSVs, Flickr-SoundNet XML files and AVATAR
frame JSONs (``<video id>/<frame>.json``). Annotation-only folders are fine: missing videos are
reported, the counts are still printed. Files that a reader refuses are listed with the
reason, and counted, instead of stopping the check.

A native dataset is checked line by line and video by video: every bad manifest line is
listed (``manifest.jsonl:LINE: reason``), and every clip whose video is missing, unreadable
(headers and first frame), silent, or shorter than its annotations
(:func:`avloc.data.usable.length_problem`), with its line; the report ends with ``N of M videos
usable`` and counts those as problems (:class:`CheckReport`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avloc.data.formats import audioset_instrument, ave, cvat
from avloc.data.formats.avatar import read_avatar_frame
from avloc.data.formats.ave_features import VISUAL_FILE, AVEFeatures
from avloc.data.formats.flickr import read_flickr_xml
from avloc.data.manifest import class_list, scan_manifest
from avloc.data.formats.media import find_media, find_videos
from avloc.data.formats.vggss import read_vggss_file
from avloc.data.usable import check_video, length_problem
from avloc.types import AvlocError

LISTED = 10  # missing files listed by name before "and N more"


@dataclass(frozen=True)
class CheckReport:
    """A check's report as lines of text, and how many problems make the dataset unfit to use as it is."""

    lines: list[str]
    problems: int = 0
    source: Path | None = None  # the file the problems are in (a native dataset's manifest)


def check_dataset(folder: str | os.PathLike) -> list[str]:
    """The report as lines of text. Raises AvlocError for an unknown layout or a broken single file."""
    return inspect_dataset(folder).lines


def inspect_dataset(folder: str | os.PathLike) -> CheckReport:
    """The report and its problem count (``avloc datasets check`` exits non-zero when there is one).

    Problems are what a run on the dataset would trip on: bad manifest lines and clips whose
    video is missing, unreadable, silent or too short for its annotations (native layout).
    The field's layouts are annotation folders: their missing videos are listed, not counted.
    """
    folder = Path(folder)
    if folder.is_file() and folder.suffix.lower() == ".json":
        return CheckReport(_check_vggss(folder))
    if not folder.is_dir():
        raise AvlocError(f"{folder}: not a folder (or a VGG-SS .json file)")
    if (folder / "manifest.jsonl").is_file():
        return _check_native(folder)
    return CheckReport(_check_layout(folder))


def _check_layout(folder: Path) -> list[str]:
    """The report of a folder in one of the field's layouts (see the module docstring)."""
    if (folder / "Annotations.txt").is_file():
        return _check_ave(folder)
    if ave.split_files(folder):
        return _check_ave_splits(folder)
    cvat_files = (sorted(folder.glob("*/annotations.xml")) or sorted(folder.glob("annotations/*/*/annotations.xml"))
                  or sorted(folder.glob("annotations.xml")))  # a tree, a subset, or one video's folder
    if cvat_files:
        return _check_cvat(folder, cvat_files)
    if any((folder / f"{name}.csv").is_file() for name in ave.SPLITS):
        return _check_instrument(folder)
    if any(folder.glob("*.xml")):
        return _check_flickr(folder)
    if any(folder.glob("*/*.json")):
        return _check_avatar(folder)
    raise AvlocError(f"{folder}: layout not recognised (expected manifest.jsonl, Annotations.txt, "
                     "trainSet/valSet/testSet.txt, <id>/annotations.xml, train/val/test.csv, *.xml or "
                     "<video id>/<frame>.json)")


def _counts(title: str, counter: Counter) -> list[str]:
    return [f"{title}:"] + [f"  {name:<24} {count}" for name, count in sorted(counter.items())]


def _missing(what: str, names: list[str]) -> list[str]:
    if not names:
        return [f"{what}: none missing"]
    shown = ", ".join(names[:LISTED]) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
    return [f"{what}: {len(names)} missing: {shown}"]


def _check_native(folder: Path) -> CheckReport:
    scan = scan_manifest(folder)  # every line validated; the bad ones listed, not fatal
    records = [record for _, record in scan.lines]
    if not records and not scan.errors:
        raise AvlocError(f"{scan.path}: the manifest has no clips")
    classes = class_list(records) if records else ()
    lines = [f"{folder}: native layout, {len(records)} clips, {len(classes)} classes (background last)"]
    if scan.errors:
        lines.append(f"bad manifest lines: {len(scan.errors)}")
        lines += [f"  {error}" for error in scan.errors]
    lines += _counts("clips per split", Counter(r.split for r in records))
    lines += _counts("clips per class", Counter(r.label for r in records))
    lines += _counts("annotated frames per scenario",
                     Counter(f.scenario or "unlabelled" for r in records for f in r.frames))
    absent = [str(Path(r.video).relative_to(scan.path.parent)) for r in records if not Path(r.video).is_file()]
    lines += _missing("videos", absent)
    bad = []
    for number, record in scan.lines:
        if not Path(record.video).is_file():
            reason = f"{record.video}: no such file"
        else:
            try:
                reason = length_problem(record, check_video(record.video))
            except AvlocError as error:
                reason = str(error)
        if reason is not None:
            bad.append(f"{scan.path.name}:{number}: clip {record.id!r}: {reason}")
    if bad:
        lines.append(f"clips whose video is unusable: {len(bad)}")
        lines += [f"  {reason}" for reason in bad]
    usable = len(records) - len(bad)
    lines.append(f"{usable} of {len(records)} videos usable (readable, with sound, long enough for their annotations)")
    return CheckReport(lines, problems=len(scan.errors) + len(bad), source=scan.path)


def _check_ave(folder: Path) -> list[str]:
    samples = ave.read_annotations(folder / "Annotations.txt")
    classes = ave.ave_classes(samples)
    videos = {s.video_id for s in samples}
    lines = [f"{folder}: AVE layout, {len(samples)} samples from {len(videos)} videos, "
             f"{len(classes) - 1} classes + background"]
    header = ave.header_line(folder / "Annotations.txt")
    if header is not None:
        lines.append(f"Annotations.txt: header line {header!r} skipped (row 0 is the first data line)")
    if all((folder / f"{name}_order.h5").is_file() for name in ave.SPLITS):
        split = ave.read_split(folder, len(samples))
        lines.append("samples per split: " + ", ".join(f"{name} {len(split[name])}" for name in ave.SPLITS))
    else:
        lines.append("samples per split: no *_order.h5 split files")
    lines += _counts("samples per class", Counter(s.category for s in samples))
    for name, expected in (("labels_closs.h5", ave.segment_mask(samples)),
                           ("mil_labels.h5", ave.video_labels(samples, classes)),
                           ("labels.h5", ave.segment_labels(samples, classes))):
        if (folder / name).is_file():
            same = np.array_equal(ave.read_h5(folder / name, ave.FEATURE_KEY), expected)
            lines.append(f"{name}: {'matches' if same else 'DIFFERS FROM'} the labels recomputed from Annotations.txt")
    if (folder / VISUAL_FILE).is_file():
        try:
            lines.append(AVEFeatures(folder).describe())
        except AvlocError as error:
            lines.append(f"features: refused: {error}")
    found = find_videos(folder)
    if not found:
        lines.append(f"videos: none found below {folder} (an annotation-only folder): {len(videos)} missing")
    else:
        lines += _missing("videos", sorted(videos - found.keys()))
    return lines


def _check_ave_splits(folder: Path) -> list[str]:
    """The STM authors' ``trainSet.txt`` / ``valSet.txt`` / ``testSet.txt`` (AVE's split, one file each)."""
    splits = ave.read_split_files(folder)
    samples = [sample for split in splits.values() for sample in split]
    videos = {s.video_id for s in samples}
    lines = [f"{folder}: AVE split files of the STM authors, {len(samples)} samples from {len(videos)} videos, "
             f"{len(ave.ave_classes(samples)) - 1} classes + background"]
    lines.append("samples per split: " + ", ".join(f"{name} {len(rows)}" for name, rows in splits.items()))
    lines += _counts("samples per class", Counter(s.category for s in samples))
    return lines + _videos_missing(folder, sorted(videos))


def _read_all(paths: list[Path], reader: Callable) -> tuple[list, list[str]]:
    """Every file read by ``reader``; the refused ones as their one-line reasons."""
    good, broken = [], []
    for path in paths:
        try:
            good.append(reader(path))
        except AvlocError as error:
            broken.append(str(error))
    return good, broken


def _broken(what: str, reasons: list[str]) -> list[str]:
    if not reasons:
        return [f"broken {what}: none"]
    return [f"broken {what}: {len(reasons)}"] + [f"  {reason}" for reason in reasons]


def _videos_missing(folder: Path, stems: list[str]) -> list[str]:
    found = find_videos(folder)
    if not found:
        return [f"videos: none found below {folder} (an annotation-only folder): {len(set(stems))} missing"]
    return _missing("videos", sorted(set(stems) - found.keys()))


def _check_vggss(path: Path) -> list[str]:
    document = read_vggss_file(path)
    entries = document.entries
    lines = [f"{path}: VGG-SS layout, {len(entries)} annotated clips, {sum(len(e.boxes) for e in entries)} boxes"]
    lines += document.summary() or ["degenerate boxes: none"]
    lines += _counts("clips per class", Counter(e.label for e in entries))
    return lines + _videos_missing(path.parent, [e.file for e in entries])


def _check_cvat(folder: Path, paths: list[Path]) -> list[str]:
    annotations, broken = _read_all(paths, cvat.read_cvat)
    subsets = Counter(p.parent.parent.name if p.parent != folder else folder.parent.name for p in paths)
    lines = [f"{folder}: STM CVAT box annotations, {len(paths)} files"]
    lines += _counts("files per subset", subsets)
    lines.append(f"files with a track: {sum(a.has_track for a in annotations)}, without (no visible sounding "
                 f"object): {sum(not a.has_track for a in annotations)}")
    lines.append(f"frames: {sum(a.frame_count for a in annotations)}, "
                 f"boxes: {sum(len(b) for a in annotations for b in a.boxes)}")
    return lines + _broken("files", broken)


def _check_instrument(folder: Path) -> list[str]:
    rows = {name: audioset_instrument.read_instrument_csv(folder / f"{name}.csv")
            for name in ave.SPLITS if (folder / f"{name}.csv").is_file()}
    clips = [clip for split in rows.values() for clip in split]
    lines = [f"{folder}: AudioSet-Instrument layout, {len(clips)} clips, "
             f"{len(audioset_instrument.instrument_classes(clips))} classes (brass merged)"]
    lines.append("clips per split: " + ", ".join(f"{name} {len(split)}" for name, split in rows.items()))
    lines += _counts("clips per class", Counter(name for clip in clips for name in clip.classes))
    lines.append(f"clips with several instruments: {sum(clip.multi for clip in clips)}")
    return lines + _videos_missing(folder, [clip.video_id for clip in clips])


def _check_flickr(folder: Path) -> list[str]:
    paths = sorted(folder.glob("*.xml"))
    annotations, broken = _read_all(paths, read_flickr_xml)
    lines = [f"{folder}: Flickr-SoundNet layout, {len(paths)} annotation files, "
             f"{sum(len(a.boxes) for a in annotations)} boxes"]
    media = {stem for stem, kinds in find_media(folder).items() if {"video", "image"} & kinds.keys()}
    lines += _missing("videos or images", sorted({a.id for a in annotations} - media))
    return lines + _broken("files", broken)


def _check_avatar(folder: Path) -> list[str]:
    paths = sorted(folder.glob("*/*.json"))
    frames, broken = _read_all(paths, read_avatar_frame)
    lines = [f"{folder}: AVATAR layout, {len({p.parent.name for p in paths})} videos, {len(paths)} annotated frames"]
    tasks = Counter(o.task or "unlabelled" for f in frames for o in f.objects)
    tasks["no object (off-screen)"] = sum(not f.objects for f in frames)
    lines += _counts("objects per task", tasks)
    lines.append(f"objects with polygons: {sum(bool(o.polygons) for f in frames for o in f.objects)} of "
                 f"{sum(len(f.objects) for f in frames)}")
    return lines + _videos_missing(folder, [p.parent.name for p in paths]) + _broken("files", broken)
