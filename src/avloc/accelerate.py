"""How a command uses its device: ``--precision auto|fp32|bf16|fp16``, channels-last, pinned memory, loader workers.

:func:`acceleration` derives one :class:`Acceleration` from the device a command runs on
(:func:`avloc.devices.resolve_device`) and the ``--precision`` asked for:

============  =====================================  ==============  ===========  ==============
device        autocast (``auto``)                    channels-last   pin memory   loader workers
============  =====================================  ==============  ===========  ==============
CUDA          bf16 where the GPU has it, else fp16   yes             yes          up to 4
CPU, MPS      off (float32)                          no              no           0
============  =====================================  ==============  ===========  ==============

Loader workers are ``avloc train``'s DataLoader processes and ``avloc extract``'s decoding
processes (:func:`avloc.io.prefetch.decoded_chunks`); where they are on, ``avloc localize``
decodes its next steps on a thread (:func:`avloc.io.prefetch.prefetched`). On the CPU the
encoders hold every core, so decoding stays in line with them.

On the CPU ``auto`` is exactly today's float32 path (no autocast, no layout change), so the
numbers in docs/results.md repeat bit for bit; ``--precision bf16`` (or fp16) forces autocast
there too, which is how tests/test_accelerate.py checks the GPU path's arithmetic on a machine
without a GPU. fp16 trains with a gradient scaler (:meth:`Acceleration.grad_scaler`); bf16 has
float32's range and needs none. Autocast covers the encoders and the model; the log-mel front
end always runs in float32 (:func:`avloc.audio.log_mel`) and every feature map, heat map and loss
leaves in float32.

Channels-last (NHWC) is applied to the convolutional encoders only
(:func:`use_channels_last`): their weights and 4-D inputs are converted, and their outputs are
made contiguous again, so the models' reshapes downstream see the usual layout. Nothing here
runs at import time.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from avloc.types import AvlocError

PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MAX_CUDA_WORKERS = 4  # DataLoader processes on CUDA: decoding / HDF5 reads ahead of the GPU, not every core


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Acceleration:
    """What a command does on its device (see the module docstring for the defaults).

    Attributes:
        device: where the encoders and the model run.
        precision: ``"fp32"`` (no autocast), ``"bf16"`` or ``"fp16"`` (autocast to that type).
        channels_last: convolutional encoders in NHWC (:func:`use_channels_last`).
        pin_memory: DataLoaders pin their batches, copies to the device are non-blocking.
        workers: DataLoader processes when the caller does not name a number.
    """

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    pin_memory: bool = False
    workers: int = 0

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast type, or None for float32."""
        return DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The block's autocast: to :attr:`dtype` on :attr:`device`, or nothing for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for fp16 only (a pass-through otherwise: the steps are unchanged)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def prepare(self, *modules: nn.Module | None) -> None:
        """Put the convolutional ``modules`` (encoders; None skipped) in channels-last when :attr:`channels_last`."""
        if self.channels_last:
            for module in modules:
                if module is not None:
                    use_channels_last(module)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on :attr:`device`; asynchronous from pinned memory."""
        return tensor.to(self.device, non_blocking=self.pin_memory and tensor.is_pinned())


def acceleration(device: str | torch.device, precision: str = "auto", channels_last: bool | None = None,
                 workers: int | None = None) -> Acceleration:
    """The :class:`Acceleration` of ``device`` with ``precision`` (one of :data:`PRECISION_CHOICES`).

    ``auto`` is bf16 on a CUDA GPU that supports it (Ampere and later), fp16 on an older one,
    and fp32 on the CPU and MPS. ``channels_last`` and ``workers`` left None follow the device.

    Raises:
        AvlocError: an unknown precision, or bf16 on a CUDA GPU without it.
    """
    if precision not in PRECISION_CHOICES:
        raise AvlocError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISION_CHOICES)}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    elif precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise AvlocError("--precision bf16: this GPU has no bfloat16 (before Ampere); use --precision fp16 or auto")
    if workers is not None and workers < 0:
        raise AvlocError(f"workers must be >= 0, got {workers}")
    return Acceleration(
        device=device,
        precision=precision,
        channels_last=cuda if channels_last is None else channels_last,
        pin_memory=cuda,
        workers=(min(MAX_CUDA_WORKERS, _cpu_count()) if cuda else 0) if workers is None else workers,
    )


def _channels_last_input(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.ndim == 4
                 else a for a in args)


def _contiguous_output(module: nn.Module, args: tuple, output):
    return output.contiguous() if isinstance(output, torch.Tensor) else output


def use_channels_last(module: nn.Module) -> nn.Module:
    """``module`` (a convolutional encoder) in channels-last, in place; returns it.

    Its 4-D weights and 4-D positional inputs become NHWC (cuDNN's and oneDNN's fast layout for
    convolutions in reduced precision); its tensor output is made contiguous again, so callers
    that reshape it see the layout they always did. The values are those of the contiguous
    module up to float rounding (tests/test_accelerate.py: within 1e-5). Calling it twice is
    calling it once.
    """
    if getattr(module, "_avloc_channels_last", False):
        return module
    module.to(memory_format=torch.channels_last)
    module.register_forward_pre_hook(_channels_last_input)
    module.register_forward_hook(_contiguous_output)
    module._avloc_channels_last = True
    return module
