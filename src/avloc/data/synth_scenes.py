"""Scenes of the synthetic benchmark: the class table and the random plan of every clip.

A :class:`ClipPlan` holds every random choice about one clip (recipe, objects, paths, sound
sources) and is drawn before any pixel or sample exists, so the ground truth
(:func:`annotate`) can be computed without rendering. See :mod:`avloc.data.synth` for the
recipes and the conventions of the ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avloc.data.manifest import BACKGROUND
from avloc.data.synth_render import mask_box, shape_mask
from avloc.data.synth_sounds import SAMPLE_RATE

FPS = 16  # video frame rate; a multiple of GT_FPS so that annotated times are frame timestamps
GT_FPS = 4  # ground truth at the centre of every quarter second
RECIPES = ("single", "mixed", "multi-entity", "off-screen", "cross-event")
PULSE = 0.35  # multi-entity: radius grows by this fraction while an envelope is on
STREAM_PLAN, STREAM_VIDEO, STREAM_AUDIO, STREAM_ORDER, STREAM_SPLIT = 1, 2, 3, 4, 5  # seed streams


@dataclass(frozen=True)
class SynthClass:
    """One class: its shape, colour (RGB) and sound, with the band (Hz) holding its spectral peak."""

    name: str
    colour: tuple[int, int, int]
    sound: str
    band: tuple[float, float]


CLASSES: tuple[SynthClass, ...] = (
    SynthClass("circle", (230, 40, 40), "harmonic-tone", (180.0, 270.0)),  # red
    SynthClass("square", (40, 80, 250), "square-buzz", (320.0, 380.0)),  # blue
    SynthClass("triangle", (40, 200, 70), "tremolo-tone", (520.0, 600.0)),  # green
    SynthClass("star", (250, 225, 40), "chirps", (800.0, 1150.0)),  # yellow
    SynthClass("ring", (225, 50, 225), "pulsed-tone", (1350.0, 1450.0)),  # magenta
    SynthClass("cross", (40, 225, 235), "hiss-band", (1750.0, 2350.0)),  # cyan
    SynthClass("diamond", (255, 140, 20), "vibrato-tone", (2750.0, 3050.0)),  # orange
    SynthClass("hexagon", (245, 245, 245), "noise-bursts", (3650.0, 4550.0)),  # white
    SynthClass("pentagon", (130, 50, 255), "rough-tone", (5300.0, 5500.0)),  # purple
    SynthClass("crescent", (255, 150, 190), "swelling-hiss", (6250.0, 7350.0)),  # pink
)


@dataclass(frozen=True)
class Envelope:
    """A random on/off process: the state is ``first`` before ``edges[0]`` and flips at every edge."""

    first: int
    edges: tuple[float, ...]

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return (self.first + np.searchsorted(self.edges, t, side="right")) % 2


@dataclass(frozen=True)
class Track:
    """One drawn object: class, size, and the parameters of its bouncing, spinning path."""

    cls: int
    radius: float
    origin: tuple[float, float]
    velocity: tuple[float, float]  # pixels per second
    wobble: tuple[float, float, float]  # amplitude (px), frequency (Hz), phase
    angle: tuple[float, float]  # at t = 0 (radians), spin (radians per second)
    bounds: tuple[float, float]  # the centre stays within [lo, hi] on both axes
    pulse: Envelope | None = None

    def state(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Centre x, centre y, radius and angle at times ``t`` ``(F,)``, each ``(F,)``."""
        amp, freq, phase = self.wobble
        lo, hi = self.bounds
        free = [o + v * t + amp * np.sin(2 * np.pi * freq * t + phase + axis * np.pi / 2)
                for axis, (o, v) in enumerate(zip(self.origin, self.velocity))]
        span = hi - lo
        x, y = (lo + span - np.abs((p - lo) % (2 * span) - span) for p in free)  # bounce off the walls
        scale = 1.0 + PULSE * self.pulse(t) if self.pulse is not None else np.ones_like(t)
        return x, y, self.radius * scale, self.angle[0] + self.angle[1] * t


@dataclass(frozen=True)
class Source:
    """A sound source: class, active span ``[start, end)`` s, drawn track (None = off-screen), gain."""

    cls: int
    start: float
    end: float
    track: int | None
    gain: float


@dataclass(frozen=True)
class ClipPlan:
    """Everything random about one clip, drawn before any pixel or sample is made."""

    seed: int
    index: int
    size: int
    seconds: float
    recipe: str
    tracks: tuple[Track, ...]  # in drawing order
    sources: tuple[Source, ...]

    @property
    def clip_id(self) -> str:
        return f"clip_{self.index:05d}"

    @property
    def scenario(self) -> str:
        return "single" if self.recipe == "cross-event" else self.recipe

    @property
    def num_frames(self) -> int:
        return math.ceil(self.seconds * FPS - 1e-9)

    @property
    def num_samples(self) -> int:
        return round(self.seconds * SAMPLE_RATE)


def recipe_of(seed: int, index: int) -> str:
    """The recipe of clip ``index``: a seeded permutation of :data:`RECIPES` per block of five clips."""
    order = np.random.default_rng([seed, STREAM_ORDER, index // len(RECIPES)]).permutation(len(RECIPES))
    return RECIPES[order[index % len(RECIPES)]]


def _envelope(rng: np.random.Generator, seconds: float) -> Envelope:
    edges, t = [], rng.uniform(0.0, 0.6)
    while t < seconds:
        edges.append(round(float(t), 4))
        t += rng.uniform(0.25, 1.0)
    return Envelope(int(rng.integers(2)), tuple(edges))


def _track(rng: np.random.Generator, cls: int, size: int, radius: float, angle: tuple[float, float],
           pulse: Envelope | None = None) -> Track:
    reach = radius * (1 + PULSE if pulse is not None else 1.0) + 1.0
    wobble = (rng.uniform(0, 0.06 * size), rng.uniform(0.2, 0.8), rng.uniform(0, 2 * np.pi))
    speed, heading = rng.uniform(0.12, 0.45) * size, rng.uniform(0, 2 * np.pi)
    origin = tuple(float(v) for v in rng.uniform(reach, size - reach, 2))
    velocity = (float(speed * np.cos(heading)), float(speed * np.sin(heading)))
    return Track(cls, float(radius), origin, velocity, wobble, angle, (reach, size - reach), pulse)


def _overlap(tracks: list[Track], seconds: float) -> int:
    """How many (pair, sampled time) combinations have two objects' discs touching."""
    t = np.arange(0.0, seconds, 0.25)
    states = [tr.state(t) for tr in tracks]
    hits = 0
    for i in range(len(states)):
        for j in range(i):
            xi, yi, ri, _ = states[i]
            xj, yj, rj, _ = states[j]
            hits += int(np.sum(np.hypot(xi - xj, yi - yj) < ri + rj))
    return hits


def _event_span(rng: np.random.Generator, index: int, seconds: float, min_units: int) -> tuple[int, int, float]:
    """Event span ``[a, b)`` in units, and the unit (1 s, or 0.25 s for clips under 4 s)."""
    unit = 1.0 if seconds >= 4 else 0.25
    units = int(seconds / unit + 1e-9)
    a, b = 0, units
    max_background = min(units // 2, units - min_units)
    if max_background >= 1 and (index % 2 == 0 or rng.random() < 0.3):
        total = int(rng.integers(1, max_background + 1))
        a = int(rng.integers(0, total + 1))
        b = units - (total - a)
    return a, b, unit


def plan_clip(seed: int, index: int, size: int, seconds: float) -> ClipPlan:
    """Draw clip ``index`` of the dataset seeded ``seed``: recipe, objects, paths and sound sources."""
    rng = np.random.default_rng([seed, STREAM_PLAN, index])
    recipe = recipe_of(seed, index)
    a, b, unit = _event_span(rng, index, seconds, min_units=2 if recipe == "cross-event" else 1)
    units = int(seconds / unit + 1e-9)
    start, end = a * unit, (seconds if b == units else b * unit)
    order = rng.permutation(len(CLASSES))
    first, second, others = int(order[0]), int(order[1]), [int(c) for c in order[2:]]
    extra = {"single": (0, 2), "mixed": (0, 1), "multi-entity": (0, 1), "off-screen": (1, 3), "cross-event": (0, 1)}
    distractors = others[: int(rng.integers(extra[recipe][0], extra[recipe][1] + 1))]
    twins = int(rng.integers(2, 4)) if recipe == "multi-entity" else 0
    twin_radius = rng.uniform(0.07, 0.10) * size
    twin_angle = (rng.uniform(0, 2 * np.pi), rng.uniform(-1.0, 1.0))
    # Objects are drawn in this order: silent distractors under the sounding objects.
    if recipe == "multi-entity":
        classes = distractors + [first] * twins
    elif recipe == "off-screen":
        classes = distractors
    elif recipe == "single":
        classes = distractors + [first]
    else:
        classes = distractors + ([first, second] if rng.random() < 0.5 else [second, first])
    best, best_score = None, None
    for _ in range(6):  # redraw the paths a few times and keep the arrangement with the fewest overlaps
        tracks = []
        for k, cls in enumerate(classes):
            if k >= len(distractors) and recipe == "multi-entity":
                tracks.append(_track(rng, cls, size, twin_radius, twin_angle, _envelope(rng, seconds)))
            else:
                radius = max(rng.uniform(0.07, 0.14) * size, 3.5)
                tracks.append(_track(rng, cls, size, radius, (rng.uniform(0, 2 * np.pi), rng.uniform(-1.0, 1.0))))
        score = _overlap(tracks, seconds)
        if best_score is None or score < best_score:
            best, best_score = tracks, score
        if score == 0:
            break
    tracks = best

    def drawn(cls: int) -> int:
        return classes.index(cls)

    gains = rng.uniform(0.6, 1.0, 2)
    if recipe == "single":
        sources = [Source(first, start, end, drawn(first), gains[0])]
    elif recipe == "mixed":
        sources = [Source(first, start, end, drawn(first), gains[0]),
                   Source(second, start, end, drawn(second), gains[1])]
    elif recipe == "multi-entity":
        sounding = len(distractors) + int(rng.integers(twins))
        sources = [Source(first, start, end, sounding, gains[0])]
    elif recipe == "off-screen":
        sources = [Source(first, start, end, None, gains[0])]
    else:
        switch = int(rng.integers(a + 1, b)) * unit
        sources = [Source(first, start, switch, drawn(first), gains[0]),
                   Source(second, switch, end, drawn(second), gains[1])]
    sources = [Source(s.cls, float(s.start), float(s.end), s.track, float(s.gain)) for s in sources]
    return ClipPlan(seed, index, size, float(seconds), recipe, tuple(tracks), tuple(sources))


def annotate(plan: ClipPlan) -> dict:
    """The manifest line of ``plan`` (without ``split``, ``video`` and ``id``): labels, segments, frames, tags."""
    start, end = plan.sources[0].start, plan.sources[-1].end
    segments = []
    if start > 0:
        segments.append({"start": 0.0, "end": start, "label": BACKGROUND})
    segments += [{"start": s.start, "end": s.end, "label": CLASSES[s.cls].name} for s in plan.sources]
    if end < plan.seconds:
        segments.append({"start": end, "end": plan.seconds, "label": BACKGROUND})
    longest = max(plan.sources, key=lambda s: s.end - s.start)  # max keeps the first on a tie
    frames = []
    for k in range(math.ceil(GT_FPS * plan.seconds - 0.5)):
        n = (FPS // GT_FPS) * k + FPS // (2 * GT_FPS)  # the frame whose timestamp is (k + 0.5) / 4
        t = n / FPS
        boxes, labels = [], []
        for source in plan.sources:
            if source.track is not None and source.start <= t < source.end:
                track = plan.tracks[source.track]
                cx, cy, r, angle = (float(v[0]) for v in track.state(np.array([t])))
                box = mask_box(*shape_mask(CLASSES[track.cls].name, cx, cy, r, angle, plan.size))
                if box is not None:
                    boxes.append(box)
                    labels.append(CLASSES[track.cls].name)
        frames.append({"t": t, "boxes": boxes, "scenario": plan.scenario, "labels": labels})
    tags = [plan.scenario] + (["cross-event"] if plan.recipe == "cross-event" else [])
    tags += ["background"] if any(s["label"] == BACKGROUND for s in segments) else []
    return {"label": CLASSES[longest.cls].name, "segments": segments, "frames": frames, "tags": tags}
