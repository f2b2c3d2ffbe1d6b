"""VGG-SS ground truth (Chen et al., CVPR 2021): one JSON list of ``{file, class, bbox}``.

``bbox`` is a list of boxes ``[x1, y1, x2, y2]`` normalised to [0, 1]; the evaluation of the
LVS / EZ-VSL scripts rasterises their union at 224 x 224 (``avloc eval --protocol lvs``).

The file the LVS and EZ-VSL authors ship (5,158 entries) has 18 entries with a *degenerate*
box: 6 of zero width or height and 12 with a coordinate of -2.88e16. Their evaluators clip
every box to [0, 1] and fill ``map[y1:y2, x1:x2]``, so such a box adds nothing (two entries,
whose every box is degenerate, end with an empty ground truth). This reader keeps every
entry and every box as written (:attr:`VGGSSEntry.boxes`); a box is *usable*, and enters
avloc's own pixel ground truth, when ``0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1``. An entry
that cannot be read at all (not an object, a box that is not four finite numbers, no box)
is skipped with its index and reason; only a file that is not a VGG-SS list, or has no
readable entry, is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avloc.types import AvlocError

EVAL_SIZE = 224


@dataclass(frozen=True)
class VGGSSEntry:
    """One annotated image: its file id, class and the ``(N, 4)`` xyxy boxes exactly as in the file."""

    file: str
    label: str
    boxes: np.ndarray  # (N, 4) float64, normalised; degenerate boxes included

    @property
    def usable(self) -> np.ndarray:
        """``(N,)`` bool: the boxes that lie in [0, 1] with positive width and height."""
        x1, y1, x2, y2 = self.boxes.T  # (4, N)
        return (x1 >= 0) & (y1 >= 0) & (x1 < x2) & (y1 < y2) & (x2 <= 1) & (y2 <= 1)

    @property
    def usable_boxes(self) -> np.ndarray:
        """``(M, 4)``: the usable boxes, normalised."""
        return self.boxes[self.usable]

    def boxes_in(self, size: int = EVAL_SIZE) -> np.ndarray:
        """The usable boxes in pixels of a ``size`` x ``size`` map."""
        return self.usable_boxes * size


@dataclass(frozen=True)
class VGGSSFile:
    """A read VGG-SS file: its entries in file order and the entries skipped (``entry i: reason``)."""

    path: Path
    entries: tuple[VGGSSEntry, ...]
    skipped: tuple[str, ...] = ()

    @property
    def degenerate_boxes(self) -> int:
        return sum(int((~e.usable).sum()) for e in self.entries)

    @property
    def degenerate_entries(self) -> list[VGGSSEntry]:
        """Entries with at least one degenerate box."""
        return [e for e in self.entries if not e.usable.all()]

    @property
    def empty_entries(self) -> list[VGGSSEntry]:
        """Entries whose every box is degenerate: an empty ground truth under every protocol."""
        return [e for e in self.entries if not e.usable.any()]

    def summary(self) -> list[str]:
        """What happens to the degenerate boxes and the skipped entries, as lines of text."""
        lines = []
        degenerate = self.degenerate_entries
        if degenerate:
            empty = self.empty_entries
            lines.append(f"{self.path}: {self.degenerate_boxes} degenerate boxes in {len(degenerate)} entries "
                         "(zero width or height, or a coordinate outside [0, 1]): left out of the pixel boxes, "
                         "kept as written in source_boxes for --protocol lvs / ezvsl")
            if empty:
                lines.append(f"{self.path}: {len(empty)} entries have no usable box (an empty ground truth): "
                             + ", ".join(e.file for e in empty[:10]) + (" ..." if len(empty) > 10 else ""))
        if self.skipped:
            lines.append(f"{self.path}: {len(self.skipped)} unreadable entries skipped: "
                         + "; ".join(self.skipped[:3]) + (" ..." if len(self.skipped) > 3 else ""))
        return lines


def read_vggss_file(path: str | os.PathLike) -> VGGSSFile:
    """Parse the VGG-SS JSON, keeping degenerate boxes and skipping unreadable entries (see the module)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as error:
        raise AvlocError(f"{path}: not a readable JSON file ({str(error)[:200]})") from None
    if not isinstance(document, list):
        raise AvlocError(f"{path}: expected a JSON list of {{file, class, bbox}}")
    entries, skipped = [], []
    for index, item in enumerate(document):
        try:
            entries.append(_entry(item))
        except ValueError as error:
            skipped.append(f"entry {index}: {error}")
    if not entries:
        reason = f" ({skipped[0]})" if skipped else ""
        raise AvlocError(f"{path}: no readable VGG-SS entry{reason}")
    return VGGSSFile(path, tuple(entries), tuple(skipped))


def read_vggss(path: str | os.PathLike) -> list[VGGSSEntry]:
    """The readable entries of a VGG-SS JSON file (:func:`read_vggss_file`)."""
    return list(read_vggss_file(path).entries)


def _entry(item) -> VGGSSEntry:
    if not isinstance(item, dict) or not {"file", "class", "bbox"} <= item.keys():
        raise ValueError("expected keys file, class and bbox")
    if not isinstance(item["file"], str) or not item["file"] or not isinstance(item["class"], str):
        raise ValueError("file and class must be strings")
    raw = item["bbox"]
    if not isinstance(raw, list) or not raw:
        raise ValueError("bbox must be a non-empty list of [x1, y1, x2, y2]")
    for box in raw:
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise ValueError(f"bbox must be a list of [x1, y1, x2, y2], got {str(box)[:80]}")
    try:
        boxes = np.asarray(raw, dtype=np.float64).reshape(-1, 4)  # (N, 4)
    except OverflowError:
        boxes = np.full((1, 4), np.inf)
    if not np.isfinite(boxes).all():
        raise ValueError("bbox values must be finite numbers")
    return VGGSSEntry(item["file"], item["class"], boxes)
