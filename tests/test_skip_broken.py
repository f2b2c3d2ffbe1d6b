"""--skip-broken on extract, train and eval; without it the first unreadable clip stops the run in one line."""

import json
import logging

import pytest
import torch

from avloc.cli import main
from avloc.data.cache import FeatureCache
from avloc.data.manifest import load_manifest
from avloc.data.usable import BrokenClipError, usable_clips
from avloc.data.windows import VideoWindows
from broken_videos import BROKEN, CLIPS, make_broken_dataset, skipped_ids

GOOD = [clip_id for clip_id, *_, kind in CLIPS if kind == "good"]
TRAIN = ["--size", "32", "--fps", "4", "--epochs", "1", "--batch-size", "2", "--steps", "4", "-q"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_broken_dataset(tmp_path_factory.mktemp("broken"))


def _one_line_error(capsys, name: str) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("avloc: error: ") and "\n" not in error and name in error, error
    return error


def _without(dataset, folder, ids):
    """A copy of ``dataset``'s manifest without the clips ``ids`` (the videos linked)."""
    folder.mkdir()
    (folder / "videos").symlink_to(dataset / "videos")
    kept = [line for line in (dataset / "manifest.jsonl").read_text().splitlines() if json.loads(line)["id"] not in ids]
    (folder / "manifest.jsonl").write_text("\n".join(kept) + "\n")
    return folder


def test_extract_stops_at_the_first_broken_clip_or_skips_and_lists_them(dataset, tmp_path, capsys, one_thread):
    out = tmp_path / "features.h5"
    # a missing video is refused when the manifest is read, before anything else
    assert main(["extract", str(dataset), "--out", str(out), "--size", "32", "-q"]) == 2
    _one_line_error(capsys, "manifest.jsonl:8: video file 'videos/h.mp4' does not exist")
    # the others when every video is looked at, before the first is encoded
    present = _without(dataset, tmp_path / "present", {"h-missing"})
    assert main(["extract", str(present), "--out", str(out), "--size", "32", "-q"]) == 2
    error = _one_line_error(capsys, "b.mp4: not a readable video file")  # the first by id
    assert "clip 'b-text'" in error and "--skip-broken" in error
    assert not out.exists() and not (tmp_path / "features.h5.parts").exists()  # nothing half-written
    assert main(["extract", str(dataset), "--out", str(out), "--size", "32", "--skip-broken", "-q"]) == 0
    listed = tmp_path / "features.h5.skipped.txt"
    assert f"used 4 of 8 clips, 4 skipped: see {listed}" in capsys.readouterr().out
    assert sorted(FeatureCache(out).ids) == GOOD
    reasons = skipped_ids(listed)
    assert reasons.keys() == BROKEN.keys()
    assert "d.mp4: no audio stream" in reasons["d-silent"] and "h.mp4: no such file" in reasons["h-missing"]
    assert "f.mp4: an empty file (0 bytes), not a video" in reasons["f-empty"]
    # the cache feeds train and eval: without --skip-broken the clips it lacks are refused, with it left out
    run = tmp_path / "run"
    assert main(["train", str(dataset), "--features", str(out), *TRAIN, "--out", str(run)]) == 2
    assert "no features for" in capsys.readouterr().err
    assert main(["train", str(dataset), "--features", str(out), *TRAIN, "--out", str(run), "--skip-broken"]) == 0
    assert skipped_ids(run / "skipped.txt").keys() == {"b-text", "d-silent", "f-empty"}  # train and val only
    report = tmp_path / "r.json"
    assert main(["eval", str(run / "best.pt"), str(dataset), "--features", str(out), "--out", str(report),
                 "--skip-broken", "-q"]) == 0
    assert json.loads(report.read_text())["n_clips"] == 1
    assert skipped_ids(tmp_path / "r.skipped.txt").keys() == {"h-missing"}


def test_train_finds_broken_clips_before_the_first_epoch_and_eval_skips_them(dataset, tmp_path, capsys, caplog,
                                                                             one_thread):
    out = tmp_path / "run"
    assert main(["train", str(_without(dataset, tmp_path / "present", {"h-missing"})), *TRAIN, "--out", str(out)]) == 2
    _one_line_error(capsys, "b.mp4: not a readable video file")
    assert not (out / "last.pt").exists()
    with caplog.at_level(logging.WARNING):
        assert main(["train", str(dataset), *TRAIN, "--out", str(out), "--skip-broken"]) == 0
    assert f"used 3 of 6 clips, 3 skipped: see {out / 'skipped.txt'}" in caplog.text
    assert skipped_ids(out / "skipped.txt").keys() == {"b-text", "d-silent", "f-empty"}
    checkpoint = str(out / "best.pt")
    assert main(["eval", checkpoint, str(dataset), "--out", str(tmp_path / "r.json"), "-q"]) == 2
    _one_line_error(capsys, "videos/h.mp4' does not exist")
    assert main(["eval", checkpoint, str(dataset), "--out", str(tmp_path / "r.json"), "--skip-broken", "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"used 1 of 2 clips, 1 skipped: see {tmp_path / 'r.skipped.txt'}" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_clips"] == 1 and report["skipped"][0]["id"] == "h-missing"
    # a later run with nothing to skip leaves no stale list behind
    clean = _without(dataset, tmp_path / "clean", BROKEN)
    assert main(["eval", checkpoint, str(clean), "--out", str(tmp_path / "r.json"), "--skip-broken", "-q"]) == 0
    assert "used 1 of 1 clips, none skipped" in capsys.readouterr().out
    assert not (tmp_path / "r.skipped.txt").exists()


def test_skipping_serves_the_good_clips_exactly_what_a_manifest_without_the_broken_ones_does(dataset, tmp_path):
    """The windows (start, frames, audio) of the good clips do not move when broken clips are skipped."""
    train = load_manifest(dataset, require_videos=False).split("train")
    good, infos, skipped = usable_clips(train, skip_broken=True)
    assert [r.id for r in good] == ["a-good", "c-good"] and [s.id for s in skipped] == ["b-text", "d-silent"]
    reference = load_manifest(_without(dataset, tmp_path / "clean", BROKEN)).split("train")
    classes = ("bell", "dog", "background")
    served = VideoWindows(good, classes, size=32, durations={k: v.duration for k, v in infos.items()})
    expected = VideoWindows(reference, classes, size=32)
    served.window_seed = expected.window_seed = 7
    for index in range(len(reference)):
        a, b = served[index], expected[index]
        assert a["id"] == b["id"] and torch.equal(a["times"], b["times"])
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["logmel"], b["logmel"])
    with pytest.raises(BrokenClipError, match=r"b\.mp4: not a readable video file .*clip 'b-text'; --skip-broken"):
        usable_clips(train, skip_broken=False)
