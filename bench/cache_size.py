"""Size and read speed of the feature cache, rounded and float16 (chunked, gzip 1) against float32, and eval unchanged.

    python bench/cache_size.py [--dataset DIR] [--cache FILE.h5 --cache-dataset DIR] [--rounds 5]

On the built-in default model's bundled demo clips (``--dataset``, default
src/avloc/models/default/demo), extracted with the default encoders (small-visual + small-audio
at 256 px, 4 fps) once per storage (``--storage float32``, ``rounded`` (the default) and ``float16``):

- kB per step of each file, their ratio, and each extraction's wall time;
- candidate storages written from the float32 maps with h5py directly (float16 raw, lzf, shuffle,
  gzip levels, float32 rounded to 10-16 significand bits): size ratio, write time, and the time
  to read random 4-step windows of them as float32, so the two storages avloc offers are seen
  among the others;
- read throughput of training windows: :class:`~avloc.data.windows.FeatureWindows` (4 steps,
  random starts, no augmentation) over every clip, on each cache, and the format-1 reader (the
  reader of avloc before format 2, replicated here) on the float32 cache: best of ``--rounds``
  epochs, measured in turn;
- every number of `avloc eval` of the default model on each cache (the four protocols), and
  the largest difference.

``--cache`` (a float32 cache, e.g. the default model's training benchmark) with
``--cache-dataset`` (its dataset) repeats the sizes, the read throughput and the eval on that
cache and its rounded and float16 copies (:func:`avloc.data.cache.convert_cache`), on its test split.
Results go to the "Feature cache size (issue 21)" section of docs/results.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from avloc.data.cache import DEFAULT_STORAGE, ROUNDED_BITS, FeatureCache, clip_key, convert_cache, round_significand
from avloc.data.manifest import load_manifest
from avloc.data.windows import FeatureWindows
from avloc.config import TrainConfig
from avloc.train import HOLD_MB
from avloc.evaluate import evaluate
from avloc.extract import extract_features
from avloc.protocols import PROTOCOLS
from results_md import command, update_section

DEMO = Path(__file__).resolve().parents[1] / "src" / "avloc" / "models" / "default" / "demo"
STEPS = 4  # a training window (the default --steps)
STORAGES = ("float32", "rounded", "float16")  # avloc's storages, the exact one first
CANDIDATES = {  # name: (significand bits kept of float32's, or None; h5py create_dataset options of the maps)
    "float32 (format 1)": (None, dict(dtype=np.float32)),
    "float16": (None, dict(dtype=np.float16)),
    "float16 + lzf": (None, dict(dtype=np.float16, compression="lzf")),
    "float16 + shuffle + lzf": (None, dict(dtype=np.float16, shuffle=True, compression="lzf")),
    "float16 + gzip 1 (float16)": (None, dict(dtype=np.float16, compression="gzip", compression_opts=1)),
    "float16 + shuffle + gzip 1": (None, dict(dtype=np.float16, shuffle=True, compression="gzip", compression_opts=1)),
    "float16 + shuffle + gzip 4": (None, dict(dtype=np.float16, shuffle=True, compression="gzip", compression_opts=4)),
    **{f"float32 rounded to {bits} bits + shuffle + gzip 1":
       (bits, dict(dtype=np.float32, shuffle=True, compression="gzip", compression_opts=1)) for bits in (10, 11, 12, 14, 16)},
    f"float32 rounded to {ROUNDED_BITS} bits + shuffle + gzip 4 (rounded)":
        (ROUNDED_BITS, dict(dtype=np.float32, shuffle=True, compression="gzip", compression_opts=4)),
}


def steps_in(cache: FeatureCache) -> int:
    return sum(cache.num_steps(clip_id) for clip_id in cache.ids)


def candidates(cache: FeatureCache, folder: Path, rounds: int) -> list[tuple[str, float, float, float]]:
    """(name, size ratio to float32, write s, read ms per window) of each candidate storage."""
    clips = {clip_id: cache.read(clip_id) for clip_id in cache.ids}
    rng = np.random.default_rng(0)
    ids = list(clips)
    windows = [(clip_key(ids[i]), int(rng.integers(0, len(clips[ids[i]].times) - STEPS + 1)))
               for i in rng.integers(0, len(ids), 400)]
    written = {}
    for name, (bits, options) in CANDIDATES.items():
        options = dict(options)
        dtype = options.pop("dtype")
        path = folder / f"candidate-{len(written)}.h5"
        started = time.perf_counter()
        with h5py.File(path, "w") as h5:
            for clip_id, clip in clips.items():
                group = h5.create_group(f"clips/{clip_key(clip_id)}")
                for part in ("visual", "audio"):
                    maps = getattr(clip, part).astype(dtype)
                    maps = maps if bits is None else round_significand(maps, bits, clip_id)
                    chunks = dict(chunks=(1, *maps.shape[1:]) if part == "visual" else maps.shape) if options else {}
                    group.create_dataset(part, data=maps, **chunks, **options)
        written[name] = (path, time.perf_counter() - started)
    read = {name: float("inf") for name in CANDIDATES}
    for _ in range(rounds):  # in turn, best of the rounds: the machine is shared
        for name, (path, _) in written.items():
            with h5py.File(path, "r") as h5:
                started = time.perf_counter()
                for key, start in windows:
                    for part in ("visual", "audio"):
                        torch.from_numpy(h5[f"clips/{key}/{part}"][start : start + STEPS]).float()
                read[name] = min(read[name], (time.perf_counter() - started) / len(windows))
    base = written["float32 (format 1)"][0].stat().st_size
    return [(name, path.stat().st_size / base, seconds, read[name] * 1e3) for name, (path, seconds) in written.items()]


class FormatOneReader:
    """The window reads of avloc's format-1 :class:`FeatureCache` (before format 2), step for step:
    per window ``num_steps`` and ``read`` each look the clip's group and datasets up and check
    them, and the maps are returned as stored. Only for measuring the reader it replaces."""

    def __init__(self, path: Path):
        self.h5 = h5py.File(path, "r")

    def _arrays(self, clip_id: str) -> dict:
        group = self.h5["clips"][clip_key(clip_id)]
        arrays = {name: group.get(name) for name in ("visual", "audio", "times")}
        for array in arrays.values():
            assert isinstance(array, h5py.Dataset) and array.dtype.kind in "fiu"
        steps = arrays["times"].shape[0] if arrays["times"].ndim == 1 else -1
        for name in ("visual", "audio"):
            assert arrays[name].ndim == 4 and arrays[name].shape[0] == steps and steps >= 1
        return arrays

    def window(self, clip_id: str, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        num_steps = len(self._arrays(clip_id)["times"])
        assert start + STEPS <= num_steps
        arrays = self._arrays(clip_id)
        maps = [arrays[name][start : start + STEPS] for name in ("visual", "audio", "times")]
        assert all(np.isfinite(array).all() for array in maps)
        return torch.from_numpy(maps[0]), torch.from_numpy(maps[1])


TRAIN_EPOCHS = TrainConfig.epochs  # avloc train's default


def read_speed(caches: dict[str, Path], dataset: Path, split: str | None, rounds: int) -> dict[str, float]:
    """Training windows per second of each reader: FeatureWindows on each cache, the format-1 reader."""
    data = load_manifest(dataset)
    records = [r for r in data.records if split is None or r.split == split]
    readers = {f"FeatureWindows, {name}": FeatureWindows(FeatureCache(path), records, data.classes, steps=STEPS,
                                                         augment=False) for name, path in caches.items()}
    old, lengths = FormatOneReader(caches["float32"]), {r.id: FeatureCache(caches["float32"]).num_steps(r.id)
                                                        for r in records}
    held_cache = FeatureCache(caches[DEFAULT_STORAGE])
    held_cache.hold(HOLD_MB)  # as avloc train does
    held = FeatureWindows(held_cache, records, data.classes, steps=STEPS, augment=False)
    best = {name: 0.0 for name in [*readers, "format-1 reader, float32"]}
    held_seconds = []  # per epoch: the first reads whole clips from the file, the later ones from memory
    for epoch in range(rounds):
        held.window_seed = epoch
        started = time.perf_counter()
        for index in range(len(held)):
            held[index]
        held_seconds.append(time.perf_counter() - started)
        for name, windows in readers.items():
            windows.window_seed = epoch
            started = time.perf_counter()
            for index in range(len(windows)):
                windows[index]
            best[name] = max(best[name], len(windows) / (time.perf_counter() - started))
        rng = np.random.default_rng(epoch)
        starts = [(r.id, int(rng.integers(0, lengths[r.id] - STEPS + 1))) for r in records]
        started = time.perf_counter()
        for clip_id, start in starts:
            old.window(clip_id, start)
        best["format-1 reader, float32"] = max(best["format-1 reader, float32"],
                                               len(starts) / (time.perf_counter() - started))
    first, later = held_seconds[0], min(held_seconds[1:], default=held_seconds[0])
    held_name = f"FeatureWindows, {DEFAULT_STORAGE} held in memory"
    return {**best, f"{held_name}: first epoch": len(held) / first, f"{held_name}: later epochs (best)": len(held) / later,
            f"{held_name}: a {TRAIN_EPOCHS}-epoch run (first + {TRAIN_EPOCHS - 1} later)":
                TRAIN_EPOCHS * len(held) / (first + (TRAIN_EPOCHS - 1) * later)}


def eval_numbers(caches: dict[str, Path], dataset: Path) -> tuple[dict[str, dict[str, float]], int]:
    """Every number of `avloc eval` (rows of each protocol) of the default model, per cache; and the frames."""
    numbers, frames = {}, 0
    for name, path in caches.items():
        numbers[name] = {}
        for protocol, rules in PROTOCOLS.items():
            report = evaluate("default", dataset, split="test", features=str(path), protocol=rules, progress=False)
            for row, values in report["rows"].items():
                for key, value in values.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        numbers[name][f"{protocol}/{row}/{key}"] = float(value)
            frames = report["rows"]["all"]["n_frames"] if "all" in report["rows"] else frames
    return numbers, frames


def compare(label: str, caches: dict[str, Path], dataset: Path, split: str | None, rounds: int,
            extract_seconds: dict[str, float] | None) -> list[str]:
    """Print and return the markdown lines of one benchmark (a dataset and its caches, one per storage)."""
    opened = {name: FeatureCache(path) for name, path in caches.items()}
    steps = steps_in(opened["float32"])
    sizes = {name: path.stat().st_size for name, path in caches.items()}
    speed = read_speed(caches, dataset, split, rounds)
    numbers, frames = eval_numbers(caches, dataset)
    exact = numbers["float32"]
    lines = [f"**{label}** ({len(opened['float32'])} clips, {steps} steps):", "",
             "| storage | kB per step | size | size / float32 | extract s |", "| --- | --- | --- | --- | --- |"]
    for name in STORAGES:
        seconds = f"{extract_seconds[name]:.1f}" if extract_seconds else "-" if name == "float32" else "(converted)"
        lines.append(f"| {name}{' (default)' if name == DEFAULT_STORAGE else ''} | {sizes[name] / steps / 1e3:.1f} | "
                     f"{sizes[name] / 1e6:.1f} MB | {sizes[name] / sizes['float32']:.3f} | {seconds} |")
    lines += ["", f"{DEFAULT_STORAGE} / float32 size: **{sizes[DEFAULT_STORAGE] / sizes['float32']:.3f}** "
              "(target <= 0.333).", "", "| reader | training windows/s |", "| --- | --- |"]
    lines += [f"| {name} | {value:.0f} |" for name, value in speed.items()]
    new, before = speed[f"FeatureWindows, {DEFAULT_STORAGE}"], speed["format-1 reader, float32"]
    run = speed[f"FeatureWindows, {DEFAULT_STORAGE} held in memory: a {TRAIN_EPOCHS}-epoch run "
                f"(first + {TRAIN_EPOCHS - 1} later)"]
    lines += ["", f"FeatureWindows on {DEFAULT_STORAGE} / the format-1 reader on float32: **{new / before:.2f}x** "
                  f"(target >= 1); against FeatureWindows on float32: {new / speed['FeatureWindows, float32']:.2f}x. "
                  f"Held in memory as `avloc train` holds it, a {TRAIN_EPOCHS}-epoch run reads **{run / before:.2f}x** "
                  "as fast as the format-1 reader.", "",
              f"`avloc eval` of the default model, test split ({frames} frames), four protocols, {len(exact)} numbers "
              "(target: each within 1e-3 of float32's):", "",
              "| storage | numbers that differ | largest difference | where |", "| --- | --- | --- | --- |"]
    moved = []
    for name in STORAGES[1:]:
        differences = {key: abs(numbers[name][key] - value) for key, value in exact.items()}
        worst = max(differences, key=differences.get)
        lines.append(f"| {name} | {sum(d > 0 for d in differences.values())} | **{differences[worst]:.2g}** | {worst} |")
        moved += [f"| {name} | {key} | {exact[key]:.4f} | {numbers[name][key]:.4f} | "
                  f"{exact.get(key.rsplit('/', 1)[0] + '/n_frames', float('nan')):.0f} |"
                  for key, difference in differences.items() if difference > 1e-4]
    if moved:
        lines += ["", "Numbers that moved by more than 1e-4:", "", "| storage | number | float32 | stored | row's frames |",
                  "| --- | --- | --- | --- | --- |", *moved]
    print("\n".join(lines) + "\n", flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEMO, help="clips to extract both ways (default: the demo)")
    parser.add_argument("--cache", type=Path, default=None, help="a float32 cache to convert and compare too")
    parser.add_argument("--cache-dataset", type=Path, default=None, help="the dataset of --cache")
    parser.add_argument("--rounds", type=int, default=5, help="epochs of window reads, best taken (default 5)")
    args = parser.parse_args()
    body = [f"`{command()}` — {torch.get_num_threads()} torch threads; read speeds are best-of-{args.rounds} epochs, "
            "the readers in turn (this machine is shared by other jobs: compare rows within one run).", ""]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        caches, seconds = {}, {}
        for storage in STORAGES:
            started = time.perf_counter()
            caches[storage] = extract_features(args.dataset, folder / f"{storage}.h5", storage=storage,
                                               progress=False).out
            seconds[storage] = time.perf_counter() - started
        body += compare(f"{args.dataset.name} clips, extracted each way", caches, args.dataset, None, args.rounds,
                        seconds)
        rows = candidates(FeatureCache(caches["float32"]), folder, args.rounds)
        table = ["", "Candidate storages of the same maps (per-step chunks where filtered; read: 4-step windows "
                 "of visual + audio as float32 tensors):", "",
                 "| storage | size / float32 | write s | read ms per window |", "| --- | --- | --- | --- |"]
        table += [f"| {name} | {ratio:.3f} | {write:.2f} | {read:.2f} |" for name, ratio, write, read in rows]
        print("\n".join(table) + "\n", flush=True)
        body += table
        if args.cache is not None:
            copies = {storage: convert_cache(args.cache, folder / f"converted-{storage}.h5", storage)
                      for storage in STORAGES[1:]}
            body += [""] + compare(f"{args.cache.name} (float32) and its copies", {"float32": args.cache, **copies},
                                   args.cache_dataset, "train", args.rounds, None)
    update_section("Feature cache size (issue 21)", "\n".join(body))


if __name__ == "__main__":
    main()
