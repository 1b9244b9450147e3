"""Typed study options: each study declares its ``--option KEY=VALUE`` settings once, as a
dataclass (field types and defaults), and gets parsing and one-line errors from here.

A study's options class subclasses :class:`StudyOptions` and names its study::

    @dataclass
    class ScalingOptions(StudyOptions):
        study: ClassVar[str] = "forget-scaling"
        fractions: tuple[float, ...] = (0.01, 0.1)
        quality: Literal["avg_gap", "probe"] = "avg_gap"

        def __post_init__(self) -> None:
            super().__post_init__()          # converts and type-checks every field
            self.require(all(0 < f < 1 for f in self.fractions), "fractions", "in (0, 1)")

:meth:`StudyOptions.parse` builds it from a mapping — ``config.options``, the
``--option KEY=VALUE`` pairs of the CLI (JSON values, else the raw string) — refusing unknown
keys with a line listing the valid ones. Values are converted to the declared types: a
``tuple[T, ...]`` field takes a list, one item or a comma-separated string (``"1,2"``); ``int``
and ``float`` take numeric strings (never booleans); a ``Literal`` takes one of its values.
Checks that need the dataset or the model (class names, block names) stay in the study.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="StudyOptions")


class _Bad(ValueError):
    """A value that does not fit the declared type (turned into the one-line error)."""


@dataclass
class StudyOptions:
    """Base of a study's typed options (see the module docstring). ``study`` names the study
    in error messages; subclasses declare their fields with types and defaults."""

    study: ClassVar[str] = "study"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                setattr(self, f.name, _convert(value, hints[f.name]))
            except _Bad:
                raise ValueError(f"{self.study} option {f.name} must be "
                                 f"{f.metadata.get('kind') or describe(hints[f.name])}, got "
                                 f"{value!r}") from None

    # -------------------------------------------------------------------- parsing
    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option keys, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls: type[T], raw: Mapping[str, Any] | StudyOptions | None = None, *,
              study: str | None = None) -> T:
        """The options from ``raw`` (a mapping of option keys, ``-`` read as ``_``; an instance
        of this class is returned as is). One-line ValueError for an unknown key (listing the
        valid ones) or a bad value (naming the option and what it must be). ``study``: the
        name in messages (default: the class's ``study``)."""
        name_ = study or cls.study
        if isinstance(raw, cls):
            return raw
        if isinstance(raw, StudyOptions):
            raise ValueError(f"{name_} options must be {cls.__name__}, got "
                             f"{type(raw).__name__} (the options of {raw.study})")
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"{name_} options must be a mapping of option keys, got {raw!r}")
        names = cls.names()
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name = str(key).strip().replace("-", "_")
            if name not in names:
                raise ValueError(f"unknown {name_} option {key!r}; options: "
                                 f"{', '.join(names) if names else 'none'}")
            if name in values:
                raise ValueError(f"{name_} option {name} is given twice")
            values[name] = value
        return cls(**values)

    @classmethod
    def of(cls: type[T], config: Any) -> T:
        """The options of a :class:`~fastunlearn.studies.config.StudyConfig`
        (``config.options``: a mapping or an instance of this class)."""
        return cls.parse(config.options)

    def to_dict(self) -> dict[str, Any]:
        """The options as plain data (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def require(self, ok: bool, name: str, what: str) -> None:
        """One-line ValueError ``"<study> option <name> must be <what>, got <value>"``
        unless ``ok``: the check of a value's range or choice in ``__post_init__``."""
        if not ok:
            raise ValueError(f"{self.study} option {name} must be {what}, got "
                             f"{_shown(getattr(self, name))}")


@dataclass
class NoOptions(StudyOptions):
    """The options of a study that takes none: every key is refused."""


def option(default: Any, kind: str) -> Any:
    """A field with ``default`` (use tuples for sequences) whose type reads as ``kind`` in
    error messages (``"a list of class names or indices"`` instead of the type's wording)."""
    return dataclasses.field(default=default, metadata={"kind": kind})


def as_items(value: Any) -> list[Any]:
    """A list, a tuple, a JSON list string, a comma-separated string or a single number → its
    items; ValueError otherwise (for a study's own normalisation before the type check)."""
    return _items(value)


# ------------------------------------------------------------------- conversion
def _convert(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for exact in (True, False):  # a member the value already is, then a conversion
            for arg in args:
                if arg is type(None):
                    continue
                if exact and not _is(value, arg):
                    continue
                try:
                    return _convert(value, arg)
                except _Bad:
                    continue
        raise _Bad
    if origin is typing.Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        raise _Bad
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Bad
    if hint is int:
        return _int(value)
    if hint is float:
        return _float(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Bad
    if origin is tuple or hint is tuple:
        item = args[0] if args else Any
        return tuple(_convert(v, item) for v in _items(value))
    raise TypeError(f"study options cannot have the type {hint!r}")  # pragma: no cover


def _is(value: Any, hint: Any) -> bool:
    if hint in (int, float):
        return isinstance(value, hint) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (list, tuple, str))
    return typing.get_origin(hint) is typing.Literal and value in typing.get_args(hint)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Bad
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _Bad from None
    raise _Bad


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Bad
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _Bad from None
    raise _Bad


def _items(value: Any) -> list[Any]:
    """A list, a tuple, a comma-separated string or a single scalar → its items."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                raise _Bad from None
            if isinstance(items, list):
                return items
            raise _Bad
        return [t.strip() for t in text.split(",") if t.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    raise _Bad


def describe(hint: Any) -> str:
    """``tuple[int, ...]`` → ``"a list of integers"``, ``Literal["a", "b"]`` → ``"one of a,
    b"``: how an option's type reads in an error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return text + " (or null)" if type(None) in args else text
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple or hint is tuple:
        item = args[0] if args else Any
        if typing.get_origin(item) is typing.Literal:
            return "a list of " + ", ".join(str(a) for a in typing.get_args(item))
        return "a list of " + _plural(describe(item))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            Any: "a value"}.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(text: str) -> str:
    words = {"an integer": "integers", "a number": "numbers", "a string": "strings",
             "true or false": "booleans", "a value": "values"}
    return " or ".join(words.get(p, p) for p in text.split(" or "))


def _shown(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)
