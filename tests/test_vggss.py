"""VGG-SS ground truth: reading, scaling to the 224 px evaluation grid, degenerate boxes, refusals."""

import json
import logging

import numpy as np
import pytest

from avloc.cli import main
from avloc.data.formats.check import check_dataset
from avloc.data.manifest import load_manifest
from avloc.data.formats.vggss import read_vggss, read_vggss_file
from avloc.metrics import gt_map
from avloc.types import AvlocError
from conftest import SHARED_DATA, make_tone_video

VGGSS = SHARED_DATA / "vggss" / "vggss.json"
SENTINEL = -2.8823037615171176e16  # the coordinate the shipped file has in 12 boxes


def test_entries_scale_to_224_and_rasterise_as_a_union(tmp_path):
    path = tmp_path / "vggss.json"
    path.write_text(json.dumps([{"file": "a_000001", "class": "dog barking", "bbox": [[0.0, 0.0, 0.5, 0.25]]},
                                {"file": "b_000002", "class": "cat", "bbox": [[0, 0, 0.25, 0.25], [0.5, 0.5, 1, 1]]}]))
    first, second = read_vggss(path)
    assert (first.file, first.label) == ("a_000001", "dog barking")
    np.testing.assert_array_equal(first.boxes_in(), [[0, 0, 112, 56]])
    union = gt_map(second.boxes_in(), (224, 224))
    assert union.sum() == 56 * 56 + 112 * 112  # two disjoint boxes


def test_degenerate_boxes_are_kept_as_written_and_left_out_of_the_usable_ones(tmp_path):
    entries = [{"file": "good", "class": "dog", "bbox": [[0.1, 0.1, 0.5, 0.5]]},
               {"file": "point", "class": "dog", "bbox": [[0.2, 0.2, 0.6, 0.6], [0.00625, 0.015625, 0.00625, 0.015625]]},
               {"file": "flat", "class": "cat", "bbox": [[0.26875, 1.0, 0.753125, 1.0]]},
               {"file": "sentinel", "class": "cat", "bbox": [[0.396875, 0.6625, SENTINEL, 0.984375]]},
               {"file": "inverted", "class": "cat", "bbox": [[0.5, 0, 0.2, 1], [0, 0, 2, 1]]},
               {"file": "broken", "class": "cat", "bbox": [[0.5, 0, 0.2]]}, 7]
    path = tmp_path / "vggss.json"
    path.write_text(json.dumps(entries))
    document = read_vggss_file(path)
    assert [e.file for e in document.entries] == ["good", "point", "flat", "sentinel", "inverted"]
    assert document.skipped == ("entry 5: bbox must be a list of [x1, y1, x2, y2], got [0.5, 0, 0.2]",
                                "entry 6: expected keys file, class and bbox")
    point, sentinel = document.entries[1], document.entries[3]
    np.testing.assert_array_equal(point.boxes[1], [0.00625, 0.015625, 0.00625, 0.015625])  # kept as written
    assert sentinel.boxes[0, 2] == SENTINEL
    np.testing.assert_array_equal(point.usable, [True, False])
    np.testing.assert_array_equal(point.boxes_in(), [[0.2 * 224, 0.2 * 224, 0.6 * 224, 0.6 * 224]])
    assert document.degenerate_boxes == 5 and len(document.degenerate_entries) == 4
    assert [e.file for e in document.empty_entries] == ["flat", "sentinel", "inverted"]
    summary = document.summary()
    assert "5 degenerate boxes in 4 entries" in summary[0] and "kept as written in source_boxes" in summary[0]
    assert summary[1].endswith("3 entries have no usable box (an empty ground truth): flat, sentinel, inverted")
    assert "2 unreadable entries skipped" in summary[2]


@pytest.mark.parametrize(("document", "reason"), [
    ({"file": "x"}, "expected a JSON list"),
    ([], "no readable VGG-SS entry$"),
    ([{"file": "x", "class": "c"}], "no readable VGG-SS entry .entry 0: expected keys"),
    ([{"file": "x", "class": "c", "bbox": [[0.5, 0, 0.2]]}], "entry 0: bbox must be a list of \\[x1, y1, x2, y2\\]"),
    ([{"file": "x", "class": "c", "bbox": []}], "entry 0: bbox must be a non-empty list"),
    ([{"file": "x", "class": "c", "bbox": [[0, 0, 1, True]]}], "entry 0: bbox must be a list"),
])
def test_malformed_files_are_refused(tmp_path, document, reason):
    path = tmp_path / "vggss.json"
    path.write_text(json.dumps(document))
    with pytest.raises(AvlocError, match=reason):
        read_vggss(path)
    path.write_text('[{"file": "x", "class": "c", "bbox": [[0, 0, NaN, 1]]}]')
    with pytest.raises(AvlocError, match="entry 0: bbox values must be finite"):
        read_vggss(path)
    path.write_text("{not json")
    with pytest.raises(AvlocError, match="not a readable JSON"):
        read_vggss(path)


@pytest.mark.skipif(not VGGSS.is_file(), reason="../shared/data/vggss is not available")
def test_the_shipped_file_reads_whole_with_its_18_degenerate_boxes():
    raw = json.loads(VGGSS.read_text())
    document = read_vggss_file(VGGSS)
    assert len(document.entries) == len(raw) == 5158 and document.skipped == ()
    degenerate = document.degenerate_entries
    assert len(degenerate) == 18 and document.degenerate_boxes == 18
    assert degenerate[0].file == "UyCw7pCgYg8_000055"  # entry 16, where the file used to be refused
    assert sum((e.boxes == SENTINEL).any() for e in degenerate) == 12
    assert sorted(e.file for e in document.empty_entries) == ["M1P1xla8rg0_000000", "MKC9LvRivTM_000030"]
    for entry, item in zip(document.entries, raw):
        assert entry.file == item["file"] and entry.boxes.tolist() == item["bbox"]  # every box as written
    lines = check_dataset(VGGSS)
    assert lines[0].endswith(f"VGG-SS layout, 5158 annotated clips, {sum(len(item['bbox']) for item in raw)} boxes")
    assert any("18 degenerate boxes in 18 entries" in line for line in lines)
    assert any("2 entries have no usable box" in line and "M1P1xla8rg0_000000" in line for line in lines)


@pytest.mark.skipif(not VGGSS.is_file(), reason="../shared/data/vggss is not available")
def test_the_shipped_file_converts_with_the_raw_boxes_in_the_manifest(tmp_path, caplog):
    raw = {item["file"]: item["bbox"] for item in json.loads(VGGSS.read_text())}
    chosen = ["UyCw7pCgYg8_000055", "M1P1xla8rg0_000000", "MKC9LvRivTM_000030", next(iter(raw))]
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in chosen:
        make_tone_video(videos / f"{name}.mp4", seconds=1.0, size=32, fps=4)
    with caplog.at_level(logging.WARNING, logger="avloc"):
        assert main(["datasets", "convert", "vggss", str(VGGSS), "--videos", str(videos),
                     "--out", str(tmp_path / "native"), "-q"]) == 0
    assert any("18 degenerate boxes in 18 entries" in message for message in caplog.messages)
    records = {r.id: r for r in load_manifest(tmp_path / "native").records}
    assert sorted(records) == sorted(chosen)
    for name in chosen:
        (frame,) = records[name].frames
        assert frame.source_format == "vggss" and [list(b) for b in frame.source_boxes] == raw[name]
        assert frame.scenario is None  # VGG-SS states no scenario; an empty frame is not off-screen
    assert len(records["UyCw7pCgYg8_000055"].frames[0].boxes) == 2  # its zero-size third box left out
    assert records["MKC9LvRivTM_000030"].frames[0].boxes == ()
    assert records["MKC9LvRivTM_000030"].frames[0].source_boxes[0][2] == SENTINEL
