"""AVATAR's per-frame annotations (video-centric audio-visual localisation, 2025).

One JSON file per annotated frame: ``original_width``, ``original_height`` and
``annotations``, a list of ``{segmentation, bbox, audio_visual_category, task}`` where
``segmentation`` is a list of COCO polygons ``[x1, y1, x2, y2, ...]``, ``bbox`` is COCO
``[x, y, w, h]`` and ``task`` the scenario (e.g. "Off-Screen"). A frame without annotations
has no visible sounding object. :func:`AvatarFrame.mask` rasterises the polygons (mask ground
truth where polygons exist, the boxes elsewhere).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avloc.types import AvlocError

MAX_SIDE = 16384  # a larger original_width / original_height is damage (mask() rasterises at that size)


@dataclass(frozen=True)
class AvatarObject:
    """One annotated sounding object: xyxy box (original pixels), polygons, category, scenario."""

    box: tuple[float, float, float, float]
    polygons: tuple[np.ndarray, ...]  # each (P, 2) x, y
    category: str
    task: str


@dataclass(frozen=True)
class AvatarFrame:
    """One annotated frame: its file, the original video size and its sounding objects."""

    path: Path
    width: int
    height: int
    objects: tuple[AvatarObject, ...]

    def boxes(self) -> np.ndarray:
        """``(N, 4)`` xyxy boxes in original pixels (N = 0: nothing sounding on screen)."""
        return np.asarray([o.box for o in self.objects], np.float64).reshape(-1, 4)

    def mask(self) -> np.ndarray:
        """``(H, W)`` uint8 union of the objects' polygons (their boxes where an object has none)."""
        mask = np.zeros((self.height, self.width), np.uint8)
        for obj in self.objects:
            if obj.polygons:
                cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in obj.polygons], 1)
            else:
                x1, y1, x2, y2 = (int(round(v)) for v in obj.box)
                mask[y1:y2, x1:x2] = 1
        return mask


def _object(item: object, where: str) -> AvatarObject:
    if not isinstance(item, dict) or "bbox" not in item:
        raise AvlocError(f"{where}: an annotation needs a bbox [x, y, w, h]")
    try:
        x, y, w, h = (float(v) for v in item["bbox"])
        polygons = tuple(np.asarray(p, np.float64).reshape(-1, 2) for p in item.get("segmentation") or [])
    except (TypeError, ValueError):
        raise AvlocError(f"{where}: bbox must be [x, y, w, h] and segmentation a list of [x1, y1, ...]") from None
    if not (np.isfinite([x, y, w, h]).all() and all(np.isfinite(p).all() for p in polygons)):
        raise AvlocError(f"{where}: bbox and segmentation must hold finite numbers")
    if w <= 0 or h <= 0:
        raise AvlocError(f"{where}: bbox {[x, y, w, h]} has a non-positive width or height")
    if any(len(p) < 3 for p in polygons):
        raise AvlocError(f"{where}: a polygon needs at least 3 points")
    return AvatarObject((x, y, x + w, y + h), polygons, str(item.get("audio_visual_category", "")),
                        str(item.get("task", "")))


def read_avatar_frame(path: str | os.PathLike) -> AvatarFrame:
    """Parse one frame's JSON; a malformed file is refused with its path and the reason."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AvlocError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(document, dict):
        raise AvlocError(f"{path}: expected an object with original_width, original_height, annotations")
    try:
        width, height = int(document["original_width"]), int(document["original_height"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise AvlocError(f"{path}: original_width and original_height must be integers") from None
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise AvlocError(f"{path}: frame size {width}x{height} is not a video frame size (1 to {MAX_SIDE} pixels a side)")
    annotations = document.get("annotations") or []
    if not isinstance(annotations, list):
        raise AvlocError(f"{path}: annotations must be a list")
    objects = tuple(_object(item, f"{path}: annotation {n}") for n, item in enumerate(annotations))
    return AvatarFrame(path, width, height, objects)
