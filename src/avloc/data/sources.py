"""Datasets and feature files by layout: avloc's native format or the AVE authors' folder.

- :func:`load_dataset`: a folder with ``manifest.jsonl`` (:func:`~avloc.data.manifest.load_manifest`)
  or an AVE folder (``Annotations.txt`` + ``{train,val,test}_order.h5``) as a
  :class:`~avloc.data.manifest.NativeDataset`. AVE records: one per annotated row that a split
  file names, in row order; id ``f"{row:04d}-{youtube_id}"`` (rows 0-based, so a two-event
  video gives two ids), label the category, one segment ``[start, end)`` with the category (the
  empty event ``[0, 0)`` gets one background segment over the clip, so every second is
  background as in ``labels.h5``), video the file named by the YouTube id anywhere below the
  folder (``videos/ID.mp4`` when there is none). Classes keep AVE's order (first appearance,
  background last). With ``require_videos=False`` and the three ``*_noisy.h5`` files present
  the weak negatives are added as train records ``noisy-000``, ... labelled background over
  the whole clip; they exist only as features.
- STM authors' AVE split files (``trainSet.txt`` / ``valSet.txt`` / ``testSet.txt``, lines of
  ``Annotations.txt`` per split, :func:`load_ave_splits`), as a NativeDataset the same way.
- :func:`open_features`: an avloc feature cache (``FILE.h5``) or an AVE feature folder (or its
  ``visual_feature.h5``), both with the same read interface.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from avloc.data.formats.ave import (
    ANNOTATIONS,
    SECONDS,
    AVESample,
    ave_classes,
    read_annotations,
    read_split,
    read_split_files,
    sample_id,
    split_files,
)
from avloc.data.formats.ave_features import (
    ORDER_FILES,
    VISUAL_FILE,
    AVEFeatures,
    noisy_id,
    noisy_labels,
)
from avloc.data.cache import FeatureCache
from avloc.data.manifest import (
    BACKGROUND,
    MANIFEST_NAME,
    ClipRecord,
    NativeDataset,
    Segment,
    load_manifest,
)
from avloc.data.formats.media import find_videos
from avloc.types import AvlocError

log = logging.getLogger(__name__)

FeatureSource = FeatureCache | AVEFeatures


def load_dataset(path: str | os.PathLike, require_videos: bool = True) -> NativeDataset:
    """A native or AVE dataset folder as a NativeDataset (see the module docstring).

    Args:
        path: the dataset folder.
        require_videos: refuse records whose video file is missing (train / eval from videos).
    """
    folder = Path(path)
    if (folder / ANNOTATIONS).is_file() and not (folder / MANIFEST_NAME).is_file():
        return load_ave(folder, require_videos)
    if split_files(folder) and not (folder / MANIFEST_NAME).is_file():
        return load_ave_splits(folder, require_videos)
    return load_manifest(folder, require_videos)


def load_ave(folder: str | os.PathLike, require_videos: bool = True) -> NativeDataset:
    """An AVE folder (``Annotations.txt`` + ``*_order.h5``) as a NativeDataset."""
    folder = Path(folder).resolve()
    samples = read_annotations(folder / ANNOTATIONS)
    absent = [name for name in ORDER_FILES if not (folder / name).is_file()]
    if absent:
        raise AvlocError(f"{folder}: an AVE folder needs the split files {', '.join(ORDER_FILES)}; "
                         f"missing {', '.join(absent)}")
    split_of: dict[int, str] = {}
    for name, rows in read_split(folder, len(samples)).items():
        for row in rows.tolist():
            if split_of.setdefault(row, name) != name:
                raise AvlocError(f"{folder}: row {row} is in both {split_of[row]}_order.h5 and {name}_order.h5")
    if len(split_of) < len(samples):
        log.warning("%s: %d annotated rows are in no split file; left out", folder, len(samples) - len(split_of))
    videos = find_videos(folder)
    records = [
        ClipRecord(
            id=sample_id(row, sample),
            video=videos.get(sample.video_id, folder / "videos" / f"{sample.video_id}.mp4"),
            split=split_of[row],
            label=sample.category,
            segments=_segments(sample),
        )
        for row, sample in enumerate(samples)
        if row in split_of
    ]
    classes = ave_classes(samples)
    if require_videos:
        missing = [r for r in records if not r.video.is_file()]
        if missing:
            raise AvlocError(f"{folder}: {len(missing)} of {len(records)} videos not found below it, e.g. "
                             f"{missing[0].video.stem} (sample {missing[0].id}); add them or train on features")
    else:
        negatives = noisy_labels(folder, len(classes))
        count = 0 if negatives is None else len(negatives)
        records += [ClipRecord(id=noisy_id(i), video=folder / "videos" / f"{noisy_id(i)}.mp4", split="train",
                               label=BACKGROUND, segments=(Segment(0.0, float(SECONDS), BACKGROUND),))
                    for i in range(count)]
    return NativeDataset(root=folder, records=tuple(records), classes=tuple(classes))


def load_ave_splits(folder: str | os.PathLike, require_videos: bool = True) -> NativeDataset:
    """The STM authors' AVE split files (``trainSet.txt``, ``valSet.txt``, ``testSet.txt``) as a NativeDataset.

    The files hold ``Annotations.txt`` lines without their row numbers, so the ids are
    ``f"{split}{index:04d}-{youtube_id}"`` (``index`` the 0-based line of the split's file);
    videos, segments and classes as for :func:`load_ave` (classes in first appearance over
    train, val, test).
    """
    folder = Path(folder).resolve()
    splits = read_split_files(folder)
    videos = find_videos(folder)
    records = [
        ClipRecord(
            id=f"{name}{index:04d}-{sample.video_id}",
            video=videos.get(sample.video_id, folder / "videos" / f"{sample.video_id}.mp4"),
            split=name,
            label=sample.category,
            segments=_segments(sample),
        )
        for name, samples in splits.items()
        for index, sample in enumerate(samples)
    ]
    if require_videos:
        missing = [r for r in records if not r.video.is_file()]
        if missing:
            raise AvlocError(f"{folder}: {len(missing)} of {len(records)} videos not found below it, e.g. "
                             f"{missing[0].video.stem} (sample {missing[0].id})")
    classes = ave_classes([sample for samples in splits.values() for sample in samples])
    return NativeDataset(root=folder, records=tuple(records), classes=tuple(classes))


def _segments(sample: AVESample) -> tuple[Segment, ...]:
    if sample.start == sample.end:  # the empty event: background throughout, as labels.h5 says
        return (Segment(0.0, float(SECONDS), BACKGROUND),)
    return (Segment(float(sample.start), float(sample.end), sample.category),)


def open_features(path: str | os.PathLike) -> FeatureSource:
    """An avloc feature cache, or an AVE feature folder / its ``visual_feature.h5``."""
    path = Path(path)
    if path.is_dir() or path.name == VISUAL_FILE:
        return AVEFeatures(path)
    return FeatureCache(path)
