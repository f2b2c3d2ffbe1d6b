"""``avloc extract``: encode every clip of a dataset once and store the feature maps.

Each clip is streamed step by step (``iter_steps``), so memory stays bounded for any
length; steps are encoded in batches. See :mod:`avloc.data.cache` for the file layout and
why a killed run never leaves a corrupt entry.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avloc import __version__
from avloc.audio import MelConfig, log_mel
from avloc.data.cache import CacheMeta, ClipFeatures, PartsStore
from avloc.data.manifest import load_manifest
from avloc.io.decode import AVStep, iter_steps
from avloc.models.encoders import Encoder, create_encoder
from avloc.types import AvlocError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractResult:
    """What one ``extract_features`` call did."""

    out: Path
    extracted: int  # clips encoded by this call
    skipped: int  # clips of this shard that were already done
    remaining: int  # clips of other shards still to do (0 once FILE.h5 is complete)


def mel_config_for(encoder: Encoder) -> MelConfig:
    """The log-mel settings an audio encoder's weights expect."""
    spec = encoder.input_spec
    return MelConfig(
        sample_rate=spec["sample_rate"],
        n_mels=spec["n_mels"],
        window_ms=spec["window_ms"],
        hop_ms=spec["hop_ms"],
        fmin=spec["fmin"],
        fmax=spec["fmax"],
        log_offset=spec["log_offset"],
    )


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) -> ``(I, N)``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise AvlocError(f"bad shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise AvlocError(f"bad shard {text!r}: need 0 <= I < N")
    return index, count


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
) -> ExtractResult:
    """Encode every clip of the native dataset at ``dataset`` into the cache ``out``.

    Clips already in ``out`` (or in its parts folder) are skipped. With ``shard=(i, n)``
    this call encodes clips ``i, i + n, i + 2n, ...`` of the id-sorted list; whichever
    shard finishes last merges everything into ``out``.
    """
    records = sorted(load_manifest(dataset).records, key=lambda r: r.id)
    visual_encoder = create_encoder(visual, weights=visual_weights).to(device).eval()
    audio_encoder = create_encoder(audio, weights=audio_weights).to(device).eval()
    if visual_encoder.modality != "visual" or audio_encoder.modality != "audio":
        raise AvlocError(f"--visual must name a visual encoder and --audio an audio encoder, got {visual}, {audio}")
    mel = mel_config_for(audio_encoder)
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
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    store = PartsStore(out, meta)
    done = store.finished_ids()
    index, count = shard
    mine = [r for r in records[index::count] if r.id not in done]
    skipped = len(records[index::count]) - len(mine)
    for record in tqdm(mine, desc=f"extract {index}/{count}", unit="clip", disable=not progress):
        steps = iter_steps(
            record.video, fps=fps, size=size, sample_rate=mel.sample_rate, audio_window=meta.audio_window
        )
        features = encode_clip(steps, visual_encoder, audio_encoder, mel, batch_size, device)
        if len(features.times) == 0:
            raise AvlocError(f"{record.video}: shorter than one step at {fps} fps")
        store.write(record.id, features)
    with store.locked():
        remaining = [r.id for r in records if r.id not in store.finished_ids()]
        if not remaining and (store.has_parts() or not Path(out).is_file()):
            store.merge(r.id for r in records)
    return ExtractResult(Path(out), extracted=len(mine), skipped=skipped, remaining=len(remaining))


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
    visual_maps, audio_maps, times = [], [], []
    while batch := list(islice(steps, batch_size)):
        frames = torch.stack([step.frame for step in batch]).to(device)  # (B, 3, H, W)
        segments = torch.stack([step.segment for step in batch]).to(device)  # (B, L)
        visual_maps.append(visual_encoder(frames).float().cpu().numpy())
        audio_maps.append(audio_encoder(log_mel(segments, mel)).float().cpu().numpy())
        times.extend(step.time for step in batch)
    if not times:
        return ClipFeatures(np.empty((0,)), np.empty((0,)), np.empty((0,)))
    return ClipFeatures(
        visual=np.concatenate(visual_maps),  # (T, C, h, w)
        audio=np.concatenate(audio_maps),  # (T, C, m, n)
        times=np.asarray(times, dtype=np.float64),
    )
