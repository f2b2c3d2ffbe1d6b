"""Train avloc's built-in default model and write its model card and demo clips.

    python scripts/train_default_model.py [--work runs/default-model] [--assets DIR]

One command, start to end: the assets folder (``scripts/build_assets.py``: Debian's Tux Paint
stamps, built in ``WORK/assets`` unless ``--assets`` names one), the composite benchmark from it
(300 clips of 4 s at 256 px, 20 sounding classes, seed 11), its feature cache with ``avloc
extract``'s defaults, STM trained with ``avloc train``'s defaults (no flags: the recipe every user
gets), evaluation on the test split beside the centre box, and then, in
``src/avloc/models/default/``:

- ``stm-synth.pt``: the best checkpoint (lowest validation loss) with the encoders' weights
  added, so the model is self-contained, and without the optimiser state (size);
- ``MODEL_CARD.md``: the command, seed, hash of the data, metrics per scenario, limits;
- ``demo/``: the first two test clips of each scenario with their manifest lines and the
  assets' licence, the clips ``avloc demo`` localises.

Reruns reuse the finished assets, dataset, features and training run in ``--work``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import shlex
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import build_assets

from avloc.atomic import atomic_path
from avloc.checkpoint import load_checkpoint, save_checkpoint
from avloc.data.benchmarks.composite import generate_composite
from avloc.data.manifest import load_manifest, write_manifest
from avloc.data.benchmarks.synth_scenes import RECIPES
from avloc.evaluate import evaluate
from avloc.report import format_table
from avloc.extract import extract_features
from avloc.models.encoders import create_encoder
from avloc.config import TrainConfig
from avloc.train import fit

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "src" / "avloc" / "models" / "default"
CLIPS, DATA_SEED, CLASSES, SIZE, SECONDS = 300, 11, 20, 256, 4.0
DEMO_CLIPS_PER_SCENARIO = 2


def data_hash(dataset: Path) -> str:
    """sha256 of the manifest and of every video, in manifest order."""
    digest = hashlib.sha256((dataset / "manifest.jsonl").read_bytes())
    for video in sorted((dataset / "videos").iterdir()):
        digest.update(video.read_bytes())
    return digest.hexdigest()


def export(best: Path, out: Path) -> int:
    """Write the self-contained default checkpoint; returns its size in bytes."""
    state = load_checkpoint(best)
    config = TrainConfig.from_dict(state["config"])
    model_state = dict(state["model"])
    for modality, name in (("visual", config.visual), ("audio", config.audio)):
        encoder = create_encoder(name, getattr(config, f"{modality}_weights"))  # those of the features
        model_state.update({f"{modality}_encoder.{k}": v for k, v in encoder.state_dict().items()})
    keep = {k: state[k] for k in ("avloc_version", "config", "classes", "epoch", "step", "best", "features_meta")
            if k in state}
    save_checkpoint(out, {**keep, "model": model_state})
    return out.stat().st_size


def write_demo_clips(dataset: Path, assets: Path, out: Path) -> int:
    """Copy the first test clips of each scenario to ``out`` (a native dataset); returns how many."""
    records = load_manifest(dataset).split("test")
    chosen = [record for scenario in RECIPES
              for record in [r for r in records if scenario in r.tags][:DEMO_CLIPS_PER_SCENARIO]]
    if out.exists():
        shutil.rmtree(out)
    (out / "videos").mkdir(parents=True)
    copies = [replace(record, video=Path(shutil.copy2(record.video, out / "videos" / record.video.name)))
              for record in chosen]
    write_manifest(out, copies)
    package = re.search(r"Debian package (\S+), version (\S+)", (assets / "LICENSE").read_text())
    source = f"{package[1]} {package[2]}" if package else "tuxpaint-stamps-default"
    (out / "LICENSE").write_text(
        "These video clips were composed by avloc's composite benchmark generator (avloc synth --assets)\n"
        f"from the pictures and sound effects of the Debian package {source}, the default stamps of\n"
        "Tux Paint (https://tuxpaint.org/).\n\n"
        "Like the pictures and sounds they are made of, the clips are free software under the terms of the\n"
        "GNU General Public License, version 2 (GPL-2; https://www.gnu.org/licenses/old-licenses/gpl-2.0.html),\n"
        "WITHOUT ANY WARRANTY. The authors and the full terms are in `copyright` beside this file (the\n"
        "package's own). They are distributed beside avloc (MIT), not as part of it.\n")
    shutil.copy2(assets / "copyright", out / "copyright")
    return len(copies)


def model_card(command: str, dataset: Path, digest: str, report: dict, centre: dict, minutes: float,
               size_bytes: int, config: TrainConfig) -> str:
    def row(rows: dict, scenario: str, metric: str) -> float:
        return rows.get(scenario, {}).get(metric, float("nan"))

    rows, centre_single = report["rows"], centre["rows"]
    return f"""# avloc default model: STM on the composite benchmark

`avloc localize VIDEO` and `avloc demo` use this model unless `--model CHECKPOINT` is given.

## How it was made

    {command}

- Data: the composite benchmark of real cut-outs and recordings (Debian's `tuxpaint-stamps-default`,
  GPL-2), {CLIPS} clips of {SECONDS:g} s at {SIZE} px, {CLASSES} sounding classes, seed {DATA_SEED}
  (`avloc synth {dataset} --assets ASSETS --classes {CLASSES} --clips {CLIPS} --seed {DATA_SEED} --size {SIZE}
  --seconds {SECONDS:g}`), sha256 of manifest + videos `{digest}`. Splits as written by `avloc synth`.
- Encoders: `{config.visual}` with its bundled weights `{config.visual_weights}` (`avloc pretrain
  visual` on the package's silent stamps, never on the sounding classes' pictures; see
  `STAMPS_WEIGHTS.md`) + `{config.audio}` ({config.audio_weights}), frozen; frames at {config.size} px
  (16 x 16 heat maps), {config.fps:g} steps per second. Their weights are stored in the checkpoint.
- Model: STM with `avloc train`'s defaults, options {config.model_options or "(the defaults)"};
  supervision {config.supervision}; Adam lr {config.lr:g}, batch {config.batch_size}, {config.epochs} epochs,
  seed {config.seed}; the checkpoint with the lowest validation loss. Its heat maps are spread by one step of
  affinity propagation over the visual encoder's cells (STM's `affinity_temperature`, 0.1 by default,
  inference only; `none` gives the paper's map). Training took {minutes:.1f} min of
  wall time (summed over epochs; here a 2-core CPU machine, shared with other runs).
- Checkpoint: `stm-synth.pt`, {size_bytes / 1e6:.1f} MB. Licence: the weights are learned from GPL-2
  pictures and recordings; treat them, and the demo clips in `demo/`, as GPL-2 material
  (`demo/LICENSE`).

## Metrics (test split, `avloc eval`)

```
{format_table(report)}
```

The centre box on the same frames (`avloc eval baseline:centre`): single-source cIoU@0.5
{row(centre_single, "single", "ciou_at"):.3f}, pointing {row(centre_single, "single", "pointing"):.3f}; all frames
cIoU@0.5 {row(centre_single, "all", "ciou_at"):.3f}.

## What to expect

- On clips like its benchmark's (cut-out pictures over textured backgrounds, one of its {CLASSES}
  classes sounding) its single-source cIoU@0.5 is {row(rows, "single", "ciou_at"):.3f} against the centre
  box's {row(centre_single, "single", "ciou_at"):.3f}, and the heat map's maximum lies on the sounding object in
  {100 * row(rows, "single", "pointing"):.0f}% of single-source test frames. Its maps cover part of the
  object more often than all of it; small objects (a few percent of the frame) are the hardest.
- Its event classes are the benchmark's {CLASSES} class names plus background; the class of a
  second is right in {100 * report["segment_accuracy"]:.0f}% of test seconds (background included).
- On real videos it cannot be expected to work: it has seen twenty drawn or photographed stamps
  and their sound effects. It shows what the pipeline does; for real videos train a model on
  real data (`avloc extract`, `avloc train`, better with real pretrained encoders:
  `--visual resnet18 --weights visual=FILE`) and pass it with `--model`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/default-model", help="folder for the data, features and run")
    parser.add_argument("--assets", type=Path, default=None,
                        help="assets folder of scripts/build_assets.py (default: built in WORK/assets)")
    args = parser.parse_args()
    work = Path(args.work)
    assets = args.assets or work / "assets"
    if not (assets / "LICENSE").is_file() and build_assets.main([str(assets)]) != 0:
        sys.exit(f"{assets}: building the assets folder failed")
    dataset = generate_composite(work / "composite", assets, clips=CLIPS, seed=DATA_SEED, size=SIZE,
                                 seconds=SECONDS, classes=CLASSES)
    features = work / "features.h5"
    extract_features(dataset, features)
    config = TrainConfig(dataset=str(dataset), features=str(features), out=str(work / "stm"))
    run = Path(config.out)
    done = (run / "last.pt").is_file() and load_checkpoint(run / "last.pt")["epoch"] >= config.epochs
    best = run / "best.pt" if done else fit(config, resume=(run / "last.pt").is_file())
    config = TrainConfig.from_dict(load_checkpoint(best)["config"])  # as resolved by the run
    with open(run / "log.csv", newline="") as rows:
        minutes = sum(float(row["seconds"]) for row in csv.DictReader(rows)) / 60
    report = evaluate(best, dataset, split="test", features=str(features))
    centre = evaluate("baseline:centre", dataset, split="test", features=str(features), progress=False)
    DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
    size_bytes = export(best, DEFAULT_DIR / "stm-synth.pt")
    demo_clips = write_demo_clips(dataset, assets, DEFAULT_DIR / "demo")
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    card = model_card(command, dataset, data_hash(dataset), report, centre, minutes, size_bytes, config)
    with atomic_path(DEFAULT_DIR / "MODEL_CARD.md") as tmp:
        tmp.write_text(card)
    print(format_table(report))
    print(f"wrote {DEFAULT_DIR / 'stm-synth.pt'} ({size_bytes / 1e6:.1f} MB), its model card and "
          f"{demo_clips} demo clips")


if __name__ == "__main__":
    main()
