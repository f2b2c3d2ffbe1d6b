"""Localisation and classification metrics: pure functions + accumulators.

Conventions (pixel grid, exclusive ``x2``/``y2``, pixel-centre rasterisation, strict
thresholds) are those of :mod:`avloc.map_geometry`. In short:

- cIoU (STM paper, eq. in section 4.2):
  ``cIoU(tau) = sum_{i in A(tau)} g_i / (sum_i g_i + |A(tau) - G|)`` with
  ``A(tau) = {i | alpha_i > tau}`` (strict) and ``G = {i | g_i > 0}``. Undefined (NaN)
  on a frame without ground truth; such frames are scored by TN% instead.
- "cIoU@0.5" in the STM tables = mean of the per-frame cIoU(0.5); "AP50" (the LVS/EZ-VSL
  "cIoU") = share of frames with cIoU >= 0.5; AUC = trapezoid area under the success rate
  (share of frames with cIoU >= k/20, k = 0..20).
- IoU@0.5 = share of frames whose frame box IoU is >= 0.5.
- Success thresholds (AP50, AUC, IoU@0.5) are non-strict (``>=``), as in LVS's code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import torch
from matplotlib.path import Path as MplPath

from avloc.map_geometry import ArrayLike, box_masks, check_boxes, enclosing_box, global_threshold, is_flat, scale_boxes
from avloc.types import AvlocError

# k / 20 computed as the LVS and EZ-VSL evaluators do (0.05 * k), so a cIoU of exactly 0.15 compares alike
DEFAULT_AUC_THRESHOLDS = np.array([0.05 * k for k in range(21)])


def _np(x: ArrayLike | Sequence, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise AvlocError(f"{name}: expected numbers, got {arr.dtype}") from None
    if not np.isfinite(arr).all():
        raise AvlocError(f"{name}: contains NaN or inf")
    return arr


def _map2d(x: ArrayLike, name: str) -> np.ndarray:
    arr = _np(x, name)
    if arr.ndim != 2:
        raise AvlocError(f"{name}: expected shape (H, W), got {tuple(arr.shape)}")
    return arr


def _scores(values: Iterable[float], name: str) -> np.ndarray:
    arr = np.asarray(list(values) if not isinstance(values, (np.ndarray, torch.Tensor)) else values, dtype=np.float64)
    arr = arr.reshape(-1)  # (...) -> (N,)
    if arr.size == 0:
        raise AvlocError(f"{name}: no frames")
    if np.isnan(arr).any():
        raise AvlocError(f"{name}: contains NaN (frames without ground truth?): drop them or use LocalizationMeter")
    return arr


# ---------------------------------------------------------------------------------------
# Ground-truth maps


def gt_map(
    boxes: ArrayLike | Sequence,
    size: Sequence[int],
    convention: Literal["union", "enclosing"] = "union",
    from_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Rasterise ground-truth boxes into a binary map.

    Args:
        boxes: ``(N, 4)`` xyxy; N = 0 gives an all-zero map (a frame without ground truth).
        size: ``(H, W)`` of the map (the prediction's grid).
        convention: ``"union"``: the union of the boxes (VGG-SS/LVS); ``"enclosing"``: the
            one box around all boxes (the STM authors' convention).
        from_size: ``(H0, W0)`` of the grid the boxes are given in (e.g. the original video
            frame); they are rescaled to ``size`` first (:func:`avloc.map_geometry.scale_boxes`).
            None: the boxes are already in ``size`` pixels.

    Returns:
        ``(H, W)`` float32 with values 0 and 1.
    """
    b = check_boxes(boxes)
    if from_size is not None:
        b = scale_boxes(b, from_size, size)
    if convention == "enclosing":
        b = enclosing_box(b)
    elif convention != "union":
        raise AvlocError(f"gt_map: unknown convention {convention!r}; expected 'union' or 'enclosing'")
    return box_masks(b, size).any(dim=0).to(torch.float32)  # (N, H, W) -> (H, W)


def consensus_map(
    box_sets: Sequence[ArrayLike | Sequence],
    size: Sequence[int],
    from_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Flickr-SoundNet consensus map from several annotators' boxes.

    ``min(1, sum_a union_a / 2)``, where ``union_a`` is annotator ``a``'s binary box map:
    a pixel marked by one annotator is 0.5, by two or more 1. (LVS's code adds every box
    separately; the two agree when each annotator draws one box, as in Flickr-SoundNet.)

    Args:
        box_sets: one ``(N_a, 4)`` xyxy array per annotator.
        size: ``(H, W)`` of the map.
        from_size: ``(H0, W0)`` the boxes are given in (e.g. 256x256 for Flickr), or None.

    Returns:
        ``(H, W)`` float32 with values 0, 0.5, 1.
    """
    total = torch.zeros(*size)
    for boxes in box_sets:
        total += gt_map(boxes, size, "union", from_size)
    return (total / 2).clamp(max=1.0)


def polygon_map(
    polygons: Sequence[Sequence[float]], size: Sequence[int], from_size: Sequence[int] | None = None
) -> torch.Tensor:
    """Rasterise polygons (flat ``(x1, y1, x2, y2, ...)`` lists, e.g. COCO) into their union.

    A pixel is inside when its centre ``(i + 0.5, j + 0.5)`` is, the rule the boxes follow.
    ``from_size``: ``(H0, W0)`` of the grid the polygons are given in (they are rescaled).

    Returns:
        ``(H, W)`` float32 with values 0 and 1.
    """
    height, width = int(size[0]), int(size[1])
    sy, sx = (1.0, 1.0) if from_size is None else (height / from_size[0], width / from_size[1])
    ys, xs = np.mgrid[0:height, 0:width] + 0.5  # (2, H, W) pixel centres
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (H*W, 2) x, y
    inside = np.zeros(height * width, bool)
    for polygon in polygons:
        points = np.asarray(polygon, np.float64).reshape(-1, 2) * (sx, sy)  # (2P,) -> (P, 2) x, y
        inside |= MplPath(points).contains_points(centres)
    return torch.from_numpy(inside.reshape(height, width).astype(np.float32))  # (H*W,) -> (H, W)


def annotation_map(
    boxes: ArrayLike | Sequence,
    size: Sequence[int],
    convention: Literal["union", "enclosing", "consensus"] = "union",
    from_size: Sequence[int] | None = None,
    masks: Sequence[Sequence[Sequence[float]]] = (),
) -> torch.Tensor:
    """The ground-truth map of one annotated frame under ``convention``.

    With ``masks`` (one list of polygons per box, AVATAR), every object is its polygons, or
    its box where it has none, and the map is their union whatever the convention.
    ``"consensus"`` is Flickr-SoundNet's map as LVS's evaluation builds it: every box added
    separately, divided by 2 and clipped at 1.
    """
    if masks:
        objects = check_boxes(boxes)
        if len(masks) != len(objects):
            raise AvlocError(f"annotation_map: {len(masks)} masks for {len(objects)} boxes")
        total = torch.zeros(int(size[0]), int(size[1]))
        for box, polygons in zip(objects, masks):
            piece = polygon_map(polygons, size, from_size) if polygons else gt_map(box[None], size, "union", from_size)
            total = torch.maximum(total, piece)
        return total
    if convention == "consensus":
        return consensus_map([box[None] for box in check_boxes(boxes)], size, from_size)
    return gt_map(boxes, size, convention, from_size)


# ---------------------------------------------------------------------------------------
# Pixel-level metrics


def ciou(pred_map: ArrayLike, gt: ArrayLike, threshold: float = 0.5) -> float:
    """Consensus IoU of one frame, exactly as in the STM paper (section 4.2).

    ``sum_{i in A} g_i / (sum_i g_i + |A - G|)`` with ``A = {i | pred_i > threshold}``
    (strict) and ``G = {i | g_i > 0}``; ``g`` may be non-binary (consensus 0.5 values).

    Args:
        pred_map: ``(H, W)`` localisation map (normalised, or raw with a global threshold).
        gt: ``(H, W)`` ground-truth map, values in [0, 1].
        threshold: tau.

    Returns:
        cIoU in [0, 1], or NaN when the ground-truth map is empty (``sum g = 0``): the
        frame has no sounding object on screen and is not a cIoU frame, whatever is
        predicted (score it with :func:`true_negative_rate`; :class:`LocalizationMeter`
        does this).
    """
    alpha, g = _map2d(pred_map, "pred_map"), _map2d(gt, "gt")
    if alpha.shape != g.shape:
        raise AvlocError(f"ciou: pred_map {alpha.shape} and gt {g.shape} differ in shape")
    g_sum = g.sum()
    if g_sum <= 0:
        return math.nan
    above = alpha > threshold
    return float(g[above].sum() / (g_sum + np.count_nonzero(above & (g <= 0))))


def true_negative_rate(
    maps_without_gt: ArrayLike | Sequence[ArrayLike],
    threshold: float,
    rule: Literal["pixel", "frame"] = "pixel",
    tolerance: float = 0.0,
) -> float:
    """TN rate on frames without a sounding object on screen (AVATAR's Off-screen TN%).

    AVATAR names a "pixel-level True Negative percentage" with the global top-10%
    threshold but publishes no formula. Here:

    - ``rule="pixel"`` (default): each frame's TN share is the share of its pixels at or
      below the threshold (not ``> threshold``); the rate is the mean over frames (equal
      to the pooled pixel share when all maps have one size). This reads "pixel-level"
      literally and matches AVATAR's magnitudes: the global top-10% threshold leaves 10%
      of all labelled pixels above it, and the reported Off-screen TN% lie at 91-97%.
    - ``rule="frame"``: a frame is a true negative when the share of its pixels above the
      threshold is ``<= tolerance`` (default 0: no pixel above); the rate is the share of
      such frames.

    Args:
        maps_without_gt: ``(N, H, W)`` maps, or a sequence of ``(H, W)`` maps.
        threshold: the (global) threshold, strict.
        rule: ``"pixel"`` or ``"frame"``, see above.
        tolerance: for ``rule="frame"``, the share of pixels allowed above the threshold.

    Returns:
        TN rate in [0, 1] (multiply by 100 for TN%).
    """
    if isinstance(maps_without_gt, (torch.Tensor, np.ndarray)):
        arr = _np(maps_without_gt, "maps_without_gt")
        maps = [arr] if arr.ndim == 2 else list(arr.reshape(-1, *arr.shape[-2:]))  # (..., H, W) -> (N, H, W)
    else:
        maps = [_map2d(m, "maps_without_gt") for m in maps_without_gt]
    if not maps:
        raise AvlocError("true_negative_rate: no frames")
    above = np.array([np.count_nonzero(m > threshold) / m.size for m in maps])
    return float(_tn_from_above(above, rule, tolerance).mean())


def _tn_from_above(above_share: np.ndarray, rule: str, tolerance: float) -> np.ndarray:
    """Per-frame TN value from the per-frame share of pixels above the threshold."""
    if rule == "pixel":
        return 1.0 - above_share
    if rule == "frame":
        return (above_share <= tolerance).astype(np.float64)
    raise AvlocError(f"unknown TN rule {rule!r}; expected 'pixel' or 'frame'")


# ---------------------------------------------------------------------------------------
# Box-level metrics


def pointing_hit(pred_map: ArrayLike, gt: ArrayLike) -> float:
    """Pointing game (Zhang et al., ECCV 2016): 1.0 if the map's maximum lies on the ground truth.

    The maximum is the first arg-max in row-major order; the hit is ``gt > 0`` there. A constant
    map points nowhere: a flat map (:func:`avloc.map_geometry.is_flat`) scores 0.0. NaN when the
    ground truth is empty.
    """
    alpha, g = _map2d(pred_map, "pred_map"), _map2d(gt, "gt")
    if g.shape != alpha.shape:
        raise AvlocError(f"gt {g.shape} and pred_map {alpha.shape} differ in shape")
    if not (g > 0).any():
        return math.nan
    if bool(is_flat(alpha)):
        return 0.0
    return float(g.reshape(-1)[int(np.argmax(alpha))] > 0)  # (H, W) -> (H*W,)


def box_iou(a: ArrayLike | Sequence, b: ArrayLike | Sequence, plus_one: bool = False) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes.

    Default: continuous areas, ``(x2 - x1) * (y2 - y1)`` (torchvision's convention; with
    avloc's exclusive ``x2``/``y2`` this is the pixel count). ``plus_one=True``: the
    inclusive convention of the STM authors' code, ``(x2 - x1 + 1) * (y2 - y1 + 1)`` for
    boxes whose ``x2``/``y2`` are the last pixel. A pair with zero union has IoU 0.

    Args:
        a: ``(N, 4)`` xyxy.
        b: ``(M, 4)`` xyxy.

    Returns:
        ``(N, M)`` float64.
    """
    a64 = check_boxes(a, "a").to(torch.float64)
    b64 = check_boxes(b, "b").to(torch.float64)
    one = 1.0 if plus_one else 0.0
    area_a = (a64[:, 2] - a64[:, 0] + one) * (a64[:, 3] - a64[:, 1] + one)  # (N,)
    area_b = (b64[:, 2] - b64[:, 0] + one) * (b64[:, 3] - b64[:, 1] + one)  # (M,)
    low = torch.maximum(a64[:, None, :2], b64[None, :, :2])  # (N, M, 2)
    high = torch.minimum(a64[:, None, 2:], b64[None, :, 2:])  # (N, M, 2)
    wh = (high - low + one).clamp(min=0)  # (N, M, 2)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter  # (N, M)
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def frame_box_iou(
    pred_boxes: ArrayLike | Sequence,
    gt_boxes: ArrayLike | Sequence,
    matching: Literal["enclosing", "greedy"] = "enclosing",
    plus_one: bool = False,
) -> float:
    """Box IoU of one frame with possibly several predicted and ground-truth boxes.

    - ``"enclosing"`` (the STM authors'): IoU of the box enclosing all predictions with
      the box enclosing all ground-truth boxes.
    - ``"greedy"``: one-to-one matching. Repeatedly take the unmatched (pred, gt) pair with
      the highest IoU (ties: lower gt index, then lower pred index) while it is > 0. The
      frame IoU is ``sum of matched IoUs / max(P, G)``: the mean over gt boxes where every
      unmatched gt box counts 0, and every prediction beyond the number of gt boxes adds
      another 0 term (so extra boxes are penalised).

    Returns:
        IoU in [0, 1]; 0 when there are gt boxes but no predictions; NaN when there are no
        gt boxes (not a box frame).
    """
    pred, gt = check_boxes(pred_boxes, "pred_boxes"), check_boxes(gt_boxes, "gt_boxes")
    if gt.shape[0] == 0:
        return math.nan
    if pred.shape[0] == 0:
        return 0.0
    if matching == "enclosing":
        return float(box_iou(enclosing_box(pred), enclosing_box(gt), plus_one)[0, 0])
    if matching != "greedy":
        raise AvlocError(f"frame_box_iou: unknown matching {matching!r}; expected 'enclosing' or 'greedy'")
    iou = box_iou(pred, gt, plus_one).numpy()  # (P, G)
    total = 0.0
    # argmax over the gt-major flattening gives the lower gt, then lower pred index on ties
    work = iou.T.copy()  # (P, G) -> (G, P)
    while work.size and work.max() > 0:
        g, p = np.unravel_index(np.argmax(work), work.shape)
        total += work[g, p]
        work[g, :] = -1.0
        work[:, p] = -1.0
    return float(total / max(pred.shape[0], gt.shape[0]))


# ---------------------------------------------------------------------------------------
# Success rates


def success_rate(values: Iterable[float], threshold: float) -> float:
    """Share of frames whose score (cIoU or IoU) is ``>= threshold``."""
    arr = _scores(values, "values")
    return float(np.mean(arr >= threshold))


def ap50(cious: Iterable[float]) -> float:
    """Share of frames with cIoU >= 0.5 (the "cIoU" / "AP" column of LVS, EZ-VSL, SLAVC)."""
    return success_rate(cious, 0.5)


def success_curve(cious: Iterable[float], thresholds: Sequence[float] = DEFAULT_AUC_THRESHOLDS) -> np.ndarray:
    """Success rate (share of frames with cIoU >= t) at each threshold: ``(K,)``."""
    arr = _scores(cious, "cious")
    t = np.asarray(thresholds, dtype=np.float64)
    return (arr[None, :] >= t[:, None]).mean(axis=1)  # (K, N) -> (K,)


def success_auc(cious: Iterable[float], thresholds: Sequence[float] = DEFAULT_AUC_THRESHOLDS) -> float:
    """Trapezoid area under the success curve (LVS/EZ-VSL: thresholds k/20, k = 0..20)."""
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) <= 0):
        raise AvlocError("success_auc: thresholds must be an increasing 1-D sequence of 2 or more")
    return float(np.trapezoid(success_curve(cious, t), t))


def segment_accuracy(pred: ArrayLike | Sequence, target: ArrayLike | Sequence) -> float:
    """Accuracy over all segments, background included (AVE's protocol).

    Args:
        pred: ``(N,)`` predicted class indices, or ``(N, C)`` scores (argmax is taken);
            any leading shape works if it matches ``target``.
        target: ``(N,)`` class indices.
    """
    correct, total = _count_correct(pred, target)
    if total == 0:
        raise AvlocError("segment_accuracy: no segments")
    return correct / total


def _count_correct(pred: ArrayLike | Sequence, target: ArrayLike | Sequence) -> tuple[int, int]:
    p = pred if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred))
    t = target if isinstance(target, torch.Tensor) else torch.as_tensor(np.asarray(target))
    if p.ndim == t.ndim + 1:
        p = p.argmax(dim=-1)  # (..., C) -> (...)
    if p.shape != t.shape:
        raise AvlocError(f"segment_accuracy: pred {tuple(p.shape)} does not match target {tuple(t.shape)}")
    return int((p.long() == t.long()).sum()), int(t.numel())


# ---------------------------------------------------------------------------------------
# Accumulators


def _gt_array(
    boxes: ArrayLike | Sequence, size: Sequence[int], convention: str, from_size: Sequence[int] | None
) -> np.ndarray:
    return gt_map(boxes, size, convention, from_size).numpy().astype(np.float64)


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


class ScoreTable:
    """Per-frame scores in arrival order, summarised into one row per scenario.

    Each frame brings its scenario (None: only the ``"all"`` row), its cIoU (NaN: the frame
    has no sounding object on screen), its pointing hit (NaN likewise), its box IoU (NaN:
    not a box frame) and, for a frame without ground truth, the share of its pixels that
    are *on* (NaN otherwise; scored by :func:`true_negative_rate`'s rules).
    """

    def __init__(self, auc_thresholds: Sequence[float] = DEFAULT_AUC_THRESHOLDS, iou_threshold: float = 0.5,
                 tn_rule: Literal["pixel", "frame"] = "pixel", tn_tolerance: float = 0.0) -> None:
        _tn_from_above(np.zeros(1), tn_rule, tn_tolerance)  # validates the rule
        self.auc_thresholds = np.asarray(auc_thresholds, dtype=np.float64)
        self.iou_threshold = float(iou_threshold)
        self.tn_rule = tn_rule
        self.tn_tolerance = float(tn_tolerance)
        self.scenarios: list[str | None] = []
        self.columns: dict[str, list[float]] = {"ciou": [], "pointing": [], "box_iou": [], "on_share": []}

    def __len__(self) -> int:
        return len(self.scenarios)

    def add(self, scenario: str | None, *, ciou: float = math.nan, pointing: float = math.nan,
            box_iou: float = math.nan, on_share: float = math.nan) -> None:
        if scenario == "all":
            raise AvlocError("scenario 'all' is reserved for the summary over every frame")
        self.scenarios.append(scenario)
        for name, value in (("ciou", ciou), ("pointing", pointing), ("box_iou", box_iou), ("on_share", on_share)):
            self.columns[name].append(float(value))

    def rows(self, threshold: float | str) -> dict[str, dict]:
        """Rows ``{"all": {...}, "<scenario>": {...}}``, JSON-serialisable.

        Each row: ``n_frames``, ``n_gt`` (frames with ground truth), ``n_negative``
        (frames without), ``n_boxes`` (frames with a box IoU), ``threshold``, ``ciou_at``
        (mean cIoU at the threshold: the STM tables' "cIoU@0.5"), ``ap50``, ``auc``,
        ``iou_at_0.5`` (share of box frames with IoU >= ``iou_threshold``), ``tn_rate``,
        ``pointing`` (share of frames with ground truth whose map maximum lies on it).
        A metric without frames to average is None.
        """
        if not len(self):
            raise AvlocError("no frames scored yet")
        cious, above, boxes, pointing = (np.asarray(self.columns[name], dtype=np.float64)
                                         for name in ("ciou", "on_share", "box_iou", "pointing"))
        scenarios = np.asarray([s if s is not None else "" for s in self.scenarios], dtype=object)
        names = ["all"] + sorted({s for s in self.scenarios if s is not None})
        rows = {}
        for name in names:
            pick = np.ones(len(self), bool) if name == "all" else scenarios == name
            c = cious[pick & ~np.isnan(cious)]
            a = above[pick & ~np.isnan(above)]
            b = boxes[pick & ~np.isnan(boxes)]
            p = pointing[pick & ~np.isnan(pointing)]
            rows[name] = {
                "n_frames": int(pick.sum()),
                "n_gt": int(c.size),
                "n_negative": int(a.size),
                "n_boxes": int(b.size),
                "threshold": threshold,
                "ciou_at": _mean_or_none(c),
                "ap50": float(np.mean(c >= 0.5)) if c.size else None,
                "auc": success_auc(c, self.auc_thresholds) if c.size else None,
                "iou_at_0.5": float(np.mean(b >= self.iou_threshold)) if b.size else None,
                "tn_rate": _mean_or_none(_tn_from_above(a, self.tn_rule, self.tn_tolerance)),
                "pointing": _mean_or_none(p),
            }
        return rows


class LocalizationMeter:
    """Accumulates per-frame localisation results; :meth:`summary` gives the table rows.

    Two threshold rules:

    - ``threshold=<float>`` (default 0.5: the STM paper on per-frame min-max maps): a pixel
      is on when its value is ``> threshold``; every frame is scored as it arrives.
    - ``threshold="global"`` (AVATAR): ``tau`` is the global top-``top_percent`` % value
      over all pixels of all frames fed to the meter (labelled frames with and without
      ground truth), and a pixel is on when its value is ``>= tau`` (tie rule of
      :func:`avloc.map_geometry.global_threshold`). Exact, so the meter keeps every map (8 bytes a
      pixel); :mod:`avloc.protocols` streams instead for whole splits.

    A frame whose ground truth is empty (no boxes, or an all-zero map) counts toward
    ``tn_rate`` (see :func:`true_negative_rate`), every other frame toward ``ciou_at``,
    ``ap50`` and ``auc``; ``iou_at_0.5`` counts frames given both ``pred_boxes`` and
    non-empty ``gt_boxes``. Every row uses the same threshold (the global one is computed
    over all frames, not per scenario). For AVATAR's dagger-TN (top 5% over Off-screen
    videos only), feed those videos to a separate meter with ``top_percent=5``.

    Args:
        threshold: a float (strict ``>``) or ``"global"``.
        top_percent: for ``"global"``, the share of pixels on, in (0, 100).
        gt_convention: how ``gt_boxes`` become a map (:func:`gt_map`).
        matching: how several boxes compare (:func:`frame_box_iou`).
        iou_threshold: success threshold of the box IoU (``>=``).
        plus_one: box IoU convention (:func:`box_iou`).
        tn_rule, tn_tolerance: see :func:`true_negative_rate`.
        auc_thresholds: cIoU thresholds of the success curve (default k/20, k = 0..20).
    """

    def __init__(
        self,
        threshold: float | Literal["global"] = 0.5,
        *,
        top_percent: float = 10.0,
        gt_convention: Literal["union", "enclosing"] = "union",
        matching: Literal["enclosing", "greedy"] = "enclosing",
        iou_threshold: float = 0.5,
        plus_one: bool = False,
        tn_rule: Literal["pixel", "frame"] = "pixel",
        tn_tolerance: float = 0.0,
        auc_thresholds: Sequence[float] = DEFAULT_AUC_THRESHOLDS,
    ) -> None:
        self.is_global = threshold == "global"
        if not self.is_global and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise AvlocError(f"threshold must be a number or 'global', got {threshold!r}")
        if not 0.0 < top_percent < 100.0:
            raise AvlocError(f"top_percent must be in (0, 100), got {top_percent}")
        if gt_convention not in ("union", "enclosing") or matching not in ("enclosing", "greedy"):
            raise AvlocError(f"unknown gt_convention {gt_convention!r} or matching {matching!r}")
        self.threshold = None if self.is_global else float(threshold)
        self.top_percent = float(top_percent)
        self.gt_convention = gt_convention
        self.matching = matching
        self.plus_one = plus_one
        self.table = ScoreTable(auc_thresholds, iou_threshold, tn_rule, tn_tolerance)
        self._maps: list[tuple[np.ndarray, np.ndarray]] = []  # global: (map, gt) per frame
        self._pending: list[tuple[str | None, float]] = []  # global: (scenario, box IoU) per frame

    def __len__(self) -> int:
        return len(self._maps) if self.is_global else len(self.table)

    def update(
        self,
        pred_map: ArrayLike,
        *,
        gt_boxes: ArrayLike | Sequence | None = None,
        gt_map: ArrayLike | None = None,
        pred_boxes: ArrayLike | Sequence | None = None,
        scenario: str | None = None,
        from_size: Sequence[int] | None = None,
    ) -> None:
        """Add one frame.

        Args:
            pred_map: ``(H, W)`` localisation map, already normalised (fixed threshold) or raw
                (global threshold).
            gt_boxes: ``(N, 4)`` xyxy ground truth (N = 0: no sounding object on screen),
                in ``from_size`` pixels when given, else in the map's pixels.
            gt_map: ``(H, W)`` ground-truth map instead of boxes (e.g. a consensus map);
                used for cIoU when both are given.
            pred_boxes: ``(P, 4)`` predicted boxes in the map's pixels, for IoU@0.5.
            scenario: e.g. ``"single"``, ``"off-screen"``; None counts only toward ``"all"``.
            from_size: ``(H0, W0)`` of ``gt_boxes``' grid.
        """
        alpha = _map2d(pred_map, "pred_map")
        size = alpha.shape
        if gt_map is not None:
            g = _map2d(gt_map, "gt_map")
            if g.shape != size:
                raise AvlocError(f"gt_map {g.shape} and pred_map {size} differ in shape")
        elif gt_boxes is not None:
            g = _gt_array(gt_boxes, size, self.gt_convention, from_size)
        else:
            raise AvlocError("update: give gt_boxes or gt_map (empty boxes for a frame without ground truth)")

        box_score = math.nan
        if pred_boxes is not None and gt_boxes is not None:
            gt_b = check_boxes(gt_boxes, "gt_boxes")
            if from_size is not None:
                gt_b = scale_boxes(gt_b, from_size, size)
            box_score = frame_box_iou(pred_boxes, gt_b, self.matching, self.plus_one)
        if self.is_global:
            self._maps.append((alpha, g))
            self._pending.append((scenario, box_score))
            return
        self.table.add(scenario, box_iou=box_score, **frame_scores(alpha > self.threshold, alpha, g))

    def global_threshold(self) -> float:
        """Tau for the frames seen so far (the fixed threshold when not global)."""
        if not self.is_global:
            return self.threshold
        if not self._maps:
            raise AvlocError("LocalizationMeter: no frames yet")
        return global_threshold([alpha for alpha, _ in self._maps], self.top_percent)

    def summary(self) -> dict[str, dict]:
        """Rows ``{"all": {...}, "<scenario>": {...}}``: see :meth:`ScoreTable.rows`."""
        if not self.is_global:
            return self.table.rows(self.threshold)
        tau = self.global_threshold()
        table = ScoreTable(self.table.auc_thresholds, self.table.iou_threshold, self.table.tn_rule,
                           self.table.tn_tolerance)
        for (alpha, g), (scenario, box_score) in zip(self._maps, self._pending):
            table.add(scenario, box_iou=box_score, **frame_scores(alpha >= tau, alpha, g))
        return table.rows(tau)


def frame_scores(on: np.ndarray, pred_map: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """cIoU, pointing and (without ground truth) the share of pixels on, of one frame.

    Args:
        on: ``(H, W)`` bool, the pixels the threshold keeps.
        pred_map: ``(H, W)`` the map (for the pointing game's maximum).
        gt: ``(H, W)`` ground-truth map; all zero on a frame without a sounding object.

    Returns:
        ``{"ciou", "pointing", "on_share"}``: cIoU and pointing NaN on a frame without
        ground truth, ``on_share`` NaN on a frame with it.
    """
    g_sum = float(gt.sum())
    if g_sum <= 0:
        return {"ciou": math.nan, "pointing": math.nan, "on_share": np.count_nonzero(on) / on.size}
    value = float(gt[on].sum() / (g_sum + np.count_nonzero(on & (gt <= 0))))
    return {"ciou": value, "pointing": pointing_hit(pred_map, gt), "on_share": math.nan}


class ClassificationMeter:
    """Accumulates segment accuracy (AVE: all segments, background included)."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, pred: ArrayLike | Sequence, target: ArrayLike | Sequence) -> None:
        """Add segments: ``pred`` ``(N,)`` indices or ``(N, C)`` scores, ``target`` ``(N,)``."""
        correct, total = _count_correct(pred, target)
        self.correct += correct
        self.total += total

    def summary(self) -> dict[str, float | int | None]:
        """``{"n_segments", "accuracy"}`` (accuracy None before any segment)."""
        return {"n_segments": self.total, "accuracy": self.correct / self.total if self.total else None}
