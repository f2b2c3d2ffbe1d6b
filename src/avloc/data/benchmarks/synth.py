"""A synthetic audio-visual benchmark with exact per-frame ground truth.

``generate_dataset(OUT, clips, seed)`` writes a dataset in avloc's native format
(:mod:`avloc.data.manifest`): ``OUT/manifest.jsonl``, ``OUT/videos/clip_NNNNN.mp4`` and
``OUT/synth.json`` (generator version and parameters).

Ten classes, each one shape in one saturated colour making one sound whose spectral peak lies
in its own band (see :data:`CLASSES`). Each object's colour is moved a little from its class's
(brightness and tint, at most 18 in RGB distance, so classes stay apart) and carries a faint
texture (flat, shaded, striped or domed). Object sizes follow the real data by default
(``sizes="real"``): each box's width and height are drawn from the box sizes of AVE or
AudioSet-Instrument (:mod:`avloc.data.benchmarks.object_sizes`), so the sounding objects of a frame cover
about a quarter of it on average; ``sizes="small"`` keeps the former objects of a few percent.
Objects move smoothly and bounce inside the frame (large ones move less, and may leave it by at
most 15 % of their half-width) over muted, slowly drifting, textured backgrounds. Clips are built from five recipes, dealt round-robin in a
seeded order within every block of five clips, so any five consecutive clips hold all of them:

- ``single``: one visible object sounds; 0-2 silent objects of other classes.
- ``mixed``: two visible objects of different classes sound at once (audio = sum); both boxes
  are ground truth; the video label and the first of the two overlapping segments are the
  first class.
- ``multi-entity``: 2-3 identical instances of the sounding class. Each one's size pulses
  (x1.35) with its own random on/off envelope; the sounding one's sound is loud exactly when
  it is large (and 15 % as loud when small), so only sight and sound over time tell which one
  sounds. Ground truth: the sounding instance's box (for the whole event, loud or quiet).
- ``off-screen``: the sounding class is not drawn; 1-3 visible objects are silent; empty boxes.
- ``cross-event`` (tag ``cross-event``, frame scenario ``single``): class A sounds, then class
  B (both visible throughout). The video label is the class that sounds longer (A on a tie).

About two thirds of the clips also have background: whole seconds (quarter seconds for clips
shorter than 4 s) at the start and/or end with no event (segment label ``background``, only a
faint noise floor). Frames there have empty boxes and keep the clip's scenario; tell them from
off-screen frames by the segment label.

Ground truth frames lie at ``t = (k + 0.5) / 4`` s. The video runs at 16 fps and frame ``n``
shows the scene at exactly ``n / 16`` s, so each annotated time is a frame's timestamp. Boxes
are ``[x1, y1, x2, y2]`` integer pixels, right/bottom exclusive, around the pixels an object
covers at least half. Each frame also lists ``labels``, the class of each box (an extension
that the native loader ignores). Tags: the clip's scenario, then ``cross-event`` and
``background`` where they apply.

Determinism: every random choice comes from numpy Generators seeded with ``(seed, stream,
clip index)``, so a clip does not depend on the number of clips or of workers; the same seed
gives a byte-identical manifest and identical decoded frames.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from avloc.atomic import atomic_path
from avloc.data.benchmarks.object_sizes import TABLES
from avloc.data.benchmarks.synth_render import make_background, paint
from avloc.data.benchmarks.synth_scenes import (CLASSES, FPS, GT_FPS, RECIPES, STREAM_AUDIO, STREAM_SPLIT, STREAM_VIDEO,
                                                ClipPlan, Envelope, SynthClass, annotate, plan_clip, recipe_of)
from avloc.data.benchmarks.synth_sounds import SAMPLE_RATE, class_sound, gate, smooth
from avloc.data.manifest import MANIFEST_NAME
from avloc.io.write import write_video
from avloc.types import AvlocError

__all__ = ["CLASSES", "FPS", "GT_FPS", "RECIPES", "ClipPlan", "SynthClass", "annotate", "assign_splits",
           "generate_dataset", "plan_clip", "recipe_of", "render_audio", "render_video"]

log = logging.getLogger(__name__)

GENERATOR = "avloc.data.synth"  # the marker synth.json holds: a file-format value, not the module path
VERSION = 2
MARKER = "synth.json"
SPLIT_SHARES = (0.7, 0.15)  # train, val; the rest is test
QUIET = 0.15  # multi-entity: loudness of the sounding instance while its envelope is off
LEVEL = 0.1  # RMS of a source at gain 1
NOISE_RMS = 0.002  # faint noise floor over the whole clip
MIN_SIZE, MAX_SIZE = 32, 2048  # frame side in pixels
MIN_SECONDS, MAX_SECONDS = 0.5, 3600.0  # clip length
MAX_CLIP_BYTES = 2**31  # a clip's frames, rendered in memory before they are encoded


def render_video(plan: ClipPlan) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 frames of ``plan`` at :data:`FPS`; frame ``n`` shows time ``n / FPS``."""
    rng = np.random.default_rng([plan.seed, STREAM_VIDEO, plan.index])
    size, pad = plan.size, max(4, plan.size // 8)
    canvas = make_background(rng, size + 2 * pad)
    times = np.arange(plan.num_frames) / FPS
    period, phase = rng.uniform(6, 20, 2), rng.uniform(0, 2 * np.pi, 2)
    shift = np.round(pad + pad * np.sin(2 * np.pi * times[:, None] / period + phase)).astype(int)  # (F, 2)
    frames = np.empty((len(times), size, size, 3), np.uint8)
    for n, (dx, dy) in enumerate(shift):
        frames[n] = canvas[dy : dy + size, dx : dx + size]
    for track in plan.tracks:
        name = CLASSES[track.cls].name
        for n, (cx, cy, r, angle) in enumerate(zip(*track.state(times))):
            paint(frames[n], name, float(cx), float(cy), float(r), float(angle), track.aspect, track.look)
    return frames


def render_audio(plan: ClipPlan) -> np.ndarray:
    """``(S,)`` float32 mono waveform of ``plan`` at 16 kHz: the gated sources plus a faint noise floor."""
    rng = np.random.default_rng([plan.seed, STREAM_AUDIO, plan.index])
    n = plan.num_samples
    audio = NOISE_RMS * rng.standard_normal(n)
    for source in plan.sources:
        wave = class_sound(CLASSES[source.cls].sound, n, rng) * (LEVEL * source.gain)
        wave *= gate(n, source.start, source.end)
        track = plan.tracks[source.track] if source.track is not None else None
        if track is not None and track.pulse is not None:
            wave *= pulse_gain(track.pulse, n)
        audio += wave
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def pulse_gain(pulse: Envelope, num_samples: int) -> np.ndarray:
    """Multi-entity loudness of ``num_samples`` audio samples: 1 while ``pulse`` is on, ``QUIET``
    while it is off, smoothed over 10 ms."""
    on = pulse((np.arange(num_samples) + 0.5) / SAMPLE_RATE).astype(np.float64)  # sample centres in seconds
    return smooth(QUIET + (1.0 - QUIET) * on)


def assign_splits(seed: int, clips: int) -> list[str]:
    """70 / 15 / 15 train / val / test by a seeded shuffle of the clip indices."""
    order = np.random.default_rng([seed, STREAM_SPLIT]).permutation(clips)
    train, val = round(SPLIT_SHARES[0] * clips), round(SPLIT_SHARES[1] * clips)
    splits = [""] * clips
    for rank, index in enumerate(order):
        splits[index] = "train" if rank < train else "val" if rank < train + val else "test"
    return splits


def _make_clip(job: tuple) -> tuple[int, dict]:
    """Worker: plan clip, write its video unless a finished one can be reused, return its manifest line."""
    root, seed, index, size, seconds, sizes, split, reuse = job
    plan = plan_clip(seed, index, size, seconds, sizes)
    relative = f"videos/{plan.clip_id}.mp4"
    path = Path(root) / relative
    if not (reuse and path.is_file()):
        write_video(path, render_video(plan), FPS, render_audio(plan), SAMPLE_RATE)
    line = {"id": plan.clip_id, "video": relative, "split": split, **annotate(plan)}
    keys = ("id", "video", "split", "label", "segments", "frames", "tags")
    return index, {key: line[key] for key in keys}


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _check_arguments(clips, seed, size, seconds, workers, sizes="real") -> None:
    def is_int(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(clips) or clips < 1:
        raise AvlocError(f"--clips must be a whole number of at least 1, got {clips!r}")
    if not is_int(seed) or seed < 0:
        raise AvlocError(f"--seed must be a non-negative whole number, got {seed!r}")
    if not is_int(size) or not MIN_SIZE <= size <= MAX_SIZE or size % 2:
        raise AvlocError(f"--size must be an even number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
    if not number or not MIN_SECONDS <= seconds <= MAX_SECONDS:  # NaN fails both comparisons
        raise AvlocError(f"--seconds must be from {MIN_SECONDS:g} to {MAX_SECONDS:g}, got {seconds!r}")
    held = seconds * FPS * size * size * 3  # bytes: a clip's frames are rendered in memory
    if held > MAX_CLIP_BYTES:
        raise AvlocError(f"a {seconds:g}-s clip at {size} px holds {held / 2**30:.1f} GiB of frames in memory "
                         f"(at most {MAX_CLIP_BYTES / 2**30:g}): lower --seconds or --size")
    if sizes != "real" and sizes not in TABLES:
        raise AvlocError(f"--sizes must be one of real, {', '.join(TABLES)}, got {sizes!r}")
    if workers is not None and (not is_int(workers) or workers < 1):
        raise AvlocError(f"workers must be at least 1, got {workers!r}")


def previous_run(out: Path, generators: tuple[str, ...] = (GENERATOR,)) -> dict | None:
    """The marker of an earlier run of one of ``generators`` in ``out``; None for a missing or empty folder."""
    if out.exists() and not out.is_dir():
        raise AvlocError(f"{out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    try:
        marker = json.loads((out / MARKER).read_text())
        if marker.get("generator") not in generators:
            raise ValueError
    except (OSError, ValueError, AttributeError):
        message = f"{out} is a non-empty folder that holds no synthetic dataset; choose a new or empty one"
        raise AvlocError(message) from None
    return marker


def generate_dataset(out: str | os.PathLike, clips: int, seed: int, size: int = 128, seconds: float = 10.0,
                     workers: int | None = None, progress: bool = True, sizes: str = "real") -> Path:
    """Write the synthetic benchmark to ``out`` in avloc's native format; returns ``out``.

    Args:
        out: dataset folder: new, empty, or an earlier synth output (regenerated; finished
            videos of a run with the same parameters, e.g. an interrupted one, are kept).
        clips: number of clips (at least 1; any 5 consecutive clips hold every recipe).
        seed: dataset seed (non-negative); the same seed gives the same dataset.
        size: frame side in pixels (even, 32 to 2048).
        seconds: clip length in seconds (0.5 to 3600; a clip's frames must fit in 2 GiB).
        workers: processes (default ``os.cpu_count()``); the output does not depend on it.
        progress: show a progress bar.
        sizes: object sizes: ``"real"`` (drawn from AVE's and AudioSet-Instrument's boxes),
            ``"small"`` (the former benchmark's few percent of the frame), or one dataset's
            table (``"ave"``, ``"audioset-instrument"``).

    Raises:
        AvlocError: for bad arguments or an ``out`` folder that holds something else.
    """
    _check_arguments(clips, seed, size, seconds, workers, sizes)
    out = Path(out)
    parameters = {"clips": int(clips), "seed": int(seed), "size": int(size), "seconds": float(seconds),
                  "fps": FPS, "sample_rate": SAMPLE_RATE, "sizes": sizes}
    previous = previous_run(out) or {}
    # Videos are written atomically and a clip does not depend on the number of clips, so the
    # videos of an earlier run (e.g. an interrupted one) with the same version, seed, size and
    # length are finished and identical to what we would write. Any other run's are deleted
    # before the new marker goes down, so that they can never be mistaken for ours later.
    same = {key: value for key, value in parameters.items() if key != "clips"}
    before = {key: value for key, value in previous.get("parameters", {}).items() if key != "clips"}
    reuse = previous.get("version") == VERSION and before == same
    if not reuse:
        _remove_videos(out, first=0)
    out.mkdir(parents=True, exist_ok=True)
    marker = {"generator": GENERATOR, "version": VERSION, "parameters": parameters,
              "classes": [{"name": c.name, "colour": list(c.colour), "sound": c.sound, "band_hz": list(c.band)}
                          for c in CLASSES]}
    with atomic_path(out / MARKER) as tmp:
        tmp.write_text(json.dumps(marker, indent=1) + "\n")
    splits = assign_splits(seed, clips)
    jobs = [(str(out), int(seed), i, int(size), float(seconds), sizes, splits[i], reuse) for i in range(clips)]
    write_clips(out, _make_clip, jobs, workers, progress)
    log.info("wrote %d synthetic clips to %s", clips, out)
    return out


def write_clips(out: Path, make_clip: Callable[[tuple], tuple[int, dict]], jobs: list[tuple], workers: int | None,
                progress: bool) -> None:
    """Run ``make_clip(job) -> (index, manifest line)`` over ``jobs`` (in ``workers`` processes), drop
    videos beyond the last clip, and write the manifest in clip order (atomically).

    Shared by the shape and the composite benchmark; the output does not depend on ``workers``.
    """
    clips = len(jobs)
    workers = min(workers or os.cpu_count() or 1, clips)
    lines: list[dict | None] = [None] * clips
    with tqdm(total=clips, unit="clip", desc="synth", disable=not progress) as bar:
        if workers == 1:
            for index, line in map(make_clip, jobs):
                lines[index] = line
                bar.update()
        else:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            with multiprocessing.get_context(method).Pool(workers, initializer=_init_worker) as pool:
                for index, line in pool.imap_unordered(make_clip, jobs):
                    lines[index] = line
                    bar.update()
    _remove_videos(out, first=clips)
    with atomic_path(out / MANIFEST_NAME) as tmp, open(tmp, "w", encoding="utf-8") as manifest:
        for line in lines:
            manifest.write(json.dumps(line, separators=(", ", ": ")) + "\n")


def _remove_videos(out: Path, first: int) -> None:
    """Delete the files ``out/videos/clip_NNNNN.mp4`` numbered ``first`` or more (an earlier run's)."""
    for path in (out / "videos").glob("clip_*.mp4"):
        match = re.fullmatch(r"clip_(\d{5,})\.mp4", path.name)
        if match and int(match.group(1)) >= first:
            path.unlink()
