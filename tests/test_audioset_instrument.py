"""AudioSet-Instrument split CSVs of the STM authors, read in place."""

import pytest

from avloc.data.formats.audioset_instrument import instrument_classes, read_instrument_csv
from avloc.types import AvlocError
from conftest import SHARED_DATA

SPLITS = SHARED_DATA / "stm-annotations" / "splits" / "AudioSet_Instrument"
pytestmark = pytest.mark.skipif(not SPLITS.is_dir(), reason="../shared/data/stm-annotations is not available")


def test_val_and_test_have_13_classes_with_brass_merged():
    val, test = read_instrument_csv(SPLITS / "val.csv"), read_instrument_csv(SPLITS / "test.csv")
    assert len(val) == len(test) == 456
    classes = instrument_classes(val + test)
    assert len(classes) == 13 and "brass" in classes and not {"trumpet", "trombone", "french horn"} & set(classes)
    first = test[0]
    assert (first.video_id, first.start, first.end, first.classes, first.multi) == ("xVi1wNljxjk", 390.0, 400.0,
                                                                                    ("piano",), False)
    merged = [c for c in test if "brass" in c.classes]
    assert all(c.classes.count("brass") == 1 for c in merged)  # "trumpet, trombone" is one class
    assert sum(c.multi for c in test) == 43


def test_malformed_rows_are_refused(tmp_path):
    header = "keyword,start,end,evt,target,multi\n"
    for text, reason in [("a,b\n", ":1: expected the header"), (header + "x,1,2,e,piano\n", ":2: expected 6 columns"),
                         (header + "x,5,2,e,piano,0\n", ":2: start 5 is not before end 2"),
                         (header + "x,a,2,e,piano,0\n", ":2: start and end must be finite numbers"),
                         (header + "x,0,inf,e,piano,0\n", ":2: start and end must be finite numbers"),
                         (header + "x,1,2,e,,0\n", ":2: empty id or target")]:
        path = tmp_path / "s.csv"
        path.write_text(text)
        with pytest.raises(AvlocError, match=reason):
            read_instrument_csv(path)
