"""``avloc train``: weakly-supervised training with checkpoints, resume and logs.

One readable loop (``train_one_epoch``, ``validate``, ``fit``). Samples are random windows
of ``steps`` steps (default 4 = one second at 4 fps, the STM paper) from the feature cache
or, without one, decoded from the videos and encoded by the model's own encoders.
Checkpoint selection uses the validation split only (its loss under the same supervision
as training, which needs no box annotations), never test. Before every validation the trained
BatchNorm layers' running statistics are recomputed over the epoch's training windows (at most
``RECALIBRATION_BATCHES`` batches) under the final weights (:func:`recalibrate_batchnorm`).

Files in ``out``: ``config.yaml`` (the resolved :class:`TrainConfig`, written before the first
epoch: ``avloc train DATASET --config OUT/config.yaml`` repeats the run), ``last.pt`` (every
epoch, for ``--resume``), ``best.pt`` (lowest validation loss), ``log.csv`` and ``loss.png``;
with ``skip_broken``, ``skipped.txt`` (the clips left out and why, written when there are any).

Distributed (``torchrun --nproc-per-node N -m avloc train ...``, see :mod:`avloc.distributed`):
``batch_size`` is the global batch; each of the N processes trains on its share of every global
batch of the same shuffle, gradients are averaged (weighted by share), validation is sharded
and its sums are reduced, and rank 0 alone writes files. With the same seed the run sees the
same samples and windows as one process; it matches one process to float rounding when the
model has no BatchNorm (on CPU each process normalises only its share; see
tests/test_distributed.py for the measured gap).
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from itertools import islice
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from avloc import __version__, distributed
from avloc.accelerate import Acceleration, acceleration
from avloc.atomic import atomic_path
from avloc.checkpoint import load_checkpoint, save_checkpoint
from avloc.config import CONFIG_NAME, TrainConfig, build_model, write_config_file
from avloc.data.cache import FeatureCache
from avloc.data.manifest import ClipRecord, NativeDataset
from avloc.data.sources import load_dataset, open_features
from avloc.data.usable import Skipped, check_video, load_for_videos, record_skipped, usable_clips
from avloc.data.windows import FeatureWindows, VideoWindows
from avloc.losses import AUTO
from avloc.models.encoders import RANDOM, create_encoder, default_weights, weights_name
from avloc.render import write_loss_curves
from avloc.types import AvlocError, VideoInfo


HOLD_MB = 4096  # whole clips of the feature cache kept in memory during training (as stored)


def _datasets(config: TrainConfig, dataset: NativeDataset, skip_broken: bool = False,
              skipped: list[Skipped] | None = None) -> tuple[Dataset, Dataset]:
    """Training windows and validation clips, from the cache or the videos (the clips left out
    are appended to ``skipped``).

    Validation uses whole clips, except for self-supervised training: its contrastive losses
    need several clips of equal length per batch, so it uses the first window of each clip.
    From the videos, every train and val video is probed once here, before the first epoch
    (:func:`_readable`); with ``skip_broken`` the clips that fail are left out, and from a
    cache the clips it has no features for.
    """
    val_steps = config.steps if config.supervision == "self" else None
    train_records, val_records, durations, left_out = _readable(config, dataset, val_steps, skip_broken)
    if skipped is not None:
        skipped += left_out
    if not train_records:
        raise AvlocError(f"{dataset.root}: the train split is empty")
    if not val_records:
        raise AvlocError(f"{dataset.root}: the val split is empty (checkpoints are selected on it)")
    if config.features is not None:
        cache = open_features(config.features)
        if (cache.meta.visual_encoder, cache.meta.audio_encoder) != (config.visual, config.audio):
            raise AvlocError(
                f"{cache.path}: holds {cache.meta.visual_encoder} + {cache.meta.audio_encoder} features, "
                f"but the run uses --visual {config.visual} --audio {config.audio}"
            )
        if cache.meta.fps != config.fps:
            raise AvlocError(f"{cache.path}: extracted at {cache.meta.fps} fps, the run uses {config.fps}")
        if isinstance(cache, FeatureCache):  # (the AVE authors' feature files are read as they are)
            cache.hold(HOLD_MB)  # epochs after the first read windows from memory, not the compressed file
        train_set = FeatureWindows(cache, train_records, dataset.classes, steps=config.steps, augment=config.augment)
        if not len(train_set):
            longest = max(cache.num_steps(record.id) for record in train_records)
            raise AvlocError(f"{cache.path}: every train clip is shorter than a window of {config.steps} steps (the "
                             f"longest has {longest}); lower --steps")
        return train_set, FeatureWindows(cache, val_records, dataset.classes, steps=val_steps, random_window=False)
    mel = create_encoder(config.audio).mel
    options = dict(fps=config.fps, size=config.size, mel=mel, durations=durations)
    return (VideoWindows(train_records, dataset.classes, steps=config.steps, augment=config.augment, **options),
            VideoWindows(val_records, dataset.classes, steps=val_steps, random_window=False, **options))


def _readable(config: TrainConfig, dataset: NativeDataset, val_steps: int | None, skip_broken: bool
              ) -> tuple[list[ClipRecord], list[ClipRecord], dict[str, float], list[Skipped]]:
    """The train and val clips whose data can be read, their videos' durations, and the clips left out.

    From the videos each one is looked at once (headers, first frame, an audio stream; long
    enough for a window where windows are served): the first failure stops the run in one line
    naming the file, or with ``skip_broken`` is left out. The good clips keep their order, so a
    run decodes for them what it would from a manifest without the broken ones. From a cache,
    ``skip_broken`` leaves out the clips it holds no features for (those ``avloc extract
    --skip-broken`` skipped); without it :class:`FeatureWindows` refuses them.
    """
    splits = {"train": (dataset.split("train"), config.steps), "val": (dataset.split("val"), val_steps)}
    if config.features is not None:
        if not skip_broken:
            return splits["train"][0], splits["val"][0], {}, []
        cache = open_features(config.features)

        def check(record: ClipRecord, steps: int | None) -> None:
            if record.id not in cache:
                raise AvlocError(f"{cache.path}: no features for clip {record.id!r} (its video: {record.video})")
    else:
        def check(record: ClipRecord, steps: int | None) -> VideoInfo:
            info = check_video(record.video)
            if steps is not None and math.floor(info.duration * config.fps + 1e-6) < steps:
                raise AvlocError(f"{record.video}: {info.duration:g} s long, shorter than a window of {steps} steps "
                                 f"at {config.fps:g} fps")
            return info
    kept, durations, skipped = {}, {}, []
    for name, (records, steps) in splits.items():
        kept[name], infos, left_out = usable_clips(records, skip_broken, check=lambda r, s=steps: check(r, s))
        durations.update((key, info.duration) for key, info in infos.items() if info is not None)
        skipped += left_out
    return kept["train"], kept["val"], durations, skipped


def _inputs(batch: dict) -> dict:
    """The model's keyword inputs of a batch: feature maps or frames + log-mel."""
    if "visual" in batch:
        return {"visual": batch["visual"], "audio": batch["audio"]}
    return {"frames": batch["frames"], "logmel": batch["logmel"]}


def _to(batch: dict, device: torch.device) -> dict:
    # non_blocking: an asynchronous copy from a pinned batch (Acceleration.pin_memory), a plain one otherwise
    return {k: v.to(device, non_blocking=v.is_pinned()) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    supervision: str, device: torch.device, progress: bool = True,
                    description: str = "train", accel: Acceleration | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> tuple[float, int]:
    """One pass over ``loader``; returns the mean loss and the number of optimiser steps.

    ``accel``: the forward pass and the loss run under its autocast (default: float32);
    ``scaler``: fp16's gradient scaler (default: none, the plain step).

    Under DDP ``model`` is the wrapped model and ``loader`` yields this process's share of each
    global batch: its loss is weighted by the share, so that the averaged gradient and the
    returned loss are those of the global batch's mean loss (the contrastive losses of
    ``supervision="self"`` only see in-share negatives, so they stay per-share means).
    """
    model.train()
    core, world = distributed.unwrap(model), distributed.world_size()
    accel = accel or Acceleration(device)
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    total, count = 0.0, 0
    # Bars only on a terminal: in a log file their carriage returns are noise (fit prints a line per epoch).
    for batch in tqdm(loader, desc=description, unit="batch", leave=False, disable=not (progress and sys.stderr.isatty())):
        batch = _to(batch, device)
        local = len(batch["label"])
        share = local / distributed.all_reduce_sum([local])[0]  # this process's fraction of the global batch
        with accel.autocast():
            loss = core.loss(model(**_inputs(batch)), batch, supervision).float()
        if not torch.isfinite(loss):
            raise AvlocError(f"the training loss became {loss.item()} (try a lower --lr)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss * (share * world)).backward()  # DDP divides the summed gradients by world
        scaler.step(optimizer)  # fp16: skipped when a gradient overflowed, and the scale lowered
        scaler.update()
        total, count = total + loss.item() * share, count + 1
    return distributed.all_reduce_sum([total])[0] / max(count, 1), count


SKIPPED_NAME = "skipped.txt"  # OUT/skipped.txt: the clips --skip-broken left out, with their reasons
RECALIBRATION_BATCHES = 50  # batches of training windows the BatchNorm statistics are recomputed over


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: DataLoader, device: torch.device,
                          max_batches: int | None = RECALIBRATION_BATCHES, accel: Acceleration | None = None) -> int:
    """Set the running statistics of the model's trained BatchNorm layers to their exact average
    over ``loader``'s first ``max_batches`` batches (all when None), under the current weights
    ("precise BN"); returns the batches read. The cap bounds the extra pass (a second decode of
    the windows when training from the videos) on large datasets.

    Why: the running statistics are a moving average (momentum 0.1) that starts at mean 0 and
    variance 1. A short run never forgets that start: after n updates it still weighs 0.9^n, and
    where the true variance is small it dominates. Measured on the composite benchmark (20
    classes, 7 optimiser steps an epoch): after 57 updates the visual projection's first
    BatchNorm held a running variance of 2.7e-3 (0.9^57 = 2.5e-3) for a batch variance of
    2.6e-7, so evaluation scaled its features down ~100 times and the classifier gave one class
    for all 720 validation steps (accuracy 0.0, against 0.31 with batch statistics). Frozen
    encoders (in eval mode while the model trains) keep theirs.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: every batch weighs the same, the start not at all
    batches = 0
    for batch in islice(loader, max_batches):
        with (accel or Acceleration(device)).autocast():  # the statistics of the inputs training gives them
            model(**_inputs(_to(batch, device)))
        batches += 1
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    return batches


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, supervision: str, device: torch.device,
             accel: Acceleration | None = None) -> dict:
    """Mean loss (over batches) and accuracy over whole validation clips: per step under
    ``supervision="segment"`` (what it trains), else per video.

    Under DDP each process validates its shard of the batches and the sums are reduced, so
    every process gets the single-process numbers.
    """
    model = distributed.unwrap(model).eval()
    loss_sum, batches, correct, total = 0.0, 0, 0, 0
    for batch in loader:
        batch = _to(batch, device)
        with (accel or Acceleration(device)).autocast():
            output = model(**_inputs(batch))
            loss = model.loss(output, batch, supervision).float()
        loss_sum, batches = loss_sum + loss.item(), batches + 1
        if supervision == "segment" and output.logits is not None:
            correct += int((output.logits.argmax(-1) == batch["step_labels"]).sum())  # (B, T) per step
            total += batch["step_labels"].numel()
        elif output.video_logits is not None:
            correct += int((output.video_logits.argmax(-1) == batch["label"]).sum())
            total += len(batch["label"])
    loss_sum, batches, correct, total = distributed.all_reduce_sum([loss_sum, batches, correct, total])
    return {"loss": loss_sum / batches, "accuracy": correct / total if total else float("nan")}


def fit(config: TrainConfig, resume: bool = False, progress: bool = True,
        device: str | torch.device | None = None, skip_broken: bool = False, precision: str = "auto") -> Path:
    """Train ``config``; returns the path of the best checkpoint.

    ``skip_broken``: clips whose video cannot be read (or, from a cache, that it has no
    features for) are left out, listed in ``OUT/skipped.txt`` and counted in a warning
    (:mod:`avloc.data.usable`); without it the first one stops the run before the first epoch.

    Under ``torchrun`` (``WORLD_SIZE`` set) every process calls this; they join one process
    group for the run (see the module docstring). ``device`` defaults to the process's device
    (``cuda:LOCAL_RANK`` under NCCL, else the CPU).

    ``precision`` (:func:`avloc.accelerate.acceleration`): ``auto`` trains in bf16 (fp16 with a
    gradient scaler on GPUs without bf16) on CUDA, with channels-last encoders, pinned batches
    and ``config.workers`` (None: up to 4 on CUDA, else 0) loader processes; on the CPU it is
    float32, as before. The checkpoints hold float32 weights whatever the precision.
    """
    with distributed.process_group():
        world = distributed.world_size()
        if config.batch_size % world:
            raise AvlocError(f"--batch-size {config.batch_size} is the global batch and must divide by the "
                             f"{world} processes")
        device = torch.device(device) if device is not None else distributed.device()
        return _fit(config, resume, progress and distributed.is_main(), device, skip_broken, precision)


def resolve_supervision(requested: str, supported: Sequence[str], records: Sequence[ClipRecord]) -> str:
    """The supervision a run trains with: ``requested``, or for ``"auto"`` the labels the data has.

    ``"auto"``: ``"segment"`` when a training clip has segments and the model takes it — every
    step is trained on the label of its own time, so the one-second window the STM paper samples
    is labelled with the event sounding in it, not with the clip's (a clip of two events, or a
    window before its event starts, would otherwise teach the wrong class); else ``"video"``;
    else the model's own (``"self"`` for the contrastive models). Measured on the composite
    benchmark (docs/results.md, "STM on the composite benchmark: training labels, BatchNorm
    statistics, the ceiling"; same recipe, one seed): segment accuracy 0.061 -> 0.428,
    all-frame cIoU 0.224 -> 0.253.
    """
    if requested != AUTO:
        return requested
    has_segments = any(record.segments for record in records)
    for choice in (("segment", "video") if has_segments else ("video",)):
        if choice in supported:
            return choice
    return supported[0]


def resolve_weights(config: TrainConfig) -> TrainConfig:
    """``config`` with the encoder weights it leaves unnamed (None) named, so inference rebuilds the same encoders.

    With a feature cache: the set its features were extracted with, read from the cache's
    weights id ("stamps", "random"; a weights file's path is not kept there, so it stays None
    and the run's checkpoint needs ``--weights``). From the videos: the encoder's default set
    (:func:`avloc.models.encoders.default_weights`), else "random".
    """
    if config.features is not None:
        meta = open_features(config.features).meta
        found = {"visual": weights_name(meta.visual_weights), "audio": weights_name(meta.audio_weights)}
    else:
        found = {modality: default_weights(getattr(config, modality)) or RANDOM for modality in ("visual", "audio")}
    return replace(config, visual_weights=config.visual_weights or found["visual"],
                   audio_weights=config.audio_weights or found["audio"])


def _fit(config: TrainConfig, resume: bool, progress: bool, device: torch.device, skip_broken: bool = False,
         precision: str = "auto") -> Path:
    accel = acceleration(device, precision, workers=config.workers)
    out = Path(config.out)
    if config.features is None:
        dataset = load_for_videos(config.dataset, skip_broken)
    else:
        dataset = load_dataset(config.dataset, require_videos=False)
    classes = list(dataset.classes)
    config = resolve_weights(config)
    torch.manual_seed(config.seed)
    core = build_model(config, classes, with_encoders=config.features is None).to(device)
    supported = core.supervisions
    config = replace(config, supervision=resolve_supervision(config.supervision, supported, dataset.split("train")))
    skipped: list[Skipped] = []
    train_set, val_set = _datasets(config, dataset, skip_broken, skipped)
    if config.supervision not in supported:
        raise AvlocError(f"model {config.model!r} trains with --supervision {' or '.join(supported)}, "
                         f"not {config.supervision!r}")
    accel.prepare(getattr(core, "visual_encoder", None), getattr(core, "audio_encoder", None))  # from the videos
    model = distributed.wrap(core)
    trainable = [p for p in core.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scaler = accel.grad_scaler()
    start_epoch, step, best = 0, 0, math.inf
    if resume:  # every process loads last.pt
        start_epoch, step, best = _resume(out / "last.pt", config, classes, core, optimizer, scaler)
    elif (out / "last.pt").exists():
        raise AvlocError(f"{out}: holds a run already; pass --resume to continue it or choose another --out")
    generator = torch.Generator()
    contrastive = config.supervision == "self"  # in-batch negatives: no batch of one clip
    sampler = distributed.ShardedBatchSampler(len(train_set), config.batch_size, generator, drop_last=contrastive)
    loading = dict(num_workers=accel.workers, pin_memory=accel.pin_memory)
    train_loader = DataLoader(train_set, batch_sampler=sampler, generator=generator, **loading)
    val_batches = distributed.sequential_shard(len(val_set), config.batch_size if contrastive else 1)
    val_loader = DataLoader(val_set, batch_sampler=val_batches, **loading)
    writes = distributed.is_main()  # rank 0 alone writes files
    if writes:
        write_config_file(config, out / CONFIG_NAME)
        if skip_broken:
            total = len(dataset.split("train")) + len(dataset.split("val"))
            record_skipped(out / SKIPPED_NAME, total - len(skipped), total, skipped, announce=True)
    # A kill between writing log.csv and last.pt leaves the log one epoch ahead: keep the checkpoint's epochs.
    history = [row for row in _read_log(out / "log.csv") if row["epoch"] <= start_epoch] if resume else []
    features_meta = _features_meta(config)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        # The order and the windows of epoch e depend on neither a resume nor the number of processes.
        epoch_seed = config.seed * 100_003 + epoch
        generator.manual_seed(epoch_seed)
        train_set.window_seed = epoch_seed
        train_loss, steps = train_one_epoch(model, train_loader, optimizer, config.supervision, device,
                                            progress, description=f"epoch {epoch + 1}/{config.epochs}",
                                            accel=accel, scaler=scaler)
        step += steps
        recalibrate_batchnorm(core, train_loader, device, accel=accel)  # each process its shares; averaged next
        distributed.average_buffers(core)
        val = validate(core, val_loader, config.supervision, device, accel=accel)
        history.append({"epoch": epoch + 1, "step": step, "train_loss": train_loss, "val_loss": val["loss"],
                        "val_accuracy": val["accuracy"], "seconds": time.perf_counter() - started})
        if writes and progress:
            tqdm.write(epoch_line(history[-1], config.epochs, improved=val["loss"] < best))
        if writes:
            state = {"avloc_version": __version__, "config": asdict(config), "classes": classes,
                     "model": core.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                     "step": step, "best": min(best, val["loss"]), "rng": torch.get_rng_state(),
                     "features_meta": features_meta}
            if scaler.is_enabled():  # fp16: --resume goes on with the scale it had reached
                state["grad_scaler"] = scaler.state_dict()
            if val["loss"] < best:
                save_checkpoint(out / "best.pt", state)
            _write_log(out, history)
            save_checkpoint(out / "last.pt", state)
        best = min(best, val["loss"])
    distributed.barrier()  # every process returns once rank 0 has written the files
    return out / "best.pt"


def epoch_line(row: dict, epochs: int, improved: bool) -> str:
    """One line per epoch for the console and log files: losses, validation accuracy, seconds."""
    accuracy = "-" if math.isnan(row["val_accuracy"]) else f"{row['val_accuracy']:.3f}"  # nan: no classifier
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}"
            f"{' (best)' if improved else ''}, val accuracy {accuracy}, {row['seconds']:.1f} s")


def _features_meta(config: TrainConfig) -> str:
    """The cache's extraction metadata (encoder weights ids included), or "" when trained on videos."""
    return open_features(config.features).meta.to_json() if config.features is not None else ""


def _resume(path: Path, config: TrainConfig, classes: list[str], model: nn.Module,
            optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None) -> tuple[int, int, float]:
    state = load_checkpoint(path)
    saved = TrainConfig.from_dict(state["config"], source=path)
    changed = [f.name for f in fields(TrainConfig)
               if f.name not in ("epochs", "workers") and getattr(saved, f.name) != getattr(config, f.name)]
    if changed:
        raise AvlocError(f"{path}: was trained with other settings ({', '.join(changed)}); cannot resume")
    if state["classes"] != classes:
        raise AvlocError(f"{path}: was trained on other classes than {config.dataset} has")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and scaler.is_enabled() and "grad_scaler" in state:  # an fp16 run's scale
        scaler.load_state_dict(state["grad_scaler"])
    torch.set_rng_state(state["rng"])
    return state["epoch"], state["step"], state["best"]


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as rows:
        return [{k: int(v) if k in ("epoch", "step") else float(v) for k, v in row.items()}
                for row in csv.DictReader(rows)]


def _write_log(out: Path, history: list[dict]) -> None:
    """``log.csv`` and the loss curve ``loss.png``, both written atomically."""
    with atomic_path(out / "log.csv") as tmp, open(tmp, "w", newline="") as rows:
        writer = csv.DictWriter(rows, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    write_loss_curves(out / "loss.png", history, f"{out.name}: loss")
