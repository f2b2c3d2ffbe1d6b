"""The report of ``avloc eval`` and ``avloc demo``: its JSON, its table, where it is written."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from avloc.atomic import atomic_path
from avloc.metrics import ClassificationMeter
from avloc.protocols import Protocol, ScoredSplit

SCENARIO_ROWS = ("single", "mixed", "multi-entity", "off-screen", "cross-event", "all")


def build_report(source: str, split: str, n_clips: int, scored: ScoredSplit, protocol: Protocol,
                 segments: ClassificationMeter, steps: ClassificationMeter) -> dict:
    """The JSON report shared by ``avloc eval`` and ``avloc demo``, from the split's maps as
    :func:`avloc.protocols.score_maps` scored them."""
    return {
        "source": source,
        "split": split,
        "n_clips": n_clips,
        "rows": scored.rows,
        "warnings": scored.warnings,
        "segment_accuracy": segments.summary()["accuracy"],
        "n_segments": segments.total,
        "step_accuracy": steps.summary()["accuracy"],
        "n_steps": steps.total,
        "protocol": {**asdict(protocol), "description": protocol.describe()},
    }


def format_table(report: dict) -> str:
    """The report as a fixed-width table, then the event accuracy, the warnings and the protocol."""
    header = (f"{'scenario':<13} {'annotated':>9} {'scored':>7} {'cIoU@0.5':>9} {'AP50':>6} {'AUC':>6} "
              f"{'IoU@0.5':>8} {'TN%':>6} {'point':>6}")
    lines = [f"{report['source']} on {report['split']} ({report['n_clips']} clips)", header, "-" * len(header)]
    rows = report["rows"]
    if not rows:  # e.g. AVE: per-second labels, no boxes
        lines[1:] = ["no annotated frames in this split: no localisation metrics, segment accuracy only"]
    for name in [*(n for n in SCENARIO_ROWS if n in rows), *(n for n in rows if n not in SCENARIO_ROWS)]:
        row = rows[name]

        def cell(key: str, width: int, percent: bool = False) -> str:
            value = row[key]
            if value is None:
                return f"{'-':>{width}}"
            return f"{100 * value:>{width}.1f}" if percent else f"{value:>{width}.3f}"

        lines.append(f"{name:<13} {row['n_annotated']:>9d} {row['n_frames']:>7d} {cell('ciou_at', 9)} "
                     f"{cell('ap50', 6)} {cell('auc', 6)} {cell('iou_at_0.5', 8)} {cell('tn_rate', 6, percent=True)} "
                     f"{cell('pointing', 6)}")
    for name, count in (("segment", "n_segments"), ("step", "n_steps")):
        accuracy = report[f"{name}_accuracy"]
        if accuracy is not None:
            unit = "1-s segments (AVE's)" if name == "segment" else "model steps"
            lines.append(f"{name} accuracy: {accuracy:.3f} over {report[count]} {unit}")
    lines += [f"warning: {warning}" for warning in report["warnings"]]
    lines.append(f"protocol: {report['protocol']['description']}")
    return "\n".join(lines)


def default_report_path(source: str | os.PathLike, dataset: str | os.PathLike, split: str, protocol: str) -> Path:
    """``eval-<model>-<dataset>-<hash>-<split>-<protocol>.json``: beside the checkpoint, or in the
    current folder for a baseline. The dataset's name and a hash of its resolved path keep the
    reports of different datasets (and protocols) apart."""
    folder = Path(dataset).resolve()
    tag = f"{folder.name}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}-{split}-{protocol}"
    source = str(source)
    if source.startswith("baseline:"):
        return Path(f"eval-{source.replace(':', '-')}-{tag}.json")
    return Path(source).with_name(f"eval-{Path(source).stem}-{tag}.json")


def write_report(report: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return path
