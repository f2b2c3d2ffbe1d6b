"""Speed of the per-frame resize in decoding: the former torch resize against swscale.

    python bench/resize_speed.py [--repeats 30] [--extract-clips 0]

Times ``avloc.io.decode._to_tensor`` (swscale's antialiased bilinear on uint8, in the
decoding thread) against the former one (RGB at full size -> float -> ``F.interpolate(...,
antialias=True)``) per frame, for a 240x320 and a 1080p frame resized to 256x256, with 1
and 2 torch threads, on an idle machine and while a busy-loop process holds one core (it
stops by itself). With ``--extract-clips N`` it also times ``extract_features`` end to end
on N synthetic clips with each resize. Prints the numbers and rewrites the "Frame resizing"
section of docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from avloc.io import decode
from avloc.io.write import write_video
from results_md import command, update_section

SIZE = (256, 256)
# A busy loop pinned to core 0 that ends by itself after the given number of seconds.
BUSY = ("import os, sys, time\nos.sched_setaffinity(0, {0})\nend = time.time() + float(sys.argv[1])\n"
        "while time.time() < end:\n    pass\n")


def old_to_tensor(frame: av.VideoFrame, size: tuple[int, int] | None) -> torch.Tensor:
    """The former ``decode._to_tensor``: float RGB at full size, then torch's antialiased bilinear."""
    image = torch.from_numpy(frame.to_ndarray(format="rgb24"))  # (H, W, 3) uint8
    image = image.permute(2, 0, 1).float().div_(255.0)  # (H, W, 3) -> (3, H, W)
    if size is not None and tuple(image.shape[1:]) != size:
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        image = image.clamp_(0.0, 1.0)
    return image.contiguous()


def decoded_frame(height: int, width: int, folder: Path) -> av.VideoFrame:
    """One decoded yuv420p frame of ``height x width`` (a smooth pattern with texture, H.264-coded)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 7.0) * np.cos(y / 5.0)], axis=-1)
    image = np.round(255 * image).astype(np.uint8)
    path = folder / f"{height}x{width}.mp4"
    write_video(path, np.stack([image, image]), 2)
    with av.open(str(path)) as container:
        return next(container.decode(video=0))


@contextmanager
def busy_core(seconds: float):
    """A process that keeps core 0 busy for at most ``seconds`` (killed earlier when the block ends)."""
    process = subprocess.Popen([sys.executable, "-c", BUSY, str(seconds)])
    time.sleep(0.3)  # let it start spinning
    try:
        yield
    finally:
        process.kill()
        process.wait()


def per_frame_ms(resize, frame: av.VideoFrame, repeats: int) -> float:
    resize(frame)  # warm-up (swscale builds its filters on the first call)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        resize(frame)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def time_extract(clips: int, seconds: float, clip_size: int, folder: Path) -> list[tuple[str, str, float]]:
    """Seconds for ``extract_features`` on synthetic clips, per (resize, condition)."""
    from avloc.data.benchmarks.synth import generate_dataset
    from avloc.extract import extract_features

    dataset = generate_dataset(folder / "data", clips=clips, seed=0, seconds=seconds, size=clip_size,
                               progress=False)
    new_to_tensor, rows = decode._to_tensor, []
    for busy in (False, True):
        for name, resize in (("torch F.interpolate (before)", old_to_tensor), ("swscale (now)", new_to_tensor)):
            decode._to_tensor = lambda frame, size, scalers=None, resize=resize: resize(frame, size)
            try:
                with busy_core(600) if busy else _nothing():
                    started = time.perf_counter()
                    extract_features(dataset, folder / f"{name[:5]}{busy}.h5", progress=False)
                    elapsed = time.perf_counter() - started
            finally:
                decode._to_tensor = new_to_tensor
            condition = "one core busy" if busy else "none added"
            print(f"extract {clips} clips: {name:30s} {condition:14s} {elapsed:6.1f} s")
            rows.append((name, condition, elapsed))
    return rows


@contextmanager
def _nothing():
    yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per case (median reported)")
    parser.add_argument("--extract-clips", type=int, default=0, help="also time `avloc extract` on this many clips")
    parser.add_argument("--extract-seconds", type=float, default=4.0, help="length of those clips")
    parser.add_argument("--extract-size", type=int, default=320, help="frame size of those clips (square)")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    load = os.getloadavg()[0]  # other jobs on the machine make every number slower
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        frames = {"240x320": decoded_frame(240, 320, Path(tmp)), "1920x1080": decoded_frame(1080, 1920, Path(tmp))}
        scalers = (decode.VideoReformatter(), decode.VideoReformatter())
        resizers = {
            "torch F.interpolate (before)": lambda frame: old_to_tensor(frame, SIZE),
            "swscale (now)": lambda frame: decode._to_tensor(frame, SIZE, scalers),
        }
        for busy in (False, True):
            with busy_core(600) if busy else _nothing():
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    for source, frame in frames.items():
                        for name, resize in resizers.items():
                            ms = per_frame_ms(resize, frame, args.repeats)
                            condition = "one core busy" if busy else "none added"
                            print(f"{source:>9s} -> 256: {name:30s} {threads} threads {condition:14s} {ms:8.2f} ms")
                            rows.append((source, name, threads, condition, ms))
        torch.set_num_threads(default_threads)
        extract_rows = (time_extract(args.extract_clips, args.extract_seconds, args.extract_size, Path(tmp))
                        if args.extract_clips else [])

    table = ["| frame | resize | torch threads | other load | ms per frame |", "| --- | --- | --- | --- | --- |"]
    table += [f"| {s} -> 256x256 | {n} | {t} | {c} | {ms:.2f} |" for s, n, t, c, ms in rows]
    body = (
        f"`{command()}` — one decoded H.264 frame converted to a `(3, 256, 256)` float tensor, median of "
        f"{args.repeats} calls. Before: RGB at full size, float, `F.interpolate(bilinear, antialias=True)` "
        "(torch's thread pool). Now: swscale's antialiased bilinear on uint8 planar RGB in the decoding thread "
        "(`avloc.io.decode._to_tensor`). \"One core busy\": a busy-loop process pinned to core 0 added. "
        f"Load average when the run started: {load:.1f} (other jobs were running on the machine).\n\n"
        + "\n".join(table)
    )
    if extract_rows:
        table = ["| resize | other load | seconds |", "| --- | --- | --- |"]
        table += [f"| {n} | {c} | {s:.1f} |" for n, c, s in extract_rows]
        body += (
            f"\n\n`extract_features` end to end (small-visual + small-audio, 4 fps, 256 px, "
            f"{default_threads} torch threads) on {args.extract_clips} synthetic clips of {args.extract_seconds:g} s "
            f"at {args.extract_size}x{args.extract_size}:\n\n" + "\n".join(table)
        )
    update_section("Frame resizing", body)


if __name__ == "__main__":
    main()
