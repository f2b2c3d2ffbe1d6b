"""The STM ablation (none / u / c+u) on the synthetic benchmark, with baselines.

    python bench/stm_ablation.py [--clips 300] [--seeds 0 1 2] [--epochs 150] [--size 128]

Generates the benchmark and its feature cache once (kept in --work for reruns), trains every
variant with every seed (weak video-level labels), evaluates each on the test split and
rewrites the "STM ablation" section of docs/results.md with mean +- std per scenario.
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
    args = parser.parse_args()
    work = Path(args.work)
    dataset, features = prepare(work, args.clips, args.data_seed, args.size)
    methods = {f"STM {v}": Method("stm", {"variant": v, "audio_dropout": args.audio_dropout}) for v in args.variants}
    reports, minutes = run(methods, dataset, features, work, args.seeds, args.epochs, args.lr, args.size)
    settings = (f"{args.clips} synthetic clips (data seed {args.data_seed}), small-visual + small-audio features at "
                f"{args.size} px, {args.epochs} epochs, Adam lr {args.lr}, batch 32, weak video labels, audio dropout "
                f"{args.audio_dropout}, seeds {args.seeds}")
    write_results("STM ablation (synthetic benchmark)", work / "ablation.json", settings, reports, minutes,
                  {name: "video" for name in methods})


if __name__ == "__main__":
    main()
