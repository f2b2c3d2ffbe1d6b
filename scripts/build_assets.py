"""Build an assets folder for ``avloc synth --assets`` from Debian's Tux Paint stamps.

    python scripts/build_assets.py /tmp/avloc-assets                 # apt-get download into the cache
    python scripts/build_assets.py /tmp/avloc-assets --deb FILE.deb  # a .deb you already have

The package ``tuxpaint-stamps-default`` (GPL-2, about 161 MB) holds about a thousand cut-out
pictures (PNG with transparency), some with a recorded sound effect ``<stamp>.ogg`` beside
``<stamp>.png``. Written to OUT:

- ``OUT/<class>/*.png`` and ``OUT/<class>/*.ogg``: stamps with their own sound effect, variants
  of one object grouped into one class (:data:`GROUPS`);
- ``OUT/_silent/*.png``: other stamps (about ``--silent`` of them), distractors that never sound;
- ``OUT/LICENSE``, ``OUT/copyright`` (Debian's), ``OUT/README`` (the classes).

Not kept as sounds: ``*_desc*.ogg`` / ``*_name*.ogg`` and ``<stamp>_xx.ogg`` / ``_xx_YY.ogg``
(spoken descriptions and names in many languages, never the sound of the object), and stamps
whose own sound is a voice rather than the object (:data:`VOICE`): letters and digits under
``symbols/`` say their name, the four emoticon faces are voice interjections, the dreidel
letters say their names, the hard candy says "mmm". Those stamps may still appear as silent
distractors, except the alphabets (150 letters would crowd out everything else).

The cache (``--cache``, default ``~/.cache/avloc/tuxpaint``) keeps the .deb and its extraction
so a second run does not download again. Never commit the output: it is GPL-2 material.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from avloc.data.benchmarks.composite_assets import load_sound
from avloc.types import AvlocError

PACKAGE = "tuxpaint-stamps-default"
STAMPS = Path("usr/share/tuxpaint/stamps")
SOUND_EXTENSIONS = (".ogg", ".wav", ".flac")
# Stamp paths (relative to the stamps folder, no extension) whose sound is a voice, not the object.
VOICE = {
    "symbols/*": "voice: letters and digits say their names, the emoticon faces are voice interjections",
    "seasonal/hanukkah/dreydl-*": "voice: the dreidel letters say their names",
    "seasonal/christmas/hard_candy": "voice: someone says 'mmm', not a sound of the candy",
}
# Stamp name -> class, for variants of one object; any other stamp is its own class.
GROUPS = {
    "cow_white": "cow", "pig_golden": "pig", "pig_golden2": "pig", "sheep_lamb": "sheep",
    "drake": "duck", "gander": "goose", "doe": "deer", "dromedary": "camel", "mountaingoat": "goat",
    "scissors_small_closed": "scissors", "scissors_small_open": "scissors",
    "heron_greatblue_flying": "heron", "bat_left": "bat", "blackcat": "cat", "apple_red": "apple",
    "camera_35mm": "camera", "cymbal_crash": "cymbal", "drum_tomtom_floor": "tom_drum",
    "mallet_metal": "mallet", "final-roll-call": "bugle", "checkeredflag": "race_cars",
    "lightningbolt": "thunder", "apollo_lander": "lunar_lander", "santahat": "santa_hat",
    "xing_ped": "pedestrian_crossing", "xing_school": "school_crossing", "no_uturn": "no_u_turn_sign",
    "Washing-machine": "washing_machine", "tucan": "toucan", "nandou": "rhea", "xanthia": "moth",
}
SKIPPED_SILENT = "symbols/alphabets/*"
MIN_SIDE = 64  # smaller silent pictures are icons (coins, chess pieces) that look blurred at video size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="assets folder to write (new or empty)")
    parser.add_argument("--deb", type=Path, help=f"an already downloaded {PACKAGE}_*.deb")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/avloc/tuxpaint",
                        help="download and extraction folder (default ~/.cache/avloc/tuxpaint)")
    parser.add_argument("--silent", type=int, default=1000, help="at most this many silent stamps (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the silent stamps' draw when there are more")
    args = parser.parse_args(argv)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"{args.out} exists and is not an empty folder")
    deb = args.deb or _download(args.cache)
    version = _field(deb, "Version")
    root = _extract(deb, args.cache / f"{PACKAGE}_{version}")
    kept, silent, skipped = _select(root / STAMPS)
    if len(silent) > args.silent:
        order = np.random.default_rng(args.seed).permutation(len(silent))[: args.silent]
        skipped["not drawn among the silent stamps (--silent)"] += len(silent) - args.silent
        silent = [silent[i] for i in sorted(order)]
    _write(args.out, root, kept, silent, deb, version)
    _report(args.out, kept, silent, skipped)
    return 0


def _download(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{PACKAGE}_*.deb"))
    if not found:
        print(f"apt-get download {PACKAGE} into {cache} (about 161 MB)")
        subprocess.run(["apt-get", "download", PACKAGE], cwd=cache, check=True)
        found = sorted(cache.glob(f"{PACKAGE}_*.deb"))
    if not found:
        sys.exit(f"apt-get download left no {PACKAGE}_*.deb in {cache}")
    return found[-1]


def _field(deb: Path, name: str) -> str:
    result = subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{deb}: not a readable .deb ({result.stderr.strip()})")
    return result.stdout.strip()


def _extract(deb: Path, folder: Path) -> Path:
    if not (folder / STAMPS).is_dir():
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


def _select(stamps: Path) -> tuple[dict[str, list[tuple[Path, Path]]], list[Path], collections.Counter]:
    """Classes -> [(png, sound)], the silent candidates, and skipped counts by reason."""
    kept: dict[str, list[tuple[Path, Path]]] = collections.defaultdict(list)
    silent, skipped = [], collections.Counter()
    for path in sorted(stamps.rglob("*")):
        if not path.is_file():
            continue
        stem, relative = path.with_suffix(""), str(path.relative_to(stamps).with_suffix(""))
        if path.suffix in SOUND_EXTENSIONS and not any(stem.with_suffix(e).is_file() for e in (".png", ".svg")):
            if re.search(r"_(desc|name)(_|$)", path.stem):
                skipped["sound: spoken description or name (*_desc*, *_name*)"] += 1
            elif re.search(r"_[a-z]{2,3}(_[A-Z]{2})?$", path.stem):
                skipped["sound: localised, spoken (<stamp>_xx.ogg, _xx_YY.ogg)"] += 1
            else:
                skipped["sound: no stamp of that name"] += 1
            continue
        if path.suffix == ".svg":
            if not stem.with_suffix(".png").is_file():
                skipped["image: SVG only (no PNG beside it)"] += 1
            continue
        if path.suffix != ".png":
            continue
        sound = next((stem.with_suffix(e) for e in SOUND_EXTENSIONS if stem.with_suffix(e).is_file()), None)
        problem = _unusable(path, sound)
        if problem:
            skipped[problem] += 1
            continue
        voice = next((why for pattern, why in VOICE.items() if fnmatch.fnmatch(relative, pattern)), None)
        if sound is not None and voice is None:
            kept[GROUPS.get(path.stem, path.stem.lower().replace("-", "_"))].append((path, sound))
            continue
        if voice is not None and sound is not None:
            skipped[f"sound: {voice}"] += 1
        if fnmatch.fnmatch(relative, SKIPPED_SILENT):
            skipped["image: letter of an alphabet (kept out of the silent stamps)"] += 1
        elif _side(path) < MIN_SIDE:
            skipped[f"image: silent stamp smaller than {MIN_SIDE} px (an icon)"] += 1
        else:
            silent.append(path)
    return dict(sorted(kept.items())), silent, skipped


def _side(png: Path) -> int:
    with Image.open(png) as image:
        return max(image.size)


def _unusable(png: Path, sound: Path | None) -> str | None:
    try:
        with Image.open(png) as image:
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    except OSError:
        return "image: unreadable PNG"
    if not has_alpha:
        return "image: no transparency (not a cut-out)"
    if sound is not None:
        try:
            load_sound(str(sound))  # the generator's own reading: a silent recording is no sound
        except AvlocError as error:
            return "sound: unreadable, empty or silent" if "silent" in str(error) else "sound: unreadable"
    return None


def _write(out: Path, root: Path, kept: dict, silent: list[Path], deb: Path, version: str) -> None:
    stamps = root / STAMPS
    for name, pairs in kept.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        for png, sound in pairs:
            shutil.copyfile(png, out / name / png.name)
            shutil.copyfile(sound, out / name / (png.stem + sound.suffix))
    (out / "_silent").mkdir(parents=True, exist_ok=True)
    for png in silent:
        flat = str(png.relative_to(stamps)).replace("/", "__")  # unique: several folders hold the same name
        shutil.copyfile(png, out / "_silent" / flat)
    copyright_file = root / "usr/share/doc" / PACKAGE / "copyright"
    if copyright_file.is_file():
        shutil.copyfile(copyright_file, out / "copyright")
    (out / "LICENSE").write_text(
        f"These pictures and sounds come from the Debian package {PACKAGE}, version {version}\n"
        f"({deb.name}), the default stamps of Tux Paint (https://tuxpaint.org/,\n"
        "https://packages.debian.org/source/sid/tuxpaint-stamps), copied unchanged and renamed.\n\n"
        "They are free software: you can redistribute them and/or modify them under the terms of\n"
        "the GNU General Public License, version 2, as published by the Free Software Foundation\n"
        "(https://www.gnu.org/licenses/old-licenses/gpl-2.0.html; on Debian, /usr/share/common-licenses/GPL-2).\n"
        "They come WITHOUT ANY WARRANTY. The authors and the full terms are in `copyright` beside this\n"
        "file (the package's own). This folder was written by avloc's scripts/build_assets.py; it is\n"
        "not part of avloc (MIT) and must not be committed to avloc's repository.\n")
    lines = [f"Assets for `avloc synth OUT --assets {out}`: {len(kept)} sounding classes, "
             f"{len(silent)} silent stamps (_silent/). From {PACKAGE} {version}, GPL-2 (see LICENSE).", "",
             "class: stamps (each PNG with its own recording)"]
    lines += [f"{name}: {', '.join(png.stem for png, _ in pairs)}" for name, pairs in kept.items()]
    (out / "README").write_text("\n".join(lines) + "\n")


def _report(out: Path, kept: dict, silent: list[Path], skipped: collections.Counter) -> None:
    stamps = sum(len(pairs) for pairs in kept.values())
    print(f"wrote {out}: {len(kept)} classes from {stamps} stamps with their own sound, {len(silent)} silent stamps")
    for name, pairs in kept.items():
        print(f"  {name:24s} {len(pairs)}  ({', '.join(png.stem for png, _ in pairs)})")
    print("skipped:")
    for reason, count in sorted(skipped.items()):
        print(f"  {count:6d}  {reason}")


if __name__ == "__main__":
    sys.exit(main())
