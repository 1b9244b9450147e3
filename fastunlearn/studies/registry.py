"""The study registry: :func:`register_study`, :func:`get_study`, :func:`list_studies`.

It imports none of its users: a study module registers itself when imported, and the package
(``fastunlearn/studies/__init__.py``) imports the built-in studies, so every study is registered
once ``fastunlearn.studies`` (or any of its modules) is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastunlearn.studies.options import NoOptions, StudyOptions


@dataclass
class Study:
    """A registered study. ``plan(config, data)`` returns the runs, ``report(ctx)`` the report
    body; ``options_cls``: its typed options (:class:`~fastunlearn.studies.options.StudyOptions`),
    parsed from ``config.options`` by :func:`fastunlearn.studies.base.run` before any work."""

    name: str
    question: str
    plan: Callable[[Any, Any], list[dict[str, Any]]]
    report: Callable[[Any], str]
    default_methods: tuple[str, ...] | None = None
    options_cls: type[StudyOptions] = NoOptions
    eval_options: dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> tuple[str, ...]:
        """The option keys the study understands (any other is refused)."""
        return self.options_cls.names()

    def parse_options(self, raw: Any) -> StudyOptions:
        """``raw`` (a mapping, ``--option`` pairs, or the options instance) → typed options;
        one-line ValueError for an unknown key or a bad value."""
        return self.options_cls.parse(raw, study=self.name)


_STUDIES: dict[str, Study] = {}


def register_study(name: str, question: str, *, default_methods: tuple[str, ...] | None = None,
                   options: type[StudyOptions] = NoOptions,
                   eval_options: dict[str, Any] | None = None) -> Callable[[type], type]:
    """Class decorator: the class defines ``plan(config, data)`` and ``report(ctx)``
    (static methods); ``options``: its :class:`~fastunlearn.studies.options.StudyOptions`
    subclass (whose ``study`` is ``name``), :class:`NoOptions` when it takes none;
    ``eval_options``: :class:`~fastunlearn.evaluate.core.EvalConfig` fields the study's runs
    always set (beside the study config's own)."""
    if not (isinstance(options, type) and issubclass(options, StudyOptions)):
        raise TypeError(f"study {name!r}: options must be a StudyOptions subclass, got "
                        f"{options!r}")
    if options is not NoOptions and options.study != name:
        raise ValueError(f"study {name!r}: its options class {options.__name__} names the "
                         f"study {options.study!r}")

    def deco(cls: type) -> type:
        if name in _STUDIES:
            raise ValueError(f"study {name!r} is already registered")
        _STUDIES[name] = Study(name, question, cls.plan, cls.report, default_methods, options,
                               dict(eval_options or {}))
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
