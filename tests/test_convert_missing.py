"""`avloc datasets convert` without (all) the videos: missing_videos.txt; the STM split files; one CVAT folder."""

import json

import pytest

from avloc.cli import main
from avloc.data.formats.check import check_dataset
from avloc.data.manifest import load_manifest
from conftest import SHARED_DATA, make_tone_video

STM = SHARED_DATA / "stm-annotations"
AVE = SHARED_DATA / "ave"
needs_shared = pytest.mark.skipif(not (STM.is_dir() and AVE.is_dir()), reason="../shared/data is not available")


def _rows(path):
    """The data rows of a missing_videos.txt: the header row's names -> values."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


@needs_shared
@pytest.mark.parametrize("source", [AVE, STM / "splits" / "AVE"], ids=["Annotations.txt", "STM split files"])
def test_no_video_at_all_writes_only_the_list_of_what_to_fetch(tmp_path, capsys, source):
    out = tmp_path / "out"
    assert main(["datasets", "convert", "ave", str(source), "--out", str(out), "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "none of the 4143 clips' videos was found" in error
    assert "named by the YouTube id" in error and "clip's id" not in error and str(out / "missing_videos.txt") in error
    assert sorted(p.name for p in out.iterdir()) == ["missing_videos.txt"]  # no manifest, no empty videos/
    rows = _rows(out / "missing_videos.txt")
    assert len(rows) == 4143 and len({row["source id"] for row in rows}) == 4097
    first = rows[0]
    assert (first["start"], first["end"]) == ("0", "10")
    if source == AVE:  # row 1 of Annotations.txt: Church bell&MH3m4AwEcRY&good&6&8
        assert rows[1] == {"file name": "MH3m4AwEcRY", "source id": "MH3m4AwEcRY", "start": "0", "end": "10",
                           "clip id": "0001-MH3m4AwEcRY", "event": "6-8 s"}
    else:  # trainSet.txt line 2: Church bell&fCZi6I6kPpU&good&6&10
        assert rows[1]["clip id"] == "train0001-fCZi6I6kPpU" and rows[1]["event"] == "6-10 s"


@needs_shared
def test_audioset_instrument_lists_the_csv_windows(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["datasets", "convert", "audioset-instrument", str(STM / "splits" / "AudioSet_Instrument"),
                 "--out", str(out), "-q"]) == 2
    rows = _rows(out / "missing_videos.txt")
    assert len(rows) == 912
    assert {"file name": "xVi1wNljxjk", "source id": "xVi1wNljxjk", "start": "390", "end": "400",
            "clip id": "xVi1wNljxjk"} in rows  # test.csv: xVi1wNljxjk,390.0,400.0,...


def test_some_videos_missing_converts_the_others_and_lists_the_rest(tmp_path, capsys):
    entries = [{"file": "abc_30", "class": "dog", "bbox": [[0, 0, 0.5, 0.5]]},
               {"file": "xyz_000010", "class": "cat", "bbox": [[0.5, 0.5, 1, 1]]}]
    (tmp_path / "vggss.json").write_text(json.dumps(entries))
    make_tone_video(tmp_path / "media" / "abc_000030.mp4", seconds=1.0, size=32)
    out = tmp_path / "out"
    assert main(["datasets", "convert", "vggss", str(tmp_path / "vggss.json"), "--videos", str(tmp_path / "media"),
                 "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "1 clips left out, their videos were not found: xyz_000010" in printed
    assert f"what to fetch (source id and time window of each): {out / 'missing_videos.txt'}" in printed
    assert [r.id for r in load_manifest(out).records] == ["abc_30"]
    assert _rows(out / "missing_videos.txt") == [{"file name": "xyz_000010", "source id": "xyz", "start": "10",
                                                  "end": "20", "clip id": "xyz_000010"}]
    # once every video is there, the list goes away
    make_tone_video(tmp_path / "media" / "xyz_000010.mp4", seconds=1.0, size=32)
    assert main(["datasets", "convert", "vggss", str(tmp_path / "vggss.json"), "--videos", str(tmp_path / "media"),
                 "--out", str(out), "-q"]) == 0
    assert len(load_manifest(out).records) == 2 and not (out / "missing_videos.txt").exists()


@needs_shared
def test_stm_split_files_convert_with_one_cvat_folder_as_boxes(tmp_path, capsys):
    """The STM layout's split files are an AVE source; one video's CVAT folder is a --boxes folder."""
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "trainSet.txt").write_text("Bark&aaa&good&0&1\nBus&bbb&good&0&1\n")
    (splits / "valSet.txt").write_text("Bark&ccc&good&0&1\n")
    (splits / "testSet.txt").write_text("Church bell&M-fNi-L59Gk&good&2&4\n")  # a video the STM boxes annotate
    for name, seconds in (("aaa", 1), ("bbb", 1), ("ccc", 1), ("M-fNi-L59Gk", 10)):
        make_tone_video(tmp_path / "videos" / f"{name}.mp4", seconds=seconds, size=32, fps=4)
    lines = check_dataset(splits)
    assert lines[0].endswith("AVE split files of the STM authors, 4 samples from 4 videos, 3 classes + background")
    assert "samples per split: train 2, val 1, test 1" in lines
    out = tmp_path / "out"
    boxes = STM / "annotations" / "AVE" / "M-fNi-L59Gk"
    assert main(["datasets", "convert", "ave", str(splits), "--videos", str(tmp_path / "videos"), "--boxes",
                 str(boxes), "--out", str(out), "-q"]) == 0
    records = {r.id: r for r in load_manifest(out).records}
    assert sorted(records) == ["test0000-M-fNi-L59Gk", "train0000-aaa", "train0001-bbb", "val0000-ccc"]
    assert [r.split for r in records.values()] == ["train", "train", "val", "test"]
    test = records["test0000-M-fNi-L59Gk"]
    assert test.frames and all(2 <= f.t < 4 for f in test.frames)  # the CVAT frames inside the event
    assert all(0 <= v <= 32 for f in test.frames for box in f.boxes for v in box)  # rescaled to the 32-px video
    assert not (out / "missing_videos.txt").exists()


@needs_shared
def test_the_real_split_files_and_one_cvat_folder_are_recognised(capsys):
    lines = check_dataset(STM / "splits" / "AVE")
    assert lines[0].endswith("AVE split files of the STM authors, 4143 samples from 4097 videos, "
                             "28 classes + background")
    assert "samples per split: train 3339, val 402, test 402" in lines
    one = STM / "annotations" / "AVE" / "M-fNi-L59Gk"
    assert main(["datasets", "check", str(one)]) == 0
    out = capsys.readouterr().out
    assert "STM CVAT box annotations, 1 files" in out and "Flickr" not in out
    assert "AVE                      1" in out and "broken files: none" in out
