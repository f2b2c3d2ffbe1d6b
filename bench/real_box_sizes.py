"""Box sizes in the STM authors' real annotations: the distributions `avloc synth` draws from.

    python bench/real_box_sizes.py [--annotations ../shared/data/stm-annotations/annotations]

Reads every CVAT file of the AVE and AudioSet-Instrument test sets, and over every annotated
frame with at least one box measures: the share of the frame covered by the union of its boxes,
the number of boxes, and per box its area share and its aspect ratio (width / height, each
relative to the frame's side). Prints the quantile tables that ``avloc.data.benchmarks.object_sizes``
holds and rewrites the "Real box sizes" section of docs/results.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from avloc.data.formats.cvat import read_cvat
from avloc.data.benchmarks.object_sizes import QUANTILES
from results_md import command, update_section

DATASETS = {"ave": "AVE", "audioset-instrument": "AudioSet_Instrument"}


def measure(folder: Path) -> dict[str, np.ndarray]:
    """Per-frame union share and box count; per-box area share and aspect ratio."""
    union, counts, areas, aspects = [], [], [], []
    for path in sorted(folder.glob("*/annotations.xml")):
        annotation = read_cvat(path)
        height, width = annotation.height, annotation.width
        for boxes in annotation.boxes:
            if not len(boxes):
                continue
            covered = np.zeros((height, width), bool)
            for x1, y1, x2, y2 in boxes:
                covered[round(y1):round(y2), round(x1):round(x2)] = True
                areas.append((x2 - x1) * (y2 - y1) / (width * height))
                aspects.append(((x2 - x1) / width) / ((y2 - y1) / height))
            union.append(covered.mean())
            counts.append(len(boxes))
    return {"union": np.array(union), "counts": np.array(counts), "areas": np.array(areas),
            "aspects": np.array(aspects)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", default=Path(__file__).resolve().parents[2] / "shared/data/stm-annotations/annotations")
    args = parser.parse_args()
    body = [f"`{command()}`", "",
            "| dataset | frames with boxes | union share mean / median / p10 / p90 | boxes per frame | frames with > 1 box |",
            "| --- | --- | --- | --- | --- |"]
    tables = []
    for name, folder in DATASETS.items():
        m = measure(Path(args.annotations) / folder)
        u = m["union"]
        body.append(f"| {name} | {u.size} | {u.mean():.3f} / {np.median(u):.3f} / {np.percentile(u, 10):.3f} / "
                    f"{np.percentile(u, 90):.3f} | {m['counts'].mean():.3f} | {(m['counts'] > 1).mean():.3f} |")
        count_shares = np.bincount(np.minimum(m["counts"], 4), minlength=5)[1:] / m["counts"].size
        tables.append(f'    "{name}": SizeTable(\n'
                      f"        box_counts=({', '.join(f'{v:.4f}' for v in count_shares)}),\n"
                      f"        area_quantiles=({', '.join(f'{v:.4f}' for v in np.quantile(m['areas'], QUANTILES))}),\n"
                      f"        aspect_quantiles=({', '.join(f'{v:.3f}' for v in np.quantile(m['aspects'], QUANTILES))}),\n"
                      "    ),")
    print("\n".join(body))
    print("\n".join(tables))
    update_section("Real box sizes", "\n".join(body) + "\n\nQuantile tables (avloc/data/benchmarks/object_sizes.py):\n\n```\n"
                   + "\n".join(tables) + "\n```")


if __name__ == "__main__":
    main()
