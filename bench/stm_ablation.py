"""The STM ablation (none / u / c+u) on the synthetic benchmark, with baselines.

    python bench/stm_ablation.py [--clips 300] [--seeds 0 1 2] [--epochs 150] [--size 128]
    python bench/stm_ablation.py --assets ASSETS --classes 20 --data-seed 11 --size 256 --seconds 4 \
        --variants none c+u --recipe default --work runs/ablation-composite

Generates the benchmark (the shape one, or with ``--assets`` the composite one) and its feature
cache once (kept in --work for reruns), trains every variant with every seed, evaluates each on
the test split and rewrites the docs/results.md section "STM ablation (synthetic benchmark)" (or
"STM ablation (composite benchmark)") with mean +- std per scenario. ``--recipe default`` trains
with what ``avloc train --variant V`` does with no other flag (its learning rate, epochs, audio
dropout and supervision), instead of --epochs / --lr / --audio-dropout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compare import Method, prepare, run, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["none", "u", "c+u"])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--audio-dropout", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=128, help="frame size fed to the encoders")
    parser.add_argument("--work", default="runs/ablation", help="folder for the data, cache and runs")
    parser.add_argument("--assets", default=None, help="assets folder: the composite benchmark instead of shapes")
    parser.add_argument("--classes", type=int, default=None, help="composite benchmark: sounding classes")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--recipe", choices=("flags", "default"), default="flags",
                        help="flags: --epochs/--lr/--audio-dropout, video labels; default: avloc train's defaults")
    args = parser.parse_args()
    work = Path(args.work)
    dataset, features = prepare(work, args.clips, args.data_seed, args.size, args.assets, args.classes, args.seconds)
    benchmark = "composite" if args.assets else "synthetic"
    if args.recipe == "default":
        methods = {f"STM {v}": Method("stm", {"variant": v}) for v in args.variants}
        reports, minutes = run(methods, dataset, features, work, args.seeds, None, None, args.size)
        recipe = "avloc train's defaults (no flag but --variant)"
    else:
        methods = {f"STM {v}": Method("stm", {"variant": v, "audio_dropout": args.audio_dropout}, "video")
                   for v in args.variants}
        reports, minutes = run(methods, dataset, features, work, args.seeds, args.epochs, args.lr, args.size)
        recipe = (f"{args.epochs} epochs, Adam lr {args.lr}, batch 32, weak video labels, audio dropout "
                  f"{args.audio_dropout}")
    settings = (f"{args.clips} {benchmark} clips of {args.seconds:g} s (data seed {args.data_seed}), small-visual + "
                f"small-audio features (their default weights) at {args.size} px, {recipe}, seeds {args.seeds}")
    supervision = {name: method.supervision for name, method in methods.items()}
    write_results(f"STM ablation ({benchmark} benchmark)", work / "ablation.json", settings, reports, minutes,
                  supervision)


if __name__ == "__main__":
    main()
