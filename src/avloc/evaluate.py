"""``avloc eval``: localisation and classification metrics of a trained model, per scenario.

Two passes. Pass 1 runs the model over every clip of the split (features from the cache,
or decoded and encoded from the videos) and keeps the low-resolution heat map of every
annotated frame. Pass 2 scores them under two protocols, printed with the numbers:

- **STM / LVS (per frame)**: the map is upsampled bilinearly to ``size`` x ``size``,
  min-max normalised, and thresholded at 0.5: mean cIoU@0.5, AP50 (share of frames with
  cIoU >= 0.5), AUC of the success rate over cIoU thresholds 0, 0.05, ..., 1, and IoU@0.5
  of the boxes from Otsu + contours against the ground-truth boxes; pointing game (share of
  frames whose map maximum lies inside a ground-truth box).
- **AVATAR (global)**: the raw maps (no per-frame normalisation; divided by one constant,
  the split's maximum, which changes no ranking) are thresholded at the value above which
  the top 10% of all pixels of the split lie; TN% is measured on frames whose ground truth
  has no box (see :func:`avloc.metrics.true_negative_rate` for the rule).

Rows: a frame counts toward its annotated scenario, except that every frame of a clip
tagged ``cross-event`` counts toward the ``cross-event`` row instead; ``all`` holds every
frame. Ground-truth boxes (original video pixels) are rasterised on the ``size`` grid.
Baselines (``baseline:random``, ``baseline:centre``) replace the model by a map of uniform
noise (8 x 8, upsampled) or by the centred box of half the frame's width and height.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avloc.atomic import atomic_path
from avloc.cross_modal import cross_modal_accuracy
from avloc.data.cache import CacheMeta
from avloc.data.manifest import ClipRecord, FrameAnnotation
from avloc.data.sources import load_dataset, open_features
from avloc.data.windows import FeatureWindows
from avloc.extract import encode_clip
from avloc.inference import load_trained
from avloc.io.decode import frame_times, iter_steps, probe
from avloc.localize import boxes_from_map, normalize, upsample
from avloc.metrics import ClassificationMeter, LocalizationMeter, annotation_map
from avloc.types import AvlocError, FeatureShapeError

MAX_MAP_SIZE = 4096  # maps are upsampled to size x size floats, one frame at a time
SCENARIO_ROWS = ("single", "mixed", "multi-entity", "off-screen", "cross-event", "all")
BASELINES = ("random", "centre")


@dataclass(frozen=True)
class Protocol:
    """How maps become numbers; printed and stored with every result."""

    size: int = 256  # maps are upsampled to size x size; boxes rasterised on that grid
    threshold: float | str = 0.5  # per-frame, on min-max maps (strict >), or "median" of each map
    gt_convention: str = "auto"  # the frame's own rule (manifest "ground_truth"), else union; or
    # "union", "enclosing" (the STM authors'), "consensus" (Flickr-SoundNet) for every frame
    box_mode: str = "enclosing"  # Otsu + contours -> one enclosing box, or "per-contour"
    matching: str = "enclosing"  # how several boxes are compared for IoU@0.5
    top_percent: float = 10.0  # AVATAR's global threshold for TN%

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= MAX_MAP_SIZE:
            raise AvlocError(f"the map size (--size) must be 1 to {MAX_MAP_SIZE} pixels, got {self.size!r}")

    def describe(self) -> str:
        return (
            f"maps upsampled (bilinear) to {self.size}x{self.size}; cIoU/AP50/AUC: per-frame min-max, "
            f"threshold > {'the map median' if self.threshold == 'median' else self.threshold}, "
            f"ground truth = {GT_DESCRIPTIONS[self.gt_convention]}, polygons where given; "
            f"IoU@0.5: Otsu + contours, {self.box_mode} box(es), {self.matching} matching; "
            f"TN%: raw maps, global top-{self.top_percent:g}% threshold over the split, frames without boxes"
        )


GT_DESCRIPTIONS = {
    "auto": "each frame's own rule (union of boxes unless the dataset names one)",
    "union": "union of boxes",
    "enclosing": "enclosing box of the boxes",
    "consensus": "consensus of boxes (sum / 2, clipped at 1)",
}


@dataclass
class AnnotatedMap:
    """One annotated frame's raw heat map, its ground truth, and the table row it counts toward."""

    heatmap: torch.Tensor  # (h, w) raw map at feature resolution
    annotation: FrameAnnotation  # ground truth in original pixels
    original_size: tuple[int, int]
    row: str

    def ground_truth(self, size: tuple[int, int], convention: str) -> np.ndarray:
        """``(H, W)`` ground-truth map under ``convention`` ("auto": the frame's own rule)."""
        if convention == "auto":
            convention = self.annotation.ground_truth or "union"
        gt = annotation_map(self.annotation.boxes, size, convention, self.original_size, self.annotation.masks)
        return gt.numpy().astype(np.float64)


class _Predictor:
    """Heat maps (T, h, w) and logits (T, K) | None of one clip, for a model or a baseline."""

    def __init__(self, source: str, features: str | None, device: torch.device):
        self.device, self.cache, self.baseline = device, None, None
        if source.startswith("baseline:"):
            self.baseline = source.removeprefix("baseline:")
            if self.baseline not in BASELINES:
                raise AvlocError(f"unknown baseline {self.baseline!r}; expected baseline:random or baseline:centre")
            self.fps, self.classes, self.generator = 4.0, None, torch.Generator().manual_seed(0)
            return
        trained = load_trained(source, device)
        self.config, self.classes, self.model = trained.config, trained.classes, trained.head
        self.fps = trained.config.fps
        if features is not None:
            self.cache = open_features(features)
            if trained.features_meta:
                differences = CacheMeta.from_json(trained.features_meta).differences(self.cache.meta)
                if differences:
                    raise AvlocError(f"{self.cache.path}: extracted with other settings than the model was trained "
                                     f"on ({', '.join(differences)})")
        else:
            visual, audio, self.mel = trained.encoders(device)
            self.encoders = (visual, audio)

    @torch.no_grad()
    def __call__(self, record: ClipRecord, duration: float) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
        if self.baseline is not None:
            times = frame_times(0.0, duration, self.fps)
            return self._baseline_maps(len(times)), None, times
        if self.cache is not None:
            clip = self.cache.read(record.id)
        else:
            visual, audio = self.encoders
            steps = iter_steps(record.video, fps=self.config.fps, size=self.config.size,
                               sample_rate=self.mel.sample_rate)
            clip = encode_clip(steps, visual, audio, self.mel, 16, self.device)
        try:
            output = self.model(visual=torch.from_numpy(clip.visual)[None].to(self.device),
                                audio=torch.from_numpy(clip.audio)[None].to(self.device))
        except FeatureShapeError as error:  # a cache whose arrays do not fit its own metadata
            source = self.cache.path if self.cache is not None else record.video
            raise AvlocError(f"{source}: clip {record.id!r}: {error}") from None
        logits = output.logits[0].cpu() if output.logits is not None else None
        return output.heatmap[0].cpu(), logits, clip.times

    def _baseline_maps(self, count: int) -> torch.Tensor:
        if self.baseline == "random":
            return torch.rand(count, 8, 8, generator=self.generator)
        centre = torch.zeros(count, 8, 8)
        centre[:, 2:6, 2:6] = 1.0
        return centre


def evaluate(
    source: str | os.PathLike,
    dataset: str | os.PathLike,
    split: str = "test",
    features: str | None = None,
    protocol: Protocol = Protocol(),
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Score ``source`` (a checkpoint path, or ``baseline:random`` / ``baseline:centre``) on a split.

    Returns a JSON-serialisable report: ``rows`` (per scenario), ``segment_accuracy``,
    ``protocol`` (its fields and a description), ``source``, ``split``, ``n_clips``.
    """
    records = load_dataset(dataset, require_videos=features is None).split(split)
    if not records:
        raise AvlocError(f"{dataset}: the {split} split is empty")
    predictor = _Predictor(str(source), features, torch.device(device))
    frames, segments = [], ClassificationMeter()
    for record in tqdm(records, desc=f"eval {split}", unit="clip", disable=not progress):
        # Features stand in for a missing video (e.g. AVE's precomputed ones): nothing to probe.
        original = None if predictor.cache is not None and not record.video.is_file() else probe(record.video)
        heatmaps, logits, times = predictor(record, None if original is None else original.duration)
        row = "cross-event" if "cross-event" in record.tags else None
        for step, annotation in record.annotated_steps(times, tolerance=0.5 / predictor.fps):
            if original is None:
                raise AvlocError(f"{record.video}: no such file (its frame size is needed to score the boxes)")
            frames.append(AnnotatedMap(heatmaps[step], annotation, (original.height, original.width),
                                       row or annotation.scenario or "unlabelled"))
        if logits is not None:
            labels = [record.label_at(float(t)) for t in times]
            unknown = sorted(set(labels) - set(predictor.classes))
            if unknown:
                raise AvlocError(f"{dataset}: clip {record.id!r} is labelled {', '.join(unknown)}, a class the model "
                                 f"was not trained on (it knows {len(predictor.classes)}: "
                                 f"{', '.join(predictor.classes[:5])}{', ...' if len(predictor.classes) > 5 else ''})")
            targets = [predictor.classes.index(label) for label in labels]
            segments.update(logits.argmax(-1).numpy(), np.asarray(targets))
    if not frames and not segments.total:
        raise AvlocError(f"{dataset}: no annotated frames in the {split} split (manifest 'frames') and no class "
                         "scores from the model: nothing to score")
    rows = score_maps(frames, protocol) if frames else {}  # e.g. AVE: segment labels, no boxes
    return {
        "source": str(source),
        "split": split,
        "n_clips": len(records),
        "rows": rows,
        "segment_accuracy": segments.summary()["accuracy"],
        "protocol": {**asdict(protocol), "description": protocol.describe()},
    }


def score_maps(frames: list[AnnotatedMap], protocol: Protocol) -> dict:
    """The metrics of ``frames`` under ``protocol``, one row per scenario (see the module docstring)."""
    size = (protocol.size, protocol.size)
    per_frame = LocalizationMeter(protocol.threshold, matching=protocol.matching)
    scale = max(float(frame.heatmap.max()) for frame in frames) or 1.0
    avatar = LocalizationMeter("global", top_percent=protocol.top_percent)
    for frame in frames:
        raw = upsample(frame.heatmap, size)  # (h, w) -> (H, W)
        normalised = normalize(raw)
        pred_boxes = boxes_from_map(normalised, mode=protocol.box_mode)
        boxes = np.asarray(frame.annotation.boxes, dtype=np.float64).reshape(-1, 4)  # (N, 4), N may be 0
        gt = frame.ground_truth(size, protocol.gt_convention)
        per_frame.update(normalised, gt_boxes=boxes, gt_map=gt, pred_boxes=pred_boxes, scenario=frame.row,
                         from_size=frame.original_size)
        avatar.update((raw / scale).clamp(0, 1), gt_map=gt, scenario=frame.row)
    rows, tn_rows = per_frame.summary(), avatar.summary()
    for name, row in rows.items():
        row["tn_rate"] = tn_rows[name]["tn_rate"]
        row["tn_threshold"] = tn_rows[name]["threshold"]
    return rows


PROTOCOLS = {
    "stm": Protocol(),  # the STM paper: 256 px, threshold 0.5
    "lvs": Protocol(size=224, threshold="median"),  # LVS / EZ-VSL scripts: 224 px, per-map median
}


def format_table(report: dict) -> str:
    """The report as a fixed-width table with the protocol underneath."""
    header = (f"{'scenario':<13} {'frames':>6} {'cIoU@0.5':>9} {'AP50':>6} {'AUC':>6} {'IoU@0.5':>8} "
              f"{'TN%':>6} {'point':>6}")
    lines = [f"{report['source']} on {report['split']} ({report['n_clips']} clips)", header, "-" * len(header)]
    rows = report["rows"]
    if not rows:  # e.g. AVE: per-second labels, no boxes
        lines[1:] = ["no annotated frames in this split: no localisation metrics, segment accuracy only"]
    for name in [*(n for n in SCENARIO_ROWS if n in rows), *(n for n in rows if n not in SCENARIO_ROWS)]:
        row = rows[name]

        def cell(key: str, width: int, percent: bool = False) -> str:
            value = row[key]
            if value is None:
                return f"{'-':>{width}}"
            return f"{100 * value:>{width}.1f}" if percent else f"{value:>{width}.3f}"

        lines.append(f"{name:<13} {row['n_frames']:>6d} {cell('ciou_at', 9)} {cell('ap50', 6)} {cell('auc', 6)} "
                     f"{cell('iou_at_0.5', 8)} {cell('tn_rate', 6, percent=True)} {cell('pointing', 6)}")
    accuracy = report["segment_accuracy"]
    lines.append(f"segment accuracy: {'-' if accuracy is None else f'{accuracy:.3f}'}")
    lines.append(f"protocol: {report['protocol']['description']}")
    return "\n".join(lines)


def write_report(report: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return path


def evaluate_cross_modal(source: str | os.PathLike, dataset: str | os.PathLike, features: str | None,
                         split: str = "test", device: str | torch.device = "cpu") -> dict:
    """A2V / V2A exact-match accuracy (AVE, ECCV 2018, eq. 8) of a model with a common embedding.

    Reads whole clips from a feature cache; see :func:`avloc.cross_modal.cross_modal_accuracy`.
    """
    if features is None:
        raise AvlocError("--task cross-modal reads a feature cache: pass --features FILE.h5")
    records = load_dataset(dataset, require_videos=False).split(split)
    if not records:
        raise AvlocError(f"{dataset}: the {split} split is empty")
    trained = load_trained(source, device)
    clips = FeatureWindows(open_features(features), records, trained.classes, steps=None)
    scores = cross_modal_accuracy(trained.head, clips, background=len(trained.classes) - 1, device=device)
    return {"source": str(source), "split": split, "task": "cross-modal", **scores}
