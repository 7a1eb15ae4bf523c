"""Typed configs: one way to validate a dataclass config, turn it into a dict and back.

Every config in omnipose is a ``@dataclass`` deriving from ``Config``. Each field carries its own
docstring (a string literal right under it, as nerfstudio does), so ``field_docs`` and the
command line's ``--help`` can explain every knob. ``validate`` runs on construction, on
``dataclasses.replace`` and on ``from_dict``: a value out of range is refused with the field
named, never carried into a run.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

from omnipose.core.errors import ConfigError

C = TypeVar("C", bound="Config")


class Config:
    """Base of omnipose's dataclass configs: validation, ``to_dict`` and ``from_dict``."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self: C) -> C:
        """Raise ConfigError naming the first field out of range; returns self."""
        self.check()
        return self

    def check(self) -> None:
        """The range checks of this config (override; nested configs check themselves)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: nested configs as dicts, tuples as lists, paths as strings."""
        return to_dict(self)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], drop_unknown: bool = False) -> C:
        """The config written by ``to_dict``: missing keys take their defaults; unknown keys are
        refused, or dropped with ``drop_unknown`` (a file saved by a version that had them)."""
        return from_dict(cls, data, drop_unknown)


def to_dict(value: Any) -> Any:
    """``value`` with every dataclass turned into a dict, tuples into lists and paths into strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    if isinstance(value, dict):
        return {k: to_dict(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def from_dict(cls: type[C], data: Mapping[str, Any], drop_unknown: bool = False) -> C:
    """An instance of the dataclass ``cls`` from ``data`` (as ``to_dict`` writes it); nested configs
    alike. Keys ``cls`` does not have are refused, or dropped with ``drop_unknown``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__} must be given as a mapping of field names to values, not {type(data).__name__}.")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown and not drop_unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)} for {cls.__name__}; known fields: {', '.join(sorted(names))}.")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _from_value(hints.get(name, Any), value, drop_unknown) for name, value in data.items() if name in names})


def _from_value(annotation: Any, value: Any, drop_unknown: bool) -> Any:
    for option in _options(annotation):
        if dataclasses.is_dataclass(option) and isinstance(value, Mapping):
            return from_dict(option, value, drop_unknown)
    if isinstance(value, list) and any(typing.get_origin(o) is tuple or o is tuple for o in _options(annotation)):
        return tuple(_from_value(Any, v, drop_unknown) for v in value)
    return value


def _options(annotation: Any) -> tuple:
    """The alternatives of a union annotation (``A | None`` -> (A, NoneType)), else (annotation,)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of the dataclass ``cls`` (its own fields and its bases')."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, following in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):  # fmt: skip
                docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


# ----------------------------------------------------------------------------- range checks
def require(config: Config, name: str, condition: bool, expected: str) -> None:
    """Raise ConfigError for ``config.<name>`` unless ``condition``; ``expected`` says what is allowed."""
    if not condition:
        raise ConfigError(f"{type(config).__name__}.{name} = {getattr(config, name)!r}: {expected}.")


def positive(config: Config, *names: str) -> None:
    """Each named field is a number > 0."""
    for name in names:
        value = getattr(config, name)
        require(config, name, _is_number(value) and value > 0, "must be a number above 0")


def non_negative(config: Config, *names: str) -> None:
    """Each named field is a number >= 0."""
    for name in names:
        value = getattr(config, name)
        require(config, name, _is_number(value) and value >= 0, "must be a number of 0 or more")


def fraction(config: Config, *names: str, open_low: bool = False) -> None:
    """Each named field is a number in [0, 1] (or (0, 1] with ``open_low``)."""
    for name in names:
        value = getattr(config, name)
        ok = _is_number(value) and (0 < value if open_low else 0 <= value) and value <= 1
        require(config, name, ok, f"must be a fraction in {'(0' if open_low else '[0'}, 1]")


def one_of(config: Config, name: str, choices: Iterable[Any]) -> None:
    """The named field is one of ``choices``."""
    choices = tuple(choices)
    require(config, name, getattr(config, name) in choices, f"must be one of {', '.join(map(repr, choices))}")


def optional_positive(config: Config, *names: str) -> None:
    """Each named field is None or a number > 0."""
    for name in names:
        value = getattr(config, name)
        require(config, name, value is None or (_is_number(value) and value > 0), "must be None or a number above 0")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # NaN != NaN
