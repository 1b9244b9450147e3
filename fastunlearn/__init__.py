"""fastunlearn: fast, honest machine unlearning for PyTorch image classifiers.

The public names below load lazily, so ``import fastunlearn`` is instant and never touches
CUDA (or even imports torch) until something is used.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "fastunlearn.data",
    "list_datasets": "fastunlearn.data",
    "forget_by_scores": "fastunlearn.data",
    "forget_classes": "fastunlearn.data",
    "forget_random": "fastunlearn.data",
    "forget_indices": "fastunlearn.data",
    "ForgetSplit": "fastunlearn.data",
    "ImageDataset": "fastunlearn.data",
    "create_model": "fastunlearn.models",
    "list_models": "fastunlearn.models",
    "train": "fastunlearn.train",
    "TrainConfig": "fastunlearn.train",
    "save_checkpoint": "fastunlearn.checkpoint",
    "load_checkpoint": "fastunlearn.checkpoint",
    "unlearn": "fastunlearn.unlearn",
    "list_methods": "fastunlearn.unlearn",
    "register_method": "fastunlearn.unlearn",
    "register_methods_from": "fastunlearn.unlearn._registry",
    "UnlearnConfig": "fastunlearn.unlearn",
    "UnlearnResult": "fastunlearn.unlearn",
    "RetrainConfig": "fastunlearn.unlearn",
    "FTConfig": "fastunlearn.unlearn",
    "GAConfig": "fastunlearn.unlearn",
    "evaluate": "fastunlearn.evaluate",
    "train_sisa": "fastunlearn.unlearn.sisa",
    "audit": "fastunlearn.studies.audit",
    "AuditConfig": "fastunlearn.studies.audit",
}

# Subpackages reachable as attributes (``fu.studies.run(...)``), imported on first use.
_SUBPACKAGES = ("kernels", "studies")

__all__ = sorted(_LAZY) + list(_SUBPACKAGES) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"fastunlearn.{name}")
    module = _LAZY.get(name)
    if module is None:
        if name.endswith("Config") and not name.startswith("_"):
            # every registered method's config: fu.SalUnConfig, fu.SCRUBConfig, …
            configs = importlib.import_module("fastunlearn.unlearn").config_classes()
            if name in configs:
                globals()[name] = configs[name]
                return configs[name]
        raise AttributeError(f"module 'fastunlearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


# ``fastunlearn.train`` / ``.unlearn`` / ``.evaluate`` are both submodules and the public
# functions of the same name. Python's import system sets a loaded submodule as an attribute
# of its parent, which would shadow the function; this module class refuses exactly that, so
# ``fu.train(...)`` always calls the function. Import the submodules by their full dotted
# path (``from fastunlearn.evaluate.core import ...``).
_CALLABLE_NAMES = frozenset({"train", "unlearn", "evaluate"})


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE_NAMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
