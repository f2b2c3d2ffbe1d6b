"""Training configuration and model building: :class:`TrainConfig`, its YAML files, :func:`build_model`.

A :class:`TrainConfig` is everything that defines a training run; it is checked on construction,
stored resolved in every checkpoint and written as ``config.yaml`` beside them, and
:func:`build_model` turns it (with the dataset's classes) into the registered model it names.
Training (:mod:`avloc.train`) and inference (:mod:`avloc.trained`) both build models here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import get_type_hints

import yaml
from torch import nn

from avloc import __version__
from avloc.atomic import atomic_path
from avloc.data.sources import open_features
from avloc.losses import AUTO, SUPERVISIONS
from avloc.models import create_model, model_accepts
from avloc.models._registry import check_options, convert_value, model_name
from avloc.models.blocks import check_positive
from avloc.models.encoders import create_encoder
from avloc.types import AvlocError

CONFIG_NAME = "config.yaml"  # the resolved config of a run, beside its checkpoints

# Builder arguments that training sets itself (build_model): never model options.
RESERVED_OPTIONS = {
    "num_classes": "the dataset's classes",
    "visual_channels": "the visual encoder (--visual)",
    "audio_channels": "the audio encoder (--audio)",
    "visual_encoder": "--visual",
    "audio_encoder": "--audio",
    "visual_weights": "--weights visual=...",
    "audio_weights": "--weights audio=...",
    "train_visual": "--train-visual",
    "train_audio": "--train-audio",
}
_PATH_FIELDS = ("dataset", "out", "features", "visual_weights", "audio_weights")
# What a run reads when neither it nor its feature cache says: the bundled small encoders, 4 steps
# per second (the STM paper), frames of 256 px.
INPUT_DEFAULTS = {"visual": "small-visual", "audio": "small-audio", "fps": 4.0, "size": 256}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored, resolved, in every checkpoint and ``config.yaml``).

    Every field is checked against its type on construction (an int is a float, paths become
    strings), and ``model_options`` against the builder of ``model`` (see
    :func:`avloc.models._registry.check_options`); empty options take the model's own defaults.

    ``visual``, ``audio``, ``fps``, ``size`` [None]: resolved on construction from the feature
    cache (``features``) when there is one, else :data:`INPUT_DEFAULTS` (small-visual,
    small-audio, 4 fps, 256 px), so ``fit`` called from Python reads what ``avloc train`` reads.

    Encoders, when training from the videos (no ``features``): ``train_visual`` [False] and
    ``train_audio`` [None = True from the videos, the STM authors' split: pretrained visual
    network frozen, audio network trained from scratch; with a feature cache there is no
    encoder to train, so it resolves to False]. ``augment`` [True]: the STM paper's training
    augmentation (frames resized x1.1 and randomly cropped back; cached maps likewise, see
    :mod:`avloc.data.windows`); validation and evaluation never augment. ``supervision``
    ["auto"]: resolved when the run starts (:func:`resolve_supervision`); the checkpoint and
    ``config.yaml`` hold the resolved value. ``visual_weights``/``audio_weights`` [None]: resolved
    when the run starts too (:func:`resolve_weights`).
    """

    dataset: str
    out: str = "runs/stm"
    model: str = "stm"
    model_options: dict = field(default_factory=dict)
    features: str | None = None  # feature cache; None = decode and encode the videos
    visual: str | None = None  # encoders; None: the feature cache's, else INPUT_DEFAULTS (small-visual)
    audio: str | None = None
    visual_weights: str | None = None
    audio_weights: str | None = None
    train_visual: bool = False
    train_audio: bool | None = None  # None: True when training from the videos, else False
    augment: bool = True
    fps: float | None = None  # None: the feature cache's, else 4.0
    size: int | None = None  # None: the feature cache's, else 256
    steps: int = 4
    batch_size: int = 32
    epochs: int = 30
    lr: float = 1e-3  # chosen on validation (docs/results.md); the STM paper's is 1e-4
    weight_decay: float = 0.0
    supervision: str = "auto"  # resolved by resolve_supervision when the run starts
    seed: int = 0
    workers: int | None = None  # DataLoader processes; None: the device's (avloc.accelerate: up to 4 on CUDA, else 0)

    def __post_init__(self) -> None:
        for name, annotation in _FIELD_TYPES.items():
            value = getattr(self, name)
            if name in _PATH_FIELDS and isinstance(value, os.PathLike):
                value = os.fspath(value)
            object.__setattr__(self, name, convert_value(annotation, value, name))
        if self.train_audio is None:
            object.__setattr__(self, "train_audio", self.features is None)
        self._resolve_inputs()
        for modality in ("visual", "audio"):
            if self.features is not None and getattr(self, f"train_{modality}"):
                raise AvlocError(f"train_{modality} trains the {modality} encoder, which needs the videos: drop "
                                 f"features (--features) or pass --no-train-{modality}")
        object.__setattr__(self, "model", model_name(self.model))  # case-insensitive; stored as registered
        object.__setattr__(self, "model_options",
                           check_options(self.model, self.model_options, reserved=RESERVED_OPTIONS))
        if self.supervision not in (AUTO, *SUPERVISIONS):
            raise AvlocError(f"unknown supervision {self.supervision!r}; expected one of "
                             f"{', '.join((AUTO, *SUPERVISIONS))}")
        check_positive(steps=self.steps, batch_size=self.batch_size, epochs=self.epochs, size=self.size)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise AvlocError(f"lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise AvlocError(f"fps must be a finite number > 0, got {self.fps}")
        if self.workers is not None and self.workers < 0:
            raise AvlocError(f"workers must be >= 0, got {self.workers}")

    def _resolve_inputs(self) -> None:
        """Encoders, fps and size left None: the feature cache's, else :data:`INPUT_DEFAULTS`."""
        missing = [name for name in INPUT_DEFAULTS if getattr(self, name) is None]
        if not missing:
            return
        found = dict(INPUT_DEFAULTS)
        if self.features is not None:
            meta = open_features(self.features).meta
            found.update(visual=meta.visual_encoder, audio=meta.audio_encoder, fps=meta.fps)
            if meta.size is not None:  # None: a cache of frames at their original size
                found["size"] = meta.size
        for name in missing:
            object.__setattr__(self, name, found[name])

    @classmethod
    def from_dict(cls, values: Mapping, source: str | os.PathLike | None = None) -> TrainConfig:
        """The config of ``values`` (a checkpoint's ``"config"``, a parsed file).

        Raises:
            AvlocError: a key that is no field (naming it, and ``source`` when given), or a field's
                value of the wrong type. A missing field raises TypeError, as the constructor.
        """
        where = f"{source}: " if source is not None else ""
        if not isinstance(values, Mapping):
            raise AvlocError(f"{where}a training config must be a mapping, got {type(values).__name__}")
        # Every key of the checkpoints this version wrote or ships is a field; a key that is
        # not one is refused, never silently dropped.
        values = _upgrade(values)
        unknown = [key for key in values if key not in _FIELD_TYPES]
        if unknown:
            raise AvlocError(f"{where}unknown training config key {unknown[0]!r}; expected one of "
                             f"{', '.join(_FIELD_TYPES)}")
        try:
            return cls(**values)
        except AvlocError as error:
            raise AvlocError(f"{where}{error}") from None


_FIELD_TYPES = get_type_hints(TrainConfig)


def _upgrade(values: Mapping) -> Mapping:
    """A config written before ``train_visual``/``train_audio`` replaced ``finetune``, in today's fields.

    Such a config (the default model shipped before 2026-12-05 was one) describes a run that
    trained both encoders or neither, without augmentation, and an STM whose spatial attention
    defaulted to dot / sqrt(C) (cosine to temperature 0.1), without audio dropout or map
    refinement: those settings are written out, so the model is rebuilt as it was trained. Any
    other config (one that mixes ``finetune`` with the fields that replaced it included) is
    returned as it is.
    """
    if "finetune" not in values or any(key in values for key in ("train_visual", "train_audio", "augment")):
        return values
    upgraded = {key: value for key, value in values.items() if key != "finetune"}
    finetune = values["finetune"] if values.get("features") is None else False  # a cache ignored finetune
    upgraded.update(train_visual=finetune, train_audio=finetune, augment=False)
    options = values.get("model_options", {})
    if values.get("model", TrainConfig.model) == "stm" and isinstance(options, Mapping):
        options = {**options}
        if options.setdefault("spatial_similarity", "dot") == "cosine" and options.get("spatial_temperature") is None:
            options["spatial_temperature"] = 0.1
        options.setdefault("audio_dropout", 0.0)  # the default of that time (0.5 since 2026-12-05)
        options.setdefault("affinity_temperature", None)  # no map refinement then (0.1 since 2026-12-05)
        upgraded["model_options"] = options
    return upgraded


def read_config_file(path: str | os.PathLike) -> dict:
    """The training settings of a YAML file: some or all :class:`TrainConfig` fields, checked.

    String values of other fields than strings are converted as command-line flags are (``1e-4``,
    which YAML reads as a string, is a float; ``true`` a bool), model options included. The
    result, completed with any ``dataset``, makes a valid TrainConfig.

    Raises:
        AvlocError: unreadable file, not YAML, not a mapping, an unknown key or a value of the
            wrong type or range; one line naming the file and the key.
    """
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise AvlocError(f"{path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise AvlocError(f"{path}: not a text file; expected YAML training settings") from None
    except yaml.YAMLError as error:
        raise AvlocError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if values is None:  # an empty file
        values = {}
    if not isinstance(values, dict):
        raise AvlocError(f"{path}: expected a mapping of training settings (key: value), got a "
                         f"{type(values).__name__}")
    checked = {}
    for key, value in values.items():
        if key == "finetune":
            raise AvlocError(f"{path}: finetune is no longer a setting; use train_visual and train_audio "
                             "(--train-visual, --train-audio)")
        if key not in _FIELD_TYPES:
            raise AvlocError(f"{path}: unknown key {key!r}; expected some of {', '.join(_FIELD_TYPES)}")
        checked[key] = convert_value(_FIELD_TYPES[key], value, f"{path}: {key}", parse_strings=True)
    try:
        if "model_options" in checked:
            checked["model_options"] = check_options(checked.get("model", TrainConfig.model), checked["model_options"],
                                                     parse_strings=True, reserved=RESERVED_OPTIONS)
        TrainConfig(**{"dataset": "", **checked})  # ranges, choices and the model's options
    except AvlocError as error:
        raise AvlocError(f"{path}: {error}") from None
    return checked


def load_config(path: str | os.PathLike) -> TrainConfig:
    """The complete TrainConfig of a YAML file (e.g. a run's ``config.yaml``)."""
    values = read_config_file(path)
    if "dataset" not in values:
        raise AvlocError(f"{path}: has no dataset key")
    return TrainConfig(**values)


def write_config_file(config: TrainConfig, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML to ``path``, atomically; :func:`load_config` reads it back equal."""
    path = Path(path)
    text = (f"# avloc {__version__} training settings; repeat the run with:\n"
            f"#   avloc train DATASET --config {path} --out NEW_FOLDER\n"
            + yaml.safe_dump(asdict(config), sort_keys=False))
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def build_model(config: TrainConfig, classes: list[str], with_encoders: bool) -> nn.Module:
    """The model of ``config``; with its encoders attached when it reads frames and log-mel."""
    if with_encoders and not model_accepts(config.model, "visual_encoder"):
        raise AvlocError(f"model {config.model!r} trains on a feature cache only: pass --features FILE.h5 "
                         "(made by avloc extract)")
    if with_encoders:
        inputs = dict(visual_encoder=config.visual, audio_encoder=config.audio, visual_weights=config.visual_weights,
                      audio_weights=config.audio_weights, train_visual=config.train_visual,
                      train_audio=config.train_audio)
    else:
        inputs = dict(visual_channels=create_encoder(config.visual).out_channels,
                      audio_channels=create_encoder(config.audio).out_channels)
    return create_model(config.model, num_classes=len(classes), **config.model_options, **inputs)
