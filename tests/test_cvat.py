"""The STM authors' CVAT box annotations: every one of the 826 real files, read in place."""

import numpy as np
import pytest

from avloc.data.formats.cvat import read_cvat
from avloc.types import AvlocError
from conftest import SHARED_DATA

ROOT = SHARED_DATA / "stm-annotations" / "annotations"
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason="../shared/data/stm-annotations is not available")


@pytest.fixture(scope="module")
def annotations():
    return {subset: [read_cvat(p) for p in sorted((ROOT / subset).glob("*/annotations.xml"))]
            for subset in ("AVE", "AudioSet_Instrument")}


def test_every_file_reads_and_80_ave_videos_have_no_track(annotations):
    assert len(annotations["AVE"]) == 402 and len(annotations["AudioSet_Instrument"]) == 424
    assert sum(not a.has_track for a in annotations["AVE"]) == 80
    for a in annotations["AVE"] + annotations["AudioSet_Instrument"]:
        assert a.frame_count == len(a.boxes) >= 1 and a.width > 0 and a.height > 0
        for boxes in a.boxes:
            assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()


def test_times_and_conventions_on_a_real_file(annotations):
    a = next(a for a in annotations["AVE"] if a.has_track)
    assert a.frame_at(0.0) == 0 and a.frame_at(10.0) == a.frame_count - 1
    assert a.frame_at(5.0) == round(5.0 * a.frame_count / 10)
    frame = next(n for n, b in enumerate(a.boxes) if len(b))
    t = frame * 10.0 / a.frame_count
    np.testing.assert_array_equal(a.boxes_at(t), a.boxes[frame])
    enclosing = a.boxes_at(t, "enclosing")
    assert enclosing.shape == (1, 4)
    np.testing.assert_array_equal(enclosing[0, :2], a.boxes[frame][:, :2].min(0))


def test_several_boxes_outside_boxes_and_broken_files(tmp_path):
    xml = ('<annotations><meta><task><size>4</size><original_size><width>100</width><height>50</height>'
           '</original_size></task><source>v.mp4</source></meta>'
           '<track id="0"><box frame="1" outside="0" xtl="1" ytl="2" xbr="10" ybr="20"/>'
           '<box frame="2" outside="1" xtl="1" ytl="2" xbr="10" ybr="20"/></track>'
           '<track id="1"><box frame="1" outside="0" xtl="30" ytl="5" xbr="40" ybr="45"/></track></annotations>')
    path = tmp_path / "annotations.xml"
    path.write_text(xml)
    a = read_cvat(path)
    assert a.video == "v.mp4" and [len(b) for b in a.boxes] == [0, 2, 0, 0]
    np.testing.assert_array_equal(a.boxes_at(2.5, "enclosing"), [[1, 2, 40, 45]])  # frame 1 of 4 in 10 s
    for broken, reason in [(xml.replace('xbr="10"', 'xbr="0"', 1), "x2 <= x1"),
                           (xml.replace('frame="2"', 'frame="9"'), "outside the task's 4 frames"),
                           (xml.replace("<size>4</size>", ""), "no meta/task/size"),
                           ("<annotations>", "not a readable CVAT XML")]:
        path.write_text(broken)
        with pytest.raises(AvlocError, match=reason):
            read_cvat(path)


@pytest.mark.parametrize(("size", "box", "reason"), [
    ("nan", 'xtl="1" ytl="1" xbr="9" ybr="9"', "meta/task/size is not a finite number"),
    ("inf", 'xtl="1" ytl="1" xbr="9" ybr="9"', "meta/task/size is not a finite number"),
    ("1e12", 'xtl="1" ytl="1" xbr="9" ybr="9"', "need 1 to 100000 frames"),  # would size a list per frame
    ("2", 'xtl="1" ytl="1" xbr="inf" ybr="9"', "not a finite number"),
])
def test_non_finite_and_absurd_numbers_are_refused(tmp_path, size, box, reason):
    path = tmp_path / "annotations.xml"
    path.write_text(f"<annotations><meta><task><size>{size}</size><original_size><width>32</width><height>32</height>"
                    f'</original_size></task></meta><track><box frame="0" {box}/></track></annotations>')
    with pytest.raises(AvlocError, match=reason):
        read_cvat(path)
