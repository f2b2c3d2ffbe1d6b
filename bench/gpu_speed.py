"""Speed of the GPU path (`--precision`, channels-last, pinned memory, loader workers) on whatever device is here.

    python bench/gpu_speed.py [--device auto] [--precisions fp32 auto] [--clips 4] [--seconds 10]

With ResNet-152 + VGGish (``--visual`` / ``--audio`` to change them; random initialisation:
weights do not change the speed), on
synthetic clips (generated first, not timed), at 4 steps per second with frames at 256 px,
for each precision (:func:`avloc.accelerate.acceleration`; ``auto`` is bf16 / fp16 with
channels-last, pinned memory and loader workers on CUDA, fp32 on the CPU):

- **extract, encoders**: both encoders on decoded batches of 16 steps -> frames per second;
- **extract, end to end**: `extract_features` (decode, log-mel, encoders, write) -> frames per second;
- **localize, end to end**: `localize_video` with an STM over those encoders -> frames (steps) per second;
- **train**: one epoch of `train_one_epoch` on the extracted features (batches of 32 windows
  of 4 steps, after a warm-up epoch) -> training windows per second.

Results go to the "GPU path (`--precision`, channels-last)" section of docs/results.md, with
the device named; on a machine without a GPU the section says so.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from avloc.accelerate import acceleration
from avloc.config import TrainConfig, build_model
from avloc.data.benchmarks.synth import generate_dataset
from avloc.data.cache import FeatureCache
from avloc.data.manifest import load_manifest
from avloc.data.windows import FeatureWindows
from avloc.devices import DEVICE_CHOICES, resolve_device
from avloc.extract import extract_features
from avloc.io.decode import read_clip
from avloc.localize_video import localize_video
from avloc.localizer import Localizer
from avloc.trained import load_trained
from avloc.train import train_one_epoch
from results_md import command, update_section
from speed import random_checkpoint

FPS, SIZE, BATCH, WINDOWS = 4.0, 256, 16, 32
VISUAL, AUDIO = "resnet152", "vggish"  # --visual / --audio change them (e.g. the default small-visual + small-audio)
SECTION = "GPU path (`--precision`, channels-last)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoders_alone(checkpoint: Path, video: Path, device: torch.device, precision: str) -> float:
    """Frames per second of both encoders (log-mel included) on the clip's decoded steps, batches of 16."""
    localizer = Localizer(load_trained(checkpoint, device), device, precision=precision)
    clip = read_clip(video, fps=FPS, size=SIZE, sample_rate=localizer.mel.sample_rate)
    localizer.encode(clip.frames[:BATCH], clip.segments[:BATCH])  # warm-up: kernels, cuDNN autotuning
    _sync(device)
    started = time.perf_counter()
    for first in range(0, len(clip.times), BATCH):
        localizer.encode(clip.frames[first:first + BATCH], clip.segments[first:first + BATCH])
    _sync(device)
    return len(clip.times) / (time.perf_counter() - started)


def training(dataset: Path, features: Path, device: torch.device, precision: str) -> float:
    """Training windows per second of one epoch on the feature cache (after a warm-up epoch)."""
    data = load_manifest(dataset)
    config = TrainConfig(dataset=str(dataset), features=str(features), batch_size=WINDOWS)
    accel = acceleration(device, precision)
    torch.manual_seed(0)
    model = build_model(config, list(data.classes), with_encoders=False).to(device)
    windows = FeatureWindows(FeatureCache(features), data.records, data.classes, steps=config.steps, augment=True)
    loader = DataLoader(windows, batch_size=WINDOWS, shuffle=True, num_workers=accel.workers,
                        pin_memory=accel.pin_memory)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = accel.grad_scaler()
    train_one_epoch(model, loader, optimizer, "video", device, progress=False, accel=accel, scaler=scaler)
    _sync(device)
    started = time.perf_counter()
    train_one_epoch(model, loader, optimizer, "video", device, progress=False, accel=accel, scaler=scaler)
    _sync(device)
    return len(windows) / (time.perf_counter() - started)


def measure(dataset: Path, work: Path, device: torch.device, precision: str, checkpoint: Path, visual: str,
            audio: str) -> dict:
    records = load_manifest(dataset).records
    features = work / f"{precision}.h5"
    started = time.perf_counter()
    extract_features(dataset, features, visual=visual, audio=audio, fps=FPS, size=SIZE, device=device,
                     precision=precision, progress=False)
    extract = time.perf_counter() - started
    cache = FeatureCache(features)
    extract = sum(len(cache.read(r.id).times) for r in records) / extract
    localize_video(records[0].video, work / "warm", model=checkpoint, end=1.0, device=device, precision=precision,
                   progress=False)  # warm-up
    started = time.perf_counter()
    steps = 0
    for record in records:
        steps += len(localize_video(record.video, work / f"{precision}-{record.id}", model=checkpoint, device=device,
                                    precision=precision, progress=False).times)
    localize = steps / (time.perf_counter() - started)
    return {"precision": acceleration(device, precision).precision, "asked": precision,
            "encoders": encoders_alone(checkpoint, records[0].video, device, precision),
            "extract": extract, "localize": localize, "train": training(dataset, features, device, precision)}


def report(rows: list[dict], device: torch.device, args: argparse.Namespace) -> str:
    if device.type == "cuda":
        where = f"on {torch.cuda.get_device_name(device)}"
    else:
        where = (f"on the CPU ({torch.get_num_threads()} torch threads): **no GPU was available to this run, so "
                 "there are no GPU numbers here**; run the same command on a CUDA machine to measure them")
    table = ["| --precision | runs as | encoders alone, frames/s | extract, frames/s | localize, frames/s | "
             "train, windows/s |", "| --- | --- | --- | --- | --- | --- |"]
    table += [f"| {r['asked']} | {r['precision']} | {r['encoders']:.1f} | {r['extract']:.1f} | {r['localize']:.1f} | "
              f"{r['train']:.1f} |" for r in rows]
    return (f"`{command()}` — {args.visual} + {args.audio} (weights do not change the speed), {args.clips} synthetic clips of {args.seconds:g} s "
            f"at {FPS:g} steps/s, frames at {SIZE} px; {where}. Extract and localize are end to end (decoding and "
            f"writing included); train is one epoch on the extracted features, batches of {WINDOWS} windows of 4 "
            "steps, after a warm-up epoch.\n\n" + "\n".join(table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "auto"],
                        help="precisions to compare (default: fp32 auto; on a CPU add bf16 to time CPU autocast)")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--visual", default=VISUAL, help=f"visual encoder (default {VISUAL})")
    parser.add_argument("--audio", default=AUDIO, help=f"audio encoder (default {AUDIO})")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/results.md alone")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = generate_dataset(Path(tmp) / "data", clips=args.clips, seed=0, seconds=args.seconds, progress=False)
        checkpoint = random_checkpoint(args.visual, args.audio, Path(tmp) / "model.pt")
        for precision in args.precisions:
            row = measure(dataset, Path(tmp), device, precision, checkpoint, args.visual, args.audio)
            print(f"{precision:>5s} ({row['precision']}): encoders {row['encoders']:.1f} frames/s, extract "
                  f"{row['extract']:.1f} frames/s, localize {row['localize']:.1f} frames/s, train "
                  f"{row['train']:.1f} windows/s", flush=True)
            rows.append(row)
    text = report(rows, device, args)
    print(text)
    if not args.no_write:
        update_section(SECTION, text)


if __name__ == "__main__":
    main()
