"""The AVE authors' precomputed-feature folder (Tian et al., ECCV 2018): reader and writer.

Layout (the authors' ``data/`` folder; HDF5 key ``avadataset`` unless said otherwise)::

    Annotations.txt                  one sample per non-empty line: row i of every file is sample i
    visual_feature.h5   (N, 10, h, w, C) float32, channels last. The authors': (N, 10, 7, 7, 512),
                        VGG-19 pool5 at 224 px averaged over the 16 frames of each second
    audio_feature.h5    (N, 10, C): the authors' 128-D VGGish embedding of each second;
                        (N, 10, m, n, C) for an audio encoder whose output is a map
    labels.h5           (N, 10, K) one-hot per second, background last
    {train,val,test}_order.h5        key ``order``: int64 rows
    visual_feature_noisy.h5, audio_feature_noisy.h5, labels_noisy.h5   optional weak negatives

:class:`AVEFeatures` serves such a folder through the interface of
:class:`~avloc.data.cache.FeatureCache`: steps are the ten 1-s segments (fps 1, times
``k + 0.5`` s), maps come back channels first, ``(T, C, h, w)`` and ``(T, C, m, n)`` (a 128-D
audio vector as ``(T, 128, 1, 1)``). Ids follow :func:`avloc.data.formats.ave.sample_id`
(``"0026-VWi2ENBuTbw"``, the row first); the weak negatives are ``"noisy-000"``, ... and are
served only when all three ``*_noisy.h5`` files are present (the authors' ``labels_noisy.h5``
is ``(M, 29)``, every row background).

Folders written by avloc (:func:`write_ave_folder`, ``avloc extract --format ave``) carry
extras the authors' code never reads: ``visual_feature.h5`` attributes ``meta`` (the
:class:`~avloc.data.cache.CacheMeta` JSON) and ``frames_per_second``, and a dataset ``ids``
(the source records' ids, under which rows can be read too). Without them the files are taken
for the authors' (:data:`AUTHORS_META`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np

from avloc.atomic import atomic_path
from avloc.audio import MelConfig
from avloc.data.formats.ave import (
    ANNOTATIONS,
    FEATURE_KEY,
    ORDER_KEY,
    SECONDS,
    SPLITS,
    AVESample,
    ave_classes,
    format_annotations,
    open_h5,
    read_annotations,
    read_h5,
    sample_id,
    segment_labels,
)
from avloc.data.cache import CacheMeta, ClipFeatures
from avloc.data.manifest import ClipRecord
from avloc.types import AvlocError

VISUAL_FILE, AUDIO_FILE, LABELS_FILE = "visual_feature.h5", "audio_feature.h5", "labels.h5"
NOISY_FILES = ("visual_feature_noisy.h5", "audio_feature_noisy.h5", "labels_noisy.h5")
ORDER_FILES = tuple(f"{name}_order.h5" for name in SPLITS)
LAYOUT_FILES = (ANNOTATIONS, VISUAL_FILE, AUDIO_FILE, LABELS_FILE, *ORDER_FILES)
AUTHORS_FRAMES_PER_SECOND = 16
AUTHORS_META = CacheMeta(
    visual_encoder="vgg19",
    visual_weights="ave-authors-precomputed: VGG-19 (ImageNet) pool5, mean of 16 frames per second",
    audio_encoder="vggish-embed",
    audio_weights="ave-authors-precomputed: VGGish (AudioSet) embedding",
    fps=1.0,
    size=224,
    sample_rate=16000,
    audio_window=1.0,
    mel=json.dumps(asdict(MelConfig()), sort_keys=True),  # VGGish's front end
    avloc_version="none (the AVE authors' files)",
)
_LAYOUTS = {VISUAL_FILE: ((5,), "(N, 10, h, w, C)"), AUDIO_FILE: ((3, 5), "(N, 10, C) or (N, 10, m, n, C)")}


def noisy_id(index: int) -> str:
    """The id of the ``index``-th weak negative."""
    return f"noisy-{index:03d}"


def noisy_labels(folder: str | os.PathLike, num_classes: int) -> np.ndarray | None:
    """``labels_noisy.h5`` when all three ``*_noisy.h5`` files are in ``folder`` (else None), checked.

    Accepts ``(M, K)`` (the authors') or ``(M, 10, K)``; every row must be one-hot background
    (the last of the ``num_classes`` classes).
    """
    paths = [Path(folder) / name for name in NOISY_FILES]
    if not all(path.is_file() for path in paths):
        return None
    labels = read_h5(paths[2], FEATURE_KEY)
    if labels.ndim not in (2, 3) or not len(labels) or labels.shape[-1] != num_classes or (
            labels.ndim == 3 and labels.shape[1] != SECONDS):
        raise AvlocError(f"{paths[2]}: expected (M, {num_classes}) or (M, {SECONDS}, {num_classes}) labels, "
                         f"got shape {labels.shape}")
    if not ((labels.sum(-1) == 1) & (labels[..., -1] == 1)).all():
        raise AvlocError(f"{paths[2]}: every weak negative must be labelled background (one-hot, last class)")
    return labels


class AVEFeatures:
    """Read-only access to an AVE feature folder with the interface of ``FeatureCache``.

    Args:
        folder: the folder, or its ``visual_feature.h5``. Shapes and row counts are checked
            against ``Annotations.txt`` at once; arrays are read lazily, one clip at a time.
    """

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        if folder.name == VISUAL_FILE and not folder.is_dir():
            folder = folder.parent
        if not folder.is_dir():
            raise AvlocError(f"{folder}: no such AVE feature folder")
        self.folder = folder
        self.path = folder / VISUAL_FILE
        samples = read_annotations(folder / ANNOTATIONS)
        self._files = [(folder / VISUAL_FILE, folder / AUDIO_FILE)]
        self._shapes = shapes = _check_files(self._files[0], len(samples), f"{ANNOTATIONS} has {len(samples)} samples")
        self.meta, self.frames_per_second, stored = _provenance(self.path, len(samples))
        own = [sample_id(row, sample) for row, sample in enumerate(samples)]
        self.source_ids = tuple(own if stored is None else stored)
        self._rows: dict[str, tuple[int, int]] = {}
        self._index(own, 0)
        self._index(self.source_ids, 0)
        negatives = noisy_labels(folder, len(ave_classes(samples)))
        if negatives is not None:
            self._files.append((folder / NOISY_FILES[0], folder / NOISY_FILES[1]))
            _check_files(self._files[1], len(negatives), f"{NOISY_FILES[2]} has {len(negatives)} rows", like=shapes)
            own += [noisy_id(i) for i in range(len(negatives))]
            self._index(own[len(samples):], 1)
        self.ids = tuple(own)
        self._h5: dict[Path, h5py.File] = {}
        self._pid: int | None = None

    def _index(self, ids: Sequence[str], files: int) -> None:
        for row, clip_id in enumerate(ids):
            if self._rows.setdefault(clip_id, (files, row)) != (files, row):
                raise AvlocError(f"{self.path}: id {clip_id!r} names two rows")

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self._rows

    def __len__(self) -> int:
        return len(self.ids)

    def num_steps(self, clip_id: str) -> int:
        self._locate(clip_id)
        return SECONDS

    def _locate(self, clip_id: str) -> tuple[int, int]:
        try:
            return self._rows[clip_id]
        except KeyError:
            raise AvlocError(f"{self.path}: no features for clip {clip_id!r}") from None

    def _dataset(self, path: Path) -> h5py.Dataset:
        # h5py handles must not cross fork(): reopen in every DataLoader worker.
        if self._pid != os.getpid():
            self._h5 = {}
            self._pid = os.getpid()
        if path not in self._h5:
            self._h5[path] = h5py.File(path, "r")
        return self._h5[path][FEATURE_KEY]

    def read(self, clip_id: str, start: int = 0, length: int | None = None) -> ClipFeatures:
        """Features of seconds ``[start, start + length)`` (the whole clip by default)."""
        files, row = self._locate(clip_id)
        stop = SECONDS if length is None else min(start + length, SECONDS)
        visual = self._dataset(self._files[files][0])[row, start:stop]  # (T, h, w, C)
        audio = self._dataset(self._files[files][1])[row, start:stop]  # (T, C) or (T, m, n, C)
        return ClipFeatures(
            visual=_channels_first(visual),
            audio=_channels_first(audio),
            times=np.arange(start, start + len(visual), dtype=np.float64) + 0.5,  # fps 1: centre of each second
        )

    def describe(self) -> str:
        """One line: shapes, rows and weak negatives (for ``avloc datasets check``)."""
        negatives = len(self.ids) - len(self.source_ids)
        return (f"features: {VISUAL_FILE} {self._shapes[0]}, {AUDIO_FILE} {self._shapes[1]}, one row per annotation; "
                f"weak negatives: {negatives or 'none'}; {self.meta.visual_encoder} ({self.meta.visual_weights}) + "
                f"{self.meta.audio_encoder} ({self.meta.audio_weights})")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_h5": {}, "_pid": None}


def _channels_first(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        return x[:, :, None, None]  # (T, C) -> (T, C, 1, 1)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (T, h, w, C) -> (T, C, h, w)


def _channels_last(x: np.ndarray, vector: bool) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    if vector and x.shape[-2:] == (1, 1):
        return x[:, :, 0, 0]  # (T, C, 1, 1) -> (T, C)
    return x.transpose(0, 2, 3, 1)  # (T, C, h, w) -> (T, h, w, C)


def _shape(path: Path) -> tuple[int, ...]:
    if not path.is_file():
        raise AvlocError(f"{path}: no such file")
    with open_h5(path, FEATURE_KEY) as dataset:
        return dataset.shape


def _check_files(files: tuple[Path, Path], rows: int, what: str,
                 like: tuple[tuple[int, ...], ...] | None = None) -> tuple[tuple[int, ...], ...]:
    """Shapes of a (visual, audio) pair of feature files; refuses a bad layout or row count."""
    shapes = []
    for index, path in enumerate(files):
        shape = _shape(path)
        ndims, layout = _LAYOUTS[VISUAL_FILE if index == 0 else AUDIO_FILE]
        if len(shape) not in ndims or shape[1] != SECONDS:
            raise AvlocError(f"{path}: expected {layout} features, got shape {shape}")
        if shape[0] != rows:
            raise AvlocError(f"{path}: {shape[0]} rows, but {what} (row i is sample i)")
        if like is not None and shape[1:] != like[index][1:]:
            raise AvlocError(f"{path}: shape {shape} does not match the main features' {like[index]}")
        shapes.append(shape)
    return tuple(shapes)


def _provenance(path: Path, rows: int) -> tuple[CacheMeta, int, tuple[str, ...] | None]:
    """``(meta, frames per second, source ids)`` of a ``visual_feature.h5``: avloc's extras or the authors'."""
    with h5py.File(path, "r") as h5:
        if "meta" not in h5.attrs:
            return AUTHORS_META, AUTHORS_FRAMES_PER_SECOND, None
        try:
            meta = CacheMeta.from_json(h5.attrs["meta"])
            frames = int(h5.attrs["frames_per_second"])
            ids = tuple(value.decode() for value in h5["ids"][()])
        except (KeyError, TypeError, ValueError) as error:
            raise AvlocError(f"{path}: broken avloc metadata ({error})") from None
    if len(ids) != rows:
        raise AvlocError(f"{path}: {len(ids)} ids for {rows} rows")
    return meta, frames, ids


def record_sample(record: ClipRecord) -> AVESample:
    """The ``Annotations.txt`` line of a record: its label over the whole seconds its segments of that label span.

    No segments: the whole clip; segments but none with the record's label: the empty event
    ``[0, 0)``. An AVE record (:func:`avloc.data.sources.load_dataset`) gives its line back.
    """
    spans = [s for s in record.segments if s.label == record.label]
    if spans:
        start, end = math.floor(min(s.start for s in spans)), math.ceil(max(s.end for s in spans))
    else:
        start, end = (0, 0) if record.segments else (0, SECONDS)
    return AVESample(record.label, record.video.stem.replace("&", "_"), "good", min(start, SECONDS),
                     min(end, SECONDS))


def write_ave_folder(
    out: str | os.PathLike,
    samples: Sequence[AVESample],
    ids: Sequence[str],
    split: dict[str, np.ndarray],
    features: Callable[[str], ClipFeatures],
    meta: CacheMeta,
    frames_per_second: int,
) -> Path:
    """Write the AVE layout into the folder ``out``; returns ``out``.

    Row i holds ``samples[i]`` and ``features(ids[i])`` (ten 1-s steps, channels first).
    ``labels.h5`` is computed from ``samples`` (:func:`avloc.data.formats.ave.segment_labels`), the
    order files hold ``split``. Every file goes to a temporary name first; they are renamed
    into place once all are written.
    """
    out, samples, ids = Path(out), list(samples), list(ids)
    if not ids or len(ids) != len(samples):
        raise AvlocError(f"{out}: {len(ids)} clips for {len(samples)} annotation lines (need at least one)")
    with contextlib.ExitStack() as stack:
        tmp = {name: stack.enter_context(atomic_path(out / name)) for name in LAYOUT_FILES}
        with h5py.File(tmp[VISUAL_FILE], "w") as visual_h5, h5py.File(tmp[AUDIO_FILE], "w") as audio_h5:
            visual_h5.attrs["meta"] = meta.to_json()
            visual_h5.attrs["frames_per_second"] = frames_per_second
            visual_h5.create_dataset("ids", data=ids, dtype=h5py.string_dtype())
            visual = audio = None
            for row, clip_id in enumerate(ids):
                clip = features(clip_id)
                v, a = _channels_last(clip.visual, vector=False), _channels_last(clip.audio, vector=True)
                if visual is None:
                    visual = visual_h5.create_dataset(FEATURE_KEY, (len(ids), *v.shape), np.float32)
                    audio = audio_h5.create_dataset(FEATURE_KEY, (len(ids), *a.shape), np.float32)
                if v.shape[0] != SECONDS or (v.shape, a.shape) != (visual.shape[1:], audio.shape[1:]):
                    raise AvlocError(f"{out}: clip {clip_id!r} has features {v.shape} + {a.shape}, expected "
                                     f"{visual.shape[1:]} + {audio.shape[1:]} (channels last)")
                visual[row], audio[row] = v, a
        with h5py.File(tmp[LABELS_FILE], "w") as h5:
            h5.create_dataset(FEATURE_KEY, data=segment_labels(samples, ave_classes(samples)))
        for name, file in zip(SPLITS, ORDER_FILES):
            with h5py.File(tmp[file], "w") as h5:
                h5.create_dataset(ORDER_KEY, data=np.asarray(split[name], dtype=np.int64))
        tmp[ANNOTATIONS].write_text(format_annotations(samples), encoding="utf-8")
    return out
