"""Visual encoders: frames ``(N, 3, H, W)`` in [0, 1] -> feature map ``(N, C, h, w)``.

- ResNet-18/50/152 trunks up to layer4 (He et al., CVPR 2016; torchvision's implementation):
  stride 32, C = 512 / 2048 / 2048. STM uses ImageNet ResNet-152, EZ-VSL ResNet-18.
- VGG-19 ``features`` through pool5 (Simonyan & Zisserman, ICLR 2015): 7x7x512 at 224 px,
  the visual feature of AVE (Tian et al., ECCV 2018).
- ``small-visual``: a small CNN of our own for CPU runs and tests, stride 16, C = 128.

The torchvision encoders keep torchvision's parameter names, so a torchvision classifier state
dict loads once its head (``fc.*`` / ``classifier.*``) is dropped.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from avloc.models.encoders.base import ConvBlock, VisualEncoder, vgg_init
from avloc.models.encoders.weights import WeightSpec

if TYPE_CHECKING:
    import torchvision.models as tvm

STAMPS_FILE = "small-visual-stamps-65f5fca0.pt"  # sha256 prefix in the name, as torch hub's files

_RESNET_DEPTHS = (18, 50, 152)


def _torchvision_models() -> ModuleType:
    """``torchvision.models``, imported when a torchvision encoder is first built or asked for
    its weights: importing torchvision pulls ``torch._dynamo`` (seconds), which the small
    encoders, ``avloc demo`` and ``avloc localize`` with the built-in model never need."""
    import torchvision.models

    return torchvision.models


def _torchvision_weights(enum: type[tvm.WeightsEnum], name: str) -> WeightSpec | None:
    """The WeightSpec of torchvision's ``enum[name]`` (case-insensitive; ``DEFAULT`` resolves)."""
    try:
        weights = enum[name.upper()]
    except KeyError:
        return None
    transform = weights.transforms()  # ImageClassification: the preprocessing the weights expect
    spec = {"mean": tuple(transform.mean), "std": tuple(transform.std), "size": transform.crop_size[0]}
    return WeightSpec(name=weights.name, url=weights.url, input_spec=spec)


class _TorchvisionEncoder(VisualEncoder):
    """Named weights come from a torchvision ``WeightsEnum``; its classifier keys are dropped."""

    weights_enum_name: str  # e.g. "ResNet18_Weights", in torchvision.models
    head_prefix: str

    @property
    def weights_enum(self) -> type[tvm.WeightsEnum]:
        return getattr(_torchvision_models(), self.weights_enum_name)

    def available_weights(self) -> list[str]:
        return [weights.name for weights in self.weights_enum] + ["DEFAULT"]

    def named_weights(self, name: str) -> WeightSpec | None:
        return _torchvision_weights(self.weights_enum, name)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.items() if not k.startswith(self.head_prefix)}


class ResNetEncoder(_TorchvisionEncoder):
    """torchvision ResNet without avgpool/fc: ``(N, 3, H, W) -> (N, C, H/32, W/32)``."""

    head_prefix = "fc."

    def __init__(self, depth: int) -> None:
        if depth not in _RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {list(_RESNET_DEPTHS)}, got {depth}")
        super().__init__(out_channels=512 if depth < 50 else 2048, size=224, stride=32)
        self.weights_enum_name = f"ResNet{depth}_Weights"
        self.name = f"resnet{depth}"
        net = getattr(_torchvision_models(), self.name)(weights=None)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class VGG19Encoder(_TorchvisionEncoder):
    """torchvision VGG-19 ``features`` through pool5: ``(N, 3, H, W) -> (N, 512, H/32, W/32)``."""

    name = "vgg19"
    weights_enum_name = "VGG19_Weights"
    head_prefix = "classifier."

    def __init__(self) -> None:
        super().__init__(out_channels=512, size=224, stride=32)
        # Built without torchvision's 120M-parameter classifier; same parameter names and init.
        vgg = _torchvision_models().vgg
        self.features = vgg.make_layers(vgg.cfgs["E"], batch_norm=False)
        vgg_init(self.features)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class SmallVisualEncoder(VisualEncoder):
    """A small CNN for CPU runs: stride 16, C = 128, ``(N, 3, H, W) -> (N, 128, H // 16, W // 16)``.

    8x8 at 128 px, 16x16 at 256 px. Built for localisation on the feature grid: it downsamples
    with 2x2 stride-2 convolutions ("patchify" steps, no padding) and mixes context with
    symmetric 3x3 convolutions, so feature cell (i, j) is centred exactly on the pixels
    [16i, 16i + 16) x [16j, 16j + 16) it is drawn on (a 3x3 stride-2 conv with padding 1 would
    centre it half a cell up and left), and its receptive field is 60 px, not most of the frame.
    Named weights: ``"stamps"`` (the default of ``avloc extract``/``train``), bundled with avloc:
    ``avloc pretrain visual`` on the silent cut-outs of Debian's Tux Paint stamps (GPL-2; see
    ``avloc/models/default/STAMPS_WEIGHTS.md`` for the command and what it measures).
    """

    name = "small-visual"
    default_weights = "stamps"
    stamps = WeightSpec(name="stamps", url=f"package:avloc/models/default/{STAMPS_FILE}")

    def available_weights(self) -> list[str]:
        return [self.stamps.name]

    def named_weights(self, name: str) -> WeightSpec | None:
        return self.stamps if name == self.stamps.name else None

    def __init__(self) -> None:
        super().__init__(out_channels=128, size=128, stride=16)

        def down(c_in: int, c_out: int) -> ConvBlock:
            return ConvBlock(c_in, c_out, stride=2, kernel_size=2, padding=0)

        self.features = nn.Sequential(
            down(3, 32),
            ConvBlock(32, 32),
            down(32, 64),
            ConvBlock(64, 64),
            down(64, 96),
            down(96, 128),
            ConvBlock(128, 128),
        )

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
