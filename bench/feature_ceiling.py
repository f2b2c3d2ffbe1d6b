"""How well can frozen visual features localise at best? A supervised per-cell probe, measured.

    python bench/feature_ceiling.py DATASET FEATURES [FEATURES ...] [--hidden 0 256] [--steps 2000]

STM reads the sounding object off frozen visual maps through a learned projection (two 1x1
convolutions) and the audio vector. Its maps can only delimit an object as well as *some*
projection of the frozen cells can. This bench gives that projection every advantage STM does
not have: the true class of the frame (oracle, no audio) and full supervision — per cell, the
share of its pixels inside the frame's boxes, trained with binary cross-entropy on the train
split's annotated frames. The test frames' maps are then scored as the stm protocol does
(bilinear to the frame size, per-frame min-max, > 0.5) against the union of the boxes: mean cIoU
(the tables' "cIoU@0.5"), AP50 (share of frames with cIoU >= 0.5) and pointing. A weakly
supervised STM on the same features should not be expected above this ceiling.

Probes: ``--hidden 0`` a linear 1x1 convolution per class; ``--hidden C`` two 1x1 layers of width
C with BatchNorm and ReLU between (STM's projection depth). Each annotated frame is read from the
step whose interval holds its time; frames with no box, or whose label is background, are left
out (counted). Rewrites the "Frozen-feature ceiling" section of docs/results.md.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avloc.data.cache import FeatureCache
from avloc.data.manifest import BACKGROUND, NativeDataset
from avloc.data.sources import load_dataset
from avloc.evaluate import step_indices
from avloc.io.decode import probe
from avloc.map_geometry import normalize, upsample
from avloc.metrics import ciou, gt_map, pointing_hit
from results_md import command, update_section


@dataclass
class Frames:
    """Annotated frames of one split: the visual map of their step, their class, their boxes."""

    visual: torch.Tensor  # (N, C, h, w)
    label: torch.Tensor  # (N,) class index
    boxes: list[np.ndarray]  # N x (B, 4) xyxy in frame pixels
    sizes: list[tuple[int, int]]  # N x (H, W) frame size
    left_out: int  # annotated frames without a box or with the background label


def collect(dataset: NativeDataset, cache: FeatureCache, split: str) -> Frames:
    visual, labels, boxes, sizes, left_out = [], [], [], [], 0
    for record in dataset.split(split):
        features, info = cache.read(record.id), probe(record.video)
        moments = [frame.t for frame in record.frames]
        for frame, step in zip(record.frames, step_indices(features.times, cache.meta.fps, moments, info.duration)):
            label = record.label_at(frame.t)
            if not frame.boxes or label == BACKGROUND or step < 0:
                left_out += 1
                continue
            visual.append(features.visual[step])
            labels.append(dataset.classes.index(label))
            boxes.append(np.asarray(frame.boxes, dtype=np.float64))
            sizes.append((info.height, info.width))
    return Frames(torch.from_numpy(np.stack(visual)), torch.tensor(labels), boxes, sizes, left_out)


def build_probe(channels: int, classes: int, hidden: int) -> nn.Module:
    if hidden == 0:
        return nn.Conv2d(channels, classes, 1)
    return nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
                         nn.Conv2d(hidden, classes, 1))


def train_probe(train: Frames, classes: int, hidden: int, steps: int, lr: float, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    cells = train.visual.shape[-2:]
    target = torch.stack([
        F.adaptive_avg_pool2d(gt_map(b, size, "union")[None], cells)[0]  # (1, H, W) -> (h, w): share covered
        for b, size in zip(train.boxes, train.sizes)
    ])  # (N, h, w)
    probe = build_probe(train.visual.shape[1], classes, hidden)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(steps):
        batch = torch.randint(0, len(train.label), (64,))
        logits = probe(train.visual[batch])[torch.arange(64), train.label[batch]]  # (64, K, h, w) -> (64, h, w)
        loss = F.binary_cross_entropy_with_logits(logits, target[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return probe.eval()


@torch.no_grad()
def score(probe: nn.Module, test: Frames) -> tuple[float, float, float]:
    """Mean cIoU (the tables' "cIoU@0.5"), AP50 (share of frames with cIoU >= 0.5) and pointing."""
    logits = probe(test.visual)[torch.arange(len(test.label)), test.label]  # (N, K, h, w) -> (N, h, w)
    cious, hits = [], []
    for cell_map, boxes, size in zip(logits, test.boxes, test.sizes):
        level = normalize(upsample(cell_map, size)).numpy()  # (h, w) -> (H, W) in [0, 1]
        gt = gt_map(boxes, size, "union").numpy()
        cious.append(ciou(level, gt))
        hits.append(pointing_hit(level, gt))
    return float(np.mean(cious)), float(np.mean(np.asarray(cious) >= 0.5)), float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("features", nargs="+", help="feature caches of the dataset (one per encoder to compare)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[0, 256])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    rows = ["| features | probe | cIoU@0.5 | AP50 | pointing | train / test frames |",
            "| --- | --- | --- | --- | --- | --- |"]
    for path in args.features:
        cache = FeatureCache(path)
        train, test = collect(dataset, cache, "train"), collect(dataset, cache, "test")
        print(f"{path}: {len(train.label)} train / {len(test.label)} test frames scored, "
              f"{train.left_out} / {test.left_out} left out (no box or background label)")
        for hidden in args.hidden:
            results = [score(train_probe(train, len(dataset.classes), hidden, args.steps, args.lr, seed), test)
                       for seed in range(args.seeds)]
            mean, std = np.mean(results, axis=0), np.std(results, axis=0)  # (3,) each
            probe = "linear" if hidden == 0 else f"2 layers, width {hidden}"
            cells = " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, std))
            row = (f"| {cache.meta.visual_encoder} ({cache.meta.visual_weights}) | {probe} | {cells} | "
                   f"{len(train.label)} / {len(test.label)} |")
            print(row)
            rows.append(row)
    body = (f"`{command()}` — a per-cell probe on the frozen maps, told the true class and trained on the "
            f"boxes ({args.steps} steps, Adam {args.lr}, batch 64; mean ± std over {args.seeds} seeds); test "
            "frames scored as the stm protocol does.\n\n" + "\n".join(rows))
    update_section("Frozen-feature ceiling", body)


if __name__ == "__main__":
    main()
