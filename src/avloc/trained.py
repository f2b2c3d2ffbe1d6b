"""A trained model ready for inference: checkpoint -> model head + encoders + front-end settings.

Shared by ``avloc eval`` (which may read a feature cache instead of the encoders) and
``avloc localize`` / :class:`avloc.localizer.Localizer`. ``"default"`` names the built-in
model shipped in ``avloc/models/default/`` (see its ``MODEL_CARD.md``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from avloc.audio import MelConfig
from avloc.checkpoint import load_checkpoint
from avloc.config import TrainConfig, build_model
from avloc.data.cache import CacheMeta
from avloc.io.decode import MAX_SIDE
from avloc.models.encoders import Encoder, create_encoder, list_encoders
from avloc.types import AvlocError

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default" / "stm-synth.pt"
ENCODER_PREFIXES = ("visual_encoder.", "audio_encoder.")
BEST_NAME = "best.pt"  # the checkpoint avloc train selects on validation


@dataclass
class TrainedModel:
    """A model head in eval mode with what it needs around it.

    Attributes:
        head: the model on feature maps (``forward(visual=..., audio=...)``; STM also ``step``).
        config: the resolved training config (fps, frame size, encoder names, model options).
        classes: class names in the order of the logits, background last.
        source: the checkpoint path it came from.
        state: the checkpoint's model weights (encoders included when it holds them).
        features_meta: JSON of the feature cache it was trained on ("" when trained end to end).
    """

    head: nn.Module
    config: TrainConfig
    classes: list[str]
    source: str
    state: dict
    features_meta: str

    def encoders(self, device: torch.device) -> tuple[Encoder, Encoder, MelConfig]:
        """The visual and audio encoders (eval mode) and the log-mel settings of the audio one.

        Weights stored in the checkpoint win; otherwise the encoders are built from their
        names and weights in the config, and must match those the training features had.
        """
        built = []
        for modality in ("visual", "audio"):
            prefix = f"{modality}_encoder."
            own = {k.removeprefix(prefix): v for k, v in self.state.items() if k.startswith(prefix)}
            name = getattr(self.config, modality)
            encoder = create_encoder(name, None if own else getattr(self.config, f"{modality}_weights"))
            if own:
                try:
                    encoder.load_state_dict(own)
                except RuntimeError as error:
                    raise AvlocError(f"{self.source}: its {modality} encoder weights do not fit {name} "
                                     f"({str(error).splitlines()[0]})") from None
            elif self.features_meta:
                trained_on = getattr(CacheMeta.from_json(self.features_meta), f"{modality}_weights")
                if encoder.weights_id != trained_on:
                    raise AvlocError(f"{self.source}: trained on {modality} features of weights {trained_on}, but "
                                     f"the encoder now has {encoder.weights_id}; pass the same weights or --features")
            built.append(encoder.to(device).eval())
        return built[0], built[1], built[1].mel


def resolve_source(source: str | os.PathLike) -> Path:
    """``"default"`` -> the built-in checkpoint; a run folder (``avloc train --out``) -> its
    ``best.pt``; anything else is a path."""
    if str(source) == "default":
        if not DEFAULT_MODEL.is_file():
            raise AvlocError(f"{DEFAULT_MODEL}: the built-in default model is missing from this installation; "
                             "pass --model CHECKPOINT")
        return DEFAULT_MODEL
    path = Path(source)
    if path.is_dir():
        if not (path / BEST_NAME).is_file():
            raise AvlocError(f"{path}: a folder without {BEST_NAME} (avloc train writes it after its first epoch); "
                             "pass a checkpoint file")
        return path / BEST_NAME
    return path


def load_trained(source: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a checkpoint (or ``"default"``) as a :class:`TrainedModel` in eval mode.

    Everything in the file is checked before it is used: the config (types, a positive finite
    fps, a frame size within :data:`avloc.io.decode.MAX_SIDE`), the classes, finite weights and
    the feature metadata.

    Raises:
        AvlocError: missing, corrupt or foreign checkpoint, an unknown model, or weights that
            do not fit the model the checkpoint's config describes; always naming the file.
    """
    path = resolve_source(source)
    state = load_checkpoint(path)
    for key in ("config", "classes", "model"):
        if key not in state:
            raise AvlocError(f"{path}: not a trained-model checkpoint (no {key!r})")
    config, classes = _config(path, state["config"]), _classes(path, state["classes"])
    weights = _weights(path, state["model"])
    features_meta = state.get("features_meta", "")
    if features_meta:
        try:
            CacheMeta.from_json(features_meta)
        except (TypeError, ValueError) as error:  # not JSON, or other fields than a CacheMeta's
            raise AvlocError(f"{path}: its feature metadata is broken ({error})") from None
    try:
        head = build_model(config, classes, with_encoders=False)
    except AvlocError as error:
        raise AvlocError(f"{path}: {error}") from None
    except (TypeError, ValueError, RuntimeError) as error:
        # The builders' own refusals of out-of-range options (negative sizes and the like):
        # here they come from the file, so they are the file's fault.
        raise AvlocError(f"{path}: its config does not build a {config.model} model "
                         f"({str(error).splitlines()[0]})") from None
    head_weights = {k: v for k, v in weights.items() if not k.startswith(ENCODER_PREFIXES)}
    try:
        head.load_state_dict(head_weights)
    except RuntimeError as error:
        raise AvlocError(f"{path}: does not fit a {config.model} model ({str(error).splitlines()[0]})") from None
    head.to(device).eval()
    return TrainedModel(head, config, classes, str(path), weights, features_meta)


def _config(path: Path, values: object) -> TrainConfig:
    """The checkpoint's TrainConfig, its fields checked where inference relies on them."""
    if not isinstance(values, dict):
        raise AvlocError(f"{path}: its config is a {type(values).__name__}, not a dict")
    try:
        config = TrainConfig.from_dict(values)
    except TypeError as error:  # a missing field, or a value of the wrong type
        raise AvlocError(f"{path}: its config is broken ({error})") from None
    except AvlocError as error:
        raise AvlocError(f"{path}: {error}") from None
    if not isinstance(config.model, str) or not isinstance(config.model_options, dict):
        raise AvlocError(f"{path}: its config needs a model name and a dict of model options")
    if any(isinstance(value, float) and not math.isfinite(value) for value in config.model_options.values()):
        raise AvlocError(f"{path}: its model options hold NaN or infinite numbers ({config.model_options})")
    if config.visual not in list_encoders("visual") or config.audio not in list_encoders("audio"):
        raise AvlocError(f"{path}: its config names the encoders {config.visual!r} and {config.audio!r}; expected a "
                         f"visual and an audio one of {', '.join(list_encoders())}")
    fps, size = config.fps, config.size
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
        raise AvlocError(f"{path}: its config has fps {fps!r}; expected a positive number")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIDE):
        raise AvlocError(f"{path}: its config has frame size {size!r}; expected 1 to {MAX_SIDE} pixels")
    return config


def _classes(path: Path, classes: object) -> list[str]:
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise AvlocError(f"{path}: its classes must be a non-empty list of names")
    return list(classes)


def _weights(path: Path, weights: object) -> dict:
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise AvlocError(f"{path}: its model weights are not a dict of tensors")
    if not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
        raise AvlocError(f"{path}: its model weights hold NaN or infinite values")
    return dict(weights)
