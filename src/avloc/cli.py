"""The ``avloc`` command line: parse, build, call one library function, report."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from avloc import __version__
from avloc.catalogue import DEVICE_CHOICES, STORAGE_CHOICES  # avloc.devices' and avloc.data.cache's, without torch
from avloc.types import AvlocError


def _synth(args: argparse.Namespace) -> int:
    if args.assets is not None:  # pictures and recordings instead of shapes: avloc.data.benchmarks.composite
        import json

        from avloc.data.benchmarks.composite import generate_composite

        out = generate_composite(args.out, args.assets, clips=args.clips, seed=args.seed, size=args.size,
                                 seconds=args.seconds, workers=args.workers, progress=not args.quiet,
                                 classes=args.classes)
        marker = json.loads((out / "synth.json").read_text())
        heard, total = marker["heard_classes"], len(marker["classes"])
        print(f"wrote {args.clips} clips to {out} from {len(heard)} of {total} classes and "
              f"{marker['silent_pictures']} silent pictures of {args.assets}")
        if len(heard) < total:
            print(f"  sounding classes (drawn from seed {args.seed}): {', '.join(heard)}")
        for reason, count in marker["skipped"].items():
            print(f"  skipped {count} {reason}")
        return 0
    if args.classes is not None:
        raise AvlocError("--classes needs --assets (the shape benchmark has no classes to choose)")
    from avloc.data.benchmarks.synth import generate_dataset

    out = generate_dataset(args.out, clips=args.clips, seed=args.seed, size=args.size, seconds=args.seconds,
                           workers=args.workers, progress=not args.quiet, sizes=args.sizes)
    print(f"wrote {args.clips} clips to {out} (object sizes: {args.sizes})")
    return 0


def _parse_weights(values: list[str]) -> dict[str, str]:
    weights = {}
    for value in values:
        modality, sep, source = value.partition("=")
        if not sep or modality not in ("visual", "audio") or not source:
            raise AvlocError(f"bad --weights {value!r}: expected visual=NAME_OR_FILE or audio=NAME_OR_FILE")
        weights[modality] = source
    return weights


def _parse_options(values: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` model options as text; the model's type hints convert them (see ``_train``)."""
    options = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AvlocError(f"--option expects KEY=VALUE, got {item!r}")
        options[key] = value
    return options


def _pretrain(args: argparse.Namespace) -> int:
    from avloc.pretrain import PretrainConfig, pretrain_visual

    config = PretrainConfig(assets=args.assets, out=args.out, encoder=args.encoder, size=args.size, crop=args.crop,
                            steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    result = pretrain_visual(config, progress=not args.quiet)
    step, gap, untrained = result["validation"][-1]
    print(f"trained {config.encoder} for {step} steps on {result['pictures']} pictures: delimiting gap on "
          f"{result['held_out']} held-out pictures {gap:.3f} (untrained {untrained:.3f})")
    print(f"wrote {result['out']}: use it with --weights visual={result['out']}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from avloc.data.cache import DEFAULT_STORAGE
    from avloc.data.formats.ave_features import AUTHORS_FRAMES_PER_SECOND
    from avloc.devices import resolve_device
    from avloc.extract import extract_ave_features, extract_features, parse_shard

    weights = _parse_weights(args.weights)
    common = {"visual_weights": weights.get("visual"), "audio_weights": weights.get("audio"),
              "shard": parse_shard(args.shard), "batch_size": args.batch_size, "progress": not args.quiet,
              "skip_broken": args.skip_broken,
              "device": resolve_device(args.device), "precision": args.precision}
    if args.format == "ave":
        if args.fps is not None or args.audio_window is not None:
            raise AvlocError("--fps and --audio-window do not apply to --format ave (one row step per second, "
                             "its frames set by --frames-per-second)")
        if args.storage is not None:
            raise AvlocError("--storage applies to --format avloc only (the AVE layout holds float32 arrays)")
        if args.workers is not None:
            raise AvlocError("--workers applies to --format avloc only")
        result = extract_ave_features(
            args.dataset, args.out, visual=args.visual or "vgg19", audio=args.audio or "vggish-embed",
            size=224 if args.size is None else args.size,
            frames_per_second=AUTHORS_FRAMES_PER_SECOND if args.frames_per_second is None else args.frames_per_second,
            **common,
        )
    else:
        if args.frames_per_second is not None:
            raise AvlocError("--frames-per-second applies to --format ave only")
        result = extract_features(
            args.dataset, args.out, visual=args.visual or "small-visual", audio=args.audio or "small-audio",
            fps=4.0 if args.fps is None else args.fps, size=256 if args.size is None else args.size,
            audio_window=args.audio_window, storage=args.storage or DEFAULT_STORAGE, workers=args.workers, **common,
        )
    print(f"encoded {result.extracted} clips, {result.skipped} already done")
    if result.summary:  # --skip-broken
        print(result.summary)
    if result.remaining:
        print(f"{result.remaining} clips are left to other shards; the last shard to finish writes {result.out}")
    else:
        print(f"features in {result.out}")
    return 0


def _encoders(args: argparse.Namespace) -> int:
    from avloc.catalogue import format_encoders  # a table checked against the encoders: no torch to import

    print(format_encoders())
    return 0


def _models(args: argparse.Namespace) -> int:
    from avloc.catalogue import format_models  # a table checked against describe_model: no torch to import

    print(format_models())
    return 0


# The STM shortcut flags: option -> flag. Given, they write STM's options; not given, STM's defaults hold.
_STM_FLAGS = {"variant": "--variant", "memory_size": "--memory-size", "causal": "--symmetric",
              "audio_dropout": "--audio-dropout"}


def _train(args: argparse.Namespace) -> int:
    from avloc.distributed import is_main
    from avloc.models._registry import check_options, model_name, option_defaults
    from avloc.config import RESERVED_OPTIONS, TrainConfig, read_config_file
    from avloc.devices import training_device
    from avloc.train import fit

    # Settings, lowest priority first: TrainConfig's defaults, the --config file, explicit flags.
    file = read_config_file(args.config) if args.config else {}
    weights = _parse_weights(args.weights)
    flags = {"model": args.model, "features": args.features, "visual_weights": weights.get("visual"),
             "audio_weights": weights.get("audio"), "train_visual": args.train_visual,
             "train_audio": args.train_audio, "augment": args.augment, "steps": args.steps,
             "batch_size": args.batch_size, "epochs": args.epochs, "lr": args.lr, "supervision": args.supervision,
             "seed": args.seed, "workers": args.workers, "out": args.out, "visual": args.visual,
             "audio": args.audio, "fps": args.fps, "size": args.size}
    # Encoders, fps and size not given here or in the file: TrainConfig reads the feature cache's.
    values = {**file, **{key: value for key, value in flags.items() if value is not None}, "dataset": args.dataset}
    model = values["model"] = model_name(values.get("model", "stm"))  # names are case-insensitive
    # The file's options are those of the file's model: another --model starts from its own defaults.
    options = dict(file.get("model_options", {})) if file.get("model", "stm") == model else {}
    shortcuts = {"variant": args.variant, "memory_size": args.memory_size, "audio_dropout": args.audio_dropout,
                 "causal": None if args.symmetric is None else not args.symmetric}
    if model == "stm":
        options = {**options, **{key: value for key, value in shortcuts.items() if value is not None}}
    else:
        given = [_STM_FLAGS[key] for key, value in shortcuts.items() if value is not None]
        if given:
            raise AvlocError(f"{given[0]} applies to --model stm only; give {model}'s options as --option KEY=VALUE")
    options.update(check_options(model, _parse_options(args.option), parse_strings=True, reserved=RESERVED_OPTIONS))
    values["model_options"] = options
    if "out" not in values:  # named from the final options: --option variant=u trains stm-u
        name = f"{model}-{options.get('variant', option_defaults('stm')['variant'])}" if model == "stm" else model
        values["out"] = f"runs/{name}-seed{values.get('seed', 0)}"
    best = fit(TrainConfig(**values), resume=args.resume, progress=not args.quiet, skip_broken=args.skip_broken,
               device=training_device(args.device), precision=args.precision)
    if is_main():  # under torchrun, one report for all processes
        print(f"best checkpoint (lowest validation loss): {best}")
        print(f"log and loss curve: {best.parent / 'log.csv'}, {best.parent / 'loss.png'}")
    return 0


def _float_flag(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise AvlocError(f"{flag} expects a number, got {text!r}") from None


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dataclasses import replace

    from avloc.devices import resolve_device
    from avloc.evaluate import evaluate
    from avloc.report import default_report_path, format_table, write_report
    from avloc.protocols import PROTOCOLS
    from avloc.trained import resolve_source

    if Path(args.checkpoint).is_dir():  # a run folder: its best.pt (the report goes beside it)
        args.checkpoint = str(resolve_source(args.checkpoint))
    if args.task == "cross-modal":
        import json

        from avloc.atomic import atomic_path
        from avloc.cross_modal import evaluate_cross_modal

        scores = evaluate_cross_modal(args.checkpoint, args.dataset, args.features, split=args.split,
                                      device=resolve_device(args.device))
        out = Path(args.out or Path(args.checkpoint).with_name(f"eval-cross-modal-{args.split}.json"))
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(scores, indent=1))
        print(f"{args.checkpoint} on {args.split}: A2V accuracy {scores['a2v']:.3f}, V2A accuracy "
              f"{scores['v2a']:.3f} ({scores['clips']} clips with one event shorter than the clip; "
              f"{scores['skipped']} skipped; exact start step)")
        print(f"wrote {out}")
        return 0
    named = PROTOCOLS[args.protocol]
    floor = named.otsu_floor
    if args.otsu_floor is not None:
        floor = None if args.otsu_floor.lower() == "none" else _float_flag("--otsu-floor", args.otsu_floor)
    protocol = replace(named, size=named.size if args.size is None else args.size, gt_convention=args.gt,
                       box_mode=args.boxes, matching=args.matching, top_percent=args.top_percent, otsu_floor=floor)
    if args.save_visualizations < 0:
        raise AvlocError(f"--save-visualizations must be >= 0, got {args.save_visualizations}")
    out = Path(args.out) if args.out else default_report_path(args.checkpoint, args.dataset, args.split, protocol.name)
    panels = out.with_name(f"{out.stem}-visualizations")
    report = evaluate(args.checkpoint, args.dataset, split=args.split, features=args.features, protocol=protocol,
                      progress=not args.quiet, visualizations=args.save_visualizations, visualization_dir=panels,
                      skip_broken=args.skip_broken,
                      device=resolve_device(args.device))
    write_report(report, out)
    print(format_table(report))
    if args.skip_broken:  # the clips left out, listed beside the report
        from avloc.data.usable import Skipped, record_skipped

        skipped = [Skipped(**entry) for entry in report["skipped"]]
        print(record_skipped(out.with_suffix(".skipped.txt"), report["n_clips"], report["n_clips"] + len(skipped),
                             skipped))
    if args.save_visualizations:
        print(f"wrote {len(report['visualizations'])} panels ({args.save_visualizations} frames per scenario at most) "
              f"to {panels}")
    print(f"wrote {out}")
    return 0


def _localize(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from avloc.devices import resolve_device
    from avloc.localize_video import localize_video

    device = resolve_device(args.device)
    if len(args.video) > 1 or Path(args.video[0]).is_dir():
        return _localize_batch(args, device)
    video = args.video[0]
    out = Path(args.out) if args.out else Path("avloc-out") / Path(video).stem
    result = localize_video(video, out, model=args.model, fps=args.fps, start=args.start, end=args.end,
                            stream=args.stream, box_mode=args.boxes, sheet_frames=args.sheet_frames, device=device,
                            progress=not args.quiet, precision=args.precision, overlay=not args.no_overlay)
    print(f"{len(result.times)} steps, {result.frames_written} frames" + (" (no overlay)" if args.no_overlay else ""))
    if result.latencies is not None:
        ms = 1000 * result.latencies
        print(f"streaming latency per step: mean {ms.mean():.1f} ms, median {np.median(ms):.1f} ms, "
              f"95th percentile {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms "
              f"(one step lasts {1000 / result.fps:.0f} ms)")
    for name, path in result.files().items():
        print(f"{name:<18} {path}")
    return 0


def _localize_batch(args: argparse.Namespace, device) -> int:
    """Several videos or folders: one output folder each under --out, and --out/summary.csv."""
    from avloc.localize_batch import FINISHED, LOCALISED, SKIPPED, localize_batch

    result = localize_batch(args.video, args.out or "avloc-out", model=args.model, fps=args.fps, start=args.start,
                            end=args.end, stream=args.stream, box_mode=args.boxes, sheet_frames=args.sheet_frames,
                            device=device, progress=not args.quiet, precision=args.precision,
                            overlay=not args.no_overlay)
    done, finished, skipped = (result.count(status) for status in (LOCALISED, FINISHED, SKIPPED))
    print(f"localised {done} of {len(result.rows)} videos, {skipped} skipped (see {result.summary})")
    if finished:
        print(f"{finished} finished by an earlier run with the same settings, skipped as finished")
    return 1 if skipped else 0


def _datasets_check(args: argparse.Namespace) -> int:
    from avloc.data.formats.check import inspect_dataset

    report = inspect_dataset(args.folder)
    print("\n".join(report.lines))
    if not report.problems:
        return 0
    print(f"avloc: error: {report.source}: {report.problems} problems, listed above: a run on this dataset stops "
          "at the first (--skip-broken on extract, train and eval leaves the broken clips out)", file=sys.stderr)
    return 1


def _datasets_convert(args: argparse.Namespace) -> int:
    from avloc.data.formats.convert import convert_dataset

    result = convert_dataset(args.layout, args.source, args.out, videos=args.videos, boxes=args.boxes,
                             link=args.link, split=args.split, frame_time=args.frame_time, progress=not args.quiet)
    print(f"wrote {result.manifest}: {result.clips} clips, {result.annotated_frames} annotated frames")
    if result.missing:
        shown = ", ".join(result.missing[:10]) + (" ..." if len(result.missing) > 10 else "")
        print(f"warning: {len(result.missing)} clips left out, their videos were not found: {shown}")
        print(f"what to fetch (source id and time window of each): {result.missing_list}")
    print(f"check it with: avloc datasets check {args.out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import torch

    from avloc.demo import run_demo
    from avloc.report import format_table

    threads = torch.get_num_threads()
    if not os.environ.get("OMP_NUM_THREADS"):
        # One clip of small maps: a second OpenMP thread gains little here, and on a busy machine
        # every small op waits for it (two threads: 1.7x the demo's wall time and 1.8x its CPU time
        # on 2 shared cores, same maps). The overlay is encoded on a thread of its own meanwhile.
        torch.set_num_threads(1)
    try:
        result, report = run_demo(args.out, seed=args.seed, scenario=args.scenario, model=args.model,
                                  progress=not args.quiet)
    finally:  # main() may run in-process (tests, scripts): leave torch as it was
        torch.set_num_threads(threads)
    print(format_table(report))
    print(f"overlay video: {result.files()['overlay.mp4']}")
    print(f"contact sheet: {result.files()['contact_sheet.png']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from avloc.export import export_model

    result = export_model(args.checkpoint, args.format, args.out)
    print(f"wrote {result.path} ({result.format})")
    for what, specs in (("inputs", result.inputs), ("outputs", result.outputs)):
        print(f"{what}:")
        for spec in specs:
            print(f"  {spec.describe()}")
    checked = "not checked (onnxruntime is not installed)" if result.difference is None else \
        f"largest difference from PyTorch over two steps {result.difference:.2g}"
    print(f"{checked}; the log-mel front end stays outside: settings in the file's metadata 'avloc.mel'")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avloc.serve import ServeConfig, serve

    config = ServeConfig(model=args.model, device=args.device, host=args.host, port=args.port,
                         max_seconds=args.max_seconds, max_mb=args.max_mb, keep_runs=args.keep_runs,
                         work=None if args.work is None else Path(args.work))
    serve(config, on_ready=lambda url: print(f"avloc serve: {url} (Ctrl+C stops it)", flush=True))
    return 0


def _add_encoder_flags(parser: argparse.ArgumentParser, defaults: dict[str, str]) -> None:
    """--visual, --audio, --weights, --fps, --size; left None when absent (``defaults`` says what then)."""
    parser.add_argument("--visual", default=None,
                        help=f"visual encoder (see `avloc encoders`; default: {defaults['visual']})")
    parser.add_argument("--audio", default=None, help=f"audio encoder (see `avloc encoders`; default: {defaults['audio']})")
    parser.add_argument("--weights", action="append", default=[], metavar="MODALITY=SOURCE",
                        help="pretrained weights: visual=IMAGENET1K_V1, audio=audioset, or visual=/path/file.pth "
                        "(repeatable; default: the encoder's bundled set, small-visual's 'stamps', else random init; "
                        "visual=random for the random init)")
    parser.add_argument("--fps", type=float, default=None, help=f"steps per second (default: {defaults['fps']})")
    parser.add_argument("--size", type=int, default=None, help=f"frame size in pixels (default: {defaults['size']})")


# avloc.accelerate.PRECISION_CHOICES, spelled out so that --help needs no torch (tests/test_accelerate.py checks)
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def _add_precision_flag(parser: argparse.ArgumentParser) -> None:
    """--precision auto|fp32|bf16|fp16 (avloc.accelerate.acceleration), auto by default."""
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                        help="arithmetic of the encoders and the model: auto (default) is bf16 autocast on CUDA "
                        "(fp16 on GPUs without bf16) with channels-last encoders, pinned memory and loader workers, "
                        "and fp32 on the CPU and MPS; bf16 or fp16 force autocast (on the CPU too)")


def _add_device_flag(parser: argparse.ArgumentParser, auto: str = "") -> None:
    """--device auto|cpu|cuda|mps (avloc.devices.resolve_device), auto by default."""
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                        help=f"where to run: auto (default) takes the GPU when there is one, CUDA then MPS, else "
                        f"the CPU{auto}; cuda or mps when there is none is an error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avloc", description="Find which object is making the sound in a video.")
    parser.add_argument("--version", action="version", version=f"avloc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = sub.add_parser("synth", help="write the synthetic benchmark (native format, real MP4s)",
                           description="Write a synthetic audio-visual dataset with exact per-frame ground truth.")
    synth.add_argument("out", help="output dataset folder")
    synth.add_argument("--clips", type=int, required=True, help="number of clips")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0; same seed -> same dataset)")
    synth.add_argument("--size", type=int, default=128, help="frame size in pixels (default 128)")
    synth.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--assets", default=None, metavar="DIR",
                       help="compose clips from real cut-outs and recordings instead of shapes: DIR/<class>/*.png "
                       "+ *.ogg/*.wav/*.flac, DIR/_silent/*.png (scripts/build_assets.py; docs/datasets.md)")
    synth.add_argument("--classes", type=int, default=None, metavar="N",
                       help="with --assets: only N classes sound, drawn from the seed and listed in synth.json; "
                       "pictures of the others may be silent distractors (default: all classes)")
    synth.add_argument("--sizes", choices=("real", "small", "ave", "audioset-instrument"), default="real",
                       help="shape benchmark object sizes: real (drawn from the AVE / AudioSet-Instrument boxes, "
                       "default), small (the former few-percent objects), or one dataset's table")
    synth.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(run=_synth)

    pretrain = sub.add_parser("pretrain", help="pretrain a visual encoder that delimits objects, from real cut-outs",
                              description="Dense object recognition on composites of an assets folder "
                              "(scripts/build_assets.py); writes encoder weights for --weights visual=FILE.")
    pretrain.add_argument("modality", choices=["visual"], help="what to pretrain")
    pretrain.add_argument("assets", help="assets folder: <class>/*.png + sounds, _silent/*.png")
    pretrain.add_argument("--out", required=True, help="weights file to write (a state dict)")
    pretrain.add_argument("--encoder", default="small-visual", help="visual encoder (default small-visual)")
    pretrain.add_argument("--size", type=int, default=256, help="composed image size (default 256)")
    pretrain.add_argument("--crop", type=int, default=128,
                          help="trained on a random crop of this size of each image (default 128)")
    pretrain.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    pretrain.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    pretrain.add_argument("--lr", type=float, default=1e-3,
                          help="Adam learning rate, cosine-decayed to 0 (default 1e-3)")
    pretrain.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    pretrain.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pretrain.set_defaults(run=_pretrain)

    extract = sub.add_parser("extract", help="encode a dataset into a feature cache (HDF5)",
                             description="Encode every clip of a dataset (native or AVE folder) and store per-clip "
                             "feature maps. --format avloc: avloc's cache FILE.h5, defaults --visual small-visual "
                             "--audio small-audio --fps 4 --size 256. --format ave: the AVE authors' layout in a "
                             "folder (visual_feature.h5, audio_feature.h5, labels.h5, *_order.h5, Annotations.txt), "
                             "one row per clip holding its first 10 s as ten 1-s segments, defaults --visual vgg19 "
                             "--audio vggish-embed --size 224 and 16 frames per second (the authors'). "
                             "Resumable: finished clips are skipped.")
    extract.add_argument("dataset", help="dataset folder (manifest.jsonl, or AVE Annotations.txt + *_order.h5)")
    _add_encoder_flags(extract, {"visual": "small-visual; --format ave: vgg19",
                                 "audio": "small-audio; --format ave: vggish-embed",
                                 "fps": "4; not used by --format ave", "size": "256; --format ave: 224"})
    extract.add_argument("--format", default="avloc", choices=["avloc", "ave"],
                         help="avloc: feature cache FILE.h5 (default); ave: the AVE authors' folder layout")
    extract.add_argument("--frames-per-second", type=int, default=None,
                         help="--format ave: frames whose visual maps are averaged per 1-s segment (default 16)")
    extract.add_argument("--out", required=True, help="output FILE.h5 (--format avloc) or folder (--format ave)")
    extract.add_argument("--audio-window", type=float, default=None,
                         help="seconds of audio per step, centred on the frame (default 1/fps)")
    extract.add_argument("--shard", default="0/1", help="I/N: encode every N-th clip from the I-th (default 0/1)")
    extract.add_argument("--batch-size", type=int, default=16, help="steps per encoder batch (default 16)")
    extract.add_argument("--skip-broken", action="store_true",
                         help="leave out the clips whose video cannot be read (missing, not a video, no decodable "
                         "frame, no sound, too short), list them with their reasons in FILE.h5.skipped.txt (--format "
                         "ave: FOLDER.skipped.txt) and go on (default: the first one stops the run)")
    extract.add_argument("--storage", default=None, choices=STORAGE_CHOICES,
                         help="--format avloc: how the maps are stored (read back as float32 whichever it is): rounded, "
                         "float32 rounded to 13 significant bits (relative error <= 1.2e-4), shuffled and "
                         "gzip-compressed, a third of the size (default); float16, a quarter of the size (relative "
                         "error <= 4.9e-4); float32, exact and uncompressed")
    extract.add_argument("--workers", type=int, default=None,
                         help="--format avloc: processes decoding videos ahead of the encoders (default: up to 4 on "
                         "CUDA, 0 on the CPU, where decoding shares the encoders' cores)")
    extract.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_device_flag(extract)
    _add_precision_flag(extract)
    extract.set_defaults(run=_extract)

    encoders = sub.add_parser("encoders", help="list the visual and audio encoders")
    encoders.set_defaults(run=_encoders)

    models = sub.add_parser("models", help="list the registered localisation models")
    models.set_defaults(run=_models)

    train = sub.add_parser("train", help="train a model (weak supervision from segment or video labels by default)",
                           description="Train on random windows of a native dataset; checkpoints are selected on "
                           "the validation split. Writes config.yaml (the resolved settings), last.pt, best.pt, "
                           "log.csv and loss.png to --out. Settings come from the flags given, else from --config "
                           "FILE.yaml, else the defaults below; `avloc train DATASET --config RUN/config.yaml --out "
                           "NEW` repeats a run. Distributed: torchrun --nproc-per-node N -m avloc train ... (gloo on "
                           "CPU, NCCL on GPU).")
    train.add_argument("dataset", help="native dataset folder")
    train.add_argument("--config", default=None, metavar="FILE.yaml",
                       help="training settings (the keys of a run's config.yaml, model_options included); flags "
                       "given on the command line override it")
    train.add_argument("--model", default=None, help="model name (see `avloc models`; default stm)")
    train.add_argument("--variant", default=None, choices=["c+u", "u", "none"],
                       help="STM memory: c+u full (default), u no cross-modal memory, none no temporal memory "
                       "(stm only; same as --option variant=...)")
    train.add_argument("--memory-size", type=int, default=None, help="STM memory steps K (stm only; default 3)")
    train.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=None,
                       help="STM memory window around t (reads the future, as the authors' code) instead of the "
                       "past (stm only; default: the past)")
    train.add_argument("--audio-dropout", type=float, default=None,
                       help="STM: probability of hiding the audio vector from the classifier in training; at "
                       "inference it is fed scaled by 1 - P, so 1 hides it always (stm only; default 0.5, chosen on "
                       "validation; 0 is the paper); "
                       "see docs/results.md")
    train.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="a model option (repeatable), e.g. --option fusion=dmrn, converted by the option's type "
                       "(true/false, 3, 0.5, text) and overriding the flags above; see the model's docstring")
    train.add_argument("--features", default=None, help="feature cache from `avloc extract` (default: encode videos)")
    _add_encoder_flags(train, {"visual": "the --features source's, else small-visual",
                               "audio": "the --features source's, else small-audio",
                               "fps": "the --features source's, else 4", "size": "the --features source's, else 256"})
    train.add_argument("--train-visual", action=argparse.BooleanOptionalAction, default=None,
                       help="train the visual encoder too (without --features; default: frozen, as the STM authors)")
    train.add_argument("--train-audio", action=argparse.BooleanOptionalAction, default=None,
                       help="train the audio encoder (without --features; default: trained when training from the "
                       "videos, from scratch unless --weights audio=... is given, as the STM authors; frozen with "
                       "--features)")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="the STM paper's training augmentation: frames (or cached visual maps) resized x1.1 "
                       "and randomly cropped back, one crop per window (default: on; never at validation)")
    train.add_argument("--steps", type=int, default=None, help="steps per training window (default 4 = 1 s)")
    train.add_argument("--batch-size", type=int, default=None,
                       help="windows per optimiser step, over all processes under torchrun (the global batch; "
                       "it must divide by the number of processes; default 32)")
    train.add_argument("--epochs", type=int, default=None, help="epochs (default 30)")
    train.add_argument("--lr", type=float, default=None,
                       help="Adam learning rate (default 1e-3, chosen on validation; the paper's is 1e-4)")
    train.add_argument("--supervision", default=None, choices=["auto", "video", "segment", "self"],
                       help="auto (default): segment when the training clips have segments, else video, else the "
                       "model's own (self for the contrastive models); video: weak video-level labels; segment: "
                       "per-step labels from the segments (the label of each step's time); self: no labels")
    train.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    train.add_argument("--workers", type=int, default=None,
                       help="data loader processes (default: up to 4 on CUDA, 0 on the CPU)")
    train.add_argument("--out", default=None,
                       help="run folder (default: the --config file's, else runs/MODEL-VARIANT-seedS)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    train.add_argument("--skip-broken", action="store_true",
                       help="leave out the clips whose video cannot be read (missing, not a video, no decodable frame, "
                       "no sound, shorter than a window; with --features: not in the cache), found before the first "
                       "epoch, listed with their reasons in OUT/skipped.txt (default: the first one stops the run)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_device_flag(train, " (under torchrun: each process's own, cuda:LOCAL_RANK with NCCL, else the CPU)")
    _add_precision_flag(train)
    train.set_defaults(run=_train)

    evaluate = sub.add_parser("eval", help="localisation metrics per scenario (table + JSON)",
                              description="Evaluate a checkpoint (or baseline:random / baseline:centre) on a split.")
    evaluate.add_argument("checkpoint", help="checkpoint file, a run folder (its best.pt), or baseline:random / "
                          "baseline:centre")
    evaluate.add_argument("dataset", help="native dataset folder")
    evaluate.add_argument("--save-visualizations", type=int, default=0, metavar="N",
                          help="write a panel (frame, heat map, predicted boxes, ground truth, the frame's cIoU) "
                          "for N frames per scenario, in REPORT-visualizations/ beside the report (default 0)")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"], help="split (default test)")
    evaluate.add_argument("--task", default="localization", choices=["localization", "cross-modal"],
                          help="localization metrics per scenario, or A2V / V2A cross-modal localisation (AVDLN)")
    evaluate.add_argument("--features", default=None, help="feature cache (default: encode the videos)")
    evaluate.add_argument("--protocol", default="stm", choices=["stm", "lvs", "ezvsl", "avatar"],
                          help="stm: 256 px, per-frame min-max, threshold 0.5 (STM paper); lvs / ezvsl: exactly "
                          "the LVS / EZ-VSL evaluators' test.py at 224 px (their 'cIoU' column is AP50); avatar: "
                          "one global top-10%% threshold over the split (docs/protocols.md)")
    evaluate.add_argument("--otsu-floor", default=None, metavar="VALUE|none",
                          help="stm boxes: normalised values below VALUE are zeroed before Otsu (default 0.5, the STM "
                          "authors' box helper); none: Otsu on the whole map")
    evaluate.add_argument("--size", type=int, default=None, help="map resolution (default: the protocol's)")
    evaluate.add_argument("--gt", default="auto", choices=["auto", "union", "enclosing", "consensus"],
                          help="ground-truth map: auto = each frame's own rule from the dataset (Flickr: "
                          "consensus), else the union of boxes; union; enclosing box (STM authors); consensus "
                          "(sum of boxes / 2, clipped at 1). Polygons (AVATAR) are used where given")
    evaluate.add_argument("--boxes", default="enclosing", choices=["enclosing", "per-contour"],
                          help="predicted boxes: one enclosing box (STM authors) or one per contour")
    evaluate.add_argument("--matching", default="enclosing", choices=["enclosing", "greedy"],
                          help="how several boxes are compared for IoU@0.5")
    evaluate.add_argument("--top-percent", type=float, default=10.0, help="AVATAR global threshold for TN%%")
    evaluate.add_argument("--out", default=None, help="JSON report (default: eval-<model>-<dataset>-<split>-<protocol>"
                          ".json beside the checkpoint; for a baseline, in the current folder)")
    evaluate.add_argument("--skip-broken", action="store_true",
                          help="leave out the clips whose video cannot be read (with --features: not in the cache), "
                          "list them with their reasons beside the report (REPORT.skipped.txt) and score the others "
                          "(default: the first one stops the run)")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_device_flag(evaluate)
    evaluate.set_defaults(run=_eval)

    localize = sub.add_parser("localize", help="localise the sounding objects of a video: overlay, boxes, maps",
                              description="Heat maps, boxes and event classes of a video, frame by frame. Writes "
                                          "overlay.mp4, boxes.json, heatmaps.npz and contact_sheet.png to --out.")
    localize.add_argument("video", nargs="+",
                          help="video file with a soundtrack; or folders (searched recursively) and several files: "
                          "each video localised into --out/NAME, a summary in --out/summary.csv, videos that cannot "
                          "be localised skipped with their reason, finished ones not redone")
    localize.add_argument("--model", default="default", help="'default' (built-in) or a checkpoint file")
    localize.add_argument("--fps", type=float, default=None, help="steps per second (default: the model's, 4)")
    localize.add_argument("--out", default=None,
                          help="output folder (default avloc-out/VIDEO-NAME; for folders or several videos avloc-out)")
    localize.add_argument("--start", type=float, default=None, help="first second to process")
    localize.add_argument("--end", type=float, default=None, help="last second to process (exclusive)")
    localize.add_argument("--stream", action="store_true",
                          help="process step by step as if live; report latency (models that stream: STM with a causal "
                               "memory, EZ-VSL, AVDLN; the others run over the whole clip)")
    localize.add_argument("--boxes", default="enclosing", choices=["enclosing", "per-contour"],
                          help="one enclosing box per frame (STM authors) or one per contour")
    localize.add_argument("--sheet-frames", type=int, default=8, help="frames on the contact sheet (default 8)")
    localize.add_argument("--no-overlay", action="store_true",
                          help="write boxes.json, heatmaps.npz and contact_sheet.png only, no overlay.mp4: drawing "
                          "and encoding every frame costs about as much CPU as the default encoders")
    localize.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_device_flag(localize)
    _add_precision_flag(localize)
    localize.set_defaults(run=_localize)

    datasets = sub.add_parser("datasets", help="check dataset folders; convert the field's layouts to native")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")
    check = datasets_sub.add_parser("check", help="recognise the layout, count samples, list missing files",
                                    description="Validate a dataset folder (native manifest.jsonl, AVE "
                                                "Annotations.txt, or any layout `datasets convert` reads) and print "
                                                "counts per split and class and every missing or broken file. A "
                                                "native dataset's videos are each opened (headers, first frame, "
                                                "sound, long enough for the annotations); every bad manifest line "
                                                "and video is listed with its line, and the exit status is 1 when "
                                                "there is one. Works on annotation-only folders.")
    check.add_argument("folder", help="dataset folder (or a VGG-SS .json file)")
    check.set_defaults(run=_datasets_check)
    convert = datasets_sub.add_parser(
        "convert", help="convert a dataset layout to the native format (manifest.jsonl + videos)",
        description="Read a layout's annotation files, find each clip's video by name, link it into OUT/videos and "
                    "write OUT/manifest.jsonl with boxes in video pixels. See docs/datasets.md.")
    convert.add_argument("layout", choices=["ave", "audioset-instrument", "vggss", "flickr", "avatar"],
                         help="the source layout")
    convert.add_argument("source", help="ave: folder with Annotations.txt + *_order.h5, or the STM authors' "
                         "trainSet/valSet/testSet.txt; audioset-instrument: "
                         "folder with the split CSVs; vggss: the JSON file; flickr: folder of .xml files; avatar: "
                         "folder of <video id>/<frame>.json")
    convert.add_argument("--out", required=True, help="native dataset folder to write")
    convert.add_argument("--videos", default=None,
                         help="folder searched (recursively) for the videos, named by the source id: the YouTube id "
                              "(ave, audioset-instrument), VGGSound's <id>_<start> (vggss), the Flickr or AVATAR id "
                              "(default: the source folder); flickr also takes <id>.jpg + <id>.wav. Clips not found "
                              "are listed in OUT/missing_videos.txt (none found: that list alone, exit status 2)")
    convert.add_argument("--boxes", default=None,
                         help="ave, audioset-instrument: the STM authors' CVAT folder (<youtube id>/annotations.xml, "
                         "or one such <youtube id> folder)")
    convert.add_argument("--link", default="symlink", choices=["symlink", "hardlink", "copy"],
                         help="how videos enter OUT/videos (default symlink)")
    convert.add_argument("--split", default="test", choices=["train", "val", "test"],
                         help="split of layouts without one: vggss, flickr, avatar (default test)")
    convert.add_argument("--frame-time", type=float, default=None,
                         help="vggss, flickr: time in s of the annotated frame (default: the middle of the video)")
    convert.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    convert.set_defaults(run=_datasets_convert)

    demo = sub.add_parser("demo", help="localise a bundled clip with the default model and score it",
                          description="Localise one of the bundled demo clips (the built-in model's benchmark, "
                                      "test split, exact ground truth), print its metrics per scenario and where "
                                      "the overlay video and contact sheet are.")
    demo.add_argument("--out", default="avloc-demo", help="output folder (default avloc-demo)")
    demo.add_argument("--seed", type=int, default=None,
                      help="which of the scenario's clips: clip SEED modulo their number (default: random)")
    demo.add_argument("--scenario", default="single",
                      choices=["single", "mixed", "multi-entity", "off-screen", "cross-event"],
                      help="the kind of clip (default single: one sounding object among silent ones)")
    demo.add_argument("--model", default="default", help="'default' (built-in) or a checkpoint file")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)

    export = sub.add_parser(
        "export", help="export the streaming localiser (encoders + memory step) to ONNX or TorchScript",
        description="Export one step of the streaming localiser as one graph: frame (B, 3, H, W) in [0, 1] and "
                    "log-mel (B, 1, M, F) in, heat map and class logits / probabilities out, with STM's memory as "
                    "explicit state inputs and outputs (K slots + a mask; start from zeros, feed each next_* "
                    "output back). The log-mel front end (avloc.audio.log_mel) is not in the graph: compute it "
                    "from the step's audio segment with the settings in the file's metadata. README.md, "
                    "'Export', lists the inputs and outputs.")
    export.add_argument("checkpoint", help="'default' (built-in) or a checkpoint file")
    export.add_argument("--format", default="onnx", metavar="onnx|torchscript",
                        help="onnx (opset 20; needs onnx and onnxscript) or torchscript (default onnx)")
    export.add_argument("--out", required=True, help="file to write (written atomically)")
    export.set_defaults(run=_export)

    serve = sub.add_parser("serve", help="a web page to localise uploaded videos (needs the web extra)",
                           description="Serve a web page (Gradio) that localises an uploaded video or a bundled "
                           "demo clip: overlay with sound, class probabilities, a step slider, downloads. Offline; "
                           "needs pip install -e '.[web]'.")
    serve.add_argument("--model", default="default", help="'default' (built-in) or a checkpoint file")
    _add_device_flag(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    serve.add_argument("--max-seconds", type=float, default=120.0, help="longest video accepted (default 120)")
    serve.add_argument("--max-mb", type=float, default=200.0, help="largest upload accepted, in MB (default 200)")
    serve.add_argument("--work", default=None,
                       help="folder for uploads and results (default: a new temporary folder, removed on exit)")
    serve.add_argument("--keep-runs", type=int, default=20,
                       help="result folders kept in the work folder, the newest; older ones are removed (default 20)")
    serve.set_defaults(run=_serve)
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
    except BrokenPipeError:  # the reader went away (e.g. `avloc eval ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
