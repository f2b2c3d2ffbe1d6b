"""Hostile inputs: hundreds of malformed files and flags through the CLI and the Python API.

Every case writes its files into a fresh folder ``in/``, then, with the working directory and
the temporary directory inside the case's own folder and under ``signal.alarm``, runs
``avloc.cli.main(argv)`` in-process and/or one public API call. A case passes when:

- the CLI exits non-zero with one line on stderr, ``avloc: error: ...``, that names the
  offending file (flag values that do not parse: an argparse usage error, exit 2);
- the API call raises :class:`avloc.types.AvlocError` whose message names the file;
- nothing outside ``out/`` changed, the temporary directory is empty, and ``out/`` holds no
  final output (a failing run leaves nothing half-written behind).

A few cases also run in a real process (``python -m avloc`` and the ``avloc`` script) for the
true exit code and a stderr without a traceback. ``bench/fuzz_report.py`` runs the same cases
and writes their counts to docs/results.md.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import cv2
import h5py
import numpy as np
import pytest
import torch

from avloc.checkpoint import load_checkpoint
from avloc.cli import main
from avloc.data import audioset_instrument, avatar, ave, cvat, flickr, vggss
from avloc.data.manifest import load_manifest
from avloc.inference import DEFAULT_MODEL, load_trained
from avloc.io.decode import iter_steps, probe, read_clip
from avloc.io.write import write_video
from avloc.types import AvlocError

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest's helpers, for bench/fuzz_report.py too
from conftest import make_tone_video

DEADLINE = 20  # seconds a case may take before it counts as a hang
FINAL_NAMES = {"manifest.jsonl", "overlay.mp4", "boxes.json", "heatmaps.npz", "contact_sheet.png", "log.csv",
               "loss.png", "Annotations.txt", "e.json"}
FINAL_SUFFIXES = (".pt", ".h5")
MARKER = "pickled-code-ran"  # the file a malicious checkpoint would create in the working directory


# ---------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    """One hostile input.

    Attributes:
        name: ``kind/what``, unique; the kind groups cases in the report.
        files: path in ``in/`` -> content, or a function returning it (media are built lazily).
        argv: CLI arguments; ``{in}`` and ``{out}`` become the case's input and output folders.
        api: a public call ``(in, out) -> ...`` that must raise AvlocError, or None.
        culprit: the path (relative to ``in/``) every message must name; "" = the first file,
            None = nothing to name (a bad flag).
        usage: the flag does not parse: argparse's usage error (exit 2) is the expected answer.
        owner: another helper's file that must fix this case (marked xfail until it is fixed).
    """

    name: str
    files: dict = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    api: Callable[[Path, Path], object] | None = None
    culprit: str | None = ""
    usage: bool = False
    owner: str = ""

    @property
    def kind(self) -> str:
        return self.name.split("/")[0]

    def culprit_path(self, folder: Path) -> Path | None:
        if self.culprit is None:
            return None
        return folder / (self.culprit or next(iter(self.files)))


def _case(name: str, files: dict, *argv: str, **options) -> Case:
    return Case(name, files, tuple(argv), **options)


# ---------------------------------------------------------------------------------------
# Media, built once (lazily) and shared by the cases


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
    return cv2.imencode(".png", np.full((32, 32, 3), 128, np.uint8))[1].tobytes()


def noise(seed: int, size: int = 4096) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def truncated(source: Callable[[], bytes], length: int) -> Callable[[], bytes]:
    return lambda: source()[:length]


# ---------------------------------------------------------------------------------------
# Checkpoints


class _Pwn:
    """Unpickling this creates MARKER in the working directory: checkpoint loading must never run it."""

    def __reduce__(self):
        return (open, (MARKER, "w"))


def _saved(value, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@functools.cache
def _default_state() -> dict:
    return torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)


def checkpoint(edit: Callable[[dict], None]) -> Callable[[], bytes]:
    """The default model's checkpoint with ``edit`` applied to a copy of its dict."""

    def build() -> bytes:
        state = {**_default_state(), "config": dict(_default_state()["config"]),
                 "model": dict(_default_state()["model"])}
        edit(state)
        return _saved(state)

    return build


def _evil_zip() -> bytes:
    """A hand-made torch zip archive whose data.pkl is a plain pickle calling ``open``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(_Pwn(), protocol=2))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return buffer.getvalue()


def _setter(*path_and_value) -> Callable[[dict], None]:
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


def _nan_weights(state: dict) -> None:
    state["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                      for k, v in state["model"].items()}


def _wrong_shape(state: dict) -> None:
    key = next(k for k, v in state["model"].items() if v.ndim == 4)
    state["model"][key] = torch.zeros(3, 3, 3, 3)


# ---------------------------------------------------------------------------------------
# Feature caches


@functools.cache
def _shapes() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(C, h, w)`` of the default model's visual and audio features (4 steps of the tone clip)."""
    from avloc.models.encoders import create_encoder

    with torch.no_grad():
        visual = create_encoder("small-visual").eval()(torch.zeros(1, 3, 256, 256))
        audio = create_encoder("small-audio").eval()(torch.zeros(1, 1, 64, 23))
    return tuple(visual.shape[1:]), tuple(audio.shape[1:])


def feature_cache(edit: Callable[[h5py.File], None] | None = None, meta: str | None = None) -> Callable[[], bytes]:
    """A feature cache of clip "a" (4 steps) that fits the default model, then ``edit`` applied."""

    def write(path: Path) -> None:
        (visual, audio), steps = _shapes(), 4
        with h5py.File(path, "w") as h5:
            h5.attrs["format"] = "avloc-features"
            h5.attrs["format_version"] = 1
            h5.attrs["meta"] = load_trained("default").features_meta if meta is None else meta
            group = h5.create_group("clips").create_group("a")
            group["visual"] = np.zeros((steps, *visual), np.float32)
            group["audio"] = np.zeros((steps, *audio), np.float32)
            group["times"] = (np.arange(steps) + 0.5) / 4
            if edit is not None:
                edit(h5)

    return lambda: _built(write, ".h5")


def _replace(key: str, value) -> Callable[[h5py.File], None]:
    def edit(h5: h5py.File) -> None:
        group = h5["clips/a"]
        del group[key]
        group[key] = value

    return edit


# ---------------------------------------------------------------------------------------
# Manifests and annotation files

CLIP = {"id": "a", "video": "v.mp4", "split": "test", "label": "dog",
        "frames": [{"t": 0.125, "boxes": [[1, 1, 10, 10]], "scenario": "single"}]}
KNOWN_CLIP = {**CLIP, "label": "circle"}  # a class of the default model, for the cases that evaluate it


def manifest(*lines: dict | str) -> str:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


def dataset(*lines: dict | str, **extra) -> dict:
    """A dataset folder: ``manifest.jsonl`` first (the culprit), the tone video, ``extra`` files."""
    return {"manifest.jsonl": manifest(*lines), "v.mp4": tone, **extra}


def good_dataset(**extra) -> dict:
    train, val = {**CLIP, "id": "t", "split": "train"}, {**CLIP, "id": "v", "split": "val"}
    return {"manifest.jsonl": manifest(CLIP, train, val), "v.mp4": tone, **extra}


def flickr_xml(*boxes) -> str:
    items = "".join(f"<object><bbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bbox></object>"
                    for a, b, c, d in boxes)
    return f"<annotation>{items}</annotation>"


def cvat_xml(size="2", width="32", height="32", boxes='<box frame="0" xtl="1" ytl="1" xbr="9" ybr="9"/>') -> str:
    return (f"<annotations><meta><task><size>{size}</size><original_size><width>{width}</width><height>{height}"
            f"</height></original_size></task></meta><track>{boxes}</track></annotations>")


def avatar_json(**changes) -> str:
    document = {"original_width": 32, "original_height": 32,
                "annotations": [{"bbox": [1, 1, 8, 8], "segmentation": [], "audio_visual_category": "dog",
                                 "task": "single-sound"}]}
    document.update(changes)
    return json.dumps(document)


def avatar_object(**changes) -> str:
    item = {"bbox": [1, 1, 8, 8], "segmentation": [], "audio_visual_category": "dog", "task": "single-sound"}
    item.update(changes)
    return json.dumps({"original_width": 32, "original_height": 32, "annotations": [item]})


INSTRUMENT_HEADER = "keyword,start,end,evt,target,multi\n"


def entity_bomb() -> str:
    """XML whose entities expand to 2 GB of text ("billion laughs")."""
    entities = '<!ENTITY e0 "ha">' + "".join(f'<!ENTITY e{n} "{f"&e{n - 1};" * 10}">' for n in range(1, 10))
    return f'<?xml version="1.0"?><!DOCTYPE annotations [{entities}]><annotations>&e9;</annotations>'


def h5_file(**datasets) -> Callable[[], bytes]:
    def write(path: Path) -> None:
        with h5py.File(path, "w") as h5:
            for key, value in datasets.items():
                h5[key] = value

    return lambda: _built(write, ".h5")


AVE_SPLIT = {f"{name}_order.h5": h5_file(order=np.array([0] if name == "test" else [], np.int64))
             for name in ("train", "val", "test")}


# ---------------------------------------------------------------------------------------
# The cases, kind by kind

# Valid to decode, not to localise (cut at 8745 bytes, the file has lost its whole audio track).
DECODABLE = {"no-audio-stream", "truncated-8745"}
BODY_DAMAGE = ("truncated-faststart", "random-after-header", "nan-audio", "inf-audio")  # headers intact: probe is fine
LOCALIZE = ("localize", "{in}/v.mp4", "--out", "{out}", "-q")
VIDEO_APIS = (
    lambda i, o: probe(i / "v.mp4"),
    lambda i, o: read_clip(i / "v.mp4", fps=4, size=32),
    lambda i, o: list(iter_steps(i / "v.mp4", fps=4, size=32)),
)


def video_cases() -> list[Case]:
    """Broken video files through ``avloc localize`` and the decoding API."""
    files: list[tuple[str, object]] = [("zero-bytes", b""), ("text", b"this is not a video\n" * 20),
                                       ("png-named-mp4", png), ("no-audio-stream", silent_video),
                                       ("audio-only-aac", aac_only), ("audio-only-wav", wav(np.zeros(16000))),
                                       ("nan-audio", lambda: video_with_audio(float("nan"))),
                                       ("inf-audio", lambda: video_with_audio(float("inf"))),
                                       ("zero-length-audio", lambda: video_with_audio(0.0, samples=0)),
                                       ("avi-16000x16000", avi(16000, 16000)), ("avi-9000x32", avi(9000, 32)),
                                       ("avi-100000x100000", avi(100000, 100000)), ("avi-0x0", avi(0, 0))]
    files += [(f"random-bytes-{seed}", noise(seed, 64 + 997 * seed)) for seed in range(20)]
    files += [(f"random-after-header-{seed}", lambda s=seed: tone_faststart()[:1600] + noise(s)) for seed in range(5)]
    # Moov atom last: cut in the media data (no index at all), then in each track's sample tables.
    files += [(f"truncated-{n}", truncated(tone, n)) for n in (8, 32, 200, 1000, 3000, 6000, 7990, 8100, 8400, 8600,
                                                               8650, 8745, 9000, 9300)]
    files += [(f"truncated-faststart-{n}", truncated(tone_faststart, n))
              for n in (8, 40, 300, 700, 1000, 1300, 1600, 2000, 2500, 3000, 4000, 5000, 6000, 7000, 8000, 9000)]
    cases = []
    for index, (name, content) in enumerate(files):
        api = VIDEO_APIS[index % len(VIDEO_APIS)] if name not in DECODABLE else None
        api = VIDEO_APIS[1] if api is VIDEO_APIS[0] and name.startswith(BODY_DAMAGE) else api
        cases.append(_case(f"video/{name}", {"v.mp4": content}, *LOCALIZE, api=api))
    cases.append(_case("video/a-folder", {"v.mp4/x": b""}, *LOCALIZE, api=VIDEO_APIS[0], culprit="v.mp4"))
    cases.append(_case("video/missing", {"other.mp4": tone}, *LOCALIZE, api=VIDEO_APIS[1], culprit="v.mp4"))
    # Broken videos inside a valid dataset: every command that decodes them.
    for index, (command, content) in enumerate([(("eval", "baseline:random", "{in}", "--out", "{out}/e.json", "-q"),
                                                 truncated(tone, 3000)),
                                                (("extract", "{in}", "--out", "{out}/f.h5", "-q"), noise(7)),
                                                (("extract", "{in}", "--out", "{out}/f.h5", "-q"), silent_video),
                                                (("train", "{in}", "--out", "{out}/run", "--epochs", "1", "-q",
                                                  "--size", "32"), noise(8)),
                                                (("eval", "baseline:centre", "{in}", "--out", "{out}/e.json", "-q"),
                                                 b"")]):
        cases.append(_case(f"video/in-dataset-{command[0]}-{index}", {**good_dataset(), "v.mp4": content}, *command,
                           culprit="v.mp4"))
    return cases


def audio_cases() -> list[Case]:
    """Broken audio files (with an image) through ``avloc datasets convert flickr``."""
    ones = np.full(16000, 0.5, np.float32)
    variants = [("nan", wav(np.where(np.arange(16000) % 100 == 0, np.nan, ones))),
                ("inf", wav(np.where(np.arange(16000) == 5, np.inf, ones))),
                ("minus-inf", wav(np.full(16000, -np.inf))), ("zero-length", wav(np.zeros(0))),
                ("random-bytes", noise(11)), ("zero-channels", wav(ones, channels=0)),
                ("zero-rate", wav(ones, rate=0)), ("text", b"not audio"), ("empty", b"")]
    annotation = flickr_xml((10, 10, 100, 100))
    return [_case(f"audio/{name}", {"a.wav": content, "a.png": png, "a.xml": annotation},
                  "datasets", "convert", "flickr", "{in}", "--out", "{out}", "-q") for name, content in variants]


def manifest_cases() -> list[Case]:
    """Broken ``manifest.jsonl`` through every command that reads a dataset, and ``load_manifest``."""
    frame = CLIP["frames"][0]
    lines: list[tuple[str, object]] = [
        ("empty", ""), ("blank-lines", "\n\n  \n"), ("bad-json", "{\"id\": "), ("not-an-object", "[1, 2]"),
        ("a-string", "\"clip\""), ("nan-literal", json.dumps({**CLIP, "frames": [{**frame, "t": "X"}]}).replace(
            "\"X\"", "NaN")),
        ("infinity-literal", json.dumps({**CLIP, "frames": [{**frame, "t": "X"}]}).replace("\"X\"", "Infinity")),
        ("huge-float", json.dumps({**CLIP, "frames": [{**frame, "t": "X"}]}).replace("\"X\"", "1e400")),
        ("huge-int", json.dumps({**CLIP, "frames": [{**frame, "t": "X"}]}).replace("\"X\"", "9" * 400)),
        ("int-5000-digits", json.dumps({**CLIP, "frames": [{**frame, "t": "X"}]}).replace("\"X\"", "7" * 5000)),
        ("huge-int-box", json.dumps({**CLIP, "frames": [{**frame, "boxes": "X"}]}).replace(
            "\"X\"", f"[[0, 0, {'9' * 400}, 5]]")),
        ("x2-before-x1", {**CLIP, "frames": [{**frame, "boxes": [[10, 1, 5, 10]]}]}),
        ("y2-before-y1", {**CLIP, "frames": [{**frame, "boxes": [[1, 10, 10, 5]]}]}),
        ("negative-box", {**CLIP, "frames": [{**frame, "boxes": [[-5, 1, 10, 10]]}]}),
        ("box-of-three", {**CLIP, "frames": [{**frame, "boxes": [[1, 1, 10]]}]}),
        ("box-of-strings", {**CLIP, "frames": [{**frame, "boxes": [["1", "1", "10", "10"]]}]}),
        ("box-of-bools", {**CLIP, "frames": [{**frame, "boxes": [[True, False, True, True]]}]}),
        ("boxes-a-dict", {**CLIP, "frames": [{**frame, "boxes": {"a": 1}}]}),
        ("negative-time", {**CLIP, "frames": [{**frame, "t": -1.0}]}),
        ("time-a-string", {**CLIP, "frames": [{**frame, "t": "0.5"}]}),
        ("frame-not-object", {**CLIP, "frames": [3]}), ("frames-a-string", {**CLIP, "frames": "abc"}),
        ("segment-end-before-start", {**CLIP, "segments": [{"start": 2.0, "end": 1.0, "label": "dog"}]}),
        ("segment-negative", {**CLIP, "segments": [{"start": -1.0, "end": 1.0, "label": "dog"}]}),
        ("segment-no-label", {**CLIP, "segments": [{"start": 0.0, "end": 1.0}]}),
        ("unknown-scenario", {**CLIP, "frames": [{**frame, "scenario": "weird"}]}),
        ("bad-polygon", {**CLIP, "frames": [{**frame, "masks": [[[1, 2, 3]]]}]}),
        ("masks-count", {**CLIP, "frames": [{**frame, "masks": [[], []]}]}),
        ("missing-id", {k: v for k, v in CLIP.items() if k != "id"}), ("id-a-number", {**CLIP, "id": 7}),
        ("empty-label", {**CLIP, "label": ""}), ("unknown-split", {**CLIP, "split": "dev"}),
        ("tags-not-strings", {**CLIP, "tags": [1]}), ("video-a-list", {**CLIP, "video": ["v.mp4"]}),
        ("escape-dotdot", {**CLIP, "video": "../v.mp4"}), ("escape-deep", {**CLIP, "video": "a/../../etc/passwd"}),
        ("absolute-path", {**CLIP, "video": "/etc/passwd"}), ("the-folder-itself", {**CLIP, "video": "."}),
        ("video-missing", {**CLIP, "video": "nope.mp4"}), ("video-nul-byte", {**CLIP, "video": "v\u0000.mp4"}),
        ("video-lone-surrogate", {**CLIP, "video": "\ud800.mp4"}),
        ("duplicate-ids", manifest(CLIP, CLIP).rstrip("\n")),
        ("utf8-bom", "\ufeff" + json.dumps(CLIP)), ("deep-nesting", "[" * 100_000 + "]" * 100_000),
        ("binary-garbage", noise(3).decode("latin-1")), ("nul-bytes", "\u0000" * 64),
    ]
    commands = [("datasets", "check", "{in}"),
                ("train", "{in}", "--out", "{out}/run", "--epochs", "1", "-q"),
                ("eval", "baseline:random", "{in}", "--out", "{out}/e.json", "-q"),
                ("extract", "{in}", "--out", "{out}/f.h5", "-q")]
    cases = []
    for index, (name, line) in enumerate(lines):
        content = line if isinstance(line, str) else json.dumps(line)
        raw = noise(3) if name == "binary-garbage" else content.encode("utf-8", "surrogatepass") + b"\n"
        cases.append(_case(f"manifest/{name}", {"manifest.jsonl": raw, "v.mp4": tone},
                           *commands[index % len(commands)], api=lambda i, o: load_manifest(i)))
    cases.append(_case("manifest/is-a-folder", {"manifest.jsonl/x": b"", "v.mp4": tone}, *commands[0],
                       api=lambda i, o: load_manifest(i), culprit="."))  # check: "layout not recognised"
    cases.append(_case("manifest/no-manifest", {"v.mp4": tone}, *commands[2], api=lambda i, o: load_manifest(i),
                       culprit="manifest.jsonl"))
    return cases


def annotation_cases() -> list[Case]:
    """Broken annotation files of every layout: their reader (API) and ``avloc datasets convert/check``."""
    cases = []

    def add(layout: str, name: str, file: str, content, reader, extra: dict, *flags: str, source: str = "{in}"):
        files = {file: content, **extra}
        argv = ("datasets", "convert", layout, source, "--out", "{out}", "-q", *flags)
        cases.append(_case(f"{layout}/{name}", files, *argv, api=reader and (lambda i, o: reader(i / file))))

    for name, text in [("empty", ""), ("wrong-fields", "Dog&abc&good&0\n"), ("start-after-end", "Dog&abc&good&5&3\n"),
                       ("beyond-10-s", "Dog&abc&good&0&11\n"), ("negative", "Dog&abc&good&-1&3\n"),
                       ("superscript-digit", "Dog&abc&good&\u00b2&3\n"), ("huge", f"Dog&abc&good&0&{'9' * 400}\n"),
                       ("no-category", "&abc&good&0&3\n"), ("binary", noise(5))]:
        add("ave", name, "Annotations.txt", text, ave.read_annotations, AVE_SPLIT)
    for name, text in [("not-xml", "<annotations><meta>"), ("no-task", "<annotations/>"),
                       ("size-nan", cvat_xml(size="nan")), ("size-inf", cvat_xml(size="inf")),
                       ("size-huge", cvat_xml(size="1e12")), ("size-zero", cvat_xml(size="0")),
                       ("width-text", cvat_xml(width="wide")),
                       ("x2-before-x1", cvat_xml(boxes='<box frame="0" xtl="9" ytl="1" xbr="2" ybr="9"/>')),
                       ("coordinate-nan", cvat_xml(boxes='<box frame="0" xtl="nan" ytl="1" xbr="9" ybr="9"/>')),
                       ("coordinate-inf", cvat_xml(boxes='<box frame="0" xtl="1" ytl="1" xbr="inf" ybr="9"/>')),
                       ("frame-outside", cvat_xml(boxes='<box frame="7" xtl="1" ytl="1" xbr="9" ybr="9"/>')),
                       ("frame-text", cvat_xml(boxes='<box frame="one" xtl="1" ytl="1" xbr="9" ybr="9"/>')),
                       ("entity-bomb", entity_bomb()),
                       ("binary", noise(6))]:
        add("ave", f"cvat-{name}", "boxes/abc/annotations.xml", text, cvat.read_cvat,
            {"Annotations.txt": "Dog&abc&good&0&3\n", **AVE_SPLIT, "abc.mp4": tone}, "--boxes", "{in}/boxes")
    for name, text in [("not-json", "[{"), ("not-a-list", "{}"), ("missing-keys", '[{"file": "a"}]'),
                       ("bbox-outside", '[{"file": "a", "class": "dog", "bbox": [[0, 0, 2, 0.5]]}]'),
                       ("bbox-nan", '[{"file": "a", "class": "dog", "bbox": [[0, 0, NaN, 0.5]]}]'),
                       ("x2-before-x1", '[{"file": "a", "class": "dog", "bbox": [[0.5, 0, 0.2, 0.5]]}]'),
                       ("bbox-shape", '[{"file": "a", "class": "dog", "bbox": [[0, 0, 0.5]]}]'),
                       ("bbox-strings", '[{"file": "a", "class": "dog", "bbox": [["a", "b", "c", "d"]]}]'),
                       ("bbox-nested", '[{"file": "a", "class": "dog", "bbox": [[[0, 0], [1, 1]], [1]]}]'),
                       ("entry-not-object", "[1]"), ("binary", noise(9))]:
        add("vggss", name, "vggss.json", text, vggss.read_vggss, {"a.mp4": tone}, source="{in}/vggss.json")
    for name, text in [("not-xml", "<annotation><bbox>"), ("no-bbox", "<annotation/>"),
                       ("x2-before-x1", flickr_xml((100, 10, 10, 100))), ("nan", flickr_xml(("nan", 10, 100, 100))),
                       ("inf", flickr_xml((0, 0, "inf", 100))), ("outside", flickr_xml((0, 0, 300, 100))),
                       ("three-numbers", "<annotation><bbox><a>1</a><b>2</b><c>3</c></bbox></annotation>"),
                       ("binary", noise(10))]:
        add("flickr", name, "a.xml", text, flickr.read_flickr_xml, {"a.mp4": tone})
    for name, text in [("not-json", "{"), ("a-list", "[]"), ("width-missing", json.dumps({"annotations": []})),
                       ("width-infinity", avatar_json(original_width="X").replace('"X"', "Infinity")),
                       ("width-nan", avatar_json(original_width="X").replace('"X"', "NaN")),
                       ("width-zero", avatar_json(original_width=0)),
                       ("width-huge", avatar_json(original_width=10**12)),
                       ("bbox-nan", avatar_object(bbox=[1, 1, "X", 8]).replace('"X"', "NaN")),
                       ("bbox-infinity", avatar_object(bbox=[1, 1, "X", 8]).replace('"X"', "Infinity")),
                       ("bbox-negative-size", avatar_object(bbox=[1, 1, -8, 8])),
                       ("bbox-three", avatar_object(bbox=[1, 1, 8])), ("bbox-a-number", avatar_object(bbox=3)),
                       ("polygon-two-points", avatar_object(segmentation=[[1, 1, 5, 5]])),
                       ("polygon-odd", avatar_object(segmentation=[[1, 1, 5, 5, 3]])),
                       ("polygon-nan", avatar_object(segmentation=[[1, 1, 5, 5, 3, "X"]]).replace('"X"', "NaN")),
                       ("annotations-a-dict", avatar_json(annotations={"a": 1})),
                       ("unknown-task", avatar_object(task="juggling")), ("binary", noise(12))]:
        reader = avatar.read_avatar_frame if name != "unknown-task" else None  # refused by convert, not the reader
        add("avatar", name, "abc/12.json", text, reader, {"abc.mp4": tone})
    for name, text in [("no-header", "abc,0,10,x,violin,0\n"), ("few-columns", INSTRUMENT_HEADER + "abc,0,10\n"),
                       ("start-nan", INSTRUMENT_HEADER + "abc,nan,10,x,violin,0\n"),
                       ("end-inf", INSTRUMENT_HEADER + "abc,0,inf,x,violin,0\n"),
                       ("start-after-end", INSTRUMENT_HEADER + "abc,9,3,x,violin,0\n"),
                       ("multi-2", INSTRUMENT_HEADER + "abc,0,10,x,violin,2\n"),
                       ("empty-target", INSTRUMENT_HEADER + "abc,0,10,x,,0\n"), ("binary", noise(13))]:
        add("audioset-instrument", name, "test.csv", text, audioset_instrument.read_instrument_csv, {"abc.mp4": tone})
    return cases


def checkpoint_cases() -> list[Case]:
    """Hostile checkpoints through ``localize``, ``demo``, ``eval`` and ``load_checkpoint`` / ``load_trained``."""
    variants: list[tuple[str, object]] = [
        ("pickled-code", lambda: _saved({"format": "avloc-checkpoint", "config": _Pwn()})),
        ("pickled-code-top", lambda: _saved(_Pwn())),
        ("pickled-code-legacy", lambda: _saved({"format": "avloc-checkpoint", "x": _Pwn()}, legacy=True)),
        ("pickled-code-plain-pickle", pickle.dumps(_Pwn())),
        ("pickled-code-hand-zip", _evil_zip),
        ("pickled-code-in-weights", checkpoint(_setter("model", "evil", _Pwn()))),
        ("random-bytes", noise(21)), ("empty", b""), ("text", b"weights\n"),
        ("bare-tensor", lambda: _saved(torch.zeros(3))), ("a-list", lambda: _saved([1, 2])),
        ("foreign-dict", lambda: _saved({"state_dict": {}})),
        ("no-config", checkpoint(_setter("config", None))), ("no-classes", checkpoint(_setter("classes", None))),
        ("no-model", checkpoint(_setter("model", None))),
        ("config-a-list", checkpoint(_setter("config", [1, 2]))),
        ("config-no-dataset", checkpoint(_setter("config", "dataset", None))),
        ("unknown-model", checkpoint(_setter("config", "model", "nope"))),
        ("unknown-encoder", checkpoint(_setter("config", "visual", "nope"))),
        ("encoder-a-number", checkpoint(_setter("config", "visual", 7))),
        ("fps-zero", checkpoint(_setter("config", "fps", 0.0))),
        ("fps-nan", checkpoint(_setter("config", "fps", float("nan")))),
        ("size-huge", checkpoint(_setter("config", "size", 10**6))),
        ("size-negative", checkpoint(_setter("config", "size", -4))),
        ("size-a-string", checkpoint(_setter("config", "size", "big"))),
        ("options-unknown", checkpoint(_setter("config", "model_options", {"variant": "none", "bogus": 1}))),
        ("options-a-list", checkpoint(_setter("config", "model_options", [1]))),
        ("options-bad-variant", checkpoint(_setter("config", "model_options", {"variant": "zzz"}))),
        ("options-negative-channels", checkpoint(_setter("config", "model_options",
                                                          {"variant": "none", "channels": -8}))),
        ("options-nan-temperature", checkpoint(_setter("config", "model_options",
                                                        {"variant": "none", "spatial_temperature": float("nan")}))),
        ("classes-a-number", checkpoint(_setter("classes", 5))), ("classes-empty", checkpoint(_setter("classes", []))),
        ("classes-too-few", checkpoint(_setter("classes", ["a", "background"]))),
        ("model-a-number", checkpoint(_setter("model", 5))), ("wrong-shapes", checkpoint(_wrong_shape)),
        ("missing-weights", checkpoint(lambda s: s["model"].pop(next(iter(s["model"]))))),
        ("nan-weights", checkpoint(_nan_weights)),
        ("features-meta-not-json", checkpoint(_setter("features_meta", "{"))),
        ("features-meta-wrong-keys", checkpoint(_setter("features_meta", '{"a": 1}'))),
    ]
    variants += [(f"truncated-{n}", (lambda n=n: checkpoint(lambda s: None)()[:n])) for n in (10, 100, 1000, 100_000)]
    commands = [("localize", "{in}/v.mp4", "--model", "{in}/c.pt", "--out", "{out}", "-q"),
                ("demo", "--model", "{in}/c.pt", "--out", "{out}", "--seed", "1", "-q"),
                ("eval", "{in}/c.pt", "{in}", "-q")]
    cases = []
    for index, (name, content) in enumerate(variants):
        # The file itself is broken: load_checkpoint refuses it; its content is: load_trained does.
        file_level = name.startswith(("pickled", "random", "empty", "text", "bare", "a-list", "foreign", "truncated"))
        api = (lambda i, o: load_checkpoint(i / "c.pt")) if file_level else (lambda i, o: load_trained(i / "c.pt"))
        files = {"c.pt": content, **dataset(KNOWN_CLIP)}
        cases.append(_case(f"checkpoint/{name}", files, *commands[index % len(commands)], api=api))
    return cases


def feature_cases() -> list[Case]:
    """Hostile feature caches (HDF5) through ``avloc eval default DATASET --features``."""
    visual, audio = (lambda: _shapes()[0]), (lambda: _shapes()[1])
    variants = [
        ("random-bytes", noise(31)), ("text", b"features"), ("empty", b""),
        ("not-avloc", feature_cache(lambda h5: h5.attrs.__setitem__("format", "other"))),
        ("no-meta", feature_cache(lambda h5: h5.attrs.__delitem__("meta"))),
        ("meta-not-json", feature_cache(meta="{")), ("meta-wrong-keys", feature_cache(meta='{"a": 1}')),
        ("other-settings", feature_cache(meta=json.dumps({**json.loads(_default_meta()), "fps": 8.0}))),
        ("no-clips-group", feature_cache(lambda h5: h5.__delitem__("clips"))),
        ("clip-missing", feature_cache(lambda h5: h5.move("clips/a", "clips/b"))),
        ("no-visual", feature_cache(lambda h5: h5["clips/a"].__delitem__("visual"))),
        ("visual-wrong-channels", feature_cache(_replace("visual", np.zeros((4, 7, 8, 8), np.float32)))),
        ("visual-1d", feature_cache(_replace("visual", np.zeros(4, np.float32)))),
        ("visual-strings", feature_cache(_replace("visual", np.array([b"a", b"b"])))),
        ("visual-nan", feature_cache(lambda h5: h5["clips/a/visual"].__setitem__(Ellipsis, np.nan))),
        ("audio-inf", feature_cache(lambda h5: h5["clips/a/audio"].__setitem__(Ellipsis, np.inf))),
        ("times-short", feature_cache(_replace("times", np.zeros(2)))),
        ("zero-steps", feature_cache(lambda h5: [_replace(k, np.zeros((0, *s()), np.float32))(h5)
                                                for k, s in (("visual", visual), ("audio", audio))]
                                     + [_replace("times", np.zeros(0))(h5)])),
    ]
    argv = ("eval", "default", "{in}", "--features", "{in}/f.h5", "--out", "{out}/e.json", "-q")
    cases = [_case(f"features/{name}", {"f.h5": content, **dataset(KNOWN_CLIP)}, *argv) for name, content in variants]
    cases.append(_case("features/ave-folder-random-bytes", {"feat/visual_feature.h5": noise(32), **dataset(KNOWN_CLIP)},
                       *argv[:4], "{in}/feat", *argv[5:], culprit="feat"))
    cases.append(_case("features/dataset-class-unknown-to-the-model", {"f.h5": feature_cache(), **dataset(CLIP)},
                       *argv, culprit="manifest.jsonl"))
    return cases


def _default_meta() -> str:
    return load_trained("default").features_meta


def flag_cases() -> list[Case]:
    """Absurd numbers (and a few that do not parse) for every command's numeric flags."""
    video = {"v.mp4": tone}
    localize = [("fps-zero", ["--fps", "0"]), ("fps-negative", ["--fps", "-4"]), ("fps-nan", ["--fps", "nan"]),
                ("fps-inf", ["--fps", "inf"]), ("fps-tiny", ["--fps", "1e-9"]), ("fps-huge", ["--fps", "1e9"]),
                ("start-negative", ["--start", "-1"]), ("start-nan", ["--start", "nan"]),
                ("start-beyond", ["--start", "100"]), ("end-inf", ["--end", "inf"]), ("end-zero", ["--end", "0"]),
                ("end-before-start", ["--start", "0.5", "--end", "0.25"]), ("end-huge", ["--end", "1e308"]),
                ("sheet-frames-zero", ["--sheet-frames", "0"]), ("sheet-frames-negative", ["--sheet-frames", "-3"])]
    cases = [_case(f"flags/localize-{name}", video, *LOCALIZE, *argv, culprit=None if "sheet" in name else "v.mp4")
             for name, argv in localize]
    cases += [_case("flags/localize-fps-text", video, *LOCALIZE, "--fps", "fast", culprit=None, usage=True),
              _case("flags/localize-boxes-unknown", video, *LOCALIZE, "--boxes", "all", culprit=None, usage=True)]
    evaluate = ("eval", "baseline:random", "{in}", "--out", "{out}/e.json", "-q")
    for name, argv in [("size-zero", ["--size", "0"]), ("size-negative", ["--size", "-8"]),
                       ("size-huge", ["--size", "100000"]), ("top-percent-nan", ["--top-percent", "nan"]),
                       ("top-percent-zero", ["--top-percent", "0"]), ("top-percent-200", ["--top-percent", "200"])]:
        cases.append(_case(f"flags/eval-{name}", good_dataset(), *evaluate, *argv, culprit=None))
    cases.append(_case("flags/eval-unknown-baseline", good_dataset(), "eval", "baseline:zero", "{in}", "-q",
                       culprit=None))
    cases.append(_case("flags/eval-cross-modal-without-features", good_dataset(), "eval", "default", "{in}",
                       "--task", "cross-modal", "-q", culprit=None))
    extract = ("extract", "{in}", "--out", "{out}/f.h5", "-q")
    for name, argv in [("fps-zero", ["--fps", "0"]), ("fps-nan", ["--fps", "nan"]), ("size-zero", ["--size", "0"]),
                       ("size-huge", ["--size", "100000"]), ("batch-size-zero", ["--batch-size", "0"]),
                       ("shard-beyond", ["--shard", "3/2"]), ("shard-text", ["--shard", "a/b"]),
                       ("audio-window-negative", ["--audio-window", "-1"]),
                       ("audio-window-nan", ["--audio-window", "nan"]),
                       ("frames-per-second-zero", ["--format", "ave", "--frames-per-second", "0"])]:
        cases.append(_case(f"flags/extract-{name}", good_dataset(), *extract, *argv, culprit=None))
    train = ("train", "{in}", "--out", "{out}/run", "--epochs", "1", "--size", "32", "-q")
    for name, argv in [("epochs-zero", ["--epochs", "0"]), ("lr-nan", ["--lr", "nan"]), ("lr-negative", ["--lr", "-1"]),
                       ("lr-inf", ["--lr", "inf"]), ("batch-size-zero", ["--batch-size", "0"]),
                       ("steps-zero", ["--steps", "0"]), ("memory-size-negative", ["--memory-size", "-1"]),
                       ("audio-dropout-two", ["--audio-dropout", "2"]), ("fps-zero", ["--fps", "0"]),
                       ("size-zero", ["--size", "0"]), ("size-huge", ["--size", "100000"]),
                       ("workers-negative", ["--workers", "-1"]), ("option-no-value", ["--option", "fusion"]),
                       ("option-unknown", ["--option", "bogus=1"]), ("option-bad-variant", ["--option", "variant=zzz"]),
                       ("model-unknown", ["--model", "nope"]), ("weights-bad", ["--weights", "visual"])]:
        cases.append(_case(f"flags/train-{name}", good_dataset(), *train, *argv, culprit=None))
    synth = ("synth", "{out}/synth", "--seed", "0", "-q")
    for name, argv in [("clips-negative", ["--clips", "-1"]), ("size-huge", ["--clips", "1", "--size", "100000"]),
                       ("seconds-nan", ["--clips", "1", "--seconds", "nan"]),
                       ("seconds-inf", ["--clips", "1", "--seconds", "inf"]),
                       ("seconds-huge", ["--clips", "1", "--seconds", "1e9"]),
                       ("workers-negative", ["--clips", "1", "--workers", "-1"])]:
        cases.append(_case(f"flags/synth-{name}", {}, *synth, *argv, culprit=None))
    for name, argv in [("seed-negative", ["--seed", "-1"]), ("out-is-a-file", ["--seed", "1"])]:
        files = {"file": b"x"} if name == "out-is-a-file" else {}
        out = "{in}/file" if name == "out-is-a-file" else "{out}"
        cases.append(_case(f"flags/demo-{name}", files, "demo", "--out", out, "-q", *argv, culprit=None))
    convert = ("datasets", "convert", "flickr", "{in}", "--out", "{out}", "-q")
    flickr_files = {"a.xml": flickr_xml((10, 10, 100, 100)), "a.mp4": tone}
    for name, value in [("nan", "nan"), ("negative", "-1"), ("inf", "inf"), ("beyond", "100")]:
        cases.append(_case(f"flags/convert-frame-time-{name}", flickr_files, *convert, "--frame-time", value,
                           culprit=None))
    return cases


def output_cases() -> list[Case]:
    """Output paths that cannot be written: a file where a folder must go, a folder where a file must."""
    files = good_dataset(**{"videos/x": b""})
    return [
        _case("output/localize-out-is-a-file", files, "localize", "{in}/v.mp4", "--out", "{in}/v.mp4", "-q",
              culprit="v.mp4"),
        _case("output/eval-out-is-a-folder", files, "eval", "baseline:random", "{in}", "--out", "{in}/videos", "-q",
              culprit="videos"),
        _case("output/extract-out-below-a-file", files, "extract", "{in}", "--out", "{in}/v.mp4/f.h5", "-q",
              culprit="v.mp4"),
        _case("output/convert-out-is-a-file", {"a.xml": flickr_xml((10, 10, 100, 100)), "a.mp4": tone},
              "datasets", "convert", "flickr", "{in}", "--out", "{in}/a.mp4", "-q", culprit="a.mp4"),
        _case("output/synth-out-is-a-file", files, "synth", "{in}/v.mp4", "--clips", "1", "--seed", "0", "-q",
              culprit="v.mp4"),
        _case("output/train-out-is-a-file", files, "train", "{in}", "--out", "{in}/v.mp4", "--epochs", "1", "--size",
              "32", "-q", culprit="v.mp4"),
    ]


# Cases that fail in files other helpers are editing now: marked xfail (strict) until they fix them.
OWNERS = {
    "video/in-dataset-extract-2": "src/avloc/extract.py",  # extract encodes a video without audio as silence
    "output/extract-out-below-a-file": "src/avloc/extract.py",  # Path(out).parent.mkdir(): FileExistsError
    "ave/superscript-digit": "src/avloc/data/ave.py",  # "\u00b2".isdigit() is True, int() refuses it
    "flags/train-lr-inf": "src/avloc/train.py",  # TrainConfig accepts lr=inf
    "flags/train-workers-negative": "src/avloc/train.py",  # DataLoader's ValueError
    "features/dataset-class-unknown-to-the-model": "src/avloc/evaluate.py",  # classes.index(label) in evaluate()
    **{f"features/{name}": "src/avloc/data/cache.py"  # FeatureCache does not check the file's layout and arrays
       for name in ("no-meta", "meta-not-json", "meta-wrong-keys", "no-clips-group", "no-visual",
                    "visual-wrong-channels", "visual-1d", "visual-strings", "visual-nan", "audio-inf", "times-short",
                    "zero-steps")},
}


def hostile_cases() -> list[Case]:
    """Every case, in a fixed order (deterministic: fixed seeds, no clock)."""
    cases = (video_cases() + audio_cases() + manifest_cases() + annotation_cases() + checkpoint_cases()
             + feature_cases() + flag_cases() + output_cases())
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    assert OWNERS.keys() <= set(names), "every owned case must exist"
    return [replace(case, owner=OWNERS.get(case.name, "")) for case in cases]


# ---------------------------------------------------------------------------------------
# Running a case


class CaseTimeout(BaseException):
    """Raised by the alarm: a BaseException, so that no ``except Exception`` in the code swallows it."""


@contextlib.contextmanager
def deadline(seconds: int):
    def expire(signum, frame):
        raise CaseTimeout(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    """What a case did: the CLI's exit code and stderr, the API's exception, and what was wrong."""

    case: Case
    exit_code: int | None = None
    stderr: str = ""
    api_error: str = ""
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        return (f"{self.case.name}: exit {self.exit_code}, stderr {self.stderr!r}, API {self.api_error!r}\n  "
                + "\n  ".join(self.problems))


def _content(value) -> bytes:
    value = value() if callable(value) else value
    return value.encode() if isinstance(value, str) else value


def _write_inputs(case: Case, folder: Path) -> None:
    for relative, value in case.files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(value))


def _snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``folder`` except ``skip``'s tree: relative path -> (size, mtime)."""
    found = {}
    for parent, folders, files in os.walk(folder):
        parent = Path(parent)
        folders[:] = [name for name in folders if parent / name != skip]
        for name in folders + files:
            stat = (parent / name).lstat()
            found[str((parent / name).relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return found


def _leftovers(out: Path) -> list[str]:
    """Final outputs and temporary files that a failing run left in ``out``."""
    bad = []
    for path in out.rglob("*") if out.is_dir() else []:
        temporary = path.name.startswith(".") and ".tmp" in path.name
        if path.is_file() and (temporary or path.name in FINAL_NAMES or path.suffix in FINAL_SUFFIXES):
            bad.append(str(path.relative_to(out)))
    return bad


def _names(text: str, path: Path | None) -> bool:
    return path is None or str(path) in text or str(path.resolve()) in text


def _check_cli(case: Case, argv: list[str], culprit: Path | None, outcome: Outcome) -> None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            outcome.exit_code = main(argv)
    except SystemExit as exit_:
        outcome.exit_code = exit_.code if isinstance(exit_.code, int) else 1
    except CaseTimeout as error:
        outcome.problems.append(f"CLI hang: {error}")
    except Exception as error:  # noqa: BLE001 - the real CLI would print a traceback
        outcome.problems.append(f"CLI traceback: {type(error).__name__}: {str(error)[:300]}")
    outcome.stderr = err.getvalue()
    lines = outcome.stderr.strip().splitlines()
    if outcome.exit_code == 0:
        outcome.problems.append("CLI exit code 0: the hostile input was accepted")
    if case.usage:
        if outcome.exit_code != 2 or not lines or "error:" not in lines[-1]:
            outcome.problems.append("expected an argparse usage error (exit 2)")
    elif outcome.exit_code not in (0, None):
        if len(lines) != 1 or not lines[0].startswith("avloc: error: "):
            outcome.problems.append("stderr is not one line 'avloc: error: ...'")
        elif not _names(outcome.stderr, culprit):
            outcome.problems.append(f"the message does not name {culprit}")


def _check_api(case: Case, folders: tuple[Path, Path], culprit: Path | None, outcome: Outcome) -> None:
    try:
        case.api(*folders)
    except AvlocError as error:
        outcome.api_error = f"{type(error).__name__}: {error}"
        if "\n" in str(error):
            outcome.problems.append("API message is not one line")
        if not _names(str(error), culprit):
            outcome.problems.append(f"API message does not name {culprit}")
    except CaseTimeout as error:
        outcome.problems.append(f"API hang: {error}")
    except Exception as error:  # noqa: BLE001 - anything but AvlocError is the finding
        outcome.api_error = f"{type(error).__name__}: {error}"
        outcome.problems.append(f"API raised {type(error).__name__}: {str(error)[:300]}")
    else:
        outcome.problems.append("API call returned: the hostile input was accepted")


def run_case(case: Case, work: Path) -> Outcome:
    """Run ``case`` in the empty folder ``work`` (cwd and temporary directory inside it)."""
    inp, out, scratch = work / "in", work / "out", work / "tmp"
    for folder in (inp, scratch):
        folder.mkdir(parents=True)
    _write_inputs(case, inp)
    culprit = case.culprit_path(inp)
    argv = [arg.replace("{in}", str(inp)).replace("{out}", str(out)) for arg in case.argv]
    outcome = Outcome(case)
    before = _snapshot(work, skip=out)
    cwd, tempdir = os.getcwd(), tempfile.tempdir
    started = time.perf_counter()
    os.chdir(work)
    tempfile.tempdir = str(scratch)
    try:
        with warnings.catch_warnings(), deadline(DEADLINE):
            warnings.simplefilter("ignore")
            if argv:
                _check_cli(case, argv, culprit, outcome)
            if case.api is not None:
                _check_api(case, (inp, out), culprit, outcome)
    finally:
        os.chdir(cwd)
        tempfile.tempdir = tempdir
    outcome.seconds = time.perf_counter() - started
    after = _snapshot(work, skip=out)
    changed = sorted(name for name in before.keys() | after.keys()
                     if before.get(name) != after.get(name) and name != "tmp")
    if changed:
        outcome.problems.append(f"written outside the output folder: {', '.join(changed[:5])}")
    if (work / MARKER).exists():
        outcome.problems.append("the checkpoint's pickled code ran")
    if any(scratch.iterdir()):
        outcome.problems.append(f"temporary files left: {sorted(p.name for p in scratch.iterdir())[:5]}")
    leftovers = _leftovers(out)
    if leftovers:
        outcome.problems.append(f"a failing run left outputs: {', '.join(leftovers[:5])}")
    return outcome


# ---------------------------------------------------------------------------------------
# Tests

CASES = hostile_cases()


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=f"owned by another helper: {case.owner}")] if case.owner else []
    return pytest.param(case, id=case.name, marks=marks)


def test_at_least_200_cases_over_every_kind():
    kinds = {case.kind for case in CASES}
    assert len(CASES) >= 200
    assert {"video", "audio", "manifest", "checkpoint", "features", "flags", "ave", "vggss", "flickr", "avatar",
            "audioset-instrument"} <= kinds


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_hostile_input_gives_one_line_error(case, tmp_path):
    outcome = run_case(case, tmp_path)
    assert not outcome.problems, outcome.describe()


SUBPROCESS_SAMPLE = ("video/random-bytes-3", "video/truncated-faststart-2000", "manifest/binary-garbage",
                     "checkpoint/pickled-code", "features/random-bytes", "flags/localize-fps-zero",
                     "vggss/bbox-nan", "avatar/width-infinity")


@pytest.mark.parametrize("name", SUBPROCESS_SAMPLE)
def test_real_process_exits_non_zero_without_a_traceback(name, tmp_path):
    case = next(case for case in CASES if case.name == name)
    inp, out = tmp_path / "in", tmp_path / "out"
    _write_inputs(case, inp)
    argv = [arg.replace("{in}", str(inp)).replace("{out}", str(out)) for arg in case.argv]
    script = Path(sys.executable).with_name("avloc")
    command = [str(script)] if name.startswith("checkpoint") and script.is_file() else [sys.executable, "-m", "avloc"]
    result = subprocess.run(command + argv, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("avloc: error: "), result.stderr
    assert not (tmp_path / MARKER).exists()
