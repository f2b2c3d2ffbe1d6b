"""Why STM's cIoU stays low on the synthetic benchmark: the extent of its maps and two ceilings.

    python bench/stm_map_diagnostics.py CHECKPOINT DATASET FEATURES.h5 [--split val] [--results FILE.md]

On the single-source frames of ``--split`` (every frame of a single-scenario clip with a box):

1. **Map extent.** The line-4 map alpha = f(hat x_a, hat x_v) and the section-3.3 map
   f(hat x_a, hat x_av), recomputed from the checkpoint with their similarity logits multiplied
   by a scale (1 = the trained model; the checkpoint's own similarity, dot or cosine), scored by
   mean cIoU@0.5 (per-frame min-max, 256 px); and an oracle that picks, per frame, the best of
   19 thresholds on the min-max logits — an upper bound for any monotone recalibration of that
   map. For "c+u" the final map reads hat x_av = line 5 applied to alpha * hat x_v, so alpha is
   rescaled twice over: the *inner* scale multiplies the logits of line 4 (and so changes
   hat x_av and the final map's logits), the *outer* scale those of the final softmax; the table
   has one row per inner scale. For "u" and "none" the final map is alpha itself (one row).
2. **Ceiling of the frozen features.** A fully supervised per-cell probe (two 1x1 conv layers,
   256 wide, as STM's projection) trained on the cached train-split visual features to label
   every cell with the class of the box its centre lies in (or background), 15 epochs: its
   class-probability map for the true class, scored the same way. Weak training cannot beat
   what full supervision gets from the same frozen features and the same 1x1 head.

Rewrites the section "STM map diagnostics" of ``--results`` (default docs/results.md; point it
elsewhere for a trial run on a small dataset).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avloc.checkpoint import load_checkpoint
from avloc.data.cache import FeatureCache
from avloc.data.manifest import load_manifest
from avloc.evaluate import step_indices
from avloc.io.decode import probe
from avloc.map_geometry import normalize, upsample
from avloc.metrics import ciou, gt_map, pointing_hit
from avloc.models.blocks import similarity_logits, spatial_pool
from avloc.config import TrainConfig, build_model
from results_md import RESULTS, command, update_section

SIZE = 256  # evaluation grid, as avloc eval
SCALES = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01)  # cosine logits are bounded: sharper too
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
def map_logits(checkpoint: str, cache: FeatureCache, frames: list) -> tuple[str, dict[str, list[torch.Tensor]]]:
    """The variant and the similarity logits (before the softmax) of alpha and of the final map, per frame ``(h, w)``.

    Keys: ``"alpha"`` (line 4, the trained model) and, for "c+u", ``"final x{s}"`` per inner
    scale s of SCALES: the final map's logits when line 4's logits are multiplied by s.
    """
    state = load_checkpoint(checkpoint)
    model = build_model(TrainConfig.from_dict(state["config"]), state["classes"], with_encoders=False)
    model.load_state_dict(state["model"])
    model.eval()
    variant, temperature, similarity = model.memory.variant, model.spatial_temperature, model.spatial_similarity
    names = ["alpha"] + ([f"final x{inner:g}" for inner in SCALES] if variant == "c+u" else [])
    logits: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    by_clip: dict[str, dict[str, torch.Tensor]] = {}
    for clip_id, step, _, _ in frames:
        if clip_id not in by_clip:
            clip = cache.read(clip_id)
            visual, audio = torch.from_numpy(clip.visual)[None], torch.from_numpy(clip.audio)[None]
            b, t = visual.shape[:2]
            x_v = model.visual_projection(visual.flatten(0, 1)).unflatten(0, (b, t))  # -> (B, T, C, h, w)
            x_a = model.audio_projection(audio.flatten(0, 1)).unflatten(0, (b, t))  # -> (B, T, C, m, n)
            memory = model.memory(x_a, x_v)
            query = spatial_pool(memory.audio, model.pool)  # (B, T, C, m, n) -> (B, T, C): phi(hat x_a)
            alpha = similarity_logits(memory.visual, query, temperature, similarity)  # (B, T, h, w)
            torch.testing.assert_close(alpha.flatten(2).softmax(-1).view_as(alpha), memory.alpha)  # line 4 itself
            by_clip = {clip_id: {"alpha": alpha[0]}}
            for inner in SCALES if variant == "c+u" else ():
                model.memory.spatial_temperature = temperature / inner  # line 4's logits x inner
                try:
                    rescaled = model.memory(x_a, x_v)
                finally:
                    model.memory.spatial_temperature = temperature
                final = similarity_logits(rescaled.audio_visual, query, temperature, similarity)  # (B, T, h, w)
                by_clip[clip_id][f"final x{inner:g}"] = final[0]
        for name in logits:
            logits[name].append(by_clip[clip_id][name][step])
    return variant, logits


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
    parser.add_argument("--results", default=str(RESULTS), help="markdown file to update (default docs/results.md)")
    args = parser.parse_args()
    cache = FeatureCache(args.features)
    frames = single_frames(args.dataset, cache, args.split)
    gts = [gt for _, _, gt, _ in frames]
    area = float(np.mean([gt.mean().item() for gt in gts]))
    variant, logits = map_logits(args.checkpoint, cache, frames)
    lines = [
        f"Checkpoint `{args.checkpoint}` (variant {variant}), {args.split} split: {len(frames)} single-source "
        f"frames; the ground-truth boxes cover {100 * area:.1f}% of the frame on average. cIoU@0.5 (pointing) "
        f"per outer scale of the map's similarity logits (1 = the trained model); for c+u one row per inner "
        f"scale of line 4's logits, which the final map reads through hat x_av:",
        "",
        "| map | " + " | ".join(f"x{s:g}" for s in SCALES) + " | oracle threshold |",
        "|---|" + "---|" * (len(SCALES) + 1),
    ]
    titles = {"alpha": "line 4: alpha = f(hat x_a, hat x_v)" + ("" if variant == "c+u" else ", the final map")}
    titles.update({name: f"section 3.3: f(hat x_a, hat x_av), inner {name.split()[1]}" for name in logits
                   if name != "alpha"})
    for name, title in titles.items():
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
    update_section("STM map diagnostics", "\n".join(lines), Path(args.results))


if __name__ == "__main__":
    main()
