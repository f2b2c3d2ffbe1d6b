"""Streaming localisation: one (frame, audio segment) step at a time, bounded memory.

STM's memory only looks back K steps, so a stream is the offline causal model run one step at
a time with a bank of the last K steps (:class:`avloc.models.memory.MemoryBank`): the outputs
equal the offline model's on the same clip (within float error; tested to 1e-5).

    localizer = Localizer(load_trained("default"))
    for step in iter_steps(video, fps=localizer.fps, size=localizer.frame_size,
                           sample_rate=localizer.mel.sample_rate):
        result = localizer(step.frame, step.segment)   # result.heatmap (h, w), .probabilities (K,)

For files, :meth:`encode` + :meth:`advance` run the encoders and the memory on a chunk of
steps at once (much faster on CPU); the outputs are the same as step by step. A model that cannot
stream (:meth:`avloc.models.contract.LocalizationModel.stream_refusal`) runs offline:
``Localizer(trained, stream=False)`` and :meth:`whole` on every step of the clip at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avloc.audio import log_mel
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


class Localizer:
    """A trained model as a stream processor (or, ``stream=False``, run offline on whole clips).

    Args:
        trained: from :func:`avloc.trained.load_trained`; with ``stream=True`` its model must
            stream (STM with a causal memory, EZ-VSL, AVDLN; any other is refused with its reason).
        device: where the encoders and the model run.
        stream: keep a stream's state for :meth:`step` / :meth:`advance`; False: only
            :meth:`whole` (every registered model).
    """

    def __init__(self, trained: TrainedModel, device: str | torch.device = "cpu", *, stream: bool = True) -> None:
        head = trained.head
        refusal = head.stream_refusal()
        if stream and refusal is not None:
            raise AvlocError(f"{trained.source}: model {trained.config.model} cannot stream: {refusal}")
        self.device = torch.device(device)
        self.streams = stream  # False: whole clips only (whole())
        self.trained = trained
        self.head = head.to(self.device).eval()
        self.visual_encoder, self.audio_encoder, self.mel = trained.encoders(self.device)
        self.fps = trained.config.fps
        self.frame_size = trained.config.size
        self.classes = trained.classes
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next step starts a new stream."""
        self.state = self.head.init_state() if self.streams else None

    @torch.no_grad()
    def encode_visual(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (N, 3, H, W)`` in [0, 1] at ``frame_size`` -> ``(N, Cv, h, w)``."""
        return self.visual_encoder(frames.to(self.device))

    @torch.no_grad()
    def front_end(self, segments: torch.Tensor) -> torch.Tensor:
        """Audio ``segments (N, L)`` at ``mel.sample_rate`` -> log-mel ``(N, 1, M, F)``."""
        return log_mel(segments.to(self.device), self.mel)

    @torch.no_grad()
    def encode_audio(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(N, 1, M, F)`` -> ``(N, Ca, m, n)``."""
        return self.audio_encoder(logmel)

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
        output, self.state = self.head.stream(visual[None], audio[None], self.state)  # one stream of N steps
        return _read(output)

    @torch.no_grad()
    def whole(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every step of one clip at once, encoded ``(N, Cv, h, w)``, ``(N, Ca, m, n)``: heat maps
        ``(N, h, w)`` and class probabilities ``(N, K)`` (``(N, 0)`` without a classifier), as the
        model's ``forward`` gives them; the stream's state is left as it was."""
        return _read(self.head(visual=visual[None].to(self.device), audio=audio[None].to(self.device)))

    def step(self, visual: torch.Tensor, audio: torch.Tensor) -> StepResult:
        """Advance the memory by one step of encoded features ``(Cv, h, w)``, ``(Ca, m, n)``."""
        heatmaps, probabilities = self.advance(visual[None], audio[None])  # a chunk of one step
        return StepResult(heatmap=heatmaps[0], probabilities=probabilities[0])

    def __call__(self, frame: torch.Tensor, segment: torch.Tensor) -> StepResult:
        """One live step: ``frame (3, H, W)`` in [0, 1] at ``frame_size``, ``segment (L,)`` mono audio
        at ``mel.sample_rate`` centred on the frame's time."""
        visual, audio = self.encode(frame[None], segment[None])  # a batch of one step
        return self.step(visual[0], audio[0])


def _read(output: AVOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Heat maps ``(N, h, w)`` and class probabilities ``(N, K)`` of a one-clip output
    (``(N, 0)`` for a model without a classifier)."""
    heatmaps = output.heatmap[0].cpu()  # (1, N, h, w) -> (N, h, w)
    if output.logits is None:
        return heatmaps, torch.zeros(heatmaps.shape[0], 0)
    return heatmaps, output.logits[0].softmax(-1).cpu()  # (1, N, K) -> (N, K)
