"""Pictures of results: heat-map overlays with boxes and captions, contact sheets, loss curves.

Frames are ``(H, W, 3)`` uint8 RGB; heat maps are low-resolution ``(h, w)`` maps, upsampled
bilinearly (:func:`avloc.map_geometry.upsample`) and min-max normalised per frame, as evaluated.
Boxes are ``(N, 4)`` xyxy in frame pixels, ``x2``/``y2`` exclusive (:mod:`avloc.map_geometry`).

:func:`annotated_frame` draws, in this order so that the results are never hidden:

1. the heat map in a perceptual colour map (inferno: dark purple -> red -> yellow), blended
   with an opacity that grows with the map's level: the frame is untouched where the map is at
   its minimum and still shows through where it is high. A flat map (:func:`avloc.map_geometry.is_flat`)
   says nothing and adds no colour;
2. the caption (time, event class of the second, its probability) at the top left and, when
   ground truth is drawn, a legend at the bottom left, both on see-through bands;
3. predicted boxes as thin solid outlines, clipped to the frame;
4. ground-truth boxes, when given, as thin dashed outlines in another colour;
5. the map's peak (its argmax at frame size) as a white cross with a dark outline;
6. each predicted box's score on a band of its colour just outside the box (above it, else
   below, else inside its top edge), moved below the caption where it would cover it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

import cv2
import numpy as np
import torch
from matplotlib import colormaps

from avloc.atomic import atomic_path
from avloc.map_geometry import FLAT_TOLERANCE, upsample
from avloc.types import AvlocError

Colour = tuple[int, int, int]  # RGB

BOX_COLOUR: Colour = (60, 255, 60)  # predicted boxes: green, not in the colour map
TRUTH_COLOUR: Colour = (0, 190, 255)  # ground truth: sky blue, dashed
PEAK_COLOUR: Colour = (255, 255, 255)
TEXT_COLOUR: Colour = (255, 255, 255)
BAND_COLOUR: Colour = (0, 0, 0)
COLOUR_MAP = "inferno"
OPACITY = 0.65  # blend weight of the colour map where the normalised heat map is 1
CAPTION_SCALE = 0.7  # of the caption's text, against put_text's 1.0
CAPTION_OPACITY = 0.6  # caption and legend bands: the map and the frame show through


@dataclass(frozen=True)
class HeatLayer:
    """A heat map ready to blend over frames of one size; all ``None`` for a flat map."""

    colours: np.ndarray | None  # (H, W, 3) float32 RGB
    weight: np.ndarray | None  # (H, W, 1) float32 blend weights in [0, OPACITY]
    peak: tuple[int, int] | None  # (x, y) pixel of the map's maximum

    # Computed on first use, then kept: a layer is blended over every frame of its step.
    @cached_property
    def keep(self) -> np.ndarray:
        """``(H, W, 1)`` float32 ``1 - weight``: what :func:`heat_overlay` keeps of a frame."""
        return 1 - self.weight

    @cached_property
    def tint(self) -> np.ndarray:
        """``(H, W, 3)`` float32 ``colours * weight``: what :func:`heat_overlay` adds."""
        return self.colours * self.weight


@lru_cache(maxsize=4)
def _colour_table(name: str) -> np.ndarray:
    """``(256, 3)`` float32 RGB in [0, 255] of a matplotlib colour map."""
    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.float32)


def _colours(index: np.ndarray, name: str) -> np.ndarray:
    """``(H, W)`` uint8 colour-map indices -> ``(H, W, 3)`` float32 RGB: ``_colour_table(name)[index]``,
    by OpenCV's table lookup (8x faster than NumPy's indexing at frame size; the same values)."""
    table = _colour_table(name).reshape(256, 1, 3)  # (256, 3) -> one 3-channel entry per index
    return cv2.LUT(cv2.merge([index, index, index]), table)  # (H, W) -> (H, W, 3)


def heat_layer(heatmap: torch.Tensor | np.ndarray, size: tuple[int, int], opacity: float = OPACITY,
               colour_map: str = COLOUR_MAP) -> HeatLayer:
    """A heat map ``(h, w)`` as a colour layer for frames of ``size`` (H, W).

    The map is upsampled to ``size`` and min-max normalised (:func:`avloc.map_geometry.is_flat`
    and :func:`avloc.map_geometry.normalize`, computed the same way in NumPy: once the map is
    frame-sized, torch's small operations wait on its thread pool, slowly when other work holds
    the cores, e.g. ``avloc localize``'s encoders beside its overlay thread); its colours come
    from ``colour_map`` (a matplotlib name) and its blend weight is ``opacity * level``.
    """
    full = upsample(torch.as_tensor(heatmap), size)  # (h, w) -> (H, W)
    if full.ndim != 2:
        raise ValueError(f"heat_layer: expected one (h, w) map, got shape {tuple(heatmap.shape)}")
    full = full.numpy()  # (H, W) float32
    if not np.isfinite(full).all():
        raise AvlocError("heatmap: contains NaN or inf")
    low, high = full.min(), full.max()
    if float(high) - float(low) <= FLAT_TOLERANCE * max(abs(float(high)), abs(float(low))):  # is_flat
        return HeatLayer(None, None, None)
    level = (full - low) / (high - low)  # (H, W) in [0, 1], float32 as normalize() gives it
    colours = _colours(np.rint(level * 255).astype(np.uint8), colour_map)  # (H, W) -> (H, W, 3)
    row, column = np.unravel_index(int(level.argmax()), level.shape)
    weight = (opacity * level)[..., None].astype(np.float32)  # (H, W, 1)
    return HeatLayer(colours, weight, (int(column), int(row)))


def heat_overlay(frame: np.ndarray, layer: HeatLayer) -> np.ndarray:
    """``frame`` with a :func:`heat_layer` blended over it (a new array)."""
    if layer.colours is None:
        return frame.copy()
    blended = frame.astype(np.float32)  # (H, W, 3); then in place: frame * (1 - weight) + colours * weight
    blended *= layer.keep
    blended += layer.tint
    return np.rint(blended, out=blended).astype(np.uint8)


def line_width(image: np.ndarray) -> int:
    """Outline thickness for ``image``: 1 pixel below 600 px (the shorter side), 2 at 720p, 3 at 1080p."""
    return max(1, round(min(image.shape[:2]) / 400))


def _pixel_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """The first and last pixel columns and rows of an xyxy box, clipped to the image; None if outside."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    x2, y2 = x2 - 1, y2 - 1  # exclusive -> last pixel
    if x2 < 0 or y2 < 0 or x1 >= width or y1 >= height or x2 < x1 or y2 < y1:
        return None
    return max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)


def _dashed_line(image: np.ndarray, start: tuple[int, int], end: tuple[int, int], colour: Colour,
                 thickness: int, dash: int) -> None:
    """Dashes of ``dash`` pixels and gaps of ``dash`` pixels from ``start`` to ``end`` (inclusive)."""
    length = max(abs(end[0] - start[0]), abs(end[1] - start[1]))
    for offset in range(0, length + 1, 2 * dash):
        a = offset / max(length, 1)
        b = min(offset + dash - 1, length) / max(length, 1)
        p = (round(start[0] + a * (end[0] - start[0])), round(start[1] + a * (end[1] - start[1])))
        q = (round(start[0] + b * (end[0] - start[0])), round(start[1] + b * (end[1] - start[1])))
        cv2.line(image, p, q, colour, thickness)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, colour: Colour = BOX_COLOUR, dashed: bool = False) -> np.ndarray:
    """Outline xyxy boxes (image pixels, clipped to the image), in place; returns ``image``."""
    height, width = image.shape[:2]
    thickness = line_width(image)
    dash = max(3, round(min(height, width) / 60))
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        pixels = _pixel_box(box, width, height)
        if pixels is None:
            continue
        x1, y1, x2, y2 = pixels
        if not dashed:
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness)
            continue
        for start, end in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
            _dashed_line(image, start, end, colour, thickness, dash)
    return image


def draw_peak(image: np.ndarray, peak: tuple[int, int]) -> np.ndarray:
    """A white cross with a dark outline centred on pixel ``peak`` (x, y), in place."""
    x, y = peak
    arm = max(4, round(min(image.shape[:2]) / 32))
    thickness = line_width(image)
    for colour, width in ((BAND_COLOUR, thickness + 2), (PEAK_COLOUR, thickness)):
        cv2.line(image, (x - arm, y), (x + arm, y), colour, width)
        cv2.line(image, (x, y - arm), (x, y + arm), colour, width)
    return image


def _text_geometry(image: np.ndarray, text: str, scale: float) -> tuple[float, int, int, int, int]:
    """Font size, stroke, band width and height (pixels), and the text's height above its baseline."""
    size = max(0.3, scale * min(image.shape[:2]) / 400)
    thickness = max(1, round(size * 1.5))
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, thickness)
    return size, thickness, w + 4, h + baseline + 4, h


def _band(image: np.ndarray, left: int, top: int, width: int, height: int, colour: Colour, opacity: float) -> None:
    """Fill a rectangle (clipped to the image) with ``colour`` at ``opacity``, in place."""
    region = image[max(top, 0) : max(top + height, 0), max(left, 0) : max(left + width, 0)]  # a view
    region[...] = np.rint(region * (1 - opacity) + np.asarray(colour, np.float32) * opacity).astype(np.uint8)


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 1.0,
             colour: Colour = TEXT_COLOUR, band: Colour = BAND_COLOUR, band_opacity: float = 1.0) -> np.ndarray:
    """Write ``text`` on a band (``band_opacity`` < 1: see-through) with its top-left corner at ``origin``, in place."""
    size, thickness, band_w, band_h, h = _text_geometry(image, text, scale)
    x, y = origin
    _band(image, x, y, band_w, band_h, band, band_opacity)
    cv2.putText(image, text, (x + 2, y + h + 2), cv2.FONT_HERSHEY_SIMPLEX, size, colour, thickness, cv2.LINE_AA)
    return image


def label_box(image: np.ndarray, box: Sequence[float], text: str, colour: Colour = BOX_COLOUR,
              scale: float = 0.6, keep_clear: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Write ``text`` on a band of ``colour`` just outside ``box``: above it, else below it, else
    inside its top edge; shifted sideways to stay in the image, and down below ``keep_clear``
    (``x1, y1, x2, y2`` pixels, exclusive ends: the caption) where it would cover it. In place."""
    height, width = image.shape[:2]
    pixels = _pixel_box(box, width, height)
    if pixels is None:
        return image
    x1, y1, x2, y2 = pixels
    _, _, band_w, band_h, _ = _text_geometry(image, text, scale)
    clearance = line_width(image) // 2 + 1  # the outline's half-thickness outside the box
    if y1 - clearance - band_h >= 0:
        top = y1 - clearance - band_h
    elif y2 + clearance + band_h <= height:
        top = y2 + clearance
    else:
        top = min(max(y1 + clearance, 0), max(height - band_h, 0))
    left = min(max(x1, 0), max(width - band_w, 0))
    if keep_clear is not None:
        cx1, cy1, cx2, cy2 = keep_clear
        if left < cx2 and left + band_w > cx1 and top < cy2 and top + band_h > cy1:
            top = min(cy2, max(height - band_h, 0))
    return put_text(image, text, (left, top), scale, colour=BAND_COLOUR, band=colour)


def draw_legend(image: np.ndarray, entries: Sequence[tuple[str, Colour, bool]], scale: float = 0.5) -> np.ndarray:
    """A legend at the bottom left, one line per ``(text, colour, dashed)``, in place."""
    height = image.shape[0]
    bottom = height
    for text, colour, dashed in reversed(entries):
        _, _, band_w, band_h, _ = _text_geometry(image, text, scale)
        swatch = round(1.6 * band_h)
        top = bottom - band_h
        _band(image, 0, top, swatch, band_h, BAND_COLOUR, CAPTION_OPACITY)
        middle = top + band_h // 2
        if dashed:
            _dashed_line(image, (3, middle), (swatch - 3, middle), colour, line_width(image) + 1, max(2, band_h // 4))
        else:
            cv2.line(image, (3, middle), (swatch - 3, middle), colour, line_width(image) + 1)
        put_text(image, text, (swatch, top), scale, colour=colour, band_opacity=CAPTION_OPACITY)
        bottom = top
    return image


def annotated_frame(frame: np.ndarray, layer: HeatLayer, boxes: np.ndarray, scores: Sequence[float],
                    caption: str, ground_truth: np.ndarray | None = None) -> np.ndarray:
    """The overlay of one frame (a new array): heat-map layer, predicted boxes with their
    scores, the peak, a caption at the top left and, when ``ground_truth`` (``(M, 4)``
    xyxy, possibly empty) is given, the ground-truth boxes dashed with a legend."""
    image = heat_overlay(frame, layer)
    put_text(image, caption, (0, 0), scale=CAPTION_SCALE, band_opacity=CAPTION_OPACITY)
    _, _, caption_w, caption_h, _ = _text_geometry(image, caption, CAPTION_SCALE)
    if ground_truth is not None:
        draw_legend(image, [("predicted", BOX_COLOUR, False), ("ground truth", TRUTH_COLOUR, True)])
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    draw_boxes(image, boxes)
    if ground_truth is not None:
        draw_boxes(image, ground_truth, TRUTH_COLOUR, dashed=True)
    if layer.peak is not None:
        draw_peak(image, layer.peak)
    for box, score in zip(boxes, scores):
        label_box(image, box, f"{score:.2f}", keep_clear=(0, 0, caption_w, caption_h))
    return image


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


def write_loss_curves(path: str | os.PathLike, history: Sequence[dict], title: str) -> None:
    """Train and validation loss per epoch (``history`` rows with ``epoch``, ``train_loss``,
    ``val_loss``) as a PNG plot, written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    epochs = [row["epoch"] for row in history]
    axis.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    axis.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
