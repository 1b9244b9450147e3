"""The study registry: :func:`register_study`, :func:`get_study`, :func:`list_studies`.

It imports none of its users: a study module registers itself when imported, and the package
(``fastunlearn/studies/__init__.py``) imports the built-in studies, so every study is registered
once ``fastunlearn.studies`` (or any of its modules) is imported.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Study:
    """A registered study. ``options``: the ``config.options`` keys it understands (the
    class's or its module's ``OPTIONS``; none when it declares none) — any other key is
    refused by :func:`fastunlearn.studies.base.run` before any work. ``plan(config, data)``
    returns the runs, ``report(ctx)`` the report body."""

    name: str
    question: str
    plan: Callable[[Any, Any], list[dict[str, Any]]]
    report: Callable[[Any], str]
    default_methods: tuple[str, ...] | None = None
    options: tuple[str, ...] = ()


_STUDIES: dict[str, Study] = {}


def register_study(name: str, question: str, *, default_methods: tuple[str, ...] | None = None,
                   ) -> Callable[[type], type]:
    """Class decorator: the class defines ``plan(config, data)`` and ``report(ctx)``
    (static methods)."""

    def deco(cls: type) -> type:
        if name in _STUDIES:
            raise ValueError(f"study {name!r} is already registered")
        options = getattr(cls, "OPTIONS", None)
        if options is None:
            options = getattr(sys.modules.get(cls.__module__), "OPTIONS", ())
        _STUDIES[name] = Study(name, question, cls.plan, cls.report, default_methods,
                               tuple(options))
        return cls

    return deco


def list_studies() -> dict[str, str]:
    """``{name: question}`` of every registered study."""
    return {n: s.question for n, s in sorted(_STUDIES.items())}


def get_study(name: str) -> Study:
    """The registered study ``name``; one-line ValueError naming the studies otherwise."""
    if name not in _STUDIES:
        raise ValueError(f"unknown study {name!r}; studies: {', '.join(sorted(_STUDIES))}")
    return _STUDIES[name]
