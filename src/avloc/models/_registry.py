"""The registry of localisation-model builders: ``register_model``, ``create_model``, ``list_models``.

A builder is a function with explicit typed keyword arguments that returns a
:class:`avloc.models.contract.LocalizationModel` (the contract every command relies on), or a
``LocalizationModel`` subclass itself: a class whose constructor is the builder is registered
directly, and its options are the keyword arguments of its ``__init__``. Every builder accepts at
least ``visual_channels``, ``audio_channels`` and ``num_classes`` (the tests build every
registered model with these alone). Importing :mod:`avloc.models` registers every model.

A builder's type hints are its options' types: :func:`create_model` and :func:`check_options`
refuse a value of another type with a one-line :class:`AvlocError` naming the model, the option,
the expected type and the value. Understood: ``bool``, ``int``, ``float``, ``str``, ``None``,
``Literal[...]``, unions of these, ``Sequence[int]`` (and ``list``/``tuple``) and ``os.PathLike``;
an unannotated argument takes anything.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import torch
from torch import nn

from avloc.models.contract import LocalizationModel
from avloc.types import AvlocError

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` (a function or a LocalizationModel subclass) as the model ``name``;
    a duplicate name raises ValueError."""

    def decorate(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered (by {_MODELS[name].__qualname__})")
        _MODELS[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> LocalizationModel:
    """Build the model ``name`` with the builder's keyword arguments, checked by its type hints.

    Raises:
        AvlocError: unknown name (the message lists the registered ones), a keyword argument the
            builder does not take (the message lists those it takes), a value of another type than
            the builder's hint, or a missing required argument.
    """
    builder = _builder(name)
    kwargs = check_options(name, kwargs)
    try:
        _signature(builder)[0].bind(**kwargs)
    except TypeError as error:
        raise AvlocError(f"model {name!r}: {error}") from None
    model = builder(**kwargs)
    if not isinstance(model, LocalizationModel):
        raise TypeError(f"model {name!r}: its builder returned a {type(model).__name__}, not a LocalizationModel")
    return model


def check_options(name: str, options: Mapping[str, object], *, parse_strings: bool = False,
                  reserved: Mapping[str, str] | None = None) -> dict:
    """The keyword arguments ``options`` of model ``name``, checked against its builder's type hints.

    Args:
        name: a registered model.
        options: option name -> value.
        parse_strings: string values are text to convert by the expected type (command-line
            flags, config files): ``true``/``false``/``1``/``0`` for a bool (any case), ``2`` for
            an int (``2.5`` and ``1.0`` are refused), ``1e-3`` for a float, ``null``/``none`` for
            None, ``4,2`` or ``[4, 2]`` for a sequence. Otherwise values must have the type
            (an int is a float; a float, even ``1.0``, is not an int; a bool is neither).
        reserved: option name -> what sets it instead (e.g. training sets ``num_classes``);
            these are refused, and left out of the list of valid options.

    Returns:
        The options with converted values (ints given for floats become floats, sequences lists,
        paths strings).

    Raises:
        AvlocError: unknown model, unknown or reserved option, or a value of another type; one
            line naming the model, the option, the expected type and the value.
    """
    hints = option_types(name)
    reserved = {key: how for key, how in (reserved or {}).items() if key in hints}
    if not isinstance(options, Mapping):
        raise AvlocError(f"{name}: options must be a mapping of option names to values, got {options!r}")
    checked = {}
    for key, value in options.items():
        if key in reserved:
            raise AvlocError(f"{name}: option {key} is set by {reserved[key]}, not as a model option")
        if key not in hints:
            valid = ", ".join(k for k in hints if k not in reserved)
            raise AvlocError(f"{name}: got an unexpected keyword argument {key!r}; its options are {valid}")
        checked[key] = convert_value(hints[key], value, f"{name}: option {key}", parse_strings=parse_strings)
    return checked


def option_types(name: str) -> dict[str, object]:
    """Every keyword argument of model ``name``'s builder -> its type hint (``Any`` if none)."""
    signature, hints = _signature(_builder(name))
    return {key: hints.get(key, Any) for key in signature.parameters}


def option_defaults(name: str) -> dict[str, object]:
    """Every keyword argument of model ``name``'s builder that has a default -> that default."""
    signature, _ = _signature(_builder(name))
    return {key: p.default for key, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def _signature(builder: Callable[..., nn.Module]) -> tuple[inspect.Signature, dict[str, Any]]:
    """The signature of ``builder`` and its type hints: a function's own, or a class's
    constructor's (without ``self``)."""
    hinted = builder.__init__ if isinstance(builder, type) else builder
    return inspect.signature(builder), get_type_hints(hinted)


def model_name(name: str) -> str:
    """The registered spelling of ``name``: model names are case-insensitive (``EZVSL`` is ``ezvsl``)."""
    registered = {known.lower(): known for known in _MODELS}
    if not isinstance(name, str) or name.lower() not in registered:
        raise AvlocError(f"unknown model {name!r}; expected one of {', '.join(list_models())}")
    return registered[name.lower()]


def _builder(name: str) -> Callable[..., nn.Module]:
    return _MODELS[model_name(name)]


def describe_model(name: str) -> dict:
    """What ``avloc models`` shows of model ``name``, read from a small instance's contract:
    ``name``, ``paper``, ``supervisions``, ``classifier`` (whether it names the event class),
    ``streams`` (None, or the reason it cannot)."""
    name = model_name(name)
    model = create_model(name, visual_channels=8, audio_channels=8, num_classes=2)
    output = model.eval()(torch.zeros(1, 2, 8, 2, 2), torch.zeros(1, 2, 8, 2, 2))  # T = 2 steps of 2 x 2 maps
    return {"name": name, "paper": model.paper, "supervisions": model.supervisions,
            "classifier": output.logits is not None, "streams": model.stream_refusal()}


def model_accepts(name: str, argument: str) -> bool:
    """Whether the builder of model ``name`` takes the keyword ``argument`` (False if unknown)."""
    known = {registered.lower(): builder for registered, builder in _MODELS.items()}
    builder = known.get(name.lower()) if isinstance(name, str) else None
    return builder is not None and argument in _signature(builder)[0].parameters


# ---------------------------------------------------------------------------------------
# Values checked against type hints


class _Mismatch(Exception):
    """The value does not fit one alternative of a type hint."""


_TRUE, _FALSE = ("true", "1"), ("false", "0")
_INT = re.compile(r"[+-]?[0-9]+")


def convert_value(annotation: object, value: object, what: str, *, parse_strings: bool = False) -> object:
    """``value`` as the type ``annotation`` describes (see :func:`check_options` for the rules).

    Args:
        annotation: a type hint (a class, a union, ``Literal``, ``Sequence[int]``, ``dict``...).
        value: the value to check.
        what: the subject of the error message, e.g. ``"stm: option causal"`` or ``"lr"``.
        parse_strings: string values are text to convert by the expected type.

    Raises:
        AvlocError: ``"{what} expects {type}, got {value!r}"``.
    """
    try:
        return _convert_any(annotation, value, parse_strings and isinstance(value, str))
    except _Mismatch:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."  # one readable line
        raise AvlocError(f"{what} expects {describe_type(annotation)}, got {shown}") from None


def describe_type(annotation: object) -> str:
    """Words for a type hint: ``a bool (true/false)``, ``an int``, ``one of 'a', 'b'``..."""
    return " or ".join(_describe(alternative) for alternative in _alternatives(annotation))


def _alternatives(annotation: object) -> tuple:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _sequence_item(annotation: object) -> object | None:
    """The item type of ``Sequence[X]`` / ``list[X]`` / ``tuple[X, ...]``, else None."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Sequence, list) and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def _describe(annotation: object) -> str:
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in get_args(annotation))
    item = _sequence_item(annotation)
    if item is not None:
        return f"a list ({_describe(item)} each)"
    words = {bool: "a bool (true/false)", int: "an int", float: "a finite number", str: "a string",
             type(None): "null", dict: "a mapping", os.PathLike: "a path"}
    return words.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _convert_any(annotation: object, value: object, text: bool) -> object:
    """``value`` as the first alternative of ``annotation`` it fits; ``text``: value is a string to parse."""
    for alternative in _alternatives(annotation):
        try:
            return _convert(alternative, value, text)
        except _Mismatch:
            continue
    raise _Mismatch


def _convert(annotation: object, value: object, text: bool) -> object:
    """``value`` as ``annotation`` (one alternative of a union); ``text``: value is a string to parse."""
    if get_origin(annotation) is Literal:
        for choice in get_args(annotation):
            if text and (value.lower() == str(choice).lower() if isinstance(choice, bool) else value == str(choice)):
                return choice
            if not text and type(value) is type(choice) and value == choice:
                return choice
        raise _Mismatch
    item = _sequence_item(annotation)
    if item is not None:
        if text:
            stripped = value.strip()
            if stripped.startswith("["):
                try:
                    value = json.loads(stripped)
                except json.JSONDecodeError:
                    raise _Mismatch from None
            else:
                value = [part.strip() for part in stripped.split(",")] if stripped else []
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [_convert_any(item, element, text and isinstance(element, str)) for element in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if text and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise _Mismatch
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text and _INT.fullmatch(value.strip()):
            return int(value)
        raise _Mismatch
    if annotation is float:
        if text:
            try:
                value = float(value)
            except ValueError:
                raise _Mismatch from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if annotation is type(None):
        if value is None or (text and value.strip().lower() in ("null", "none")):
            return None
        raise _Mismatch
    if annotation is os.PathLike or get_origin(annotation) is os.PathLike:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise _Mismatch
    if annotation is dict or get_origin(annotation) is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _Mismatch
    return value  # a hint this checker does not understand (Any, a class): the builder checks it

