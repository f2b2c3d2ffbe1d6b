import os
import stat

import pytest

from avloc.atomic import atomic_path
from avloc.types import AvlocError


def test_success_renames_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt"
        tmp.write_text("done")
    assert target.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert list(target.parent.iterdir()) == [target]


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_a_folder_or_a_file_in_the_way_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("keep")
    with pytest.raises(AvlocError, match="is a folder"), atomic_path(tmp_path):
        pass
    with pytest.raises(AvlocError, match=r"file/out\.txt: cannot write it"), atomic_path(tmp_path / "file" / "out.txt"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "keep"
