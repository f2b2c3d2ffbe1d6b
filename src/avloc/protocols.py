"""How heat maps become numbers: the evaluation protocols, each exactly as its evaluator does it.

A protocol turns one annotated frame's raw heat map (the model's ``(h, w)`` output) and its
ground truth into per-frame scores; :func:`score_maps` sums a split's frames into one row per
scenario. Four protocols (docs/protocols.md tables every rule):

- ``stm`` (avloc's default; the STM paper, BMVC 2021): bilinear upsampling
  (``align_corners=False``) to 256 px, per-frame min-max, on = ``> 0.5``; a flat map
  detects nothing; ground truth = the union of the boxes (pixel-centre rule) or the
  dataset's own rule; boxes by Otsu + contours after the STM authors' floor.
- ``lvs`` (LVS, CVPR 2021, ``test.py``): ``cv2.resize`` (INTER_LINEAR) of the float32 map to
  224 px, ``pred = 1 - normalize_img(-map)``, ``t = sort(pred)[N // 2]``, pixels ``> t`` set
  to 1, pixels ``< 1`` to 0, on = ``>= 0.5``; ground truth built with ``int()`` truncation.
- ``ezvsl`` (EZ-VSL, ECCV 2022, ``test.py``, its audio-visual map ``av``; the object-saliency
  term is the model's business): ``F.interpolate(bilinear, align_corners=True)`` to 224 px,
  ``normalize_img``, on = ``>= sort(pred)[int(N * 0.5)]``; ground truth as LVS.
- ``avatar`` (AVATAR / TAVLO, 2025; no official code): raw maps upsampled as ``stm`` (224 px),
  one global threshold over all pixels of the split, on = ``>= tau``
  (:func:`avloc.map_geometry.global_threshold`).

TN% (frames without a sounding object on screen) is the ``avatar`` rule under every protocol.
``normalize_img`` is the evaluators' ``(v - min) / (max - min)``, which leaves a constant map
unchanged; their cIoU is ``sum(on * gt) / (sum(gt) + sum(on * (gt == 0)))``, so a frame whose
ground truth rounds to nothing scores 0 and stays in every average (0 / 0 is NaN there and
fails every success threshold; avloc counts it as 0).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from avloc.data.manifest import FrameAnnotation
from avloc.map_geometry import (OTSU_FLOOR, boxes_from_map, check_boxes, normalize, scale_boxes,
                                streamed_global_threshold, upsample)
from avloc.metrics import ScoreTable, annotation_map, frame_box_iou, frame_scores, pointing_hit
from avloc.types import AvlocError

NAMES = ("stm", "lvs", "ezvsl", "avatar")
EVALUATOR_SIZE = 224  # LVS and EZ-VSL evaluate at 224 x 224, hard-coded
METRICS = ("ciou_at", "ap50", "auc", "iou_at_0.5", "tn_rate", "pointing")
MAX_MAP_SIZE = 4096  # maps are upsampled to size x size floats, one frame at a time
GT_DESCRIPTIONS = {
    "auto": "each frame's own rule (union of boxes unless the dataset names one)",
    "union": "union of boxes",
    "enclosing": "enclosing box of the boxes",
    "consensus": "consensus of boxes (sum / 2, clipped at 1)",
}


@dataclass(frozen=True)
class Protocol:
    """How maps become numbers; printed and stored with every result."""

    name: str = "stm"
    size: int = 256  # maps are upsampled to size x size; ground truth rasterised on that grid
    gt_convention: str = "auto"  # the frame's own rule (manifest "ground_truth"), else union; or
    # "union", "enclosing" (the STM authors'), "consensus" (Flickr-SoundNet) for every frame
    box_mode: str = "enclosing"  # stm: Otsu + contours -> one enclosing box, or "per-contour"
    matching: str = "enclosing"  # stm: how several boxes are compared for IoU@0.5
    otsu_floor: float | None = OTSU_FLOOR  # stm: normalised values below it zeroed before Otsu
    top_percent: float = 10.0  # the global threshold (avatar, and TN% under every protocol)

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise AvlocError(f"unknown protocol {self.name!r}; expected one of {', '.join(NAMES)}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= MAX_MAP_SIZE:
            raise AvlocError(f"the map size (--size) must be 1 to {MAX_MAP_SIZE} pixels, got {self.size!r}")
        if self.name in ("lvs", "ezvsl") and self.size != EVALUATOR_SIZE:
            raise AvlocError(f"the {self.name} protocol is defined at {EVALUATOR_SIZE} px (its evaluator hard-codes "
                             f"it), got --size {self.size}")
        if self.gt_convention not in GT_DESCRIPTIONS:
            raise AvlocError(f"unknown ground truth {self.gt_convention!r}; expected one of {', '.join(GT_DESCRIPTIONS)}")
        if self.otsu_floor is not None and not 0.0 <= self.otsu_floor < 1.0:
            raise AvlocError(f"the Otsu floor must be in [0, 1) or none, got {self.otsu_floor!r}")
        if not 0.0 < self.top_percent < 100.0:
            raise AvlocError(f"--top-percent must be in (0, 100), got {self.top_percent!r}")

    def describe(self) -> str:
        tn = f"TN%: raw maps, global top-{self.top_percent:g}% threshold over the split (>= tau), frames without boxes"
        truth = f"ground truth = {GT_DESCRIPTIONS[self.gt_convention]}"
        if self.name == "stm":
            floor = "no floor" if self.otsu_floor is None else f"values < {self.otsu_floor:g} zeroed first"
            return (f"stm: maps upsampled (bilinear, half-pixel) to {self.size}x{self.size}, per-frame min-max (a flat "
                    f"map detects nothing), on = > 0.5; {truth} (pixel centres), polygons where given; IoU@0.5: "
                    f"Otsu ({floor}) + contours, {self.box_mode} box(es), {self.matching} matching; {tn}")
        if self.name == "avatar":
            return (f"avatar: raw maps upsampled (bilinear, half-pixel) to {self.size}x{self.size}, one global "
                    f"top-{self.top_percent:g}% threshold over the split, on = >= tau; {truth} (pixel centres); {tn}")
        rules = {
            "lvs": "cv2.resize INTER_LINEAR (float32), pred = 1 - normalize_img(-map), t = sort(pred)[N // 2], "
                   "pred > t -> 1, pred < 1 -> 0, on = >= 0.5",
            "ezvsl": "F.interpolate bilinear align_corners=True, normalize_img, on = >= sort(pred)[int(N * 0.5)]",
        }[self.name]
        return (f"{self.name}: as its evaluator's test.py, 224x224: {rules}; ground truth int(224 * x) boxes filled "
                f"gt[y1:y2, x1:x2] (union; Flickr consensus / 2), frames whose ground truth rounds to nothing score "
                f"0; {tn}")


PROTOCOLS = {
    "stm": Protocol(),
    "lvs": Protocol("lvs", EVALUATOR_SIZE),
    "ezvsl": Protocol("ezvsl", EVALUATOR_SIZE),
    "avatar": Protocol("avatar", EVALUATOR_SIZE),
}


@dataclass
class AnnotatedMap:
    """One annotated frame's raw heat map, its ground truth, and the table row it counts toward.

    Frames scored by the same model step share one ``heatmap`` tensor (scoring reuses its
    upsampled map).
    """

    heatmap: torch.Tensor  # (h, w) raw map at feature resolution
    annotation: FrameAnnotation  # ground truth in original pixels
    original_size: tuple[int, int]  # (H0, W0) of the video
    row: str

    @property
    def is_negative(self) -> bool:
        """No sounding object on screen: the frame has no boxes at all (TN% frame)."""
        return not self.annotation.boxes and not self.annotation.source_boxes


@dataclass
class ScoredSplit:
    """Rows per scenario and the warnings that go with them."""

    rows: dict[str, dict]
    warnings: list[str] = field(default_factory=list)
    frame_ciou: list[float] = field(default_factory=list)  # one per frame given, in order; NaN: none (negative, unscored)


# ---------------------------------------------------------------------------------------
# Ground truth


def pixel_ground_truth(frame: AnnotatedMap, size: tuple[int, int], convention: str) -> np.ndarray:
    """``(H, W)`` ground truth on the ``stm`` / ``avatar`` grid (pixel-centre rule, polygons)."""
    annotation = frame.annotation
    if convention == "auto":
        convention = annotation.ground_truth or "union"
    gt = annotation_map(annotation.boxes, size, convention, frame.original_size, annotation.masks)
    return gt.numpy().astype(np.float64)


def _evaluator_fill(boxes: Sequence[Sequence[int]], consensus: bool) -> np.ndarray:
    """The evaluators' ``gt[y1:y2, x1:x2] = 1`` per box, summed; union or Flickr consensus."""
    total = np.zeros((EVALUATOR_SIZE, EVALUATOR_SIZE))
    for x1, y1, x2, y2 in boxes:
        piece = np.zeros((EVALUATOR_SIZE, EVALUATOR_SIZE))
        piece[y1:y2, x1:x2] = 1  # Python slicing, as theirs: clamps at 224, empty when y2 <= y1
        total += piece
    if consensus:
        total = total / 2
        total[total > 1] = 1
    else:
        total[total > 0] = 1
    return total


def evaluator_ground_truth(frame: AnnotatedMap, convention: str) -> np.ndarray:
    """``(224, 224)`` ground truth as the LVS and EZ-VSL evaluators build it.

    - VGG-SS boxes (normalised): LVS takes ``int(224 * max(x, 0))`` of each coordinate,
      EZ-VSL ``(np.clip(box, 0, 1) * 224).astype(int)``; after the fill's slicing (which stops
      at 224) the two give the same map, so one rule serves both.
    - Flickr-SoundNet boxes (256-px integers): ``int(224 * int(v) / 256)``, every box added,
      divided by 2, clipped at 1.
    - Native boxes (original video pixels): normalised by the frame's width and height, then
      the VGG-SS rule; the consensus rule where the frame (or ``convention``) names it;
      polygons (AVATAR) rasterised by pixel centres as under ``stm``.
    """
    annotation = frame.annotation
    if convention == "auto":
        convention = annotation.ground_truth or "union"
    if annotation.source_format == "flickr":
        boxes = [[int(EVALUATOR_SIZE * int(v) / 256) for v in box] for box in annotation.source_boxes]
        return _evaluator_fill(boxes, consensus=True)
    if annotation.masks:
        return pixel_ground_truth(frame, (EVALUATOR_SIZE, EVALUATOR_SIZE), convention)
    if annotation.source_format == "vggss":
        normalised = [list(box) for box in annotation.source_boxes]
    else:
        height, width = frame.original_size
        normalised = [[x1 / width, y1 / height, x2 / width, y2 / height] for x1, y1, x2, y2 in annotation.boxes]
    if convention == "enclosing" and normalised:
        normalised = [[min(b[0] for b in normalised), min(b[1] for b in normalised),
                       max(b[2] for b in normalised), max(b[3] for b in normalised)]]
    boxes = [[int(EVALUATOR_SIZE * max(x, 0.0)) for x in box] for box in normalised]
    return _evaluator_fill(boxes, consensus=convention == "consensus")


# ---------------------------------------------------------------------------------------
# The evaluators' thresholds


def _normalize_img(value: np.ndarray) -> np.ndarray:
    """The evaluators' ``normalize_img``: min-max in the array's dtype, a constant map unchanged."""
    low, high = value.min(), value.max()
    if not (high - low) == 0:
        value = (value - low) / (high - low)
    return value


def lvs_on(heatmap: torch.Tensor) -> np.ndarray:
    """``(224, 224)`` bool: the pixels LVS's ``test.py`` keeps (float32 throughout, as theirs)."""
    raw = np.ascontiguousarray(heatmap.detach().cpu().numpy(), dtype=np.float32)  # (h, w)
    up = cv2.resize(raw, (EVALUATOR_SIZE, EVALUATOR_SIZE), interpolation=cv2.INTER_LINEAR)  # (224, 224) float32
    pred = 1 - _normalize_img(-up)
    threshold = np.sort(pred.flatten())[int(pred.shape[0] * pred.shape[1] / 2)]
    pred[pred > threshold] = 1
    pred[pred < 1] = 0
    return pred >= 0.5


def ezvsl_on(heatmap: torch.Tensor) -> np.ndarray:
    """``(224, 224)`` bool: the pixels EZ-VSL's ``test.py`` keeps for its ``av`` map."""
    raw = heatmap.detach().cpu().to(torch.float32)[None, None]  # (h, w) -> (1, 1, h, w)
    up = F.interpolate(raw, size=(EVALUATOR_SIZE, EVALUATOR_SIZE), mode="bilinear", align_corners=True)
    pred = _normalize_img(up.numpy()[0, 0])  # (1, 1, 224, 224) -> (224, 224)
    threshold = np.sort(pred.flatten())[int(pred.shape[0] * pred.shape[1] * 0.5)]
    return pred >= threshold


def evaluator_ciou(on: np.ndarray, gt: np.ndarray) -> float:
    """``sum(on * gt) / (sum(gt) + sum(on * (gt == 0)))``; their 0 / 0 (nothing on, nothing true) -> 0."""
    union = gt.sum() + np.count_nonzero(on & (gt == 0))
    return float(gt[on].sum() / union) if union > 0 else 0.0


def _flattery(heatmap: torch.Tensor, on: np.ndarray) -> str | None:
    """"constant" / "saturated" when the evaluator keeps a whole plateau of a map.

    The median rules keep half the pixels of a map without ties (``N / 2``, one more or one
    less); more than ``N / 2 + 1`` means a plateau holding the median was kept whole.
    """
    if bool(heatmap.max() == heatmap.min()):
        return "constant" if on.all() else None
    return "saturated" if np.count_nonzero(on) > on.size // 2 + 1 else None


# ---------------------------------------------------------------------------------------
# Scoring a split


def score_maps(frames: list[AnnotatedMap], protocol: Protocol,
               unscored: Sequence[tuple[str, str]] = ()) -> ScoredSplit:
    """The metrics of ``frames`` under ``protocol``, one row per scenario.

    Args:
        frames: the annotated frames to score.
        protocol: the rules.
        unscored: ``(row, reason)`` of annotated frames that could not be scored (e.g. after
            the end of the video); they count toward each row's ``n_annotated`` and warnings.

    Every row gets ``n_annotated`` (annotated frames) beside ``n_frames`` (frames scored);
    each difference, and each rule that flatters a map, is a warning with its count.
    """
    size = (protocol.size, protocol.size)
    skipped = list(unscored)
    tau = None
    if frames and (protocol.name == "avatar" or any(frame.is_negative for frame in frames)):
        tau = streamed_global_threshold(lambda: (step.raw for step in _steps(frames, size, protocol)),
                                        protocol.top_percent)
    table, flattered, frame_ciou = ScoreTable(), Counter(), []
    for frame, step in zip(frames, _steps(frames, size, protocol)):
        scores = {}
        if frame.is_negative:
            table.add(frame.row, on_share=float(np.count_nonzero(step.raw >= tau)) / step.raw.size)
        elif protocol.name in ("lvs", "ezvsl"):
            gt = evaluator_ground_truth(frame, protocol.gt_convention)
            if step.flattery:
                flattered[step.flattery] += 1
            scores = {"ciou": evaluator_ciou(step.evaluator_on, gt), "pointing": _pointing(step.raw, gt)}
            table.add(frame.row, **scores)
        else:
            gt = pixel_ground_truth(frame, size, protocol.gt_convention)
            if gt.sum() <= 0:
                skipped.append((frame.row, "its boxes cover no pixel of the map"))
            elif protocol.name == "avatar":
                scores = frame_scores(step.raw >= tau, step.raw, gt)
                table.add(frame.row, **scores)
            else:
                scores = frame_scores(step.level > 0.5, step.level, gt)
                table.add(frame.row, box_iou=_box_iou(frame, step.boxes, step.level.shape, protocol), **scores)
        frame_ciou.append(scores.get("ciou", math.nan))
    threshold = {"stm": 0.5, "avatar": tau}.get(protocol.name, f"{protocol.name} per-map rule")
    rows = table.rows(threshold) if len(table) else {}
    for row in rows.values():
        row["n_annotated"] = row["n_frames"]
        row["tn_threshold"] = tau
    warnings = _count_unscored(rows, skipped, len(table))
    total = len(frames)
    for kind, count in sorted(flattered.items()):
        what = "keeps every pixel of" if kind == "constant" else "keeps the whole top plateau (over half the pixels) of"
        warnings.append(f"{count} of {total} maps are {kind}: the {protocol.name} protocol {what} them, as "
                        f"{'LVS' if protocol.name == 'lvs' else 'EZ-VSL'}'s evaluator does")
    return ScoredSplit(rows, warnings, frame_ciou)


def _count_unscored(rows: dict[str, dict], skipped: Sequence[tuple[str, str]], scored: int) -> list[str]:
    """Adds the unscored frames to ``n_annotated``; one warning per reason."""
    for row_name, _ in skipped:
        for name in ("all", row_name):
            rows.setdefault(name, {**dict.fromkeys(METRICS), "n_frames": 0, "n_gt": 0, "n_negative": 0,
                                   "n_boxes": 0, "n_annotated": 0, "threshold": None, "tn_threshold": None})
            rows[name]["n_annotated"] += 1
    reasons = Counter(reason for _, reason in skipped)
    total = scored + len(skipped)
    return [f"{count} of {total} annotated frames not scored: {reason}" for reason, count in sorted(reasons.items())]


class _StepMaps:
    """What the scoring of one step's map needs, each computed once however many frames share the step."""

    def __init__(self, heatmap: torch.Tensor, size: tuple[int, int], protocol: Protocol) -> None:
        self.heatmap = heatmap
        self.size = size
        self.protocol = protocol

    @functools.cached_property
    def raw(self) -> np.ndarray:
        """``(H, W)`` float64, the map upsampled (bilinear, half-pixel)."""
        return upsample(self.heatmap, self.size, torch.float64).numpy()

    @functools.cached_property
    def level(self) -> np.ndarray:
        """``(H, W)`` float64, the per-frame min-max map (all 0 when flat)."""
        return normalize(self.raw).numpy().astype(np.float64)

    @functools.cached_property
    def boxes(self) -> torch.Tensor:
        """``(N, 4)`` Otsu box(es) of :attr:`level` after the protocol's floor."""
        return predicted_boxes(self.level, self.protocol)

    @functools.cached_property
    def evaluator_on(self) -> np.ndarray:
        """``(224, 224)`` bool, the pixels the lvs / ezvsl evaluator keeps."""
        return (lvs_on if self.protocol.name == "lvs" else ezvsl_on)(self.heatmap)

    @functools.cached_property
    def flattery(self) -> str | None:
        return _flattery(self.heatmap, self.evaluator_on)


def predicted_boxes(level: np.ndarray, protocol: Protocol) -> torch.Tensor:
    """``(N, 4)`` xyxy boxes of a min-max map ``level`` (the protocol's size): Otsu (after the
    protocol's floor) and the protocol's box mode, as IoU@0.5 scores them."""
    return boxes_from_map(level, mode=protocol.box_mode, min_value=protocol.otsu_floor)


def _steps(frames: list[AnnotatedMap], size: tuple[int, int], protocol: Protocol) -> Iterator[_StepMaps]:
    """One :class:`_StepMaps` per frame; consecutive frames that share a step's map share it."""
    last = None
    for frame in frames:
        if last is None or frame.heatmap is not last.heatmap:
            last = _StepMaps(frame.heatmap, size, protocol)
        yield last


def _pointing(values: np.ndarray, gt: np.ndarray) -> float:
    """Pointing game on the evaluator's ground truth (avloc's addition to their tables)."""
    return pointing_hit(values, gt) if gt.sum() > 0 else 0.0


def _box_iou(frame: AnnotatedMap, predicted: torch.Tensor, size: tuple[int, int], protocol: Protocol) -> float:
    """IoU of the predicted box(es) (on the map's grid) with the frame's boxes."""
    if not frame.annotation.boxes:
        return math.nan
    truth = scale_boxes(check_boxes(frame.annotation.boxes), frame.original_size, size)
    return frame_box_iou(predicted, truth, protocol.matching)
