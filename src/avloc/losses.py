"""Training losses: pure functions of a model's :class:`AVOutput` and a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avloc.types import AVOutput

SUPERVISIONS = ("video", "segment", "self")  # "self": no labels (contrastive models)
AUTO = "auto"  # resolved per run from the model and the data: avloc.train.resolve_supervision


def video_loss(output: AVOutput, labels: torch.Tensor) -> torch.Tensor:
    """Weak supervision: cross-entropy of the time-pooled ``video_logits (B, K)`` with ``labels (B,)``."""
    return F.cross_entropy(output.video_logits, labels)


def segment_loss(output: AVOutput, step_labels: torch.Tensor) -> torch.Tensor:
    """Per-step cross-entropy of ``logits (B, T, K)`` with ``step_labels (B, T)``."""
    return F.cross_entropy(output.logits.flatten(0, 1), step_labels.flatten())  # (B*T, K), (B*T,)


def classification_loss(output: AVOutput, batch: dict, supervision: str) -> torch.Tensor:
    """The loss of ``supervision``: ``"video"`` (weak, the STM paper) or ``"segment"`` (step labels)."""
    if output.logits is None:
        raise ValueError("this model has no classifier; it needs its own loss (model.loss)")
    if supervision == "video":
        return video_loss(output, batch["label"])
    if supervision == "segment":
        return segment_loss(output, batch["step_labels"])
    raise ValueError(f"supervision {supervision!r} needs the model's own loss; classification takes video or segment")
