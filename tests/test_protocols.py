"""Evaluation protocols: every example of issues 12 and 23 with its expected value.

Expected values are the published evaluators' own outputs quoted in the issues (LVS's and
EZ-VSL's ``test.py`` run unmodified), or worked out by hand / by a float64 reference written
here from the rule as stated, never from avloc's output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from avloc.data.manifest import FrameAnnotation
from avloc.map_geometry import boxes_from_map, global_threshold, normalize, upsample
from avloc.protocols import (
    PROTOCOLS,
    AnnotatedMap,
    Protocol,
    evaluator_ciou,
    evaluator_ground_truth,
    ezvsl_on,
    lvs_on,
    score_maps,
)
from avloc.types import AvlocError


def _frame(heatmap, boxes=(), source=None, size=(224, 224), row="single", **annotation) -> AnnotatedMap:
    fmt, raw = source if source else (None, ())
    ann = FrameAnnotation(t=0.0, boxes=tuple(tuple(map(float, b)) for b in boxes), source_format=fmt,
                          source_boxes=tuple(tuple(b) for b in raw), **annotation)
    return AnnotatedMap(torch.as_tensor(np.asarray(heatmap), dtype=torch.float32), ann, size, row)


def _both(heatmap, source) -> tuple[float, float]:
    frame = _frame(heatmap, [(0, 0, 1, 1)], source)
    gt = evaluator_ground_truth(frame, "auto")
    return evaluator_ciou(lvs_on(frame.heatmap), gt), evaluator_ciou(ezvsl_on(frame.heatmap), gt)


def _columns(count: int) -> np.ndarray:
    m = np.zeros((224, 224))
    m[:, :count] = 1
    return m


# --- issue 23, 1: each rule of the evaluators, one frame each ---------------------------------


@pytest.mark.parametrize(("heatmap", "source", "lvs", "ezvsl"), [
    # 1. ground truth: int(224 * 0.45) = 100 columns (pixel centres would give 101)
    (_columns(112), ("vggss", [[0, 0, 0.45, 1]]), 0.892857, 0.892857),
    # Flickr: int(224 * 115 / 256) = 100, one annotator -> 0.5 consensus
    (_columns(112), ("flickr", [[0, 0, 115, 256]]), 0.806452, 0.806452),
    # 2. upsampling: cv2 INTER_LINEAR vs align_corners=True
    ([[1, 0], [0, 0]], ("vggss", [[0.25, 0.25, 0.75, 0.75]]), 0.365454, 0.293230),
    ([[3, 0], [0, 1]], ("vggss", [[0, 0.5, 0.5, 1]]), 0.083449, None),
    # 4. threshold: pixels already at 1 stay (LVS); a plateau holding the median is kept (EZ-VSL)
    ([[1, 0, 2]], ("vggss", [[0, 0, 0.25, 1]]), 0.0, None),
    # 5. saturated and constant maps: the evaluators keep the plateau
    ([[1, 1, 1], [1, 1, 1], [1, 1, 0]], ("vggss", [[0, 0, 0.5, 0.5]]), 1 / 3, 1 / 3),
    ([[0.5]], ("vggss", [[0, 0, 0.5, 0.5]]), 0.25, 0.25),
    ([[-0.5]], ("vggss", [[0, 0, 0.5, 0.5]]), 0.0, 0.25),
])
def test_evaluator_examples(heatmap, source, lvs, ezvsl):
    got_lvs, got_ezvsl = _both(heatmap, source)
    assert got_lvs == pytest.approx(lvs, abs=5e-7)
    if ezvsl is not None:
        assert got_ezvsl == pytest.approx(ezvsl, abs=5e-7)


def test_lvs_float32_normalisation_ties_values_near_the_minimum():
    # 3. rows 90-133 hold 1e-8 / 2e-8: within float32 round-off of 0 after LVS's 1 - normalize(-map)
    m = np.zeros((224, 224))
    m[:90] = 1
    m[90:134, 0::2] = 1e-8
    m[90:134, 1::2] = 2e-8
    lvs, ezvsl = _both(m, ("vggss", [[0, 0.5, 1, 1]]))
    assert lvs == 0.0 and ezvsl == pytest.approx(0.051643, abs=5e-7)


def test_ezvsl_keeps_the_plateau_that_holds_the_median():
    m = np.zeros((224, 224))
    m[:67] = 1
    m[67:157] = 0.5
    # top half = rows 0-111. EZ-VSL keeps rows 0-156 (>= median 0.5): 112 / 157. LVS keeps rows 0-66: 67 / 112.
    lvs, ezvsl = _both(m, ("vggss", [[0, 0, 1, 0.5]]))
    assert lvs == pytest.approx(67 / 112) and ezvsl == pytest.approx(112 / 157)


def test_issue12_ties_top_half_map_and_two_by_two_frame():
    # A map whose top half is 1: LVS keeps the pixels already at 1 (issue 23 ran its test.py: "pixels
    # already at 1 stay", which corrects issue 12's 0.0), EZ-VSL keeps >= the median 1: both the top half,
    # so the top-left quarter scores (1/4) / (1/4 + 1/4) = 0.5.
    top = np.zeros((224, 224))
    top[:112] = 1
    assert _both(top, ("vggss", [[0, 0, 0.5, 0.5]])) == (0.5, 0.5)
    # The 2x2 frame [[.1, .9], [.4, .6]] as 112-px quadrants (224 -> 224 resizes are identities), gt = the
    # .9 quadrant. Normalised: 0, 1, .375, .625; the 25088th sorted value is .625. LVS keeps > .625: the .9
    # quadrant alone -> 1.0. EZ-VSL keeps >= .625: the .9 and .6 quadrants -> 0.5.
    quadrants = np.kron(np.array([[0.1, 0.9], [0.4, 0.6]]), np.ones((112, 112)))
    assert _both(quadrants, ("vggss", [[0.5, 0, 1, 0.5]])) == (1.0, 0.5)


def test_vggss_ground_truth_truncates_clips_and_unions():
    frame = _frame(np.zeros((2, 2)), [(0, 0, 1, 1)], ("vggss", [[0.1, 0.2, 0.3001, 0.5], [-2.88e16, 0.4, 0.05, 2.0]]))
    gt = evaluator_ground_truth(frame, "auto")
    expected = np.zeros((224, 224))
    expected[int(224 * 0.2):int(224 * 0.5), int(224 * 0.1):int(224 * 0.3001)] = 1  # rows 44:112, cols 22:67
    expected[int(224 * 0.4):224, 0:int(224 * 0.05)] = 1  # negative -> 0, > 1 stops at 224
    np.testing.assert_array_equal(gt, expected)


def test_empty_ground_truth_scores_zero_and_stays_in_the_averages():
    degenerate = _frame(np.random.default_rng(0).random((7, 7)), [], ("vggss", [[0.5, 0.5, 0.501, 0.9]]))
    good = _frame(_columns(112), [(0, 0, 112, 224)])
    for name in ("lvs", "ezvsl"):
        rows = score_maps([degenerate, good], PROTOCOLS[name]).rows
        assert rows["all"]["n_gt"] == 2 and rows["all"]["ciou_at"] == pytest.approx(0.5)
        assert rows["all"]["ap50"] == 0.5 and rows["all"]["n_negative"] == 0


def test_flattering_rules_are_counted_in_a_warning():
    frames = [_frame([[0.5]], [(0, 0, 112, 112)]), _frame(np.ones((3, 3)), [(0, 0, 112, 112)]),
              _frame(_columns(100), [(0, 0, 112, 112)])]
    warnings = score_maps(frames, PROTOCOLS["lvs"]).warnings
    assert "2 of 3 maps are constant: the lvs protocol keeps every pixel of them, as LVS's evaluator does" in warnings
    assert score_maps(frames, PROTOCOLS["stm"]).warnings == []


# --- issue 12: constant maps, the global threshold, the Otsu floor --------------------------


def test_constant_map_detects_nothing_under_stm():
    # a 4x6 map of 0.3304 upsampled in float32 leaves ~6e-8 of round-off; min-max used to stretch it
    constant = torch.full((4, 6), 0.3304)
    frame = _frame(constant, [(0, 0, 224, 160)])
    row = score_maps([frame], Protocol(size=224)).rows["all"]
    assert row["ciou_at"] == 0.0 and row["pointing"] == 0.0 and row["iou_at_0.5"] == 0.0
    level = normalize(upsample(constant, (224, 224)))
    assert level.abs().max() == 0 and len(boxes_from_map(level)) == 0
    assert upsample(constant, (224, 224)).unique().tolist() == [pytest.approx(0.3304)]


def _tn_reference(maps: list[np.ndarray], negatives: list[bool], top_percent: float = 10.0) -> float:
    """AVATAR TN by the rule: tau = the k-th largest of all pixels, k = ceil(p n / 100), off = < tau."""
    maps = [m.astype(np.float32).astype(np.float64) for m in maps]  # the frames hold float32 maps
    values = np.sort(np.concatenate([m.ravel() for m in maps]))[::-1]
    tau = values[math.ceil(top_percent * values.size / 100) - 1]
    return float(np.mean([np.mean(m < tau) for m, negative in zip(maps, negatives) if negative]))


def _tn_of(maps: list[np.ndarray], negatives: list[bool]) -> float:
    frames = [_frame(m, [] if negative else [(0, 0, 112, 112)], size=(224, 224)) for m, negative in zip(maps, negatives)]
    protocol = Protocol(size=maps[0].shape[0])  # same-size upsampling: the maps as given
    return score_maps(frames, protocol).rows["all"]["tn_rate"]


def test_tn_two_negative_maps():
    rng = np.random.default_rng(1)
    maps = [-rng.random((4, 4)) - 0.1 for _ in range(2)]  # every value negative
    # 32 pixels, k = 4: the 4 largest are on; TN = mean over both frames of their pixels below tau
    assert _tn_of(maps, [True, True]) == pytest.approx(_tn_reference(maps, [True, True])) == pytest.approx(28 / 32)


def test_tn_values_close_together_are_not_binned():
    values = np.linspace(0.5, 0.5015, 32)
    maps = [values[:16].reshape(4, 4), values[16:].reshape(4, 4)]
    # the 4 largest values all lie in the second map: TN of the negative second map = 12 / 16
    assert _tn_of(maps, [False, True]) == pytest.approx(12 / 16)


def test_tn_cosine_maps_and_an_outlier_peak():
    rng = np.random.default_rng(2)
    cosine = [np.clip(rng.normal(-0.6, 0.3, (8, 8)), -1, 1) for _ in range(6)]
    negatives = [True, False, True, True, False, True]
    assert _tn_of(cosine, negatives) == pytest.approx(_tn_reference(cosine, negatives))
    peaked = [rng.random((8, 8)) for _ in range(4)]
    peaked[0][3, 3] *= 200
    flags = [False, True, True, True]
    assert _tn_of(peaked, flags) == pytest.approx(_tn_reference(peaked, flags))


def test_flat_maps_do_not_score_a_perfect_tn():
    centre = np.zeros((8, 8))
    centre[2:6, 2:6] = 1  # baseline:centre: a quarter of the pixels tie at the top
    assert _tn_of([centre, centre], [False, True]) == 0.75
    assert _tn_of([np.full((8, 8), 0.2)] * 2, [True, True]) == 0.0


def test_global_threshold_is_exact_on_raw_values():
    maps = [np.array([[-3.0, -2.0], [-1.0, -0.5]]), np.array([[0.5000, 0.5001], [0.50015, 0.5015]])]
    assert global_threshold(maps, 25.0) == 0.50015  # k = 2: 0.5015, 0.50015
    assert global_threshold([np.full((3, 3), -0.25)], 10.0) == -0.25


def test_avatar_protocol_scores_cious_at_the_global_threshold():
    a = np.full((4, 4), 0.1)
    a[0, :3] = [0.9, 0.8, 0.3]
    b = np.full((4, 4), 0.1)
    b[3, 1:] = [0.35, 0.85, 0.95]
    frames = [_frame(a, [(0, 0, 2, 1)], size=(4, 4)), _frame(b, [], size=(4, 4), row="off-screen")]
    rows = score_maps(frames, Protocol("avatar", 4)).rows
    assert rows["all"]["threshold"] == float(np.float32(0.8))  # k = ceil(3.2) = 4; the maps are float32
    assert rows["single"]["ciou_at"] == 1.0 and rows["off-screen"]["tn_rate"] == 14 / 16


def test_otsu_floor_is_applied_and_can_be_switched_off():
    m = np.zeros((16, 16))
    m[2:6, 2:6] = 1.0
    m[10:14, 10:14] = 0.45  # a second, weaker blob: below the floor
    truth = [(2, 2, 6, 6)]
    with_floor = score_maps([_frame(m, truth, size=(16, 16))], Protocol(size=16)).rows["all"]
    without = score_maps([_frame(m, truth, size=(16, 16))], Protocol(size=16, otsu_floor=None)).rows["all"]
    assert with_floor["iou_at_0.5"] == 1.0 and without["iou_at_0.5"] == 0.0
    assert "values < 0.5 zeroed first" in Protocol().describe() and "no floor" in Protocol(otsu_floor=None).describe()


def test_protocols_refuse_sizes_their_evaluator_does_not_have():
    with pytest.raises(AvlocError, match="lvs protocol is defined at 224 px"):
        Protocol("lvs", 256)
    with pytest.raises(AvlocError, match="Otsu floor"):
        Protocol(otsu_floor=1.5)


def test_unscored_frames_are_counted_per_row_with_the_reason():
    frame = _frame(_columns(112), [(0, 0, 112, 224)])
    scored = score_maps([frame], PROTOCOLS["stm"], unscored=[("single", "after the end"), ("mixed", "after the end")])
    assert scored.rows["single"]["n_annotated"] == 2 and scored.rows["single"]["n_frames"] == 1
    assert scored.rows["mixed"]["n_annotated"] == 1 and scored.rows["mixed"]["n_frames"] == 0
    assert scored.warnings == ["2 of 3 annotated frames not scored: after the end"]


# --- issue 23, 2: ground truth of real VGG-SS entries, by hand ---------------------------------

VGGSS = Path(__file__).resolve().parents[2] / "shared" / "data" / "vggss" / "vggss.json"


@pytest.mark.skipif(not VGGSS.is_file(), reason="../shared/data/vggss not present")
def test_real_vggss_entries_ground_truth_under_each_protocol():
    entries = {entry["file"]: entry["bbox"] for entry in json.loads(VGGSS.read_text())}

    def protocols_gt(name):
        frame = _frame(np.zeros((2, 2)), [], ("vggss", entries[name]))
        return evaluator_ground_truth(frame, "auto")

    # zpWuikVorYg_000032 [0.403125, 0.253125, 0.6, 0.75]: int(224 x): 90, 56, 134, 168 -> rows 56:168, cols 90:134
    gt = protocols_gt("zpWuikVorYg_000032")
    assert gt.sum() == (168 - 56) * (134 - 90) and gt[56, 90] == 1 and gt[55, 90] == 0 and gt[167, 133] == 1
    # M1P1xla8rg0_000000 [0.26875, 1.0, 0.753125, 1.0]: y1 = y2 = 224, no row: empty under lvs and ezvsl
    assert protocols_gt("M1P1xla8rg0_000000").sum() == 0
    # MKC9LvRivTM_000030 x2 = -2.88e16: LVS max(x, 0) and EZ-VSL clip both give 0 -> cols 88:0, empty
    assert protocols_gt("MKC9LvRivTM_000030").sum() == 0
    # Db6Hjt0x28k_000056: the first box's y2 = -2.88e16 gives nothing; the second, [0.05, 0.35625, 0.753125,
    # 0.98125] -> cols 11:168, rows 79:219, is the whole ground truth
    gt = protocols_gt("Db6Hjt0x28k_000056")
    assert gt.sum() == (219 - 79) * (168 - 11) and gt[79, 11] == 1 and gt[78, 11] == 0
    # both empty entries score 0 and stay in the averages; stm has no pixel box for them and does not score them
    empty = _frame(np.random.default_rng(0).random((7, 7)), [], ("vggss", entries["M1P1xla8rg0_000000"]))
    for name in ("lvs", "ezvsl"):
        assert score_maps([empty], PROTOCOLS[name]).rows["all"]["ciou_at"] == 0.0
    stm = score_maps([empty], PROTOCOLS["stm"])
    assert stm.rows["all"]["n_annotated"] == 1 and stm.rows["all"]["n_frames"] == 0
    assert stm.warnings == ["1 of 1 annotated frames not scored: its boxes cover no pixel of the map"]
