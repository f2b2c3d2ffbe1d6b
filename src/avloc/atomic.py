"""Write files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from avloc.types import AvlocError


def make_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents); a one-line AvlocError when it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file in the way, no permission
        raise AvlocError(f"{path}: cannot make this folder ({error.strerror}: {error.filename})") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    The temporary name keeps ``path``'s suffix so that format sniffing by extension works.

    Raises:
        AvlocError: ``path`` is a folder, or its folder cannot be made or written to.
    """
    path = Path(path)
    if path.is_dir():
        raise AvlocError(f"{path}: is a folder; expected the name of a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as error:  # a file where a folder must be, no permission, a full disk
        raise AvlocError(f"{path}: cannot write it ({error.strerror}: {error.filename})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
