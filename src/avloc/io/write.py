"""Write frames and audio to an MP4 file (H.264 + AAC) with PyAV."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

from avloc.atomic import atomic_path


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
    preset: str = "veryfast",
    audio_bitrate: int = 128_000,
) -> None:
    """Write ``frames`` (and optionally ``audio``) to ``path`` atomically.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB. H and W must be even (H.264 4:2:0).
        fps: constant frame rate of the output.
        audio: ``(S,)`` mono or ``(C, S)`` float in [-1, 1], or None for no audio track.
        sample_rate: sample rate of ``audio`` in Hz.
        crf: x264 constant rate factor (lower = better quality).
        preset: x264 speed preset.
        audio_bitrate: AAC bit rate in bits per second.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(1001)
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        # bframes=0 keeps decode order == presentation order (simpler timestamps downstream).
        video.options = {"crf": str(crf), "preset": preset, "bf": "0"}
        audio_stream = None
        if audio is not None:
            audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))  # (S,) -> (1, S)
            layout = {1: "mono", 2: "stereo"}[audio.shape[0]]
            audio_stream = container.add_stream("aac", rate=sample_rate, layout=layout)
            audio_stream.bit_rate = audio_bitrate
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, sample_rate)


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
    """Feed planar float audio ``(C, S)`` to the AAC encoder in 1024-sample frames."""
    chunk = 1024
    layout = stream.layout.name
    for offset in range(0, audio.shape[1], chunk):
        block = np.ascontiguousarray(audio[:, offset : offset + chunk])  # (C, <=1024)
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = offset
        frame.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
