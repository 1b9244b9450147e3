"""Forget splits shared by the method tests (digits; read-only, so one per session)."""

import pytest

from fastunlearn.data import forget_classes, forget_random


@pytest.fixture(scope="session")
def class_split(digits):
    """Digits with class "3" forgotten."""
    return forget_classes(digits, ["3"])


@pytest.fixture(scope="session")
def random_split(digits):
    """Digits with a seeded random 10 % forgotten."""
    return forget_random(digits, fraction=0.1, seed=0)
