"""Which device a command runs on: ``--device auto|cpu|cuda|mps``.

``auto`` takes the GPU when there is one: CUDA first, then Apple's MPS, else the CPU. An
explicit ``cuda`` or ``mps`` that this machine (or this build of torch) cannot give is a
one-line :class:`AvlocError`, never a silent fall-back to the CPU. Nothing here runs at import
time; callers resolve the name when a command starts and pass the device down.

Under ``torchrun`` each process has its own device, chosen with its process group
(:func:`avloc.distributed.device`: ``cuda:LOCAL_RANK`` with NCCL when CUDA is available, else
the CPU with gloo); :func:`training_device` checks a ``--device`` given there against it.
"""

from __future__ import annotations

import os

import torch

from avloc.types import AvlocError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (one of :data:`DEVICE_CHOICES`) stands for on this machine.

    Raises:
        AvlocError: an unknown name, or ``cuda`` / ``mps`` when it is not available.
    """
    if name not in DEVICE_CHOICES:
        raise AvlocError(f"unknown device {name!r}: expected one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise AvlocError(f"--device cuda: no CUDA GPU is available (torch {torch.__version__}, {built}); "
                         "use --device cpu or auto")
    if name == "mps" and not _mps_available():
        raise AvlocError("--device mps: Apple's MPS backend is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def training_device(name: str) -> torch.device | None:
    """The device for :func:`avloc.train.fit`: ``resolve_device(name)`` in a single process; under
    ``torchrun`` (``WORLD_SIZE`` set) None, i.e. each process's own device, which an explicit
    ``name`` must agree with.

    Raises:
        AvlocError: as :func:`resolve_device`, or under torchrun a device its process group does
            not run on.
    """
    device = resolve_device(name)
    if "WORLD_SIZE" not in os.environ:
        return device
    group = "cuda" if torch.cuda.is_available() else "cpu"  # as avloc.distributed.process_group picks NCCL / gloo
    if name != "auto" and device.type != group:
        raise AvlocError(f"--device {name} under torchrun: the processes run on {group} here (NCCL on the GPUs when "
                         "CUDA is available, else gloo on the CPU); leave --device auto")
    return None
