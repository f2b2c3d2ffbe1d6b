"""``avloc pretrain visual``: a visual encoder that delimits objects, learned from real cut-outs.

No ImageNet weights can be had here, so the stand-in is dense object recognition on composites
of an assets folder (``scripts/build_assets.py``: Debian's Tux Paint stamps). Every training
image is a background (:func:`avloc.data.benchmarks.composite_render.make_background`) with 1 to 3 pictures
drawn over it, sized from the real box-size table (:mod:`avloc.data.benchmarks.object_sizes`), flipped,
rotated and colour-jittered. Only the silent pictures (``_silent/``) are trained on, each its own
identity; the target of every feature cell is the share of its pixels each identity covers, the
background being one more identity. The sounding classes' pictures are never seen, so a benchmark
composed from them measures what the encoder does on objects it has never met, as real videos ask.
A 1x1 convolution on the encoder's map is trained against these soft targets with cross-entropy
(Adam, its rate decayed to 0 along a cosine); the head is then dropped and the encoder's state
dict saved: a file ``avloc extract --weights visual=FILE`` reads. Each image is composed at
``size`` and trained on as one random ``crop`` window: at 128 of 256 px a step costs a quarter of
the pixels while objects keep the pixel size frames show them at.

Why: a localisation map thresholded per frame covers an object only if the cells of the object
look alike and unlike their surroundings; frozen random features place objects but do not
delimit them. Validation measures exactly that on the sounding classes' pictures (never trained
on): per object, the mean cosine similarity of its cells to their mean direction (inside) minus
that of the frame's other cells (outside), the "delimiting gap".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from avloc.atomic import atomic_path
from avloc.data.benchmarks.composite_assets import load_picture, scan_assets
from avloc.data.benchmarks.composite_render import compose, make_background, prepare_sprite, visible_masks, warp_sprite
from avloc.data.benchmarks.object_sizes import size_table
from avloc.models.blocks import unit_vectors
from avloc.models.encoders import create_encoder
from avloc.types import AvlocError

BACKGROUND_PICTURES = 64  # silent pictures the backgrounds are drawn from (blurred scatter / close-up)


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of one visual pretraining run (every field printed in the run's log)."""

    assets: str
    out: str
    encoder: str = "small-visual"
    size: int = 256  # images are composed size x size, as the frames the encoder will see
    crop: int = 128  # and trained on one random crop x crop window of each (objects keep their pixel size)
    steps: int = 400
    batch_size: int = 32
    lr: float = 1e-3  # Adam, decayed to 0 along a cosine over the steps
    seed: int = 0
    validate_every: int = 100

    def __post_init__(self) -> None:
        for name in ("size", "crop", "steps", "batch_size", "validate_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AvlocError(f"pretrain: {name} must be a whole number >= 1, got {value!r}")
        if self.crop > self.size:
            raise AvlocError(f"pretrain: crop ({self.crop}) must be at most size ({self.size})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise AvlocError(f"pretrain: lr must be a finite number > 0, got {self.lr!r}")


@dataclass(frozen=True)
class Composite:
    """One training image and who owns each pixel (-1: background)."""

    image: np.ndarray  # (size, size, 3) float32 in [0, 1]
    owner: np.ndarray  # (size, size) int64 picture index, -1 = background


def compose_image(rng: np.random.Generator, pictures: list[np.ndarray], backdrop: list[np.ndarray],
                  size: int) -> Composite:
    """A background with 1 to 3 of ``pictures`` drawn over it; ``owner`` from their visible pixels."""
    image = make_background(rng, size, backdrop)
    table = size_table("real", rng)
    chosen = rng.choice(len(pictures), size=min(int(rng.integers(1, 4)), len(pictures)), replace=False)
    layers = []
    for index in chosen:
        rgba = pictures[int(index)]
        width, height = table.box_shape(rng)
        h, w = rgba.shape[:2]
        fit = min(width * size / w, height * size / h)  # the picture inside the drawn box, its aspect kept
        gains = tuple(float(g) for g in rng.uniform(0.75, 1.25, 3))
        sprite = prepare_sprite(rgba, max(4.0, w * fit), max(4.0, h * fit), bool(rng.random() < 0.5), gains)
        cx, cy = rng.uniform(0, size, 2)
        layers.append(warp_sprite(sprite, float(cx), float(cy), 1.0, float(rng.uniform(-20, 20)), size))
    compose(image, layers)
    owner = np.full((size, size), -1, dtype=np.int64)
    for index, mask in zip(chosen, visible_masks(layers, size)):
        if mask is not None:
            owner[mask] = int(index)
    return Composite(np.clip(image, 0.0, 1.0), owner)


def cell_targets(owner: torch.Tensor, identities: int, stride: int) -> torch.Tensor:
    """Soft targets: the share of each cell's pixels each identity covers, background last.

    Args:
        owner: ``(B, H, W)`` int64 identity per pixel, -1 for the background.
        identities: number of identities (pictures).
        stride: the encoder's stride (cell side in pixels).

    Returns:
        ``(B, identities + 1, H // stride, W // stride)`` float32, summing to 1 over dim 1.
    """
    labels = torch.where(owner < 0, torch.full_like(owner, identities), owner)  # (B, H, W)
    one_hot = F.one_hot(labels, identities + 1).permute(0, 3, 1, 2).float()  # (B, H, W, K+1) -> (B, K+1, H, W)
    return F.avg_pool2d(one_hot, stride)  # (B, K+1, H/stride, W/stride)


def delimiting_gap(features: torch.Tensor, owner: torch.Tensor, stride: int, min_cells: int = 2) -> tuple[float, int]:
    """Mean over objects of (inside - outside) cosine similarity to the object's mean feature direction.

    A cell belongs to the object that covers most of its pixels (more than half). Objects with
    fewer than ``min_cells`` cells are left out. Returns the mean gap and the number of objects.
    """
    unit = unit_vectors(features, dim=1)  # (B, C, h, w), unit over C
    targets = cell_targets(owner, int(owner.max().clamp(min=0)) + 1, stride)  # (B, K+1, h, w)
    share, label = targets.max(dim=1)  # (B, h, w) each
    label = torch.where(share > 0.5, label, torch.full_like(label, -1))
    gaps = []
    for b in range(features.shape[0]):
        for identity in label[b].unique().tolist():
            inside = label[b] == identity
            if identity == targets.shape[1] - 1 or identity < 0 or inside.sum() < min_cells or inside.all():
                continue
            direction = F.normalize(unit[b][:, inside].mean(dim=1), dim=0)  # (C,)
            similarity = torch.einsum("c,chw->hw", direction, unit[b])  # (h, w)
            gaps.append(float(similarity[inside].mean() - similarity[~inside].mean()))
    return (float(np.mean(gaps)) if gaps else math.nan), len(gaps)


def random_crop(rng: np.random.Generator, composite: Composite, crop: int) -> Composite:
    """A ``crop`` x ``crop`` window of ``composite`` at a random place (its targets cropped alike)."""
    height, width = composite.owner.shape
    top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    window = np.s_[top:top + crop, left:left + crop]
    return Composite(composite.image[window], composite.owner[window])


def _batch(rng: np.random.Generator, pictures: list[np.ndarray], backdrop: list[np.ndarray], size: int,
           count: int, crop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` composites of ``size`` px (each cropped to ``crop`` px when given): images and owners."""
    items = [compose_image(rng, pictures, backdrop, size) for _ in range(count)]
    if crop is not None:
        items = [random_crop(rng, item, crop) for item in items]
    images = torch.from_numpy(np.stack([c.image for c in items])).permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W)
    return images.contiguous(), torch.from_numpy(np.stack([c.owner for c in items]))


def pretrain_visual(config: PretrainConfig, progress: bool = True) -> dict:
    """Train ``config.encoder`` on composites of ``config.assets``; write its weights to ``config.out``.

    Returns ``{"out", "pictures" (trained on), "held_out" (validated on), "steps", "loss",
    "validation": [(step, gap, gap of the untrained encoder)]}``. The weights file is written
    atomically at the end.
    """
    library = scan_assets(config.assets)
    if len(library.silent) < 2:
        raise AvlocError(f"assets folder {library.root}: {len(library.silent)} silent pictures in _silent/, too "
                         "few to pretrain on (need at least 2)")
    rng = np.random.default_rng(config.seed)
    train = [load_picture(str(library.root / name)) for name in library.silent]
    held = [load_picture(str(library.root / name)) for names in library.pictures for name in names]
    backdrop = train[:BACKGROUND_PICTURES]
    torch.manual_seed(config.seed)
    encoder = create_encoder(config.encoder)
    stride = encoder.input_spec["stride"]
    if config.crop % stride:
        raise AvlocError(f"pretrain: crop ({config.crop}) must be a multiple of {config.encoder}'s stride ({stride})")
    head = nn.Conv2d(encoder.out_channels, len(train) + 1, kernel_size=1)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=config.lr)
    cosine = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / config.steps)))  # 1 -> 0 over the run
    validation_set = _batch(np.random.default_rng(config.seed + 1), held, backdrop, config.size, 32)
    baseline = _validate(create_encoder(config.encoder), validation_set)
    validation, loss, out = [], math.nan, Path(config.out)
    bar = tqdm(range(1, config.steps + 1), desc="pretrain visual", unit="step", disable=not progress)
    for step in bar:
        encoder.train()
        images, owner = _batch(rng, train, backdrop, config.size, config.batch_size, config.crop)
        logits = head(encoder(images))  # (B, K+1, h, w)
        target = cell_targets(owner, len(train), stride)
        loss_value = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
        cosine.step()
        loss = loss_value.item()
        bar.set_postfix(loss=f"{loss:.3f}")
        if step % config.validate_every == 0 or step == config.steps:
            gap = _validate(encoder, validation_set)
            validation.append((step, gap, baseline))
            _save(encoder, out)  # every validation: a stopped run still leaves its latest weights
            bar.write(f"step {step}: loss {loss:.3f}, delimiting gap on held-out pictures {gap:.3f} "
                      f"(untrained encoder {baseline:.3f}); weights written to {out}")
    return {"out": str(out), "pictures": len(train), "held_out": len(held), "steps": config.steps, "loss": loss,
            "validation": validation}


def _save(encoder: nn.Module, out: Path) -> None:
    with atomic_path(out) as tmp:
        torch.save(encoder.state_dict(), tmp)


@torch.no_grad()
def _validate(encoder: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    encoder.eval()
    images, owner = batch
    gap, _ = delimiting_gap(encoder(images), owner, encoder.input_spec["stride"])
    return gap
