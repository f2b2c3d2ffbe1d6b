"""Overlay drawing, pixel by pixel, on small synthetic frames and maps."""

import cv2
import numpy as np
import pytest
import torch

from avloc.map_geometry import upsample
from avloc.localize_video import _annotations, _nearest_truth
from avloc.render import (BOX_COLOUR, OPACITY, PEAK_COLOUR, TRUTH_COLOUR, _colour_table, annotated_frame,
                          draw_boxes, draw_peak, heat_layer, heat_overlay, label_box, write_loss_curves)

GREY = 100


def _frame(height: int = 96, width: int = 128) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def _coloured(image: np.ndarray, colour) -> np.ndarray:
    """``(H, W)`` bool: pixels exactly of ``colour``."""
    return (image == np.asarray(colour, np.uint8)).all(axis=-1)


def _peaked_map() -> torch.Tensor:
    heatmap = torch.zeros(8, 8)
    heatmap[2, 5] = 1.0  # one hot cell: high around columns 80-95, rows 24-35 of a 96x128 frame
    return heatmap


def test_colour_appears_where_the_map_is_high_and_not_where_it_is_low():
    frame = _frame()
    heatmap = _peaked_map()
    layer = heat_layer(heatmap, (96, 128))
    image = heat_overlay(frame, layer)
    level = upsample(heatmap, (96, 128)).numpy()  # (8, 8) -> (96, 128)
    low = level <= 0
    assert low.sum() > 0.7 * low.size and (image[low] == GREY).all()  # untouched where the map is at its minimum
    row, column = np.unravel_index(level.argmax(), level.shape)
    top = _colour_table("inferno")[255]  # pale yellow
    expected = np.rint(GREY * (1 - OPACITY) + top * OPACITY)
    np.testing.assert_allclose(image[row, column], expected, atol=1)
    red, green, blue = image[row, column].astype(int)
    assert red > GREY + 80 and green > GREY + 80 and blue < red - 40  # yellow, not grey
    # the frame still shows where the map is high: not the pure colour map
    assert (np.abs(image[row, column].astype(float) - top) > 20).any()
    # stronger where the map is higher: the change from the frame grows with the level
    change = np.abs(image.astype(float) - GREY).sum(axis=-1)
    mid = (level > 0.2) & (level < 0.4)
    assert change[mid].mean() < change[row, column]


def test_peak_marker_sits_on_the_argmax():
    heatmap = _peaked_map()
    layer = heat_layer(heatmap, (96, 128))
    level = upsample(heatmap, (96, 128)).numpy()
    row, column = np.unravel_index(level.argmax(), level.shape)
    assert layer.peak == (column, row)
    image = draw_peak(np.zeros((96, 128, 3), np.uint8), layer.peak)
    white = _coloured(image, PEAK_COLOUR)
    assert white[row, column] and white[row, column - 3] and white[row, column + 3]
    assert white[row - 3, column] and white[row + 3, column]
    rows, columns = np.nonzero(white)
    assert rows.mean() == pytest.approx(row, abs=0.5) and columns.mean() == pytest.approx(column, abs=0.5)
    assert not white[row + 3, column + 3]  # a cross, not a blob
    shown = annotated_frame(_frame(), layer, np.zeros((0, 4)), [], "c")
    assert _coloured(shown, PEAK_COLOUR)[row, column]


def test_boxes_are_thin_outlines_at_their_pixels():
    image = draw_boxes(np.zeros((100, 100, 3), np.uint8), np.array([[10, 20, 40, 50]]))
    green = _coloured(image, BOX_COLOUR)
    assert green[20, 10:40].all() and green[49, 10:40].all()  # x2, y2 exclusive: last pixels 39 and 49
    assert green[20:50, 10].all() and green[20:50, 39].all()
    assert green.sum() == 2 * (30 + 30) - 4  # the outline only, one pixel wide
    assert not image[21:49, 11:39].any()  # the inside is not covered


def test_boxes_are_clipped_to_the_frame():
    image = draw_boxes(np.zeros((60, 80, 3), np.uint8), np.array([[-10, -5, 30, 20], [70, 50, 200, 90],
                                                                   [100, 10, 120, 20]]))
    green = _coloured(image, BOX_COLOUR)
    assert green[0, 0:30].all() and green[19, 0:30].all() and green[0:20, 29].all()
    assert green[50, 70:80].all() and green[50:60, 70].all()
    assert green[:, 80 - 1].sum() == 10  # the second box's right edge is clipped to the last column
    rows, columns = np.nonzero(green)
    assert green.sum() == len(set(zip(rows, columns)))


def test_score_labels_sit_outside_the_box():
    image = np.zeros((100, 100, 3), np.uint8)
    label_box(image, (10, 40, 50, 80), "0.50")
    band = _coloured(image, BOX_COLOUR)
    rows, columns = np.nonzero(band)
    assert rows.max() < 40 and columns.min() == 10  # above the box, starting at its left edge
    image = np.zeros((100, 100, 3), np.uint8)
    label_box(image, (70, 0, 100, 50), "0.50")  # no room above, at the right edge: below, shifted left
    rows, columns = np.nonzero(_coloured(image, BOX_COLOUR))
    assert rows.min() >= 50 and columns.max() <= 99
    shown = annotated_frame(np.zeros((100, 100, 3), np.uint8), heat_layer(torch.zeros(4, 4), (100, 100)),
                            np.array([[10, 50, 60, 90]]), [0.5], "x")
    assert not shown[51:89, 11:59].any()  # neither the label nor anything else covers the object


def test_a_score_label_inside_the_top_edge_moves_below_the_caption():
    """A box over the whole frame has its label inside its top edge, where the caption is: it goes below it."""
    shown = annotated_frame(np.zeros((200, 200, 3), np.uint8), heat_layer(torch.zeros(4, 4), (200, 200)),
                            np.array([[0, 0, 200, 200]]), [0.9], "1.25 s  penguin 55%")
    caption = np.nonzero(shown[:, :, 0] > 128)  # the caption's white text (the label's is black on green)
    label = np.nonzero(_coloured(shown, BOX_COLOUR)[3:-3, 3:-3])  # the label's band, inside the outline
    assert caption[0].size and label[0].size
    assert label[0].min() + 3 > caption[0].max()  # every label pixel lies below every caption pixel


def _round_off() -> torch.Tensor:
    heatmap = torch.full((8, 8), 1 / 16)  # a uniform softmax with float32 round-off in one cell
    heatmap[3, 4] += 2e-8
    return heatmap


@pytest.mark.parametrize("heatmap", [torch.zeros(8, 8), _round_off()])
def test_a_flat_map_draws_no_colour_and_no_peak(heatmap):
    layer = heat_layer(heatmap, (96, 128))
    assert layer.colours is None and layer.peak is None
    frame = (np.arange(96 * 128 * 3) % 251).astype(np.uint8).reshape(96, 128, 3)
    assert (heat_overlay(frame, layer) == frame).all()
    shown = annotated_frame(frame, layer, np.zeros((0, 4)), [], "flat")
    assert (shown[30:] == frame[30:]).all()  # only the caption band at the top changes


def test_ground_truth_is_dashed_in_its_own_colour_with_a_legend():
    layer = heat_layer(torch.zeros(4, 4), (100, 100))
    plain = annotated_frame(_frame(100, 100), layer, np.array([[10, 30, 60, 70]]), [0.4], "x")
    assert not _coloured(plain, TRUTH_COLOUR).any()
    truth = np.array([[20, 30, 80, 70]])
    shown = annotated_frame(_frame(100, 100), layer, np.zeros((0, 4)), [], "x", ground_truth=truth)
    blue = _coloured(shown, TRUTH_COLOUR)
    top = blue[30, 20:80]
    assert blue[30, 20] and 0.3 < top.mean() < 0.8  # dashes and gaps along the edge, from the corner
    assert blue[31:69, 79].any() and not blue[35:65, 25:75].any()
    assert blue[85:].any()  # the legend's dashed swatch and its "ground truth" text at the bottom


def test_each_frame_shows_the_nearest_annotation_within_half_a_step():
    truth = _annotations([(0.625, [[5, 5, 9, 9]]), (0.125, np.array([[1, 2, 3, 4]])), (0.375, [])])
    assert list(truth[0]) == [0.125, 0.375, 0.625]
    assert _nearest_truth(truth, 0.0, 0.125).tolist() == [[1, 2, 3, 4]]  # 0.125 away: still within
    assert _nearest_truth(truth, 0.3, 0.125).shape == (0, 4)  # nearest is the empty annotation
    assert _nearest_truth(truth, 0.7, 0.125).tolist() == [[5, 5, 9, 9]]
    assert _nearest_truth(truth, 0.8, 0.125).shape == (0, 4)  # 0.175 away from every annotation
    assert _nearest_truth(truth, -1.0, 0.125).shape == (0, 4)


def test_loss_curves_are_a_png_of_both_losses(tmp_path):
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.5 / e} for e in (1, 2, 3)]
    write_loss_curves(tmp_path / "loss.png", history, "run: loss")
    image = cv2.imread(str(tmp_path / "loss.png"))
    assert image is not None and image.shape == (400, 600, 3)  # 6 x 4 inches at 100 dpi
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]  # no temporary file left
    blue_line = (np.abs(image.astype(int) - (180, 119, 31)).sum(-1) < 30).sum()  # matplotlib's C0, BGR
    orange_line = (np.abs(image.astype(int) - (14, 127, 255)).sum(-1) < 30).sum()  # C1
    assert blue_line > 100 and orange_line > 100
