"""Why STM's cIoU stays low on the synthetic benchmark: the extent of its maps and two ceilings.

    python bench/stm_map_diagnostics.py CHECKPOINT DATASET FEATURES.h5 [--split val]

On the single-source frames of ``--split`` (every frame of a single-scenario clip with a box):

1. **Map extent.** The section-3.3 map f(hat x_a, hat x_av) and the line-4 map alpha =
   f(x_a, x_v), each recomputed from the checkpoint with its similarity logits multiplied by
   a scale (1 = the trained model), scored by mean cIoU@0.5 (per-frame min-max, 256 px); and
   an oracle that picks, per frame, the best of 19 thresholds on the min-max logits — an upper
   bound for any monotone recalibration of that map.
2. **Ceiling of the frozen features.** A fully supervised per-cell probe (two 1x1 conv layers,
   256 wide, as STM's projection) trained on the cached train-split visual features to label
   every cell with the class of the box its centre lies in (or background), 15 epochs: its
   class-probability map for the true class, scored the same way. Weak training cannot beat
   what full supervision gets from the same frozen features and the same 1x1 head.

Rewrites the section "STM map diagnostics" of docs/results.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from avloc.checkpoint import load_checkpoint
from avloc.data.cache import FeatureCache
from avloc.data.manifest import load_manifest
from avloc.evaluate import step_indices
from avloc.io.decode import probe
from avloc.localize import normalize, upsample
from avloc.metrics import ciou, gt_map, pointing_hit
from avloc.models.blocks import spatial_pool
from avloc.train import TrainConfig, build_model
from results_md import command, update_section

SIZE = 256  # evaluation grid, as avloc eval
SCALES = (1.0, 0.3, 0.1, 0.03, 0.01)
ORACLE_THRESHOLDS = np.linspace(0.05, 0.95, 19)


def single_frames(dataset: str, cache: FeatureCache, split: str) -> list[tuple[np.ndarray, int, torch.Tensor, str]]:
    """``(visual (C, h, w), step, gt map (SIZE, SIZE), label)`` of every single-source frame."""
    frames = []
    for record in load_manifest(dataset).split(split):
        if "cross-event" in record.tags:
            continue
        clip, video = cache.read(record.id), probe(record.video)
        steps = step_indices(clip.times, cache.meta.fps, [a.t for a in record.frames], video.duration)
        for step, annotation in zip(steps, record.frames):
            if step < 0 or annotation.scenario != "single" or not annotation.boxes:
                continue
            gt = gt_map(annotation.boxes, (SIZE, SIZE), "union", (video.height, video.width))
            frames.append((record.id, step, gt, record.label))
    return frames


def score(maps: list[torch.Tensor], gts: list[torch.Tensor]) -> tuple[float, float]:
    """Mean cIoU@0.5 and pointing hit rate of low-resolution maps against ground-truth maps."""
    cious, hits = [], []
    for heatmap, gt in zip(maps, gts):
        full = normalize(upsample(heatmap, (SIZE, SIZE))).numpy()
        cious.append(ciou(full, gt.numpy()))
        hits.append(pointing_hit(full, gt.numpy()))
    return float(np.mean(cious)), float(np.mean(hits))


def oracle(logits: list[torch.Tensor], gts: list[torch.Tensor]) -> float:
    """Mean over frames of the best cIoU over thresholds of the min-max logits."""
    best = []
    for heatmap, gt in zip(logits, gts):
        full = normalize(upsample(heatmap, (SIZE, SIZE))).numpy()
        best.append(max(ciou(full, gt.numpy(), threshold) for threshold in ORACLE_THRESHOLDS))
    return float(np.mean(best))


@torch.no_grad()
def map_logits(checkpoint: str, cache: FeatureCache, frames: list) -> dict[str, list[torch.Tensor]]:
    """Similarity logits (before the softmax) of the final map and of alpha, per frame ``(h, w)``."""
    state = load_checkpoint(checkpoint)
    model = build_model(TrainConfig.from_dict(state["config"]), state["classes"], with_encoders=False)
    model.load_state_dict(state["model"])
    model.eval()
    logits: dict[str, list[torch.Tensor]] = {"final": [], "alpha": []}
    by_clip: dict[str, dict[str, torch.Tensor]] = {}
    for clip_id, step, _, _ in frames:
        if clip_id not in by_clip:
            clip = cache.read(clip_id)
            visual, audio = torch.from_numpy(clip.visual)[None], torch.from_numpy(clip.audio)[None]
            b, t = visual.shape[:2]
            x_v = model.visual_projection(visual.flatten(0, 1)).unflatten(0, (b, t))  # (B*T, C, h, w) -> (B, T, C, h, w)
            x_a = model.audio_projection(audio.flatten(0, 1)).unflatten(0, (b, t))  # (B*T, C, m, n) -> (B, T, C, m, n)
            memory = model.memory(x_a, x_v)
            final_query = spatial_pool(memory.audio, model.pool)[..., None, None]  # (B, T, C) -> (B, T, C, 1, 1)
            alpha_query = spatial_pool(x_a, model.pool)[..., None, None]  # (B, T, C) -> (B, T, C, 1, 1)
            by_clip = {clip_id: {
                "final": (memory.audio_visual * final_query).sum(2)[0] / model.spatial_temperature,  # (T, h, w)
                "alpha": (x_v * alpha_query).sum(2)[0] / model.spatial_temperature,  # (T, h, w)
            }}
        for name in logits:
            logits[name].append(by_clip[clip_id][name][step])
    return logits


def softmax_map(logit: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.softmax(logit.flatten() * scale, 0).view_as(logit)  # (h*w,) -> (h, w)


def probe_ceiling(dataset: str, cache: FeatureCache, test_frames: list, classes: list[str]) -> tuple[float, float]:
    """Train the supervised per-cell probe on the train split; score it on ``test_frames``."""
    torch.manual_seed(0)
    train_frames = single_frames(dataset, cache, "train")

    def features(frames: list) -> torch.Tensor:
        return torch.stack([torch.from_numpy(cache.read(clip_id, step, 1).visual[0]) for clip_id, step, _, _ in frames])

    x_train, x_test = features(train_frames), features(test_frames)
    h, w = x_train.shape[-2:]
    background = len(classes)
    targets = torch.stack([
        torch.where(gt[SIZE // h // 2 :: SIZE // h, SIZE // w // 2 :: SIZE // w] > 0, classes.index(label), background)
        for _, _, gt, label in train_frames
    ])  # cell label = the ground truth at the cell centre, (N, h, w)
    width = 256
    head = nn.Sequential(
        nn.Conv2d(x_train.shape[1], width, 1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, background + 1, 1),
    )
    optimizer = torch.optim.Adam(head.parameters(), 1e-3)
    for _ in range(15):
        for batch in torch.randperm(len(x_train)).split(64):
            loss = nn.functional.cross_entropy(head(x_train[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()
    with torch.no_grad():
        probabilities = head(x_test).softmax(1)  # (N, K + 1, h, w)
    maps = [probabilities[n, classes.index(label)] for n, (_, _, _, label) in enumerate(test_frames)]
    return score(maps, [gt for _, _, gt, _ in test_frames])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("dataset")
    parser.add_argument("features")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    cache = FeatureCache(args.features)
    frames = single_frames(args.dataset, cache, args.split)
    gts = [gt for _, _, gt, _ in frames]
    area = float(np.mean([gt.mean().item() for gt in gts]))
    logits = map_logits(args.checkpoint, cache, frames)
    lines = [
        f"Checkpoint `{args.checkpoint}`, {args.split} split: {len(frames)} single-source frames; the "
        f"ground-truth boxes cover {100 * area:.1f}% of the frame on average. cIoU@0.5 (pointing) per "
        f"scale of the similarity logits (1 = the trained model):",
        "",
        "| map | " + " | ".join(f"x{s:g}" for s in SCALES) + " | oracle threshold |",
        "|---|" + "---|" * (len(SCALES) + 1),
    ]
    for name, title in (("final", "section 3.3: f(hat x_a, hat x_av)"), ("alpha", "line 4: alpha = f(x_a, x_v)")):
        cells = []
        for scale in SCALES:
            mean_ciou, hits = score([softmax_map(m, scale) for m in logits[name]], gts)
            cells.append(f"{mean_ciou:.3f} ({hits:.2f})")
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {oracle(logits[name], gts):.3f} |")
        print(lines[-1], flush=True)
    classes = load_checkpoint(args.checkpoint)["classes"]
    probe_ciou, probe_hits = probe_ceiling(args.dataset, cache, frames, classes)
    lines += ["", f"Fully supervised per-cell probe on the same frozen features (train split, 15 epochs): "
              f"cIoU@0.5 {probe_ciou:.3f}, pointing {probe_hits:.2f}.", "", f"Command: {command()}"]
    print(lines[-3], flush=True)
    update_section("STM map diagnostics", "\n".join(lines))


if __name__ == "__main__":
    main()
