"""Reference maps that use no model: ``baseline:random`` and ``baseline:centre``.

``random`` is uniform noise on an 8 x 8 grid (upsampled by the protocol like any map),
seeded, so a report is reproducible; ``centre`` is the centred box of half the frame's width
and height. Both give one map per step at :data:`BASELINE_FPS` steps a second and no event
class, and score exactly like a model's maps.
"""

from __future__ import annotations

import torch

from avloc.types import AvlocError

BASELINES = ("random", "centre")
BASELINE_FPS = 4.0
_GRID = 8  # cells a side; the centre box spans cells [2, 6) of 8: half the width and height


def baseline_name(source: str) -> str | None:
    """``"random"`` / ``"centre"`` for ``baseline:random`` / ``baseline:centre``, None for a checkpoint."""
    if not source.startswith("baseline:"):
        return None
    name = source.removeprefix("baseline:")
    if name not in BASELINES:
        raise AvlocError(f"unknown baseline {name!r}; expected baseline:random or baseline:centre")
    return name


class BaselineMaps:
    """The maps of one baseline; the random one draws from its own seeded generator."""

    def __init__(self, name: str, seed: int = 0):
        if name not in BASELINES:
            raise AvlocError(f"unknown baseline {name!r}; expected baseline:random or baseline:centre")
        self.name = name
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, steps: int) -> torch.Tensor:
        """``(steps, 8, 8)`` float32 maps."""
        if self.name == "random":
            return torch.rand(steps, _GRID, _GRID, generator=self.generator)
        quarter = _GRID // 4
        centre = torch.zeros(steps, _GRID, _GRID)
        centre[:, quarter:_GRID - quarter, quarter:_GRID - quarter] = 1.0
        return centre
