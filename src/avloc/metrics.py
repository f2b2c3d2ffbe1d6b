"""Localisation and classification metrics: pure functions + accumulators.

Conventions (pixel grid, exclusive ``x2``/``y2``, pixel-centre rasterisation, strict
thresholds) are those of :mod:`avloc.localize`. In short:

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

from avloc.localize import ArrayLike, box_masks, check_boxes, enclosing_box, scale_boxes
from avloc.types import AvlocError

DEFAULT_AUC_THRESHOLDS = np.linspace(0.0, 1.0, 21)


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
            frame); they are rescaled to ``size`` first (:func:`avloc.localize.scale_boxes`).
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
    map points nowhere (0.0). NaN when the ground truth is empty.
    """
    alpha, g = _map2d(pred_map, "pred_map"), _map2d(gt, "gt")
    if g.shape != alpha.shape:
        raise AvlocError(f"gt {g.shape} and pred_map {alpha.shape} differ in shape")
    if not (g > 0).any():
        return math.nan
    if alpha.max() == alpha.min():
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


class LocalizationMeter:
    """Accumulates per-frame localisation results; :meth:`summary` gives the table rows.

    Three threshold protocols:

    - ``threshold=<float>`` (default 0.5: STM / LVS on per-frame min-max maps): every
      frame is scored exactly as it arrives; the meter keeps a few floats per frame.
    - ``threshold="median"`` (LVS / EZ-VSL evaluation scripts): every frame is thresholded
      at its own median value (the top half of its pixels), scored as it arrives.
    - ``threshold="global"`` (AVATAR): tau is the global top-``top_percent`` % threshold
      over all pixels of all frames fed to the meter (labelled frames with and without
      ground truth), known only at :meth:`summary`. Keeping every map is too big (a
      224x224 float map is 200 kB), so each frame keeps histograms of its values over
      ``bins`` equal right-closed bins of ``value_range``: the ground-truth mass and the
      count of ground-truth-free pixels per bin (about ``8 * (bins + 1)`` bytes a frame).
      cIoU and TN at any bin edge are then exact, and tau is the smallest bin edge with at
      most ``floor(top_percent * n / 100)`` of the ``n`` pixels strictly above it: the
      exact :func:`avloc.localize.global_threshold` rounded up to the grid (at most one
      bin width, 0.001 by default). Maps must lie in ``value_range``.

    A frame whose ground truth is empty (no boxes, or an all-zero map) counts toward
    ``tn_rate`` (see :func:`true_negative_rate`), every other frame toward ``ciou_at``,
    ``ap50`` and ``auc``; ``iou_at_0.5`` counts frames given both ``pred_boxes`` and
    non-empty ``gt_boxes``. Every row uses the same threshold (the global one is computed
    over all frames, not per scenario). For AVATAR's dagger-TN (top 5% over Off-screen
    videos only), feed those videos to a separate meter with ``top_percent=5``.

    Args:
        threshold: a float (strict ``>``), ``"median"`` (per frame) or ``"global"``.
        top_percent: for ``"global"``, the share of pixels above tau, in (0, 100).
        bins: for ``"global"``, histogram bins over ``value_range``.
        value_range: for ``"global"``, ``(low, high)`` bounding all map values.
        gt_convention: how ``gt_boxes`` become a map (:func:`gt_map`).
        matching: how several boxes compare (:func:`frame_box_iou`).
        iou_threshold: success threshold of the box IoU (``>=``).
        plus_one: box IoU convention (:func:`box_iou`).
        tn_rule, tn_tolerance: see :func:`true_negative_rate`.
        auc_thresholds: cIoU thresholds of the success curve (default k/20, k = 0..20).
    """

    def __init__(
        self,
        threshold: float | Literal["median", "global"] = 0.5,
        *,
        top_percent: float = 10.0,
        bins: int = 1000,
        value_range: tuple[float, float] = (0.0, 1.0),
        gt_convention: Literal["union", "enclosing"] = "union",
        matching: Literal["enclosing", "greedy"] = "enclosing",
        iou_threshold: float = 0.5,
        plus_one: bool = False,
        tn_rule: Literal["pixel", "frame"] = "pixel",
        tn_tolerance: float = 0.0,
        auc_thresholds: Sequence[float] = DEFAULT_AUC_THRESHOLDS,
    ) -> None:
        self.is_global, self.is_median = threshold == "global", threshold == "median"
        if not (self.is_global or self.is_median) and not isinstance(threshold, (int, float)):
            raise AvlocError(f"threshold must be a number, 'median' or 'global', got {threshold!r}")
        if not 0.0 < top_percent < 100.0:
            raise AvlocError(f"top_percent must be in (0, 100), got {top_percent}")
        if bins < 1 or not value_range[0] < value_range[1]:
            raise AvlocError(f"need bins >= 1 and value_range low < high, got {bins}, {value_range}")
        _tn_from_above(np.zeros(1), tn_rule, tn_tolerance)  # validates the rule
        if gt_convention not in ("union", "enclosing") or matching not in ("enclosing", "greedy"):
            raise AvlocError(f"unknown gt_convention {gt_convention!r} or matching {matching!r}")
        self.threshold = None if self.is_global or self.is_median else float(threshold)
        self.top_percent = float(top_percent)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.edges = np.linspace(*self.value_range, bins + 1)
        self.gt_convention = gt_convention
        self.matching = matching
        self.iou_threshold = float(iou_threshold)
        self.plus_one = plus_one
        self.tn_rule = tn_rule
        self.tn_tolerance = float(tn_tolerance)
        self.auc_thresholds = np.asarray(auc_thresholds, dtype=np.float64)
        self._scenarios: list[str | None] = []
        self._box_iou: list[float] = []
        self._pointing: list[float] = []  # NaN on frames without gt
        self._ciou: list[float] = []  # fixed threshold: NaN on frames without gt
        self._above: list[float] = []  # fixed threshold: share above tau, NaN on gt frames
        self._hists: list[tuple[np.ndarray | None, np.ndarray]] = []  # global: (gt mass, gt-free count)
        self._counts = np.zeros(bins + 1, dtype=np.int64)  # global: all pixels per bin

    def __len__(self) -> int:
        return len(self._scenarios)

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
            pred_map: ``(H, W)`` localisation map, already normalised.
            gt_boxes: ``(N, 4)`` xyxy ground truth (N = 0: no sounding object on screen),
                in ``from_size`` pixels when given, else in the map's pixels.
            gt_map: ``(H, W)`` ground-truth map instead of boxes (e.g. a consensus map);
                used for cIoU when both are given.
            pred_boxes: ``(P, 4)`` predicted boxes in the map's pixels, for IoU@0.5.
            scenario: e.g. ``"single"``, ``"off-screen"``; None counts only toward ``"all"``.
            from_size: ``(H0, W0)`` of ``gt_boxes``' grid.
        """
        if scenario == "all":
            raise AvlocError("scenario 'all' is reserved for the summary over every frame")
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
            low, high = self.value_range
            if alpha.min() < low or alpha.max() > high:
                raise AvlocError(
                    f"pred_map values [{alpha.min():.4g}, {alpha.max():.4g}] lie outside value_range {self.value_range}"
                )
            # bin b >= 1 holds values in (e_{b-1}, e_b], bin 0 values <= e_0: "above edge j" = bins > j
            index = np.searchsorted(self.edges, alpha.reshape(-1), side="left")  # (H, W) -> (H*W,)
            g_flat = g.reshape(-1)  # (H, W) -> (H*W,)
            gt_free = np.bincount(index[g_flat <= 0], minlength=len(self.edges)).astype(np.int32)
            mass = None
            if g_flat.sum() > 0:
                mass = np.bincount(index, weights=g_flat, minlength=len(self.edges)).astype(np.float32)
            self._hists.append((mass, gt_free))
            self._counts += np.bincount(index, minlength=len(self.edges))
        else:
            tau = float(np.median(alpha)) if self.is_median else self.threshold
            self._ciou.append(ciou(alpha, g, tau))
            above = np.count_nonzero(alpha > tau) / alpha.size
            self._above.append(math.nan if g.sum() > 0 else above)
        self._scenarios.append(scenario)
        self._box_iou.append(box_score)
        self._pointing.append(pointing_hit(alpha, g))

    def global_threshold(self) -> float | str:
        """Tau for the frames seen so far (the fixed threshold, or "median", when not global)."""
        if self.is_median:
            return "median"
        if not self.is_global:
            return self.threshold
        return float(self.edges[self._global_index()])

    def _global_index(self) -> int:
        total = int(self._counts.sum())
        if total == 0:
            raise AvlocError("LocalizationMeter: no frames yet")
        k = int(np.floor(self.top_percent * total / 100.0 + 1e-9))
        above = total - np.cumsum(self._counts)  # (bins+1,) pixels strictly above edge j
        return int(np.argmax(above <= k))  # smallest edge with at most k above

    def _per_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame cIoU (NaN without gt) and share above tau (NaN with gt)."""
        if not self.is_global:
            return np.asarray(self._ciou, dtype=np.float64), np.asarray(self._above, dtype=np.float64)
        j = self._global_index()
        cious = np.full(len(self), math.nan)
        above = np.full(len(self), math.nan)
        for n, (mass, gt_free) in enumerate(self._hists):
            free_above = float(gt_free[j + 1 :].sum())
            if mass is None:
                above[n] = free_above / float(gt_free.sum())
            else:
                cious[n] = float(mass[j + 1 :].sum(dtype=np.float64)) / (float(mass.sum(dtype=np.float64)) + free_above)
        return cious, above

    def summary(self) -> dict[str, dict]:
        """Rows ``{"all": {...}, "<scenario>": {...}}``, JSON-serialisable.

        Each row: ``n_frames``, ``n_gt`` (frames with ground truth), ``n_negative``
        (frames without), ``n_boxes`` (frames with a box IoU), ``threshold``, ``ciou_at``
        (mean cIoU at the threshold: the STM tables' "cIoU@0.5"), ``ap50``, ``auc``,
        ``iou_at_0.5`` (share of box frames with IoU >= ``iou_threshold``), ``tn_rate``,
        ``pointing`` (share of frames with ground truth whose map maximum lies on it).
        A metric without frames to average is None.
        """
        if not len(self):
            raise AvlocError("LocalizationMeter: no frames yet")
        cious, above = self._per_frame()
        boxes = np.asarray(self._box_iou, dtype=np.float64)
        pointing = np.asarray(self._pointing, dtype=np.float64)
        scenarios = np.asarray([s if s is not None else "" for s in self._scenarios], dtype=object)
        names = ["all"] + sorted({s for s in self._scenarios if s is not None})
        tau = self.global_threshold()
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
                "threshold": tau,
                "ciou_at": _mean_or_none(c),
                "ap50": float(np.mean(c >= 0.5)) if c.size else None,
                "auc": success_auc(c, self.auc_thresholds) if c.size else None,
                "iou_at_0.5": float(np.mean(b >= self.iou_threshold)) if b.size else None,
                "tn_rate": _mean_or_none(_tn_from_above(a, self.tn_rule, self.tn_tolerance)),
                "pointing": _mean_or_none(p),
            }
        return rows


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
