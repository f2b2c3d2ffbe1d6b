"""AVATAR per-frame JSON: boxes, polygon masks, empty frames, refusals (constructed files)."""

import json

import numpy as np
import pytest

from avloc.data.formats.avatar import read_avatar_frame
from avloc.types import AvlocError


def _write(tmp_path, document) -> object:
    path = tmp_path / "frame_0001.json"
    path.write_text(json.dumps(document))
    return path


def test_boxes_and_masks(tmp_path):
    frame = read_avatar_frame(_write(tmp_path, {
        "original_width": 20, "original_height": 10,
        "annotations": [
            {"segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]], "bbox": [2, 2, 4, 4], "audio_visual_category": "dog",
             "task": "Single-sound"},
            {"segmentation": [], "bbox": [10, 0, 5, 3], "audio_visual_category": "car", "task": "Single-sound"},
        ]}))
    np.testing.assert_array_equal(frame.boxes(), [[2, 2, 6, 6], [10, 0, 15, 3]])
    mask = frame.mask()
    assert mask.shape == (10, 20)
    assert mask[2:7, 2:7].all() and mask[0:3, 10:15].all()  # polygon filled with its edges; box where no polygon
    assert mask.sum() == 5 * 5 + 3 * 5
    assert [o.category for o in frame.objects] == ["dog", "car"] and frame.objects[0].task == "Single-sound"


def test_a_frame_without_annotations_has_nothing_on_screen(tmp_path):
    frame = read_avatar_frame(_write(tmp_path, {"original_width": 4, "original_height": 4, "annotations": []}))
    assert frame.boxes().shape == (0, 4) and not frame.mask().any()


@pytest.mark.parametrize(("document", "reason"), [
    ([], "expected an object"),
    ({"original_width": "a", "original_height": 4}, "must be integers"),
    ({"original_width": 4, "original_height": 4, "annotations": [{"bbox": [0, 0, -1, 2]}]}, "non-positive"),
    ({"original_width": 4, "original_height": 4, "annotations": [{"segmentation": []}]}, "needs a bbox"),
    ({"original_width": 4, "original_height": 4,
      "annotations": [{"bbox": [0, 0, 1, 1], "segmentation": [[0, 0, 1, 1]]}]}, "at least 3 points"),
    ({"original_width": float("inf"), "original_height": 4}, "must be integers"),
    ({"original_width": 10**9, "original_height": 4}, "not a video frame size"),
    ({"original_width": 4, "original_height": 4, "annotations": [{"bbox": [0, 0, float("nan"), 2]}]}, "finite"),
    ({"original_width": 4, "original_height": 4,
      "annotations": [{"bbox": [0, 0, 1, 1], "segmentation": [[0, 0, 1, 1, 0, float("inf")]]}]}, "finite"),
])
def test_malformed_frames_are_refused(tmp_path, document, reason):
    with pytest.raises(AvlocError, match=reason):
        read_avatar_frame(_write(tmp_path, document))
