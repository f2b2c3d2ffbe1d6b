"""``avloc extract``: encode every clip of a dataset once and store the feature maps.

Two output formats:

- ``avloc`` (:func:`extract_features`): one step every ``1 / fps`` s into avloc's feature
  cache; see :mod:`avloc.data.cache` for the file layout and why a killed run never leaves a
  corrupt entry.
- ``ave`` (:func:`extract_ave_features`): the AVE authors' layout
  (:mod:`avloc.data.formats.ave_features`), one row per record and ten 1-s segments per row, so that
  the original AVE code can read it. Kill-safe and resumable the same way: finished clips go
  to ``OUT/extract-F-frames-per-second.parts/``; the folder's files are written once every
  clip is done.

Each clip is streamed step by step (``iter_steps``), so memory stays bounded for any
length; steps are encoded in batches. On CUDA the ``avloc`` format's videos are decoded by
DataLoader worker processes ahead of the encoders, into pinned memory
(:func:`avloc.io.prefetch.decoded_chunks`, :class:`avloc.accelerate.Acceleration`); on the CPU in
the calling process, one clip after the other. The dataset may be native or an AVE folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avloc import __version__
from avloc.accelerate import acceleration
from avloc.atomic import make_folder
from avloc.audio import MelConfig, log_mel
from avloc.data.formats.ave import ANNOTATIONS, SECONDS, SPLITS
from avloc.data.formats.ave_features import (
    AUDIO_FILE,
    AUTHORS_FRAMES_PER_SECOND,
    LAYOUT_FILES,
    VISUAL_FILE,
    AVEFeatures,
    record_sample,
    write_ave_folder,
)
from avloc.data.cache import DEFAULT_STORAGE, CacheMeta, ClipFeatures, PartsStore, encode_batch, join_features
from avloc.data.usable import check_video, load_for_videos, record_skipped, usable_clips
from avloc.io.decode import iter_steps, probe, read_audio
from avloc.io.prefetch import DecodeJob, decoded_chunks
from avloc.models.encoders import Encoder, create_encoder, default_weights
from avloc.types import AvlocError, VideoInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractResult:
    """What one ``extract_features`` call did."""

    out: Path
    extracted: int  # clips encoded by this call
    skipped: int  # clips of this shard that were already done
    remaining: int  # clips of other shards still to do (0 once FILE.h5 is complete)
    broken: int = 0  # clips left out because their video cannot be read (``skip_broken``)
    summary: str = ""  # ``skip_broken``: "used N of M clips, K skipped: see FILE"


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) -> ``(I, N)``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise AvlocError(f"bad shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise AvlocError(f"bad shard {text!r}: need 0 <= I < N")
    return index, count


def _prepare(visual: str, audio: str, visual_weights: str | None, audio_weights: str | None, fps: float,
             size: int | None, audio_window: float | None, batch_size: int,
             device: str | torch.device) -> tuple[Encoder, Encoder, MelConfig, CacheMeta]:
    """Check the shared settings; build both encoders (eval mode), the log-mel settings and the metadata."""
    if not (math.isfinite(fps) and fps > 0):
        raise AvlocError(f"--fps must be a positive number, got {fps}")
    if batch_size < 1:
        raise AvlocError(f"--batch-size must be >= 1, got {batch_size}")
    visual_weights = default_weights(visual) if visual_weights is None else visual_weights
    audio_weights = default_weights(audio) if audio_weights is None else audio_weights
    visual_encoder = create_encoder(visual, weights=visual_weights).to(device).eval()
    audio_encoder = create_encoder(audio, weights=audio_weights).to(device).eval()
    if visual_encoder.modality != "visual" or audio_encoder.modality != "audio":
        raise AvlocError(f"--visual must name a visual encoder and --audio an audio encoder, got {visual}, {audio}")
    mel = audio_encoder.mel
    meta = CacheMeta(
        visual_encoder=visual,
        visual_weights=visual_encoder.weights_id,
        audio_encoder=audio,
        audio_weights=audio_encoder.weights_id,
        fps=float(fps),
        size=size,
        sample_rate=mel.sample_rate,
        audio_window=float(audio_window if audio_window is not None else 1.0 / fps),
        mel=json.dumps(asdict(mel), sort_keys=True),
        avloc_version=__version__,
    )
    return visual_encoder, audio_encoder, mel, meta


def probe_with_audio(video: Path) -> VideoInfo:
    """The video's headers; refused in one line when it has no soundtrack to encode."""
    info = probe(video)
    if not info.has_audio:
        raise AvlocError(f"{video}: no audio stream (every step's sound is encoded)")
    return info


def extract_features(
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    visual: str = "small-visual",
    audio: str = "small-audio",
    visual_weights: str | None = None,
    audio_weights: str | None = None,
    fps: float = 4.0,
    size: int | None = 256,
    audio_window: float | None = None,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    skip_broken: bool = False,
    precision: str = "auto",
    storage: str = DEFAULT_STORAGE,
    workers: int | None = None,
) -> ExtractResult:
    """Encode every clip of the dataset at ``dataset`` (native or AVE) into the cache ``out``.

    Clips already in ``out`` (or in its parts folder) are skipped. With ``shard=(i, n)``
    this call encodes clips ``i, i + n, i + 2n, ...`` of the id-sorted list; whichever
    shard finishes last merges everything into ``out``. Weights left None are the encoder's
    default set (:func:`avloc.models.encoders.default_weights`; "random" asks for the random init).

    Every video still to encode is looked at first (:mod:`avloc.data.usable`): the first that
    cannot be read stops the call, or with ``skip_broken`` the unreadable ones (every shard's,
    so that the last shard knows which clips no shard writes) are left out of ``out`` and listed
    in ``<out>.skipped.txt``.

    ``storage`` (:mod:`avloc.data.cache`): ``rounded`` (default; 13 significant bits, chunked,
    compressed, a third of the size), ``float16`` (a quarter) or ``float32`` (exact); read back
    as float32 every way. Whenever ``out`` is
    written, the clips it takes from an earlier output or parts are stored in ``storage`` too.

    ``precision`` (:func:`avloc.accelerate.acceleration`): the encoders run under bf16 / fp16
    autocast and in channels-last on CUDA by default, in float32 on the CPU; the maps leave the
    encoders in float32 either way (then stored as ``storage`` says). ``workers``: processes
    decoding videos ahead of the encoders (default: up to 4 on CUDA, none on the CPU); the
    features are the same either way.
    """
    records = sorted(load_for_videos(dataset, skip_broken).records, key=lambda r: r.id)
    visual_encoder, audio_encoder, mel, meta = _prepare(visual, audio, visual_weights, audio_weights, fps, size,
                                                        audio_window, batch_size, device)
    accel = acceleration(device, precision, workers=workers)
    accel.prepare(visual_encoder, audio_encoder)
    make_folder(Path(out).parent)
    store = PartsStore(out, replace(meta, storage=storage))
    done = store.finished_ids()
    index, count = shard
    mine = [r for r in records[index::count] if r.id not in done]
    skipped = len(records[index::count]) - len(mine)
    _, _, broken = usable_clips([r for r in records if r.id not in done] if skip_broken else mine, skip_broken,
                                check=lambda record: _check_steps(record.video, fps), progress=progress)
    left_out = {s.id for s in broken}
    mine = [r for r in mine if r.id not in left_out]
    options = {"fps": fps, "size": size, "sample_rate": mel.sample_rate, "audio_window": meta.audio_window}
    jobs = [DecodeJob(record.id, record.video, options) for record in mine]
    videos = {record.id: record.video for record in mine}
    parts: dict[str, list[ClipFeatures]] = {}  # clips being encoded (one per decoding worker at most)
    with tqdm(total=len(mine), desc=f"extract {index}/{count}", unit="clip", disable=not progress) as bar:
        for chunk in decoded_chunks(jobs, batch_size, accel.workers, accel.pin_memory):
            if chunk.error is not None:
                raise AvlocError(chunk.error)
            if len(chunk.times):
                with accel.autocast():
                    parts.setdefault(chunk.key, []).append(encode_batch(
                        accel.to_device(chunk.frames), accel.to_device(chunk.segments), visual_encoder,
                        audio_encoder, mel, chunk.times.numpy()))
            if chunk.last:
                features = join_features(parts.pop(chunk.key, []))
                if len(features.times) == 0:
                    raise AvlocError(f"{videos[chunk.key]}: shorter than one step at {fps} fps")
                store.write(chunk.key, features)
                bar.update()
    with store.locked():
        summary = ""
        if skip_broken:
            summary = record_skipped(Path(out).with_name(Path(out).name + ".skipped.txt"),
                                     len(records) - len(broken), len(records), broken)
        remaining = [r.id for r in records if r.id not in store.finished_ids() and r.id not in left_out]
        if not remaining and (store.has_parts() or not Path(out).is_file()):
            store.merge(r.id for r in records if r.id not in left_out)
    return ExtractResult(Path(out), extracted=len(mine), skipped=skipped, remaining=len(remaining),
                         broken=len(broken), summary=summary)


def _check_steps(video: Path, fps: float) -> VideoInfo:
    """:func:`~avloc.data.usable.check_video`, and at least one step long at ``fps``."""
    info = check_video(video)
    if math.floor(info.duration * fps + 1e-6) < 1:
        raise AvlocError(f"{video}: {info.duration:g} s long, shorter than one step at {fps:g} fps")
    return info


def extract_ave_features(
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    visual: str = "vgg19",
    audio: str = "vggish-embed",
    visual_weights: str | None = None,
    audio_weights: str | None = None,
    size: int | None = 224,
    frames_per_second: int = AUTHORS_FRAMES_PER_SECOND,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    skip_broken: bool = False,
    precision: str = "auto",
) -> ExtractResult:
    """Encode every clip of ``dataset`` (native or AVE) into the AVE authors' layout in the folder ``out``.

    Row i is the dataset's i-th record (an AVE folder's ``Annotations.txt`` order) and holds
    its first 10 s (a shorter clip is refused): per 1-s segment the visual map averaged over
    ``frames_per_second`` frames (at ``s + (k + 0.5) / F``) and the audio encoder's output on
    that second of audio. ``Annotations.txt`` (one line per record, :func:`record_sample`),
    ``labels.h5`` and the order files are written with the features. Defaults are the
    authors': VGG-19 + VGGish embedding at 224 px, 16 frames per second. Finished clips are
    skipped (those in an earlier output with the same settings too); with ``shard=(i, n)``
    this call encodes records ``i, i + n, ...`` and the last shard to finish writes ``out``.
    With ``skip_broken`` every video is looked at first and those that cannot be read (or are
    shorter than 10 s) get no row; they are listed in ``<out>.skipped.txt`` beside the folder.
    ``precision`` as for :func:`extract_features`.
    """
    if not (isinstance(frames_per_second, int) and frames_per_second >= 1):
        raise AvlocError(f"--frames-per-second must be a whole number >= 1, got {frames_per_second!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AvlocError(f"{out}: --format ave writes a folder, and this is a file")
    if out.resolve() == Path(dataset).resolve():
        raise AvlocError(f"{out}: is the dataset folder; choose another --out (its Annotations.txt and split "
                         "files would be rewritten)")
    records = list(load_for_videos(dataset, skip_broken).records)
    total, broken = len(records), []
    if skip_broken:  # rows are the usable records, so every shard looks at every video
        records, _, broken = usable_clips(records, True, check=lambda record: _check_seconds(record.video),
                                          progress=progress)
    skipped_list = out.with_name(out.name + ".skipped.txt")
    summary = record_skipped(skipped_list, len(records), total, broken) if skip_broken else ""
    ids = [r.id for r in records]
    visual_encoder, audio_encoder, mel, meta = _prepare(visual, audio, visual_weights, audio_weights, 1.0, size, 1.0,
                                                        batch_size, device)
    accel = acceleration(device, precision)
    accel.prepare(visual_encoder, audio_encoder)
    store = PartsStore(out / f"extract-{frames_per_second}-frames-per-second", meta)
    old = _previous_ave_output(out, meta, frames_per_second)
    done = store.finished_ids() | {i for i in ids if old is not None and i in old}
    index, count = shard
    mine = [r for r in records[index::count] if r.id not in done]
    skipped = len(records[index::count]) - len(mine)
    for record in tqdm(mine, desc=f"extract ave {index}/{count}", unit="clip", disable=not progress):
        with accel.autocast():
            features = encode_seconds(record.video, visual_encoder, audio_encoder, mel, size, frames_per_second,
                                      batch_size, device)
        store.write(record.id, features)
    make_folder(out)  # only now: a refused first clip leaves nothing behind
    with store.locked():
        old = _previous_ave_output(out, meta, frames_per_second)
        parts = store.finished_ids()
        remaining = [i for i in ids if i not in parts and not (old is not None and i in old)]
        complete = old is not None and old.source_ids == tuple(ids) and all((out / f).is_file() for f in LAYOUT_FILES)
        if not remaining and (store.has_parts() or not complete):
            split = {name: np.array([row for row, r in enumerate(records) if r.split == name]) for name in SPLITS}
            write_ave_folder(out, [record_sample(r) for r in records], ids, split,
                             lambda clip_id: store.load(clip_id, old), meta, frames_per_second)
            shutil.rmtree(store.dir, ignore_errors=True)
    return ExtractResult(out, extracted=len(mine), skipped=skipped, remaining=len(remaining), broken=len(broken),
                         summary=summary)


def _check_seconds(video: Path) -> VideoInfo:
    """:func:`~avloc.data.usable.check_video`, and the 10 s an AVE row holds."""
    info = check_video(video)
    if info.duration < SECONDS - 1e-3:
        raise AvlocError(f"{video}: {info.duration:g} s long; an AVE row holds {SECONDS} one-second segments")
    return info


def _previous_ave_output(out: Path, meta: CacheMeta, frames_per_second: int) -> AVEFeatures | None:
    """The AVE features already in ``out``; refuses them when made with other settings."""
    if not all((out / name).is_file() for name in (ANNOTATIONS, VISUAL_FILE, AUDIO_FILE)):
        return None
    old = AVEFeatures(out)
    differences = meta.differences(old.meta) + (["frames_per_second"] if old.frames_per_second != frames_per_second
                                                else [])
    if differences:
        raise AvlocError(f"{old.path}: was extracted with different settings ({', '.join(differences)}); "
                         "choose another --out or delete it")
    return old


@torch.inference_mode()
def encode_seconds(
    video: str | os.PathLike,
    visual_encoder: Encoder,
    audio_encoder: Encoder,
    mel: MelConfig,
    size: int | None,
    frames_per_second: int,
    batch_size: int,
    device: str | torch.device,
) -> ClipFeatures:
    """The AVE features of a video's first 10 s: ``visual (10, C, h, w)``, ``audio (10, C, m, n)``, ``times (10,)``.

    Second s: the mean of the visual maps of the ``frames_per_second`` frames at
    ``s + (k + 0.5) / F``; the audio encoder's output on the samples of ``[s, s + 1)``.
    """
    duration = probe_with_audio(video).duration
    if duration < SECONDS - 1e-3:
        raise AvlocError(f"{video}: {duration:g} s long; an AVE row holds {SECONDS} one-second segments")
    steps = iter_steps(video, fps=frames_per_second, size=size, sample_rate=mel.sample_rate, end=float(SECONDS))
    maps = []
    while batch := list(islice(steps, batch_size)):
        frames = torch.stack([step.frame for step in batch]).to(device)  # (B, 3, H, W)
        maps.append(visual_encoder(frames).float().cpu())
    visual = torch.cat(maps).unflatten(0, (SECONDS, frames_per_second))  # (10*F, C, h, w) -> (10, F, C, h, w)
    waveform = read_audio(video, mel.sample_rate, start=0.0, end=float(SECONDS))  # (10*sr,)
    segments = waveform.reshape(SECONDS, -1).to(device)  # (10*sr,) -> (10, sr)
    audio = audio_encoder(log_mel(segments, mel)).float().cpu()  # (10, 1, M, N) -> (10, C, m, n)
    return ClipFeatures(
        visual=visual.mean(dim=1).numpy(),  # (10, F, C, h, w) -> (10, C, h, w)
        audio=audio.numpy(),
        times=np.arange(SECONDS, dtype=np.float64) + 0.5,
    )
