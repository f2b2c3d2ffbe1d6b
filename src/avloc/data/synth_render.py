"""Pictures of the synthetic benchmark: shape masks, backgrounds and frame compositing.

Shapes are drawn with OpenCV's anti-aliased fills at 1/16-pixel precision into a small patch
around the object, so an object's mask (and hence its ground-truth box) is a pure function of
its centre, radius and angle. Every shape fits inside the circle of its radius.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SHIFT = 4  # cv2 sub-pixel bits: coordinates are given in 1/16 pixel
ONE = 1 << SHIFT
MASK_THRESHOLD = 128  # a pixel belongs to an object when its coverage is at least half


def _regular(n: int, inner: float | None = None) -> np.ndarray:
    """``(n or 2n, 2)`` vertices of a regular polygon (a star when ``inner`` is given) on the unit circle."""
    if inner is None:
        angles = np.arange(n) * 2 * np.pi / n - np.pi / 2
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    angles = np.arange(2 * n) * np.pi / n - np.pi / 2
    radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_ARM = 0.34
POLYGONS: dict[str, np.ndarray] = {
    "square": _regular(4),
    "triangle": _regular(3),
    "star": _regular(5, inner=0.45),
    "diamond": np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]]),
    "hexagon": _regular(6),
    "pentagon": _regular(5),
    "cross": np.array([[-_ARM, -1], [_ARM, -1], [_ARM, -_ARM], [1, -_ARM], [1, _ARM], [_ARM, _ARM], [_ARM, 1],
                       [-_ARM, 1], [-_ARM, _ARM], [-1, _ARM], [-1, -_ARM], [-_ARM, -_ARM]]) * 0.95,
}
SHAPES = ("circle", "ring", "crescent", *POLYGONS)


def shape_mask(shape: str, cx: float, cy: float, radius: float, angle: float, size: int) -> tuple[int, int, np.ndarray]:
    """The coverage mask of one object, cut to the patch that holds it.

    Args:
        shape: one of :data:`SHAPES`.
        cx, cy: centre in continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``).
        radius: in pixels; angle: rotation in radians.
        size: frame side in pixels (the patch is clipped to the frame).

    Returns:
        ``(x0, y0, mask)``: the patch's top-left pixel and its ``(h, w)`` uint8 coverage (0..255).
    """
    half = math.ceil(radius) + 2
    x0, y0 = max(0, math.floor(cx) - half), max(0, math.floor(cy) - half)
    x1, y1 = min(size, math.floor(cx) + half + 1), min(size, math.floor(cy) + half + 1)
    mask = np.zeros((max(y1 - y0, 1), max(x1 - x0, 1)), np.uint8)
    # cv2 puts pixel centres at integer coordinates; ours are at +0.5.
    px, py = cx - 0.5 - x0, cy - 0.5 - y0

    def fixed(v: float) -> int:
        return round(v * ONE)

    def disc(x: float, y: float, r: float, value: int) -> None:
        cv2.circle(mask, (fixed(x), fixed(y)), fixed(r), value, -1, cv2.LINE_AA, SHIFT)

    if shape == "circle":
        disc(px, py, radius, 255)
    elif shape == "ring":
        disc(px, py, radius, 255)
        disc(px, py, 0.55 * radius, 0)
    elif shape == "crescent":
        disc(px, py, radius, 255)
        disc(px + 0.5 * radius * math.cos(angle), py + 0.5 * radius * math.sin(angle), 0.8 * radius, 0)
    else:
        c, s = math.cos(angle), math.sin(angle)
        rotation = np.array([[c, -s], [s, c]])
        points = POLYGONS[shape] @ rotation.T * radius + (px, py)  # (V, 2) unit -> patch pixels
        cv2.fillPoly(mask, [np.round(points * ONE).astype(np.int32)], 255, cv2.LINE_AA, SHIFT)
    return x0, y0, mask


def mask_box(x0: int, y0: int, mask: np.ndarray) -> list[int] | None:
    """``[x1, y1, x2, y2]`` (exclusive right/bottom) of the pixels at least half covered, or None."""
    ys, xs = np.nonzero(mask >= MASK_THRESHOLD)
    if len(xs) == 0:
        return None
    return [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]


def composite(frame: np.ndarray, x0: int, y0: int, mask: np.ndarray, colour: np.ndarray) -> None:
    """Blend ``colour`` into ``frame`` ``(H, W, 3)`` uint8 in place, weighted by ``mask``."""
    h, w = mask.shape
    region = frame[y0 : y0 + h, x0 : x0 + w]
    alpha = mask[..., None].astype(np.float32) / 255.0  # (h, w) -> (h, w, 1)
    region[...] = (region * (1.0 - alpha) + colour * alpha + 0.5).astype(np.uint8)


def make_background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A ``(side, side, 3)`` uint8 muted background: gradient or smooth colour noise, plus a texture.

    Values stay within [15, 155] with little saturation so that the saturated object colours
    stand out whatever the background.
    """
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side  # (side, side) each, in [0, 1)
    base = rng.uniform(40, 110) + rng.uniform(-18, 18, 3)
    other = base + rng.uniform(-40, 40, 3)
    kind = rng.integers(3)
    if kind == 0:  # linear gradient in a random direction
        theta = rng.uniform(0, 2 * np.pi)
        ramp = np.clip((np.cos(theta) * (xx - 0.5) + np.sin(theta) * (yy - 0.5)) + 0.5, 0, 1)
    elif kind == 1:  # radial gradient around a random point
        cx, cy = rng.uniform(0, 1, 2)
        ramp = np.clip(np.hypot(xx - cx, yy - cy) / 1.2, 0, 1)
    else:  # smooth colour noise: a coarse random grid upsampled bicubically
        cells = int(rng.integers(2, 6))
        grid = rng.uniform(0, 1, (cells, cells, 3)).astype(np.float32)
        ramp = np.clip(cv2.resize(grid, (side, side), interpolation=cv2.INTER_CUBIC), 0, 1)
    ramp = ramp if ramp.ndim == 3 else ramp[..., None]  # (side, side) -> (side, side, 1)
    image = base * (1 - ramp) + other * ramp  # (side, side, 3)
    texture = rng.integers(4)
    if texture == 1:  # faint stripes
        theta, period = rng.uniform(0, np.pi), rng.uniform(6, 20) / side
        image += rng.uniform(4, 10) * np.sin(2 * np.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period)[..., None]
    elif texture == 2:  # faint checkerboard
        cell = rng.uniform(6, 16) / side
        image += rng.uniform(4, 8) * (2.0 * ((np.floor(xx / cell) + np.floor(yy / cell)) % 2) - 1)[..., None]
    elif texture == 3:  # static grain
        image += rng.normal(0, rng.uniform(2, 5), (side, side, 1))
    return np.clip(image, 15, 155).astype(np.uint8)
