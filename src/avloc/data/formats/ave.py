"""The AVE dataset (Tian et al., ECCV 2018): annotations, official split, labels, HDF5 layout.

``Annotations.txt`` has one line per *sample* (``Category&YouTubeID&Quality&Start&End``): a
video with two events is two samples (4143 samples from 4097 videos). The authors' repository
copy has no header; the dataset's download starts with ``Category&VideoID&Quality&StartTime&EndTime``,
which is recognised and skipped (:func:`header_line`), so row ``i`` is always the ``i``-th
data line, the row the ``*_order.h5`` indices name. Conventions
of the authors' files, reproduced exactly (tests compare with the shipped files):

- classes: the 28 categories in order of first appearance in ``Annotations.txt``, then
  ``background`` at index 28;
- ``*_order.h5`` (key ``order``): row indices into ``Annotations.txt``; the official split is
  3339 / 402 / 402 samples;
- ``labels_closs.h5`` (key ``avadataset``, ``(N, 10)``): 1 for every second ``s`` of the
  10-s clip with ``start <= s < end``; one shipped line has an empty event ([0, 0), line 27):
  it is kept, as in the authors' files, with every second background;
- ``mil_labels.h5`` (key ``avadataset``, ``(N, 29)``): the sample's category, one-hot;
- ``labels.h5`` (key ``avadataset``, ``(N, 10, 29)``): per second the category inside the
  event and ``background`` outside it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from avloc.data.manifest import BACKGROUND
from avloc.types import AvlocError

SECONDS = 10  # every AVE clip is 10 s long, labelled per second
ANNOTATIONS = "Annotations.txt"
FEATURE_KEY, ORDER_KEY = "avadataset", "order"
SPLITS = ("train", "val", "test")
# The STM authors' split files (their repository's splits/AVE/): Annotations.txt lines, one file per split.
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
# Lower-cased names each field of a header line may carry (the download spells the second one).
HEADER_FIELDS = ({"category"}, {"videoid", "youtubeid", "video_id", "youtube_id", "id"}, {"quality"},
                 {"starttime", "start", "startsec"}, {"endtime", "end", "endsec"})


@dataclass(frozen=True)
class AVESample:
    """One line of ``Annotations.txt``: one event of one video."""

    category: str
    video_id: str
    quality: str
    start: int  # seconds, inclusive
    end: int  # seconds, exclusive


def read_annotations(path: str | os.PathLike) -> list[AVESample]:
    """Parse ``Annotations.txt``; every malformed line is refused with ``file:line: reason``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise AvlocError(f"{path}: cannot read ({error})") from None
    samples = []
    header = _header_number(lines)
    for number, line in enumerate(lines, start=1):
        if not line.strip() or number == header:
            continue
        fields = line.rstrip("\r").split("&")
        if len(fields) != 5:
            raise AvlocError(f"{path}:{number}: expected Category&YouTubeID&Quality&Start&End, got {line!r}")
        category, video_id, quality, start, end = fields
        if not (start.isascii() and start.isdigit() and end.isascii() and end.isdigit()):
            raise AvlocError(f"{path}:{number}: start and end must be whole seconds, got {start!r}, {end!r}")
        if not 0 <= int(start) <= int(end) <= SECONDS:
            raise AvlocError(f"{path}:{number}: event [{start}, {end}) is not inside the {SECONDS}-s clip")
        if not category or not video_id:
            raise AvlocError(f"{path}:{number}: empty category or video id")
        samples.append(AVESample(category, video_id, quality, int(start), int(end)))
    if not samples:
        raise AvlocError(f"{path}: no annotations")
    return samples


def _is_header(line: str) -> bool:
    fields = [field.strip().lower() for field in line.rstrip("\r").split("&")]
    return len(fields) == len(HEADER_FIELDS) and all(f in names for f, names in zip(fields, HEADER_FIELDS))


def _header_number(lines: list[str]) -> int | None:
    """The 1-based line number of a header line (the first non-empty line), or None."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            return number if _is_header(line) else None
    return None


def header_line(path: str | os.PathLike) -> str | None:
    """The header line that :func:`read_annotations` skips in ``path``, or None (no header, or unreadable)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    number = _header_number(lines)
    return None if number is None else lines[number - 1].strip()


def format_annotations(samples: list[AVESample]) -> str:
    """The text of ``Annotations.txt`` holding ``samples`` (the inverse of :func:`read_annotations`)."""
    return "".join(f"{s.category}&{s.video_id}&{s.quality}&{s.start}&{s.end}\n" for s in samples)


def sample_id(row: int, sample: AVESample) -> str:
    """avloc's id of the sample on row ``row`` (0-based): a two-event video gets two ids."""
    return f"{row:04d}-{sample.video_id}"


def ave_classes(samples: list[AVESample]) -> list[str]:
    """Categories in order of first appearance, then ``background`` (AVE: 28 + 1)."""
    return list(dict.fromkeys(s.category for s in samples)) + [BACKGROUND]


def segment_mask(samples: list[AVESample]) -> np.ndarray:
    """``(N, 10)`` float32: 1 for the seconds inside each sample's event (``labels_closs.h5``)."""
    seconds = np.arange(SECONDS)
    starts = np.array([s.start for s in samples])[:, None]  # (N, 1)
    ends = np.array([s.end for s in samples])[:, None]  # (N, 1)
    return ((seconds >= starts) & (seconds < ends)).astype(np.float32)  # (N, 10)


def video_labels(samples: list[AVESample], classes: list[str]) -> np.ndarray:
    """``(N, K)`` float32 one-hot of each sample's category (``mil_labels.h5``)."""
    labels = np.zeros((len(samples), len(classes)), np.float32)
    labels[np.arange(len(samples)), [classes.index(s.category) for s in samples]] = 1.0
    return labels


def segment_labels(samples: list[AVESample], classes: list[str]) -> np.ndarray:
    """``(N, 10, K)`` float32 one-hot per second: the category inside the event, background outside."""
    inside = segment_mask(samples)[..., None]  # (N, 10) -> (N, 10, 1)
    background = np.zeros(len(classes), np.float32)
    background[classes.index(BACKGROUND)] = 1.0
    return inside * video_labels(samples, classes)[:, None, :] + (1 - inside) * background  # (N, 10, K)


@contextlib.contextmanager
def open_h5(path: str | os.PathLike, key: str) -> Iterator[h5py.Dataset]:
    """The dataset ``key`` of an HDF5 file, open; a one-line error for a missing file or key."""
    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise AvlocError(f"{path}: not a readable HDF5 file ({error})") from None
    with handle:
        if key not in handle:
            raise AvlocError(f"{path}: no dataset {key!r} (has {', '.join(handle.keys()) or 'nothing'})")
        yield handle[key]


def read_h5(path: str | os.PathLike, key: str) -> np.ndarray:
    """The dataset ``key`` of an AVE HDF5 file, with a one-line error for a missing file or key."""
    with open_h5(path, key) as dataset:
        try:
            return dataset[()]
        except OSError as error:
            raise AvlocError(f"{path}: cannot read dataset {key!r} ({error})") from None


def split_files(folder: str | os.PathLike) -> dict[str, Path]:
    """``{split: path}`` of the STM authors' split files (``trainSet.txt``, ...) present in ``folder``."""
    paths = {name: Path(folder) / file for name, file in SPLIT_FILES.items()}
    return {name: path for name, path in paths.items() if path.is_file()}


def read_split_files(folder: str | os.PathLike) -> dict[str, list[AVESample]]:
    """The samples of each STM split file in ``folder`` (the splits present), in file order.

    The files hold the lines of ``Annotations.txt`` that AVE's ``*_order.h5`` name, in that order
    (checked on the published files: val and test line for line; train too, but for row 26, the
    empty event ``[0, 0)`` of ``VWi2ENBuTbw``, which ``trainSet.txt`` gives as ``[0, 10)``).
    """
    paths = split_files(folder)
    if not paths:
        raise AvlocError(f"{folder}: no STM split files ({', '.join(SPLIT_FILES.values())})")
    return {name: read_annotations(path) for name, path in paths.items()}


def read_split(folder: str | os.PathLike, num_samples: int) -> dict[str, np.ndarray]:
    """The official split: ``{train, val, test}`` -> row indices, from ``*_order.h5`` in ``folder``."""
    split = {}
    for name in SPLITS:
        path = Path(folder) / f"{name}_order.h5"
        order = read_h5(path, ORDER_KEY).astype(np.int64)
        if order.ndim != 1 or (order.size and not 0 <= order.min() <= order.max() < num_samples):
            raise AvlocError(f"{path}: expected row indices into the {num_samples} annotations")
        split[name] = order
    return split
