"""Train avloc's built-in default model and write its model card.

    python scripts/train_default_model.py [--work runs/default-model] [--variant c+u]

One command, start to end: the synthetic benchmark (300 ten-second clips, seed 0, 128 px),
its feature cache (default encoders, 256 px), STM trained with weak video-level labels
(seed 0), evaluation on the test split, and then, in ``src/avloc/models/default/``:

- ``stm-synth.pt``: the best checkpoint (lowest validation loss) with the encoders' weights
  added, so the model is self-contained, and without the optimiser state (size);
- ``MODEL_CARD.md``: the command, seed, hash of the data, metrics per scenario, limits.

Reruns reuse the finished dataset, features and training run in ``--work``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shlex
import sys
from pathlib import Path

from avloc.atomic import atomic_path
from avloc.checkpoint import load_checkpoint, save_checkpoint
from avloc.data.synth import generate_dataset
from avloc.evaluate import evaluate, format_table
from avloc.extract import extract_features
from avloc.models.encoders import create_encoder
from avloc.train import TrainConfig, fit

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "src" / "avloc" / "models" / "default"
CLIPS, DATA_SEED, SIZE, SECONDS, FRAME_SIZE = 300, 0, 128, 10.0, 256


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
        encoder = create_encoder(name)  # the deterministic init the features were extracted with
        model_state.update({f"{modality}_encoder.{k}": v for k, v in encoder.state_dict().items()})
    keep = {k: state[k] for k in ("avloc_version", "config", "classes", "epoch", "step", "best", "features_meta")
            if k in state}
    save_checkpoint(out, {**keep, "model": model_state})
    return out.stat().st_size


def _variant_pointing(work: Path, dataset: Path, features: Path, chosen: str) -> dict[str, dict]:
    """Validation-split rows of the other variants this script has trained in ``work`` (if any)."""
    rows = {}
    for variant in ("none", "u", "c+u"):
        best = work / f"stm-{variant}" / "best.pt"
        if variant != chosen and best.is_file():
            rows[variant] = evaluate(best, dataset, split="val", features=str(features), progress=False)["rows"]
    return rows


def model_card(command: str, dataset: Path, digest: str, report: dict, val_report: dict, minutes: float,
               size_bytes: int, config: TrainConfig, other_variants: dict[str, dict]) -> str:
    single = report["rows"].get("single", {})
    others = "".join(
        f"\n- `--variant {variant}` (same data, seed and budget): pointing on single-source validation frames "
        f"{rows['single']['pointing']:.3f}, cIoU@0.5 {rows['single']['ciou_at']:.3f}, all frames pointing "
        f"{rows['all']['pointing']:.3f}."
        for variant, rows in other_variants.items())
    return f"""# avloc default model: STM on the synthetic benchmark

`avloc localize VIDEO` and `avloc demo` use this model unless `--model CHECKPOINT` is given.

## How it was made

    {command}

- Data: the synthetic benchmark, {CLIPS} clips of {SECONDS:g} s at {SIZE} px, seed {DATA_SEED}
  (`avloc synth {dataset} --clips {CLIPS} --seed {DATA_SEED} --size {SIZE} --seconds {SECONDS:g}`),
  sha256 of manifest + videos `{digest}`. Splits as written by `avloc synth`.
- Encoders: `{config.visual}` + `{config.audio}`, random initialisation (seed 0), frozen;
  frames resized to {config.size} px (16 x 16 heat maps), 4 steps per second. Their weights
  are stored in the checkpoint.
- Model: STM, options {config.model_options}; weak supervision from video-level labels;
  Adam lr {config.lr:g}, batch {config.batch_size}, {config.epochs} epochs, seed {config.seed};
  the checkpoint with the lowest validation loss. Training took {minutes:.1f} min on 2 CPU cores.
- Checkpoint: `stm-synth.pt`, {size_bytes / 1e6:.1f} MB.

## Metrics (test split, `avloc eval`)

```
{format_table(report)}
```

Validation split: pointing on single-source frames {val_report["rows"].get("single", {}).get("pointing", float("nan")):.3f}.

The variant was chosen on the validation split (pointing on single-source frames); the other
variants this script trained:{others}

## What to expect

- On the synthetic benchmark it finds the sounding object: the heat map's maximum lies on it
  in {100 * single.get("pointing", float("nan")):.0f}% of single-source test frames (a random map: about 2%).
  Its maps are one or two cells wide, much narrower than the objects, so cIoU@0.5
  ({single.get("ciou_at", float("nan")):.3f}) and the Otsu boxes (IoU@0.5) are poor: read the heat map's peak, not the
  box's extent. Why: docs/results.md, "STM: what holds and what does not yet".
- On real videos it cannot be expected to work: its encoders are random and it has seen only
  coloured shapes on textured backgrounds with synthetic sounds from ten classes. It shows
  that the pipeline runs; for real videos train a model on real data with pretrained
  encoders (`avloc extract --visual resnet18 --weights visual=FILE ...`, `avloc train`) and
  pass it with `--model`.
- Its event classes are the benchmark's ten shape names plus background. The class of a step
  is right in {100 * report["segment_accuracy"]:.0f}% of test steps (background included): trained with
  audio dropout 1.0, its classifier reads only the attended visual vector, and at inference
  the audio vector it never learned to use is added to its input.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/default-model", help="folder for the data, features and run")
    parser.add_argument("--variant", default="none", choices=("c+u", "u", "none"),
                        help="STM variant (default none: on this benchmark it points at the sounding object "
                             "about twice as often as c+u, see the model card)")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    work = Path(args.work)
    dataset = generate_dataset(work / "synth", clips=CLIPS, seed=DATA_SEED, size=SIZE, seconds=SECONDS)
    features = work / "features.h5"
    extract_features(dataset, features, size=FRAME_SIZE)
    config = TrainConfig(dataset=str(dataset), features=str(features), out=str(work / f"stm-{args.variant}"), size=FRAME_SIZE,
                         epochs=args.epochs, lr=1e-3, seed=0,
                         model_options={"variant": args.variant, "audio_dropout": 1.0})
    run = Path(config.out)
    done = (run / "last.pt").is_file() and load_checkpoint(run / "last.pt")["epoch"] >= args.epochs
    best = run / "best.pt" if done else fit(config, resume=(run / "last.pt").is_file())
    with open(run / "log.csv", newline="") as rows:
        minutes = sum(float(row["seconds"]) for row in csv.DictReader(rows)) / 60
    report = evaluate(best, dataset, split="test", features=str(features))
    val_report = evaluate(best, dataset, split="val", features=str(features), progress=False)
    DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
    other_variants = _variant_pointing(work, dataset, features, args.variant)
    size_bytes = export(best, DEFAULT_DIR / "stm-synth.pt")
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    card = model_card(command, dataset, data_hash(dataset), report, val_report, minutes, size_bytes, config,
                      other_variants)
    with atomic_path(DEFAULT_DIR / "MODEL_CARD.md") as tmp:
        tmp.write_text(card)
    print(format_table(report))
    print(f"wrote {DEFAULT_DIR / 'stm-synth.pt'} ({size_bytes / 1e6:.1f} MB) and its model card")


if __name__ == "__main__":
    main()
