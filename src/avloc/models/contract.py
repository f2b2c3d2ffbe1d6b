"""The contract every registered localisation model implements: :class:`LocalizationModel`.

Training (:mod:`avloc.train`), evaluation (:mod:`avloc.evaluate`), video localisation
(:mod:`avloc.localize_video`) and the streaming :class:`avloc.localizer.Localizer` use a model
only through this interface, never by probing its attributes:

- ``forward(visual (B, T, Cv, h, w), audio (B, T, Ca, m, n)) -> AVOutput``: a whole clip. The
  output's ``heatmap (B, T, h, w)`` is the localisation map of every step; ``logits (B, T, K)``
  the event classes of every step, or None for a model without a classifier (the
  self-supervised ones).
- ``paper``: the paper the model implements, one line (authors, title, venue and year).
- ``supervisions``: the supervisions its loss accepts (:data:`avloc.losses.SUPERVISIONS`), the
  first being what ``--supervision auto`` picks when the data allows it.
- ``loss(output, batch, supervision)``: its training loss; by default the classification loss
  of ``supervision`` (:func:`avloc.losses.classification_loss`).
- ``common_embedding``: True when the output's ``embeddings["audio"]`` and
  ``embeddings["visual"]`` are per-step vectors ``(B, T, D)`` in one space (AVDLN), what
  cross-modal localisation (:mod:`avloc.cross_modal`) reads. Other embeddings keys are the
  model's own business (its loss's inputs).
- ``stream_refusal()``: None when the model can run one step at a time with a bounded state
  (``init_state()`` and ``stream(visual, audio, state)``, outputs equal to ``forward`` on the
  whole clip); otherwise the reason it cannot, one line. A model that cannot stream still
  localises a video: offline, over the whole clip at once. A model whose every step depends on
  that step alone (``stepwise = True``: EZ-VSL, AVDLN) streams with no state at all.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from avloc.losses import classification_loss
from avloc.types import AVOutput, AvlocError


class LocalizationModel(nn.Module):
    """Base class of the registered models; see the module docstring for the contract."""

    paper: str = ""
    supervisions: tuple[str, ...] = ("video", "segment")
    stepwise: bool = False  # True: in eval mode a step's outputs depend on that step alone
    common_embedding: bool = False  # True: embeddings "audio" / "visual" are (B, T, D) in one space


    def loss(self, output: AVOutput, batch: dict, supervision: str) -> torch.Tensor:
        """The training loss of one batch: classification under ``supervision`` unless overridden."""
        return classification_loss(output, batch, supervision)

    def stream_refusal(self) -> str | None:
        """Why this model cannot stream (one line), or None when it can."""
        if self.stepwise:
            return None
        return "it has no step-by-step form (its outputs at a step depend on the whole clip)"

    def init_state(self) -> Any:
        """The empty state of a new stream (streaming models only; a stepwise model's is None)."""
        if self.stepwise:
            return None
        raise AvlocError(f"{type(self).__name__} cannot stream: {self.stream_refusal()}")

    def stream(self, visual: torch.Tensor, audio: torch.Tensor, state: Any) -> tuple[AVOutput, Any]:
        """The next T steps ``(B, T, ...)`` of a stream: (outputs, new state) (streaming models only)."""
        if self.stepwise:
            return self(visual=visual, audio=audio), state
        raise AvlocError(f"{type(self).__name__} cannot stream: {self.stream_refusal()}")
