"""The panels of ``avloc eval --save-visualizations``: which frames, what is drawn, the cIoU shown."""

import math

import numpy as np
import pytest
import torch

from avloc.data.manifest import FrameAnnotation
from avloc.eval_panels import FrameSource, panel, pick_frames, save_visualizations
from avloc.io.write import VideoWriter
from avloc.protocols import PROTOCOLS, AnnotatedMap, score_maps


def _frame(row: str, boxes=((8.0, 8.0, 24.0, 24.0),), t: float = 0.5, peak=(1, 1)) -> AnnotatedMap:
    heatmap = torch.zeros(4, 4)
    heatmap[peak] = 1.0
    return AnnotatedMap(heatmap, FrameAnnotation(t=t, boxes=tuple(boxes), scenario=row), (64, 64), row)


def test_pick_frames_spreads_n_frames_with_boxes_over_each_scenario():
    frames = [_frame("single") for _ in range(10)] + [_frame("mixed", boxes=())] + [_frame("mixed")]
    picked = pick_frames(frames, 3)
    assert picked == {"single": [0, 4, 9], "mixed": [11]}  # the negative frame (no boxes) is never drawn
    assert pick_frames(frames, 0) == {"single": [], "mixed": []}


def test_panel_shows_both_halves_and_differs_with_the_map():
    image = np.full((64, 64, 3), 90, dtype=np.uint8)
    hit, miss = _frame("single", peak=(1, 1)), _frame("single", peak=(3, 3))
    ciou = score_maps([hit, miss], PROTOCOLS["stm"]).frame_ciou
    assert ciou[0] > ciou[1]
    left_right = panel(image, hit, ciou[0], PROTOCOLS["stm"], "clip t=0.50 s single")
    assert left_right.shape[0] == 64 and left_right.shape[1] > 128
    other = panel(image, miss, ciou[1], PROTOCOLS["stm"], "clip t=0.50 s single")
    assert not np.array_equal(left_right[:, 64:], other[:, 64:])  # the heat map half follows the map
    assert math.isnan(score_maps([_frame("single", boxes=())], PROTOCOLS["stm"]).frame_ciou[0])


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=4, width=64, height=64) as writer:
        for level in range(8):  # 2 s of frames, each a different grey
            writer.write_frame(np.full((64, 64, 3), 30 * level, dtype=np.uint8))
    return path


def test_save_visualizations_writes_one_png_per_picked_frame(tmp_path, video):
    frames = [_frame("single", t=0.25 * k) for k in range(6)]
    frame_ciou = score_maps(frames, PROTOCOLS["stm"]).frame_ciou
    written = save_visualizations(frames, [FrameSource("clip", video)] * 6, PROTOCOLS["stm"], frame_ciou, 2,
                                  tmp_path / "panels")
    assert [path.relative_to(tmp_path / "panels").as_posix() for path in written] == [
        "single/000-clip-t0000.000.png", "single/001-clip-t0001.250.png"]
    assert all(path.stat().st_size > 0 for path in written)


def test_small_frames_are_enlarged_for_readable_captions():
    from avloc.eval_panels import readable

    assert readable(np.zeros((64, 96, 3), dtype=np.uint8)).shape == (320, 480, 3)
    large = np.zeros((400, 300, 3), dtype=np.uint8)
    assert readable(large) is large
