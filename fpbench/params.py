"""Typed parameters: each Method and Transform declares a dataclass of its parameters, the one home of
their defaults. ``build_params`` turns a config mapping into that dataclass, rejecting an unknown key (with a
close match), a value of the wrong type and, through the dataclass's ``__post_init__``, a value out of range --
each error naming the field. Ground floor: imports only ``fpbench.errors``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from fpbench.errors import ConfigError, require

P = TypeVar("P")


@dataclass(frozen=True)
class Params:
    """Base of every parameter dataclass. Subclasses add fields with defaults and check ranges in
    ``__post_init__`` (call ``super().__post_init__()``) with :func:`fpbench.errors.require`."""

    def __post_init__(self) -> None:
        pass

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MethodParams(Params):
    """What every method has: the fixed decision threshold and the suspect query budget (None: unlimited,
    0: the method may not query the suspect)."""

    threshold: float = 0.5
    query_budget: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(math.isfinite(self.threshold), "threshold", f"must be a finite number, got {self.threshold!r}")
        require(self.query_budget is None or self.query_budget >= 0, "query_budget",
                f"must be an integer >= 0 (0: the method may not query the suspect), got {self.query_budget!r}")


@dataclass(frozen=True)
class TransformParams(Params):
    """Base of every transform's parameters (a transform with none uses it as is)."""


def require_fillable(queries: int, rounds: int, candidates: int) -> None:
    """For methods that fill a fingerprint in rounds of screened candidates (MetaFinger, CAE): the budget can be
    filled at all."""
    require(queries >= 1, "queries", f"must be >= 1, got {queries}")
    require(rounds >= 1, "rounds", f"must be >= 1, got {rounds}")
    require(candidates * rounds >= queries, "candidates",
            f"candidates x rounds must be >= queries={queries} (else the fingerprint can never be filled), "
            f"got {candidates} x {rounds}")


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the annotation ``hint``, and the value coerced (an int for a float field)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, coerced = _type_ok(value, arg)
            if ok:
                return True, coerced
        return False, value
    if hint is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in typing.get_args(hint), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if hint is str:
        return isinstance(value, str), value
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value), tuple(value)
        if args:
            coerced = []
            for item in value:
                ok, c = _type_ok(item, args[0])
                if not ok:
                    return False, value
                coerced.append(c)
            value = coerced
        return True, tuple(value) if (origin or hint) is tuple else list(value)
    if origin is dict or hint is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    return True, value  # a type we do not check (a nested structure): __post_init__ checks it


def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "")
    return getattr(hint, "__name__", text) if typing.get_origin(hint) is None else text


def build_params(cls: type[P], values: Mapping[str, Any] | None, where: str) -> P:
    """``cls(**values)`` with every key known and every value of its declared type; errors name the field.

    ``where`` names the owner of the parameters in messages ("method 'sac'", "transform 'prune30'")."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown parameter '{key}' of {where}.{hint} Valid parameters: {', '.join(sorted(fields))}")
    required = [f.name for f in fields.values()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in values]
    if missing:
        raise ConfigError(f"missing parameter '{missing[0]}' of {where}; set params.{missing[0]}")
    kwargs = {}
    for key, value in values.items():
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise ConfigError(f"invalid parameter '{key}' of {where}: expected {_describe(hints[key])}, "
                              f"got {value!r}")
        kwargs[key] = coerced
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{exc} ({where})") from None
