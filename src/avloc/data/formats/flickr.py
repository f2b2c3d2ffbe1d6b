"""Flickr-SoundNet ground truth (Senocak et al., CVPR 2018): one XML file per test image.

Every ``<bbox>`` element is one annotator's box in the coordinates of the image resized to
256 x 256. The evaluation scripts of LVS / EZ-VSL read, for every ``bbox``, its children
after the first as ``xmin, ymin, xmax, ymax``; this reader takes the named children
``xmin ymin xmax ymax`` when the element has them, otherwise the last four numeric ones, so
both spellings of the files read the same. The consensus ground truth adds every box
separately, divides by 2 and clips at 1 (:func:`avloc.metrics.annotation_map`).

:attr:`FlickrAnnotation.source_boxes` is what the LVS / EZ-VSL evaluators themselves read:
for every ``<bbox>`` child of a child of the root, in document order, ``int(text)`` of its
children after the first; None when that reading does not give four integers per box
(their scripts would fail on such a file).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avloc.types import AvlocError

ANNOTATION_SIZE = 256  # the boxes' coordinate grid (the image resized to 256 x 256)
COORDINATES = ("xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class FlickrAnnotation:
    """One test image's boxes: ``(N, 4)`` xyxy on the 256 x 256 grid, one per annotator's box."""

    path: Path
    boxes: np.ndarray
    source_boxes: tuple[tuple[int, int, int, int], ...] | None = None

    @property
    def id(self) -> str:
        return self.path.stem

    def boxes_in(self, width: int, height: int) -> np.ndarray:
        """The boxes in pixels of a ``width`` x ``height`` image."""
        return self.boxes * (width / ANNOTATION_SIZE, height / ANNOTATION_SIZE, width / ANNOTATION_SIZE,
                             height / ANNOTATION_SIZE)


def _numbers(element: ET.Element) -> list[str]:
    named = {child.tag.lower(): child.text for child in element}
    if all(name in named for name in COORDINATES):
        return [named[name] for name in COORDINATES]
    numeric = [child.text for child in element if _is_number(child.text)]
    return numeric[-4:]


def _is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _evaluator_boxes(root: ET.Element) -> tuple[tuple[int, int, int, int], ...] | None:
    """The boxes as the LVS / EZ-VSL scripts read them (see the module docstring), or None."""
    boxes = []
    for child in root:
        for element in child:
            if element.tag != "bbox":
                continue
            try:
                values = tuple(int(ch.text) for ch in list(element)[1:])  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return None
            if len(values) != 4:
                return None
            boxes.append(values)
    return tuple(boxes) or None


def read_flickr_xml(path: str | os.PathLike) -> FlickrAnnotation:
    """Parse one annotation file; a malformed file is refused with its path, the box and the reason."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise AvlocError(f"{path}: not a readable XML file ({error})") from None
    boxes = []
    for index, element in enumerate(root.iter("bbox")):
        values = _numbers(element)
        if len(values) != 4 or not all(_is_number(v) for v in values):
            raise AvlocError(f"{path}: bbox {index}: expected xmin, ymin, xmax, ymax numbers")
        box = [float(v) for v in values]  # type: ignore[arg-type]
        if not (0 <= box[0] < box[2] <= ANNOTATION_SIZE and 0 <= box[1] < box[3] <= ANNOTATION_SIZE):
            raise AvlocError(f"{path}: bbox {index}: {box} is not a box inside the {ANNOTATION_SIZE}-px image "
                             "(need 0 <= xmin < xmax <= 256 and 0 <= ymin < ymax <= 256)")
        boxes.append(box)
    if not boxes:
        raise AvlocError(f"{path}: no <bbox> element (every Flickr-SoundNet test image has annotators' boxes)")
    return FlickrAnnotation(path, np.asarray(boxes, np.float64), _evaluator_boxes(root))
