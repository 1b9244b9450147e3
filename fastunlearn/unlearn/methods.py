"""Importing this module registers every built-in method: each public module of
``fastunlearn.unlearn`` (one file per method) is imported, and its ``@register_method``
decorators run. Adding a method = adding a file; nothing else to edit.

The package's ``__init__`` imports this module (as timm registers its models), so the registry
(:mod:`fastunlearn.unlearn._registry`) never imports the modules that register into it; this
module finds its siblings by path, without importing the package."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

_PACKAGE = __name__.rpartition(".")[0]
_NOT_METHODS = {"base", "methods"}

for _info in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if not _info.name.startswith("_") and _info.name not in _NOT_METHODS:
        importlib.import_module(f"{_PACKAGE}.{_info.name}")
