"""The AVE importer against the dataset's real files in ../shared/data/ave (read in place)."""

import re

import numpy as np
import pytest

from avloc.data.formats.ave import (
    SPLITS,
    ave_classes,
    read_annotations,
    read_h5,
    read_split,
    segment_labels,
    segment_mask,
    video_labels,
)
from avloc.cli import main
from avloc.types import AvlocError
from conftest import SHARED_DATA, make_tone_video

AVE = SHARED_DATA / "ave"
pytestmark = pytest.mark.skipif(not AVE.is_dir(), reason="../shared/data/ave is not available")


@pytest.fixture(scope="module")
def samples():
    return read_annotations(AVE / "Annotations.txt")


def test_4143_samples_from_4097_videos_and_28_classes_plus_background(samples):
    assert len(samples) == 4143 and len({s.video_id for s in samples}) == 4097
    classes = ave_classes(samples)
    assert len(classes) == 29 and classes[0] == "Church bell" and classes[28] == "background"


def test_labels_recomputed_from_the_annotations_equal_the_shipped_files(samples):
    classes = ave_classes(samples)
    np.testing.assert_array_equal(segment_mask(samples), read_h5(AVE / "labels_closs.h5", "avadataset"))
    np.testing.assert_array_equal(video_labels(samples, classes), read_h5(AVE / "mil_labels.h5", "avadataset"))
    per_second = segment_labels(samples, classes)
    assert per_second.shape == (4143, 10, 29) and (per_second.sum(-1) == 1).all()
    np.testing.assert_array_equal(per_second[..., 28] == 0, segment_mask(samples) == 1)
    assert samples[26].start == samples[26].end == 0 and not segment_mask(samples)[26].any()  # the empty event


def test_the_official_split(samples):
    split = read_split(AVE, len(samples))
    assert [len(split[name]) for name in SPLITS] == [3339, 402, 402]
    assert len(np.unique(np.concatenate(list(split.values())))) == 4143  # disjoint, covering


def test_malformed_files_are_refused_with_file_line_and_reason(tmp_path):
    for text, reason in [("Church bell&abc&good&0\n", ":1: expected Category"),
                         ("Church bell&abc&good&0&10\nDog&x&good&a&3\n", ":2: start and end must be whole"),
                         ("Dog&x&good&5&11\n", ":1: event [5, 11) is not inside"),
                         ("Dog&x&good&5&4\n", ":1: event [5, 4) is not inside"), ("", "no annotations")]:
        path = tmp_path / "Annotations.txt"
        path.write_text(text)
        with pytest.raises(AvlocError, match=re.escape(reason)):
            read_annotations(path)
    with pytest.raises(AvlocError, match="no dataset 'order'"):
        read_h5(AVE / "mil_labels.h5", "order")
    with pytest.raises(AvlocError, match="not a readable HDF5"):
        read_h5(tmp_path / "Annotations.txt", "order")


def test_datasets_check_counts_an_annotation_only_folder(capsys):
    assert main(["datasets", "check", str(AVE)]) == 0
    printed = capsys.readouterr().out
    assert "AVE layout, 4143 samples from 4097 videos, 28 classes + background" in printed
    assert "samples per split: train 3339, val 402, test 402" in printed
    assert "labels_closs.h5: matches" in printed and "mil_labels.h5: matches" in printed
    assert "videos: none found" in printed and "4097 missing" in printed


def test_datasets_check_lists_missing_videos_and_refuses_unknown_layouts(tmp_path, capsys, tiny_dataset):
    (tmp_path / "Annotations.txt").write_text("Dog&aaa&good&0&10\nDog&bbb&good&2&5\nCat&ccc&good&1&3\n")
    make_tone_video(tmp_path / "videos" / "aaa.mp4", seconds=0.5)
    assert main(["datasets", "check", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "3 samples from 3 videos, 2 classes" in printed and "no *_order.h5" in printed
    assert "videos: 2 missing: bbb, ccc" in printed
    assert main(["datasets", "check", str(tiny_dataset)]) == 0
    assert "native layout, 3 clips" in capsys.readouterr().out
    assert main(["datasets", "check", str(tmp_path / "videos")]) == 2
    assert "layout not recognised" in capsys.readouterr().err
