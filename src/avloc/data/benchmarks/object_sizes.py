"""How big sounding objects are in real data: the size distributions `avloc synth` draws from.

Measured by ``python bench/real_box_sizes.py`` on the STM authors' box annotations of the AVE
(76,450 frames with boxes) and AudioSet-Instrument (37,449) test sets: the number of boxes of a
frame (1, 2, 3, 4 or more) and, per box, its share of the frame's area and its aspect ratio
(width / height, each relative to the frame's side) as 21 quantiles (0, 5, ..., 100 %). The
union of a frame's boxes covers on average 23 % of an AVE frame (median 17 %) and 31 % of an
AudioSet-Instrument one (median 27 %).

``"real"`` (the default) draws each clip's table from AVE or AudioSet-Instrument with equal
chance; ``"small"`` is the benchmark's former setting (objects a few percent of the frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avloc.types import AvlocError

QUANTILES = np.linspace(0.0, 1.0, 21)


@dataclass(frozen=True)
class SizeTable:
    """Box-count shares for 1, 2, 3 and 4+ boxes, and per-box area and aspect quantiles."""

    box_counts: tuple[float, ...]
    area_quantiles: tuple[float, ...]
    aspect_quantiles: tuple[float, ...]

    def box_count(self, rng: np.random.Generator, limit: int = 4) -> int:
        shares = np.asarray(self.box_counts[:limit], dtype=np.float64)
        return int(rng.choice(len(shares), p=shares / shares.sum())) + 1

    def box_shape(self, rng: np.random.Generator) -> tuple[float, float]:
        """One box's ``(width, height)`` as shares of the frame's width and height (each <= 1)."""
        area = float(np.interp(rng.random(), QUANTILES, self.area_quantiles))
        aspect = float(np.interp(rng.random(), QUANTILES, self.aspect_quantiles))
        width, height = np.sqrt(area * aspect), np.sqrt(area / aspect)
        shrink = max(width, height, 1.0)  # a box wider or taller than the frame keeps its aspect
        return width / shrink, height / shrink


TABLES: dict[str, SizeTable] = {
    "ave": SizeTable(
        box_counts=(0.8947, 0.0811, 0.0168, 0.0074),
        area_quantiles=(0.0012, 0.0095, 0.0168, 0.0259, 0.0387, 0.0494, 0.0578, 0.0718, 0.0888, 0.1083, 0.1319, 0.1515, 0.1812, 0.2189, 0.2506, 0.2782, 0.3479, 0.4251, 0.5394, 0.6574, 1.0000),
        aspect_quantiles=(0.143, 0.391, 0.462, 0.537, 0.573, 0.619, 0.674, 0.723, 0.781, 0.828, 0.880, 0.945, 1.007, 1.069, 1.170, 1.272, 1.447, 1.619, 1.873, 2.265, 5.881),
    ),
    "audioset-instrument": SizeTable(
        box_counts=(0.9298, 0.0501, 0.0120, 0.0080),
        area_quantiles=(0.0078, 0.0397, 0.0687, 0.0939, 0.1079, 0.1242, 0.1479, 0.1672, 0.1914, 0.2196, 0.2484, 0.2686, 0.2856, 0.3208, 0.3596, 0.4203, 0.4636, 0.4956, 0.5622, 0.7000, 1.0000),
        aspect_quantiles=(0.094, 0.273, 0.468, 0.565, 0.639, 0.700, 0.782, 0.854, 0.936, 1.052, 1.146, 1.228, 1.333, 1.409, 1.490, 1.572, 1.691, 1.839, 1.986, 2.158, 11.025),
    ),
    # The former synth setting: shapes of radius 7-14 % of the side (uniform), one box each; a
    # box covers on average 0.87 of the square around its shape's circle.
    "small": SizeTable(
        box_counts=(1.0, 0.0, 0.0, 0.0),
        area_quantiles=tuple(round(0.87 * (0.14 * (1 + q)) ** 2, 4) for q in QUANTILES),
        aspect_quantiles=(1.0,) * len(QUANTILES),
    ),
}


def size_table(name: str, rng: np.random.Generator) -> SizeTable:
    """The table of a size setting: ``"real"`` (AVE or AudioSet-Instrument, drawn), a dataset's, or ``"small"``."""
    if name == "real":
        return TABLES[("ave", "audioset-instrument")[int(rng.integers(2))]]
    if name not in TABLES:
        raise AvlocError(f"unknown object size setting {name!r}; expected real, {', '.join(TABLES)}")
    return TABLES[name]
