"""Pictures of localisation results: heat-map overlays with boxes and captions, contact sheets.

Frames are ``(H, W, 3)`` uint8 RGB; heat maps are low-resolution ``(h, w)`` maps, upsampled
bilinearly (:func:`avloc.localize.upsample`) and min-max normalised per frame, as evaluated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from avloc.atomic import atomic_path
from avloc.localize import normalize, upsample

BOX_COLOUR = (60, 255, 60)  # RGB
TEXT_COLOUR = (255, 255, 255)
OPACITY = 0.6  # blend weight of the colour map where the normalised heat map is 1


def heat_layer(heatmap: torch.Tensor, size: tuple[int, int], opacity: float = OPACITY) -> tuple[np.ndarray, np.ndarray]:
    """A heat map as a colour layer for frames of ``size`` (H, W): jet colours ``(H, W, 3)``
    and blend weights ``(H, W, 1)``, more opaque where the min-max normalised map is higher."""
    level = normalize(upsample(heatmap, size)).numpy()  # (h, w) -> (H, W) in [0, 1]
    colours = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]  # BGR -> RGB
    return colours.astype(np.float32), (opacity * level)[..., None].astype(np.float32)  # (H, W) -> (H, W, 1)


def heat_overlay(frame: np.ndarray, layer: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``frame`` with a :func:`heat_layer` blended over it (a new array)."""
    colours, weight = layer
    return (frame * (1 - weight) + colours * weight).astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, scores: Sequence[float]) -> np.ndarray:
    """Draw xyxy boxes (image pixels) with their scores, in place; returns ``image``."""
    thickness = max(1, round(min(image.shape[:2]) / 200))
    for (x1, y1, x2, y2), score in zip(np.asarray(boxes).reshape(-1, 4), scores):
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), BOX_COLOUR, thickness)
        put_text(image, f"{score:.2f}", (int(x1) + 2, int(y1) + 2), scale=0.6)
    return image


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """Write ``text`` on a dark band with its top-left corner at ``origin``, in place."""
    size = max(0.3, scale * min(image.shape[:2]) / 400)
    thickness = max(1, round(size * 1.5))
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, thickness)
    x, y = origin
    cv2.rectangle(image, (x, y), (x + w + 4, y + h + baseline + 4), (0, 0, 0), -1)
    cv2.putText(image, text, (x + 2, y + h + 2), cv2.FONT_HERSHEY_SIMPLEX, size, TEXT_COLOUR, thickness, cv2.LINE_AA)
    return image


def annotated_frame(frame: np.ndarray, layer: tuple[np.ndarray, np.ndarray], boxes: np.ndarray,
                    scores: Sequence[float], caption: str) -> np.ndarray:
    """The overlay of one frame: heat-map layer, boxes with scores, and a caption at the top left."""
    image = heat_overlay(frame, layer)
    draw_boxes(image, boxes, scores)
    return put_text(image, caption, (0, 0))


def contact_sheet(tiles: Sequence[np.ndarray], columns: int = 4, tile_width: int = 320) -> np.ndarray:
    """Tiles (any sizes) resized to ``tile_width`` and laid out in a grid, row by row."""
    if not tiles:
        raise ValueError("contact_sheet: no tiles")
    height = max(round(t.shape[0] * tile_width / t.shape[1]) for t in tiles)
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    gap = 4
    sheet = np.full((rows * (height + gap) - gap, columns * (tile_width + gap) - gap, 3), 255, np.uint8)
    for n, tile in enumerate(tiles):
        resized = cv2.resize(tile, (tile_width, round(tile.shape[0] * tile_width / tile.shape[1])),
                             interpolation=cv2.INTER_AREA)
        top, left = (n // columns) * (height + gap), (n % columns) * (tile_width + gap)
        sheet[top : top + resized.shape[0], left : left + tile_width] = resized
    return sheet


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB image as PNG atomically."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # RGB -> BGR
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
