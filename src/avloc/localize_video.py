"""``avloc localize``: what is making the sound in a video, frame by frame, written for people.

Two passes over the file, both streaming (memory does not grow with the video's length except
by the low-resolution maps, about 1 kB per step, and, for a model that cannot stream, its encoded
steps):

1. **Model**: steps at ``fps`` (frame + the audio centred on it) are decoded, encoded in
   batches and fed to the model's memory a batch at a time (:class:`avloc.localizer.Localizer`);
   a model that cannot stream (AVE, DMRFE, AVFB, TAVLO) gets the whole clip's encoded
   steps at once (held in memory: about 130 kB per step with the default encoders at 256 px);
   each step gives a heat map and class probabilities (none without a classifier), then boxes
   (upsampling to the video's size, min-max, the STM authors' floor, Otsu + contours,
   :func:`avloc.map_geometry.boxes_from_map`). With
   ``stream=True`` every step is encoded alone, as it would be live, and its latency (from
   its decoded inputs to its result) is recorded.
2. **Outputs**: every original frame is drawn (:func:`avloc.render.annotated_frame`) with the
   heat map of the step it falls in (colour map, peak), that step's boxes with their scores,
   the event class of its second and, when ground truth is given (``avloc demo``), the
   annotated boxes of the nearest annotated frame within half a step; then written with the
   original audio.

Outputs in ``out``: ``overlay.mp4``, ``boxes.json``, ``heatmaps.npz``, ``contact_sheet.png``
(each written atomically). Box scores are the share of the map's mass inside the box (STM's
S_n with the map normalised to sum 1). The class of a second is the argmax of the mean class
probabilities of its steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avloc.atomic import atomic_path
from avloc.trained import load_trained
from avloc.io.decode import frame_times, iter_audio, iter_frames, iter_steps, probe
from avloc.io.write import VideoWriter
from avloc.map_geometry import OTSU_FLOOR, boxes_from_map, mass_shares, normalize, upsample
from avloc.localizer import Localizer
from avloc.render import annotated_frame, contact_sheet, heat_layer, write_png
from avloc.types import AvlocError, VideoInfo

log = logging.getLogger(__name__)

STAGES = ("decoding", "audio front end", "visual encoder", "audio encoder", "memory + localisation",
          "writing outputs")


@dataclass
class StageTimer:
    """Wall time per pipeline stage (seconds), accumulated."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started


@dataclass
class Localization:
    """What :func:`localize_video` produced."""

    out: Path
    fps: float  # steps per second
    times: np.ndarray  # (T,) step times, seconds
    heatmaps: np.ndarray  # (T, h, w)
    probabilities: np.ndarray  # (T, K); (T, 0) for a model without a classifier
    classes: list[str]
    boxes: list[np.ndarray]  # per step (N, 4) xyxy, original pixels
    scores: list[np.ndarray]  # per step (N,)
    frames_written: int
    latencies: np.ndarray | None  # (T,) seconds per step with stream=True
    timer: StageTimer

    def files(self) -> dict[str, Path]:
        return {name: self.out / name for name in OUTPUTS}


OUTPUTS = ("overlay.mp4", "boxes.json", "heatmaps.npz", "contact_sheet.png")


def localize_video(
    video: str | os.PathLike,
    out: str | os.PathLike,
    model: str | os.PathLike = "default",
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    stream: bool = False,
    box_mode: str = "enclosing",
    sheet_frames: int = 8,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = True,
    ground_truth: Sequence[tuple[float, np.ndarray]] | None = None,
) -> Localization:
    """Localise the sounding objects of ``video`` and write the four outputs to ``out``.

    Args:
        model: ``"default"`` (the built-in model) or a checkpoint path.
        fps: steps per second (default: the model's training rate).
        start, end: the part of the video to process, in seconds.
        stream: encode one step at a time and record per-step latency.
        box_mode: "enclosing" (one box per step, the STM authors') or "per-contour".
        sheet_frames: frames on the contact sheet, evenly spaced over the steps.
        batch_size: steps encoded together when not streaming.
        ground_truth: annotated frames as ``(time in seconds, (N, 4) xyxy boxes in video
            pixels)``, drawn dashed on the overlay and the contact sheet; a video frame shows
            the nearest annotation within half a step (``0.5 / fps``), none farther away.

    Raises:
        AvlocError: unreadable video, no audio stream, bad range, or a bad model checkpoint.
    """
    video, out = Path(video), Path(out)
    info = probe(video)
    if not info.has_audio:
        raise AvlocError(f"{video}: no audio stream; localising the sounding object needs the soundtrack")
    if sheet_frames < 1 or batch_size < 1:
        raise AvlocError(f"sheet_frames and batch_size must be >= 1, got {sheet_frames} and {batch_size}")
    truth = None if ground_truth is None else _annotations(ground_truth)
    trained = load_trained(model, device)
    # A model that streams runs chunk by chunk with its bounded memory; one that cannot runs offline.
    localizer = Localizer(trained, device, stream=stream or trained.head.stream_refusal() is None)
    fps = localizer.fps if fps is None else fps
    steps = iter_steps(video, fps=fps, size=localizer.frame_size, sample_rate=localizer.mel.sample_rate,
                       start=start, end=end)  # checks fps and the range now, before the first step
    total = len(frame_times(start or 0.0, info.duration if end is None else end, fps))
    if not total:
        raise AvlocError(f"{video}: no steps at {fps:g} per second in the selected range")
    if fps != localizer.fps:
        log.warning("the model was trained at %g steps per second; running it at %g changes what its memory sees",
                    localizer.fps, fps)
    timer = StageTimer()
    times, heatmaps, probabilities, latencies, held = [], [], [], [], []
    chunk = 1 if stream else batch_size
    with tqdm(desc="localise", unit="step", disable=not progress, total=total) as bar:
        while True:
            with timer("decoding"):
                batch = list(islice(steps, chunk))
            if not batch:
                break
            ready = time.perf_counter()
            frames = torch.stack([step.frame for step in batch])  # (N, 3, H, W)
            segments = torch.stack([step.segment for step in batch])  # (N, L)
            with torch.no_grad():
                with timer("visual encoder"):
                    visual = localizer.encode_visual(frames)
                with timer("audio front end"):
                    logmel = localizer.front_end(segments)
                with timer("audio encoder"):
                    audio = localizer.encode_audio(logmel)
            with timer("memory + localisation"):
                if localizer.streams:
                    chunk_maps, chunk_probabilities = localizer.advance(visual, audio)
                    heatmaps.append(chunk_maps.numpy())
                    probabilities.append(chunk_probabilities.numpy())
                else:
                    held.append((visual, audio))
            if stream:
                latencies.append(time.perf_counter() - ready)
            times.extend(step.time for step in batch)
            bar.update(len(batch))
    if held:
        with timer("memory + localisation"):
            visual, audio = (torch.cat(parts) for parts in zip(*held))  # the clip's (N, Cv, h, w), (N, Ca, m, n)
            clip_maps, clip_probabilities = localizer.whole(visual, audio)
            heatmaps.append(clip_maps.numpy())
            probabilities.append(clip_probabilities.numpy())
    result = Localization(
        out=out, fps=fps, times=np.asarray(times), heatmaps=np.concatenate(heatmaps),
        probabilities=np.concatenate(probabilities),
        classes=list(localizer.classes), boxes=[], scores=[], frames_written=0,
        latencies=np.asarray(latencies) if stream else None, timer=timer,
    )
    with timer("memory + localisation"):
        result.boxes, result.scores = _boxes(torch.from_numpy(result.heatmaps), (info.height, info.width), box_mode)
    with timer("writing outputs"):
        _write_json(result, video, str(model), fps)
        _write_npz(result)
    _write_visuals(result, info, fps, start, end, sheet_frames, timer, progress, truth)
    return result


def _annotations(ground_truth: Sequence[tuple[float, np.ndarray]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Annotation times ``(A,)`` in increasing order and their ``(N, 4)`` boxes, checked."""
    items = []
    for n, (moment, boxes) in enumerate(ground_truth):
        array = np.asarray(boxes, dtype=np.float64)
        if array.size % 4 or (array.size and array.shape[-1] != 4) or not np.isfinite(array).all():
            raise AvlocError(f"ground_truth[{n}]: expected finite (N, 4) xyxy boxes, got shape {array.shape}")
        if not math.isfinite(moment):
            raise AvlocError(f"ground_truth[{n}]: time must be finite, got {moment}")
        items.append((float(moment), array.reshape(-1, 4)))
    items.sort(key=lambda item: item[0])
    return np.array([t for t, _ in items], dtype=np.float64), [b for _, b in items]


def _nearest_truth(truth: tuple[np.ndarray, list[np.ndarray]], moment: float, within: float) -> np.ndarray:
    """The boxes of the annotation nearest to ``moment`` if at most ``within`` seconds away, else none."""
    times, boxes = truth
    after = int(np.searchsorted(times, moment))
    near = [i for i in (after - 1, after) if 0 <= i < len(times) and abs(times[i] - moment) <= within + 1e-6]
    if not near:
        return np.zeros((0, 4))
    return boxes[min(near, key=lambda i: abs(times[i] - moment))]


def _boxes(heatmaps: torch.Tensor, size: tuple[int, int], mode: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Boxes (video pixels) of every map ``(T, h, w)``, and the share of its map's mass inside each."""
    full = upsample(heatmaps, size)  # (T, h, w) -> (T, H, W): boxes come out in video pixels
    levels = normalize(full)
    all_boxes, all_scores = [], []
    for level, step_map in zip(levels, full):
        boxes = boxes_from_map(level, mode=mode, min_value=OTSU_FLOOR).numpy()  # (N, 4), as eval's stm protocol
        all_boxes.append(boxes)
        all_scores.append(mass_shares(step_map, boxes))
    return all_boxes, all_scores


def _second_classes(result: Localization) -> dict[int, tuple[str, float]]:
    """Event class of every second that has steps: argmax of the mean probabilities (none for a
    model without a classifier)."""
    if not result.probabilities.shape[1]:
        return {}
    seconds = np.floor(result.times + 1e-9).astype(int)
    classes = {}
    for second in np.unique(seconds):
        mean = result.probabilities[seconds == second].mean(axis=0)
        classes[int(second)] = (result.classes[int(mean.argmax())], float(mean.max()))
    return classes


def _write_json(result: Localization, video: Path, model: str, fps: float) -> None:
    per_second = _second_classes(result)
    document = {
        "video": str(video),
        "model": model,
        "fps": fps,
        "classes": result.classes,
        "box_format": "xyxy, original video pixels, x2/y2 exclusive",
        "frames": [
            {"time": round(float(t), 6), "boxes": boxes.round(2).tolist(), "scores": scores.round(4).tolist(),
             **_step_class(result.classes, p)}
            for t, boxes, scores, p in zip(result.times, result.boxes, result.scores, result.probabilities)
        ],
        "seconds": [{"start": s, "end": s + 1, "class": c, "probability": round(p, 4)}
                    for s, (c, p) in per_second.items()],
    }
    with atomic_path(result.out / "boxes.json") as tmp:
        tmp.write_text(json.dumps(document, indent=1))


def _step_class(classes: list[str], probabilities: np.ndarray) -> dict:
    """``class`` and ``class_probability`` of one step: both None for a model without a classifier."""
    if not probabilities.size:
        return {"class": None, "class_probability": None}
    return {"class": classes[int(probabilities.argmax())], "class_probability": round(float(probabilities.max()), 4)}


def _write_npz(result: Localization) -> None:
    with atomic_path(result.out / "heatmaps.npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, times=result.times, heatmaps=result.heatmaps.astype(np.float32),
                            probabilities=result.probabilities.astype(np.float32), classes=np.array(result.classes))


def _write_visuals(result: Localization, info: VideoInfo, fps: float, start: float | None, end: float | None,
                   sheet_frames: int, timer: StageTimer, progress: bool,
                   truth: tuple[np.ndarray, list[np.ndarray]] | None) -> None:
    """The overlay video (every original frame, original audio) and the contact sheet."""
    video = info.path
    first = result.times[0] - 0.5 / fps  # the processed range's start
    per_second = _second_classes(result)
    chosen = set(np.linspace(0, len(result.times) - 1, min(sheet_frames, len(result.times))).round().astype(int))
    tiles: dict[int, np.ndarray] = {}
    width, height = info.width - info.width % 2, info.height - info.height % 2  # H.264 needs even sizes
    rate, channels, audio = iter_audio(video, start, end)
    audio_until = 0  # samples written
    frames = iter_frames(video, start, end)
    layer, layer_of = None, None
    with VideoWriter(result.out / "overlay.mp4", info.frame_rate or fps, width, height, rate, channels) as writer:
        with tqdm(desc="overlay", unit="frame", disable=not progress) as bar:
            while True:
                with timer("decoding"):
                    item = next(frames, None)
                if item is None:
                    break
                frame_time, frame = item
                with timer("writing outputs"):
                    k = int(np.clip(np.floor((frame_time - first) * fps + 1e-6), 0, len(result.times) - 1))
                    second = int(np.floor(result.times[k] + 1e-9))
                    caption = f"{frame_time:.2f} s"
                    if second in per_second:
                        name, probability = per_second[second]
                        caption += f"  {name} {100 * probability:.0f}%"
                    if layer_of != k:  # the colour layer changes once per step, not per frame
                        layer, layer_of = heat_layer(torch.from_numpy(result.heatmaps[k]), (height, width)), k
                    shown = None if truth is None else _nearest_truth(truth, frame_time, 0.5 / fps)
                    image = annotated_frame(frame[:height, :width], layer, result.boxes[k], result.scores[k], caption,
                                            ground_truth=shown)
                    writer.write_frame(image)
                    if k in chosen and (k not in tiles or frame_time <= result.times[k] + 1e-6):
                        tiles[k] = image  # the frame the model saw at step k
                    result.frames_written += 1
                with timer("decoding"):
                    wanted = round((frame_time - first + 1.0 / (info.frame_rate or fps)) * rate)
                    blocks = []
                    while audio_until < wanted:
                        block = next(audio, None)
                        if block is None:
                            break
                        blocks.append(block)
                        audio_until += block.shape[1]
                with timer("writing outputs"):
                    for block in blocks:
                        writer.write_audio(block)
                bar.update()
        with timer("decoding"):
            rest = list(audio)
        with timer("writing outputs"):
            for block in rest:
                writer.write_audio(block)
    with timer("writing outputs"):
        write_png(result.out / "contact_sheet.png", contact_sheet([tiles[k] for k in sorted(tiles)]))
