"""A trained model ready for inference: checkpoint -> model head + encoders + front-end settings.

Shared by ``avloc eval`` (which may read a feature cache instead of the encoders) and
``avloc localize`` / :class:`avloc.localizer.Localizer`. ``"default"`` names the built-in
model shipped in ``avloc/models/default/`` (see its ``MODEL_CARD.md``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from avloc.audio import MelConfig
from avloc.checkpoint import load_checkpoint
from avloc.data.cache import CacheMeta
from avloc.extract import mel_config_for
from avloc.models.encoders import Encoder, create_encoder
from avloc.train import TrainConfig, build_model
from avloc.types import AvlocError

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default" / "stm-synth.pt"
ENCODER_PREFIXES = ("visual_encoder.", "audio_encoder.")


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
                encoder.load_state_dict(own)
            elif self.features_meta:
                trained_on = getattr(CacheMeta.from_json(self.features_meta), f"{modality}_weights")
                if encoder.weights_id != trained_on:
                    raise AvlocError(f"{self.source}: trained on {modality} features of weights {trained_on}, but "
                                     f"the encoder now has {encoder.weights_id}; pass the same weights or --features")
            built.append(encoder.to(device).eval())
        return built[0], built[1], mel_config_for(built[1])


def resolve_source(source: str | os.PathLike) -> Path:
    """``"default"`` -> the built-in checkpoint; anything else is a path."""
    if str(source) == "default":
        if not DEFAULT_MODEL.is_file():
            raise AvlocError(f"{DEFAULT_MODEL}: the built-in default model is missing from this installation; "
                             "pass --model CHECKPOINT")
        return DEFAULT_MODEL
    return Path(source)


def load_trained(source: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a checkpoint (or ``"default"``) as a :class:`TrainedModel` in eval mode.

    Raises:
        AvlocError: missing, corrupt or foreign checkpoint, an unknown model, or weights that
            do not fit the model the checkpoint's config describes.
    """
    path = resolve_source(source)
    state = load_checkpoint(path)
    for key in ("config", "classes", "model"):
        if key not in state:
            raise AvlocError(f"{path}: not a trained-model checkpoint (no {key!r})")
    config = TrainConfig.from_dict(state["config"])
    classes = list(state["classes"])
    head = build_model(config, classes, with_encoders=False)
    weights = dict(state["model"])
    head_weights = {k: v for k, v in weights.items() if not k.startswith(ENCODER_PREFIXES)}
    try:
        head.load_state_dict(head_weights)
    except RuntimeError as error:
        raise AvlocError(f"{path}: does not fit a {config.model} model ({str(error).splitlines()[0]})") from None
    head.to(device).eval()
    return TrainedModel(head, config, classes, str(path), weights, state.get("features_meta", ""))
