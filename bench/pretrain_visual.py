"""Does pretraining make the visual encoder delimit objects? `avloc pretrain visual`, measured.

    python bench/pretrain_visual.py ASSETS [--steps 400] [--work runs/pretrain]

Runs ``avloc pretrain visual`` on the assets folder's silent cut-outs (the sounding classes'
pictures are never trained on) and reports, at every validation, the delimiting gap on those
never-seen pictures (mean cosine similarity of an object's cells to their mean direction minus
that of the frame's other cells), against the untrained encoder's. Rewrites the "Visual
pretraining" section of docs/results.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from avloc.pretrain import PretrainConfig, pretrain_visual
from results_md import command, update_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assets")
    parser.add_argument("--steps", type=int, default=PretrainConfig.steps)
    parser.add_argument("--validate-every", type=int, default=50)
    parser.add_argument("--work", default="runs/pretrain")
    args = parser.parse_args()
    out = Path(args.work) / "visual.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    config = PretrainConfig(assets=args.assets, out=str(out), steps=args.steps, validate_every=args.validate_every)
    result = pretrain_visual(config)
    minutes = (time.perf_counter() - start) / 60
    rows = ["| step | delimiting gap, pretrained | untrained |", "| --- | --- | --- |"]
    rows += [f"| {step} | {gap:.3f} | {untrained:.3f} |" for step, gap, untrained in result["validation"]]
    body = (f"`{command()}` — {config.encoder} on {config.crop} px crops of {config.size} px composites, batch "
            f"{config.batch_size}, Adam {config.lr:g} (cosine); trained on {result['pictures']} silent "
            f"cut-outs, validated on the {result['held_out']} pictures of the sounding classes (never trained on); "
            f"{minutes:.1f} min.\n\n" + "\n".join(rows))
    print(body)
    update_section("Visual pretraining", body)


if __name__ == "__main__":
    main()
