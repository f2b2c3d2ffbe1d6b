"""Training and evaluation samples: windows of T steps, from the feature cache or raw video.

Training serves a random window of ``steps`` consecutive steps of a clip (default 4 = one
second at 4 fps, as in the STM paper); evaluation (``steps=None``) serves whole clips. Both
sources label every step with :meth:`ClipRecord.label_at` at the step's time.

Sample dictionaries:

- from the cache: ``visual (T, C, h, w)``, ``audio (T, C, m, n)``
- from video:     ``frames (T, 3, H, W)``, ``logmel (T, 1, M, N)``
- always:         ``id``, ``times (T,)``, ``label ()`` (video level), ``step_labels (T,)``

Training augmentation (``augment=True``; the STM paper, section 4.1): every frame of a window
is resized by a scale of 1.1 and cropped back to its size at one random position, the same
for every step of the window (the memory compares steps, so they must stay aligned). From
videos the frames are decoded straight at the larger size; from the cache, the visual maps
``(C, h, w)`` are resized bilinearly (at least one cell larger) and cropped back to ``(h, w)``,
the nearest equivalent on features of frames that were not augmented. Audio is never
augmented. The crop of sample i is a function of ``(window_seed, i)``, as its window.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from avloc.audio import MelConfig, log_mel
from avloc.data.cache import FeatureCache
from avloc.data.manifest import ClipRecord
from avloc.io.decode import probe, read_clip
from avloc.types import AvlocError

log = logging.getLogger(__name__)


def _targets(record: ClipRecord, classes: Sequence[str], times: torch.Tensor) -> dict:
    step_labels = [classes.index(record.label_at(float(t))) for t in times]
    return {
        "id": record.id,
        "times": times,
        "label": torch.tensor(classes.index(record.label)),
        "step_labels": torch.tensor(step_labels),
    }


def _window_start(num_steps: int, steps: int | None, random_window: bool, seed: int | None, index: int) -> int:
    """First step of sample ``index``'s window: from ``(seed, index)`` alone, or from torch's RNG when seed is None.

    A seeded start does not depend on which process (DDP rank, DataLoader worker) draws it, nor
    on a resume.
    """
    if steps is None or not random_window:
        return 0
    if seed is None:
        return int(torch.randint(0, num_steps - steps + 1, ()).item())
    return int(np.random.default_rng((seed % 2**64, index)).integers(0, num_steps - steps + 1))


AUGMENT_SCALE = 1.1  # the STM paper's resize before the random crop


def scaled_size(size: int, scale: float = AUGMENT_SCALE) -> int:
    """``size`` resized by ``scale``, rounded, and at least one pixel (cell) larger."""
    return max(round(size * scale), size + 1)


def _crop_offset(room: tuple[int, int], seed: int | None, index: int) -> tuple[int, int]:
    """Top-left corner of sample ``index``'s crop, ``0..room`` on each side: from ``(seed, index)``
    alone (a stream apart from the window start's), or from torch's RNG when seed is None."""
    if seed is None:
        return tuple(int(torch.randint(0, r + 1, ()).item()) for r in room)
    rng = np.random.default_rng((seed % 2**64, index, 1))
    return tuple(int(rng.integers(0, r + 1)) for r in room)


def scale_crop(maps: torch.Tensor, top: int, left: int, scale: float = AUGMENT_SCALE) -> torch.Tensor:
    """Resize ``(T, C, h, w)`` maps bilinearly to :func:`scaled_size` and crop ``(h, w)`` at ``(top, left)``."""
    h, w = maps.shape[-2:]
    big = F.interpolate(maps, size=(scaled_size(h, scale), scaled_size(w, scale)), mode="bilinear",
                        align_corners=False)  # (T, C, h, w) -> (T, C, h', w')
    return big[..., top : top + h, left : left + w]  # (T, C, h', w') -> (T, C, h, w)


class FeatureWindows(Dataset):
    """Windows of cached encoder features.

    Args:
        cache: the feature cache holding every record's features.
        records: the clips to serve (e.g. one split of a NativeDataset).
        classes: the class list (labels are indices into it).
        steps: window length in steps; None serves whole clips.
        random_window: draw the window start at random (training) or take the first window.
        augment: resize the visual maps x1.1 and crop them back at random (training; see the
            module docstring); default False.

    Attributes:
        window_seed: None draws random window starts (and crops) from torch's global RNG; an
            int makes sample i's window and crop a function of ``(window_seed, i)`` (the
            training loop sets it every epoch).
    """

    def __init__(
        self,
        cache: FeatureCache,
        records: Sequence[ClipRecord],
        classes: Sequence[str],
        steps: int | None = 4,
        random_window: bool = True,
        augment: bool = False,
    ):
        missing = [r.id for r in records if r.id not in cache]
        if missing:
            raise AvlocError(f"{cache.path}: no features for {len(missing)} clips, e.g. {missing[0]!r}")
        self.cache = cache
        self.classes = list(classes)
        self.steps = steps
        self.random_window = random_window
        self.augment = augment
        self.window_seed: int | None = None
        self.records = [r for r in records if steps is None or cache.num_steps(r.id) >= steps]
        if len(self.records) < len(records):
            short = [r.id for r in records if cache.num_steps(r.id) < steps]
            log.warning("using %d of %d clips: %d are shorter than a window of %d steps (e.g. %r), lower --steps "
                        "to use them", len(self.records), len(records), len(short), steps, short[0])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        start = _window_start(self.cache.num_steps(record.id), self.steps, self.random_window, self.window_seed, index)
        features = self.cache.read(record.id, start, self.steps)
        sample = _targets(record, self.classes, torch.from_numpy(features.times))
        visual = torch.from_numpy(features.visual)  # (T, C, h, w)
        if self.augment:
            h, w = visual.shape[-2:]
            top, left = _crop_offset((scaled_size(h) - h, scaled_size(w) - w), self.window_seed, index)
            visual = scale_crop(visual, top, left)
        sample["visual"] = visual
        sample["audio"] = torch.from_numpy(features.audio)
        return sample


class VideoWindows(Dataset):
    """Windows of decoded frames and log-mel spectrograms, straight from the videos.

    Args:
        records, classes, steps, random_window, augment: as for :class:`FeatureWindows`
            (``window_seed`` too); ``augment`` decodes the frames x1.1 larger and crops them back.
        fps: steps per second.
        size: frame size in pixels (square resize), or None for the original size.
        mel: log-mel settings (sample rate included).
        audio_window: seconds of audio per step (default 1 / fps).
        durations: ``{id: seconds}`` of videos already probed (``avloc train`` looks at every
            video before the first epoch, :mod:`avloc.data.usable`); the others are probed when
            first served.
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        classes: Sequence[str],
        steps: int | None = 4,
        random_window: bool = True,
        fps: float = 4.0,
        size: int | None = 256,
        mel: MelConfig = MelConfig(),
        audio_window: float | None = None,
        augment: bool = False,
        durations: dict[str, float] | None = None,
    ):
        self.records = list(records)
        self.classes = list(classes)
        self.steps = steps
        self.random_window = random_window
        self.augment = augment
        self.fps = fps
        self.size = size
        self.mel = mel
        self.audio_window = audio_window
        self.window_seed: int | None = None
        self._durations: dict[str, float] = dict(durations or {})

    def __len__(self) -> int:
        return len(self.records)

    def _num_steps(self, record: ClipRecord) -> int:
        if record.id not in self._durations:
            self._durations[record.id] = probe(record.video).duration
        return math.floor(self._durations[record.id] * self.fps + 1e-6)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        num_steps = self._num_steps(record)
        if self.steps is not None and num_steps < self.steps:
            raise AvlocError(f"{record.video}: {num_steps} steps, shorter than a window of {self.steps}")
        first = _window_start(num_steps, self.steps, self.random_window, self.window_seed, index)
        # Window starts fall on the step grid of the whole clip, so times match the cache's.
        start = first / self.fps
        end = None if self.steps is None else (first + self.steps) / self.fps
        size = self.size
        if self.augment and self.size is not None:
            size = scaled_size(self.size)  # decoded once at the larger size, as the paper resizes
        clip = read_clip(
            record.video,
            fps=self.fps,
            size=size,
            sample_rate=self.mel.sample_rate,
            start=start,
            end=end,
            audio_window=self.audio_window,
        )
        frames = clip.frames  # (T, 3, H, W)
        if self.augment:
            if self.size is None:  # original size: resize it x1.1 and crop back
                h, w = frames.shape[-2:]
                top, left = _crop_offset((scaled_size(h) - h, scaled_size(w) - w), self.window_seed, index)
                frames = scale_crop(frames, top, left).clamp(0.0, 1.0)
            else:
                room = scaled_size(self.size) - self.size
                top, left = _crop_offset((room, room), self.window_seed, index)
                frames = frames[..., top : top + self.size, left : left + self.size]  # (T, 3, s', s') -> (T, 3, s, s)
        sample = _targets(record, self.classes, clip.times)
        sample["frames"] = frames
        sample["logmel"] = log_mel(clip.segments, self.mel)
        return sample
