"""Metrics: golden values computed by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avloc.map_geometry import global_threshold
from avloc.metrics import (
    ClassificationMeter,
    LocalizationMeter,
    ap50,
    annotation_map,
    box_iou,
    ciou,
    consensus_map,
    frame_box_iou,
    gt_map,
    polygon_map,
    segment_accuracy,
    success_auc,
    success_curve,
    success_rate,
    true_negative_rate,
)
from avloc.types import AvlocError

PRED_4X4 = np.array([
    [0.9, 0.8, 0.1, 0.0],
    [0.7, 0.6, 0.2, 0.0],
    [0.5, 0.3, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
])
GT_BOX = [[0, 0, 3, 2]]  # columns 0..2, rows 0..1: 6 pixels


def test_gt_map_union_enclosing_and_scaling():
    boxes = [[0, 0, 1, 1], [3, 3, 4, 4]]
    assert gt_map(boxes, (4, 4)).sum() == 2
    assert gt_map(boxes, (4, 4), "enclosing").sum() == 16
    assert gt_map(np.zeros((0, 4)), (4, 4)).sum() == 0
    # 256 px boxes onto a 4x4 grid: [0, 0, 128, 128] -> [0, 0, 2, 2]
    g = gt_map([[0, 0, 128, 128]], (4, 4), from_size=(256, 256))
    assert g.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert g.dtype == torch.float32
    with pytest.raises(AvlocError):
        gt_map([[0, 0, 1, 1]], (4, 4), "intersection")


def test_ciou_binary_golden():
    g = gt_map(GT_BOX, (4, 4))
    # A(0.5) = {0.9, 0.8, 0.7, 0.6}, all in G (0.5 is not > 0.5): 4 / (6 + 0)
    assert ciou(PRED_4X4, g) == pytest.approx(4 / 6)
    # A(0.45) adds the 0.5 at (2, 0), outside G: 4 / (6 + 1)
    assert ciou(PRED_4X4, g, threshold=0.45) == pytest.approx(4 / 7)
    # nothing above: 0 / 6
    assert ciou(np.zeros((4, 4)), g) == 0.0
    # whole map above: 6 / (6 + 10)
    assert ciou(np.ones((4, 4)), g) == pytest.approx(6 / 16)


def test_ciou_consensus_gt_golden():
    # annotator 1: rows/cols 0..2; annotator 2: rows/cols 1..3; overlap rows/cols 1..2
    g = consensus_map([[[0, 0, 3, 3]], [[1, 1, 4, 4]]], (5, 5))
    assert sorted(set(g.reshape(-1).tolist())) == [0.0, 0.5, 1.0]
    assert g.sum().item() == 4 * 1.0 + 10 * 0.5  # = 9
    pred = np.zeros((5, 5))
    pred[1:3, 1:3] = 1.0  # the four 1.0 pixels
    pred[4, 4] = 1.0  # outside G
    assert ciou(pred, g) == pytest.approx(4 / (9 + 1))
    pred = np.zeros((5, 5))
    pred[0:3, 0:3] = 1.0  # annotator 1's box: 4 * 1 + 5 * 0.5 = 6.5 of g, nothing outside G
    assert ciou(pred, g) == pytest.approx(6.5 / 9)
    # LVS-style: a pixel under one annotator only counts half, one under both counts fully
    one = consensus_map([[[0, 0, 1, 1]], [[0, 0, 1, 1]], [[0, 0, 1, 1]]], (2, 2))
    assert one.tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_ciou_empty_gt_is_nan_and_shapes_checked():
    assert math.isnan(ciou(PRED_4X4, np.zeros((4, 4))))
    with pytest.raises(AvlocError):
        ciou(PRED_4X4, np.zeros((5, 4)))


def test_box_iou_golden():
    a = [[0, 0, 2, 2]]
    b = [[1, 1, 3, 3], [5, 5, 6, 6], [0, 0, 2, 2]]
    # overlap 1 px, union 4 + 4 - 1 = 7; disjoint; identical
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 7, 0.0, 1.0])
    # +1 convention: areas 3x3 = 9, overlap 2x2 = 4 -> 4 / 14
    assert box_iou(a, b, plus_one=True)[0].tolist() == pytest.approx([4 / 14, 0.0, 1.0])
    assert box_iou(a, b).shape == (1, 3)
    assert box_iou([[1, 1, 1, 1]], [[1, 1, 1, 1]]).item() == 0.0  # zero union
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_frame_box_iou_matching_modes():
    pred = [[0, 0, 2, 2], [10, 10, 12, 12]]
    gt = [[0, 0, 2, 2], [10, 10, 12, 14]]
    # enclosing: [0, 0, 12, 12] (144) inside [0, 0, 12, 14] (168)
    assert frame_box_iou(pred, gt) == pytest.approx(144 / 168)
    # greedy: pairs (0, 0) IoU 1 and (1, 1) IoU 4 / 8; (1 + 0.5) / 2
    assert frame_box_iou(pred, gt, "greedy") == pytest.approx(0.75)
    # an extra prediction is a third, zero term: 1.5 / 3
    assert frame_box_iou(pred + [[20, 20, 22, 22]], gt, "greedy") == pytest.approx(0.5)
    # a missed gt box counts 0: 1 / 2
    assert frame_box_iou(pred[:1], gt, "greedy") == pytest.approx(0.5)
    # one prediction cannot match two identical gt boxes
    assert frame_box_iou([[0, 0, 2, 2]], [[0, 0, 2, 2], [0, 0, 2, 2]], "greedy") == pytest.approx(0.5)
    assert frame_box_iou(np.zeros((0, 4)), gt) == 0.0
    assert math.isnan(frame_box_iou(pred, np.zeros((0, 4))))
    assert frame_box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3]], plus_one=True) == pytest.approx(4 / 14)


def test_success_rates_and_auc_golden():
    cious = [0.0, 0.32, 0.62, 1.0]
    # thresholds k/20: 1 at 0; 3/4 for 0.05..0.30; 2/4 for 0.35..0.60; 1/4 for 0.65..1.0
    curve = success_curve(cious)
    assert curve.tolist() == [1.0] + [0.75] * 6 + [0.5] * 6 + [0.25] * 8
    # trapezoids: .04375 + 5 * .0375 + .03125 + 5 * .025 + .01875 + 7 * .0125
    assert success_auc(cious) == pytest.approx(0.49375)
    assert ap50(cious) == 0.5
    assert success_rate([0.5, 0.49], 0.5) == 0.5  # >=, not >
    assert success_auc([1.0, 1.0]) == pytest.approx(1.0)
    assert success_auc([0.0]) == pytest.approx(0.025)  # success 1 at threshold 0 still counts
    with pytest.raises(AvlocError):
        ap50([0.3, float("nan")])
    with pytest.raises(AvlocError):
        ap50([])


def test_true_negative_rate_rules():
    maps = np.zeros((2, 2, 2))
    maps[0] = [[0.9, 0.1], [0.1, 0.1]]  # one pixel of four above 0.5
    # pixel rule: (3/4 + 4/4) / 2
    assert true_negative_rate(maps, 0.5) == pytest.approx(0.875)
    # frame rule, tolerance 0: only the second frame
    assert true_negative_rate(maps, 0.5, rule="frame") == 0.5
    assert true_negative_rate(list(maps), 0.5, rule="frame", tolerance=0.25) == 1.0
    # strict: a pixel equal to the threshold is negative
    assert true_negative_rate(maps, 0.9) == 1.0
    with pytest.raises(AvlocError):
        true_negative_rate(maps, 0.5, rule="box")


def test_segment_accuracy_and_classification_meter():
    assert segment_accuracy([0, 1, 2, 28], [0, 1, 1, 28]) == 0.75
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert segment_accuracy(logits, [1, 1, 1]) == pytest.approx(2 / 3)
    meter = ClassificationMeter()
    assert meter.summary() == {"n_segments": 0, "accuracy": None}
    meter.update([0, 1, 2, 28], [0, 1, 1, 28])
    meter.update(logits, torch.tensor([1, 1, 1]))
    assert meter.summary() == {"n_segments": 7, "accuracy": pytest.approx(5 / 7)}
    with pytest.raises(AvlocError):
        segment_accuracy([0, 1], [0, 1, 2])


def test_localization_meter_fixed_threshold_golden():
    meter = LocalizationMeter()
    # single 1: cIoU 4/6; predicted box [0, 0, 2, 2] vs [0, 0, 3, 2]: IoU 4/6 >= 0.5
    meter.update(PRED_4X4, gt_boxes=GT_BOX, pred_boxes=[[0, 0, 2, 2]], scenario="single")
    # single 2: nothing above 0.5 -> cIoU 0; no predicted box -> IoU 0
    meter.update(np.zeros((4, 4)), gt_boxes=GT_BOX, pred_boxes=np.zeros((0, 4)), scenario="single")
    # off-screen: 1 of 16 pixels above -> pixel TN 15/16
    off = np.zeros((4, 4))
    off[3, 3] = 0.9
    meter.update(off, gt_boxes=[], scenario="off-screen")
    rows = meter.summary()
    json.dumps(rows, allow_nan=False)  # JSON-serialisable, no NaN
    assert list(rows) == ["all", "off-screen", "single"]
    # cIoUs [2/3, 0]: success 1 at 0, 1/2 for 0.05..0.65, 0 above -> .0375 + 12 * .025 + .0125
    assert rows["all"] == {
        "n_frames": 3, "n_gt": 2, "n_negative": 1, "n_boxes": 2, "threshold": 0.5,
        "ciou_at": pytest.approx(1 / 3), "ap50": 0.5, "auc": pytest.approx(0.35),
        "iou_at_0.5": 0.5, "tn_rate": pytest.approx(15 / 16), "pointing": 0.5,  # a flat map points nowhere
    }
    assert rows["single"]["tn_rate"] is None and rows["single"]["n_frames"] == 2
    assert rows["off-screen"]["ciou_at"] is None and rows["off-screen"]["auc"] is None
    assert rows["off-screen"]["tn_rate"] == pytest.approx(15 / 16)


def test_localization_meter_gt_map_and_from_size():
    meter = LocalizationMeter(gt_convention="enclosing")
    # boxes in a 40x40 frame -> the 4x4 map: [0, 0, 10, 10] and [20, 0, 30, 20] enclose [0, 0, 3, 2]
    meter.update(PRED_4X4, gt_boxes=[[0, 0, 10, 10], [20, 0, 30, 20]], from_size=(40, 40))
    g = consensus_map([[[0, 0, 3, 3]], [[1, 1, 4, 4]]], (5, 5))
    pred = np.zeros((5, 5))
    pred[1:3, 1:3] = 1.0
    pred[4, 4] = 1.0
    meter.update(pred, gt_map=g)
    assert meter.summary()["all"]["ciou_at"] == pytest.approx((4 / 6 + 0.4) / 2)
    with pytest.raises(AvlocError):
        meter.update(pred)
    with pytest.raises(AvlocError):
        meter.update(pred, gt_map=g, scenario="all")


def test_localization_meter_global_threshold_golden():
    meter = LocalizationMeter("global", top_percent=10.0)
    a = np.full((4, 4), 0.1)
    a[0, :3] = [0.9, 0.8, 0.3]
    b = np.full((4, 4), 0.1)
    b[3, 1:] = [0.35, 0.85, 0.95]
    meter.update(a, gt_boxes=[[0, 0, 2, 1]], scenario="single")  # g = the 0.9 and 0.8 pixels
    meter.update(b, gt_boxes=[], scenario="off-screen")
    # 32 pixels, k = ceil(3.2) = 4: the 4th largest is 0.8 (0.95, 0.9, 0.85, 0.8); on = >= 0.8
    assert meter.global_threshold() == global_threshold([a, b], 10.0) == 0.8
    rows = meter.summary()
    assert rows["all"]["threshold"] == 0.8
    assert rows["single"]["ciou_at"] == 1.0  # 0.9 and 0.8 on: 2 / (2 + 0)
    assert rows["off-screen"]["tn_rate"] == 14 / 16  # 0.95, 0.85 on
    json.dumps(rows, allow_nan=False)


def test_localization_meter_global_matches_a_float64_reference():
    rng = np.random.default_rng(3)
    preds = [rng.random((12, 16)) for _ in range(6)]
    boxes = [[[2, 1, 9, 7]], [[0, 0, 5, 5], [8, 4, 16, 12]], [], [[3, 3, 4, 4]], [], [[1, 2, 15, 11]]]
    meter = LocalizationMeter("global", top_percent=10.0, tn_rule="frame", tn_tolerance=0.05)
    for pred, box in zip(preds, boxes):
        meter.update(pred, gt_boxes=box)
    values = np.sort(np.concatenate([p.ravel() for p in preds]))[::-1]
    tau = values[int(np.ceil(0.1 * values.size)) - 1]  # the k-th largest, k = ceil(10% of 1152) = 116
    gts = [gt_map(box, (12, 16)).numpy() for box in boxes]
    cious = [g[p >= tau].sum() / (g.sum() + ((p >= tau) & (g == 0)).sum()) for p, g in zip(preds, gts) if g.sum()]
    negatives = [np.mean(p >= tau) <= 0.05 for p, g in zip(preds, gts) if g.sum() == 0]
    row = meter.summary()["all"]
    assert row["threshold"] == tau
    assert row["ciou_at"] == pytest.approx(np.mean(cious), abs=1e-12)
    assert row["auc"] == pytest.approx(np.trapezoid([np.mean(np.array(cious) >= 0.05 * k) for k in range(21)],
                                                    [0.05 * k for k in range(21)]), abs=1e-12)
    assert row["tn_rate"] == pytest.approx(np.mean(negatives))
    assert row["n_gt"] == 4 and row["n_negative"] == 2


def test_pointing_game_by_hand():
    from avloc.metrics import pointing_hit

    gt = np.zeros((4, 4))
    gt[1:3, 1:3] = 1
    hit = np.zeros((4, 4))
    hit[2, 1] = 0.9
    miss = np.zeros((4, 4))
    miss[0, 3] = 0.9
    assert pointing_hit(hit, gt) == 1.0 and pointing_hit(miss, gt) == 0.0
    assert math.isnan(pointing_hit(hit, np.zeros((4, 4))))
    assert pointing_hit(np.ones((4, 4)), gt) == 0.0
    meter = LocalizationMeter(0.5)
    meter.update(hit, gt_map=gt, scenario="single")
    meter.update(miss, gt_map=gt, scenario="single")
    meter.update(miss, gt_map=np.zeros((4, 4)), scenario="off-screen")
    rows = meter.summary()
    assert rows["single"]["pointing"] == 0.5 and rows["off-screen"]["pointing"] is None


def test_polygon_map_pixel_centres_and_scaling():
    square = polygon_map([[2, 2, 6, 2, 6, 6, 2, 6]], (8, 8))
    expected = torch.zeros(8, 8)
    expected[2:6, 2:6] = 1  # centres 2.5 .. 5.5 lie inside, 6.5 does not: the boxes' rule
    torch.testing.assert_close(square, expected)
    torch.testing.assert_close(square, gt_map([[2, 2, 6, 6]], (8, 8)))
    torch.testing.assert_close(polygon_map([[1, 1, 3, 1, 3, 3, 1, 3]], (8, 8), from_size=(4, 4)), expected)
    triangle = polygon_map([[0, 0, 8.5, 0, 0, 8.5]], (8, 8))  # centres with x + y < 8.5: i + j <= 7
    assert triangle.sum() == 36 and triangle[0, 7] == 1 and triangle[1, 7] == 0


def test_annotation_map_masks_consensus_and_conventions():
    boxes = [[0, 0, 4, 4], [2, 2, 6, 6]]
    consensus = annotation_map(boxes, (8, 8), "consensus")
    assert consensus[0, 0] == 0.5 and consensus[3, 3] == 1.0 and consensus[5, 5] == 0.5 and consensus[7, 7] == 0
    torch.testing.assert_close(annotation_map(boxes, (8, 8), "union"), gt_map(boxes, (8, 8), "union"))
    torch.testing.assert_close(annotation_map(boxes, (8, 8), "enclosing"), gt_map(boxes, (8, 8), "enclosing"))
    # The first object has a triangle, the second only its box: the map is their union.
    masked = annotation_map(boxes, (8, 8), masks=[[[0, 0, 4.5, 0, 0, 4.5]], []])  # i + j <= 3: 10 pixels
    assert masked[3, 0] == 1 and masked[3, 1] == 0 and masked[5, 5] == 1 and masked.sum() == 10 + 16
    with pytest.raises(AvlocError, match="1 masks for 2 boxes"):
        annotation_map(boxes, (8, 8), masks=[[]])
