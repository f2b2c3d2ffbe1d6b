"""The STM authors' box annotations: CVAT 1.1 "interpolation" XML, one file per 10-s test video.

``meta/task/size`` is the number of annotated frames of the clip and
``meta/task/original_size`` the video's resolution; every ``<track>`` is one object with a
``<box frame outside xtl ytl xbr ybr>`` per frame in original pixels. Boxes with
``outside="1"`` are absent. A file without a track has no visible sounding object in any frame.

Frame ``n`` is at time ``n * seconds / size`` (its presentation time in a clip of ``seconds``
with ``size`` evenly spaced frames). :meth:`CvatAnnotation.boxes_at` gives the ground truth
nearest to a time under either convention: the union of the boxes (their list) or the STM
authors' single enclosing box.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avloc.types import AvlocError

CLIP_SECONDS = 10.0
MAX_FRAMES = 100_000  # an hour at 25 fps; a larger meta/task/size is damage (it sizes a list per frame)
CONVENTIONS = ("union", "enclosing")


@dataclass(frozen=True)
class CvatAnnotation:
    """One video's boxes: ``boxes[n]`` is the ``(N, 4)`` xyxy float array of frame ``n``."""

    path: Path
    video: str  # the <source> file name
    frame_count: int
    width: int
    height: int
    boxes: tuple[np.ndarray, ...]
    seconds: float = CLIP_SECONDS

    @property
    def has_track(self) -> bool:
        return any(len(b) for b in self.boxes)

    def frame_at(self, time: float) -> int:
        """The annotated frame nearest to ``time`` (seconds from the clip start)."""
        return int(np.clip(round(time * self.frame_count / self.seconds), 0, self.frame_count - 1))

    def boxes_at(self, time: float, convention: str = "union") -> np.ndarray:
        """Ground-truth boxes ``(N, 4)`` at ``time``: all of them, or their one enclosing box."""
        if convention not in CONVENTIONS:
            raise AvlocError(f"unknown ground-truth convention {convention!r}; expected union or enclosing")
        boxes = self.boxes[self.frame_at(time)]
        if convention == "enclosing" and len(boxes):
            return np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])[None]  # (N, 4) -> (1, 4)
        return boxes


def _number(path: Path, element: ET.Element | None, what: str) -> float:
    if element is None or element.text is None:
        raise AvlocError(f"{path}: no {what}")
    try:
        value = float(element.text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise AvlocError(f"{path}: {what} is not a finite number ({element.text!r})")
    return value


def read_cvat(path: str | os.PathLike, seconds: float = CLIP_SECONDS) -> CvatAnnotation:
    """Parse one CVAT 1.1 XML file; a malformed file is refused with its path and the reason."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise AvlocError(f"{path}: not a readable CVAT XML file ({error})") from None
    task = root.find("meta/task")
    if task is None:
        raise AvlocError(f"{path}: no meta/task (not a CVAT task dump)")
    count = int(_number(path, task.find("size"), "meta/task/size"))
    width = int(_number(path, task.find("original_size/width"), "original_size/width"))
    height = int(_number(path, task.find("original_size/height"), "original_size/height"))
    if not (1 <= count <= MAX_FRAMES and width >= 1 and height >= 1):
        raise AvlocError(f"{path}: need 1 to {MAX_FRAMES} frames and a positive size, got {count} frames, "
                         f"{width}x{height}")
    frames: list[list[list[float]]] = [[] for _ in range(count)]
    for box in root.iter("box"):
        try:
            frame = int(box.get("frame", ""))
            xyxy = [float(box.get(key, "")) for key in ("xtl", "ytl", "xbr", "ybr")]
        except ValueError:
            raise AvlocError(f"{path}: a box with a missing or non-numeric frame or coordinate") from None
        if not 0 <= frame < count:
            raise AvlocError(f"{path}: box on frame {frame}, outside the task's {count} frames")
        if box.get("outside") == "1":
            continue
        if not all(math.isfinite(v) for v in xyxy):
            raise AvlocError(f"{path}: frame {frame}: box {xyxy} has a coordinate that is not a finite number")
        if not (xyxy[0] < xyxy[2] and xyxy[1] < xyxy[3]):
            raise AvlocError(f"{path}: frame {frame}: box {xyxy} has x2 <= x1 or y2 <= y1")
        frames[frame].append(xyxy)
    source = root.find("meta/source")
    return CvatAnnotation(
        path=path, video=source.text if source is not None and source.text else path.parent.name,
        frame_count=count, width=width, height=height,
        boxes=tuple(np.asarray(b, np.float64).reshape(-1, 4) for b in frames), seconds=seconds,
    )
