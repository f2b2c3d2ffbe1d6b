"""Streaming localisation: one (frame, audio segment) step at a time, bounded memory.

STM's memory only looks back K steps, so a stream is the offline causal model run one step at
a time with a bank of the last K steps (:class:`avloc.models.memory.MemoryBank`): the outputs
equal the offline model's on the same clip (within float error; tested to 1e-5).

    localizer = Localizer(load_trained("default"))
    for step in iter_steps(video, fps=localizer.fps, size=localizer.frame_size,
                           sample_rate=localizer.mel.sample_rate):
        result = localizer(step.frame, step.segment)   # result.heatmap (h, w), .probabilities (K,)

For files, :meth:`encode` + :meth:`advance` run the encoders and the memory on a chunk of
steps at once (much faster on CPU); the outputs are the same as step by step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avloc.audio import log_mel
from avloc.inference import TrainedModel
from avloc.types import AvlocError


@dataclass
class StepResult:
    """What the model says about one step.

    Attributes:
        heatmap: ``(h, w)`` localisation map at feature resolution (STM: softmax over positions).
        probabilities: ``(K,)`` class probabilities of the step (softmax of the logits).
    """

    heatmap: torch.Tensor
    probabilities: torch.Tensor


class Localizer:
    """A trained model as a stream processor.

    Args:
        trained: from :func:`avloc.inference.load_trained`; its model must stream (STM with
            a causal memory).
        device: where the encoders and the model run.
    """

    def __init__(self, trained: TrainedModel, device: str | torch.device = "cpu") -> None:
        head = trained.head
        if not hasattr(head, "stream"):
            raise AvlocError(f"{trained.source}: a {trained.config.model} model cannot stream (no stream())")
        if not getattr(getattr(head, "memory", None), "causal", True):
            raise AvlocError(f"{trained.source}: its memory reads future steps (causal=False) and cannot stream")
        self.device = torch.device(device)
        self.trained, self.head = trained, head.to(self.device).eval()
        self.visual_encoder, self.audio_encoder, self.mel = trained.encoders(self.device)
        self.fps, self.frame_size, self.classes = trained.config.fps, trained.config.size, trained.classes
        self.state = head.init_state()

    def reset(self) -> None:
        """Forget the past: the next step starts a new stream."""
        self.state = self.head.init_state()

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
        output, self.state = self.head.stream(visual[None], audio[None], self.state)  # one stream of N steps
        return output.heatmap[0].cpu(), output.logits[0].softmax(-1).cpu()

    def step(self, visual: torch.Tensor, audio: torch.Tensor) -> StepResult:
        """Advance the memory by one step of encoded features ``(Cv, h, w)``, ``(Ca, m, n)``."""
        heatmaps, probabilities = self.advance(visual[None], audio[None])  # a chunk of one step
        return StepResult(heatmap=heatmaps[0], probabilities=probabilities[0])

    def __call__(self, frame: torch.Tensor, segment: torch.Tensor) -> StepResult:
        """One live step: ``frame (3, H, W)`` in [0, 1] at ``frame_size``, ``segment (L,)`` mono audio
        at ``mel.sample_rate`` centred on the frame's time."""
        visual, audio = self.encode(frame[None], segment[None])  # a batch of one step
        return self.step(visual[0], audio[0])
