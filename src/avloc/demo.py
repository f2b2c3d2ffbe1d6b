"""``avloc demo``: a bundled clip of the kind the built-in model was made for, localised and scored.

The clips (``avloc/models/default/demo/``, a native dataset with exact ground truth) come from
the test split of the built-in model's benchmark, which it never trained on; two clips per
scenario; ``LICENSE`` there says whose pictures and recordings they are made of.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from avloc.data.manifest import load_manifest
from avloc.data.benchmarks.synth_scenes import RECIPES
from avloc.evaluate import annotated_maps, class_targets, second_predictions
from avloc.report import build_report
from avloc.metrics import ClassificationMeter
from avloc.protocols import PROTOCOLS, score_maps
from avloc.trained import DEFAULT_MODEL, load_trained
from avloc.io.decode import probe
from avloc.localize_video import Localization, localize_video
from avloc.models.blocks import check_choice
from avloc.types import AvlocError

DEMO_CLIPS = DEFAULT_MODEL.parent / "demo"


def run_demo(out: str | os.PathLike, seed: int | None = None, scenario: str = "single", model: str = "default",
             progress: bool = True, clips: str | os.PathLike = DEMO_CLIPS) -> tuple[Localization, dict]:
    """Localise a clip of ``scenario`` from the dataset ``clips`` (the bundled demo clips) and score it.

    ``seed`` picks among the clips of that scenario (clip ``seed % count``; random when None), so
    ``(seed, scenario)`` always gives the same clip. The clip is copied to ``out/clips/``; the
    overlay and the contact sheet also show its ground-truth boxes (dashed). Returns the
    localisation and an ``avloc eval``-style report.
    """
    check_choice("scenario", scenario, RECIPES)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise AvlocError(f"--seed must be a non-negative whole number, got {seed!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AvlocError(f"{out}: exists and is not a folder")
    load_trained(model)  # a bad model is refused before anything is written
    candidates = [record for record in load_manifest(clips).records if scenario in record.tags]
    if not candidates:
        raise AvlocError(f"{clips}: holds no {scenario} clip")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    record = candidates[seed % len(candidates)]
    (out / "clips").mkdir(parents=True, exist_ok=True)
    video = Path(shutil.copy2(record.video, out / "clips" / record.video.name))
    truth = [(a.t, np.asarray(a.boxes, dtype=np.float64).reshape(-1, 4)) for a in record.frames]
    result = localize_video(video, out, model=model, progress=progress, ground_truth=truth)
    info = probe(video)
    frames, unscored = annotated_maps(record, torch.from_numpy(result.heatmaps), result.times, result.fps,
                                      (info.height, info.width), info.duration)
    steps, segments = ClassificationMeter(), ClassificationMeter()
    if result.probabilities.shape[1]:  # a model without a classifier has no event classes to score
        steps.update(result.probabilities.argmax(axis=1), class_targets(record, result.times, result.classes, clips))
        seconds, predicted = second_predictions(result.probabilities, result.times)
        segments.update(predicted, class_targets(record, seconds + 0.5, result.classes, clips))
    source = f"{model} model on demo clip {record.id} ({'/'.join(record.tags)}; --seed {seed})"
    protocol = PROTOCOLS["stm"]
    report = build_report(source, "its annotated frames", 1, score_maps(frames, protocol, unscored), protocol,
                          segments, steps)
    return result, report
