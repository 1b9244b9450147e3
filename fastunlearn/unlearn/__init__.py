"""Unlearning methods: a registry of ``fn(model, split, config) -> UnlearnResult``."""

# registers every built-in method (the registry never imports its users)
from fastunlearn.unlearn import methods  # noqa: F401
from fastunlearn.unlearn._registry import (
    config_classes,
    get_method,
    list_methods,
    make_config,
    register_method,
    unlearn,
)
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult
from fastunlearn.unlearn.ft import FTConfig
from fastunlearn.unlearn.ga import GAConfig
from fastunlearn.unlearn.retrain import RetrainConfig

__all__ = [
    "FTConfig",
    "GAConfig",
    "RetrainConfig",
    "UnlearnConfig",
    "UnlearnResult",
    "config_classes",
    "get_method",
    "list_methods",
    "make_config",
    "register_method",
    "unlearn",
]
