"""Scenes of the synthetic benchmark: the class table and the random plan of every clip.

A :class:`ClipPlan` holds every random choice about one clip (recipe, objects, their sizes,
looks and paths, sound sources) and is drawn before any pixel or sample exists, so the ground
truth (:func:`annotate`) can be computed without rendering. See :mod:`avloc.data.benchmarks.synth` for the
recipes and the conventions of the ground truth.

Object sizes come from a size setting of :mod:`avloc.data.benchmarks.object_sizes`: each object's box
(width and height as shares of the frame) is drawn from the clip's table, its aspect kept within
:data:`MAX_ASPECT` so that shapes stay recognisable, and its radius set so that the box of the
spinning shape covers the drawn area on average (:func:`~avloc.data.benchmarks.synth_render.box_fill`).
The sounding objects (the two of ``mixed`` and ``cross-event`` clips, the pulsing twins of
``multi-entity`` ones) each keep to their own lane of the frame, so none ever hides another;
objects too large for that are shrunk together, and twins cover at most half the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avloc.data.manifest import BACKGROUND
from avloc.data.benchmarks.object_sizes import SizeTable, size_table
from avloc.data.benchmarks.synth_render import Look, box_fill, mask_box, random_look, shape_mask
from avloc.data.benchmarks.synth_sounds import SAMPLE_RATE

FPS = 16  # video frame rate; a multiple of GT_FPS so that annotated times are frame timestamps
GT_FPS = 4  # ground truth at the centre of every quarter second
RECIPES = ("single", "mixed", "multi-entity", "off-screen", "cross-event")
PULSE = 0.35  # multi-entity: radius grows by this fraction while an envelope is on
STREAM_PLAN, STREAM_VIDEO, STREAM_AUDIO, STREAM_ORDER, STREAM_SPLIT = 1, 2, 3, 4, 5  # seed streams
MAX_ASPECT = 2.0  # box width / height (or its inverse) beyond which shapes stop being recognisable
TILT = 0.6  # radians: objects stand upright, tilted by at most this (a fixed lean plus a rocking)
OVERHANG = 0.15  # share of its half-width (half-height) an object may move out of the frame
TWIN_AREA = 0.5  # multi-entity: the pulsed twins' boxes cover at most this share of the frame together
SIDE_BY_SIDE = 0.9  # mixed, cross-event: the two objects' ellipses' widths (or heights) add up to at most this
MIN_RADIUS = 3.5  # pixels


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
    """One drawn object: class, size, aspect, look, and the parameters of its bouncing, spinning path."""

    cls: int
    radius: float  # pixels; the shape fits in the ellipse of semi-axes radius * (sqrt(aspect), 1 / sqrt(aspect))
    aspect: float
    look: Look
    origin: tuple[float, float]
    velocity: tuple[float, float]  # pixels per second
    wobble: tuple[float, float, float]  # amplitude (px), frequency (Hz), phase
    angle: tuple[float, float, float, float]  # lean, rocking amplitude (radians), frequency (Hz), phase
    bounds: tuple[tuple[float, float], tuple[float, float]]  # the centre stays within [lo, hi] on x and on y
    pulse: Envelope | None = None

    def state(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Centre x, centre y, radius and angle at times ``t`` ``(F,)``, each ``(F,)``."""
        amp, freq, phase = self.wobble
        free = [o + v * t + amp * np.sin(2 * np.pi * freq * t + phase + axis * np.pi / 2)
                for axis, (o, v) in enumerate(zip(self.origin, self.velocity))]
        x, y = (_bounce(p, lo, hi) for p, (lo, hi) in zip(free, self.bounds))
        scale = 1.0 + PULSE * self.pulse(t) if self.pulse is not None else np.ones_like(t)
        lean, rock, rate, phase = self.angle
        return x, y, self.radius * scale, lean + rock * np.sin(2 * np.pi * rate * t + phase)


def _bounce(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions ``p`` folded into ``[lo, hi]`` as if bouncing off the walls (``lo`` when there is no room)."""
    span = hi - lo
    if span <= 0:
        return np.full_like(p, lo)
    return lo + span - np.abs((p - lo) % (2 * span) - span)


@dataclass(frozen=True)
class Source:
    """A sound source: class, active span ``[start, end)`` s, drawn track (None = off-screen), gain."""

    cls: int
    start: float
    end: float
    track: int | None
    gain: float


@dataclass(frozen=True)
class ClipTiming:
    """The fields every clip plan starts with, and what follows from them (shapes and composites alike)."""

    seed: int
    index: int
    size: int
    seconds: float
    recipe: str

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


@dataclass(frozen=True)
class ClipPlan(ClipTiming):
    """Everything random about one clip, drawn before any pixel or sample is made."""

    tracks: tuple[Track, ...]  # in drawing order
    sources: tuple[Source, ...]
    sizes: str = "real"  # the size setting the objects were drawn from



def recipe_of(seed: int, index: int) -> str:
    """The recipe of clip ``index``: a seeded permutation of :data:`RECIPES` per block of five clips."""
    order = np.random.default_rng([seed, STREAM_ORDER, index // len(RECIPES)]).permutation(len(RECIPES))
    return RECIPES[order[index % len(RECIPES)]]


def random_envelope(rng: np.random.Generator, seconds: float) -> Envelope:
    """An on/off process over ``seconds``: a random first state, edges 0.25 to 1 s apart from 0-0.6 s."""
    edges, t = [], rng.uniform(0.0, 0.6)
    while t < seconds:
        edges.append(round(float(t), 4))
        t += rng.uniform(0.25, 1.0)
    return Envelope(int(rng.integers(2)), tuple(edges))


def _box_shares(rng: np.random.Generator, table: SizeTable) -> list[float]:
    """One object's box ``[width, height]`` as shares of the frame, its aspect within :data:`MAX_ASPECT`."""
    width, height = table.box_shape(rng)
    area, aspect = width * height, float(np.clip(width / height, 1 / MAX_ASPECT, MAX_ASPECT))
    width, height = math.sqrt(area * aspect), math.sqrt(area / aspect)
    shrink = max(width, height, 1.0)
    return [width / shrink, height / shrink]


def _radius_aspect(shape: str, shares: list[float], size: int) -> tuple[float, float]:
    """Radius (pixels) and aspect of a ``shape`` whose (rocking) box covers ``shares`` of the frame on average."""
    fill = math.sqrt(box_fill(shape, TILT / 2))
    half_x, half_y = (min(share / fill, 1.0) * size / 2 for share in shares)  # the ellipse never outgrows the frame
    return max(math.sqrt(half_x * half_y), MIN_RADIUS), half_x / half_y


def _half_extents(radius: float, aspect: float, tilt: float) -> tuple[float, float]:
    """Half-width and half-height (pixels) of the ellipse of ``radius`` and ``aspect`` turned by up to ``tilt``."""
    stretch = (math.sqrt(aspect), 1 / math.sqrt(aspect))
    return tuple(radius * math.sqrt(max(along**2, (along * math.cos(tilt)) ** 2 + (across * math.sin(tilt)) ** 2))
                 for along, across in (stretch, stretch[::-1]))


def _lanes(rng: np.random.Generator, halves: list[tuple[float, float]], size: int
           ) -> tuple[float, list[tuple[tuple[float, float], tuple[float, float]]]]:
    """Split the frame into one lane per object (side by side, or one above the other: where there is more room).

    Returns the factor the objects must shrink by to fit in :data:`SIDE_BY_SIDE` of the frame,
    and each object's region (x and y ranges, pixels), the lanes in a random order.
    """
    totals = [2 * sum(half[axis] for half in halves) for axis in (0, 1)]
    axis = int(totals[1] < totals[0])
    margin = 2.0  # pixels per lane, so that anti-aliased edges of neighbours never touch
    shrink = min(1.0, (SIDE_BY_SIDE * size - margin * len(halves)) / totals[axis])
    widths = np.array([2 * half[axis] * shrink + margin for half in halves])
    widths += max(size - widths.sum(), 0.0) * rng.dirichlet(np.ones(len(halves)))
    regions: list = [None] * len(halves)
    start = 0.0
    for k in rng.permutation(len(halves)):
        span = (start, min(start + float(widths[k]), float(size)))
        regions[k] = (span, (0.0, float(size))) if axis == 0 else ((0.0, float(size)), span)
        start = span[1]
    return shrink, regions


def _track(rng: np.random.Generator, cls: int, size: int, radius: float, aspect: float, look: Look,
           angle: tuple[float, float, float, float], pulse: Envelope | None = None,
           region: tuple[tuple[float, float], tuple[float, float]] | None = None) -> Track:
    """A path that keeps the object in ``region`` (x and y ranges, pixels; default the frame, which it may overhang)."""
    # Twins never leave the frame (their drawn size is what tells them apart), nor objects kept to a region.
    overhang = OVERHANG if pulse is None and region is None else 0.0
    grow = 1 + PULSE if pulse is not None else 1.0
    halves = _half_extents(radius * grow, aspect, abs(angle[0]) + abs(angle[1]))
    bounds, spans = [], []
    for half, (start, end) in zip(halves, region or ((0, size), (0, size))):
        reach = half * (1 - overhang) + 1.0
        lo, hi = (start + reach, end - reach) if 2 * reach < end - start else ((start + end) / 2,) * 2
        bounds.append((float(lo), float(hi)))
        spans.append(hi - lo)
    # Paths scale with the room an object has: a large object moves less.
    wobble = (rng.uniform(0, 0.09) * min(spans), rng.uniform(0.2, 0.8), rng.uniform(0, 2 * np.pi))
    speed, heading = rng.uniform(0.17, 0.64), rng.uniform(0, 2 * np.pi)
    origin = tuple(float(rng.uniform(lo, hi)) for lo, hi in bounds)
    velocity = (float(speed * spans[0] * np.cos(heading)), float(speed * spans[1] * np.sin(heading)))
    return Track(cls, float(radius), float(aspect), look, origin, velocity, wobble, angle, tuple(bounds), pulse)


def _overlap(tracks: list[Track], seconds: float, front: int) -> int:
    """How often two objects' ellipses' boxes touch at sampled times; pairs of the tracks from ``front`` on count 4 times."""
    t = np.arange(0.0, seconds, 0.25)
    states = [tr.state(t) for tr in tracks]
    stretch = [(math.sqrt(tr.aspect), 1 / math.sqrt(tr.aspect)) for tr in tracks]
    hits = 0
    for i in range(len(states)):
        for j in range(i):
            (xi, yi, ri, _), (xj, yj, rj, _) = states[i], states[j]
            touch = ((np.abs(xi - xj) < ri * stretch[i][0] + rj * stretch[j][0])
                     & (np.abs(yi - yj) < ri * stretch[i][1] + rj * stretch[j][1]))
            hits += int(np.sum(touch)) * (4 if j >= front else 1)
    return hits


def event_span(rng: np.random.Generator, index: int, seconds: float, min_units: int) -> tuple[int, int, float]:
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


def plan_clip(seed: int, index: int, size: int, seconds: float, sizes: str = "real") -> ClipPlan:
    """Draw clip ``index`` of the dataset seeded ``seed``: recipe, objects, paths and sound sources.

    ``sizes`` names the object size setting (:func:`avloc.data.benchmarks.object_sizes.size_table`):
    ``"real"`` (boxes as large as in AVE or AudioSet-Instrument) or ``"small"`` (the former
    benchmark's objects of a few percent of the frame).
    """
    rng = np.random.default_rng([seed, STREAM_PLAN, index])
    table = size_table(sizes, rng)
    recipe = recipe_of(seed, index)
    a, b, unit = event_span(rng, index, seconds, min_units=2 if recipe == "cross-event" else 1)
    units = int(seconds / unit + 1e-9)
    start, end = a * unit, (seconds if b == units else b * unit)
    order = rng.permutation(len(CLASSES))
    first, second, others = int(order[0]), int(order[1]), [int(c) for c in order[2:]]
    extra = {"single": (0, 2), "mixed": (0, 1), "multi-entity": (0, 1), "off-screen": (1, 3), "cross-event": (0, 1)}
    distractors = others[: int(rng.integers(extra[recipe][0], extra[recipe][1] + 1))]
    twins = int(rng.integers(2, 4)) if recipe == "multi-entity" else 0
    # Objects are drawn in this order: silent distractors under the sounding objects.
    if recipe == "multi-entity":
        classes = distractors + [first] * twins
    elif recipe == "off-screen":
        classes = distractors
    elif recipe == "single":
        classes = distractors + [first]
    else:
        classes = distractors + ([first, second] if rng.random() < 0.5 else [second, first])
    front = len(distractors)
    shares = [_box_shares(rng, table) for _ in classes]
    looks = [random_look(rng, CLASSES[cls].colour) for cls in classes]
    angles = [tuple(float(v) for v in (rng.uniform(-TILT / 2, TILT / 2), rng.uniform(0, TILT / 2),
                                        rng.uniform(0.1, 0.6), rng.uniform(0, 2 * np.pi))) for _ in classes]
    if recipe == "multi-entity":  # identical twins, pulsing within their share of the frame
        shrink = min(1.0, math.sqrt(TWIN_AREA / (twins * (1 + PULSE) ** 2 * shares[front][0] * shares[front][1])))
        twin = [v * shrink for v in shares[front]]
        for k in range(front, len(classes)):
            shares[k], looks[k], angles[k] = twin, looks[front], angles[front]
    shapes = [_radius_aspect(CLASSES[cls].name, pair, size) for cls, pair in zip(classes, shares)]
    regions = [None] * len(classes)
    if recipe in ("mixed", "cross-event", "multi-entity"):  # sounding objects in lanes of their own
        grow = 1 + PULSE if recipe == "multi-entity" else 1.0
        halves = [_half_extents(r * grow, a, abs(angles[k][0]) + abs(angles[k][1]))
                  for k, (r, a) in enumerate(shapes) if k >= front]
        shrink, regions[front:] = _lanes(rng, halves, size)
        shapes[front:] = [(max(r * shrink, MIN_RADIUS), a) for r, a in shapes[front:]]
    best, best_score = None, None
    for _ in range(8):  # redraw the paths a few times and keep the arrangement with the fewest overlaps
        tracks = []
        for k, (cls, (radius, aspect)) in enumerate(zip(classes, shapes)):
            pulse = random_envelope(rng, seconds) if k >= front and recipe == "multi-entity" else None
            tracks.append(_track(rng, cls, size, radius, aspect, looks[k], angles[k], pulse, regions[k]))
        score = _overlap(tracks, seconds, front)
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
    return ClipPlan(seed, index, size, float(seconds), recipe, tuple(tracks), tuple(sources), sizes)


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
                box = mask_box(*shape_mask(CLASSES[track.cls].name, cx, cy, r, angle, plan.size, track.aspect))
                if box is not None:
                    boxes.append(box)
                    labels.append(CLASSES[track.cls].name)
        frames.append({"t": t, "boxes": boxes, "scenario": plan.scenario, "labels": labels})
    tags = [plan.scenario] + (["cross-event"] if plan.recipe == "cross-event" else [])
    tags += ["background"] if any(s["label"] == BACKGROUND for s in segments) else []
    return {"label": CLASSES[longest.cls].name, "segments": segments, "frames": frames, "tags": tags}
