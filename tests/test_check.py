"""`avloc datasets check` on the layouts other than native and AVE (see test_ave_data.py)."""

import json

import pytest

from avloc.cli import main
from avloc.data.formats.check import check_dataset
from avloc.types import AvlocError
from conftest import SHARED_DATA

STM = SHARED_DATA / "stm-annotations"


@pytest.mark.skipif(not STM.is_dir(), reason="../shared/data/stm-annotations is not available")
def test_the_stm_annotation_tree_and_the_instrument_csvs(capsys):
    assert main(["datasets", "check", str(STM)]) == 0
    out = capsys.readouterr().out
    assert "826 files" in out and "AVE                      402" in out and "AudioSet_Instrument      424" in out
    assert "broken files: none" in out
    lines = check_dataset(STM / "annotations" / "AVE")
    assert "files with a track: 322, without (no visible sounding object): 80" in lines
    lines = check_dataset(STM / "splits" / "AudioSet_Instrument")
    assert "clips per split: val 456, test 456" in lines and lines[0].endswith("13 classes (brass merged)")
    assert any("videos: none found" in line and "missing" in line for line in lines)


def test_broken_files_are_listed_not_fatal(tmp_path):
    (tmp_path / "1.xml").write_text("<annotation><bbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
                                    "</bbox></annotation>")
    (tmp_path / "2.xml").write_text("<annotation><bbox><xmin>9</xmin><ymin>1</ymin><xmax>1</xmax><ymax>9</ymax>"
                                    "</bbox></annotation>")
    (tmp_path / "1.jpg").write_bytes(b"")
    lines = check_dataset(tmp_path)
    assert lines[0].endswith("Flickr-SoundNet layout, 2 annotation files, 1 boxes")
    assert "videos or images: none missing" in lines  # 2.xml is broken, so not looked for
    assert "broken files: 1" in lines and any("2.xml: bbox 0" in line for line in lines)


def test_vggss_json_and_avatar_folders(tmp_path):
    entries = [{"file": "a_000001", "class": "dog", "bbox": [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]},
               {"file": "b_000002", "class": "cat", "bbox": [[0, 0, 1, 1]]}]
    (tmp_path / "vggss.json").write_text(json.dumps(entries))
    (tmp_path / "a_000001.mp4").write_bytes(b"")
    lines = check_dataset(tmp_path / "vggss.json")
    assert lines[0].endswith("VGG-SS layout, 2 annotated clips, 3 boxes") and "videos: 1 missing: b_000002" in lines
    avatar = tmp_path / "avatar"
    (avatar / "v").mkdir(parents=True)
    frame = {"original_width": 8, "original_height": 8,
             "annotations": [{"bbox": [0, 0, 4, 4], "segmentation": [[0, 0, 4, 0, 4, 4]], "task": "Off-Screen"}]}
    (avatar / "v" / "3.json").write_text(json.dumps(frame))
    (avatar / "v" / "9.json").write_text(json.dumps({"original_width": 8, "original_height": 8, "annotations": []}))
    (avatar / "v" / "bad.json").write_text("{")
    lines = check_dataset(avatar)
    assert lines[0].endswith("AVATAR layout, 1 videos, 3 annotated frames")
    assert "  Off-Screen               1" in lines and "  no object (off-screen)   1" in lines
    assert "objects with polygons: 1 of 1" in lines and "broken files: 1" in lines


def test_an_unknown_folder_is_refused_in_one_line(tmp_path):
    with pytest.raises(AvlocError, match="layout not recognised"):
        check_dataset(tmp_path)
