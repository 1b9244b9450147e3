"""No method reads the test set (issue 12 §1): every registered method runs on a split whose
test images are instrumented — reading any test image outside the validation hold-out, or
touching ``split.test`` / ``test_forget`` / ``test_retain`` at all, fails the test."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from guarded_data import ForbiddenRead, GuardedImages, forbid  # tests/unlearn/

from fastunlearn.data import forget_classes, forget_random
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.unlearn import list_methods, make_config, unlearn

COMMON = {"device": "cpu", "progress": False}
# small, cheap settings; anything not named runs with its defaults (plus COMMON)
CHEAP = {
    "ft": {"epochs": 1},
    "l1_sparse": {"epochs": 1},
    "lora_ft": {"epochs": 1},
    "retrain": {"epochs": 1},
    "rl": {"epochs": 1},
    "salun": {"epochs": 1},
    "ig_salun": {"epochs": 1},
    "scrub": {"epochs": 1},
    "bad_teacher": {"epochs": 1},
    "two_stage": {"epochs": 1},
    "boundary_shrink": {"epochs": 1},
    "neggrad_plus": {"epochs": 2},
    "ga": {"epochs": 2},
    "zero_shot": {"epochs": 2},
}


@pytest.fixture()
def guarded(digits, monkeypatch):
    """``make(split_fn)`` → the split on a copy of digits whose test images are guarded;
    the evaluation-only properties raise while the guard is on."""
    def make(split_fn):
        plain = split_fn(digits)
        store = GuardedImages(digits.test_images, plain.val.indices)
        data = dataclasses.replace(digits, test_images=store)
        split = split_fn(data)
        assert torch.equal(split.val.indices, plain.val.indices)
        for name in ("test", "test_forget", "test_retain"):
            monkeypatch.setattr(ForgetSplit, name, forbid(name))
        return split, store
    return make


def _model_for(name, digits, digits_original):
    if name != "sisa":
        return digits_original
    from fastunlearn.train import TrainConfig
    from fastunlearn.unlearn.sisa import train_sisa

    cfg = TrainConfig(epochs=1, lr=0.05, batch_size=32, device="cpu", progress=False,
                      eval_every=0, seed=0)
    return train_sisa("small_cnn", digits, 2, 1, cfg)


def test_the_guard_catches_a_test_read(guarded):
    from fastunlearn.inference import accuracy

    split, store = guarded(lambda d: forget_random(d, count=50, seed=0))
    with pytest.raises(ForbiddenRead):
        _ = split.test
    # a view of every test image reads outside the validation part
    with pytest.raises(ForbiddenRead):
        accuracy(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(10)),
                 split.data.test)
    assert store.reads == 0


@pytest.mark.parametrize("kind", ["random", "class"])
@pytest.mark.parametrize("name", sorted(list_methods()))
def test_no_method_reads_the_test_set(name, kind, guarded, digits, digits_original):
    if name in ("zero_shot", "delete") and kind == "random":
        pytest.skip(f"{name} is class forgetting only")
    make = (lambda d: forget_random(d, count=60, seed=1)) if kind == "random" else (
        lambda d: forget_classes(d, ["3"]))
    split, store = guarded(make)
    model = _model_for(name, digits, digits_original)
    cfg = make_config(name, **COMMON, **CHEAP.get(name, {}))
    res = unlearn(model, split, cfg)
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
