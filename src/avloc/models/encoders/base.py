"""The encoder base class and the blocks every encoder shares."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from avloc.audio import MelConfig
from avloc.models.encoders.weights import WeightSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The VGGish front end (Hershey et al. 2017, audioset/vggish_params.py): every audio encoder
# shares it so that one cached log-mel serves them all. n_fft, power and mel_scale are the
# remaining facts of that front end: a 400-sample window zero-padded to the next power of two,
# magnitude (not power) spectrogram, HTK mel scale, log(mel + log_offset).
VGGISH_INPUT_SPEC: dict[str, Any] = {
    "sample_rate": 16000,
    "n_mels": 64,
    "window_ms": 25.0,
    "hop_ms": 10.0,
    "fmin": 125.0,
    "fmax": 7500.0,
    "log_offset": 0.01,
    "n_fft": 512,
    "power": 1.0,
    "mel_scale": "htk",
}


class ConvBlock(nn.Sequential):
    """``conv kxk -> [BatchNorm] -> ReLU``; ``norm=False`` gives a biased conv and no BN (VGG).

    Padding defaults to ``kernel_size // 2`` ("same" for odd kernels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        padding: int | None = None,
        norm: bool = True,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2 if padding is None else padding,
            bias=not norm,
        )
        if norm:
            layers["bn"] = nn.BatchNorm2d(out_channels)
        layers["relu"] = nn.ReLU(inplace=True)
        super().__init__(layers)


def vgg_init(module: nn.Module) -> None:
    """torchvision's VGG init: Kaiming-normal convs (fan_out), N(0, 0.01) linears, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.01)
        else:
            continue
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, for frames ``(N, 3, H, W)`` in [0, 1].

    mean/std are non-persistent buffers: they describe the weights (``input_spec``) and are set
    when weights are loaded, so they never appear in (or are required from) a state dict.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.empty(1, 3, 1, 1), persistent=False)
        self.set(mean, std)

    def set(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))  # (3,) -> (1, 3, 1, 1)
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1))  # (3,) -> (1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Encoder(nn.Module):
    """Base class: one modality in, one feature map ``(N, C, h, w)`` out.

    Attributes:
        name: registry name, e.g. ``"resnet18"``.
        modality: ``"visual"`` (frames ``(N, 3, H, W)`` in [0, 1]) or ``"audio"``
            (log-mel ``(N, 1, M, F)``, M mel bins x F frames).
        out_channels: C of the returned map.
        input_spec: preprocessing facts that travel with the weights. Visual: ``mean``, ``std``
            (applied inside ``forward``), ``size`` (recommended input px), ``stride``. Audio:
            ``sample_rate``, ``n_mels``, ``window_ms``, ``hop_ms``, ``fmin``, ``fmax``,
            ``log_offset`` (+ ``n_fft``, ``power``, ``mel_scale``).
        weights_id: which weights are loaded: ``"init-seed0"`` (random init),
            ``"<SET>:sha256=<hex>"`` (a named pretrained set) or ``"file:sha256=<hex>"``.
        default_weights: the set ``avloc extract`` and ``avloc train`` load when no weights are
            named: one that ships with avloc (never a download), or None for the random init.

    Subclasses set the class attributes, build their layers in ``__init__`` and may override
    :meth:`adapt_state_dict` (to accept a foreign key layout) and :meth:`named_weights`.
    """

    name: str
    modality: Literal["visual", "audio"]
    out_channels: int
    input_spec: dict[str, Any]
    weights_id: str = "init-seed0"
    default_weights: str | None = None

    def available_weights(self) -> list[str]:
        """Names accepted by ``create_encoder(name, weights=...)`` besides None, "random" and a file path."""
        return []

    def named_weights(self, name: str) -> WeightSpec | None:
        """The pretrained set called ``name``, or None when there is no such set."""
        return None

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a loaded state dict onto this encoder's keys (e.g. drop a classifier head)."""
        return state

    def set_input_spec(self, **updates: Any) -> None:
        """Update ``input_spec``; visual encoders also move their normalisation to match."""
        self.input_spec = {**self.input_spec, **updates}

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is ``(N, 3, H, W)`` (visual) or ``(N, 1, M, F)`` (audio)."""
        visual = self.modality == "visual"
        channels, what = (3, "frames (N, 3, H, W)") if visual else (1, "log-mel (N, 1, M, F)")
        if x.ndim != 4 or x.shape[1] != channels or not x.is_floating_point():
            raise ValueError(f"{self.name}: expected float {what}, got {tuple(x.shape)} {x.dtype}")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weights_id={self.weights_id!r}"


class VisualEncoder(Encoder):
    """An encoder of frames in [0, 1] that normalises inside with its weights' mean/std."""

    modality = "visual"

    def __init__(self, *, out_channels: int, size: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.input_spec = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "size": size, "stride": stride}
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def set_input_spec(self, **updates: Any) -> None:
        super().set_input_spec(**updates)
        self.normalize.set(self.input_spec["mean"], self.input_spec["std"])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, 3, H, W)`` in [0, 1] -> map ``(N, C, H/stride, W/stride)``."""
        self.check_input(frames)
        return self.trunk(self.normalize(frames))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class AudioEncoder(Encoder):
    """An encoder of log-mel spectrograms ``(N, 1, M, F)``."""

    modality = "audio"

    def __init__(self, *, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.input_spec = dict(VGGISH_INPUT_SPEC)

    @property
    def mel(self) -> MelConfig:
        """The log-mel settings this encoder's weights expect (from its ``input_spec``)."""
        spec = self.input_spec
        return MelConfig(sample_rate=spec["sample_rate"], n_mels=spec["n_mels"], window_ms=spec["window_ms"],
                         hop_ms=spec["hop_ms"], fmin=spec["fmin"], fmax=spec["fmax"], log_offset=spec["log_offset"])
