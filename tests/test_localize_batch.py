"""`avloc localize DIR`: every video of folders and files, one output folder each, summary.csv, reruns."""

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import interrupt_after, make_tone_video

import avloc.localize_batch as batch
from avloc.cli import main
from avloc.io.write import write_video
from avloc.localize_batch import DONE, SUMMARY_COLUMNS, find_videos, localize_batch
from avloc.localize_video import OUTPUTS
from avloc.types import AvlocError

pytestmark = pytest.mark.usefixtures("one_thread")  # the default model on 48 px clips: faster on one thread

@pytest.fixture
def videos(tmp_path):
    """Three good 1 s videos (two sharing a stem), one without audio, one unreadable, and files to leave out."""
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    make_tone_video(root / "a.mp4", seconds=1.0, size=48)
    make_tone_video(root / "a.mkv", seconds=1.0, size=48, tone_hz=880.0, seed=1)
    make_tone_video(root / "sub" / "b.MOV", seconds=1.0, size=48, tone_hz=220.0, seed=2)
    write_video(root / "silent.mp4", np.zeros((8, 32, 32, 3), np.uint8), 8.0)
    (root / "broken.webm").write_bytes(b"\x00" * 500)
    (root / "notes.txt").write_text("not a video")
    (root / ".hidden.mp4").write_bytes(b"\x00" * 10)
    return root


def _summary(out):
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and tuple(rows[0]) == SUMMARY_COLUMNS
    return {row["output"]: row for row in rows}


def test_a_folder_is_localised_video_by_video_and_broken_ones_are_skipped(videos, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    assert main(["localize", str(videos), "--out", str(out), "-q", "--device", "cpu"]) == 1  # some were skipped
    assert f"localised 3 of 5 videos, 2 skipped (see {out / 'summary.csv'})" in capsys.readouterr().out
    warned = [record.getMessage() for record in caplog.records]  # the CLI shows them on stderr as they happen
    assert len(warned) == 2 and all(line.startswith("skipped ") for line in warned) and "broken.webm" in warned[0]
    rows = _summary(out)
    assert sorted(rows) == ["a.mkv", "a.mp4", "broken", "silent", "sub/b"]
    for name in ("a.mkv", "a.mp4", "sub/b"):
        row, folder = rows[name], out / name
        assert row["status"] == "localised" and row["reason"] == "" and float(row["duration"]) == 1.0
        assert all((folder / output).is_file() for output in OUTPUTS) and (folder / DONE).is_file()
        boxes = json.loads((folder / "boxes.json").read_text())
        assert int(row["steps"]) == len(boxes["frames"]) == 4
        classes = [frame["class"] for frame in boxes["frames"]]
        top = max(set(classes), key=classes.count)
        assert classes.count(row["top_class"]) == classes.count(top)
        assert float(row["top_class_share"]) == pytest.approx(classes.count(top) / 4, abs=1e-4)
        scores = [s for frame in boxes["frames"] for s in frame["scores"]]
        assert row["mean_box_score"] == "" if not scores else float(row["mean_box_score"]) == pytest.approx(
            np.mean(scores), abs=2e-4)
        assert float(row["seconds"]) > 0 and row["video"].startswith(str(videos))
    assert rows["silent"]["status"] == "skipped" and "no audio stream" in rows["silent"]["reason"]
    assert rows["broken"]["status"] == "skipped" and "not a readable video" in rows["broken"]["reason"]
    assert "\n" not in rows["broken"]["reason"] and not (out / "broken" / DONE).exists()


def test_a_rerun_skips_finished_videos_and_redoes_changed_or_unfinished_ones(videos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    localize_batch([videos], out, progress=False)
    made = []
    real = batch.localize_video

    def counted(video, *args, **kwargs):
        made.append(video.name)
        return real(video, *args, **kwargs)

    monkeypatch.setattr(batch, "localize_video", counted)
    assert main(["localize", str(videos), "--out", str(out), "-q"]) == 1
    printed = capsys.readouterr().out
    assert "localised 0 of 5 videos, 2 skipped" in printed
    assert "3 finished by an earlier run with the same settings, skipped as finished" in printed
    assert made == ["silent.mp4"]  # the broken ones are tried again (unreadable fails before localising)
    rows = _summary(out)
    assert {name: row["status"] for name, row in rows.items()} == {
        "a.mkv": "finished earlier", "a.mp4": "finished earlier", "sub/b": "finished earlier",
        "broken": "skipped", "silent": "skipped"}
    assert int(rows["a.mp4"]["steps"]) == 4 and rows["a.mp4"]["top_class"]  # the earlier run's numbers
    (out / "a.mkv" / DONE).unlink()  # killed after its outputs, before done.json
    make_tone_video(videos / "a.mp4", seconds=2.0, size=48)  # the video changed
    made.clear()
    localize_batch([videos], out, progress=False)
    assert sorted(made) == ["a.mkv", "a.mp4", "silent.mp4"]
    assert int(_summary(out)["a.mp4"]["steps"]) == 8
    made.clear()
    result = localize_batch([videos], out, sheet_frames=4, progress=False)  # other settings: everything again
    assert sorted(made) == ["a.mkv", "a.mp4", "b.MOV", "silent.mp4"] and result.count("localised") == 3
    made.clear()
    assert main(["localize", str(videos), "--out", str(out), "--sheet-frames", "4", "--no-overlay", "-q"]) == 1
    assert sorted(made) == ["a.mkv", "a.mp4", "b.MOV", "silent.mp4"]  # no overlay: another setting
    assert not list(out.rglob("overlay.mp4")) and len(list(out.rglob("boxes.json"))) == 3
    made.clear()
    localize_batch([videos], out, sheet_frames=4, progress=False, overlay=False)  # finished without the video
    assert made == ["silent.mp4"]


def test_an_interrupted_batch_writes_the_summary_so_far(videos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    interrupt_after(monkeypatch, batch, "localize_video", 1)
    assert main(["localize", str(videos), "--out", str(out), "-q"]) == 130
    rows = _summary(out)
    assert list(rows) == ["a.mkv"] and rows["a.mkv"]["status"] == "localised"
    assert (out / "a.mkv" / DONE).is_file() and not (out / "a.mp4" / DONE).exists()


def test_a_single_file_keeps_its_layout(videos, tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["localize", str(videos / "a.mp4"), "--out", str(out), "-q"]) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUTS)  # no summary.csv, no done.json
    assert "4 steps, 8 frames" in capsys.readouterr().out


def test_several_files_and_folders_mix(videos, tmp_path, capsys):
    other = tmp_path / "more"
    other.mkdir()
    shutil.copy(videos / "a.mp4", other / "a.mp4")
    out = tmp_path / "out"
    argv = ["localize", str(videos / "a.mp4"), str(other), str(videos / "sub" / "b.MOV"), "--out", str(out), "-q"]
    assert main(argv) == 0
    assert "localised 3 of 3 videos, 0 skipped" in capsys.readouterr().out
    assert sorted(_summary(out)) == ["a", "b", "more/a"]


def test_bad_model_or_no_videos_fail_before_any_video(videos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["localize", str(videos), "--model", str(tmp_path / "missing.pt"), "--out", str(out), "-q"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("avloc: error: ") and "missing.pt" in error and error.count("\n") == 1
    assert not (out / "summary.csv").exists()
    (tmp_path / "empty").mkdir()
    assert main(["localize", str(tmp_path / "empty"), "--out", str(out), "-q"]) == 2
    assert "no videos in" in capsys.readouterr().err


def test_output_names_are_collision_free_and_outputs_are_not_inputs(tmp_path):
    root = tmp_path / "in"
    for name in ("x.mp4", "x.avi", "X.mkv", "summary.csv.mp4", "deep/er/y.webm", "deep/y.mp4", "readme.md",
                 "out/z/overlay.mp4"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    names = {item.video.relative_to(root).as_posix(): item.name for item in find_videos([root], exclude=root / "out")}
    assert names == {"x.mp4": "x.mp4", "x.avi": "x.avi", "X.mkv": "X.mkv", "summary.csv.mp4": "summary.csv-2",
                     "deep/er/y.webm": "deep/er/y", "deep/y.mp4": "deep/y"}
    twice = find_videos([root / "x.mp4", root / "x.mp4", root / "deep"])
    assert [(item.video.name, item.name) for item in twice] == [("y.webm", "deep/er/y"), ("y.mp4", "deep/y"),
                                                                ("x.mp4", "x")]
    with pytest.raises(AvlocError, match="no videos in"):
        find_videos([root / "out" / "z"], exclude=root / "out")  # outputs of an earlier run are not videos


def test_the_model_is_loaded_once_for_the_whole_batch(videos, tmp_path, monkeypatch):
    import avloc.localize_video as single

    loads = []
    real = single.load_trained
    monkeypatch.setattr(single, "load_trained", lambda *args, **kwargs: loads.append(args) or real(*args, **kwargs))
    result = localize_batch([videos], tmp_path / "out", progress=False)
    assert result.count("localised") == 3 and len(loads) == 1
