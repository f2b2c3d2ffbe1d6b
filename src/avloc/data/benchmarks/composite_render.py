"""Pixels and samples of the composite benchmark: sprites, visible boxes, backgrounds, looped recordings.

A sprite is a cut-out prepared once per clip (flipped, colour-jittered, premultiplied by its
alpha and resized to its largest on-screen size) and warped into every frame by one affine map
(scale, rotation, position). Frames are alpha-composited back to front; an object's visible
weight at a pixel is its own alpha times the transparency of everything in front of it, and
its box is the extent of the pixels where that weight is at least one half.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from avloc.data.benchmarks.synth_sounds import SAMPLE_RATE

VISIBLE = 0.5  # a pixel belongs to an object when the object makes at least half of its colour
FADE = 0.01  # seconds of fade at both ends of every piece of a recording (no clicks)


def prepare_sprite(rgba: np.ndarray, width: float, height: float, flip: bool,
                   gains: tuple[float, float, float]) -> np.ndarray:
    """``(h, w, 4)`` float32 premultiplied RGBA in [0, 1], ``h, w = round(height), round(width)``."""
    image = rgba[:, ::-1] if flip else rgba
    w, h = max(1, round(width)), max(1, round(height))
    colour = image.astype(np.float32) / 255.0  # (H, W, 4)
    colour[..., :3] = np.clip(colour[..., :3] * np.asarray(gains, np.float32), 0.0, 1.0)
    colour[..., :3] *= colour[..., 3:]
    shrink = w < image.shape[1] or h < image.shape[0]
    return cv2.resize(colour, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def warp_sprite(sprite: np.ndarray, cx: float, cy: float, scale: float, angle: float,
                size: int) -> tuple[int, int, np.ndarray] | None:
    """Place ``sprite`` scaled by ``scale`` and rotated by ``angle`` degrees around its centre at ``(cx, cy)``.

    Coordinates are continuous pixels (pixel ``i`` covers ``[i, i + 1)``). Returns ``(x0, y0,
    patch)``, the patch ``(h, w, 4)`` premultiplied RGBA clipped to the ``size``-square frame,
    or None when nothing of it lies inside the frame.
    """
    h, w = sprite.shape[:2]
    theta = math.radians(angle)
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    half_w = 0.5 * (abs(c) * w + abs(s) * h) + 1.0
    half_h = 0.5 * (abs(s) * w + abs(c) * h) + 1.0
    x0, y0 = max(0, math.floor(cx - half_w)), max(0, math.floor(cy - half_h))
    x1, y1 = min(size, math.ceil(cx + half_w)), min(size, math.ceil(cy + half_h))
    if x1 <= x0 or y1 <= y0:
        return None
    # continuous map: dst = R S (src - centre_src) + (cx, cy); cv2 indexes pixel centres at
    # integers, i.e. idx = continuous - 0.5, and the patch starts at (x0, y0).
    a = np.array([[c, -s], [s, c]])
    centre = np.array([w / 2.0, h / 2.0])
    offset = np.array([cx - x0, cy - y0]) - a @ centre + a @ np.array([0.5, 0.5]) - 0.5
    matrix = np.hstack([a, offset[:, None]]).astype(np.float64)  # (2, 3)
    patch = cv2.warpAffine(sprite, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return x0, y0, patch


def compose(frame: np.ndarray, layers: list[tuple[int, int, np.ndarray] | None]) -> None:
    """Draw ``layers`` (back to front) over ``frame`` ``(H, W, 3)`` float32 in [0, 1], in place."""
    for layer in layers:
        if layer is None:
            continue
        x0, y0, patch = layer
        h, w = patch.shape[:2]
        region = frame[y0 : y0 + h, x0 : x0 + w]
        region *= 1.0 - patch[..., 3:]
        region += patch[..., :3]


def visible_masks(layers: list[tuple[int, int, np.ndarray] | None], size: int) -> list[np.ndarray | None]:
    """Per layer, the ``(size, size)`` bool mask of the pixels it makes at least half of (None: off frame)."""
    cover = np.ones((size, size), np.float32)  # transparency of everything in front, front to back
    masks: list[np.ndarray | None] = [None] * len(layers)
    for k in range(len(layers) - 1, -1, -1):
        if layers[k] is None:
            continue
        x0, y0, patch = layers[k]
        h, w = patch.shape[:2]
        alpha = patch[..., 3]
        region = cover[y0 : y0 + h, x0 : x0 + w]
        mask = np.zeros((size, size), bool)
        mask[y0 : y0 + h, x0 : x0 + w] = alpha * region >= VISIBLE
        masks[k] = mask
        region *= 1.0 - alpha
    return masks


def mask_box(mask: np.ndarray | None) -> list[int] | None:
    """``[x1, y1, x2, y2]`` (right/bottom exclusive) around the True pixels, or None."""
    if mask is None:
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(cols) == 0:
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


# ---------------------------------------------------------------------------------------
# Backgrounds


def _noise(rng: np.random.Generator, side: int, octaves: int = 4) -> np.ndarray:
    """``(side, side)`` float32 smooth value noise in [0, 1]: coarse random grids upsampled and summed."""
    total = np.zeros((side, side), np.float32)
    weight, cells = 1.0, int(rng.integers(2, 5))
    for _ in range(octaves):
        grid = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
        total += weight * cv2.resize(grid, (side, side), interpolation=cv2.INTER_CUBIC)
        weight, cells = weight * 0.5, cells * 2
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def _palette(rng: np.random.Generator, value: np.ndarray, colours: int = 3) -> np.ndarray:
    """Map ``(H, W)`` values in [0, 1] to ``(H, W, 3)`` colours through a random piecewise-linear palette."""
    stops = rng.uniform(0.1, 0.75, (colours, 3)).astype(np.float32)  # never very dark or very bright
    grey = stops.mean(axis=1, keepdims=True)
    stops = grey + rng.uniform(0.3, 0.7) * (stops - grey)  # muted, so that the objects stand out
    at = np.linspace(0, 1, colours)
    return np.stack([np.interp(value, at, stops[:, ch]) for ch in range(3)], axis=-1).astype(np.float32)


def make_background(rng: np.random.Generator, side: int, pictures: list[np.ndarray]) -> np.ndarray:
    """A ``(side, side, 3)`` float32 background in [0, 1], one of four kinds.

    ``pictures`` are ``(h, w, 4)`` uint8 silent cut-outs (may be empty): ``blurred`` scatters a few
    of them, enlarged and blurred, over a texture; ``close-up`` fills the frame with a blurred crop
    of one; ``landscape`` is a sky gradient over a textured ground; ``texture`` is coloured
    multi-scale noise. Without pictures only the last two are drawn.
    """
    kinds = ("texture", "landscape", "blurred", "close-up") if pictures else ("texture", "landscape")
    kind = kinds[int(rng.integers(len(kinds)))]
    yy = np.linspace(0, 1, side, dtype=np.float32)[:, None, None]  # (side, 1, 1)
    if kind == "landscape":
        horizon = rng.uniform(0.3, 0.65)
        sky_top, sky_low = rng.uniform(0.35, 0.85, 3), rng.uniform(0.55, 0.95, 3)
        sky = sky_top + (sky_low - sky_top) * np.clip(yy / horizon, 0, 1)
        ground = _palette(rng, _noise(rng, side, 5), 3) * rng.uniform(0.6, 1.0)
        edge = np.clip((yy - horizon) * side / 3.0 + 0.5, 0, 1)  # a soft horizon, 3 px wide
        image = sky * (1 - edge) + ground * edge
    else:
        image = _palette(rng, _noise(rng, side, 5), int(rng.integers(2, 5)))
        if kind == "texture" and rng.random() < 0.5:  # plus a faint fine grain
            image = image + rng.normal(0, 0.012, (side, side, 1)).astype(np.float32)
    if kind in ("blurred", "close-up"):
        count = int(rng.integers(3, 7)) if kind == "blurred" else 1
        for _ in range(count):
            rgba = pictures[int(rng.integers(len(pictures)))]
            h, w = rgba.shape[:2]
            scale = side * (rng.uniform(0.5, 1.1) if kind == "blurred" else rng.uniform(1.4, 2.5)) / max(h, w)
            sprite = prepare_sprite(rgba, w * scale, h * scale, bool(rng.random() < 0.5), (1.0, 1.0, 1.0))
            cx, cy = rng.uniform(0, side, 2) if kind == "blurred" else rng.uniform(0.3 * side, 0.7 * side, 2)
            compose(image, [warp_sprite(sprite, float(cx), float(cy), 1.0, float(rng.uniform(-30, 30)), side)])
        sigma = side * rng.uniform(0.012, 0.03)
        image = cv2.GaussianBlur(np.ascontiguousarray(image, np.float32), (0, 0), sigma)
        grey = image.mean(axis=-1, keepdims=True)
        image = 0.85 * (grey + 0.6 * (image - grey)) + 0.05  # muted, so that the objects stand out
    return np.clip(image, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Sound


def fill(recording: np.ndarray, n: int, rng: np.random.Generator, max_gap: float = 0.3) -> np.ndarray:
    """``(n,)`` float32: ``recording`` repeated (random start offset, random gaps) and cut to ``n`` samples.

    Every piece fades in and out over :data:`FADE` seconds.
    """
    out = np.zeros(n, np.float32)
    fade = max(1, round(FADE * SAMPLE_RATE))
    first = int(rng.integers(len(recording))) if rng.random() < 0.5 else 0
    pos = 0
    while pos < n:
        piece = recording[first:][: n - pos].astype(np.float32)
        k = min(fade, len(piece) // 2)
        if k:
            ramp = np.linspace(0.0, 1.0, k, dtype=np.float32)
            piece[:k] *= ramp
            piece[-k:] *= ramp[::-1]
        out[pos : pos + len(piece)] = piece
        pos += len(piece) + round(rng.uniform(0.0, max_gap) * SAMPLE_RATE)
        first = 0
    return out
