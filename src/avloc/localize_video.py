"""``avloc localize``: what is making the sound in a video, frame by frame, written for people.

One decoding pass over the file, streaming, and two kinds of work on it at once (memory does not
grow with the video's length except by the low-resolution maps, about 1 kB per step, and, for a
model that cannot stream, its encoded steps):

1. **Model**: steps at ``fps`` (frame + the audio centred on it) are decoded (on CUDA by a
   thread, up to two batches ahead of the encoders), encoded in batches and fed to the
   model's memory a batch at a time (:class:`avloc.localizer.Localizer`);
   a model that cannot stream (AVE, DMRFE, AVFB, TAVLO) gets the whole clip's encoded
   steps at once (held in memory: about 130 kB per step with the default encoders at 256 px);
   each step gives a heat map and class probabilities (none without a classifier), then boxes
   (the ``stm`` evaluation protocol's min-max, floor, Otsu + contours on a 128 x 128 grid,
   scaled to the video's pixels: :func:`avloc.map_geometry.frame_boxes`, within one feature
   cell of the protocol's 256 x 256 boxes). With
   ``stream=True`` every step is encoded alone, as it would be live, and its latency (from
   its decoded inputs to its result) is recorded.
2. **Outputs**, on their own thread while the model works (:class:`_Overlay`): every original
   frame, decoded in the same pass as the steps (:func:`avloc.io.decode.iter_steps`'s
   ``frames_to``), is drawn (:func:`avloc.render.annotated_frame`) once its step's results are in,
   with the heat map of the step it falls in (colour map, peak), that step's boxes with their
   scores, the event class of its second and, when ground truth is given (``avloc demo``), the
   annotated boxes of the nearest annotated frame within half a step; then written with the
   original audio (decoded again, at its own rate: cheap). A model that cannot stream has its
   maps only at the clip's end, so its overlay decodes the video a second time instead of
   holding every frame. About one batch of original frames is held between the two.

Outputs in ``out``: ``overlay.mp4`` (not with ``overlay=False``, ``--no-overlay``: then only
the contact sheet's frames are drawn), ``boxes.json``, ``heatmaps.npz``, ``contact_sheet.png``
(each written atomically). Box scores are the share of the map's mass inside the box (STM's
S_n with the map normalised to sum 1). The class of a second is the argmax of the mean class
probabilities of its steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avloc.atomic import atomic_path
from avloc.trained import load_trained
from avloc.io.decode import AVStep, frame_times, iter_audio, iter_frames, iter_steps, probe
from avloc.io.prefetch import prefetched
from avloc.io.write import VideoWriter
from avloc.map_geometry import frame_boxes
from avloc.localizer import Localizer, check_streams
from avloc.render import annotated_frame, contact_sheet, heat_layer, write_png
from avloc.types import AvlocError, VideoInfo

log = logging.getLogger(__name__)

STAGES = ("decoding", "audio front end", "visual encoder", "audio encoder", "memory + localisation",
          "handing over to the overlay", "writing outputs")  # the calling thread's, one after another
OVERLAY_STAGE = "overlay (its own thread)"  # drawing + encoding the overlay, while the stages above run


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
    overlay: bool = True  # whether overlay.mp4 was written

    def files(self) -> dict[str, Path]:
        return {name: self.out / name for name in outputs(self.overlay)}


OUTPUTS = ("overlay.mp4", "boxes.json", "heatmaps.npz", "contact_sheet.png")


def outputs(overlay: bool = True) -> tuple[str, ...]:
    """The files :func:`localize_video` writes: :data:`OUTPUTS`, less ``overlay.mp4`` without the overlay."""
    return OUTPUTS if overlay else OUTPUTS[1:]


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
    precision: str = "auto",
    overlay: bool = True,
    decode_ahead: bool | None = None,
    localizer: Localizer | None = None,
) -> Localization:
    """Localise the sounding objects of ``video`` and write the four outputs (three without the overlay) to ``out``.

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
        precision: autocast of the encoders and the model (:class:`avloc.localizer.Localizer`):
            ``auto`` is bf16 / fp16 on CUDA, float32 on the CPU.
        overlay: False: no ``overlay.mp4`` (drawing and encoding every original frame costs
            about as much CPU as the default encoders); only the contact sheet's frames are
            drawn, and an ``overlay.mp4`` an earlier run left in ``out`` is removed.
        decode_ahead: decode the next steps on a thread while the encoders work
            (:func:`avloc.io.prefetch.prefetched`); None: on CUDA (where the CPU is free
            meanwhile), not on the CPU (where decoding and the encoders share the cores).
        localizer: :func:`localizer_for` of ``model``, made once for many videos (its memory is
            reset here; ``device`` and ``precision`` are then its own): loading a checkpoint
            and building its encoders costs seconds for ResNet-152 + VGGish. ``model`` still
            names the model in boxes.json.

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
    if localizer is None:
        localizer = localizer_for(model, device, precision)
    localizer.reset()
    if stream:
        check_streams(localizer.trained)
    fps = localizer.fps if fps is None else fps
    # One decoding pass: a streaming model's steps and every original frame for the overlay (the
    # overlay of a frame waits for its step's map); a model that cannot stream has no map before
    # the clip's end, so its overlay decodes the file again rather than hold every frame.
    decoded: list[tuple[float, object]] = []  # (time, av.VideoFrame) since the last step
    steps = iter_steps(video, fps=fps, size=localizer.frame_size, sample_rate=localizer.mel.sample_rate,
                       start=start, end=end,  # checks fps and the range now, before the first step
                       frames_to=(lambda moment, frame: decoded.append((moment, frame))) if localizer.streams else None)
    items = _with_frames(steps, decoded)  # (step, its frames) ..., then (None, the frames after the last step)
    if localizer.accel.workers > 0 if decode_ahead is None else decode_ahead:  # decoding beside the encoders
        items = prefetched(items, depth=2 * (1 if stream else batch_size))
    planned = frame_times(start or 0.0, info.duration if end is None else end, fps)  # (T,) the steps' times
    total = len(planned)
    if not total:
        raise AvlocError(f"{video}: no steps at {fps:g} per second in the selected range")
    if fps != localizer.fps:
        log.warning("the model was trained at %g steps per second; running it at %g changes what its memory sees",
                    localizer.fps, fps)
    timer = StageTimer()
    times, heatmaps, probabilities, boxes, scores, latencies, held = [], [], [], [], [], [], []
    chunk = 1 if stream else batch_size
    drawer = _Overlay(out, info, fps, planned, list(localizer.classes), start, end, sheet_frames, truth,
                      video=overlay, x264_threads=1 if localizer.device.type == "cpu" else 0)  # encoders hold the cores
    with drawer, closing(items), tqdm(desc="localise", unit="step", disable=not progress, total=total) as bar:
        while True:
            with timer("decoding"):
                taken = list(islice(items, chunk))
            batch = [step for step, _ in taken if step is not None]
            frames_taken = [frame for _, frames in taken for frame in frames]  # in decoding order
            if not batch:
                with timer("handing over to the overlay"):
                    drawer.send_frames(frames_taken)  # the frames after the last step's time
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
                    chunk_boxes, chunk_scores = frame_boxes(chunk_maps, (info.height, info.width), box_mode)
                    for part, value in zip((heatmaps, probabilities, boxes, scores),
                                           (chunk_maps.numpy(), chunk_probabilities.numpy(), chunk_boxes, chunk_scores)):
                        part.append(value)
                else:
                    held.append((visual, audio))
            if stream:
                latencies.append(time.perf_counter() - ready)
            if localizer.streams:
                with timer("handing over to the overlay"):
                    drawer.send_steps(heatmaps[-1], probabilities[-1], chunk_boxes, chunk_scores)
                    drawer.send_frames(frames_taken)
            times.extend(step.time for step in batch)
            bar.update(len(batch))
        if held:
            with timer("memory + localisation"):
                visual, audio = (torch.cat(parts) for parts in zip(*held))  # the clip's (N, Cv, h, w), (N, Ca, m, n)
                clip_maps, clip_probabilities = localizer.whole(visual, audio)
                clip_boxes, clip_scores = frame_boxes(clip_maps, (info.height, info.width), box_mode)
                heatmaps.append(clip_maps.numpy())
                probabilities.append(clip_probabilities.numpy())
                boxes.append(clip_boxes)
                scores.append(clip_scores)
            drawer.send_steps(heatmaps[-1], probabilities[-1], clip_boxes, clip_scores)
            drawer.decode_frames()
        result = Localization(
            out=out, fps=fps, times=np.asarray(times), heatmaps=np.concatenate(heatmaps),
            probabilities=np.concatenate(probabilities), classes=list(localizer.classes),
            boxes=[b for part in boxes for b in part], scores=[s for part in scores for s in part], frames_written=0,
            latencies=np.asarray(latencies) if stream else None, timer=timer, overlay=overlay,
        )
        with timer("writing outputs"):
            _write_json(result, video, str(model), fps)
            _write_npz(result)
            drawer.finish()  # waits for the overlay thread's last frames
            write_png(out / "contact_sheet.png", contact_sheet(drawer.tiles()))
            if not overlay:  # an earlier run's video would not match these results
                (out / "overlay.mp4").unlink(missing_ok=True)
    result.frames_written = drawer.frames_written
    timer.seconds[OVERLAY_STAGE] += drawer.busy
    return result


def localizer_for(model: str | os.PathLike = "default", device: str | torch.device = "cpu",
                  precision: str = "auto") -> Localizer:
    """The :class:`Localizer` :func:`localize_video` runs ``model`` with: chunk by chunk with its
    bounded memory when the model streams, over whole clips when it cannot."""
    trained = load_trained(model, device)
    return Localizer(trained, device, stream=trained.head.stream_refusal() is None, precision=precision)


def _with_frames(steps: Iterator[AVStep], decoded: list) -> Iterator[tuple[AVStep | None, list]]:
    """Each step with the original frames decoded since the step before it (``decoded``, which
    ``steps``' ``frames_to`` fills), then ``(None, the frames after the last step)``: the pairs
    travel together, so a thread may decode ahead of the consumer."""
    def taken() -> list:
        frames = decoded[:]
        decoded.clear()
        return frames

    for step in steps:
        yield step, taken()
    yield None, taken()


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


def _seconds_of(times: np.ndarray) -> np.ndarray:
    """``(T,)`` the whole second each step time falls in."""
    return np.floor(times + 1e-9).astype(int)


def _event_class(probabilities: np.ndarray, classes: list[str]) -> tuple[str, float]:
    """The event class of a second's steps ``(n, K)``: the argmax of their mean probabilities, and that mean."""
    mean = probabilities.mean(axis=0)  # (n, K) -> (K,)
    return classes[int(mean.argmax())], float(mean.max())


def _second_classes(result: Localization) -> dict[int, tuple[str, float]]:
    """Event class of every second that has steps (:func:`_event_class`; none for a model
    without a classifier)."""
    if not result.probabilities.shape[1]:
        return {}
    seconds = _seconds_of(result.times)
    return {int(second): _event_class(result.probabilities[seconds == second], result.classes)
            for second in np.unique(seconds)}


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


class _Overlay:
    """The overlay video, drawn and encoded on its own thread while the model works.

    The calling thread sends the steps' results in order (:meth:`send_steps`) and the decoded
    original frames (:meth:`send_frames`; or :meth:`decode_frames`: this thread decodes them
    again, for a model that gives its maps only at the clip's end). A frame is drawn once its
    step and every step of its second are known (the caption shows the second's class); the
    original audio is decoded here and written alongside. PyAV's encoder, OpenCV and NumPy's
    large operations release the GIL, so this runs beside the encoders. At most ``QUEUE``
    messages wait (one batch of frames each): memory stays bounded. Use as a context manager:
    an error on either side stops both and leaves no ``overlay.mp4``.

    With ``video=False`` only the contact sheet's frames are drawn and nothing is encoded.
    ``x264_threads`` is the video encoder's (:class:`avloc.io.write.VideoWriter`): 1 beside
    encoders on the CPU, which hold its cores anyway.
    """

    QUEUE = 2

    def __init__(self, out: Path, info: VideoInfo, fps: float, times: np.ndarray, classes: list[str],
                 start: float | None, end: float | None, sheet_frames: int,
                 truth: tuple[np.ndarray, list[np.ndarray]] | None, video: bool = True, x264_threads: int = 0) -> None:
        self.out = out
        self.info = info
        self.fps = fps
        self.times = times
        self.classes = classes
        self.video = video
        self.x264_threads = x264_threads
        self.start = start
        self.end = end
        self.truth = truth
        self.first = times[0] - 0.5 / fps  # the processed range's start
        self.seconds = _seconds_of(times)  # (T,) the second of each step
        self.chosen = set(np.linspace(0, len(times) - 1, min(sheet_frames, len(times))).round().astype(int))
        self.maps: list[np.ndarray] = []  # per known step: (h, w) map, (K,) probabilities, boxes, scores
        self.probabilities: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.pending: deque = deque()  # (time, frame) decoded, not yet drawn
        self.captions: dict[int, str] = {}  # second -> "class NN%" ("" without a classifier)
        self.sheet: dict[int, np.ndarray] = {}
        self.frames_written = 0
        self.busy = 0.0  # seconds this thread worked
        self.queue: queue.Queue = queue.Queue(maxsize=self.QUEUE)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="avloc-overlay", daemon=True)

    def __enter__(self) -> _Overlay:
        self.thread.start()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self.thread.is_alive():
            self._put(("abort", None) if kind is not None else None, check=False)
            self.thread.join()

    def send_steps(self, maps: np.ndarray, probabilities: np.ndarray, boxes: list[np.ndarray],
                   scores: list[np.ndarray]) -> None:
        """The next steps' maps ``(n, h, w)``, probabilities ``(n, K)``, boxes and scores (video pixels)."""
        self._put(("steps", (maps, probabilities, boxes, scores)))

    def send_frames(self, frames: list[tuple[float, object]]) -> None:
        """Decoded original frames ``(time, av.VideoFrame or (H, W, 3) uint8)``, in order."""
        if frames:
            self._put(("frames", frames))

    def decode_frames(self) -> None:
        """Decode the range's frames here (every step must have been sent)."""
        self._put(("decode", None))

    def finish(self) -> None:
        """Draw what is left, close the video and wait; raises the thread's error, if any."""
        self._put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def tiles(self) -> list[np.ndarray]:
        """The contact sheet's frames, in step order: at each chosen step, the frame the model saw."""
        return [self.sheet[k] for k in sorted(self.sheet)]

    def _put(self, item, check: bool = True) -> None:
        while True:
            if check and self.error is not None:
                raise self.error
            if not self.thread.is_alive():
                return
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            self._write()
        except BaseException as error:  # noqa: BLE001 - handed to the calling thread
            self.error = error
            with suppress(queue.Empty):  # unblock a sender waiting on a full queue
                while True:
                    self.queue.get_nowait()

    def _write(self) -> None:
        info = self.info
        width, height = info.width - info.width % 2, info.height - info.height % 2  # H.264 needs even sizes
        self.size = (height, width)
        self.layer = None  # the colour layer of step self.layer_of
        self.layer_of = None
        output = nullcontext(None)
        if self.video:
            rate, channels, self.audio = iter_audio(info.path, self.start, self.end)
            self.rate = rate
            self.audio_until = 0  # samples written
            output = VideoWriter(self.out / "overlay.mp4", info.frame_rate or self.fps, width, height, rate,
                                 channels, threads=self.x264_threads)
        with output as writer:
            while True:
                item = self.queue.get()
                started = time.perf_counter()
                if item is None:
                    break
                kind, payload = item
                if kind == "abort":
                    raise AvlocError("stopped: the localisation failed")
                if kind == "steps":
                    for part, values in zip((self.maps, self.probabilities, self.boxes, self.scores), payload):
                        part.extend(values)
                elif kind == "frames":
                    self.pending.extend(payload)
                else:  # "decode": every step is known, so each frame is drawn as it comes
                    for item in iter_frames(info.path, self.start, self.end):
                        self.pending.append(item)
                        self._draw(writer, final=True)
                self._draw(writer, final=False)
                self.busy += time.perf_counter() - started
            started = time.perf_counter()
            self._draw(writer, final=True)
            if writer is not None:
                for block in self.audio:
                    writer.write_audio(block)
        self.busy += time.perf_counter() - started

    def _step_of(self, frame_time: float) -> int:
        return int(np.clip(np.floor((frame_time - self.first) * self.fps + 1e-6), 0, len(self.times) - 1))

    def _ready(self, k: int) -> bool:
        """Whether step ``k`` and every step of its second are known."""
        known = len(self.maps)
        return k < known and (known == len(self.times) or self.seconds[known] > self.seconds[k])

    def _caption(self, second: int) -> str:
        if second not in self.captions:
            self.captions[second] = ""
            if self.probabilities[0].size:
                steps = np.stack([p for p, s in zip(self.probabilities, self.seconds) if s == second])  # (n, K)
                name, probability = _event_class(steps, self.classes)
                self.captions[second] = f"  {name} {100 * probability:.0f}%"
        return self.captions[second]

    def _draw(self, writer: VideoWriter | None, final: bool) -> None:
        """Draw and write the pending frames whose steps are ready (all of them when ``final``);
        without a ``writer`` only those the contact sheet takes."""
        height, width = self.size
        while self.pending:
            frame_time, frame = self.pending[0]
            k = self._step_of(frame_time)
            if not (final or self._ready(k)):
                return
            self.pending.popleft()
            on_sheet = k in self.chosen and (k not in self.sheet or frame_time <= self.times[k] + 1e-6)
            if writer is None and not on_sheet:
                continue
            if not isinstance(frame, np.ndarray):
                frame = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8, as iter_frames gives it
            caption = f"{frame_time:.2f} s" + self._caption(int(self.seconds[k]))
            if self.layer_of != k:  # the colour layer changes once per step, not per frame
                self.layer = heat_layer(torch.from_numpy(self.maps[k]), (height, width))
                self.layer_of = k
            shown = None if self.truth is None else _nearest_truth(self.truth, frame_time, 0.5 / self.fps)
            image = annotated_frame(frame[:height, :width], self.layer, self.boxes[k], self.scores[k], caption,
                                    ground_truth=shown)
            if on_sheet:
                self.sheet[k] = image  # the frame the model saw at step k
            if writer is None:
                continue
            writer.write_frame(image)
            self.frames_written += 1
            wanted = round((frame_time - self.first + 1.0 / (self.info.frame_rate or self.fps)) * self.rate)
            while self.audio_until < wanted:
                block = next(self.audio, None)
                if block is None:
                    break
                writer.write_audio(block)
                self.audio_until += block.shape[1]
