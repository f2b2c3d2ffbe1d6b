"""Checkpoints: written atomically, read with ``weights_only=True`` (never unpickles code).

A checkpoint is a plain dict::

    {"format": "avloc-checkpoint", "avloc_version": str, "config": dict (the resolved
     TrainConfig), "classes": [str], "model": state_dict, "optimizer": state_dict,
     "epoch": int, "step": int, "best": float, "rng": ByteTensor, "model_args": dict}
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from avloc.atomic import atomic_path
from avloc.types import AvlocError

FORMAT = "avloc-checkpoint"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a crash never leaves half a checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        AvlocError: missing file, not a checkpoint, corrupt, or it holds pickled code.
    """
    path = Path(path)
    if not path.is_file():
        raise AvlocError(f"{path}: no such checkpoint")
    if not zipfile.is_zipfile(path):
        raise AvlocError(f"{path}: not a readable checkpoint (not a torch.save zip archive)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        what = f"it names {found.group(1)}" if found else "it holds objects other than tensors and plain values"
        raise AvlocError(f"{path}: refused to load: {what}, and checkpoints are loaded as plain weights only") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise AvlocError(f"{path}: not a readable checkpoint ({str(error).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AvlocError(f"{path}: not an avloc checkpoint")
    return state
