"""The STM ablation (none / u / c+u) on the synthetic benchmark, with baselines.

    python bench/stm_ablation.py [--clips 300] [--seeds 0 1 2] [--epochs 150] [--size 128]

Generates the benchmark and its feature cache once (kept in --work for reruns), trains every
variant with every seed (weak video-level labels), evaluates each on the test split and
rewrites the "STM ablation" section of docs/results.md with mean +- std per scenario.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from avloc.data.synth import generate_dataset
from avloc.evaluate import SCENARIO_ROWS, evaluate
from avloc.extract import extract_features
from avloc.train import TrainConfig, fit
from results_md import command, update_section

METRICS = (("ciou_at", "cIoU@0.5"), ("auc", "AUC"), ("ap50", "AP50"), ("iou_at_0.5", "IoU@0.5"), ("tn_rate", "TN%"),
           ("pointing", "pointing"))


def _cell(values: list[float | None], percent: bool = False) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    scale = 100 if percent else 1
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}" if percent else f"{mean:.3f} ± {std:.3f}"


def _training_minutes(log_csv: Path) -> float:
    """Wall time of a run from its log (sum over epochs), also when it was finished earlier."""
    with open(log_csv, newline="") as rows:
        return sum(float(row["seconds"]) for row in csv.DictReader(rows)) / 60


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
    dataset = work / f"synth{args.clips}-seed{args.data_seed}"
    if not (dataset / "manifest.jsonl").exists():
        generate_dataset(dataset, clips=args.clips, seed=args.data_seed, progress=True)
    features = work / f"{dataset.name}-small{args.size}.h5"
    extract_features(dataset, features, size=args.size, progress=True)

    reports: dict[str, list[dict]] = {}
    for source in ("baseline:random", "baseline:centre"):
        reports[source] = [evaluate(source, dataset, features=str(features), progress=False)]
    minutes = {}
    for variant in args.variants:
        for seed in args.seeds:
            config = TrainConfig(
                dataset=str(dataset), features=str(features), out=str(work / f"stm-{variant}-seed{seed}"),
                model_options={"variant": variant, "audio_dropout": args.audio_dropout}, size=args.size,
                epochs=args.epochs, lr=args.lr, seed=seed,
            )
            best = fit(config, resume=(Path(config.out) / "last.pt").exists(), progress=False)
            minutes.setdefault(variant, []).append(_training_minutes(best.with_name("log.csv")))
            report = evaluate(best, dataset, features=str(features), progress=False)
            reports.setdefault(f"stm {variant}", []).append(report)
            print(f"{variant} seed {seed}: all cIoU@0.5 {report['rows']['all']['ciou_at']:.3f}", flush=True)
    (work / "ablation.json").write_text(json.dumps(reports, indent=1))

    lines = []
    for scenario in SCENARIO_ROWS:
        lines += [f"**{scenario}**", "", "| model | " + " | ".join(name for _, name in METRICS) + " | segment acc. |",
                  "| --- " * (len(METRICS) + 2) + "|"]
        for name, runs in reports.items():
            rows = [r["rows"].get(scenario, {}) for r in runs]
            cells = [_cell([row.get(key) for row in rows], percent=key == "tn_rate") for key, _ in METRICS]
            accuracy = _cell([r["segment_accuracy"] for r in runs])
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {accuracy} |")
        lines.append("")
    timing = ", ".join(f"{v}: {statistics.mean(m):.1f} min" for v, m in minutes.items())
    body = (
        f"`{command()}` — {args.clips} synthetic clips (data seed {args.data_seed}), small-visual + small-audio "
        f"features at {args.size} px, {args.epochs} epochs, Adam lr {args.lr}, batch 32, weak video labels, "
        f"audio dropout {args.audio_dropout}, seeds {args.seeds}; mean ± std over seeds; test split. "
        f"Training time per run: {timing}.\n\n" + "\n".join(lines) + "\nProtocol: " +
        next(iter(reports.values()))[0]["protocol"]["description"]
    )
    update_section("STM ablation (synthetic benchmark)", body)


if __name__ == "__main__":
    main()
