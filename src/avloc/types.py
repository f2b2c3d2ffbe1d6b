"""Shape vocabulary and the small dataclasses that cross module borders.

Tensor shapes used throughout avloc (B batch, T time steps, N items):

- frames        ``(T, 3, H, W)`` or ``(B, T, 3, H, W)``, float32 in [0, 1]
- waveform      ``(S,)`` mono float32 in [-1, 1] at ``sample_rate`` Hz
- audio windows ``(T, L)``: the audio segment paired with each frame
- log-mel       ``(T, 1, M, N)``: M mel bins, N STFT frames per segment
- visual maps   ``(T, C, h, w)``; audio maps ``(T, C, m, n)``
- heat maps     ``(B, T, h, w)`` at feature resolution, ``(B, T, H, W)`` upsampled
- boxes         ``(N, 4)`` xyxy in absolute pixels (torchvision's convention)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the command line imports this module, and importing torch takes seconds
    import torch


class AvlocError(Exception):
    """An error caused by the user's input: reported as one line, no traceback.

    The convention across avloc: what a user writes or hands in (files, datasets, options,
    model settings, features) that is wrong raises ``AvlocError`` (``FeatureShapeError`` for
    tensors of the wrong shape, also a ``ValueError``); a Python caller combining arguments in
    a way no input could produce (two inputs where one is expected, a loss for a supervision the
    model did not declare) raises ``TypeError`` / ``ValueError``, which keep their traceback.
    """


class FeatureShapeError(AvlocError, ValueError):
    """Features whose shape does not fit the model (e.g. from a cache made with other encoders)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a container holds, read from its headers without decoding."""

    path: Path
    duration: float  # seconds, max over the video and audio streams
    width: int
    height: int
    frame_rate: float | None  # average rate as the container reports it
    has_audio: bool
    sample_rate: int | None
    channels: int | None


@dataclass
class AVClip:
    """Decoded frames paired with audio.

    Attributes:
        frames: ``(T, 3, H, W)`` float32 in [0, 1].
        times: ``(T,)`` float64, the time in seconds of every sampled frame.
        waveform: ``(S,)`` float32 mono waveform at ``sample_rate``, starting at ``start``.
        segments: ``(T, L)`` float32, the audio window paired with each frame.
        sample_rate: audio sample rate in Hz.
        start: time in seconds of ``waveform[0]``.
        original_size: ``(height, width)`` of the decoded video before resizing.
    """

    frames: torch.Tensor
    times: torch.Tensor
    waveform: torch.Tensor
    segments: torch.Tensor
    sample_rate: int
    start: float
    original_size: tuple[int, int]


@dataclass
class AVOutput:
    """What every localisation model returns, in training and in evaluation alike.

    Attributes:
        heatmap: ``(B, T, h, w)`` localisation map of every step at feature resolution
            (for STM a softmax over positions, so each map sums to 1).
        logits: ``(B, T, K)`` per-step class logits (K classes, background last), or None
            for methods without a classifier.
        video_logits: ``(B, K)`` clip-level logits pooled over time, or None.
        embeddings: named intermediate tensors a loss may need (e.g. pooled audio vectors).
    """

    heatmap: torch.Tensor
    logits: torch.Tensor | None = None
    video_logits: torch.Tensor | None = None
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
