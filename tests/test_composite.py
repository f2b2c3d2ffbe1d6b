"""The composite benchmark (``avloc synth --assets``) on tiny generated assets: determinism, visible-pixel
boxes under occlusion, scenarios, sizes, audio, and refusal of bad assets folders."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from avloc.cli import main
from avloc.data.formats.check import check_dataset
from avloc.data.benchmarks.composite import (CompositePlan, Source, Sprite, annotate, draw, generate_composite,
                                             gt_frames, heard_classes, plan_composite, render_audio)
from avloc.data.benchmarks.composite_assets import scan_assets
from avloc.data.benchmarks.composite_render import warp_sprite
from avloc.data.manifest import BACKGROUND, load_manifest
from avloc.data.benchmarks.object_sizes import TABLES
from avloc.data.benchmarks.synth_scenes import RECIPES
from avloc.data.benchmarks.synth_sounds import SAMPLE_RATE
from avloc.types import AvlocError
from asset_fixtures import COLOURS, make_assets

SEED, CLIPS, SIZE, SECONDS = 5, 5, 64, 1.0
@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return make_assets(tmp_path_factory.mktemp("assets") / "assets")


@pytest.fixture(scope="module")
def library(assets):
    return scan_assets(assets)


@pytest.fixture(scope="module")
def dataset(assets, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("composite") / "a"
    code = main(["synth", str(out), "--assets", str(assets), "--clips", str(CLIPS), "--seed", str(SEED),
                 "--size", str(SIZE), "--seconds", str(SECONDS), "--workers", "1", "-q"])
    assert code == 0
    return out


def _lines(folder: Path) -> list[dict]:
    return [json.loads(text) for text in (folder / "manifest.jsonl").read_text().splitlines()]


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_scan_counts_skipped_files(library):
    assert library.classes == tuple(sorted(COLOURS))
    assert len(library.silent) == 2 and all(len(p) == 2 for p in library.pictures)
    assert library.skipped == {"files beside the class folders": 1, "files that are neither pictures nor sounds": 1}


def test_manifest_loads_and_check_accepts_it(dataset, capsys):
    loaded = load_manifest(dataset)
    assert len(loaded.records) == CLIPS
    assert set(loaded.classes) - {BACKGROUND} <= set(COLOURS)
    assert check_dataset(dataset)[0].startswith(f"{dataset}: native layout, {CLIPS} clips")
    assert main(["datasets", "check", str(dataset)]) == 0
    assert "videos: none missing" in capsys.readouterr().out


def test_every_scenario_present(dataset):
    lines = _lines(dataset)
    assert {line["tags"][0] for line in lines} == set(RECIPES) - {"cross-event"}
    assert any("cross-event" in line["tags"] for line in lines)
    scenarios = {frame["scenario"] for line in lines for frame in line["frames"]}
    assert scenarios == {"single", "mixed", "multi-entity", "off-screen"}
    for line in lines:
        assert [f["t"] for f in line["frames"]] == [(k + 0.5) / 4 for k in range(4)]
        for frame in line["frames"]:
            assert len(frame["labels"]) == len(frame["boxes"])
            if frame["scenario"] == "off-screen":
                assert frame["boxes"] == []


def test_deterministic_across_workers_and_resumable(dataset, assets, tmp_path):
    again = generate_composite(tmp_path / "b", assets, CLIPS, SEED, SIZE, SECONDS, workers=2, progress=False)
    first, second = _lines(dataset), _lines(again)
    assert first == second
    for clip in ("clip_00000", "clip_00003"):
        assert np.array_equal(_frames(dataset / "videos" / f"{clip}.mp4"), _frames(again / "videos" / f"{clip}.mp4"))
    (again / "videos" / "clip_00002.mp4").unlink()  # an interrupted run: one video missing
    before = (again / "videos" / "clip_00001.mp4").stat().st_mtime_ns
    generate_composite(again, assets, CLIPS, SEED, SIZE, SECONDS, workers=1, progress=False)
    assert _lines(again) == first and (again / "videos" / "clip_00002.mp4").is_file()
    assert (again / "videos" / "clip_00001.mp4").stat().st_mtime_ns == before  # finished videos are kept


def _heard(folder: Path) -> set[str]:
    """Every class the manifest names: segment labels and box labels."""
    labels = set()
    for line in _lines(folder):
        labels |= {segment["label"] for segment in line["segments"]} | {line["label"]}
        labels |= {label for frame in line["frames"] for label in frame["labels"]}
    return labels - {BACKGROUND}


def test_classes_keeps_to_n_seeded_classes(assets, library, tmp_path, capsys):
    out = tmp_path / "two"
    assert main(["synth", str(out), "--assets", str(assets), "--clips", "6", "--seed", str(SEED), "--size", str(SIZE),
                 "--seconds", str(SECONDS), "--workers", "1", "--classes", "2", "-q"]) == 0
    marker = json.loads((out / "synth.json").read_text())
    assert marker["generator"] == "avloc.data.composite"  # a file-format value: datasets already written carry it
    chosen = heard_classes(library, SEED, 2)
    assert marker["heard_classes"] == list(chosen) and marker["parameters"]["classes"] == 2
    assert _heard(out) == set(chosen)  # exactly the N classes sound, each at least once
    assert ", ".join(chosen) in capsys.readouterr().out
    # The same seed and N give the same classes; all N of them is the whole (sorted) list, as without N.
    assert heard_classes(library, SEED, 2) == chosen and len(set(chosen)) == 2
    assert {heard_classes(library, seed, 2) for seed in range(20)} != {chosen}  # the seed chooses them
    assert heard_classes(library, SEED, 4) == heard_classes(library, SEED) == library.classes
    # The others may still be drawn as silent distractors, never heard.
    plans = [plan_composite(library, SEED, i, SIZE, SECONDS, chosen) for i in range(40)]
    assert all(s.cls in chosen for plan in plans for s in plan.sources)
    assert any(s.cls not in (None, *chosen) for plan in plans for s in plan.sprites)
    # Another N regenerates every video; the same N keeps them.
    before = (out / "videos" / "clip_00000.mp4").stat().st_mtime_ns
    generate_composite(out, assets, 6, SEED, SIZE, SECONDS, workers=1, progress=False, classes=2)
    assert (out / "videos" / "clip_00000.mp4").stat().st_mtime_ns == before
    generate_composite(out, assets, 6, SEED, SIZE, SECONDS, workers=1, progress=False, classes=3)
    assert (out / "videos" / "clip_00000.mp4").stat().st_mtime_ns != before
    assert _heard(out) <= set(heard_classes(library, SEED, 3))
    assert json.loads((out / "synth.json").read_text())["parameters"]["classes"] == 3


@pytest.mark.parametrize("n", [0, 1, 5, -2])
def test_bad_classes_refused(assets, tmp_path, n, capsys):
    with pytest.raises(AvlocError) as error:
        generate_composite(tmp_path / "out", assets, 2, 0, 64, 1.0, workers=1, progress=False, classes=n)
    text = str(error.value)
    assert "2 to 4" in text and str(Path(assets).resolve()) in text and "\n" not in text
    assert not (tmp_path / "out").exists()
    assert main(["synth", str(tmp_path / "out"), "--assets", str(assets), "--clips", "2", "--seed", "0",
                 "--classes", str(n), "-q"]) == 2
    assert str(Path(assets).resolve()) in capsys.readouterr().err


def _visible_boxes(plan: CompositePlan, library, n: int) -> list[list[int] | None]:
    """Boxes recomputed here: each sprite's weight in the final colour is its alpha times (1 - alpha) of all in front."""
    _, boxes = draw(plan, library, [n], pixels=False)
    from avloc.data.benchmarks.composite import PULSE
    from avloc.data.benchmarks.composite_assets import load_picture
    from avloc.data.benchmarks.composite_render import prepare_sprite

    alphas = []
    for s in plan.sprites:
        grow = 1.0 + PULSE if s.pulse is not None else 1.0
        sprite = prepare_sprite(load_picture(str(library.root / s.picture)), s.width * grow, s.height * grow, s.flip,
                                s.gains)
        x, y, scale, angle = (float(v[0]) for v in s.state(np.array([n / 16])))
        layer = warp_sprite(sprite, x, y, scale / grow, angle, plan.size)
        alpha = np.zeros((plan.size, plan.size), np.float32)
        if layer is not None:
            x0, y0, patch = layer
            alpha[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch[..., 3]
        alphas.append(alpha)
    expected = []
    for k, alpha in enumerate(alphas):
        weight = alpha * np.prod([1.0 - a for a in alphas[k + 1 :]], axis=0) if k + 1 < len(alphas) else alpha
        ys, xs = np.nonzero(weight >= 0.5)
        expected.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None)
    assert boxes[0] == expected
    return boxes[0]


def test_boxes_are_the_visible_pixels(library):
    for index in range(CLIPS):
        plan = plan_composite(library, SEED, index, SIZE, SECONDS)
        for n in gt_frames(plan):
            _visible_boxes(plan, library, n)


def _square(library, cx: float, width: float = 20.0) -> Sprite:
    return Sprite("bell/b.png", "bell", width, width, False, (1.0, 1.0, 1.0), (0.0, 0.0, 0.5, 0.0), (cx, 32.0),
                  (0.0, 0.0), (0.0, 0.5, 0.0), ((cx, cx), (32.0, 32.0)))


def test_occlusion_shrinks_the_box(library):
    # bell/b.png is a 20-px opaque square (cut from its transparent margin), drawn 20 px wide at x = 32 and 44.
    back, front = _square(library, 32.0), _square(library, 44.0)
    source = Source("bell", "bell/a.wav", 0.0, 1.0, 0, 1.0)
    alone = CompositePlan(0, 0, 64, 1.0, "single", (back,), (source,))
    hidden = CompositePlan(0, 0, 64, 1.0, "single", (back, front), (source,))
    behind = CompositePlan(0, 0, 64, 1.0, "single", (front, back), (Source("bell", "bell/a.wav", 0.0, 1.0, 1, 1.0),))
    n = gt_frames(alone)[0]
    assert annotate(alone, draw(alone, library, [n], pixels=False)[1])["frames"][0]["boxes"] == [[22, 22, 42, 42]]
    assert _visible_boxes(hidden, library, n) == [[22, 22, 34, 42], [34, 22, 54, 42]]
    assert annotate(hidden, draw(hidden, library, [n], pixels=False)[1])["frames"][0]["boxes"] == [[22, 22, 34, 42]]
    assert annotate(behind, draw(behind, library, [n], pixels=False)[1])["frames"][0]["boxes"] == [[22, 22, 42, 42]]


def test_sizes_follow_the_real_table(library):
    areas = []
    for index in range(60):
        plan = plan_composite(library, 1, index, 128, 1.0)
        if plan.recipe in ("single", "mixed", "cross-event"):
            areas += [plan.sprites[s.sprite].width * plan.sprites[s.sprite].height / 128**2 for s in plan.sources]
    medians = [np.interp(0.5, np.linspace(0, 1, 21), TABLES[name].area_quantiles) for name in ("ave", "audioset-instrument")]
    assert 0.5 * min(medians) <= np.median(areas) <= 2.0 * max(medians)
    assert max(areas) > 0.3 and min(areas) < 0.05  # the spread of real boxes, not one size


def test_audio_follows_the_recipe(library):
    for index in range(CLIPS):
        plan = plan_composite(library, SEED, index, SIZE, 4.0)
        audio = render_audio(plan, library)
        start, end = (round(t * SAMPLE_RATE) for t in (plan.sources[0].start, plan.sources[-1].end))
        loud = np.sqrt(np.mean(audio[start:end] ** 2))
        assert loud > 0.03  # the recordings (off-screen too), not the noise floor
        quiet = np.concatenate([audio[: max(start - 200, 0)], audio[end + 200 :]])
        if len(quiet):
            assert np.sqrt(np.mean(quiet**2)) < 0.01  # background: the noise floor only


def _bad(root: Path, case: str) -> Path:
    if case == "missing":
        return root / "nothing-here"
    if case == "empty":
        root.mkdir()
        return root
    make_assets(root, dict(list(COLOURS.items())[: 1 if case == "one class" else 2]))
    if case == "no sound":
        (root / "bell" / "a.wav").unlink()
    elif case == "no pictures":
        for p in (root / "bell").glob("*.png"):
            p.unlink()
    elif case == "bad picture":
        (root / "bell" / "a.png").write_bytes(b"not a png at all")
    elif case == "bad sound":
        (root / "bell" / "a.wav").write_bytes(b"RIFF....WAVEjunk")
    elif case == "no alpha":
        Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "_silent" / "flat.png")
    return root


@pytest.mark.parametrize("case, message", [
    ("missing", "not a folder"), ("empty", "no classes"), ("one class", "one class only"),
    ("no sound", "'bell' has pictures but no sound"), ("no pictures", "'bell' has sounds but no pictures"),
    ("bad picture", "unreadable picture bell/a.png"), ("bad sound", "unreadable sound bell/a.wav"),
    ("no alpha", "_silent/flat.png has no transparency"),
])
def test_bad_assets_folder_refused(tmp_path, case, message):
    root = _bad(tmp_path / "assets", case)
    with pytest.raises(AvlocError) as error:
        generate_composite(tmp_path / "out", root, 2, 0, 64, 1.0, workers=1, progress=False)
    text = str(error.value)
    assert message in text and str(root) in text and "\n" not in text
    assert not (tmp_path / "out").exists()
