"""The hostile cases of the fuzz test: broken files and absurd flags for every command and reader.

:func:`hostile_cases` lists them all, deterministically (fixed seeds, no clock); each names the
files it writes into a fresh input folder, the CLI arguments and/or the public API call to run.
tests/test_fuzz.py runs them; bench/fuzz_report.py counts them.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from hostile_files import (
    PickledCode,
    aac_only,
    avi,
    checkpoint,
    default_meta,
    emptied,
    evil_zip,
    feature_cache,
    h5_file,
    nan_weights,
    noise,
    png,
    replaced,
    saved,
    setter,
    silent_video,
    tone,
    tone_faststart,
    truncated,
    video_with_audio,
    wav,
    wrong_shape,
)

from avloc.checkpoint import load_checkpoint
from avloc.data.formats import audioset_instrument, avatar, ave, cvat, flickr, vggss
from avloc.data.manifest import load_manifest
from avloc.trained import load_trained
from avloc.io.decode import iter_steps, probe, read_clip


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
# Manifests and annotation files

CLIP = {"id": "a", "video": "v.mp4", "split": "test", "label": "dog",
        "frames": [{"t": 0.125, "boxes": [[1, 1, 10, 10]], "scenario": "single"}]}
KNOWN_CLIP = {**CLIP, "label": "circle"}  # a class of the default model, for the cases that evaluate it
DATASET_COMMANDS = {  # every command that reads a dataset folder
    "check": ("datasets", "check", "{in}"),
    "train": ("train", "{in}", "--out", "{out}/run", "--epochs", "1", "--size", "32", "-q"),
    "eval": ("eval", "baseline:random", "{in}", "--out", "{out}/e.json", "-q"),
    "extract": ("extract", "{in}", "--out", "{out}/f.h5", "-q"),
}


def frame_literal(key: str, literal: str) -> str:
    """CLIP's manifest line with its frame's ``key`` set to the raw JSON ``literal`` (NaN, 1e400, ...)."""
    return json.dumps({**CLIP, "frames": [{**CLIP["frames"][0], key: "X"}]}).replace('"X"', literal)


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
    for index, (command, content) in enumerate([("eval", truncated(tone, 3000)), ("extract", noise(7)),
                                                ("extract", silent_video), ("train", noise(8)), ("eval", b"")]):
        cases.append(_case(f"video/in-dataset-{command}-{index}", {**good_dataset(), "v.mp4": content},
                           *DATASET_COMMANDS[command], culprit="v.mp4"))
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
        ("a-string", "\"clip\""), ("nan-literal", frame_literal("t", "NaN")),
        ("infinity-literal", frame_literal("t", "Infinity")), ("huge-float", frame_literal("t", "1e400")),
        ("huge-int", frame_literal("t", "9" * 400)), ("int-5000-digits", frame_literal("t", "7" * 5000)),
        ("huge-int-box", frame_literal("boxes", f"[[0, 0, {'9' * 400}, 5]]")),
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
    commands = list(DATASET_COMMANDS.values())
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
    # Degenerate VGG-SS boxes (outside [0, 1], x2 < x1) are kept as the evaluators read them (tests/test_vggss.py);
    # a file whose every entry is unreadable is refused.
    for name, text in [("not-json", "[{"), ("not-a-list", "{}"), ("missing-keys", '[{"file": "a"}]'),
                       ("bbox-nan", '[{"file": "a", "class": "dog", "bbox": [[0, 0, NaN, 0.5]]}]'),
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
        ("pickled-code", lambda: saved({"format": "avloc-checkpoint", "config": PickledCode()})),
        ("pickled-code-top", lambda: saved(PickledCode())),
        ("pickled-code-legacy", lambda: saved({"format": "avloc-checkpoint", "x": PickledCode()}, legacy=True)),
        ("pickled-code-plain-pickle", pickle.dumps(PickledCode())),
        ("pickled-code-hand-zip", evil_zip),
        ("pickled-code-in-weights", checkpoint(setter("model", "evil", PickledCode()))),
        ("random-bytes", noise(21)), ("empty", b""), ("text", b"weights\n"),
        ("bare-tensor", lambda: saved(torch.zeros(3))), ("a-list", lambda: saved([1, 2])),
        ("foreign-dict", lambda: saved({"state_dict": {}})),
        ("no-config", checkpoint(setter("config", None))), ("no-classes", checkpoint(setter("classes", None))),
        ("no-model", checkpoint(setter("model", None))),
        ("config-a-list", checkpoint(setter("config", [1, 2]))),
        ("config-no-dataset", checkpoint(setter("config", "dataset", None))),
        ("unknown-model", checkpoint(setter("config", "model", "nope"))),
        ("unknown-encoder", checkpoint(setter("config", "visual", "nope"))),
        ("encoder-a-number", checkpoint(setter("config", "visual", 7))),
        ("fps-zero", checkpoint(setter("config", "fps", 0.0))),
        ("fps-nan", checkpoint(setter("config", "fps", float("nan")))),
        ("size-huge", checkpoint(setter("config", "size", 10**6))),
        ("size-negative", checkpoint(setter("config", "size", -4))),
        ("size-a-string", checkpoint(setter("config", "size", "big"))),
        ("options-unknown", checkpoint(setter("config", "model_options", {"variant": "none", "bogus": 1}))),
        ("options-a-list", checkpoint(setter("config", "model_options", [1]))),
        ("options-bad-variant", checkpoint(setter("config", "model_options", {"variant": "zzz"}))),
        ("options-negative-channels", checkpoint(setter("config", "model_options",
                                                          {"variant": "none", "channels": -8}))),
        ("options-nan-temperature", checkpoint(setter("config", "model_options",
                                                        {"variant": "none", "spatial_temperature": float("nan")}))),
        ("classes-a-number", checkpoint(setter("classes", 5))), ("classes-empty", checkpoint(setter("classes", []))),
        ("classes-too-few", checkpoint(setter("classes", ["a", "background"]))),
        ("model-a-number", checkpoint(setter("model", 5))), ("wrong-shapes", checkpoint(wrong_shape)),
        ("missing-weights", checkpoint(lambda s: s["model"].pop(next(iter(s["model"]))))),
        ("nan-weights", checkpoint(nan_weights)),
        ("features-meta-not-json", checkpoint(setter("features_meta", "{"))),
        ("features-meta-wrong-keys", checkpoint(setter("features_meta", '{"a": 1}'))),
    ]
    variants += [(f"truncated-{n}", truncated(checkpoint(), n)) for n in (10, 100, 1000, 100_000)]
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
    variants = [
        ("random-bytes", noise(31)), ("text", b"features"), ("empty", b""),
        ("not-avloc", feature_cache(lambda h5: h5.attrs.__setitem__("format", "other"))),
        ("no-meta", feature_cache(lambda h5: h5.attrs.__delitem__("meta"))),
        ("meta-not-json", feature_cache(meta="{")), ("meta-wrong-keys", feature_cache(meta='{"a": 1}')),
        ("other-settings", feature_cache(meta=json.dumps({**json.loads(default_meta()), "fps": 8.0}))),
        ("no-clips-group", feature_cache(lambda h5: h5.__delitem__("clips"))),
        ("clip-missing", feature_cache(lambda h5: h5.move("clips/a", "clips/b"))),
        ("no-visual", feature_cache(lambda h5: h5["clips/a"].__delitem__("visual"))),
        ("visual-wrong-channels", feature_cache(replaced("visual", np.zeros((4, 7, 8, 8), np.float32)))),
        ("visual-1d", feature_cache(replaced("visual", np.zeros(4, np.float32)))),
        ("visual-strings", feature_cache(replaced("visual", np.array([b"a", b"b"])))),
        ("visual-nan", feature_cache(lambda h5: h5["clips/a/visual"].__setitem__(Ellipsis, np.nan))),
        ("audio-inf", feature_cache(lambda h5: h5["clips/a/audio"].__setitem__(Ellipsis, np.inf))),
        ("times-short", feature_cache(replaced("times", np.zeros(2)))),
        ("zero-steps", feature_cache(emptied)),
    ]

    def evaluate(features: str) -> tuple[str, ...]:
        return ("eval", "default", "{in}", "--features", f"{{in}}/{features}", "--out", "{out}/e.json", "-q")

    cases = [_case(f"features/{name}", {"f.h5": content, **dataset(KNOWN_CLIP)}, *evaluate("f.h5"))
             for name, content in variants]
    cases.append(_case("features/ave-folder-random-bytes", {"feat/visual_feature.h5": noise(32), **dataset(KNOWN_CLIP)},
                       *evaluate("feat"), culprit="feat"))
    cases.append(_case("features/dataset-class-unknown-to-the-model", {"f.h5": feature_cache(), **dataset(CLIP)},
                       *evaluate("f.h5"), culprit="."))  # the dataset folder holds the label
    return cases


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
    evaluate = DATASET_COMMANDS["eval"]
    for name, argv in [("size-zero", ["--size", "0"]), ("size-negative", ["--size", "-8"]),
                       ("size-huge", ["--size", "100000"]), ("top-percent-nan", ["--top-percent", "nan"]),
                       ("top-percent-zero", ["--top-percent", "0"]), ("top-percent-200", ["--top-percent", "200"])]:
        cases.append(_case(f"flags/eval-{name}", good_dataset(), *evaluate, *argv, culprit=None))
    cases.append(_case("flags/eval-unknown-baseline", good_dataset(), "eval", "baseline:zero", "{in}", "-q",
                       culprit=None))
    cases.append(_case("flags/eval-cross-modal-without-features", good_dataset(), "eval", "default", "{in}",
                       "--task", "cross-modal", "-q", culprit=None))
    extract = DATASET_COMMANDS["extract"]
    for name, argv in [("fps-zero", ["--fps", "0"]), ("fps-nan", ["--fps", "nan"]), ("size-zero", ["--size", "0"]),
                       ("size-huge", ["--size", "100000"]), ("batch-size-zero", ["--batch-size", "0"]),
                       ("shard-beyond", ["--shard", "3/2"]), ("shard-text", ["--shard", "a/b"]),
                       ("audio-window-negative", ["--audio-window", "-1"]),
                       ("audio-window-nan", ["--audio-window", "nan"]),
                       ("frames-per-second-zero", ["--format", "ave", "--frames-per-second", "0"])]:
        cases.append(_case(f"flags/extract-{name}", good_dataset(), *extract, *argv, culprit=None))
    train = DATASET_COMMANDS["train"]
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
    cases.append(_case("flags/demo-seed-negative", {}, "demo", "--out", "{out}", "--seed", "-1", "-q", culprit=None))
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
        _case("output/demo-out-is-a-file", files, "demo", "--out", "{in}/v.mp4", "--seed", "1", "-q", culprit="v.mp4"),
    ]


# Cases that fail in files other helpers are editing now: marked xfail (strict) until they fix them.
OWNERS: dict[str, str] = {}  # case name -> the file that still fails it (xfail, strict)


def hostile_cases() -> list[Case]:
    """Every case, in a fixed order (deterministic: fixed seeds, no clock)."""
    cases = (video_cases() + audio_cases() + manifest_cases() + annotation_cases() + checkpoint_cases()
             + feature_cases() + flag_cases() + output_cases())
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    assert OWNERS.keys() <= set(names), "every owned case must exist"
    return [replace(case, owner=OWNERS.get(case.name, "")) for case in cases]
