"""Streaming localisation: one (frame, audio segment) step at a time, bounded memory.

STM's memory only looks back K steps, so a stream is the offline causal model run one step at
a time with a bank of the last K steps (:class:`avloc.models.memory.MemoryBank`): the outputs
equal the offline model's on the same clip (within float error; tested to 1e-5).

    localizer = Localizer(load_trained("default"))
    for step in iter_steps(video, fps=localizer.fps, size=localizer.frame_size,
                           sample_rate=localizer.mel.sample_rate):
        result = localizer(step.frame, step.segment)   # result.heatmap (h, w), .probabilities (K,)

A live source calls it the same way with what it has (:meth:`Localizer.__call__`): an
``(H, W, 3)`` uint8 RGB NumPy frame or a ``(3, H, W)`` float tensor in [0, 1], of any size
(resized as the decoder resizes), and a float NumPy or torch segment, ``(L,)`` mono or
``(L, C)`` samples x channels (averaged); anything else is a one-line :class:`AvlocError`.
:meth:`Localizer.reset` starts a new stream (another video, a cut in the live feed).

For files, :meth:`encode` + :meth:`advance` run the encoders and the memory on a chunk of
steps at once (much faster on CPU); the outputs are the same as step by step. A model that cannot
stream (:meth:`avloc.models.contract.LocalizationModel.stream_refusal`) runs offline:
``Localizer(trained, stream=False)`` and :meth:`whole` on every step of the clip at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from avloc.accelerate import acceleration
from avloc.audio import log_mel
from avloc.io.decode import resize_image
from avloc.trained import TrainedModel
from avloc.types import AVOutput, AvlocError


@dataclass
class StepResult:
    """What the model says about one step.

    Attributes:
        heatmap: ``(h, w)`` localisation map at feature resolution (STM: softmax over positions).
        probabilities: ``(K,)`` class probabilities of the step (softmax of the logits); ``(0,)``
            for a model without a classifier.
    """

    heatmap: torch.Tensor
    probabilities: torch.Tensor


def check_streams(trained: TrainedModel) -> None:
    """Raise AvlocError, naming the checkpoint and the reason, when ``trained`` cannot stream."""
    refusal = trained.head.stream_refusal()
    if refusal is not None:
        raise AvlocError(f"{trained.source}: model {trained.config.model} cannot stream: {refusal}")


class Localizer:
    """A trained model as a stream processor (or, ``stream=False``, run offline on whole clips).

    Args:
        trained: from :func:`avloc.trained.load_trained`; with ``stream=True`` its model must
            stream (STM with a causal memory, EZ-VSL, AVDLN; any other is refused with its reason).
        device: where the encoders and the model run.
        stream: keep a stream's state for :meth:`step` / :meth:`advance`; False: only
            :meth:`whole` (every registered model).
        precision: ``auto`` (bf16 / fp16 autocast and channels-last encoders on CUDA, float32
            on the CPU), ``fp32``, ``bf16`` or ``fp16`` (:func:`avloc.accelerate.acceleration`);
            features, heat maps and probabilities come back in float32 whatever it is.

    Attributes:
        classes: class names in the order of ``probabilities`` (background last).
        fps: steps per second the model was trained at.
        frame_size: side in pixels of the square frames the visual encoder takes.
        segment_length: audio samples per step (``1 / fps`` seconds at ``mel.sample_rate``).
    """

    def __init__(self, trained: TrainedModel, device: str | torch.device = "cpu", *, stream: bool = True,
                 precision: str = "auto") -> None:
        head = trained.head
        if stream:
            check_streams(trained)
        self.device = torch.device(device)
        self.streams = stream  # False: whole clips only (whole())
        self.trained = trained
        self.head = head.to(self.device).eval()
        self.visual_encoder, self.audio_encoder, self.mel = trained.encoders(self.device)
        self.accel = acceleration(self.device, precision)
        self.accel.prepare(self.visual_encoder, self.audio_encoder)
        self.fps = trained.config.fps
        self.frame_size = trained.config.size
        self.segment_length = round(self.mel.sample_rate / self.fps)  # audio samples per step: 1/fps s
        self.classes = trained.classes
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next step starts a new stream."""
        self.state = self.head.init_state() if self.streams else None

    @torch.no_grad()
    def encode_visual(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (N, 3, H, W)`` in [0, 1] at ``frame_size`` -> ``(N, Cv, h, w)``."""
        with self.accel.autocast():
            return self.visual_encoder(frames.to(self.device)).float()

    @torch.no_grad()
    def front_end(self, segments: torch.Tensor) -> torch.Tensor:
        """Audio ``segments (N, L)`` at ``mel.sample_rate`` -> log-mel ``(N, 1, M, F)``."""
        return log_mel(segments.to(self.device), self.mel)

    @torch.no_grad()
    def encode_audio(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(N, 1, M, F)`` -> ``(N, Ca, m, n)``."""
        with self.accel.autocast():
            return self.audio_encoder(logmel).float()

    def encode(self, frames: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both encoders on a batch of steps -> ``visual (N, Cv, h, w)``, ``audio (N, Ca, m, n)``."""
        return self.encode_visual(frames), self.encode_audio(self.front_end(segments))

    @torch.no_grad()
    def advance(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance the memory by N consecutive steps of encoded features ``(N, Cv, h, w)``,
        ``(N, Ca, m, n)``: heat maps ``(N, h, w)`` and class probabilities ``(N, K)``, equal to
        N calls of :meth:`step` (one masked attention instead of N)."""
        if not self.streams:
            raise AvlocError("this Localizer was made with stream=False: pass the whole clip to whole()")
        with self.accel.autocast():
            output, self.state = self.head.stream(visual[None], audio[None], self.state)  # one stream of N steps
        return _read(output)

    @torch.no_grad()
    def whole(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every step of one clip at once, encoded ``(N, Cv, h, w)``, ``(N, Ca, m, n)``: heat maps
        ``(N, h, w)`` and class probabilities ``(N, K)`` (``(N, 0)`` without a classifier), as the
        model's ``forward`` gives them; the stream's state is left as it was."""
        with self.accel.autocast():
            return _read(self.head(visual=visual[None].to(self.device), audio=audio[None].to(self.device)))

    def step(self, visual: torch.Tensor, audio: torch.Tensor) -> StepResult:
        """Advance the memory by one step of encoded features ``(Cv, h, w)``, ``(Ca, m, n)``."""
        heatmaps, probabilities = self.advance(visual[None], audio[None])  # a chunk of one step
        return StepResult(heatmap=heatmaps[0], probabilities=probabilities[0])

    def __call__(self, frame: np.ndarray | torch.Tensor, segment: np.ndarray | torch.Tensor) -> StepResult:
        """One live step: a frame and the mono audio centred on its time.

        Args:
            frame: ``(H, W, 3)`` uint8 RGB NumPy array (PIL, PyAV's ``to_ndarray("rgb24")``,
                OpenCV after ``cvtColor(BGR2RGB)``) or ``(3, H, W)`` float torch tensor in [0, 1]
                (:mod:`avloc.io.decode`'s frames), any size; see :meth:`prepare_frame`.
            segment: float audio at ``mel.sample_rate``, NumPy or torch: ``(L,)`` mono or
                ``(L, C)`` samples x channels, averaged to mono; L is normally
                :attr:`segment_length`; see :meth:`prepare_segment`.

        Raises:
            AvlocError: a frame or segment of the wrong type, shape, dtype or range (one line).
        """
        visual, audio = self.encode(self.prepare_frame(frame)[None], self.prepare_segment(segment)[None])  # one step
        return self.step(visual[0], audio[0])

    def prepare_frame(self, frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A frame as the encoder takes it: ``(3, frame_size, frame_size)`` float32 in [0, 1].

        A frame of another size is resized exactly as :mod:`avloc.io.decode` resizes decoded
        frames (:func:`avloc.io.decode.resize_image`: swscale's antialiased bilinear on uint8),
        so a live frame and the same frame read from a file give the encoder the same pixels; a
        float frame is rounded to 1/255 first (decoded frames are), one already at
        ``frame_size`` is taken as it is.

        Raises:
            AvlocError: not an ``(H, W, 3)`` uint8 array nor a ``(3, H, W)`` float tensor in [0, 1].
        """
        size = (self.frame_size, self.frame_size)
        if isinstance(frame, np.ndarray):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
                raise AvlocError(f"frame: expected an (H, W, 3) uint8 RGB array, got {frame.dtype} of shape "
                                 f"{frame.shape}{_FRAME_HINT}")
            return resize_image(frame, size)
        if isinstance(frame, torch.Tensor):
            if not frame.is_floating_point() or frame.ndim != 3 or frame.shape[0] != 3 or 0 in frame.shape:
                raise AvlocError(f"frame: expected a (3, H, W) float tensor in [0, 1], got {frame.dtype} of shape "
                                 f"{tuple(frame.shape)}{_FRAME_HINT}")
            low, high = float(frame.min()), float(frame.max())
            if not (0.0 <= low and high <= 1.0):  # also refuses NaN
                raise AvlocError(f"frame: float frames must lie in [0, 1], got values in [{low:g}, {high:g}]")
            if tuple(frame.shape[1:]) == size:
                return frame.float()
            image = (frame.detach().cpu().float() * 255).round().to(torch.uint8)
            image = image.permute(1, 2, 0)  # (3, H, W) -> (H, W, 3)
            return resize_image(image.numpy(), size)
        raise AvlocError(f"frame: expected a NumPy array or a torch tensor, got {type(frame).__name__}{_FRAME_HINT}")

    def prepare_segment(self, segment: np.ndarray | torch.Tensor) -> torch.Tensor:
        """An audio segment as the front end takes it: ``(L,)`` float mono.

        ``(L,)`` is taken as it is; ``(L, C)`` (samples x channels, the layout of soundfile,
        sounddevice and ``scipy.io.wavfile``) is averaged over its channels, as the decoder
        downmixes. Integer PCM is refused (scale it to [-1, 1] first, e.g. int16 / 32768).

        Raises:
            AvlocError: not float, not 1-D or 2-D, not finite, or shorter than one analysis window.
        """
        if isinstance(segment, np.ndarray):
            if not np.issubdtype(segment.dtype, np.floating):
                raise AvlocError(f"audio segment: expected float samples in [-1, 1], got {segment.dtype}"
                                 f"{_PCM_HINT if np.issubdtype(segment.dtype, np.integer) else ''}")
            segment = torch.from_numpy(np.ascontiguousarray(segment))
        elif isinstance(segment, torch.Tensor):
            if not segment.is_floating_point():
                raise AvlocError(f"audio segment: expected float samples in [-1, 1], got {segment.dtype}{_PCM_HINT}")
        else:
            raise AvlocError(f"audio segment: expected a NumPy array or a torch tensor, got {type(segment).__name__}")
        if segment.ndim == 2:
            if segment.shape[0] < segment.shape[1]:  # fewer samples than channels: (C, L) given
                raise AvlocError(f"audio segment: 2-D audio is (samples, channels), got shape {tuple(segment.shape)}; "
                                 "transpose it (.T)")
            segment = segment.mean(dim=1)  # (L, C) -> (L,)
        elif segment.ndim != 1:
            raise AvlocError(f"audio segment: expected (L,) mono or (L, C) samples x channels, got shape "
                             f"{tuple(segment.shape)}")
        if segment.shape[0] < self.mel.win_length:
            raise AvlocError(f"audio segment: {segment.shape[0]} samples is shorter than one {self.mel.win_length}-"
                             f"sample analysis window (expected {self.segment_length} samples: 1/fps s at "
                             f"{self.mel.sample_rate} Hz)")
        if not bool(torch.isfinite(segment).all()):
            raise AvlocError("audio segment: holds NaN or infinite samples")
        return segment.float()

_FRAME_HINT = " (an (H, W, 3) uint8 RGB array or a (3, H, W) float tensor in [0, 1], any size)"
_PCM_HINT = " (integer PCM: scale it to [-1, 1] first, e.g. samples / 32768 for int16)"


def _read(output: AVOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Heat maps ``(N, h, w)`` and class probabilities ``(N, K)`` of a one-clip output
    (``(N, 0)`` for a model without a classifier)."""
    heatmaps = output.heatmap[0].float().cpu()  # (1, N, h, w) -> (N, h, w); float32 after autocast too
    if output.logits is None:
        return heatmaps, torch.zeros(heatmaps.shape[0], 0)
    return heatmaps, output.logits[0].float().softmax(-1).cpu()  # (1, N, K) -> (N, K)
