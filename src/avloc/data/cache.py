"""The feature cache: per-clip encoder feature maps in one HDF5 file, and :func:`encode_clip`,
which makes a clip's maps (for the cache, or on the fly where there is none).

Layout of ``FILE.h5``::

    attrs                    format, format_version and the extraction metadata (CacheMeta)
    clips/<quoted id>/       one group per clip (the id percent-quoted: HDF5 names cannot hold '/')
        visual   (T, C, h, w) float16 or float32 (CacheMeta.storage)
        audio    (T, C, m, n) float16 or float32
        times    (T,) float64  seconds of every step

Storage (``CacheMeta.storage``, ``avloc extract --storage``; reads always return float32):

- ``rounded`` (the default): float32 maps whose significand is rounded (to nearest, ties to
  even) to :data:`ROUNDED_BITS` = 12 stored bits, 13 significant bits with the implicit one:
  relative error <= 2**-13 = 1.2e-4, a quarter of float16's, over float32's whole range. The
  11 dropped bits are zeros, so after HDF5's byte shuffle gzip (level 4) removes them, chunked
  as below. 0.31-0.32 of the float32 size for the default encoders, with every number of
  ``avloc eval`` within 3e-5 of the exact maps' on the demo clips and the 300-clip benchmark
  (float16 moved one near-tied pointing frame: 0.0068); reads need no conversion, but a window
  inflates twice float16's bytes (2.95 ms against 1.9).
- ``float16``: half-precision maps, chunked so that a training window reads whole chunks and
  nothing else (one step per chunk when a step's map is at least :data:`CHUNK_BYTES`, else as
  many steps as make one chunk), each chunk gzip-compressed at level 1. 0.26-0.27 of the
  float32 size for the default encoders (their BatchNorm + ReLU maps are about half zeros, and
  peaked at 14); ``bench/cache_size.py`` measured the choice against lzf, shuffle and other
  levels, and its cost: a window read takes 2-3x the CPU of a float32 read (the
  decompression). Values keep 11 significant bits (relative error <= 2**-11 = 4.9e-4); maps
  beyond float16's range (|x| > 65504) are refused at extraction with a one-line error (use
  ``rounded`` or ``float32``); values under 6.1e-5 lose relative precision (absolute error
  <= 3e-8).
- ``float32``: exact maps, contiguous and uncompressed, as every format-1 cache holds (those
  carry no storage field and are read as ``float32``, unchanged).

Extraction is resumable and crash-safe because the HDF5 file is never written in place:
finished clips go to ``FILE.h5.parts/<quoted id>.npz`` (each written to a temporary name and
renamed), and once every clip of the dataset has a part the parts and any previous
``FILE.h5`` are merged into a temporary file that is renamed onto ``FILE.h5``. A killed run
leaves at worst a stray temporary file, never a corrupt entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

import h5py
import numpy as np
import torch

from avloc.atomic import atomic_path
from avloc.audio import MelConfig, log_mel
from avloc.types import AvlocError

if TYPE_CHECKING:  # hints only: the cache does not need the decoder or the encoders to read
    from avloc.io.decode import AVStep
    from avloc.models.encoders import Encoder

FORMAT = "avloc-features"
FORMAT_VERSION = 2  # 2: CacheMeta.storage; maps may be rounded or float16, chunked and compressed (1: float32 only)
STORAGES = ("rounded", "float16", "float32")
DEFAULT_STORAGE = "rounded"
ROUNDED_BITS = 12  # significand bits the "rounded" storage keeps of float32's 23
CHUNK_BYTES = 32 * 1024  # smallest chunk worth a gzip stream and an index entry
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


@dataclass(frozen=True)
class CacheMeta:
    """How the features in a cache were made; two caches are compatible iff these match."""

    visual_encoder: str
    visual_weights: str
    audio_encoder: str
    audio_weights: str
    fps: float
    size: int | None
    sample_rate: int
    audio_window: float
    mel: str  # the MelConfig as sorted JSON
    avloc_version: str
    storage: str = "float32"  # how the maps lie on disk (STORAGES); format-1 caches have no field: float32

    def differences(self, other: CacheMeta) -> list[str]:
        """Fields that differ, ignoring the library version that wrote them and the storage
        (the same features, read as float32 either way)."""
        mine, theirs = asdict(self), asdict(other)
        return [key for key in mine if key not in ("avloc_version", "storage") and mine[key] != theirs[key]]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CacheMeta:
        return cls(**json.loads(text))


@dataclass
class ClipFeatures:
    """Encoder outputs of one clip (or of a window of it)."""

    visual: np.ndarray  # (T, C, h, w)
    audio: np.ndarray  # (T, C, m, n)
    times: np.ndarray  # (T,)


def clip_key(clip_id: str) -> str:
    """HDF5/file-system safe name of a clip id."""
    return quote(clip_id, safe="")


@torch.inference_mode()
def encode_clip(
    steps: Iterator[AVStep],
    visual_encoder: Encoder,
    audio_encoder: Encoder,
    mel: MelConfig,
    batch_size: int,
    device: str | torch.device,
) -> ClipFeatures:
    """Encode a stream of steps ``batch_size`` at a time (bounded memory for any length)."""
    parts = []
    while batch := list(islice(steps, batch_size)):
        frames = torch.stack([step.frame for step in batch]).to(device)  # (B, 3, H, W)
        segments = torch.stack([step.segment for step in batch]).to(device)  # (B, L)
        parts.append(encode_batch(frames, segments, visual_encoder, audio_encoder, mel,
                                  np.array([step.time for step in batch], dtype=np.float64)))
    return join_features(parts)


@torch.inference_mode()
def encode_batch(frames: torch.Tensor, segments: torch.Tensor, visual_encoder: Encoder, audio_encoder: Encoder,
                 mel: MelConfig, times: np.ndarray) -> ClipFeatures:
    """The features of consecutive steps: ``frames (B, 3, H, W)`` and ``segments (B, L)``, on
    the encoders' device, at ``times (B,)``; maps back on the CPU as float32."""
    return ClipFeatures(visual=visual_encoder(frames).float().cpu().numpy(),  # (B, C, h, w)
                        audio=audio_encoder(log_mel(segments, mel)).float().cpu().numpy(),  # (B, C, m, n)
                        times=times)


def join_features(parts: Sequence[ClipFeatures]) -> ClipFeatures:
    """Consecutive parts of one clip as one; no parts: a clip of no steps."""
    if not parts:
        return ClipFeatures(np.empty((0,)), np.empty((0,)), np.empty((0,)))
    return ClipFeatures(
        visual=np.concatenate([part.visual for part in parts]),  # (T, C, h, w)
        audio=np.concatenate([part.audio for part in parts]),  # (T, C, m, n)
        times=np.concatenate([part.times for part in parts]).astype(np.float64),
    )


class FeatureCache:
    """Read-only access to a finished ``FILE.h5``; the file is opened lazily in each process."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise AvlocError(f"{self.path}: no such feature cache (make one with `avloc extract`)")
        try:
            with h5py.File(self.path, "r") as h5:
                if h5.attrs.get("format") != FORMAT:
                    raise AvlocError(f"{self.path}: not an avloc feature cache")
                if "meta" not in h5.attrs or not isinstance(h5.get("clips"), h5py.Group):
                    raise AvlocError(f"{self.path}: a broken feature cache (no extraction metadata or no clips)")
                self.meta = _parse_meta(self.path, h5.attrs["meta"])
                self.ids = tuple(unquote(key) for key in h5["clips"])
                self._id_set = frozenset(self.ids)
        except OSError as error:
            raise AvlocError(f"{self.path}: cannot read the feature cache ({error})") from None
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._steps: dict[str, int] = {}  # clips whose arrays were checked: their step count
        self._held: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # whole clips kept in memory, as stored
        self._held_budget = 0  # bytes hold() allows
        self._held_bytes = 0

    def hold(self, budget_mb: float) -> None:
        """Keep whole clips in memory after their first read, up to ``budget_mb`` MiB of them as
        stored (float32 or float16, as the cache's storage): a training run reads every clip once a epoch, and
        later epochs then slice windows from memory instead of decompressing them again. Clips
        beyond the budget are read from the file as before. Each DataLoader worker holds its own."""
        if not budget_mb >= 0:
            raise ValueError(f"budget_mb must be >= 0, got {budget_mb}")
        self._held_budget = int(budget_mb * 2**20)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self._id_set

    def __len__(self) -> int:
        return len(self.ids)

    def _file(self) -> h5py.File:
        # h5py handles must not cross fork(): reopen in every DataLoader worker.
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def num_steps(self, clip_id: str) -> int:
        if clip_id not in self._steps:
            self._arrays(clip_id)
        return self._steps[clip_id]

    def _arrays(self, clip_id: str) -> dict[str, h5py.Dataset]:
        """The clip's three datasets, checked once: numbers, (T, C, h, w) maps, T >= 1 the same for all.

        A window read opens each dataset by its path (h5py's group objects cost more than the
        read of a window itself), and a clip is checked on its first read only.
        """
        if clip_id not in self._id_set:
            raise AvlocError(f"{self.path}: no features for clip {clip_id!r}")
        h5, key = self._file(), clip_key(clip_id)
        if clip_id in self._steps:
            return {name: h5[f"clips/{key}/{name}"] for name in ("visual", "audio", "times")}
        group = h5["clips"].get(key)
        if not isinstance(group, h5py.Group):
            raise AvlocError(f"{self.path}: no features for clip {clip_id!r}")
        arrays = {name: group.get(name) for name in ("visual", "audio", "times")}
        where = f"{self.path}: clip {clip_id!r}"
        for name, array in arrays.items():
            if not isinstance(array, h5py.Dataset) or array.dtype.kind not in "fiu":
                raise AvlocError(f"{where}: no numeric {name!r} array")
        steps = arrays["times"].shape[0] if arrays["times"].ndim == 1 else -1
        for name in ("visual", "audio"):
            if arrays[name].ndim != 4 or arrays[name].shape[0] != steps or steps < 1:
                raise AvlocError(f"{where}: {name} has shape {arrays[name].shape}, times {arrays['times'].shape}; "
                                 "expected (T, C, h, w) maps and (T,) times with T >= 1")
        self._steps[clip_id] = steps
        return arrays

    def read(self, clip_id: str, start: int = 0, length: int | None = None) -> ClipFeatures:
        """Features of steps ``[start, start + length)`` (the whole clip by default); maps as
        float32 whatever the storage."""
        stop = None if length is None else start + length
        held = self._held.get(clip_id) or self._hold_clip(clip_id)
        if held is not None:
            visual, audio, times = (array[start:stop] for array in held)
            return ClipFeatures(_as_float32(visual), _as_float32(audio), times)
        arrays = self._arrays(clip_id)
        features = ClipFeatures(_as_float32(arrays["visual"][start:stop]), _as_float32(arrays["audio"][start:stop]),
                                arrays["times"][start:stop])
        for name in ("visual", "audio", "times"):
            if not np.isfinite(getattr(features, name)).all():
                raise AvlocError(f"{self.path}: clip {clip_id!r}: {name} holds NaN or infinite values")
        return features

    def _hold_clip(self, clip_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Read the whole clip into memory (checked once) if it fits the budget; None otherwise."""
        if self._held_bytes >= self._held_budget:
            return None
        arrays = self._arrays(clip_id)
        size = sum(array.size * array.dtype.itemsize for array in arrays.values())
        if self._held_bytes + size > self._held_budget:
            return None
        held = tuple(arrays[name][()] for name in ("visual", "audio", "times"))
        for name, array in zip(("visual", "audio", "times"), held):
            if not np.isfinite(array).all():
                raise AvlocError(f"{self.path}: clip {clip_id!r}: {name} holds NaN or infinite values")
        self._held[clip_id] = held
        self._held_bytes += size
        return held

    def __getstate__(self) -> dict:  # a worker process starts with an empty hold of the same budget
        return {**self.__dict__, "_h5": None, "_pid": None, "_held": {}, "_held_bytes": 0}


class PartsStore:
    """The per-clip parts of an extraction in progress: ``FILE.h5.parts/``."""

    def __init__(self, out: str | os.PathLike, meta: CacheMeta):
        self.out = Path(out)
        self.dir = self.out.with_name(self.out.name + ".parts")
        self.meta = meta
        check_storage(meta.storage)
        self._check_compatible()

    def _check_compatible(self) -> None:
        sources = [(self.dir / "meta.json", lambda p: CacheMeta.from_json(p.read_text()))]
        sources.append((self.out, _read_meta))
        for path, read in sources:
            if path.is_file():
                differences = self.meta.differences(read(path))
                if differences:
                    raise AvlocError(
                        f"{path}: was extracted with different settings ({', '.join(differences)}); "
                        "choose another --out or delete it"
                    )

    def finished_ids(self) -> set[str]:
        """Ids already in ``FILE.h5`` or in a finished part."""
        done = set(FeatureCache(self.out).ids) if self.out.is_file() else set()
        if self.dir.is_dir():
            done.update(unquote(p.stem) for p in self.dir.glob("*.npz") if not p.name.startswith("."))
        return done

    def write(self, clip_id: str, features: ClipFeatures) -> None:
        """Store one clip's features atomically (its maps already in the storage's dtype, checked)."""
        visual = stored_maps(features.visual, self.meta.storage, f"clip {clip_id!r}: visual")
        audio = stored_maps(features.audio, self.meta.storage, f"clip {clip_id!r}: audio")
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            with atomic_path(meta_path) as tmp:
                tmp.write_text(self.meta.to_json())
        with atomic_path(self.dir / f"{clip_key(clip_id)}.npz") as tmp:
            np.savez(tmp, visual=visual, audio=audio, times=features.times)

    def has_parts(self) -> bool:
        return self.dir.is_dir() and any(self.dir.glob("*.npz"))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the output's folder (several shards may finish at once)."""
        fd = os.open(self.out.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def merge(self, ids: Iterable[str]) -> Path:
        """Write ``FILE.h5`` holding ``ids`` (sorted) from the old file and the parts, then drop the parts.

        Everything is written in this store's storage, whatever the old file's or a part's.
        """
        old = FeatureCache(self.out) if self.out.is_file() else None
        write_cache(self.out, self.meta, ids, lambda clip_id: self.load(clip_id, old))
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.out

    def load(self, clip_id: str, old: FeatureCache | None) -> ClipFeatures:
        """A clip's features from its part, else from ``old`` (the previous output: any feature
        source with ``in`` and ``read``, e.g. an AVE folder's reader), else a one-line error."""
        part = self.dir / f"{clip_key(clip_id)}.npz"
        if part.is_file():
            with np.load(part) as arrays:
                return ClipFeatures(arrays["visual"], arrays["audio"], arrays["times"])
        if old is not None and clip_id in old:
            return old.read(clip_id)
        raise AvlocError(f"{self.out}: clip {clip_id!r} has no extracted features")


def check_storage(storage: str) -> None:
    """Raise AvlocError unless ``storage`` is one of :data:`STORAGES`."""
    if storage not in STORAGES:
        raise AvlocError(f"unknown feature storage {storage!r}; choose one of {', '.join(STORAGES)}")


def stored_maps(maps: np.ndarray, storage: str, where: str) -> np.ndarray:
    """``(T, C, h, w)`` maps as ``storage`` keeps them: float32, float32 rounded to
    :data:`ROUNDED_BITS` significand bits, or float16 (which refuses values beyond its range)."""
    check_storage(storage)
    if storage == "float32":
        return maps.astype(np.float32, copy=False)
    if storage == "rounded":
        return round_significand(maps, ROUNDED_BITS, where)
    if maps.dtype == np.float16:
        return maps
    peak = float(np.abs(maps).max(initial=0.0))
    if not peak <= FLOAT16_MAX:  # NaN fails too; the reader refuses non-finite maps anyway
        raise AvlocError(f"{where}: maps reach {peak:g}, beyond float16's {FLOAT16_MAX:g}; extract with "
                         "--storage rounded or float32")
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).half().numpy()


def round_significand(maps: np.ndarray, bits: int, where: str) -> np.ndarray:
    """float32 ``maps`` with the significand rounded to ``bits`` of its 23 stored bits (to
    nearest, ties to even; the dropped bits become zeros): relative error <= 2**-(bits + 1).

    Done on the bit patterns: adding half a unit of the last kept bit (less one, plus that bit
    for ties to even) carries into the exponent exactly when rounding up reaches the next power
    of two, so the result is the nearest representable value. Non-finite maps, and finite ones
    that round up beyond float32's range, are refused.
    """
    if not 0 <= bits <= 23:
        raise ValueError(f"bits must be in [0, 23], got {bits}")
    values = np.ascontiguousarray(maps, dtype=np.float32)
    if not np.isfinite(values).all():
        raise AvlocError(f"{where}: maps hold NaN or infinite values")
    if bits == 23:
        return values
    drop = np.uint32(23 - bits)
    pattern = values.view(np.uint32)  # (same shape) the IEEE-754 bits
    last_kept = (pattern >> drop) & np.uint32(1)  # 1 where the kept part is odd: ties go up to even
    half_unit = np.uint32(1) << (drop - np.uint32(1))  # half the value of the last kept bit
    dropped = (np.uint32(1) << drop) - np.uint32(1)  # mask of the bits set to zero
    rounded = (pattern + half_unit - np.uint32(1) + last_kept) & ~dropped
    result = rounded.view(np.float32)  # (same shape) the bits as float32 again
    if not np.isfinite(result).all():
        raise AvlocError(f"{where}: maps reach {float(np.abs(values).max()):g}, which rounds beyond float32's range; "
                         "extract with --storage float32")
    return result


def storage_options(shape: tuple[int, ...], storage: str) -> dict:
    """h5py ``create_dataset`` options of ``(T, ...)`` maps in ``storage``: none for float32
    (contiguous, as format 1); else gzip in chunks of whole steps, one step per chunk down to
    :data:`CHUNK_BYTES`, so that a window of steps decompresses only itself: level 1 for
    float16; for ``rounded`` HDF5's byte shuffle first (it gathers the zeroed low bytes of
    every value) and level 4 (5% smaller than level 1 at 1.4x its write time; reads cost about
    the same: bench/cache_size.py)."""
    if storage == "float32":
        return {}
    step_bytes = (2 if storage == "float16" else 4) * math.prod(shape[1:])
    per_chunk = min(shape[0], max(1, math.ceil(CHUNK_BYTES / max(step_bytes, 1))))
    rounded = storage == "rounded"
    return {"chunks": (per_chunk, *shape[1:]), "compression": "gzip", "compression_opts": 4 if rounded else 1,
            "shuffle": rounded}


def write_cache(out: str | os.PathLike, meta: CacheMeta, ids: Iterable[str],
                features: Callable[[str], ClipFeatures]) -> Path:
    """Write the cache ``out`` (atomically) holding ``ids`` (sorted), each clip's features from
    ``features(id)``, its maps in ``meta.storage``."""
    out = Path(out)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["format"] = FORMAT
        h5.attrs["format_version"] = FORMAT_VERSION
        h5.attrs["meta"] = meta.to_json()
        clips = h5.create_group("clips")
        for clip_id in sorted(ids):
            clip = features(clip_id)
            group = clips.create_group(clip_key(clip_id))
            for name in ("visual", "audio"):
                maps = stored_maps(getattr(clip, name), meta.storage, f"{out}: clip {clip_id!r}: {name}")
                group.create_dataset(name, data=maps, **storage_options(maps.shape, meta.storage))
            group.create_dataset("times", data=clip.times)
    return out


def convert_cache(source: str | os.PathLike, out: str | os.PathLike, storage: str = DEFAULT_STORAGE) -> Path:
    """Write a copy of the cache ``source`` (any format version) to ``out`` with its maps in ``storage``."""
    check_storage(storage)
    cache = FeatureCache(source)
    return write_cache(out, replace(cache.meta, storage=storage), cache.ids, cache.read)


def _as_float32(maps: np.ndarray) -> np.ndarray:
    """Maps of any stored dtype as float32 (through torch: NumPy's float16 conversion is ~15x slower)."""
    if maps.dtype == np.float32:
        return maps
    if maps.dtype == np.float16:
        return torch.from_numpy(maps).float().numpy()
    return maps.astype(np.float32)


def _parse_meta(path: Path, text: str) -> CacheMeta:
    try:
        meta = CacheMeta.from_json(text)
    except (json.JSONDecodeError, TypeError) as error:
        raise AvlocError(f"{path}: broken extraction metadata ({error})") from None
    if meta.storage not in STORAGES:
        raise AvlocError(f"{path}: unknown storage {meta.storage!r} in its metadata (this avloc reads "
                         f"{', '.join(STORAGES)}); a newer avloc wrote it?")
    return meta


def _read_meta(path: Path) -> CacheMeta:
    return FeatureCache(path).meta
