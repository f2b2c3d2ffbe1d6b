"""Visual and audio encoders of the papers, with pretrained-weight loading.

>>> encoder = create_encoder("resnet152", weights="IMAGENET1K_V1")  # doctest: +SKIP
>>> encoder(frames)  # (N, 3, 256, 256) in [0, 1] -> (N, 2048, 8, 8)  # doctest: +SKIP

=============  ======  ====  ======================  ====================  ==========================
name           input   C     map at 256 px / 64x23   named weights         used by
=============  ======  ====  ======================  ====================  ==========================
resnet18       frames  512   8 x 8                   IMAGENET1K_V1         EZ-VSL and its family
resnet50       frames  2048  8 x 8                   IMAGENET1K_V1/_V2
resnet152      frames  2048  8 x 8                   IMAGENET1K_V1/_V2     STM (frozen)
vgg19          frames  512   8 x 8 (7 x 7 at 224)    IMAGENET1K_V1         AVE (pool5)
small-visual   frames  128   16 x 16                 stamps (bundled)      avloc's default, CPU runs
vggish         logmel  512   4 x 2                   audioset              STM (from scratch)
vggish-embed   logmel  128   1 x 1                   audioset              AVE (128-D embedding)
small-audio    logmel  128   4 x 2                   -                     CPU runs, tests
=============  ======  ====  ======================  ====================  ==========================

``DEFAULT`` is accepted for the torchvision encoders (torchvision's best set); ``random`` by every
encoder (the seeded random init). ``avloc extract`` and ``avloc train`` load small-visual's
bundled ``stamps`` when no weights are named (:func:`default_weights`). See
:mod:`.weights` for how ``weights=`` is resolved and :mod:`.audio` for VGGish's layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from avloc.models.encoders.audio import (
    SmallAudioEncoder,
    VGGishEmbedEncoder,
    VGGishEncoder,
    convert_vggish_state_dict,
)
from avloc.models.encoders.base import Encoder
from avloc.models.encoders.visual import ResNetEncoder, SmallVisualEncoder, VGG19Encoder
from avloc.models.encoders.weights import INIT_SEED, RANDOM, WeightsUnavailableError, load_weights, weights_name
from avloc.types import AvlocError

__all__ = [
    "Encoder",
    "WeightsUnavailableError",
    "convert_vggish_state_dict",
    "RANDOM",
    "create_encoder",
    "default_weights",
    "list_encoders",
    "weights_name",
]

MODALITIES = ("visual", "audio")

# name -> (modality, builder)
_ENCODERS: dict[str, tuple[str, Callable[[], Encoder]]] = {
    "resnet18": ("visual", lambda: ResNetEncoder(18)),
    "resnet50": ("visual", lambda: ResNetEncoder(50)),
    "resnet152": ("visual", lambda: ResNetEncoder(152)),
    "vgg19": ("visual", VGG19Encoder),
    "small-visual": ("visual", SmallVisualEncoder),
    "vggish": ("audio", VGGishEncoder),
    "vggish-embed": ("audio", VGGishEmbedEncoder),
    "small-audio": ("audio", SmallAudioEncoder),
}


def list_encoders(modality: str | None = None) -> list[str]:
    """Names of the encoders, all or those of one ``modality`` ("visual" or "audio")."""
    if modality is not None and modality not in MODALITIES:
        raise AvlocError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    return [name for name, (kind, _) in _ENCODERS.items() if modality in (None, kind)]


def _builder(name: str) -> Callable[[], Encoder]:
    """The builder of encoder ``name``; AvlocError naming the known ones otherwise."""
    if name not in _ENCODERS:
        raise AvlocError(f"unknown encoder {name!r}; expected one of {', '.join(_ENCODERS)}")
    return _ENCODERS[name][1]


def default_weights(name: str) -> str | None:
    """The weights ``avloc extract``/``train`` give encoder ``name`` when none are named (None: random init)."""
    return getattr(_builder(name), "default_weights", None)  # a class declares it; a lambda builder has none


def create_encoder(name: str, weights: str | os.PathLike | None = None) -> Encoder:
    """Build the encoder ``name`` on the CPU and load ``weights`` into it.

    Args:
        name: one of :func:`list_encoders`.
        weights: None or "random" for a random init from a fixed seed (the same weights on every
            call with the same torch version, ``weights_id == "init-seed0"``); the name of a pretrained set
            (``"IMAGENET1K_V1"``, ``"DEFAULT"``, ``"audioset"``...); or a local state-dict file.

    Returns:
        The encoder in training mode (like any freshly built module); call ``.eval()`` to
        extract features.

    Raises:
        AvlocError: unknown name; a weights file that is missing or does not fit.
        WeightsUnavailableError: named weights neither in the torch hub cache nor downloadable.
    """
    build = _builder(name)
    # A private RNG stream: reproducible init without touching the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        encoder = build()
    load_weights(encoder, weights)
    return encoder
