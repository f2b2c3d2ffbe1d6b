"""The registry of localisation-model builders: ``register_model``, ``create_model``, ``list_models``.

A builder is a plain function with explicit typed keyword arguments that returns an ``nn.Module``
whose ``forward`` returns :class:`avloc.types.AVOutput`. Every builder accepts at least
``visual_channels``, ``audio_channels`` and ``num_classes`` (the tests build every registered
model with these alone). Importing :mod:`avloc.models` registers every model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from avloc.types import AvlocError

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` as the model ``name``; a duplicate name raises ValueError."""

    def decorate(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered (by {_MODELS[name].__qualname__})")
        _MODELS[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model ``name`` with the builder's keyword arguments.

    Raises:
        AvlocError: unknown name (the message lists the registered ones), or keyword arguments
            the builder does not take / misses.
    """
    if name not in _MODELS:
        raise AvlocError(f"unknown model {name!r}; expected one of {', '.join(list_models())}")
    builder = _MODELS[name]
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as error:
        raise AvlocError(f"model {name!r}: {error}") from None
    return builder(**kwargs)


def model_accepts(name: str, argument: str) -> bool:
    """Whether the builder of model ``name`` takes the keyword ``argument`` (False if unknown)."""
    return name in _MODELS and argument in inspect.signature(_MODELS[name]).parameters
