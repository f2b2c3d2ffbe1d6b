"""Resolve, fetch, verify and load encoder weights; one code path for every encoder.

``weights`` is one of:

- ``None`` or ``"random"``: random init from a fixed seed (``weights_id = "init-seed0"``), see
  :func:`avloc.models.encoders.create_encoder`.
- the name of a pretrained set the encoder knows (``"IMAGENET1K_V1"``, ``"audioset"``...):
  looked up in the torch hub cache (``torch.hub.get_dir()/checkpoints/<file>``) first, where
  its sha256 must start with the hash prefix in the file name (the torch hub convention);
  otherwise downloaded there with the hash checked. Offline this fails at once with
  :class:`WeightsUnavailableError`, which says how to pass the file instead. A set that ships
  with avloc (``"stamps"`` of small-visual) is read from the package, never downloaded.
- a local ``.pth``/``.pt`` state dict, read with ``torch.load(weights_only=True)``.

Loaded state dicts are mapped by ``Encoder.adapt_state_dict`` (e.g. a torchvision classifier
drops its head) and must then match the encoder exactly, or :class:`~avloc.types.AvlocError`
names the file and the first bad keys.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from avloc.types import AvlocError

if TYPE_CHECKING:
    from avloc.models.encoders.base import Encoder

log = logging.getLogger(__name__)

INIT_SEED = 0
RANDOM = "random"  # the weights name of the seeded random init (as None)
_SHOW_KEYS = 3  # bad keys named in an error message
_PACKAGE = "package:"


class WeightsUnavailableError(AvlocError):
    """Named pretrained weights are neither in the torch hub cache nor downloadable."""


@dataclass(frozen=True)
class WeightSpec:
    """A named pretrained set: where it lives and the input contract that goes with it.

    Attributes:
        name: canonical set name, e.g. ``"IMAGENET1K_V1"`` (``"DEFAULT"`` resolves to one).
        url: download address; its file name carries the sha256 prefix (``name-<hex>.pth``).
            For a set that ships with avloc: ``package:<package>/<path>``, read from the package.
        input_spec: entries of ``Encoder.input_spec`` these weights fix (e.g. mean/std).
    """

    name: str
    url: str
    input_spec: Mapping[str, Any] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return os.path.basename(urlparse(self.url).path)

    @property
    def bundled(self) -> Path | None:
        """The file inside the installed package for a ``package:`` url, else None."""
        if not self.url.startswith(_PACKAGE):
            return None
        package, _, file = self.url.removeprefix(_PACKAGE).partition("/")
        return Path(str(resources.files(package).joinpath(file)))

    @property
    def sha256_prefix(self) -> str | None:
        match = torch.hub.HASH_REGEX.search(self.file_name)
        return match.group(1) if match and match.group(1) else None


def weights_name(weights_id: str) -> str | None:
    """The set name in a ``weights_id`` (``"stamps:sha256=..."`` -> ``"stamps"``); "random" for the
    seeded init; None for a file, whose path the id does not keep."""
    if weights_id.startswith("init-seed"):
        return RANDOM
    name, _, _ = weights_id.partition(":sha256=")
    return None if name == "file" else name


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_checkpoint_dir() -> Path:
    """Where torch hub keeps downloaded checkpoints (``$TORCH_HOME/hub/checkpoints`` by default)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_weights(encoder: Encoder, weights: str | os.PathLike | None) -> None:
    """Load ``weights`` (None, a set name or a file path) into ``encoder`` and set its ``weights_id``.

    Raises:
        WeightsUnavailableError: a named set is not cached and cannot be downloaded.
        AvlocError: no such file; the file is not a state dict; its keys or shapes do not fit.
    """
    if weights is None or weights == RANDOM:
        encoder.weights_id = f"init-seed{INIT_SEED}"
        return
    spec = encoder.named_weights(weights) if isinstance(weights, str) else None
    if spec is not None:
        path, digest = fetch(encoder, spec)
        weights_id = f"{spec.name}:sha256={digest}"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            known = encoder.available_weights()
            names = f"named weights: {', '.join(known)}" if known else "it has no named weights"
            raise AvlocError(f"{path}: no such weights file for {encoder.name} ({names})")
        weights_id = f"file:sha256={sha256_file(path)}"
    state = encoder.adapt_state_dict(read_state_dict(path))
    check_state_dict(encoder, state, path)
    encoder.load_state_dict(state)
    if spec is not None:
        encoder.set_input_spec(**spec.input_spec)
    encoder.weights_id = weights_id
    log.info("%s: loaded %s from %s", encoder.name, weights_id, path)


def fetch(encoder: Encoder, spec: WeightSpec) -> tuple[Path, str]:
    """Path and sha256 of the file of ``spec``: in the package, in the hub cache, or downloaded there."""
    path = spec.bundled or hub_checkpoint_dir() / spec.file_name
    prefix = spec.sha256_prefix
    if spec.bundled is not None and not path.is_file():
        raise AvlocError(f"{path}: {encoder.name} weights {spec.name!r} missing from the installed package "
                         "(reinstall avloc)")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s", spec.url, path)
        try:
            # What torch.hub.load_state_dict_from_url(check_hash=True) does, minus its print.
            torch.hub.download_url_to_file(spec.url, str(path), hash_prefix=prefix, progress=False)
        except (OSError, RuntimeError, http.client.HTTPException) as error:
            # URLError/HTTPError/timeouts are OSErrors; a hash mismatch is a RuntimeError.
            reason = getattr(error, "reason", None) or error
            raise WeightsUnavailableError(_unavailable(encoder, spec, f"download failed: {reason}")) from None
    digest = sha256_file(path)
    if prefix and not digest.startswith(prefix):
        raise WeightsUnavailableError(
            f"{path}: its sha256 starts {digest[: len(prefix)]}, not {prefix} as its name says "
            f"(a truncated or different file); delete it or pass a file you trust with weights=PATH"
        )
    return path, digest


def _unavailable(encoder: Encoder, spec: WeightSpec, reason: str) -> str:
    name = spec.file_name
    return (
        f"{encoder.name} weights {spec.name!r} unavailable ({reason}); expected file {name} "
        f"from {spec.url}. Pass a local file (Python: weights=\"/path/{name}\"; "
        f"CLI: --weights {encoder.modality}=/path/{name}) or put it in {hub_checkpoint_dir()}/"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict (names -> tensors) from ``path`` on the CPU, ``weights_only=True``.

    A ``{"state_dict": {...}}`` wrapper and a DDP ``module.`` prefix are removed.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a corrupt or foreign file
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        reason = f"{type(error).__name__}: {first_line}"
        raise AvlocError(f"{path}: not a readable PyTorch state dict ({reason})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        got = type(obj).__name__
        raise AvlocError(f"{path}: expected a state dict (parameter name -> tensor), got {got}")
    state = dict(obj)
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def check_state_dict(encoder: Encoder, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise AvlocError naming ``path`` and the first bad keys unless ``state`` fits ``encoder``."""
    expected = encoder.state_dict()
    # BatchNorm fills in num_batches_tracked for files that predate it (old torchvision files).
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{what}: {_first_few(keys)}"
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
        if keys
    ]
    if problems:
        raise AvlocError(f"{path}: does not fit {encoder.name}: {'; '.join(problems)}")


def _first_few(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else ""
    return ", ".join(keys[:_SHOW_KEYS]) + more
