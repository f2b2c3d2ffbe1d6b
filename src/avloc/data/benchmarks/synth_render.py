"""Pictures of the synthetic benchmark: shape masks, object looks, backgrounds and frame compositing.

Shapes are drawn with OpenCV's anti-aliased polygon fills at 1/16-pixel precision into a small
patch around the object, so an object's mask (and hence its ground-truth box) is a pure
function of its centre, radius, angle and aspect. A shape is the upright unit shape stretched
``sqrt(aspect)`` wide and ``1 / sqrt(aspect)`` tall, scaled by the radius and turned by its
angle, so it always fits inside the (turned) ellipse with those semi-axes. An object's
:class:`Look` is its class colour moved a little (:data:`JITTER`) plus a faint texture that
moves with it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

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
    "square": np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) / math.sqrt(2),
    "triangle": _regular(3),
    "star": _regular(5, inner=0.45),
    "diamond": np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]]),
    "hexagon": _regular(6),
    "pentagon": _regular(5),
    "cross": np.array([[-_ARM, -1], [_ARM, -1], [_ARM, -_ARM], [1, -_ARM], [1, _ARM], [_ARM, _ARM], [_ARM, 1],
                       [-_ARM, 1], [-_ARM, _ARM], [-1, _ARM], [-1, -_ARM], [-_ARM, -_ARM]]) * 0.95,
}
SHAPES = ("circle", "ring", "crescent", *POLYGONS)
_ROUND = _regular(96)  # the unit circle as a polygon: ellipses are stretched circles
JITTER = 18.0  # largest RGB distance of an object's colour from its class colour
TEXTURES = ("flat", "shade", "stripes", "dome")
TEXTURE_AMOUNT = (4.0, 8.0)  # texture amplitude, grey levels per channel (at most ~14 in RGB distance)


@dataclass(frozen=True)
class Look:
    """How one object is painted: its colour and a texture fixed to the object.

    ``shade`` is a linear ramp along ``direction``, ``stripes`` a sine of ``frequency`` periods
    per radius across ``direction``, ``dome`` brighter at the centre; ``amount`` is the amplitude
    in grey levels, added to every channel.
    """

    colour: tuple[int, int, int]
    texture: str = "flat"
    amount: float = 0.0
    direction: float = 0.0
    frequency: float = 1.0


def random_look(rng: np.random.Generator, colour: tuple[int, int, int]) -> Look:
    """A look around class ``colour``: brightness and tint moved by at most :data:`JITTER`, a random texture."""
    shift = rng.uniform(-1.0, 1.0) * np.ones(3) + rng.uniform(-0.5, 0.5, 3)  # brightness + tint
    shift *= rng.uniform(0.3, 1.0) * JITTER / np.linalg.norm(shift).clip(1e-6)
    moved = tuple(int(v) for v in np.clip(np.round(np.asarray(colour) + shift), 0, 255))
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    amount = 0.0 if texture == "flat" else float(rng.uniform(*TEXTURE_AMOUNT))
    return Look(moved, texture, amount, float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(1.0, 2.5)))


def _stretch(aspect: float) -> tuple[float, float]:
    return math.sqrt(aspect), 1.0 / math.sqrt(aspect)


def shape_mask(shape: str, cx: float, cy: float, radius: float, angle: float, size: int,
               aspect: float = 1.0) -> tuple[int, int, np.ndarray]:
    """The coverage mask of one object, cut to the patch that holds it.

    Args:
        shape: one of :data:`SHAPES`.
        cx, cy: centre in continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``).
        radius: in pixels; angle: rotation in radians.
        size: frame side in pixels (the patch is clipped to the frame).
        aspect: width / height of the ellipse the shape fits in (1: a circle of ``radius``).

    Returns:
        ``(x0, y0, mask)``: the patch's top-left pixel and its ``(h, w)`` uint8 coverage (0..255).
    """
    sx, sy = _stretch(aspect)
    half_x = half_y = math.ceil(radius * max(sx, sy)) + 2
    x0, y0 = min(max(0, math.floor(cx) - half_x), size - 1), min(max(0, math.floor(cy) - half_y), size - 1)
    x1, y1 = min(size, math.floor(cx) + half_x + 1), min(size, math.floor(cy) + half_y + 1)
    mask = np.zeros((max(y1 - y0, 1), max(x1 - x0, 1)), np.uint8)
    # cv2 puts pixel centres at integer coordinates; ours are at +0.5.
    px, py = cx - 0.5 - x0, cy - 0.5 - y0
    c, s = math.cos(angle), math.sin(angle)
    transform = (np.array([[c, -s], [s, c]]) * radius * np.array([[sx], [sy]])).T  # unit (row) -> stretched, turned

    def fill(unit: np.ndarray, value: int, centre: tuple[float, float] = (0.0, 0.0)) -> None:
        points = (unit + centre) @ transform + (px, py)  # (V, 2) unit -> patch pixels
        cv2.fillPoly(mask, [np.round(points * ONE).astype(np.int32)], value, cv2.LINE_AA, SHIFT)

    if shape == "circle":
        fill(_ROUND, 255)
    elif shape == "ring":
        fill(_ROUND, 255)
        fill(0.55 * _ROUND, 0)
    elif shape == "crescent":
        fill(_ROUND, 255)
        fill(0.8 * _ROUND, 0, (0.5, 0.0))
    else:
        fill(POLYGONS[shape], 255)
    return x0, y0, mask


@functools.cache
def box_fill(shape: str, tilt: float = math.pi) -> float:
    """Mean share of the square around its circle that a shape's box covers, over angles within +-``tilt`` (circle: 1)."""
    radius, size = 48.0, 100
    shares = []
    for angle in np.linspace(-tilt, tilt, 24):
        x1, y1, x2, y2 = mask_box(*shape_mask(shape, size / 2, size / 2, radius, float(angle), size))
        shares.append((x2 - x1) * (y2 - y1) / (2 * radius) ** 2)
    return float(np.mean(shares))


def mask_box(x0: int, y0: int, mask: np.ndarray) -> list[int] | None:
    """``[x1, y1, x2, y2]`` (exclusive right/bottom) of the pixels at least half covered, or None."""
    ys, xs = np.nonzero(mask >= MASK_THRESHOLD)
    if len(xs) == 0:
        return None
    return [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]


def composite(frame: np.ndarray, x0: int, y0: int, mask: np.ndarray, colour: np.ndarray) -> None:
    """Blend ``colour`` (``(3,)`` or ``(h, w, 3)``) into ``frame`` ``(H, W, 3)`` uint8 in place, weighted by ``mask``."""
    h, w = mask.shape
    region = frame[y0 : y0 + h, x0 : x0 + w]
    alpha = mask[..., None].astype(np.float32) / 255.0  # (h, w) -> (h, w, 1)
    region[...] = np.clip(region * (1.0 - alpha) + colour * alpha + 0.5, 0, 255).astype(np.uint8)


def paint(frame: np.ndarray, shape: str, cx: float, cy: float, radius: float, angle: float, aspect: float,
          look: Look) -> None:
    """Draw one object into ``frame`` ``(H, W, 3)`` uint8 in place: its mask filled with its look."""
    x0, y0, mask = shape_mask(shape, cx, cy, radius, angle, frame.shape[0], aspect)
    colour = np.asarray(look.colour, np.float32)
    if look.texture != "flat":
        sx, sy = _stretch(aspect)
        h, w = mask.shape
        # Object coordinates of the pixel centres: undo the turn, the radius and the stretch.
        dx = (np.arange(w, dtype=np.float32) + x0 + 0.5 - cx)[None, :] / radius  # (1, w)
        dy = (np.arange(h, dtype=np.float32) + y0 + 0.5 - cy)[:, None] / radius  # (h, 1)
        c, s = math.cos(angle), math.sin(angle)
        u, v = (c * dx + s * dy) / sx, (c * dy - s * dx) / sy  # (h, w) each
        along = math.cos(look.direction) * u + math.sin(look.direction) * v
        if look.texture == "shade":
            offset = np.clip(along, -1, 1)
        elif look.texture == "stripes":
            offset = np.sin(2 * np.pi * look.frequency * along)
        else:  # dome
            offset = np.clip(1.0 - 2.0 * (u * u + v * v), -1, 1)
        colour = colour + look.amount * offset[..., None]  # (h, w, 3)
    composite(frame, x0, y0, mask, colour)


def make_background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A ``(side, side, 3)`` uint8 muted background: gradient or smooth colour noise, plus a texture.

    The texture is faint clutter (soft grey blobs and slabs), stripes, a checkerboard or grain,
    so no background is a flat colour. Values stay within [15, 155] with little saturation so
    that the saturated object colours stand out whatever the background.
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
    if texture == 0:  # faint clutter: soft, low-contrast grey ellipses and rectangles
        layer = np.zeros((side, side), np.float32)
        for _ in range(int(rng.integers(3, 9))):
            cx, cy, w, h = rng.uniform(0, side, 2).tolist() + (rng.uniform(0.05, 0.25, 2) * side).tolist()
            level = float(rng.choice([-1.0, 1.0]) * rng.uniform(6, 14))
            if rng.random() < 0.5:
                cv2.ellipse(layer, (round(cx), round(cy)), (round(w), round(h)), float(rng.uniform(0, 180)), 0, 360,
                            level, -1)
            else:
                cv2.rectangle(layer, (round(cx - w), round(cy - h)), (round(cx + w), round(cy + h)), level, -1)
        image += cv2.GaussianBlur(layer, (0, 0), max(side / 150, 0.8))[..., None]
        image += rng.normal(0, 1.5, (side, side, 1))
    elif texture == 1:  # faint stripes
        theta, period = rng.uniform(0, np.pi), rng.uniform(6, 20) / side
        image += rng.uniform(4, 10) * np.sin(2 * np.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period)[..., None]
    elif texture == 2:  # faint checkerboard
        cell = rng.uniform(6, 16) / side
        image += rng.uniform(4, 8) * (2.0 * ((np.floor(xx / cell) + np.floor(yy / cell)) % 2) - 1)[..., None]
    elif texture == 3:  # static grain
        image += rng.normal(0, rng.uniform(2, 5), (side, side, 1))
    return np.clip(image, 15, 155).astype(np.uint8)
