"""Checks shared by the per-model tests: every parameter learns, and Adam steps lower the loss."""

from collections.abc import Callable

import torch
from torch import nn


def assert_every_parameter_gets_a_gradient(model: nn.Module, loss: torch.Tensor) -> None:
    """``loss.backward()`` reaches every trainable parameter of ``model`` with a non-zero gradient."""
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"no gradient for {missing}"


def assert_adam_lowers(model: nn.Module, loss: Callable[[], torch.Tensor], steps: int, lr: float,
                       factor: float) -> None:
    """``steps`` Adam steps on ``loss()`` (a fixed batch) bring it below ``factor`` times its start."""
    start = loss().item()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < factor * start
