"""``avloc eval --save-visualizations N``: for N frames of each scenario, a panel a person can read.

As LVS's evaluator saves its test images: each panel shows, side by side, the video frame with
its ground-truth boxes (dashed) and the same frame under the model's heat map with the predicted
boxes (the protocol's Otsu boxes) and the ground truth, captioned with the clip, the time, the
scenario and the frame's cIoU exactly as the protocol scored it. The N frames of a scenario are
spread evenly over its frames with boxes, in the split's order, so the same run always draws the
same frames. Panels are written as PNG (atomically) under ``folder/<scenario>/``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avloc.io.decode import iter_frames
from avloc.map_geometry import frame_boxes, scale_boxes
from avloc.protocols import AnnotatedMap, Protocol
from avloc.render import TRUTH_COLOUR, annotated_frame, draw_boxes, heat_layer, put_text, write_png

_SEARCH = 0.25  # seconds around an annotation's time searched for its video frame
_MIN_HEIGHT = 320  # smaller frames are enlarged for the panel, so its captions stay readable


@dataclass(frozen=True)
class FrameSource:
    """Where an annotated frame comes from: its clip id and video file."""

    clip: str
    video: Path


def pick_frames(frames: Sequence[AnnotatedMap], count: int) -> dict[str, list[int]]:
    """Indices of up to ``count`` frames with boxes per scenario row, spread evenly over the row."""
    by_row: dict[str, list[int]] = {}
    for index, frame in enumerate(frames):
        if not frame.is_negative:
            by_row.setdefault(frame.row, []).append(index)
    picked = {}
    for row, indices in by_row.items():
        positions = np.unique(np.linspace(0, len(indices) - 1, min(count, len(indices))).round().astype(int))
        picked[row] = [indices[p] for p in positions]
    return picked


def video_frame(video: Path, t: float) -> np.ndarray:
    """The decoded frame of ``video`` nearest to ``t`` seconds: ``(H, W, 3)`` uint8 RGB."""
    candidates = list(iter_frames(video, start=max(0.0, t - _SEARCH), end=t + _SEARCH))
    if not candidates:
        candidates = list(iter_frames(video, start=max(0.0, t - 4 * _SEARCH)))[-1:]  # t at the very end
    return min(candidates, key=lambda item: abs(item[0] - t))[1]


def readable(image: np.ndarray) -> np.ndarray:
    """``image`` enlarged (bilinear) to at least :data:`_MIN_HEIGHT` px high, its aspect kept."""
    height, width = image.shape[:2]
    if height >= _MIN_HEIGHT:
        return image
    scale = _MIN_HEIGHT / height
    return cv2.resize(image, (round(width * scale), _MIN_HEIGHT), interpolation=cv2.INTER_LINEAR)


def panel(image: np.ndarray, frame: AnnotatedMap, ciou: float, protocol: Protocol, caption: str) -> np.ndarray:
    """Frame with ground truth | heat map with predicted boxes and ground truth, captioned."""
    height, width = image.shape[:2]
    annotated = np.asarray(frame.annotation.boxes, dtype=np.float64).reshape(-1, 4)  # (M, 4) original pixels
    truth = scale_boxes(annotated, frame.original_size, (height, width)).numpy()  # in the decoded frame's pixels
    # The protocol's boxes (its grid, box mode and floor) in the frame's pixels, scored as avloc localize scores them.
    (boxes,), (shares,) = frame_boxes(frame.heatmap[None], (height, width), protocol.box_mode, protocol.otsu_floor,
                                      grid=protocol.size)
    left = draw_boxes(image.copy(), truth, TRUTH_COLOUR, dashed=True)
    put_text(left, caption, (0, 0), scale=0.6, band_opacity=0.6)
    score = "-" if math.isnan(ciou) else f"{ciou:.3f}"
    right = annotated_frame(image, heat_layer(frame.heatmap, (height, width)), boxes, shares,
                            f"{protocol.name} cIoU {score}", ground_truth=truth)
    gap = np.full((height, max(4, width // 100), 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, right], axis=1)  # (H, 2W + gap, 3)


def save_visualizations(frames: Sequence[AnnotatedMap], sources: Sequence[FrameSource], protocol: Protocol,
                        frame_ciou: Sequence[float], count: int, folder: str | Path) -> list[Path]:
    """Write the panels of up to ``count`` frames per scenario under ``folder``; returns their paths.

    ``sources[i]`` is where ``frames[i]`` comes from; ``frame_ciou[i]`` its cIoU as the protocol
    scored the whole split (``ScoredSplit.frame_ciou``, so split-wide thresholds hold).
    """
    folder = Path(folder)
    written = []
    for row, indices in sorted(pick_frames(frames, count).items()):
        for rank, index in enumerate(indices):
            frame, source = frames[index], sources[index]
            t = frame.annotation.t
            caption = f"{source.clip}  t={t:.2f} s  {row}"
            image = panel(readable(video_frame(source.video, t)), frame, frame_ciou[index], protocol, caption)
            path = folder / row / f"{rank:03d}-{source.clip}-t{t:08.3f}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(path, image)
            written.append(path)
    return written
