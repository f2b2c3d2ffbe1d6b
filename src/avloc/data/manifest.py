"""avloc's native dataset format: ``DATASET/manifest.jsonl`` plus the videos it names.

One JSON object per line::

    {"id": str, "video": "relative/path.mp4", "split": "train" | "val" | "test",
     "label": str,                                         # video-level event class
     "segments": [{"start": s, "end": s, "label": str}],   # optional; "background" = no event
     "frames": [{"t": s, "boxes": [[x1, y1, x2, y2], ...], # optional; pixels of the original
                 "scenario": "single" | "mixed" | "multi-entity" | "off-screen",
                 "masks": [[[x1, y1, x2, y2, x3, y3, ...], ...], ...],  # optional, one per box
                 "ground_truth": "union" | "enclosing" | "consensus",   # optional
                 "source_boxes": {"format": "vggss" | "flickr",         # optional
                                  "boxes": [[v1, v2, v3, v4], ...]}}],
     "tags": [str]}                                        # optional, e.g. "cross-event"

Boxes are xyxy in pixel coordinates of the original video; an empty list means no visible
sounding object. ``masks`` (AVATAR) gives each box's object as polygons (flat x, y lists in
the same pixels; an empty list: that object has its box only); where polygons exist, the
ground-truth map is built from them. ``ground_truth`` names the dataset's own rule for
turning the boxes into a map (``consensus``: Flickr-SoundNet's sum of the boxes / 2, clipped
at 1); ``avloc eval --gt auto`` (the default) follows it, union otherwise.

``source_boxes`` keeps the boxes exactly as the dataset's own file states them, so that an
evaluation protocol can build its ground truth from them as the dataset's evaluator does:
``vggss``, the entry's ``bbox`` list unmodified (normalised floats, degenerate boxes
included, e.g. a coordinate of -2.88e16); ``flickr``, per ``<bbox>`` element, the integers of
its four children after the first, in document order. A frame whose pixel ``boxes`` are all
dropped (degenerate) but which has source boxes is still an annotated frame.

The class list is the sorted set of every label in the manifest (video and segment labels)
with ``background`` appended last, so that its index is always ``len - 1`` (AVE's
convention: background after the events).

Loading validates every line and raises :class:`ManifestError` with ``file:line: reason``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from avloc.atomic import atomic_path
from avloc.types import AvlocError

MANIFEST_NAME = "manifest.jsonl"
SPLITS = ("train", "val", "test")
SCENARIOS = ("single", "mixed", "multi-entity", "off-screen")
GROUND_TRUTHS = ("union", "enclosing", "consensus")
SOURCE_FORMATS = ("vggss", "flickr")
BACKGROUND = "background"


class ManifestError(AvlocError):
    """A manifest line that does not follow the native format."""


@dataclass(frozen=True)
class Segment:
    """A labelled time span ``[start, end)`` in seconds."""

    start: float
    end: float
    label: str


@dataclass(frozen=True)
class FrameAnnotation:
    """Ground truth of one frame: its time, its sounding-object boxes and its scenario.

    ``masks[i]`` holds the polygons of box ``i``'s object (flat ``(x1, y1, x2, y2, ...)``), or
    is empty; ``masks`` is empty when the dataset has no polygons at all. ``source_boxes``
    (with ``source_format``, one of :data:`SOURCE_FORMATS`) are the dataset file's own boxes,
    unmodified (see the module docstring); empty when the dataset has none.
    """

    t: float
    boxes: tuple[tuple[float, float, float, float], ...]
    scenario: str | None = None
    masks: tuple[tuple[tuple[float, ...], ...], ...] = ()
    ground_truth: str | None = None
    source_format: str | None = None
    source_boxes: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class ClipRecord:
    """One line of the manifest, with ``video`` resolved to an absolute path."""

    id: str
    video: Path
    split: str
    label: str
    segments: tuple[Segment, ...] = ()
    frames: tuple[FrameAnnotation, ...] = ()
    tags: tuple[str, ...] = ()

    def to_json(self, root: Path) -> dict:
        """The manifest line for this record, with ``video`` relative to ``root``."""
        line: dict = {
            "id": self.id,
            "video": self.video.relative_to(root).as_posix(),
            "split": self.split,
            "label": self.label,
        }
        if self.segments:
            line["segments"] = [{"start": s.start, "end": s.end, "label": s.label} for s in self.segments]
        if self.frames:
            line["frames"] = [_frame_json(f) for f in self.frames]
        if self.tags:
            line["tags"] = list(self.tags)
        return line

    def label_at(self, t: float) -> str:
        """The event class sounding at time ``t``.

        The covering segment's label; ``background`` when segments are given but none covers
        ``t``; the video-level label when the clip has no segments (weak labels only).
        """
        if not self.segments:
            return self.label
        for segment in self.segments:
            if segment.start <= t < segment.end:
                return segment.label
        return BACKGROUND


@dataclass(frozen=True)
class NativeDataset:
    """A loaded manifest: its root folder, records in file order, and the class list."""

    root: Path
    records: tuple[ClipRecord, ...]
    classes: tuple[str, ...] = field(default=())

    def split(self, name: str) -> list[ClipRecord]:
        if name not in SPLITS:
            raise AvlocError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return [r for r in self.records if r.split == name]

    def class_index(self, label: str) -> int:
        return self.classes.index(label)

    @property
    def background_index(self) -> int:
        return len(self.classes) - 1


def class_list(records: Iterable[ClipRecord]) -> tuple[str, ...]:
    """Sorted labels of ``records`` (video and segment level) followed by ``background``."""
    labels = set()
    for record in records:
        labels.add(record.label)
        labels.update(s.label for s in record.segments)
    labels.discard(BACKGROUND)
    return (*sorted(labels), BACKGROUND)


def load_manifest(root: str | os.PathLike, require_videos: bool = True) -> NativeDataset:
    """Read and validate ``root/manifest.jsonl``.

    Args:
        root: the dataset folder.
        require_videos: check that every named video file exists.

    Raises:
        ManifestError: ``file:line: reason`` for the first bad line.
    """
    scan = scan_manifest(root, require_videos)
    if scan.errors:
        raise ManifestError(scan.errors[0])
    records = tuple(record for _, record in scan.lines)
    if not records:
        raise ManifestError(f"{scan.path}: the manifest has no clips")
    return NativeDataset(root=scan.path.parent, records=records, classes=class_list(records))


@dataclass(frozen=True)
class ManifestScan:
    """Every line of a manifest: the valid ones with their line numbers, the others as ``file:line: reason``."""

    path: Path
    lines: tuple[tuple[int, ClipRecord], ...]
    errors: tuple[str, ...]


def scan_manifest(root: str | os.PathLike, require_videos: bool = False) -> ManifestScan:
    """Validate every line of ``root/manifest.jsonl``, going on past the bad ones (``avloc datasets check``).

    Raises:
        ManifestError: there is no manifest file.
    """
    root = Path(root).resolve()
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest (a native dataset is a folder with {MANIFEST_NAME})")
    good: list[tuple[int, ClipRecord]] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                errors.append(f"{path}:{number}: not UTF-8 text (byte {error.start + 1})")
                continue
            if not text.strip():
                continue
            try:
                record = _parse_line(text, root, require_videos)
            except (ValueError, TypeError, KeyError) as error:
                errors.append(f"{path}:{number}: {error}")
                continue
            if record.id in seen:
                errors.append(f"{path}:{number}: duplicate id {record.id!r} (first on line {seen[record.id]})")
                continue
            seen[record.id] = number
            good.append((number, record))
    return ManifestScan(path, tuple(good), tuple(errors))


def write_manifest(root: str | os.PathLike, records: Iterable[ClipRecord]) -> Path:
    """Write ``records`` to ``root/manifest.jsonl`` atomically; returns its path."""
    root = Path(root).resolve()
    path = root / MANIFEST_NAME
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_json(root), separators=(", ", ": ")) + "\n")
    return path


def _frame_json(frame: FrameAnnotation) -> dict:
    line: dict = {"t": frame.t, "boxes": [list(b) for b in frame.boxes], "scenario": frame.scenario}
    if frame.masks:
        line["masks"] = [[list(polygon) for polygon in polygons] for polygons in frame.masks]
    if frame.ground_truth is not None:
        line["ground_truth"] = frame.ground_truth
    if frame.source_format is not None:
        line["source_boxes"] = {"format": frame.source_format, "boxes": [list(b) for b in frame.source_boxes]}
    return line


def _parse_line(text: str, root: Path, require_videos: bool) -> ClipRecord:
    try:
        line = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    except (RecursionError, ValueError):  # nesting or an integer literal beyond the parser's limits
        raise ValueError("not valid JSON (nested too deeply or a number too long)") from None
    if not isinstance(line, dict):
        raise ValueError("expected a JSON object")
    clip_id = _string(line, "id")
    split = _string(line, "split")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    return ClipRecord(
        id=clip_id,
        video=_video_path(_string(line, "video"), root, require_videos),
        split=split,
        label=_string(line, "label"),
        segments=tuple(_segment(s, i) for i, s in enumerate(_list(line, "segments"))),
        frames=tuple(_frame(f, i) for i, f in enumerate(_list(line, "frames"))),
        tags=tuple(_tag(t) for t in _list(line, "tags")),
    )


def _string(line: dict, key: str) -> str:
    if key not in line:
        raise KeyError(f"missing required key {key!r}")
    value = line[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be a non-empty string, got {value!r}")
    return value


def _list(line: dict, key: str) -> list:
    value = line.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list, got {type(value).__name__}")
    return value


def _video_path(relative: str, root: Path, require_videos: bool) -> Path:
    # The path is checked as written (lexically): a symbolic link inside the folder, e.g. one
    # made by `avloc datasets convert`, may point anywhere, but the manifest cannot name ".."
    if Path(relative).is_absolute():
        raise ValueError(f"video path {relative!r} must be relative to the dataset folder")
    path = Path(os.path.normpath(root / relative))
    if not path.is_relative_to(root) or path == root:
        raise ValueError(f"video path {relative!r} escapes the dataset folder")
    if require_videos and not path.is_file():
        raise ValueError(f"video file {relative!r} does not exist")
    return path


def _number(value, what: str) -> float:
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer literal beyond the float range
            number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {reprlib.repr(value)}")
    return number


def _segment(raw, index: int) -> Segment:
    if not isinstance(raw, dict):
        raise ValueError(f"segment {index} must be an object")
    start = _number(raw.get("start"), f"segment {index} start")
    end = _number(raw.get("end"), f"segment {index} end")
    if start < 0 or end <= start:
        raise ValueError(f"segment {index} has start {start} and end {end} (need 0 <= start < end)")
    return Segment(start, end, _string(raw, "label"))


def _frame(raw, index: int) -> FrameAnnotation:
    if not isinstance(raw, dict):
        raise ValueError(f"frame {index} must be an object")
    t = _number(raw.get("t"), f"frame {index} t")
    if t < 0:
        raise ValueError(f"frame {index} has negative time {t}")
    boxes = raw.get("boxes", [])
    if not isinstance(boxes, list):
        raise ValueError(f"frame {index} boxes must be a list")
    scenario = raw.get("scenario")
    if scenario is not None and scenario not in SCENARIOS:
        raise ValueError(f"frame {index} has unknown scenario {scenario!r} (expected one of {', '.join(SCENARIOS)})")
    ground_truth = raw.get("ground_truth")
    if ground_truth is not None and ground_truth not in GROUND_TRUTHS:
        raise ValueError(f"frame {index} has unknown ground_truth {ground_truth!r} "
                         f"(expected one of {', '.join(GROUND_TRUTHS)})")
    parsed = tuple(_box(b, index) for b in boxes)
    source_format, source_boxes = _source_boxes(raw.get("source_boxes"), index)
    return FrameAnnotation(t, parsed, scenario, _masks(raw.get("masks", []), len(parsed), index), ground_truth,
                           source_format, source_boxes)


def _source_boxes(raw, frame_index: int) -> tuple[str | None, tuple[tuple[float, ...], ...]]:
    """``{"format": ..., "boxes": [[v1, v2, v3, v4], ...]}``: values kept as written (any finite number)."""
    if raw is None:
        return None, ()
    if not isinstance(raw, dict) or raw.get("format") not in SOURCE_FORMATS or not isinstance(raw.get("boxes"), list):
        formats = " | ".join(f'"{name}"' for name in SOURCE_FORMATS)
        raise ValueError(f'frame {frame_index} source_boxes must be {{"format": {formats}, '
                         '"boxes": [[v1, v2, v3, v4], ...]}')
    boxes = []
    for box in raw["boxes"]:
        if not isinstance(box, list) or len(box) != 4:
            raise ValueError(f"frame {frame_index} has a bad source box {reprlib.repr(box)} (expected 4 numbers)")
        boxes.append(tuple(_kept_number(v, f"frame {frame_index} source box value") for v in box))
    return raw["format"], tuple(boxes)


def _kept_number(value, what: str) -> float:
    """A finite number as written: an integer stays an integer (Flickr's boxes are integer texts)."""
    number = _number(value, what)
    return value if isinstance(value, int) else number


def _masks(raw, num_boxes: int, frame_index: int) -> tuple[tuple[tuple[float, ...], ...], ...]:
    """One list of polygons per box (or none at all); each polygon has at least 3 points."""
    if not isinstance(raw, list) or (raw and len(raw) != num_boxes):
        raise ValueError(f"frame {frame_index} masks must be a list with one entry per box ({num_boxes})")
    masks = []
    for polygons in raw:
        if not isinstance(polygons, list):
            raise ValueError(f"frame {frame_index} masks must hold lists of polygons")
        parsed = []
        for polygon in polygons:
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                raise ValueError(f"frame {frame_index} has a bad polygon (expected [x1, y1, x2, y2, x3, y3, ...])")
            parsed.append(tuple(_number(v, f"frame {frame_index} polygon coordinate") for v in polygon))
        masks.append(tuple(parsed))
    return tuple(masks)


def _box(raw, frame_index: int) -> tuple[float, float, float, float]:
    if not isinstance(raw, list) or len(raw) != 4:
        raise ValueError(f"frame {frame_index} has a bad box {raw!r} (expected [x1, y1, x2, y2])")
    x1, y1, x2, y2 = (_number(v, f"frame {frame_index} box coordinate") for v in raw)
    if x1 < 0 or y1 < 0 or x2 <= x1 or y2 <= y1:
        raise ValueError(f"frame {frame_index} has a bad box {raw!r} (need 0 <= x1 < x2 and 0 <= y1 < y2)")
    return (x1, y1, x2, y2)


def _tag(raw) -> str:
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"tags must be non-empty strings, got {raw!r}")
    return raw
