"""Write frames and audio to an MP4 file (H.264 + AAC) with PyAV."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

from avloc.atomic import atomic_path

AAC_FRAME = 1024  # samples per AAC frame


class VideoWriter:
    """Write an MP4 (H.264, optional AAC audio) frame by frame: bounded memory for any length.

    The file appears at ``path`` only when the writer closes without an error (a temp file
    is renamed), so a crash never leaves half a video. Use as a context manager::

        with VideoWriter(path, fps=25, width=640, height=360, sample_rate=48000, channels=2) as out:
            out.write_frame(rgb)           # (H, W, 3) uint8
            out.write_audio(samples)       # (C, S) float32 in [-1, 1], in time order

    Args:
        width, height: frame size; both even (H.264 4:2:0).
        sample_rate, channels: audio format (1 or 2 channels), or ``sample_rate=None`` for no audio.
        crf, preset, audio_bitrate: x264 quality, x264 speed preset, AAC bit rate.
        threads: x264's threads; 0 lets x264 choose (about 1.5 per core), 1 keeps the
            encoding on the calling thread (about 13% less CPU a frame: when other work holds
            the cores, as the encoders do beside ``avloc localize``'s overlay).
    """

    def __init__(self, path: str | os.PathLike, fps: float, width: int, height: int,
                 sample_rate: int | None = None, channels: int = 1, crf: int = 18, preset: str = "veryfast",
                 audio_bitrate: int = 128_000, threads: int = 0) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
        if sample_rate is not None and channels not in (1, 2):
            raise ValueError(f"audio must have 1 or 2 channels, got {channels}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: x264 chooses), got {threads}")
        self.path = path
        self.fps = fps
        self.width = width
        self.height = height
        self.sample_rate = sample_rate
        self.channels = channels
        self.crf = crf
        self.preset = preset
        self.threads = threads
        self.audio_bitrate = audio_bitrate
        self._samples = 0

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._container = av.open(str(tmp), mode="w", format="mp4")
        self._video = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        self._video.width, self._video.height = self.width, self.height
        self._video.pix_fmt = "yuv420p"
        # bframes=0 keeps decode order == presentation order (simpler timestamps downstream).
        self._video.options = {"crf": str(self.crf), "preset": self.preset, "bf": "0", "threads": str(self.threads)}
        self._audio = None
        if self.sample_rate is not None:
            layout = "mono" if self.channels == 1 else "stereo"
            self._audio = self._container.add_stream("aac", rate=self.sample_rate, layout=layout)
            self._audio.bit_rate = self.audio_bitrate
            self._pending = np.zeros((self.channels, 0), np.float32)
        return self

    def write_frame(self, image: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame."""
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame must be ({self.height}, {self.width}, 3) uint8, got {image.shape} {image.dtype}")
        self._container.mux(self._video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))

    def write_audio(self, samples: np.ndarray) -> None:
        """Append ``(C, S)`` float samples (AAC takes them in 1024-sample frames)."""
        if self._audio is None:
            raise ValueError("this writer has no audio stream (sample_rate=None)")
        self._pending = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(self.channels, -1)], 1)
        while self._pending.shape[1] >= AAC_FRAME:
            self._encode_audio(self._pending[:, :AAC_FRAME])
            self._pending = self._pending[:, AAC_FRAME:]

    def _encode_audio(self, block: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=self._audio.layout.name)
        frame.sample_rate = self.sample_rate
        frame.pts = self._samples
        frame.time_base = Fraction(1, self.sample_rate)
        self._samples += block.shape[1]
        self._container.mux(self._audio.encode(frame))

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                self._container.mux(self._video.encode())
                if self._audio is not None:
                    if self._pending.shape[1]:
                        self._encode_audio(self._pending)
                    self._container.mux(self._audio.encode())
        finally:
            self._container.close()
            self._atomic.__exit__(kind, error, traceback)


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
    if audio is not None:
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))  # (S,) -> (1, S)
    height, width = frames.shape[1:3]
    with VideoWriter(path, fps, width, height, sample_rate if audio is not None else None,
                     audio.shape[0] if audio is not None else 1, crf, preset, audio_bitrate) as writer:
        for image in frames:
            writer.write_frame(image)
        if audio is not None:
            writer.write_audio(audio)
