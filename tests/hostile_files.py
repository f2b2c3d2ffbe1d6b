"""Hostile files for the fuzz test (tests/test_fuzz.py): broken videos, audio, checkpoints, caches.

Each builder returns the file's bytes (media are built once and cached), so that a case can
write them anywhere. Valid files come first; the broken ones are made from them.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import h5py
import numpy as np
import torch
from conftest import make_tone_video

from avloc.trained import DEFAULT_MODEL
from avloc.io.write import write_video
from avloc.models.encoders import create_encoder

MARKER = "pickled-code-ran"  # the file a malicious checkpoint would create in the working directory


# ---------------------------------------------------------------------------------------
# Media


def _built(write: Callable[[Path], None], suffix: str = ".bin") -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"media{suffix}"
        write(path)
        return path.read_bytes()


@functools.cache
def tone() -> bytes:
    """A valid 1-s 32-px MP4 with a tone (moov atom at the end, as PyAV writes it)."""
    return _built(lambda p: make_tone_video(p, seconds=1.0, size=32, fps=8), ".mp4")


@functools.cache
def tone_faststart() -> bytes:
    """The same clip with the moov atom first, so that truncating it keeps the headers."""

    def remux(path: Path) -> None:
        source = path.with_name("source.mp4")
        source.write_bytes(tone())
        with av.open(str(source)) as src, av.open(str(path), "w", format="mp4",
                                                  options={"movflags": "faststart"}) as dst:
            streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
            for packet in src.demux():
                if packet.dts is not None:
                    packet.stream = streams[packet.stream.index]
                    dst.mux(packet)

    return _built(remux, ".mp4")


@functools.cache
def silent_video() -> bytes:
    """A valid MP4 without an audio stream."""
    return _built(lambda p: write_video(p, np.zeros((8, 32, 32, 3), np.uint8), 8), ".mp4")


@functools.cache
def aac_only() -> bytes:
    """An MP4 holding one AAC stream and no video."""

    def write(path: Path) -> None:
        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("aac", rate=16000, layout="mono")
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            for packet in [*stream.encode(frame), *stream.encode()]:
                container.mux(packet)

    return _built(write, ".mp4")


@functools.cache
def video_with_audio(value: float, samples: int = 16000) -> bytes:
    """A Matroska video whose float32 PCM audio holds ``value`` (NaN, inf) in every sample,
    or ``samples = 0``: an audio stream without a single sample."""

    def write(path: Path) -> None:
        with av.open(str(path), "w", format="matroska") as container:
            video = container.add_stream("libx264", rate=8)
            video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
            audio = container.add_stream("pcm_f32le", rate=16000, layout="mono")
            for index in range(8):
                image = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 30 * index, np.uint8), format="rgb24")
                image.pts = index
                container.mux(video.encode(image))
            container.mux(video.encode())
            if samples:
                block = av.AudioFrame.from_ndarray(np.full((1, samples), value, np.float32), format="flt",
                                                   layout="mono")
                block.sample_rate, block.pts = 16000, 0
                container.mux(audio.encode(block))
            container.mux(audio.encode())

    return _built(write, ".mkv")


@functools.cache
def _raw_avi() -> bytes:
    def write(path: Path) -> None:
        with av.open(str(path), "w", format="avi") as container:
            stream = container.add_stream("rawvideo", rate=8)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "rgb24"
            for index in range(8):
                image = np.full((32, 32, 3), 30 * index, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())

    return _built(write, ".avi")


def avi(width: int, height: int) -> Callable[[], bytes]:
    """An uncompressed AVI whose headers claim ``width`` x ``height`` (the frames hold 32 x 32)."""

    def build() -> bytes:
        data = bytearray(_raw_avi())
        strf, avih = data.index(b"strf") + 8, data.index(b"avih") + 8
        data[strf + 4 : strf + 12] = struct.pack("<ii", width, height)  # BITMAPINFOHEADER biWidth, biHeight
        data[avih + 32 : avih + 40] = struct.pack("<II", width, height)  # MainAVIHeader dwWidth, dwHeight
        return bytes(data)

    return build


def wav(samples: np.ndarray, rate: int = 16000, channels: int | None = None) -> bytes:
    """A float32 WAV file (format 3, IEEE float) of ``(C, S)`` samples; ``channels`` overrides
    the channel count written in the header."""
    samples = np.atleast_2d(np.asarray(samples, np.float32))
    count = samples.shape[0] if channels is None else channels
    data = samples.T.astype("<f4").tobytes()  # (C, S) -> interleaved (S, C)
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 3, count, rate,
                         rate * count * 4, count * 4, 32, b"data", len(data))
    return header + data


@functools.cache
def png() -> bytes:
    """A valid 32 x 32 grey PNG image."""
    return cv2.imencode(".png", np.full((32, 32, 3), 128, np.uint8))[1].tobytes()


def noise(seed: int, size: int = 4096) -> bytes:
    """``size`` random bytes from ``seed``."""
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def truncated(source: Callable[[], bytes], length: int) -> Callable[[], bytes]:
    """The first ``length`` bytes of what ``source`` builds."""
    return lambda: source()[:length]


# ---------------------------------------------------------------------------------------
# Checkpoints


class PickledCode:
    """Unpickling this creates MARKER in the working directory: checkpoint loading must never run it."""

    def __reduce__(self):
        return (open, (MARKER, "w"))


def saved(value, legacy: bool = False) -> bytes:
    """``torch.save`` of ``value`` (the legacy format: a plain pickle, no zip archive)."""
    buffer = io.BytesIO()
    torch.save(value, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@functools.cache
def default_state() -> dict:
    """The built-in default model's checkpoint dict."""
    return torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)


def default_meta() -> str:
    """The extraction metadata of the features the default model was trained on."""
    return default_state()["features_meta"]


def checkpoint(edit: Callable[[dict], None] | None = None) -> Callable[[], bytes]:
    """The default model's checkpoint, with ``edit`` applied to a copy of its dict."""

    def build() -> bytes:
        state = {**default_state(), "config": dict(default_state()["config"]),
                 "model": dict(default_state()["model"])}
        if edit is not None:
            edit(state)
        return saved(state)

    return build


def evil_zip() -> bytes:
    """A hand-made torch zip archive whose data.pkl is a plain pickle calling ``open``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(PickledCode(), protocol=2))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return buffer.getvalue()


def setter(*path_and_value) -> Callable[[dict], None]:
    """``edit`` for :func:`checkpoint`: set ``state[k1][k2]... = value`` (None as value deletes)."""
    *keys, value = path_and_value

    def edit(state: dict) -> None:
        target = state
        for key in keys[:-1]:
            target = target[key]
        if value is None:
            target.pop(keys[-1], None)
        else:
            target[keys[-1]] = value

    return edit


def nan_weights(state: dict) -> None:
    """``edit`` for :func:`checkpoint`: every float weight NaN."""
    state["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                      for k, v in state["model"].items()}


def wrong_shape(state: dict) -> None:
    """``edit`` for :func:`checkpoint`: the first conv weight replaced by a (3, 3, 3, 3) one."""
    key = next(k for k, v in state["model"].items() if v.ndim == 4)
    state["model"][key] = torch.zeros(3, 3, 3, 3)


# ---------------------------------------------------------------------------------------
# Feature caches


@functools.cache
def feature_shapes() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(C, h, w)`` of the default model's visual and audio features (256-px frames, 0.25-s log-mel)."""
    with torch.no_grad():
        visual = create_encoder("small-visual").eval()(torch.zeros(1, 3, 256, 256))
        audio = create_encoder("small-audio").eval()(torch.zeros(1, 1, 64, 23))
    return tuple(visual.shape[1:]), tuple(audio.shape[1:])


def feature_cache(edit: Callable[[h5py.File], None] | None = None, meta: str | None = None) -> Callable[[], bytes]:
    """A feature cache of clip "a" (4 steps) that fits the default model, then ``edit`` applied."""

    def write(path: Path) -> None:
        (visual, audio), steps = feature_shapes(), 4
        with h5py.File(path, "w") as h5:
            h5.attrs["format"] = "avloc-features"
            h5.attrs["format_version"] = 1
            h5.attrs["meta"] = default_meta() if meta is None else meta
            group = h5.create_group("clips").create_group("a")
            group["visual"] = np.zeros((steps, *visual), np.float32)
            group["audio"] = np.zeros((steps, *audio), np.float32)
            group["times"] = (np.arange(steps) + 0.5) / 4
            if edit is not None:
                edit(h5)

    return lambda: _built(write, ".h5")


def replaced(key: str, value) -> Callable[[h5py.File], None]:
    """``edit`` for :func:`feature_cache`: clip "a"'s dataset ``key`` replaced by ``value``."""

    def edit(h5: h5py.File) -> None:
        group = h5["clips/a"]
        del group[key]
        group[key] = value

    return edit


def emptied(h5: h5py.File) -> None:
    """``edit`` for :func:`feature_cache`: clip "a" with zero steps."""
    for key in ("visual", "audio", "times"):
        shape, dtype = h5["clips/a"][key].shape[1:], h5["clips/a"][key].dtype
        replaced(key, np.zeros((0, *shape), dtype))(h5)


def h5_file(**datasets) -> Callable[[], bytes]:
    """An HDF5 file holding ``datasets`` (name -> array)."""

    def write(path: Path) -> None:
        with h5py.File(path, "w") as h5:
            for key, value in datasets.items():
                h5[key] = value

    return lambda: _built(write, ".h5")
