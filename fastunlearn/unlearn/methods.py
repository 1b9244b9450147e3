"""Importing this module registers every built-in method (one module per method)."""

from fastunlearn.unlearn import ft, ga, retrain  # noqa: F401
