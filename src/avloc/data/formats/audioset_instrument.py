"""The AudioSet-Instrument split files of the STM authors (``splits/AudioSet_Instrument/*.csv``).

Columns ``keyword,start,end,evt,target,multi``: the YouTube id, the 10-s clip's start and end in
the source video, AudioSet label ids, the sounding instrument(s) (comma-separated) and whether
several sound at once. Classes follow the STM paper: 15 instrument names with trumpet,
trombone and french horn merged into ``brass`` -> 13 classes (sorted), background not included.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from avloc.types import AvlocError

COLUMNS = ("keyword", "start", "end", "evt", "target", "multi")
MERGED = {"trumpet": "brass", "trombone": "brass", "french horn": "brass"}


@dataclass(frozen=True)
class InstrumentClip:
    """One row: a 10-s clip of a YouTube video and its sounding instrument classes."""

    video_id: str
    start: float
    end: float
    classes: tuple[str, ...]  # merged, sorted, without repeats
    multi: bool


def instrument_class(name: str) -> str:
    """The class of an instrument name (brass instruments merged)."""
    name = name.strip().lower()
    return MERGED.get(name, name)


def read_instrument_csv(path: str | os.PathLike) -> list[InstrumentClip]:
    """Parse a split CSV; a malformed row is refused with ``file:line: reason``."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise AvlocError(f"{path}: cannot read ({error})") from None
    if not rows or tuple(rows[0]) != COLUMNS:
        raise AvlocError(f"{path}:1: expected the header {','.join(COLUMNS)}")
    clips = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(COLUMNS):
            raise AvlocError(f"{path}:{number}: expected {len(COLUMNS)} columns, got {len(row)}")
        video_id, start, end, _, target, multi = row
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            start_s = end_s = math.nan
        if not (math.isfinite(start_s) and math.isfinite(end_s)):
            raise AvlocError(f"{path}:{number}: start and end must be finite numbers, got {start!r}, {end!r}")
        if not 0 <= start_s < end_s:
            raise AvlocError(f"{path}:{number}: start {start_s:g} is not before end {end_s:g}")
        classes = tuple(sorted({instrument_class(name) for name in target.split(",") if name.strip()}))
        if not video_id or not classes or multi not in ("0", "1"):
            raise AvlocError(f"{path}:{number}: empty id or target, or multi not 0/1")
        clips.append(InstrumentClip(video_id, start_s, end_s, classes, multi == "1"))
    return clips


def instrument_classes(clips: list[InstrumentClip]) -> list[str]:
    """The sorted classes that occur in ``clips``."""
    return sorted({name for clip in clips for name in clip.classes})
