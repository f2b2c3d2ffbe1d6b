"""Speed of `avloc extract`: clips and steps per second on the synthetic benchmark.

    python bench/extract_speed.py [--clips 20] [--seconds 10] [--size 256]

Generates the clips first (not timed), then encodes them with each encoder pair (random
weights: speed does not depend on their values) and rewrites the "Feature extraction"
section of docs/results.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from avloc.data.benchmarks.synth import generate_dataset
from avloc.extract import extract_features
from results_md import command, update_section

PAIRS = [("small-visual", "small-audio"), ("resnet18", "vggish"), ("resnet152", "vggish")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=256, help="frame size fed to the visual encoder")
    parser.add_argument("--fps", type=float, default=4.0)
    parser.add_argument("--pairs", nargs="*", default=[f"{v}+{a}" for v, a in PAIRS], help="VISUAL+AUDIO ...")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = generate_dataset(Path(tmp) / "data", clips=args.clips, seed=0, seconds=args.seconds, progress=False)
        for pair in args.pairs:
            visual, audio = pair.split("+")
            started = time.perf_counter()
            extract_features(dataset, Path(tmp) / f"{pair}.h5", visual=visual, audio=audio, fps=args.fps,
                             size=args.size, progress=False)
            seconds = time.perf_counter() - started
            steps = args.clips * int(args.seconds * args.fps)
            row = (visual, audio, args.clips / seconds, steps / seconds, args.clips * args.seconds / seconds)
            print(f"{visual:>13s} + {audio:<12s} {row[2]:6.2f} clips/s {row[3]:7.1f} steps/s "
                  f"{row[4]:6.1f}x real time")
            rows.append(row)
    table = ["| visual | audio | clips/s | steps/s | video seconds per second |", "| --- | --- | --- | --- | --- |"]
    table += [f"| {v} | {a} | {c:.2f} | {s:.1f} | {r:.1f} |" for v, a, c, s, r in rows]
    body = (
        f"`{command()}` — {args.clips} synthetic clips of {args.seconds:g} s (128 px MP4), decoded at "
        f"{args.fps:g} fps, frames resized to {args.size} px, {torch.get_num_threads()} torch threads, "
        "whole pipeline (decode, log-mel, both encoders, write).\n\n" + "\n".join(table)
    )
    update_section("Feature extraction (`avloc extract`)", body)


if __name__ == "__main__":
    main()
