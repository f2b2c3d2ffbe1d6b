"""Every method on the same synthetic benchmark, same budget, 3 seeds: a Table-1-style comparison.

    python bench/compare.py [--clips 300] [--seeds 0 1 2] [--epochs 40] [--methods NAME ...]
    python bench/compare.py --assets ASSETS --classes 20 --data-seed 11 --size 256 --seconds 4 \
        --recipe default --work runs/ablation-composite

Generates the benchmark and its feature cache once (kept in --work for reruns), trains every
method with every seed on the same features with the same budget (epochs, batch 32, Adam
lr), evaluates each on the test split and rewrites the "Method comparison" section of
docs/results.md: per scenario cIoU@0.5, AUC, AP50, IoU@0.5, TN%, pointing and segment
accuracy, mean ± std over seeds, with random-map and centre-box rows. Each method trains with
the weakest supervision it supports: video-level labels, or none ("self") for the
self-supervised ones; the table says which. Finished runs in --work are reused.

With ``--assets`` the benchmark is the composite one (``avloc synth --assets``) and the section is
"Method comparison (composite benchmark)". ``--recipe default`` trains every method with what
``avloc train --model M`` does with no other flag (its epochs, learning rate and, for STM, its
default options) instead of --epochs / --lr and the former STM rows' audio dropout 1.0.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from avloc.data.benchmarks.composite import generate_composite
from avloc.data.benchmarks.synth import generate_dataset
from avloc.evaluate import evaluate
from avloc.report import SCENARIO_ROWS
from avloc.extract import extract_features
from avloc.config import TrainConfig
from avloc.train import fit
from results_md import command, update_section

METRICS = (("ciou_at", "cIoU@0.5"), ("auc", "AUC"), ("ap50", "AP50"), ("iou_at_0.5", "IoU@0.5"), ("tn_rate", "TN%"),
           ("pointing", "pointing"))
BASELINES = ("baseline:random", "baseline:centre")


@dataclass(frozen=True)
class Method:
    """One row of the comparison: a registered model, its options, and its supervision."""

    model: str
    options: dict = field(default_factory=dict)
    supervision: str = "auto"  # what avloc train does without --supervision


METHODS = {
    "STM none": Method("stm", {"variant": "none", "audio_dropout": 1.0}),
    "STM u": Method("stm", {"variant": "u", "audio_dropout": 1.0}),
    "STM c+u": Method("stm", {"variant": "c+u", "audio_dropout": 1.0}),
    "AVE (DMRN)": Method("ave", {"fusion": "dmrn"}),
    "DMRFE": Method("dmrfe"),
    "AVDLN": Method("avdln", supervision="self"),
    "AVFB": Method("avfb"),
    "AVFB + AVTGML": Method("avfb", supervision="self"),
    "EZ-VSL": Method("ezvsl", supervision="self"),
    "TAVLO": Method("tavlo", supervision="self"),
}


def prepare(work: Path, clips: int, data_seed: int, size: int, assets: str | None = None, classes: int | None = None,
            seconds: float = 10.0) -> tuple[Path, Path]:
    """The benchmark and its default-encoder feature cache in ``work`` (made once): the shape
    benchmark (128 px clips), or with ``assets`` the composite one (``avloc synth --assets``, clips
    at ``size`` px)."""
    if assets is None:
        dataset = work / f"synth{clips}-seed{data_seed}"
        if not (dataset / "manifest.jsonl").exists():
            generate_dataset(dataset, clips=clips, seed=data_seed, seconds=seconds, progress=True)
    else:
        dataset = work / f"composite{clips}-classes{classes or 'all'}-seed{data_seed}"
        generate_composite(dataset, assets, clips=clips, seed=data_seed, size=size, seconds=seconds, classes=classes)
    features = work / f"{dataset.name}-small{size}.h5"
    extract_features(dataset, features, size=size, progress=True)
    return dataset, features


def training_minutes(log_csv: Path) -> float:
    """Wall time of a run from its log (sum over epochs), also when it was finished earlier."""
    with open(log_csv, newline="") as rows:
        return sum(float(row["seconds"]) for row in csv.DictReader(rows)) / 60


def run(methods: dict[str, Method], dataset: Path, features: Path, work: Path, seeds: list[int], epochs: int | None,
        lr: float | None, size: int) -> tuple[dict[str, list[dict]], dict[str, list[float]]]:
    """Train and evaluate every method with every seed; baselines first. Returns reports and minutes.

    ``epochs`` / ``lr`` None: ``avloc train``'s defaults."""
    budget = {key: value for key, value in (("epochs", epochs), ("lr", lr)) if value is not None}
    reports: dict[str, list[dict]] = {
        source: [evaluate(source, dataset, features=str(features), progress=False)] for source in BASELINES
    }
    minutes: dict[str, list[float]] = {}
    for name, method in methods.items():
        for seed in seeds:
            run_dir = work / f"{name.lower().replace(' ', '-')}-seed{seed}"
            config = TrainConfig(dataset=str(dataset), features=str(features), out=str(run_dir), model=method.model,
                                 model_options=method.options, supervision=method.supervision, size=size,
                                 seed=seed, **budget)
            best = fit(config, resume=(run_dir / "last.pt").exists(), progress=False)
            minutes.setdefault(name, []).append(training_minutes(run_dir / "log.csv"))
            report = evaluate(best, dataset, features=str(features), progress=False)
            reports.setdefault(name, []).append(report)
            print(f"{name} seed {seed}: single cIoU@0.5 {report['rows'].get('single', {}).get('ciou_at')}, "
                  f"pointing {report['rows'].get('single', {}).get('pointing')}", flush=True)
    return reports, minutes


def cell(values: list[float | None], percent: bool = False) -> str:
    """mean ± std of the values that exist, or "-"."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    scale = 100 if percent else 1
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}" if percent else f"{mean:.3f} ± {std:.3f}"


def tables(reports: dict[str, list[dict]], supervision: dict[str, str]) -> str:
    """One markdown table per scenario, a row per method."""
    lines = []
    for scenario in SCENARIO_ROWS:
        lines += [f"**{scenario}**", "",
                  "| method | supervision | " + " | ".join(name for _, name in METRICS) + " | segment acc. |",
                  "| --- " * (len(METRICS) + 3) + "|"]
        for name, runs in reports.items():
            rows = [r["rows"].get(scenario, {}) for r in runs]
            cells = [cell([row.get(key) for row in rows], percent=key == "tn_rate") for key, _ in METRICS]
            accuracy = cell([r["segment_accuracy"] for r in runs])
            lines.append(f"| {name} | {supervision.get(name, '-')} | " + " | ".join(cells) + f" | {accuracy} |")
        lines.append("")
    return "\n".join(lines)


def write_results(title: str, work_json: Path, settings: str, reports: dict[str, list[dict]],
                  minutes: dict[str, list[float]], supervision: dict[str, str]) -> None:
    """Keep the raw reports in ``work_json`` and rewrite the docs/results.md section ``title``."""
    work_json.write_text(json.dumps(reports, indent=1))
    timing = ", ".join(f"{name}: {statistics.mean(m):.1f}" for name, m in minutes.items())
    body = (
        f"`{command()}` — {settings}; mean ± std over seeds; test split. Minutes of training per run: {timing}.\n\n"
        + tables(reports, supervision)
        + "\nProtocol: " + next(iter(reports.values()))[0]["protocol"]["description"]
    )
    update_section(title, body)


def methods_for(recipe: str) -> dict[str, Method]:
    """The rows of ``recipe``: "flags" (STM with audio dropout 1.0) or "default" (STM's defaults)."""
    if recipe == "flags":
        return METHODS
    return {name: Method("stm", {"variant": method.options["variant"]}) if method.model == "stm" else method
            for name, method in METHODS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", type=int, default=128, help="frame size fed to the encoders")
    parser.add_argument("--work", default="runs/compare", help="folder for the data, cache and runs")
    parser.add_argument("--assets", default=None, help="assets folder: the composite benchmark instead of shapes")
    parser.add_argument("--classes", type=int, default=None, help="composite benchmark: sounding classes")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--recipe", choices=("flags", "default"), default="flags",
                        help="flags: --epochs/--lr, STM audio dropout 1.0; default: avloc train's defaults")
    args = parser.parse_args()
    work = Path(args.work)
    dataset, features = prepare(work, args.clips, args.data_seed, args.size, args.assets, args.classes, args.seconds)
    methods = {name: method for name, method in methods_for(args.recipe).items() if name in args.methods}
    benchmark = "composite" if args.assets else "synthetic"
    if args.recipe == "default":
        reports, minutes = run(methods, dataset, features, work, args.seeds, None, None, args.size)
        recipe = "avloc train's defaults for every method (no flag but --model and the STM variant)"
    else:
        reports, minutes = run(methods, dataset, features, work, args.seeds, args.epochs, args.lr, args.size)
        recipe = f"{args.epochs} epochs, Adam lr {args.lr}, batch 32"
    settings = (f"{args.clips} {benchmark} clips of {args.seconds:g} s (data seed {args.data_seed}), small-visual + "
                f"small-audio features (their default weights) at {args.size} px, {recipe}, seeds {args.seeds}")
    write_results(f"Method comparison ({benchmark} benchmark)", work / "compare.json", settings, reports, minutes,
                  {name: method.supervision for name, method in methods.items()})


if __name__ == "__main__":
    main()
