"""Shared fixtures. Everything is seeded; models start from random init; data is small and
offline (scikit-learn digits, synthetic, and Fashion-MNIST when Debian's package is present)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
# one thread: the test models are tiny, and on a shared 2-core box OpenMP barriers with two
# threads stall torch ops by 10-100x
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def digits():
    from fastunlearn.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def synthetic():
    from fastunlearn.data import load_dataset

    return load_dataset("synthetic", num_classes=4, channels=1, size=8)


@pytest.fixture(scope="session")
def digits_original(digits):
    """small_cnn trained on all of digits (≈ 97 % test accuracy, a few seconds on CPU)."""
    from fastunlearn.models import create_model
    from fastunlearn.train import TrainConfig, train

    torch.manual_seed(0)
    model = create_model("small_cnn", digits)
    cfg = TrainConfig(epochs=15, lr=0.05, batch_size=64, device="cpu", progress=False, eval_every=0)
    return train(model, digits.train, cfg)
