"""Importing this module registers every built-in method: each public module of
``fastunlearn.unlearn`` (one file per method) is imported, and its ``@register_method``
decorators run. Adding a method = adding a file; nothing else to edit."""

from __future__ import annotations

import importlib
import pkgutil

_pkg = importlib.import_module("fastunlearn.unlearn")  # the package (fu.unlearn is a function)

_NOT_METHODS = {"base", "methods"}

for _info in pkgutil.iter_modules(_pkg.__path__):
    if not _info.name.startswith("_") and _info.name not in _NOT_METHODS:
        importlib.import_module(f"{_pkg.__name__}.{_info.name}")
