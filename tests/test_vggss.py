"""VGG-SS ground truth: reading, scaling to the 224 px evaluation grid, refusals."""

import json

import numpy as np
import pytest

from avloc.data.vggss import read_vggss
from avloc.metrics import gt_map
from avloc.types import AvlocError


def test_entries_scale_to_224_and_rasterise_as_a_union(tmp_path):
    path = tmp_path / "vggss.json"
    path.write_text(json.dumps([{"file": "a_000001", "class": "dog barking", "bbox": [[0.0, 0.0, 0.5, 0.25]]},
                                {"file": "b_000002", "class": "cat", "bbox": [[0, 0, 0.25, 0.25], [0.5, 0.5, 1, 1]]}]))
    first, second = read_vggss(path)
    assert (first.file, first.label) == ("a_000001", "dog barking")
    np.testing.assert_array_equal(first.boxes_in(), [[0, 0, 112, 56]])
    union = gt_map(second.boxes_in(), (224, 224))
    assert union.sum() == 56 * 56 + 112 * 112  # two disjoint boxes


@pytest.mark.parametrize(("document", "reason"), [
    ({"file": "x"}, "expected a JSON list"),
    ([{"file": "x", "class": "c"}], "entry 0: expected keys"),
    ([{"file": "x", "class": "c", "bbox": [[0, 0, 2, 1]]}], "normalised"),
    ([{"file": "x", "class": "c", "bbox": [[0.5, 0, 0.2, 1]]}], "x2 <= x1"),
    ([{"file": "x", "class": "c", "bbox": [[0.5, 0, 0.2]]}], "list of \\[x1, y1, x2, y2\\]"),
])
def test_malformed_files_are_refused(tmp_path, document, reason):
    path = tmp_path / "vggss.json"
    path.write_text(json.dumps(document))
    with pytest.raises(AvlocError, match=reason):
        read_vggss(path)
    path.write_text("{not json")
    with pytest.raises(AvlocError, match="not a readable JSON"):
        read_vggss(path)
