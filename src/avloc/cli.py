"""The ``avloc`` command line: parse, build, call one library function, report."""

from __future__ import annotations

import argparse
import logging
import sys

from avloc import __version__
from avloc.types import AvlocError


def _synth(args: argparse.Namespace) -> int:
    from avloc.data.synth import generate_dataset

    out = generate_dataset(args.out, clips=args.clips, seed=args.seed, size=args.size, seconds=args.seconds,
                           workers=args.workers, progress=not args.quiet)
    print(f"wrote {args.clips} clips to {out}")
    return 0


def _parse_weights(values: list[str]) -> dict[str, str]:
    weights = {}
    for value in values:
        modality, sep, source = value.partition("=")
        if not sep or modality not in ("visual", "audio") or not source:
            raise AvlocError(f"bad --weights {value!r}: expected visual=NAME_OR_FILE or audio=NAME_OR_FILE")
        weights[modality] = source
    return weights


def _extract(args: argparse.Namespace) -> int:
    from avloc.extract import extract_features, parse_shard

    weights = _parse_weights(args.weights)
    result = extract_features(
        args.dataset, args.out, visual=args.visual, audio=args.audio,
        visual_weights=weights.get("visual"), audio_weights=weights.get("audio"),
        fps=args.fps, size=args.size, audio_window=args.audio_window, shard=parse_shard(args.shard),
        batch_size=args.batch_size, progress=not args.quiet,
    )
    print(f"encoded {result.extracted} clips, {result.skipped} already done")
    if result.remaining:
        print(f"{result.remaining} clips are left to other shards; the last shard to finish writes {result.out}")
    else:
        print(f"features in {result.out}")
    return 0


def _encoders(args: argparse.Namespace) -> int:
    from avloc.models.encoders import create_encoder, list_encoders

    for name in list_encoders():
        encoder = create_encoder(name)
        print(f"{name:14s} {encoder.modality:7s} {encoder.out_channels:5d} channels")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avloc", description="Find which object is making the sound in a video.")
    parser.add_argument("--version", action="version", version=f"avloc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = sub.add_parser("synth", help="write the synthetic benchmark (native format, real MP4s)",
                           description="Write a synthetic audio-visual dataset with exact per-frame ground truth.")
    synth.add_argument("out", help="output dataset folder")
    synth.add_argument("--clips", type=int, required=True, help="number of clips")
    synth.add_argument("--seed", type=int, required=True, help="random seed (same seed -> same dataset)")
    synth.add_argument("--size", type=int, default=128, help="frame size in pixels (default 128)")
    synth.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(run=_synth)

    extract = sub.add_parser("extract", help="encode a dataset into a feature cache (HDF5)",
                             description="Encode every clip of a native dataset and store per-clip feature maps. "
                             "Resumable: finished clips are skipped.")
    extract.add_argument("dataset", help="native dataset folder (with manifest.jsonl)")
    extract.add_argument("--visual", default="small-visual", help="visual encoder (see `avloc encoders`)")
    extract.add_argument("--audio", default="small-audio", help="audio encoder (see `avloc encoders`)")
    extract.add_argument("--weights", action="append", default=[], metavar="MODALITY=SOURCE",
                         help="pretrained weights: visual=IMAGENET1K_V1, audio=audioset, or visual=/path/file.pth "
                         "(repeatable; default: random init from a fixed seed)")
    extract.add_argument("--out", required=True, help="output FILE.h5")
    extract.add_argument("--fps", type=float, default=4.0, help="steps per second (default 4)")
    extract.add_argument("--size", type=int, default=256, help="frame size in pixels (default 256)")
    extract.add_argument("--audio-window", type=float, default=None,
                         help="seconds of audio per step, centred on the frame (default 1/fps)")
    extract.add_argument("--shard", default="0/1", help="I/N: encode every N-th clip from the I-th (default 0/1)")
    extract.add_argument("--batch-size", type=int, default=16, help="steps per encoder batch (default 16)")
    extract.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(run=_extract)

    encoders = sub.add_parser("encoders", help="list the visual and audio encoders")
    encoders.set_defaults(run=_encoders)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="avloc: %(message)s")
    try:
        return args.run(args)
    except AvlocError as error:
        print(f"avloc: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avloc: interrupted", file=sys.stderr)
        return 130
