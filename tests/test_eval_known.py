"""``avloc eval`` end to end on a dataset whose maps are known: the printed table checked by hand.

The centre baseline's map is the 8 x 8 grid with cells 2..5 (rows and columns) at 1, the rest 0;
``--size 8`` scores it without resampling. The video is 64 x 64 px and 2 s long; the ground-truth
box [0, 0, 32, 32] covers cells 0..3 on the 8-px grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avloc.cli import main
from avloc.data.manifest import ClipRecord, FrameAnnotation
from avloc.evaluate import annotated_maps, second_predictions
from avloc.io.write import write_video


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    root = tmp_path_factory.mktemp("known")
    write_video(root / "clip.mp4", np.zeros((8, 64, 64, 3), np.uint8), 4, np.zeros(32000, np.float32), 16000)
    # Frames every 0.25 s lie exactly on the boundaries between 4-fps steps (centres 0.125, 0.375, ...):
    # 0.0 .. 2.0 gives 9 frames, 5 with a box, 4 off-screen; one more at 2.5 s lies after the video's end.
    frames = [{"t": 0.25 * k, "boxes": [[0, 0, 32, 32]] if k % 2 == 0 else [],
               "scenario": "single" if k % 2 == 0 else "off-screen"} for k in range(9)]
    frames.append({"t": 2.5, "boxes": [[0, 0, 32, 32]], "scenario": "single"})
    line = {"id": "clip", "video": "clip.mp4", "split": "test", "label": "drum", "frames": frames}
    (root / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    return root


def test_every_annotated_frame_is_scored_and_the_table_is_right(known, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "baseline:centre", str(known), "--size", "8", "-q"]) == 0
    printed = capsys.readouterr().out
    # on (> 0.5) = cells [2, 6)^2 (16); gt = [0, 4)^2 (16); both = [2, 4)^2 (4): cIoU = 4 / (16 + 12) = 1/7.
    # AUC: success 1 at 0, .05, .1 and 0 from .15: 0.05 + 0.05 + 0.025 = 0.125. Otsu box [2, 2, 6, 6] vs
    # [0, 0, 4, 4]: IoU 4 / 28. Pointing: the first maximum (2, 2) lies in the box. TN: 25% of every map is
    # the maximum 1, so the top-10% threshold is 1 and a quarter of each off-screen map is on: 75.0.
    single = next(line for line in printed.splitlines() if line.startswith("single"))
    assert single.split() == ["single", "6", "5", "0.143", "0.000", "0.125", "0.000", "-", "1.000"]
    off = next(line for line in printed.splitlines() if line.startswith("off-screen"))
    assert off.split() == ["off-screen", "4", "4", "-", "-", "-", "-", "75.0", "-"]
    assert "warning: 1 of 10 annotated frames not scored: the frame's time lies outside the video's steps" in printed
    report = json.loads(next(tmp_path.glob("eval-baseline-centre-*-test-stm.json")).read_text())
    assert report["rows"]["all"]["n_annotated"] == 10 and report["rows"]["all"]["n_frames"] == 9
    assert report["rows"]["single"]["ciou_at"] == pytest.approx(1 / 7)


def test_baseline_reports_of_two_datasets_and_protocols_do_not_overwrite(known, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    (other / "clip.mp4").symlink_to(known / "clip.mp4")
    (other / "manifest.jsonl").write_text((known / "manifest.jsonl").read_text())
    monkeypatch.chdir(tmp_path)
    for dataset in (known, other):
        for protocol in ("stm", "lvs"):
            assert main(["eval", "baseline:centre", str(dataset), "--protocol", protocol, "-q"]) == 0
    assert len(list(tmp_path.glob("eval-baseline-centre-*.json"))) == 4


def test_frames_on_step_boundaries_go_to_the_later_step():
    frames = tuple(FrameAnnotation(t=t, boxes=((0, 0, 1, 1),), scenario="single") for t in (0.0, 0.25, 0.3, 0.99, 1.1))
    record = ClipRecord(id="clip", video=Path("clip.mp4"), split="test", label="drum", frames=frames)
    times = np.array([0.125, 0.375, 0.625, 0.875])
    maps = torch.arange(4.0)[:, None, None].expand(4, 2, 2)  # step k's map is filled with k
    scored, unscored = annotated_maps(record, maps, times, 4.0, (8, 8), duration=1.05)
    assert [float(f.heatmap[0, 0]) for f in scored] == [0.0, 1.0, 1.0, 3.0]  # 0.99 -> the last step (to 1.05)
    assert unscored == [("single", "the frame's time lies outside the video's steps")]  # 1.1 > 1.05


def test_segment_accuracy_is_per_second_from_mean_step_probabilities():
    # 8 steps at 4 fps = seconds 0 and 1. Second 0: steps say class 1 (0.6), 1 (0.6), 0 (0.9), 0 (0.9):
    # mean p(0) = (0.4 + 0.4 + 0.9 + 0.9) / 4 = 0.65 -> class 0, although two of its four steps say 1.
    p = np.array([[0.4, 0.6], [0.4, 0.6], [0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8], [0.2, 0.8], [0.6, 0.4]])
    seconds, predicted = second_predictions(p, (np.arange(8) + 0.5) / 4)
    assert seconds.tolist() == [0, 1] and predicted.tolist() == [0, 1]
