"""A composite benchmark from real cut-outs and recordings, with exact per-frame ground truth.

``generate_composite(OUT, ASSETS, clips, seed)`` (``avloc synth OUT --assets ASSETS``) writes a
dataset in avloc's native format, like the shape benchmark of :mod:`avloc.data.benchmarks.synth`, from an
assets folder (:mod:`avloc.data.benchmarks.composite_assets`; ``scripts/build_assets.py`` builds one from
Tux Paint's stamps). It keeps the shape benchmark's conventions: the five recipes dealt by
:func:`~avloc.data.benchmarks.synth_scenes.recipe_of`, background seconds, 16 fps video whose frame ``n``
shows time ``n / 16`` s, ground truth at ``t = (k + 0.5) / 4`` s, ``labels`` per box, tags,
splits, per-(seed, clip) determinism independent of the number of workers, and resumption.

``classes=N`` (``--classes N``) keeps the benchmark to N classes drawn from the seed
(:func:`heard_classes`): every sounding object and every sound is one of them, while silent
distractors may still be pictures of the other classes. Few clips per class leave weak
video-level supervision nothing to learn from; fewer classes give each more clips.

What differs:

- Objects are pictures of a class (or silent stamps from ``_silent/``, and pictures of other
  classes that stay silent), each clip's sizes drawn from the real box sizes of
  :func:`avloc.data.benchmarks.object_sizes.size_table` (``"real"``). Every instance varies: scale,
  mirror, tilt with a slow sway, brightness and colour balance. Objects drift and bounce and
  may leave the frame by up to a tenth of their size.
- Some silent distractors pass in front of the sounding objects (occlusion). A box is the
  extent of an object's *visible* pixels: those it makes at least half of after
  alpha-compositing, so what is in front is respected; a fully hidden object has no box.
- Backgrounds are never flat: textures, landscapes, blurred silent stamps, close-ups.
- Audio is the class's recordings (16 kHz mono, silence trimmed, looped with random gaps and
  cut to the event) at random gains plus a faint noise floor. ``multi-entity``: 2-3 instances
  of the sounding class pulse in size (x1.3) with their own envelopes and the sounding one is
  loud exactly when large (15 % when small). ``off-screen``: the class is heard, not drawn.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avloc.atomic import atomic_path
from avloc.data.benchmarks.composite_assets import AssetLibrary, load_picture, load_sound, scan_assets
from avloc.data.benchmarks.composite_render import (compose, fill, make_background, mask_box, prepare_sprite,
                                                    visible_masks, warp_sprite)
from avloc.data.benchmarks.object_sizes import size_table
from avloc.data.benchmarks.synth import GENERATOR as SHAPE_GENERATOR
from avloc.data.benchmarks.synth import (LEVEL, MARKER, NOISE_RMS, _check_arguments, _remove_videos, assign_splits,
                                         previous_run, pulse_gain, write_clips)
from avloc.data.benchmarks.synth_scenes import (FPS, GT_FPS, ClipTiming, Envelope, event_span, random_envelope,
                                                recipe_of)
from avloc.data.benchmarks.synth_sounds import SAMPLE_RATE
from avloc.data.manifest import BACKGROUND
from avloc.io.write import write_video
from avloc.types import AvlocError

__all__ = ["CompositePlan", "Sprite", "annotate", "draw", "generate_composite", "heard_classes", "plan_composite",
           "render_audio"]

log = logging.getLogger(__name__)

GENERATOR = "avloc.data.composite"  # the marker synth.json holds: a file-format value, not the module path
VERSION = 1
STREAM_PLAN, STREAM_VIDEO, STREAM_AUDIO, STREAM_CLASSES = 11, 12, 13, 14  # seed streams (shapes use 1-5)
PULSE = 0.3  # multi-entity: an instance grows by this fraction while its envelope is on
MARGIN = 0.4  # an object's centre stays this share of its size inside the frame
EXTRA = {"single": (1, 3), "mixed": (0, 2), "multi-entity": (0, 2), "off-screen": (1, 3), "cross-event": (0, 2)}
FRONT = 0.35  # chance that a distractor passes in front of the sounding objects
FRONT_AREA, DISTRACTOR_AREA, TWIN_AREA = 0.08, 0.2, 0.12  # caps on a box's share of the frame


@dataclass(frozen=True)
class Sprite:
    """One drawn object: its picture and looks, and the parameters of its drifting, swaying path."""

    picture: str  # relative to the assets folder
    cls: str | None  # its class, None for a silent stamp
    width: float  # pixels, at scale 1 and no tilt
    height: float
    flip: bool
    gains: tuple[float, float, float]  # RGB multipliers (brightness times colour balance)
    tilt: tuple[float, float, float, float]  # angle, sway amplitude (degrees), sway frequency (Hz), phase
    origin: tuple[float, float]
    velocity: tuple[float, float]  # pixels per second
    wobble: tuple[float, float, float]  # amplitude (px), frequency (Hz), phase
    bounds: tuple[tuple[float, float], tuple[float, float]]  # the centre's [lo, hi] on x and on y
    pulse: Envelope | None = None

    def state(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Centre x, centre y, scale and angle (degrees) at times ``t`` ``(F,)``, each ``(F,)``."""
        amp, freq, phase = self.wobble
        centre = []
        for axis, (o, v, (lo, hi)) in enumerate(zip(self.origin, self.velocity, self.bounds)):
            free = o + v * t + amp * np.sin(2 * np.pi * freq * t + phase + axis * np.pi / 2)
            span = max(hi - lo, 1e-6)
            centre.append(lo + span - np.abs((free - lo) % (2 * span) - span))  # bounce off the walls
        scale = 1.0 + PULSE * self.pulse(t) if self.pulse is not None else np.ones_like(t)
        angle, sway, sway_freq, sway_phase = self.tilt
        return centre[0], centre[1], scale, angle + sway * np.sin(2 * np.pi * sway_freq * t + sway_phase)


@dataclass(frozen=True)
class Source:
    """A sound source: class, recording, active span ``[start, end)`` s, drawn sprite (None = off-screen), gain."""

    cls: str
    sound: str
    start: float
    end: float
    sprite: int | None
    gain: float


@dataclass(frozen=True)
class CompositePlan(ClipTiming):
    """Everything random about one clip except pixel-level texture and audio looping."""

    sprites: tuple[Sprite, ...]  # back to front
    sources: tuple[Source, ...]


def _sprite(rng: np.random.Generator, library: AssetLibrary, picture: str, cls: str | None, size: int,
            box: tuple[float, float], max_area: float, pulse: Envelope | None = None) -> Sprite:
    """A sprite whose box (at scale 1) has the area of ``box`` (shares of the frame), capped at ``max_area``."""
    h, w = load_picture(str(library.root / picture)).shape[:2]
    area = min(box[0] * box[1], max_area) * size * size
    # Keep most of the picture's own aspect ratio; lean a little towards the drawn box's.
    stretch = float(np.clip(((box[0] / box[1]) / (w / h)) ** 0.25, 0.8, 1.25))
    aspect = w / h * stretch
    width, height = math.sqrt(area * aspect), math.sqrt(area / aspect)
    grow = 1.0 + PULSE if pulse is not None else 1.0
    shrink = max(width * grow / size, height * grow / size, 1.0)
    width, height = max(width / shrink, 2.0), max(height / shrink, 2.0)
    bounds = tuple((MARGIN * d * grow, size - MARGIN * d * grow) for d in (width, height))
    reach = max(width, height) / size
    speed, heading = rng.uniform(0.04, 0.3) * size * (1.0 - 0.8 * reach), rng.uniform(0, 2 * np.pi)
    origin = tuple(float(rng.uniform(lo, hi)) if hi > lo else size / 2.0 for lo, hi in bounds)
    colour = rng.uniform(0.75, 1.2) * rng.uniform(0.9, 1.1, 3)
    return Sprite(picture, cls, float(width), float(height), bool(rng.random() < 0.5),
                  tuple(float(g) for g in colour),
                  (float(rng.uniform(-15, 15)), float(rng.uniform(0, 8)), float(rng.uniform(0.2, 0.8)),
                   float(rng.uniform(0, 2 * np.pi))),
                  origin, (float(speed * np.cos(heading)), float(speed * np.sin(heading))),
                  (float(rng.uniform(0, 0.03 * size)), float(rng.uniform(0.2, 0.8)), float(rng.uniform(0, 2 * np.pi))),
                  bounds, pulse)


def _overlap(sprites: list[Sprite], seconds: float) -> int:
    """How many (pair, sampled time) combinations have two sounding objects' inner discs touching."""
    t = np.arange(0.0, seconds, 0.25)
    states = [(s.state(t), 0.35 * min(s.width, s.height)) for s in sprites]
    hits = 0
    for i in range(len(states)):
        for j in range(i):
            (xi, yi, si, _), ri = states[i]
            (xj, yj, sj, _), rj = states[j]
            hits += int(np.sum(np.hypot(xi - xj, yi - yj) < ri * si + rj * sj))
    return hits


def heard_classes(library: AssetLibrary, seed: int, classes: int | None = None) -> tuple[str, ...]:
    """The ``classes`` classes (default all) that sound in the dataset seeded ``seed``, sorted.

    A seeded draw over the sorted class list, so the same seed and number give the same classes.

    Raises:
        AvlocError: ``classes`` is not 2 to the number of classes of the assets folder.
    """
    total = len(library.classes)
    if classes is None:
        return library.classes
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or not 2 <= classes <= total:
        raise AvlocError(f"classes must be 2 to {total} (the classes of the assets folder {library.root}), "
                         f"got {classes!r}")
    picked = np.random.default_rng([seed, STREAM_CLASSES]).permutation(total)[: int(classes)]
    return tuple(library.classes[int(k)] for k in sorted(picked))


def plan_composite(library: AssetLibrary, seed: int, index: int, size: int, seconds: float,
                   heard: tuple[str, ...] | None = None) -> CompositePlan:
    """Draw clip ``index`` of the composite dataset seeded ``seed``: recipe, sprites, paths and sources.

    Only the classes ``heard`` (default all, see :func:`heard_classes`) sound; the others may be silent distractors.
    """
    rng = np.random.default_rng([seed, STREAM_PLAN, index])
    recipe = recipe_of(seed, index)
    table = size_table("real", rng)
    a, b, unit = event_span(rng, index, seconds, min_units=2 if recipe == "cross-event" else 1)
    units = int(seconds / unit + 1e-9)
    start, end = a * unit, (seconds if b == units else b * unit)
    order = [int(c) for c in rng.permutation(len(library.classes))]
    # The first two heard classes of a random order are a uniform draw among them; with every class heard this is
    # order[0], order[1], as before, so datasets without ``heard`` are unchanged.
    allowed = set(range(len(library.classes))) if heard is None else {library.classes.index(c) for c in heard}
    first, second = [c for c in order if c in allowed][:2]
    order = [first, second] + [c for c in order if c not in (first, second)]

    def picture_of(cls: int) -> str:
        return library.pictures[cls][int(rng.integers(len(library.pictures[cls])))]

    # Silent distractors: mostly silent stamps, sometimes a picture of a class that is not heard.
    distractors = []
    for k in range(int(rng.integers(EXTRA[recipe][0], EXTRA[recipe][1] + 1))):
        others = order[2 + k : 3 + k]
        if library.silent and (not others or rng.random() < 0.75):
            distractors.append((library.silent[int(rng.integers(len(library.silent)))], None))
        elif others:
            distractors.append((picture_of(others[0]), library.classes[others[0]]))
    twins = int(rng.integers(2, 4)) if recipe == "multi-entity" else 0
    if recipe == "multi-entity":
        sounding = [first] * twins
    elif recipe == "off-screen":
        sounding = []
    elif recipe == "single":
        sounding = [first]
    else:
        sounding = [first, second] if rng.random() < 0.5 else [second, first]
    twin_box = table.box_shape(rng)
    best, best_score = None, None
    for _ in range(6):  # redraw the paths a few times; keep the arrangement whose sounding objects overlap least
        behind, front, loud = [], [], []
        for picture, cls in distractors:
            in_front = bool(rng.random() < FRONT) and bool(sounding)
            sprite = _sprite(rng, library, picture, cls, size, table.box_shape(rng),
                             FRONT_AREA if in_front else DISTRACTOR_AREA)
            (front if in_front else behind).append(sprite)
        for cls in sounding:
            if recipe == "multi-entity":
                loud.append(_sprite(rng, library, picture_of(cls), library.classes[cls], size, twin_box, TWIN_AREA,
                                    random_envelope(rng, seconds)))
            else:
                loud.append(_sprite(rng, library, picture_of(cls), library.classes[cls], size, table.box_shape(rng), 1.0))
        score = _overlap(loud, seconds)
        if best_score is None or score < best_score:
            best, best_score = (behind, loud, front), score
        if score == 0:
            break
    behind, loud, front = best
    sprites = behind + loud + front

    def drawn(cls: int) -> int:
        return len(behind) + sounding.index(cls)

    def recording(cls: int) -> str:
        return library.sounds[cls][int(rng.integers(len(library.sounds[cls])))]

    gains = rng.uniform(0.6, 1.0, 2)
    name = library.classes
    if recipe == "single":
        sources = [Source(name[first], recording(first), start, end, drawn(first), gains[0])]
    elif recipe == "mixed":
        sources = [Source(name[first], recording(first), start, end, drawn(first), gains[0]),
                   Source(name[second], recording(second), start, end, drawn(second), gains[1])]
    elif recipe == "multi-entity":
        sources = [Source(name[first], recording(first), start, end, len(behind) + int(rng.integers(twins)), gains[0])]
    elif recipe == "off-screen":
        sources = [Source(name[first], recording(first), start, end, None, gains[0])]
    else:
        switch = int(rng.integers(a + 1, b)) * unit
        sources = [Source(name[first], recording(first), start, switch, drawn(first), gains[0]),
                   Source(name[second], recording(second), switch, end, drawn(second), gains[1])]
    sources = [Source(s.cls, s.sound, float(s.start), float(s.end), s.sprite, float(s.gain)) for s in sources]
    return CompositePlan(seed, index, size, float(seconds), recipe, tuple(sprites), tuple(sources))


def gt_frames(plan: CompositePlan) -> list[int]:
    """The frame numbers annotated: frame ``n`` shows time ``n / FPS``, annotated at ``(k + 0.5) / GT_FPS`` s."""
    return [(FPS // GT_FPS) * k + FPS // (2 * GT_FPS) for k in range(math.ceil(GT_FPS * plan.seconds - 0.5))]


def draw(plan: CompositePlan, library: AssetLibrary, frames: list[int],
         pixels: bool = True) -> tuple[np.ndarray | None, list[list[list[int] | None]]]:
    """Render frames ``frames`` of ``plan``: ``(F, H, W, 3)`` uint8 (None unless ``pixels``) and per frame the
    visible box of every sprite (None where nothing of it is visible)."""
    size = plan.size
    prepared = [prepare_sprite(load_picture(str(library.root / s.picture)),
                               s.width * (1.0 + PULSE if s.pulse is not None else 1.0),
                               s.height * (1.0 + PULSE if s.pulse is not None else 1.0), s.flip, s.gains)
                for s in plan.sprites]
    times = np.asarray(frames, np.float64) / FPS
    states = [s.state(times) for s in plan.sprites]
    out, canvas, shift = None, None, None
    if pixels:
        rng = np.random.default_rng([plan.seed, STREAM_VIDEO, plan.index])
        pad = max(4, size // 8)
        silent = [load_picture(str(library.root / library.silent[int(i)]))
                  for i in rng.integers(len(library.silent), size=6)] if library.silent else []
        canvas = make_background(rng, size + 2 * pad, silent)
        period, phase = rng.uniform(6, 20, 2), rng.uniform(0, 2 * np.pi, 2)
        shift = np.round(pad + pad * np.sin(2 * np.pi * times[:, None] / period + phase)).astype(int)  # (F, 2)
        out = np.empty((len(frames), size, size, 3), np.uint8)
    boxes = []
    for n in range(len(frames)):
        layers = []
        for sprite, (x, y, scale, angle), spec in zip(prepared, states, plan.sprites):
            relative = scale[n] / (1.0 + PULSE) if spec.pulse is not None else 1.0
            layers.append(warp_sprite(sprite, float(x[n]), float(y[n]), float(relative), float(angle[n]), size))
        boxes.append([mask_box(m) for m in visible_masks(layers, size)])
        if pixels:
            dx, dy = shift[n]
            frame = canvas[dy : dy + size, dx : dx + size].copy()
            compose(frame, layers)
            out[n] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out, boxes


def annotate(plan: CompositePlan, boxes: list[list[list[int] | None]]) -> dict:
    """The manifest line of ``plan`` (without ``split``, ``video``, ``id``) from the boxes of :func:`gt_frames`."""
    start, end = plan.sources[0].start, plan.sources[-1].end
    segments = [{"start": 0.0, "end": start, "label": BACKGROUND}] if start > 0 else []
    segments += [{"start": s.start, "end": s.end, "label": s.cls} for s in plan.sources]
    if end < plan.seconds:
        segments.append({"start": end, "end": plan.seconds, "label": BACKGROUND})
    longest = max(plan.sources, key=lambda s: s.end - s.start)  # max keeps the first on a tie
    frames = []
    for n, visible in zip(gt_frames(plan), boxes):
        t = n / FPS
        kept = [(visible[s.sprite], s.cls) for s in plan.sources
                if s.sprite is not None and s.start <= t < s.end and visible[s.sprite] is not None]
        frames.append({"t": t, "boxes": [box for box, _ in kept], "scenario": plan.scenario,
                       "labels": [cls for _, cls in kept]})
    tags = [plan.scenario] + (["cross-event"] if plan.recipe == "cross-event" else [])
    tags += ["background"] if any(s["label"] == BACKGROUND for s in segments) else []
    return {"label": longest.cls, "segments": segments, "frames": frames, "tags": tags}


def render_audio(plan: CompositePlan, library: AssetLibrary) -> np.ndarray:
    """``(S,)`` float32 mono waveform at 16 kHz: the sources' recordings, looped and gated, plus a noise floor."""
    rng = np.random.default_rng([plan.seed, STREAM_AUDIO, plan.index])
    n = plan.num_samples
    audio = NOISE_RMS * rng.standard_normal(n)
    for source in plan.sources:
        a, b = round(source.start * SAMPLE_RATE), min(n, round(source.end * SAMPLE_RATE))
        wave = np.zeros(n)
        wave[a:b] = fill(load_sound(str(library.root / source.sound)), b - a, rng) * (LEVEL * source.gain)
        sprite = plan.sprites[source.sprite] if source.sprite is not None else None
        if sprite is not None and sprite.pulse is not None:
            wave *= pulse_gain(sprite.pulse, n)
        audio += wave
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _make_clip(job: tuple) -> tuple[int, dict]:
    """Worker: plan clip, write its video unless a finished one can be reused, return its manifest line."""
    root, library, seed, index, size, seconds, heard, split, reuse = job
    plan = plan_composite(library, seed, index, size, seconds, heard)
    relative = f"videos/{plan.clip_id}.mp4"
    path = Path(root) / relative
    annotated = gt_frames(plan)
    if reuse and path.is_file():
        _, boxes = draw(plan, library, annotated, pixels=False)
    else:
        frames, every = draw(plan, library, list(range(plan.num_frames)))
        write_video(path, frames, FPS, render_audio(plan, library), SAMPLE_RATE)
        boxes = [every[n] for n in annotated]
    line = {"id": plan.clip_id, "video": relative, "split": split, **annotate(plan, boxes)}
    keys = ("id", "video", "split", "label", "segments", "frames", "tags")
    return index, {key: line[key] for key in keys}


def generate_composite(out: str | os.PathLike, assets: str | os.PathLike, clips: int, seed: int, size: int = 128,
                       seconds: float = 10.0, workers: int | None = None, progress: bool = True,
                       classes: int | None = None) -> Path:
    """Write the composite benchmark from the assets folder ``assets`` to ``out``; returns ``out``.

    Arguments and resumption as :func:`avloc.data.benchmarks.synth.generate_dataset`; ``classes`` (default
    all) is how many classes sound, drawn from ``seed`` by :func:`heard_classes` and listed in
    ``synth.json`` as ``heard_classes``. Finished videos are reused only for the same assets
    (same files and sizes), version, seed, number of classes, size and length.

    Raises:
        AvlocError: bad arguments, a bad assets folder, or an ``out`` folder that holds something else.
    """
    _check_arguments(clips, seed, size, seconds, workers)
    library = scan_assets(assets)
    library = AssetLibrary(library.root.resolve(), library.classes, library.pictures, library.sounds,
                           library.silent, library.skipped)
    heard = heard_classes(library, seed, classes)
    for reason, count in library.skipped.items():
        log.info("assets folder %s: skipped %d %s", library.root, count, reason)
    out = Path(out)
    parameters = {"clips": int(clips), "seed": int(seed), "classes": len(heard), "size": int(size),
                  "seconds": float(seconds), "fps": FPS, "sample_rate": SAMPLE_RATE, "assets": str(library.root),
                  "assets_fingerprint": library.fingerprint}
    previous = previous_run(out, (GENERATOR, SHAPE_GENERATOR)) or {}
    same = {key: value for key, value in parameters.items() if key not in ("clips", "assets")}
    before = {key: value for key, value in previous.get("parameters", {}).items() if key not in ("clips", "assets")}
    before.setdefault("classes", len(library.classes))  # written before ``classes`` existed: every class sounded
    reuse = previous.get("generator") == GENERATOR and previous.get("version") == VERSION and before == same
    if not reuse:
        _remove_videos(out, first=0)
    out.mkdir(parents=True, exist_ok=True)
    marker = {"generator": GENERATOR, "version": VERSION, "parameters": parameters,
              "classes": [{"name": name, "pictures": len(p), "sounds": len(s)}
                          for name, p, s in zip(library.classes, library.pictures, library.sounds)],
              "heard_classes": list(heard),
              "silent_pictures": len(library.silent), "skipped": library.skipped}
    with atomic_path(out / MARKER) as tmp:
        tmp.write_text(json.dumps(marker, indent=1) + "\n")
    splits = assign_splits(seed, clips)
    jobs = [(str(out), library, int(seed), i, int(size), float(seconds), heard, splits[i], reuse)
            for i in range(clips)]
    write_clips(out, _make_clip, jobs, workers, progress)
    log.info("wrote %d composite clips of %d classes from %s to %s", clips, len(heard), library.root, out)
    return out
