"""Heat-map geometry (avloc.map_geometry): golden values computed by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avloc.map_geometry import (
    BOX_GRID,
    box_masks,
    boxes_from_map,
    detector_proposals,
    enclosing_box,
    frame_boxes,
    global_threshold,
    ground_proposals,
    normalize,
    otsu_threshold,
    score_proposals,
    scale_boxes,
    upsample,
)
from avloc.metrics import gt_map
from avloc.types import AvlocError


def two_blobs() -> np.ndarray:
    """8x10 map: blob 1 rows 1-2, cols 1-3 (0.9); blob 2 rows 4-6, cols 6-8 (0.7); rest 0.1."""
    m = np.full((8, 10), 0.1)
    m[1:3, 1:4] = 0.9
    m[4:7, 6:9] = 0.7
    return m


def test_upsample_shape_and_align_corners_false():
    x = torch.rand(2, 3, 4, 4)
    assert upsample(x, (8, 8)).shape == (2, 3, 8, 8)
    # [0, 1] -> 4 columns; source x = (dst + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 (clamped)
    out = upsample(torch.tensor([[0.0, 1.0]]), (1, 4))
    assert out.tolist() == [[0.0, 0.25, 0.75, 1.0]]
    # a constant map comes back exactly constant (interpolation would leave float32 round-off)
    assert torch.equal(upsample(torch.full((4, 6), 0.3304), (224, 224)), torch.full((224, 224), 0.3304))


def test_normalize_minmax_constant_and_none():
    x = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]]])
    out = normalize(x)
    assert out[0].tolist() == [[0.0, 0.25], [0.5, 1.0]]  # (x - 1) / 8
    assert out[1].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # constant: zeros, no NaN
    near = torch.tensor([[0.3304, 0.3304], [0.3304, 0.3304 + 6e-8]])  # round-off, 2e-7 of the magnitude
    assert normalize(near).abs().max() == 0  # flat: detects nothing
    assert normalize(torch.tensor([[0.0, 1e-3], [0.0, 0.0]]))[0, 1] == 1  # a real, small signal stays
    assert torch.equal(normalize(x, "none"), x)
    with pytest.raises(AvlocError):
        normalize(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(AvlocError):
        normalize(x, "zscore")


def test_otsu_bimodal_lands_between_modes():
    rng = np.random.default_rng(0)
    low = rng.uniform(0.15, 0.25, size=60)
    high = rng.uniform(0.75, 0.85, size=40)
    m = np.concatenate([low, high]).reshape(10, 10).astype(np.float32)  # float32 accepted
    t = otsu_threshold(m)
    assert 0.25 <= t < 0.75
    assert ((m > t) == (m > 0.5)).all()
    with pytest.raises(AvlocError):
        otsu_threshold(m * 3)  # not normalised


def test_global_threshold_top_percent():
    # 100 values 0.00..0.99: top 10% = 0.90..0.99, threshold = the 10th largest = 0.90, on = >= 0.90
    values = np.arange(100) / 100
    maps = [values[:40].reshape(4, 10), values[40:].reshape(6, 10)]  # different sizes
    t = global_threshold(maps, 10.0)
    assert t == 0.9
    assert sum(int((m >= t).sum()) for m in maps) == 10
    # ties at the top are all on: a flat map is wholly at its threshold
    assert global_threshold(torch.ones(2, 5), 10.0) == 1.0
    assert global_threshold(np.arange(11.0), 10.0) == 9.0  # k = ceil(1.1) = 2
    with pytest.raises(AvlocError):
        global_threshold(maps, 100.0)


def test_boxes_from_map_two_blobs_both_modes():
    m = two_blobs()
    per = boxes_from_map(m, mode="per-contour")  # Otsu between 0.1 and 0.7
    assert per.tolist() == [[1, 1, 4, 3], [6, 4, 9, 7]]  # x2, y2 exclusive
    assert boxes_from_map(m).tolist() == [[1, 1, 9, 7]]  # enclosing (default)
    assert boxes_from_map(m, threshold=0.8, mode="per-contour").tolist() == [[1, 1, 4, 3]]
    # STM's helper floor: values below 0.75 dropped before Otsu -> blob 2 is gone
    assert boxes_from_map(m, min_value=0.75).tolist() == [[1, 1, 4, 3]]
    # strict threshold: a value equal to the threshold is off
    assert boxes_from_map(m, threshold=0.9).shape == (0, 4)
    assert boxes_from_map(np.zeros((5, 5))).shape == (0, 4)


def test_boxes_from_map_contour_details():
    m = np.zeros((5, 5))
    m[0, 0] = m[1, 1] = 1.0  # diagonal neighbours: one 8-connected contour
    assert boxes_from_map(m, threshold=0.5, mode="per-contour").tolist() == [[0, 0, 2, 2]]
    ring = np.zeros((7, 7))
    ring[1:6, 1:6] = 1.0
    ring[2:5, 2:5] = 0.0
    ring[3, 3] = 1.0  # a blob inside the hole: external contours only
    assert boxes_from_map(ring, threshold=0.5, mode="per-contour").tolist() == [[1, 1, 6, 6]]
    with pytest.raises(AvlocError):
        boxes_from_map(np.zeros((2, 3, 4)))


def test_rasterise_boxes_round_trip():
    boxes = torch.tensor([[1.0, 1.0, 4.0, 3.0], [6.0, 4.0, 9.0, 7.0]])
    g = gt_map(boxes, (8, 10))
    assert torch.equal(g, torch.from_numpy((two_blobs() > 0.5).astype(np.float32)))
    assert torch.equal(boxes_from_map(g, threshold=0.5, mode="per-contour"), boxes)
    assert torch.equal(boxes_from_map(g), enclosing_box(boxes))
    # scaling there and back is exact on edges
    big = scale_boxes(boxes, (8, 10), (16, 20))
    assert big.tolist() == [[2, 2, 8, 6], [12, 8, 18, 14]]
    assert torch.equal(scale_boxes(big, (16, 20), (8, 10)), boxes)


def test_scale_boxes_to_video_pixels():
    out = scale_boxes([[0, 0, 256, 256], [64, 128, 128, 192]], (256, 256), (360, 640))
    assert out.tolist() == [[0, 0, 640, 360], [160, 180, 320, 270]]
    with pytest.raises(AvlocError):
        scale_boxes([[0, 0, 1]], (4, 4), (8, 8))


def test_box_masks_pixel_centre_rule():
    masks = box_masks([[1, 0, 3, 1], [0.4, 0, 1.6, 1], [0.6, 0, 1.4, 1], [-5, 0, 99, 1]], (1, 4))
    assert masks[:, 0].int().tolist() == [
        [0, 1, 1, 0],  # columns 1..2
        [1, 1, 0, 0],  # centres 0.5 and 1.5 lie in [0.4, 1.6)
        [0, 0, 0, 0],  # no centre in [0.6, 1.4)
        [1, 1, 1, 1],  # clipped to the map
    ]


def proposal_case() -> tuple[np.ndarray, torch.Tensor]:
    """6x6 map: 1.0 0.8 / 0.8 0.6 in rows 1-2 cols 1-2, 0.25 at (3, 1), 0.5 at (4, 4)."""
    m = np.zeros((6, 6))
    m[1:3, 1:3] = [[1.0, 0.8], [0.8, 0.6]]
    m[3, 1] = 0.25
    m[4, 4] = 0.5
    boxes = torch.tensor([
        [1, 1, 3, 3],  # A: 3.2 (area 4)
        [0, 0, 6, 6],  # B: 3.95, the whole frame (area 36)
        [1, 1, 2, 2],  # C: 1.0 (area 1)
        [4, 4, 5, 5],  # D: 0.5 (area 1)
        [1, 1, 3, 4],  # E: 3.45 (area 6); IoU(A, E) = 4 / 6
    ], dtype=torch.float32)
    return m, boxes


def test_score_proposals_sum_and_mean():
    m, boxes = proposal_case()
    assert score_proposals(m, boxes).tolist() == pytest.approx([3.2, 3.95, 1.0, 0.5, 3.45])
    assert score_proposals(m, boxes, normalize_by_area=True).tolist() == pytest.approx(
        [0.8, 3.95 / 36, 1.0, 0.5, 3.45 / 6]
    )
    # same as summing the rasterised masks
    masks = box_masks(boxes, m.shape).double()
    assert score_proposals(m, boxes).tolist() == pytest.approx((masks * torch.from_numpy(m)).sum((1, 2)).tolist())


def test_ground_proposals_nms():
    m, boxes = proposal_case()
    # by sum: B 3.95, E 3.45, A 3.2 (suppressed by E, IoU 0.67), C 1.0, D 0.5
    kept, scores = ground_proposals(m, boxes)
    assert kept.tolist() == boxes[[1, 4, 2, 3]].tolist()
    assert scores.tolist() == pytest.approx([3.95, 3.45, 1.0, 0.5])
    # the sum favours the whole frame
    assert ground_proposals(m, boxes, top_k=1)[0].tolist() == [[0, 0, 6, 6]]
    # by mean: C 1.0, A 0.8, E 0.575 (suppressed by A), D 0.5, B 0.11
    kept, scores = ground_proposals(m, boxes, normalize_by_area=True)
    assert kept.tolist() == boxes[[2, 0, 3, 1]].tolist()
    assert scores.tolist() == pytest.approx([1.0, 0.8, 0.5, 3.95 / 36])


def test_detector_proposals_structure():
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=64, max_size=64,
        rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
    )
    image = torch.rand(3, 48, 64)  # resized to 48x64 inside; boxes come back in these pixels
    boxes = detector_proposals(model, image)
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and 0 < boxes.shape[0] <= 20
    assert boxes.dtype == torch.float32
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 64).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 48).all()
    detections = detector_proposals(model, image, source="detections")
    assert detections.ndim == 2 and detections.shape[1] == 4
    kept, scores = ground_proposals(torch.rand(48, 64), boxes, top_k=3)
    assert kept.shape[0] == scores.shape[0] <= 3
    with pytest.raises(AvlocError):
        detector_proposals(model, torch.rand(48, 64))


def _blob_maps(count: int, side: int, seed: int) -> torch.Tensor:
    """``(count, side, side)`` maps of one to three Gaussian blobs over a little noise."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:side, 0:side]
    maps = np.zeros((count, side, side))
    for m in maps:
        for _ in range(rng.integers(1, 4)):
            cy, cx, spread = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(0.5, 3)
            m += rng.uniform(0.2, 1) * np.exp(-((rows - cy) ** 2 + (columns - cx) ** 2) / (2 * spread**2))
        m += rng.uniform(0, 0.05, (side, side))
    return torch.from_numpy(maps)


@pytest.mark.parametrize("side", [8, 16])
def test_frame_boxes_stay_within_a_feature_cell_of_the_stm_protocol(side):
    """Boxes found on the small grid and scaled to a 640 x 360 frame against the eval protocol's
    (256 x 256 grid, float64, Otsu after the 0.5 floor, scaled the same way): as many boxes, each
    edge within one feature cell (640 / side by 360 / side pixels), most within one grid cell."""
    from avloc.protocols import Protocol, predicted_boxes

    size = (360, 640)
    maps = _blob_maps(150, side, seed=side)
    boxes, scores = frame_boxes(maps, size)
    protocol = Protocol(name="stm")
    cell = np.array([size[1] / side, size[0] / side] * 2)
    grid_cell = np.array([size[1] / BOX_GRID, size[0] / BOX_GRID] * 2)
    moved = []
    for heatmap, ours, shares in zip(maps, boxes, scores):
        level = normalize(upsample(heatmap, (256, 256), torch.float64)).numpy()
        theirs = scale_boxes(predicted_boxes(level, protocol), (256, 256), size).numpy()
        assert ours.shape == theirs.shape == (1, 4) and shares.shape == (1,)
        assert (np.abs(ours - theirs) <= cell).all()
        moved.append((np.abs(ours - theirs) / grid_cell).max())
        assert 0 < shares[0] <= 1
    assert np.median(moved) <= 1.0


def test_frame_boxes_of_a_flat_map_are_none_and_per_contour_splits():
    maps = torch.zeros(2, 8, 10)
    maps[0] = 0.25  # flat: detects nothing
    maps[1] = torch.from_numpy(two_blobs())
    boxes, scores = frame_boxes(maps, (80, 100), mode="per-contour", min_value=None)
    assert boxes[0].shape == (0, 4) and scores[0].shape == (0,)
    assert boxes[1].shape == (2, 4)  # the two blobs, top one first
    assert boxes[1][0][1] < boxes[1][1][1] and (boxes[1][:, 2] <= 100).all() and (boxes[1][:, 3] <= 80).all()
    with pytest.raises(AvlocError, match=r"\(T, h, w\)"):
        frame_boxes(torch.zeros(8, 8), (80, 100))
