"""``avloc eval``: localisation and classification metrics of a trained model, per scenario.

Two passes. Pass 1 runs the model over every clip of the split (features from the cache,
or decoded and encoded from the videos) and keeps the low-resolution heat map of every
step. Every annotated frame is scored by the map of the step whose interval holds the
frame's time: step ``k`` at ``t_k`` covers ``[t_k - 0.5 / fps, t_k + 0.5 / fps)`` (the first
step from the clip's start, the last to the video's end; a frame on a boundary goes to the
later step). That is the rule the ``avloc localize`` overlay draws by, and every annotated
frame is scored, however dense the annotation (AVE's CVAT boxes: one per video frame). Pass
2 scores the maps under a protocol (:mod:`avloc.protocols`), printed with the numbers.

Rows: a frame counts toward its annotated scenario, except that every frame of a clip
tagged ``cross-event`` counts toward the ``cross-event`` row instead; ``all`` holds every
frame. Each row gives the annotated frames and the frames scored; a difference is a warning
with its reason.

Event classes: ``segment_accuracy`` is AVE's, per 1-s segment: the steps whose time falls
in second ``s`` are combined by the mean of their softmax probabilities, and the argmax is
compared with the label at ``s + 0.5``; ``step_accuracy`` is the same per model step.
Baselines (``baseline:random``, ``baseline:centre``, :mod:`avloc.baselines`) replace the model
and are scored the same way. The report and its table: :mod:`avloc.report`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from avloc.baselines import BASELINE_FPS, BaselineMaps, baseline_name
from avloc.data.cache import CacheMeta, encode_clip
from avloc.data.manifest import ClipRecord
from avloc.data.sources import load_dataset, open_features
from avloc.data.usable import check_video, load_for_videos, usable_clips
from avloc.eval_panels import FrameSource, save_visualizations
from avloc.io.decode import frame_times, iter_steps, probe
from avloc.metrics import ClassificationMeter
from avloc.protocols import PROTOCOLS, AnnotatedMap, Protocol, score_maps
from avloc.report import build_report
from avloc.trained import load_trained
from avloc.types import AvlocError, FeatureShapeError, VideoInfo


class _BaselinePredictor:
    """A baseline's maps for every step of a clip, no logits."""

    cache, classes, fps = None, None, BASELINE_FPS

    def __init__(self, name: str):
        self.maps = BaselineMaps(name)

    def __call__(self, record: ClipRecord, duration: float) -> tuple[torch.Tensor, None, np.ndarray]:
        times = frame_times(0.0, duration, self.fps)
        return self.maps(len(times)), None, times


class _ModelPredictor:
    """A trained model's heat maps (T, h, w) and logits (T, K) | None of one clip, from the
    feature cache or from the decoded video."""

    def __init__(self, checkpoint: str, features: str | None, device: torch.device):
        self.device = device
        self.cache = None
        trained = load_trained(checkpoint, device)
        self.config = trained.config
        self.classes = trained.classes
        self.model = trained.head
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
    def __call__(self, record: ClipRecord, duration: float | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
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


def _check_clip(record: ClipRecord, predictor: _BaselinePredictor | _ModelPredictor) -> VideoInfo | None:
    """What scoring ``record`` reads, looked at once (:mod:`avloc.data.usable`): a model from the
    videos decodes frames and sound, a baseline reads the headers; from a cache, its features and
    (for the boxes) the video's headers."""
    if predictor.cache is not None:
        if record.id not in predictor.cache:
            raise AvlocError(f"{predictor.cache.path}: no features for clip {record.id!r} (its video: {record.video})")
        return probe(record.video) if record.frames else None
    return check_video(record.video) if isinstance(predictor, _ModelPredictor) else probe(record.video)


def _predictor(source: str, features: str | None, device: torch.device) -> _BaselinePredictor | _ModelPredictor:
    baseline = baseline_name(source)
    return _BaselinePredictor(baseline) if baseline else _ModelPredictor(source, features, device)


def annotated_maps(record: ClipRecord, heatmaps: torch.Tensor, times: np.ndarray, fps: float,
                   original_size: tuple[int, int], duration: float | None = None
                   ) -> tuple[list[AnnotatedMap], list[tuple[str, str]]]:
    """Every annotated frame of ``record`` with the map of the step whose interval holds it.

    Args:
        record: the clip, its ``frames`` the annotations.
        heatmaps: ``(T, h, w)`` maps of the steps at ``times``.
        times: ``(T,)`` step times in seconds, ``1 / fps`` apart.
        fps: steps per second.
        original_size: ``(H0, W0)`` of the video (the boxes' pixels).
        duration: the video's length; the last step's interval reaches to it (default: the
            last step's own interval).

    Returns:
        The frames to score, and ``(row, reason)`` for each annotated frame outside every
        step's interval (before the clip's first step or after the video's end).
    """
    forced_row = "cross-event" if "cross-event" in record.tags else None
    step_maps = heatmaps.unbind(0)  # (T, h, w) -> T x (h, w): frames of one step share its map
    steps = step_indices(times, fps, [annotation.t for annotation in record.frames], duration)
    frames, unscored = [], []
    for annotation, step in zip(record.frames, steps):
        row = forced_row or annotation.scenario or "unlabelled"
        if step < 0:
            unscored.append((row, "the frame's time lies outside the video's steps"))
        else:
            frames.append(AnnotatedMap(step_maps[step], annotation, original_size, row))
    return frames, unscored


def step_indices(times: np.ndarray, fps: float, moments: Sequence[float], duration: float | None = None
                 ) -> np.ndarray:
    """The step whose interval holds each moment (seconds), -1 outside every interval.

    Step ``k`` at ``times[k]`` covers ``[times[k] - 0.5 / fps, times[k] + 0.5 / fps)``; the last
    one reaches to ``duration`` when that is later; a moment on a boundary goes to the later step.
    """
    times = np.asarray(times, dtype=np.float64)  # (T,)
    moments = np.asarray(moments, dtype=np.float64)  # (M,)
    if not len(times):
        return np.full(len(moments), -1, dtype=np.int64)
    begin = times[0] - 0.5 / fps
    end = max(times[-1] + 0.5 / fps, duration or 0.0)
    boundaries = (times[1:] + times[:-1]) / 2  # (T - 1,) between consecutive steps
    steps = np.searchsorted(boundaries, moments, side="right")  # (M,)
    inside = (moments >= begin - 1e-9) & (moments <= end + 1e-9)
    return np.where(inside, steps, -1)


def second_predictions(probabilities: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AVE's per-segment prediction: the mean class probabilities of the steps in each whole second.

    Args:
        probabilities: ``(T, K)`` step class probabilities (softmax of the logits).
        times: ``(T,)`` step times in seconds.

    Returns:
        ``(seconds (S,), predicted class (S,))`` for the seconds that hold at least one step.
    """
    second_of_step = np.floor(np.asarray(times, dtype=np.float64) + 1e-9).astype(np.int64)  # (T,)
    seconds = np.unique(second_of_step)
    predicted = np.array([probabilities[second_of_step == s].mean(axis=0).argmax() for s in seconds], dtype=np.int64)
    return seconds, predicted


def class_targets(record: ClipRecord, moments: np.ndarray, classes: Sequence[str], dataset: str | os.PathLike
                  ) -> np.ndarray:
    """Class indices of the labels at ``moments`` (seconds); a label the model lacks is an error."""
    labels = [record.label_at(float(t)) for t in moments]
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise AvlocError(f"{dataset}: clip {record.id!r} is labelled {', '.join(unknown)}, a class the model "
                         f"was not trained on (it knows {len(classes)}: "
                         f"{', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})")
    return np.asarray([classes.index(label) for label in labels], dtype=np.int64)


def evaluate(
    source: str | os.PathLike,
    dataset: str | os.PathLike,
    split: str = "test",
    features: str | None = None,
    protocol: Protocol = PROTOCOLS["stm"],
    device: str | torch.device = "cpu",
    progress: bool = True,
    visualizations: int = 0,
    visualization_dir: str | os.PathLike | None = None,
    skip_broken: bool = False,
) -> dict:
    """Score ``source`` (a checkpoint path, or ``baseline:random`` / ``baseline:centre``) on a split.

    Returns a JSON-serialisable report (:func:`build_report`): ``rows`` (per scenario, with
    annotated and scored frame counts), ``warnings``, ``segment_accuracy`` / ``n_segments``
    (per 1-s segment), ``step_accuracy`` / ``n_steps``, ``protocol`` (its fields and a
    description), ``source``, ``split``, ``n_clips``. With ``visualizations`` N > 0, panels of N
    frames per scenario are written under ``visualization_dir``
    (:func:`avloc.eval_panels.save_visualizations`) and listed in the report's ``visualizations``.

    Every clip's video is looked at before the first is scored (:func:`_check_clip`): the first
    that cannot be read stops the call in one line naming its file; with ``skip_broken`` such
    clips are left out (and, from a cache, those it has no features for), ``n_clips`` counts the
    clips used and ``skipped`` lists the others as ``{"id", "reason"}``.
    """
    if visualizations < 0 or (visualizations and visualization_dir is None):
        raise ValueError("visualizations must be >= 0 and, when > 0, come with a visualization_dir")
    if features is None:
        records = load_for_videos(dataset, skip_broken).split(split)
    else:
        records = load_dataset(dataset, require_videos=False).split(split)
    if not records:
        raise AvlocError(f"{dataset}: the {split} split is empty")
    predictor = _predictor(str(source), features, torch.device(device))
    records, _, skipped = usable_clips(records, skip_broken, check=lambda record: _check_clip(record, predictor))
    if not records:
        raise AvlocError(f"{dataset}: no clip of the {split} split can be read, e.g. {skipped[0].reason}")
    frames, unscored, segments, steps = [], [], ClassificationMeter(), ClassificationMeter()
    sources = []  # FrameSource of each frame, for the panels
    for record in tqdm(records, desc=f"eval {split}", unit="clip", disable=not progress):
        # Features stand in for a missing video (e.g. AVE's precomputed ones): nothing to probe.
        original = None if predictor.cache is not None and not record.video.is_file() else probe(record.video)
        heatmaps, logits, times = predictor(record, None if original is None else original.duration)
        if record.frames:
            if original is None:
                raise AvlocError(f"{record.video}: no such file (its frame size is needed to score the boxes)")
            clip_frames, clip_unscored = annotated_maps(record, heatmaps, times, predictor.fps,
                                                        (original.height, original.width), original.duration)
            frames += clip_frames
            unscored += clip_unscored
            sources += [FrameSource(record.id, record.video)] * len(clip_frames)
        if logits is not None and len(times):
            steps.update(logits.argmax(-1).numpy(), class_targets(record, times, predictor.classes, dataset))
            seconds, predicted = second_predictions(torch.softmax(logits.double(), -1).numpy(), times)
            segments.update(predicted, class_targets(record, seconds + 0.5, predictor.classes, dataset))
    if not frames and not unscored and not steps.total:
        raise AvlocError(f"{dataset}: no annotated frames in the {split} split (manifest 'frames') and no class "
                         "scores from the model: nothing to score")
    scored = score_maps(frames, protocol, unscored)
    report = build_report(str(source), split, len(records), scored, protocol, segments, steps)
    if skip_broken:
        report["skipped"] = [{"id": s.id, "reason": s.reason} for s in skipped]
    if visualizations:
        panels = save_visualizations(frames, sources, protocol, scored.frame_ciou, visualizations, visualization_dir)
        report["visualizations"] = [str(path) for path in panels]
    return report


