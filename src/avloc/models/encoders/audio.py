"""Audio encoders: log-mel ``(N, 1, M, F)`` (M = 64 mel bins, F frames) -> map ``(N, C, m, n)``.

- ``vggish``: the VGGish convolutional trunk (Hershey et al., "CNN Architectures for
  Large-Scale Audio Classification", ICASSP 2017): conv64-pool-conv128-pool-conv256x2-pool-
  conv512x2-pool, 3x3 convs, ReLU, no BatchNorm. Returns the 512-channel conv map (STM's audio
  feature; STM trains it from scratch).
- ``vggish-embed``: the same trunk + VGGish's embedding MLP (4096-4096-128), returning the
  128-D embedding as ``(N, 128, 1, 1)`` (AVE's audio feature).
- ``small-audio``: a small CNN of our own, stride 16 like VGGish, C = 128.

Layout. VGGish orders its input example as (frames, bins) = 96 x 64 (time x frequency); avloc's
log-mel is (bins, frames). The VGGish encoders transpose on the way in so that pretrained
kernels see the layout they were trained on, and transpose the conv map back on the way out,
so every audio map is ``(N, C, m, n)`` with m along frequency and n along time.

Input length. Published VGGish sees 96 frames (0.96 s); STM feeds 0.25 s chunks (23 frames).
The pools use ``ceil_mode=True`` (identical to the published floor pooling for 96 x 64, whose
sizes halve exactly) so any F >= 1 works: F frames -> ceil(F / 16) map columns, e.g.
64 x 23 -> 4 x 2 and 64 x 96 -> 4 x 6. The embedding MLP needs the 6 x 4 (time x frequency)
map of a 96 x 64 example; for any other input size the map is adaptive-average-pooled to 6 x 4
first. That is exact for 96 frames and an approximation otherwise (for 23 frames each of the
2 map columns is repeated 3 times); we chose it over stretching the log-mel to 96 frames in
time, which would show the pretrained filters sounds 4x slower than they are and cost 4x.

Pretrained weights (``weights="audioset"``) are harritaylor/torchvggish's PyTorch port of the
TensorFlow release (``vggish-10086976.pth``). Differences from that port, on purpose:
its optional PCA-whitening + 8-bit quantisation post-processor (which produced AudioSet's
released embeddings) is not applied, we return the raw embedding after the final ReLU as the
port's model does; apply PCA yourself with torchvggish's ``vggish_pca_params-970ea276.pth`` if you
need embeddings comparable to AudioSet's released features. Its own waveform front end is not
used either: compute the log-mel with the parameters in ``input_spec``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avloc.models.encoders.base import AudioEncoder, ConvBlock, vgg_init
from avloc.models.encoders.weights import WeightSpec

VGGISH_AUDIOSET = WeightSpec(
    name="audioset",
    url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
)
_EMBED_MAP = (6, 4)  # (time, frequency) size of the conv map VGGish's MLP was trained on
# Index of each conv in torchvggish's ``features`` Sequential (conv, ReLU and pool are separate
# entries there) -> index of the same conv's ConvBlock in ours (conv + ReLU are one entry).
_TORCHVGGISH_CONV_INDEX = {0: 0, 3: 2, 6: 4, 8: 5, 11: 7, 13: 8}


def convert_vggish_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Map a state dict in harritaylor/torchvggish's layout onto avloc's VGGish encoders.

    torchvggish keys: ``features.{0,3,6,8,11,13}.{weight,bias}`` for the six convs (shapes
    ``(64, 1, 3, 3)``, ``(128, 64, 3, 3)``, ``(256, 128, 3, 3)``, ``(256, 256, 3, 3)``,
    ``(512, 256, 3, 3)``, ``(512, 512, 3, 3)``), ``embeddings.{0,2,4}.{weight,bias}`` for the MLP
    (``(4096, 12288)``, ``(4096, 4096)``, ``(128, 4096)``) and, when saved from its ``VGGish``
    class, ``pproc.pca_matrix`` / ``pproc.pca_means`` (the PCA post-processor, dropped here).
    Ours: ``features.{0,2,4,5,7,8}.conv.{weight,bias}``; ``embeddings.*`` unchanged. No tensor
    needs transposing: we transpose the input instead, and flatten the map in the same
    (time, frequency, channel) order as the port. Keys it does not know pass through unchanged
    (so the loader can report them).
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "pproc":
            continue
        if len(parts) == 3 and parts[0] == "features" and parts[1].isdigit():
            index = _TORCHVGGISH_CONV_INDEX.get(int(parts[1]))
            if index is not None:
                key = f"features.{index}.conv.{parts[2]}"
        out[key] = value
    return out


def _is_torchvggish_layout(state: dict[str, Any]) -> bool:
    return "features.0.weight" in state


def vggish_features() -> nn.Sequential:
    """VGGish's conv trunk on ``(N, 1, frames, bins)`` -> ``(N, 512, ceil(frames/16), ceil(bins/16))``."""

    def pool() -> nn.MaxPool2d:
        return nn.MaxPool2d(2, 2, ceil_mode=True)

    return nn.Sequential(
        ConvBlock(1, 64, norm=False),
        pool(),
        ConvBlock(64, 128, norm=False),
        pool(),
        ConvBlock(128, 256, norm=False),
        ConvBlock(256, 256, norm=False),
        pool(),
        ConvBlock(256, 512, norm=False),
        ConvBlock(512, 512, norm=False),
        pool(),
    )


class VGGishEncoder(AudioEncoder):
    """VGGish conv trunk: log-mel ``(N, 1, M, F)`` -> ``(N, 512, ceil(M/16), ceil(F/16))``."""

    name = "vggish"

    def __init__(self, *, out_channels: int = 512) -> None:
        super().__init__(out_channels=out_channels)
        self.features = vggish_features()
        vgg_init(self.features)

    def available_weights(self) -> list[str]:
        return [VGGISH_AUDIOSET.name]

    def named_weights(self, name: str) -> WeightSpec | None:
        return VGGISH_AUDIOSET if name.lower() == VGGISH_AUDIOSET.name else None

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if _is_torchvggish_layout(state):
            state = convert_vggish_state_dict(state)
        # A full VGGish file also serves the conv-map encoder: drop the MLP.
        return {k: v for k, v in state.items() if not k.startswith("embeddings.")}

    def conv_map(self, logmel: torch.Tensor) -> torch.Tensor:
        """``(N, 1, M, F)`` -> the trunk's map in VGGish's layout ``(N, 512, F', M')``."""
        self.check_input(logmel)
        x = logmel.transpose(2, 3)  # (N, 1, M, F) -> (N, 1, F, M): VGGish's (frames, bins)
        return self.features(x)  # (N, 512, ceil(F/16), ceil(M/16))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.conv_map(logmel)
        return x.transpose(2, 3).contiguous()  # (N, 512, F', M') -> (N, 512, M', F')


class VGGishEmbedEncoder(VGGishEncoder):
    """VGGish trunk + embedding MLP: log-mel ``(N, 1, M, F)`` -> embedding ``(N, 128, 1, 1)``.

    The final ReLU is kept, as in torchvggish's port (its weights were converted with it).
    """

    name = "vggish-embed"

    def __init__(self) -> None:
        super().__init__(out_channels=128)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * _EMBED_MAP[0] * _EMBED_MAP[1], 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 128),
            nn.ReLU(inplace=True),
        )
        vgg_init(self.embeddings)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return convert_vggish_state_dict(state) if _is_torchvggish_layout(state) else state

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.conv_map(logmel)  # (N, 512, F', M')
        if x.shape[-2:] != _EMBED_MAP:
            x = F.adaptive_avg_pool2d(x, _EMBED_MAP)  # (N, 512, F', M') -> (N, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).flatten(1)  # (N, 512, 6, 4) -> (N, 6, 4, 512) -> (N, 12288), TF's order
        x = self.embeddings(x)  # (N, 12288) -> (N, 128)
        return x[:, :, None, None]  # (N, 128) -> (N, 128, 1, 1)


class SmallAudioEncoder(AudioEncoder):
    """A small CNN: 5 conv-BN-ReLU blocks, stride 16, ``(N, 1, M, F) -> (N, 128, ceil(M/16), ceil(F/16))``.

    No pretrained weights (``weights=None`` or a local file).
    """

    name = "small-audio"

    def __init__(self) -> None:
        super().__init__(out_channels=128)
        self.features = nn.Sequential(
            ConvBlock(1, 32, stride=2),
            ConvBlock(32, 64, stride=2),
            ConvBlock(64, 128, stride=2),
            ConvBlock(128, 128, stride=2),
            ConvBlock(128, 128),
        )

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        self.check_input(logmel)
        return self.features(logmel)
