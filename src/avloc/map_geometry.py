"""Heat-map geometry: heat map -> normalised map -> boxes.

Two ways to turn a localisation map into boxes, both from the STM paper (Space-Time Memory
Network, BMVC 2021, section 3.3 and 4.2):

1. Otsu + contours: upsample the heat map (bilinear), min-max normalise it, threshold it
   (Otsu, or a given value) and box the external contours (:func:`boxes_from_map`).
2. Proposal grounding: score object proposals (e.g. Faster R-CNN's RPN boxes) by the
   attention mass they cover and keep the best after NMS (:func:`ground_proposals`).

Pixel convention, used here and by :mod:`avloc.metrics`:

- Boxes are ``(N, 4)`` ``[x1, y1, x2, y2]`` in continuous pixel coordinates of a map of
  size ``(H, W)``: pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)``. So ``x2``
  and ``y2`` are exclusive: a box covering columns 3..5 and rows 1..2 is ``[3, 1, 6, 3]``,
  its area ``(x2 - x1) * (y2 - y1)`` is its pixel count, and ``map[y1:y2, x1:x2]`` is its
  inside. This is torchvision's convention (``box_iou``, ``nms``) and the slicing the
  LVS/EZ-VSL evaluators use.
- Rasterising a box with fractional coordinates (after :func:`scale_boxes`) keeps the
  pixels whose centre ``(j + 0.5, i + 0.5)`` lies in ``[x1, x2) x [y1, y2)``; for integer
  boxes that is exactly the slice above.
- Thresholds are strict: a pixel is "on" when its value is ``> threshold`` (the STM
  paper's ``A(tau) = {i | alpha_i > tau}``, OpenCV's ``THRESH_BINARY``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from avloc.types import AvlocError

ArrayLike = torch.Tensor | np.ndarray
FLAT_TOLERANCE = 1e-6  # relative range below which a map is flat (see is_flat)
OTSU_FLOOR = 0.5  # the STM authors' box helper zeroes normalised values below 0.5 before Otsu
BOX_GRID = 128  # side of the square grid frame_boxes thresholds on (see there)


def _as_tensor(x: ArrayLike | Sequence, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(dtype)
    except (TypeError, ValueError) as exc:
        raise AvlocError(f"{name}: expected a tensor or array, got {type(x).__name__} ({exc})") from None


def _as_float64(x: ArrayLike | Sequence) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr.astype(np.float64)


def _check_map(x: ArrayLike, name: str = "map") -> np.ndarray:
    """A 2-D finite map as float64 numpy (exact for float32 input)."""
    arr = _as_float64(x)
    if arr.ndim != 2:
        raise AvlocError(f"{name}: expected shape (H, W), got {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise AvlocError(f"{name}: contains NaN or inf")
    return arr


def check_boxes(boxes: ArrayLike | Sequence, name: str = "boxes") -> torch.Tensor:
    """``(N, 4)`` xyxy boxes as a float32 CPU tensor; an empty list gives ``(0, 4)``.

    Raises:
        AvlocError: wrong shape, non-finite values, or ``x2 < x1`` / ``y2 < y1``.
    """
    t = _as_tensor(boxes, name)
    if t.numel() == 0:
        return torch.zeros(0, 4)
    if t.ndim != 2 or t.shape[1] != 4:
        raise AvlocError(f"{name}: expected shape (N, 4) xyxy, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise AvlocError(f"{name}: contains NaN or inf")
    if (t[:, 2] < t[:, 0]).any() or (t[:, 3] < t[:, 1]).any():
        raise AvlocError(f"{name}: expected xyxy with x2 >= x1 and y2 >= y1")
    return t.cpu()


def _check_size(size: Sequence[int], name: str = "size") -> tuple[int, int]:
    if len(size) != 2 or int(size[0]) <= 0 or int(size[1]) <= 0:
        raise AvlocError(f"{name}: expected (H, W) with positive sides, got {tuple(size)}")
    return int(size[0]), int(size[1])


# ---------------------------------------------------------------------------------------
# Maps


def upsample(heatmap: ArrayLike, size: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Bilinear resize of heat maps to ``size``.

    Uses ``align_corners=False`` (pixel centres, as ``cv2.resize`` and PIL do), so the
    result does not shift by half a pixel relative to the frame. A map whose values are all
    equal comes back filled with exactly that value: interpolation would otherwise leave
    round-off (~6e-8 on a float32 map of 0.33) that min-max normalisation or a global
    threshold would read as structure.

    Args:
        heatmap: ``(..., h, w)`` heat maps at feature resolution.
        size: ``(H, W)`` target size, usually the evaluation frame size (e.g. 256x256).
        dtype: computation and output dtype (float64 for metrics computed exactly).

    Returns:
        ``(..., H, W)`` maps of ``dtype``.
    """
    x = _as_tensor(heatmap, "heatmap", dtype)
    if x.ndim < 2:
        raise AvlocError(f"heatmap: expected shape (..., h, w), got {tuple(x.shape)}")
    height, width = _check_size(size)
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])  # (..., h, w) -> (N, 1, h, w)
    out = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    low, high = flat.amin(dim=(-2, -1), keepdim=True), flat.amax(dim=(-2, -1), keepdim=True)  # (N, 1, 1, 1) each
    out = torch.where(low == high, low.expand_as(out), out)
    return out.reshape(*lead, height, width)  # (N, 1, H, W) -> (..., H, W)


def is_flat(heatmap: ArrayLike) -> torch.Tensor:
    """Whether each ``(H, W)`` map of ``(..., H, W)`` says nothing: its range is negligible.

    A map is flat when ``max - min <= FLAT_TOLERANCE * max(|max|, |min|)`` (all-zero maps
    included). Float32 rounding leaves a few units in the last place (1.2e-7 relative each)
    on a map that should be constant, e.g. after bilinear upsampling; min-max normalisation
    would stretch that round-off to the full [0, 1] and make a map that says nothing
    "detect" a region. Returns a ``(...)`` bool tensor.
    """
    x = _as_tensor(heatmap, "heatmap", torch.float64)
    if x.ndim < 2:
        raise AvlocError(f"heatmap: expected shape (..., H, W), got {tuple(x.shape)}")
    low, high = x.amin(dim=(-2, -1)), x.amax(dim=(-2, -1))  # (...) each
    return (high - low) <= FLAT_TOLERANCE * torch.maximum(high.abs(), low.abs())


def normalize(heatmap: ArrayLike, mode: Literal["minmax", "none"] = "minmax") -> torch.Tensor:
    """Per-map normalisation of ``(..., H, W)`` maps.

    ``"minmax"`` maps each ``(H, W)`` map to [0, 1] by ``(x - min) / (max - min)``; a flat
    map (:func:`is_flat`) becomes all zeros: it detects nothing (no pixel above any
    threshold, no box, no pointing hit). ``"none"`` returns the maps unchanged (as
    float32), e.g. for the global-threshold protocol on raw similarities.
    """
    x = _as_tensor(heatmap, "heatmap")
    if x.ndim < 2:
        raise AvlocError(f"heatmap: expected shape (..., H, W), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise AvlocError("heatmap: contains NaN or inf")
    if mode == "none":
        return x
    if mode != "minmax":
        raise AvlocError(f"normalize: unknown mode {mode!r}; expected 'minmax' or 'none'")
    low = x.amin(dim=(-2, -1), keepdim=True)  # (..., 1, 1)
    span = x.amax(dim=(-2, -1), keepdim=True) - low  # (..., 1, 1)
    flat = is_flat(x)[..., None, None]  # (...) -> (..., 1, 1)
    safe = torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.zeros_like(x), (x - low) / safe)


def otsu_threshold(heatmap: ArrayLike) -> float:
    """Otsu's threshold of a normalised map, on the [0, 1] scale.

    OpenCV's Otsu needs uint8, so the map is quantised to ``round(255 * x)`` first; the
    result ``T / 255`` is to be used with a strict comparison (``x > threshold``).

    Args:
        heatmap: ``(H, W)`` float map in [0, 1].
    """
    arr = _check_map(heatmap, "heatmap")
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise AvlocError(
            f"otsu_threshold: expected a map in [0, 1], got [{arr.min():.4g}, {arr.max():.4g}]; normalize() it first"
        )
    levels = np.rint(arr * 255.0).astype(np.uint8)
    value, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return float(value) / 255.0


def global_threshold(maps: ArrayLike | Sequence[ArrayLike], top_percent: float = 10.0) -> float:
    """The global top-``top_percent`` % threshold of all pixels of all maps (AVATAR).

    One threshold per model, from the raw pixel values of all labelled frames together,
    instead of 0.5 on per-frame min-max maps. With ``n`` pixels in all and
    ``k = max(1, ceil(top_percent * n / 100))``, the threshold ``tau`` is the ``k``-th
    largest value, and a pixel is *on* when its value is ``>= tau``. Tie rule: with distinct
    values exactly ``k`` pixels are on; pixels tied with the ``k``-th largest are all on, so
    a plateau at the top (a flat map, a box-shaped map) cannot hide below the threshold.
    Computed exactly on the values given (no rescaling, clamping or binning).

    Args:
        maps: ``(N, H, W)`` (or ``(H, W)``) maps, or a sequence of ``(H, W)`` maps of any sizes.
        top_percent: share of pixels to keep, in (0, 100).
    """
    parts = [maps] if isinstance(maps, (torch.Tensor, np.ndarray)) else list(maps)
    return streamed_global_threshold(lambda: iter(parts), top_percent)


_DIGIT_BITS = 16
_SIGN = np.uint64(1 << 63)


def _sortable_keys(values: np.ndarray) -> np.ndarray:
    """float64 values -> uint64 keys with the same order (IEEE-754 bits, negatives flipped)."""
    bits = (values + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def _value_of_key(key: int) -> float:
    bits = np.uint64(key)
    bits = bits & ~_SIGN if bits & _SIGN else ~bits
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def streamed_global_threshold(passes: Callable[[], Iterable[ArrayLike]], top_percent: float = 10.0) -> float:
    """:func:`global_threshold` over maps too many to hold at once.

    ``passes()`` must yield the same maps each time it is called (e.g. upsampling stored
    low-resolution maps again); it is called four times. The ``k``-th largest value is
    selected exactly by radix selection on the values' float64 bit patterns, 16 bits a pass,
    keeping one 65,536-bin count in memory.
    """
    if not 0.0 < top_percent < 100.0:
        raise AvlocError(f"top_percent must be in (0, 100), got {top_percent}")
    prefix, need, total = 0, None, 0
    for shift in range(64 - _DIGIT_BITS, -1, -_DIGIT_BITS):
        counts = np.zeros(1 << _DIGIT_BITS, dtype=np.int64)
        for m in passes():
            values = _as_float64(m).reshape(-1)  # (...) -> (n,)
            if not np.isfinite(values).all():
                raise AvlocError("global_threshold: maps contain NaN or inf")
            keys = _sortable_keys(values)
            if need is None:
                total += keys.size
            else:
                keys = keys[(keys >> np.uint64(shift + _DIGIT_BITS)) == np.uint64(prefix)]
            counts += np.bincount(((keys >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.int64),
                                  minlength=1 << _DIGIT_BITS)
        if need is None:
            if total == 0:
                raise AvlocError("global_threshold: no pixels given")
            need = max(1, math.ceil(top_percent * total / 100.0 - 1e-9))
        at_or_above = np.cumsum(counts[::-1])[::-1]  # (65536,) values with this digit or a higher one
        digit = int(np.nonzero(at_or_above >= need)[0][-1])
        need -= int(at_or_above[digit] - counts[digit])
        prefix = (prefix << _DIGIT_BITS) | digit
    return _value_of_key(prefix)


# ---------------------------------------------------------------------------------------
# Boxes


def pixel_ranges(boxes: ArrayLike, size: Sequence[int]) -> torch.Tensor:
    """Integer pixel ranges ``[c1, r1, c2, r2]`` (``c2``, ``r2`` exclusive) covered by boxes.

    Pixel-centre rule: column ``j`` is inside when ``x1 <= j + 0.5 < x2``. Clipped to the
    map; integer boxes come back unchanged (when inside the map).

    Args:
        boxes: ``(N, 4)`` xyxy in the pixel grid of a map of ``size``.
        size: ``(H, W)``.

    Returns:
        ``(N, 4)`` int64.
    """
    b = check_boxes(boxes).to(torch.float64)
    height, width = _check_size(size)
    r = torch.ceil(b - 0.5).to(torch.int64)  # (N, 4)
    r[:, 0::2] = r[:, 0::2].clamp(0, width)
    r[:, 1::2] = r[:, 1::2].clamp(0, height)
    return r


def box_masks(boxes: ArrayLike, size: Sequence[int]) -> torch.Tensor:
    """Rasterise each box to a binary mask (pixel-centre rule, see module docstring).

    Args:
        boxes: ``(N, 4)`` xyxy in the pixel grid of ``size``.
        size: ``(H, W)``.

    Returns:
        ``(N, H, W)`` bool.
    """
    height, width = _check_size(size)
    r = pixel_ranges(boxes, size)
    cols = torch.arange(width)
    rows = torch.arange(height)
    in_x = (cols[None, :] >= r[:, 0:1]) & (cols[None, :] < r[:, 2:3])  # (N, W)
    in_y = (rows[None, :] >= r[:, 1:2]) & (rows[None, :] < r[:, 3:4])  # (N, H)
    return in_y[:, :, None] & in_x[:, None, :]  # (N, H, 1) & (N, 1, W) -> (N, H, W)


def scale_boxes(boxes: ArrayLike, from_size: Sequence[int], to_size: Sequence[int]) -> torch.Tensor:
    """Rescale xyxy boxes from a ``from_size`` pixel grid to a ``to_size`` one.

    E.g. boxes found on a 256x256 map back to the original ``(H0, W0)`` video frame:
    ``x * W0 / 256``, ``y * H0 / 256``. Box edges (not pixel centres) scale, which the
    exclusive-``x2`` convention makes exact: ``[0, 0, 256, 256]`` becomes ``[0, 0, W0, H0]``.

    Args:
        boxes: ``(N, 4)`` xyxy.
        from_size: ``(H, W)`` of the grid the boxes are in.
        to_size: ``(H0, W0)`` of the target grid.

    Returns:
        ``(N, 4)`` float32 (not rounded).
    """
    b = check_boxes(boxes).to(torch.float64)
    fh, fw = _check_size(from_size, "from_size")
    th, tw = _check_size(to_size, "to_size")
    factor = torch.tensor([tw / fw, th / fh, tw / fw, th / fh], dtype=torch.float64)
    return (b * factor).to(torch.float32)


def enclosing_box(boxes: ArrayLike) -> torch.Tensor:
    """The one box around all ``(N, 4)`` boxes: ``(1, 4)``, or ``(0, 4)`` when N = 0."""
    b = check_boxes(boxes)
    if b.shape[0] == 0:
        return b
    return torch.cat([b[:, :2].amin(dim=0), b[:, 2:].amax(dim=0)])[None]  # (4,) -> (1, 4)


def boxes_from_map(
    heatmap: ArrayLike,
    threshold: float | None = None,
    mode: Literal["enclosing", "per-contour"] = "enclosing",
    min_value: float | None = None,
) -> torch.Tensor:
    """Boxes around the thresholded regions of a localisation map (STM section 4.2).

    Steps: values below ``min_value`` are set to 0 (the STM authors' box helper uses
    ``min_value=0.5`` before Otsu; this also changes the histogram Otsu sees); the mask
    is ``map > threshold`` (Otsu's threshold of the map when ``threshold`` is None); the
    external contours of the mask are found with ``cv2.findContours`` (8-connected; holes
    and blobs inside holes do not add boxes) and boxed.

    Args:
        heatmap: ``(H, W)`` map, in [0, 1] when ``threshold`` is None (Otsu).
        threshold: strict threshold, or None for Otsu.
        mode: ``"enclosing"``: one box around all contours (the STM authors' convention);
            ``"per-contour"``: one box per contour, sorted top to bottom, then left to right.
        min_value: optional floor applied before thresholding (see above).

    Returns:
        ``(N, 4)`` float32 xyxy in the map's pixel grid, ``x2``/``y2`` exclusive (N = 0
        when nothing is above the threshold). Use :func:`scale_boxes` for video pixels.
    """
    arr = _check_map(heatmap, "heatmap")
    if mode not in ("enclosing", "per-contour"):
        raise AvlocError(f"boxes_from_map: unknown mode {mode!r}; expected 'enclosing' or 'per-contour'")
    if min_value is not None:
        arr = np.where(arr >= min_value, arr, 0.0)
    cut = otsu_threshold(arr) if threshold is None else float(threshold)
    mask = (arr > cut).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rects = [cv2.boundingRect(c) for c in contours]  # (x, y, w, h) each
    rows = sorted(((x, y, x + w, y + h) for x, y, w, h in rects), key=lambda b: (b[1], b[0], b[3], b[2]))
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)  # (N, 4), also when N = 0
    return enclosing_box(boxes) if mode == "enclosing" else boxes


# ---------------------------------------------------------------------------------------
# Proposal grounding


def score_proposals(heatmap: ArrayLike, boxes: ArrayLike, normalize_by_area: bool = False) -> torch.Tensor:
    """Attention mass inside each proposal (STM section 3.3).

    ``S_n = sum_ij m_n(i, j) * alpha(i, j)`` with ``m_n`` the binary mask of box ``n``
    (pixel-centre rasterisation). As written this is a sum, not a mean, so it favours large
    boxes (the whole frame scores highest); ``normalize_by_area=True`` divides by the
    box's pixel count (mean attention inside; an empty box scores 0).

    Args:
        heatmap: ``(H, W)`` localisation map (normalised).
        boxes: ``(N, 4)`` xyxy proposals in the map's pixel grid.

    Returns:
        ``(N,)`` float32 scores.
    """
    arr = _check_map(heatmap, "heatmap")
    r = pixel_ranges(boxes, arr.shape).numpy()  # (N, 4) c1, r1, c2, r2
    # summed-area table with a zero row/column: O(1) per box instead of a mask each
    table = np.zeros((arr.shape[0] + 1, arr.shape[1] + 1))
    table[1:, 1:] = arr.cumsum(axis=0).cumsum(axis=1)
    c1, r1, c2, r2 = r.T  # (N, 4) -> 4 x (N,)
    c2, r2 = np.maximum(c2, c1), np.maximum(r2, r1)
    scores = table[r2, c2] - table[r1, c2] - table[r2, c1] + table[r1, c1]
    if normalize_by_area:
        area = (c2 - c1) * (r2 - r1)
        scores = np.where(area > 0, scores / np.maximum(area, 1), 0.0)
    return torch.from_numpy(scores).to(torch.float32)


def ground_proposals(
    heatmap: ArrayLike,
    boxes: ArrayLike,
    iou_threshold: float = 0.5,
    top_k: int | None = None,
    normalize_by_area: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank proposals by :func:`score_proposals` and drop overlaps with NMS.

    Args:
        heatmap: ``(H, W)`` localisation map.
        boxes: ``(N, 4)`` xyxy proposals in the map's pixel grid.
        iou_threshold: NMS discards a box whose IoU with a higher-scored kept box is
            ``> iou_threshold`` (``torchvision.ops.nms``, continuous-area IoU).
        top_k: keep at most this many boxes (all when None).
        normalize_by_area: score by mean instead of summed attention (see
            :func:`score_proposals`; the paper's S_n is the sum).

    Returns:
        ``(boxes (K, 4), scores (K,))``, highest score first.
    """
    b = check_boxes(boxes)
    scores = score_proposals(heatmap, b, normalize_by_area=normalize_by_area)
    from torchvision.ops import nms  # here, not at the top: importing torchvision takes seconds (torch._dynamo)

    keep = nms(b, scores, iou_threshold)  # indices, by decreasing score
    if top_k is not None:
        keep = keep[:top_k]
    return b[keep], scores[keep]


@torch.no_grad()
def detector_proposals(
    model: torch.nn.Module,
    image: torch.Tensor,
    source: Literal["rpn", "detections"] = "rpn",
    score_threshold: float = 0.0,
) -> torch.Tensor:
    """Object proposals for one frame from a loaded torchvision Faster R-CNN.

    The STM paper used ``fasterrcnn_resnet50_fpn`` pretrained on COCO train2017. Build it
    with ``torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=...)``; the model is
    put in eval mode.

    Args:
        model: a torchvision ``FasterRCNN`` (``transform``, ``backbone``, ``rpn`` attributes).
        image: ``(3, H, W)`` float in [0, 1], on the model's device.
        source: ``"rpn"``: the class-agnostic RPN proposals (``rpn_post_nms_top_n_test`` of
            them); ``"detections"``: the final detections of any class.
        score_threshold: for ``"detections"``, keep boxes scoring at least this.

    Returns:
        ``(N, 4)`` float32 xyxy in the image's pixels, on the CPU.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise AvlocError(f"image: expected shape (3, H, W), got {tuple(image.shape)}")
    if not all(hasattr(model, name) for name in ("transform", "backbone", "rpn")):
        raise AvlocError("detector_proposals: expected a torchvision FasterRCNN model")
    model.eval()
    if source == "detections":
        out = model([image])[0]
        return out["boxes"][out["scores"] >= score_threshold].float().cpu()
    if source != "rpn":
        raise AvlocError(f"detector_proposals: unknown source {source!r}; expected 'rpn' or 'detections'")
    images, _ = model.transform([image])
    features = model.backbone(images.tensors)
    proposals, _ = model.rpn(images, features)
    # the transform resized the image: bring the boxes back to its own pixels
    resized = images.image_sizes[0]
    return scale_boxes(proposals[0].float().cpu(), resized, image.shape[-2:])


def mass_shares(heatmap: ArrayLike, boxes: ArrayLike) -> np.ndarray:
    """The share of a map's (non-negative) mass inside each box: the score of a box drawn from it.

    Args:
        heatmap: ``(H, W)`` map at the boxes' resolution.
        boxes: ``(N, 4)`` xyxy pixel boxes (pixels ``[x1, x2) x [y1, y2)``, truncated to whole pixels).

    Returns:
        ``(N,)`` float64 in [0, 1].
    """
    mass = torch.as_tensor(np.asarray(heatmap, dtype=np.float64)).clamp(min=0)  # (H, W)
    total = max(float(mass.sum()), 1e-12)
    return np.array([float(mass[int(y1):int(y2), int(x1):int(x2)].sum()) / total
                     for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4)])


def frame_boxes(
    heatmaps: ArrayLike,
    size: Sequence[int],
    mode: Literal["enclosing", "per-contour"] = "enclosing",
    min_value: float | None = OTSU_FLOOR,
    grid: int = BOX_GRID,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Otsu boxes of heat maps in a frame's pixels, found on a small grid and scaled.

    The maps ``(T, h, w)`` are upsampled to a square ``grid x grid`` (bilinear, half-pixel),
    min-max normalised, floored at ``min_value`` and boxed (:func:`boxes_from_map`); the boxes
    are then scaled to ``size`` (:func:`scale_boxes`). This is the ``stm`` evaluation protocol
    (:mod:`avloc.protocols`: the same steps on a ``256 x 256`` grid) on a coarser grid: the
    threshold and contours cost 1/4 of the pixels of 256 x 256, and far less than the
    frame's own pixels (1080p: 127 times fewer than 1920 x 1080). Measured on 740 maps
    (model maps and random blobs on 8 x 8 and 16 x 16 grids), box edges lie within 0.7 of a
    feature cell of the protocol's at 256 x 256 (median 0.5 grid cell;
    ``tests/test_map_geometry.py`` checks the within-one-feature-cell bound).

    Args:
        heatmaps: ``(T, h, w)`` maps at feature resolution.
        size: ``(H, W)`` of the frame the boxes are for.
        mode, min_value: as :func:`boxes_from_map` (defaults: the STM authors' box helper).
        grid: side of the square grid the maps are thresholded on.

    Returns:
        Per map, ``(N, 4)`` float32 xyxy boxes in the frame's pixels (``x2``/``y2`` exclusive,
        multiples of ``W / grid`` and ``H / grid``) and ``(N,)`` float64 scores: the share of the
        map's (non-negative) mass inside each box, on the grid (:func:`mass_shares`).
    """
    maps = _as_tensor(heatmaps, "heatmaps")
    if maps.ndim != 3:
        raise AvlocError(f"heatmaps: expected shape (T, h, w), got {tuple(maps.shape)}")
    cells = (grid, grid)
    raw = upsample(maps, cells)  # (T, h, w) -> (T, G, G)
    levels = normalize(raw).numpy()  # (T, G, G) in [0, 1]
    all_boxes, all_scores = [], []
    for level, step_map in zip(levels, raw.numpy()):
        boxes = boxes_from_map(level, mode=mode, min_value=min_value)  # (N, 4) on the grid
        all_scores.append(mass_shares(step_map, boxes))
        all_boxes.append(scale_boxes(boxes, cells, size).numpy())
    return all_boxes, all_scores
