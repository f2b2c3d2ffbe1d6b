"""Decode a video into time steps of (frame, audio segment) with PyAV, streaming.

Conventions (every other module relies on them):

- **Timeline.** Time 0 is the start of the video stream (its ``start_time``: 0 for most
  MP4 files, about 1.4 s for MPEG-TS), so the first frame is at time 0 as frame-indexed
  annotations assume. Audio uses the same origin, so audio/video sync is what the file
  says (audio that starts before the video is cut, audio that starts later is zero until
  it begins). Times are ``pts * time_base`` minus that origin, never frame counts, so
  variable-frame-rate input is handled exactly.
- **Steps.** The clip ``[start, end)`` is cut into ``floor((end - start) * fps + 1e-6)``
  steps of ``1 / fps`` seconds. Step ``k`` is at ``start + (k + 0.5) / fps``, the centre
  of its step (:func:`frame_times`).
- **Frames.** A step's frame is the frame being displayed at the step's time: the last
  decoded frame whose presentation time is ``<=`` that time. Before the first frame the
  first frame is used, after the last frame the last one (a video stream shorter than the
  audio). Frames are converted to RGB at full size and resized by FFmpeg's swscale in the
  decoding thread (:func:`_to_tensor`): bilinear with antialiasing, i.e. a triangle filter
  widened by the downscale factor (the filter of ``torch.nn.functional.interpolate(...,
  antialias=True)``, torchvision's ``Resize`` and PIL's bilinear), plain bilinear when
  upscaling. ``size=int`` gives a square ``size x size`` (the STM paper resizes directly,
  no crop), ``(H, W)`` that size, ``None`` the original size.
- **Audio.** Decoded with PyAV, resampled with ``av.AudioResampler`` to float at
  ``sample_rate`` keeping the channel layout, then averaged over channels to mono (a plain
  mean, as librosa's ``to_mono``; FFmpeg's own downmix sums channels with gain 0.707).
  Samples are placed by timestamp: sample ``i`` is at time ``i / sample_rate``. The AAC
  encoder's priming samples (about 1024 at the stream's rate) never reach the timeline:
  in MP4 the demuxer drops them (edit list), in MPEG-TS their timestamps fall before the
  video start. The trailing padding falls after ``end`` (a decoded 3 s AAC track is
  ~48,300 samples at 16 kHz; ``[0, 3)`` is exactly 48,000).
- **Segments.** Step ``k``'s segment is ``L = round(audio_window * sample_rate)`` samples
  starting at sample ``round((time_k - audio_window / 2) * sample_rate)``, i.e. centred
  on the step's time. The default ``audio_window = 1 / fps`` makes the segments tile the
  audio (exactly when ``sample_rate / fps`` is an integer). Samples outside the audio
  stream are zero; a file without an audio stream gives all-zero segments (``probe``
  reports ``has_audio=False``; callers decide whether to refuse such files).

- **Damaged files.** Every failure is a one-line :class:`AvlocError` naming the file: a
  stream whose codec header is unreadable, frames larger than ``MAX_SIDE`` pixels a side,
  audio holding NaN or infinite samples, an audio stream without a single sample, and a
  file cut short: in MP4 / MOV, whose index gives every stream's exact length, a stream
  that stops decoding more than half a frame before its indexed end (video: checked when
  decoding from the start, where decoded frames can also be counted against the index, so
  that edit lists and a long last frame of variable-rate video are not mistaken for it).

Memory stays bounded for any length: video and audio are decoded by two generators on two
independent ``av.open`` handles and zipped by time; the audio side keeps only the samples
not yet consumed. For ``start > 0`` both seek (video to the keyframe at or before the first
step; audio a little before the first needed sample) and decode forward.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import Interpolation, VideoReformatter

from avloc.types import AVClip, AvlocError, VideoInfo

# AAC decoders need the previous frame to rebuild a sample (MDCT overlap) and the resampler
# has a filter delay: after a seek, decode from this many seconds before the first needed sample.
_AUDIO_PREROLL = 0.2
# Slack when comparing float times (start/end given as decimals, frame times as Fractions).
_EPS = 1e-6
# Largest frame side decoded or resized to (8K UHD is 7680 x 4320): beyond it, one float frame
# alone would take gigabytes, and such sizes in a header are damage, not video.
MAX_SIDE = 8192
# Containers whose index gives each stream's exact length (the MP4 / MOV sample tables).
_INDEXED_FORMATS = {"mov", "mp4"}

Size = int | tuple[int, int] | None


@dataclass(frozen=True)
class AVStep:
    """One time step of a decoded clip.

    Attributes:
        index: step number ``k`` within the clip (0-based).
        time: time in seconds of the step, ``start + (k + 0.5) / fps``.
        frame: ``(3, H, W)`` float32 in [0, 1], the frame displayed at ``time``.
        segment: ``(L,)`` float32 mono audio centred on ``time``.

    Consecutive steps that show the same decoded frame share one ``frame`` tensor: copy
    before modifying it in place.
    """

    index: int
    time: float
    frame: torch.Tensor
    segment: torch.Tensor


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a file's headers (no decoding).

    Raises:
        AvlocError: the file is missing, unreadable, or has no video stream.
    """
    return _probe(Path(path))[0]


def frame_times(start: float, end: float, fps: float) -> np.ndarray:
    """The ``(T,)`` float64 step times of ``[start, end)`` at ``fps`` steps per second.

    ``T = floor((end - start) * fps + 1e-6)``; step ``k`` is at ``start + (k + 0.5) / fps``.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise AvlocError(f"fps must be a positive number, got {fps}")
    count = max(0, math.floor((end - start) * fps + 1e-6))
    return start + (np.arange(count, dtype=np.float64) + 0.5) / fps


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 RGB image -> ``(3, h, w)`` float32 in [0, 1] at ``size``
    (``int``: square), resized exactly as decoded frames are (:func:`_to_tensor`: swscale's
    antialiased bilinear), so a frame from elsewhere (a camera, a live stream) reaches the
    encoder as the same pixels as the same frame decoded from a file."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {getattr(image, 'shape', type(image))}")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return _to_tensor(frame, _check_size(Path("image"), size))


def iter_steps(
    path: str | os.PathLike,
    fps: float = 4.0,
    size: Size = 256,
    sample_rate: int = 16000,
    start: float | None = None,
    end: float | None = None,
    audio_window: float | None = None,
    frames_to: Callable[[float, av.VideoFrame], None] | None = None,
) -> Iterator[AVStep]:
    """Stream the steps of ``[start, end)`` of a video, one :class:`AVStep` at a time.

    Args:
        path: video file.
        fps: steps per second.
        size: ``int`` (square resize), ``(H, W)``, or None (original size).
        sample_rate: audio sample rate of the segments in Hz.
        start: clip start in seconds (default 0).
        end: clip end in seconds (default: the file's duration).
        audio_window: seconds of audio per step, centred on the step (default ``1 / fps``).
        frames_to: called with ``(time, frame)`` for every decoded frame of ``[start, end)``
            at the video's own rate, in order, as it is decoded (the frames :func:`iter_frames`
            gives, as ``av.VideoFrame``: ``frame.to_ndarray(format="rgb24")`` is its picture), so
            one decoding pass feeds both the steps and a full-rate consumer (``avloc localize``'s
            overlay). A frame is handed over by the time the first step after it is yielded; the
            frames after the last step follow when the iteration ends.

    Raises:
        AvlocError: bad file or arguments (raised at the call, before iteration), or a
            decoding error (raised during iteration).
    """
    plan = _plan(path, fps, size, sample_rate, start, end, audio_window)
    return _steps(plan, frames_to)


def read_clip(
    path: str | os.PathLike,
    fps: float = 4.0,
    size: Size = 256,
    sample_rate: int = 16000,
    start: float | None = None,
    end: float | None = None,
    audio_window: float | None = None,
) -> AVClip:
    """Decode ``[start, end)`` of a video into an :class:`AVClip` (arguments as :func:`iter_steps`).

    ``waveform`` is the contiguous mono audio of ``[start, end)``:
    ``round((end - start) * sample_rate)`` samples, the first at sample
    ``round(start * sample_rate)``.
    """
    plan = _plan(path, fps, size, sample_rate, start, end, audio_window)
    steps = list(_steps(plan))
    info = plan.info
    if steps:
        frames = torch.stack([step.frame for step in steps])  # T x (3, H, W) -> (T, 3, H, W)
        segments = torch.stack([step.segment for step in steps])  # T x (L,) -> (T, L)
    else:
        height, width = plan.size or (info.height, info.width)
        frames = torch.zeros(0, 3, height, width)
        segments = torch.zeros(0, plan.segment_length)
    return AVClip(
        frames=frames,
        times=torch.from_numpy(plan.times),
        waveform=_read_audio(info, plan.origin, sample_rate, plan.start, plan.end),
        segments=segments,
        sample_rate=sample_rate,
        start=plan.start,
        original_size=(info.height, info.width),
    )


def read_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    start: float | None = None,
    end: float | None = None,
) -> torch.Tensor:
    """The ``(S,)`` float32 mono waveform of ``[start, end)`` (zeros where there is no audio).

    ``S = round((end - start) * sample_rate)``; the first sample is sample
    ``round(start * sample_rate)`` of the file's timeline.
    """
    path = Path(path)
    info, origin = _probe(path)
    start, end = _check_range(path, info, None, start, end)
    _check_sample_rate(path, sample_rate)
    return _read_audio(info, origin, sample_rate, start, end)


def iter_frames(path: str | os.PathLike, start: float | None = None,
                end: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Every decoded frame of ``[start, end)`` at its own rate: ``(time, (H, W, 3) uint8 RGB)``."""
    path = Path(path)
    info, origin = _probe(path)
    start, end = _check_range(path, info, None, start, end)

    def frames() -> Iterator[tuple[float, np.ndarray]]:
        for time, frame in _video_frames(path, origin, seek_to=start):
            if time >= end - _EPS:
                return
            if time >= start - _EPS:
                yield time, frame.to_ndarray(format="rgb24")

    return frames()


def iter_audio(path: str | os.PathLike, start: float | None = None, end: float | None = None,
               stereo: bool = True) -> tuple[int, int, Iterator[np.ndarray]]:
    """The audio of ``[start, end)`` at the file's own sample rate, as it is decoded.

    Returns:
        ``(sample_rate, channels, blocks)``: ``blocks`` yields ``(channels, n)`` float32 arrays
        in time order, the first starting at ``start`` (channels = 2 for stereo or more when
        ``stereo``, else 1).

    Raises:
        AvlocError: the file has no audio stream (or cannot be read).
    """
    path = Path(path)
    info, origin = _probe(path)
    start, end = _check_range(path, info, None, start, end)
    if not info.has_audio:
        raise AvlocError(f"{path}: no audio stream")
    rate = int(info.sample_rate)
    channels = 2 if stereo and (info.channels or 1) >= 2 else 1
    first_wanted, end_sample = round(start * rate), round(end * rate)

    def blocks() -> Iterator[np.ndarray]:
        layout = "stereo" if channels == 2 else "mono"
        for first, samples in _audio_chunks(path, origin, rate, start, layout=layout):
            lo, hi = max(first, first_wanted), min(first + samples.shape[1], end_sample)
            if hi > lo:
                yield samples[:, lo - first : hi - first]
            if first + samples.shape[1] >= end_sample:
                return

    return rate, channels, blocks()


# ---------------------------------------------------------------------------------------
# Opening and checking


@dataclass(frozen=True)
class _Plan:
    """Everything decoding a clip needs, checked."""

    info: VideoInfo
    origin: float  # seconds of the file's timestamps that are time 0
    start: float
    end: float
    times: np.ndarray  # (T,) float64 step times
    size: tuple[int, int] | None
    sample_rate: int
    window: float  # seconds of audio per step
    segment_length: int  # L = round(window * sample_rate)


def _plan(
    path: str | os.PathLike,
    fps: float,
    size: Size,
    sample_rate: int,
    start: float | None,
    end: float | None,
    audio_window: float | None,
) -> _Plan:
    path = Path(path)
    info, origin = _probe(path)
    start, end = _check_range(path, info, fps, start, end)
    out_size = _check_size(path, size)
    _check_sample_rate(path, sample_rate)
    if audio_window is None and round(sample_rate / fps) < 1:
        raise AvlocError(f"{path}: at {fps:g} steps per second a step holds no audio sample at {sample_rate} Hz")
    window = 1.0 / fps if audio_window is None else audio_window
    if not (_is_number(window) and math.isfinite(window) and round(window * sample_rate) > 0):
        raise AvlocError(f"{path}: audio_window must be a positive number of seconds, got {audio_window!r}")
    return _Plan(
        info=info,
        origin=origin,
        start=start,
        end=end,
        times=frame_times(start, end, fps),
        size=out_size,
        sample_rate=sample_rate,
        window=float(window),
        segment_length=round(window * sample_rate),
    )


@contextlib.contextmanager
def _open(path: Path) -> Iterator[av.container.InputContainer]:
    """``av.open`` for reading, with every failure turned into a one-line AvlocError."""
    if not path.exists():
        raise AvlocError(f"{path}: no such file")
    if not path.is_file():
        raise AvlocError(f"{path}: not a file")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as error:
        raise AvlocError(f"{path}: not a readable video file ({_reason(error)})") from None
    try:
        yield container
    finally:
        container.close()


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _probe(path: Path) -> tuple[VideoInfo, float]:
    """The file's :class:`VideoInfo` and its timeline origin in seconds."""
    with _open(path) as container:
        if not container.streams.video:
            raise AvlocError(f"{path}: no video stream")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        for stream in (video, audio):
            if stream is not None and stream.codec_context is None:
                raise AvlocError(f"{path}: the {stream.type} stream's codec header is damaged or unknown")
        streams = [video] if audio is None else [video, audio]
        container_start = (container.start_time or 0) / av.time_base
        origin = float(video.start_time * video.time_base) if video.start_time is not None else container_start
        ends = [float(((s.start_time or 0) + s.duration) * s.time_base) - origin for s in streams if s.duration]
        if len(ends) < len(streams) and container.duration is not None:  # e.g. Matroska: no stream durations
            ends.append(container_start + container.duration / av.time_base - origin)
        if not ends:
            raise AvlocError(f"{path}: the headers give no duration")
        width, height = video.codec_context.width, video.codec_context.height
        if not width or not height:
            raise AvlocError(f"{path}: the video stream has no frame size")
        if max(width, height) > MAX_SIDE:
            raise AvlocError(f"{path}: frames of {width}x{height} pixels are beyond the {MAX_SIDE}-pixel limit")
        info = VideoInfo(
            path=path,
            duration=max(ends),
            width=width,
            height=height,
            frame_rate=float(video.average_rate) if video.average_rate else None,
            has_audio=audio is not None,
            sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            channels=audio.codec_context.channels if audio is not None else None,
        )
    return info, origin


def _check_range(
    path: Path, info: VideoInfo, fps: float | None, start: float | None, end: float | None
) -> tuple[float, float]:
    if fps is not None and not (_is_number(fps) and math.isfinite(fps) and fps > 0):
        raise AvlocError(f"{path}: fps must be a positive number, got {fps!r}")
    start = 0.0 if start is None else float(start)
    end = info.duration if end is None else float(end)
    if not (math.isfinite(start) and math.isfinite(end)):
        raise AvlocError(f"{path}: start and end must be finite, got start={start} end={end}")
    if start < 0:
        raise AvlocError(f"{path}: start {start:g} s is negative")
    if start >= info.duration:
        raise AvlocError(f"{path}: start {start:g} s is beyond the duration ({info.duration:g} s)")
    if start >= end:
        raise AvlocError(f"{path}: start {start:g} s is not before end {end:g} s")
    if end > info.duration + 1e-3:
        raise AvlocError(f"{path}: end {end:g} s is beyond the duration ({info.duration:g} s)")
    return start, end


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_size(path: Path, size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not (isinstance(size, tuple) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise AvlocError(f"{path}: size must be a positive int, an (H, W) tuple or None, got {size!r}")
    if max(size) > MAX_SIDE:
        raise AvlocError(f"{path}: size {size} is beyond the {MAX_SIDE}-pixel limit")
    return size


def _check_sample_rate(path: Path, sample_rate: int) -> None:
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise AvlocError(f"{path}: sample_rate must be a positive int, got {sample_rate!r}")


# ---------------------------------------------------------------------------------------
# Streaming


def _steps(plan: _Plan, frames_to: Callable[[float, av.VideoFrame], None] | None = None) -> Iterator[AVStep]:
    if len(plan.times) == 0:
        return
    path, rate, length = plan.info.path, plan.sample_rate, plan.segment_length
    firsts = np.round((plan.times - plan.window / 2) * rate).astype(np.int64)  # (T,) first sample per segment
    audio = _AudioBuffer(path, plan.origin, rate, int(firsts[0])) if plan.info.has_audio else None
    # With a frame consumer, decode from the range's start (its frames before the first step too).
    frames = _video_frames(path, plan.origin, seek_to=plan.start if frames_to else float(plan.times[0]))
    if frames_to is not None:
        frames = _handing_over(frames, frames_to, plan.start, plan.end)
    current = None  # (time, av.VideoFrame) displayed at the step's time
    upcoming = next(frames, None)
    if upcoming is None:
        raise AvlocError(f"{path}: the video stream has no decodable frames")
    tensor, tensor_of = None, None
    scalers = _Scalers()  # reused: swscale keeps its filters between frames
    try:
        for index, (time, first) in enumerate(zip(plan.times.tolist(), firsts.tolist())):
            while upcoming is not None and (current is None or upcoming[0] <= time + _EPS):
                current, upcoming = upcoming, next(frames, None)
            if tensor_of is not current:  # one frame can serve several steps (fps > video rate)
                tensor, tensor_of = _to_tensor(current[1], plan.size, scalers), current
            segment = audio.read(first, length) if audio is not None else np.zeros(length, np.float32)
            yield AVStep(index=index, time=time, frame=tensor, segment=torch.from_numpy(segment))
        if frames_to is not None:
            for _ in frames:  # the frames after the last step's time reach the consumer
                pass
    finally:
        frames.close()
        if audio is not None:
            audio.close()


def _handing_over(frames: Iterator[tuple[float, av.VideoFrame]], frames_to: Callable[[float, av.VideoFrame], None],
                  start: float, end: float) -> Iterator[tuple[float, av.VideoFrame]]:
    """``frames``, each of ``[start, end)`` also handed to ``frames_to``; stops at ``end``."""
    for time, frame in frames:
        if time >= end - _EPS:
            return
        if time >= start - _EPS:
            frames_to(time, frame)
        yield time, frame


def _video_frames(path: Path, origin: float, seek_to: float) -> Iterator[tuple[float, av.VideoFrame]]:
    """Yield ``(time, frame)`` in presentation order, from the keyframe at or before ``seek_to``."""
    if seek_to > 0.5:  # near the start, decoding from 0 is as cheap as seeking
        frames = _decode_video(path, origin, seek_to)
        first = next(frames, None)
        if first is not None and first[0] <= seek_to + _EPS:
            yield first
            yield from frames
            return
        # The seek landed after the target (an imprecise index): decode from the start instead.
        frames.close()
    yield from _decode_video(path, origin, None)


def _decode_video(path: Path, origin: float, seek_to: float | None) -> Iterator[tuple[float, av.VideoFrame]]:
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or 25)
        try:
            if seek_to is not None:
                container.seek(round((seek_to + origin) / stream.time_base), stream=stream, backward=True)
            time, count = None, 0
            for frame in container.decode(stream):
                if frame.pts is not None:
                    time = float(frame.pts * frame.time_base) - origin
                else:  # rare: continue from the previous timestamp at the average rate
                    time = 0.0 if time is None else time + 1.0 / rate
                count += 1
                yield time, frame
        except av.error.FFmpegError as error:
            raise AvlocError(f"{path}: cannot decode the video stream ({_reason(error)})") from None
        if seek_to is None and time is not None and count < (stream.frames or 0):
            _check_complete(path, container, stream, origin, time + 1.0 / rate, slack=0.5 / rate)


def _check_complete(path: Path, container: av.container.InputContainer, stream: av.stream.Stream, origin: float,
                    reached: float, slack: float) -> None:
    """Refuse a stream that decoded up to ``reached`` s only, when the file's index says it lasts longer."""
    if not stream.duration or not _INDEXED_FORMATS & set(container.format.name.split(",")):
        return
    indexed = float(((stream.start_time or 0) + stream.duration) * stream.time_base) - origin
    if reached < indexed - slack:
        raise AvlocError(f"{path}: the {stream.type} stream ends at {reached:.3f} s, but the file's index says "
                         f"{indexed:.3f} s: the file is cut short")


# swscale flags: bilinear (a triangle filter widened by the downscale factor, i.e. antialiased);
# FULL_CHR_H_INP scales every RGB plane at full width (without it swscale halves the horizontal
# resolution of the colour difference internally, up to 70/255 off on fine detail); ACCURATE_RND
# and BITEXACT give the same bytes on every CPU (the C code path, no SIMD approximations).
_SCALE_FLAGS = (Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INP | Interpolation.ACCURATE_RND
                | Interpolation.BITEXACT)


@dataclass
class _Scalers:
    """The swscale contexts of one stream's frames: decoded -> rgb24 -> gbrp -> resized."""

    to_rgb: VideoReformatter = field(default_factory=VideoReformatter)
    to_planes: VideoReformatter = field(default_factory=VideoReformatter)
    resize: VideoReformatter = field(default_factory=VideoReformatter)


def _to_tensor(frame: av.VideoFrame, size: tuple[int, int] | None,
               scalers: _Scalers | None = None) -> torch.Tensor:
    """``av.VideoFrame`` -> ``(3, H, W)`` float32 in [0, 1], resized to ``size`` if given.

    The frame is converted to packed RGB (``rgb24``), exactly as ``to_ndarray(format="rgb24")``
    converts it, then losslessly to planar RGB (``gbrp``): swscale's direct YUV -> ``gbrp``
    conversion writes garbage, different at every run, into the last ``width % 16`` columns of
    frames whose width is not a multiple of 16 (measured on a 120 px wide video: up to 255 off in
    columns 112-119; ``tests/test_decode.py``). Each plane is then resized by swscale with its antialiased
    bilinear filter: a triangle of half-width ``max(1, in / out)`` input pixels (the filter of
    ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)`` and PIL's bilinear);
    when upscaling, plain bilinear. Both steps run in this thread (``threads=1``) on uint8 and
    never touch torch's thread pool, so the cost does not depend on torch's thread count or on
    another process holding a core (``bench/resize_speed.py``).

    Compared with ``F.interpolate`` on the float frame, the output is rounded to 1/255 (at most
    ~0.6/255 off, 0.25/255 on average) except in the outermost one or two rows and columns,
    where swscale repeats the edge pixel while torch renormalises the cut filter (up to ~11/255
    there, measured on a photo and a zone plate; ``tests/test_decode.py``).

    ``scalers`` are the reformatters reused across the frames of one stream (swscale keeps its
    filters between calls); default: fresh ones.
    """
    scalers = scalers if scalers is not None else _Scalers()
    packed = scalers.to_rgb.reformat(frame, format="rgb24", threads=1)
    rgb = scalers.to_planes.reformat(packed, format="gbrp", threads=1)  # exact: a byte shuffle
    if size is not None and (rgb.height, rgb.width) != size:
        rgb = scalers.resize.reformat(rgb, width=size[1], height=size[0], interpolation=_SCALE_FLAGS, threads=1)
    image = rgb.to_ndarray()  # (H, W, 3) uint8, RGB order
    out = np.empty((3, *image.shape[:2]), np.float32)
    np.divide(image.transpose(2, 0, 1), np.float32(255.0), out=out)  # (H, W, 3) -> (3, H, W); numpy: one thread
    return torch.from_numpy(out)


def _audio_chunks(path: Path, origin: float, sample_rate: int, seek_to: float,
                  layout: str | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_sample, samples)`` placed on the timeline by pts: mono float32 ``(n,)``
    chunks, or ``(C, n)`` in the channel ``layout`` ("mono" / "stereo") when one is given."""
    with _open(path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", rate=sample_rate, layout=layout)  # None keeps the layout
        tb_out = Fraction(1, sample_rate)
        try:
            if seek_to > 0:
                container.seek(round((seek_to + origin) / stream.time_base), stream=stream, backward=True)
            position = None  # the sample index that follows the last chunk
            decoded = container.decode(stream)
            for frame in _flush_after(decoded):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().astype(np.float32)  # (C, n)
                    if not np.isfinite(samples).all():
                        raise AvlocError(f"{path}: the audio stream holds NaN or infinite samples")
                    if layout is None:
                        samples = samples.mean(axis=0)  # (C, n) -> (n,)
                    if out.pts is not None:
                        first = round((out.pts * (out.time_base or tb_out) - Fraction(origin)) * sample_rate)
                    else:
                        first = position if position is not None else 0
                    position = first + samples.shape[-1]
                    yield first, samples
        except av.error.FFmpegError as error:
            raise AvlocError(f"{path}: cannot decode the audio stream ({_reason(error)})") from None
        if position is None and seek_to == 0:
            raise AvlocError(f"{path}: the audio stream holds no samples")
        if position is not None:
            frame_size = stream.codec_context.frame_size or 1024
            _check_complete(path, container, stream, origin, position / sample_rate,
                            slack=0.5 * frame_size / (stream.codec_context.sample_rate or sample_rate))


def _flush_after(frames: Iterator[av.AudioFrame]) -> Iterator[av.AudioFrame | None]:
    """The decoded frames, then None (which flushes the resampler)."""
    yield from frames
    yield None


class _AudioBuffer:
    """Serve mono samples ``[first, first + length)`` of the timeline for non-decreasing ``first``.

    Holds only the samples not yet consumed, so memory is bounded by one request plus one
    decoded chunk.
    """

    def __init__(self, path: Path, origin: float, sample_rate: int, first_sample: int):
        seek_to = max(0.0, first_sample / sample_rate - _AUDIO_PREROLL)
        self._chunks = _audio_chunks(path, origin, sample_rate, seek_to)
        self._pieces: list[np.ndarray] = []  # contiguous samples [self._start, self._end)
        self._start = self._end = first_sample
        self._done = False

    def read(self, first: int, length: int) -> np.ndarray:
        if first < self._start:
            raise ValueError(f"audio requests must not go backwards ({first} < {self._start})")
        stop = first + length
        while not self._done and self._end < stop:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
            else:
                self._append(*chunk)
        held = np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.float32)
        out = np.zeros(length, np.float32)  # zeros wherever the stream has no samples
        lo, hi = max(first, self._start), min(stop, self._end)
        if hi > lo:
            out[lo - first : hi - first] = held[lo - self._start : hi - self._start]
        if first >= self._end:
            self._pieces = []
            self._start = first
            self._end = first
        else:
            self._pieces = [held[first - self._start :]]
            self._start = first
        return out

    def _append(self, first: int, samples: np.ndarray) -> None:
        stop = first + len(samples)
        if stop <= self._end:  # entirely before what we need (preroll)
            return
        if first > self._end:  # a gap in the stream, or a stream that starts late: silence
            self._pieces.append(np.zeros(first - self._end, np.float32))
        elif first < self._end:  # partly before what we need (preroll, overlap)
            samples = samples[self._end - first :]
        self._pieces.append(samples)
        self._end = stop

    def close(self) -> None:
        self._chunks.close()


def _read_audio(info: VideoInfo, origin: float, sample_rate: int, start: float, end: float) -> torch.Tensor:
    first = round(start * sample_rate)
    length = round((end - start) * sample_rate)
    if not info.has_audio:
        return torch.zeros(length)
    buffer = _AudioBuffer(info.path, origin, sample_rate, first_sample=first)
    try:
        return torch.from_numpy(buffer.read(first, length))
    finally:
        buffer.close()
