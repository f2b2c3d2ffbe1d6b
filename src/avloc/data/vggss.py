"""VGG-SS ground truth (Chen et al., CVPR 2021): one JSON list of ``{file, class, bbox}``.

``bbox`` is a list of boxes ``[x1, y1, x2, y2]`` normalised to [0, 1]; the evaluation of the
LVS / EZ-VSL scripts rasterises their union at 224 x 224 (``avloc eval --protocol lvs``).
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
    """One annotated image: its file id, class and normalised xyxy boxes ``(N, 4)``."""

    file: str
    label: str
    boxes: np.ndarray

    def boxes_in(self, size: int = EVAL_SIZE) -> np.ndarray:
        """The boxes in pixels of a ``size`` x ``size`` map."""
        return self.boxes * size


def read_vggss(path: str | os.PathLike) -> list[VGGSSEntry]:
    """Parse the VGG-SS JSON; a malformed entry is refused with its index and the reason."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AvlocError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(document, list):
        raise AvlocError(f"{path}: expected a JSON list of {{file, class, bbox}}")
    entries = []
    for index, item in enumerate(document):
        where = f"{path}: entry {index}"
        if not isinstance(item, dict) or not {"file", "class", "bbox"} <= item.keys():
            raise AvlocError(f"{where}: expected keys file, class and bbox")
        try:
            boxes = np.asarray(item["bbox"], dtype=np.float64).reshape(-1, 4)
        except (TypeError, ValueError):
            raise AvlocError(f"{where}: bbox must be a list of [x1, y1, x2, y2]") from None
        if not ((boxes >= 0) & (boxes <= 1)).all():
            raise AvlocError(f"{where}: bbox values must be normalised to [0, 1]")
        if not ((boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3])).all():
            raise AvlocError(f"{where}: a box has x2 <= x1 or y2 <= y1")
        entries.append(VGGSSEntry(str(item["file"]), str(item["class"]), boxes))
    return entries
