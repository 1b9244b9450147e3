"""Issue 13 from the Python API: misuse is one clear TypeError/ValueError (item 13), a diverged
run says so (item 4), an unchanged model is detected (item 5), and the shared validation guard
warns when a method collapses the retained classes toward chance (item 6)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import fastunlearn as fu
from fastunlearn.evaluate.core import Evaluator
from fastunlearn.models import create_model
from fastunlearn.train import TrainConfig
from fastunlearn.unlearn import make_config
from fastunlearn.unlearn.neggrad_plus import NegGradPlusConfig

CPU = {"device": "cpu", "progress": False}
FAST = {"max_samples": 200, "cka": False, "mia_seeds": 2}


@pytest.fixture(scope="module")
def split(digits):
    return fu.forget_classes(digits, ["3"])


# ------------------------------------------------------------------ item 13: API misuse
def test_a_dataset_or_part_where_a_split_belongs_is_a_type_error(digits, digits_original):
    cfg = fu.FTConfig(**CPU)
    for wrong in (digits, digits.train):
        with pytest.raises(TypeError, match="needs a ForgetSplit.*fu.forget_classes"):
            fu.unlearn(digits_original, wrong, cfg)
        with pytest.raises(TypeError, match="needs a ForgetSplit"):
            fu.evaluate(digits_original, wrong)


def test_a_config_of_the_wrong_kind_is_a_type_error(digits, digits_original, split):
    with pytest.raises(TypeError, match="method config such as fu.FTConfig.*TrainConfig"):
        fu.unlearn(digits_original, split, TrainConfig())
    with pytest.raises(TypeError, match="config must be an EvalConfig, got TrainConfig"):
        Evaluator(split, TrainConfig())
    model = create_model("small_cnn", digits)
    with pytest.raises(TypeError, match="needs a TrainConfig, got FTConfig"):
        fu.train(model, digits.train, fu.FTConfig())
    with pytest.raises(TypeError, match="split.full"):
        fu.train(model, split, TrainConfig(**CPU))
    with pytest.raises(TypeError, match="nn.Module"):
        fu.unlearn("model.safetensors", split, fu.FTConfig(**CPU))


def test_a_model_with_the_wrong_output_size_is_a_value_error(digits, split):
    model = nn.Sequential(create_model("small_cnn", digits), nn.Linear(10, 4))  # 4 outputs
    with pytest.raises(ValueError, match="outputs 4 classes.*has 10"):
        fu.unlearn(model, split, fu.FTConfig(**CPU))
    with pytest.raises(ValueError, match="outputs 4 classes.*has 10"):
        fu.evaluate(model, split, **FAST)
    with pytest.raises(ValueError, match="outputs 4 classes.*has 10"):
        fu.train(model, digits.train, TrainConfig(epochs=1, **CPU))


# --------------------------------------------------------- item 4: diverged models
def test_unlearn_reports_nonfinite_weights(digits_original, split):
    from fastunlearn.train import nonfinite_tensors

    res = fu.unlearn(digits_original, split, fu.FTConfig(lr=1e30, epochs=1, **CPU))
    assert res.info["weights_finite"] is False and res.info["nonfinite_tensors"] >= 1
    assert nonfinite_tensors(res.model)
    ok = fu.unlearn(digits_original, split, fu.FTConfig(epochs=1, **CPU))
    assert ok.info["weights_finite"] is True and not nonfinite_tensors(ok.model)


# ------------------------------------------------------------ item 5: unchanged models
@pytest.mark.parametrize("cfg", [
    pytest.param(lambda: fu.GAConfig(lr=50.0, **CPU), id="ga-guard-restores"),
    pytest.param(lambda: NegGradPlusConfig(lr=50.0, beta=0.05, check_every=1, **CPU),
                 id="neggrad_plus-guard-restores"),
    pytest.param(lambda: fu.GAConfig(epochs=0, **CPU), id="ga-epochs-0"),
])
def test_an_unchanged_model_is_reported(digits_original, split, cfg):
    config = cfg()
    res = fu.unlearn(digits_original, split, config)
    assert res.info["unchanged"] is True, res.info
    reason = res.info["unchanged_reason"]
    if config.epochs == 0:
        assert "epochs=0" in reason
    else:
        assert "guard restored the original" in reason
    for a, b in zip(res.model.state_dict().values(), digits_original.state_dict().values()):
        assert torch.equal(a, b)


def test_a_changed_model_is_not_unchanged(digits_original, split):
    res = fu.unlearn(digits_original, split, fu.GAConfig(**CPU))
    assert res.info["unchanged"] is False and "unchanged_reason" not in res.info


# ------------------------------------------- item 6: the shared validation guard
@pytest.mark.parametrize("method,lr", [("ft", 50.0), ("rl", 1e30), ("ft", 1e30)])
def test_collapse_toward_chance_is_warned_for_training_methods(digits_original, split, caplog,
                                                               method, lr):
    cfg = make_config(method, lr=lr, epochs=1, **CPU)
    with caplog.at_level(logging.WARNING, logger="fastunlearn"):
        res = fu.unlearn(digits_original, split, cfg)
    assert res.info["retain_collapsed"] is True
    assert res.info["val_retain_acc_before"] > 80 > res.info["val_retain_acc_after"]
    assert any("collapsed toward chance" in r.getMessage() for r in caplog.records)


def test_a_healthy_method_is_not_warned(digits_original, split, caplog):
    with caplog.at_level(logging.WARNING, logger="fastunlearn"):
        res = fu.unlearn(digits_original, split, fu.FTConfig(epochs=1, **CPU))
    assert res.info["retain_collapsed"] is False
    assert not any("collapsed toward chance" in r.getMessage() for r in caplog.records)


def test_the_guard_reads_validation_never_test(digits_original, split, monkeypatch):
    """The shared guard's probe is ``split.val_retain`` (the instrumented-test guarantee)."""
    from fastunlearn.engine import guards as _losses

    seen = []
    real = _losses.RetainHealth.measure.__func__

    def spy(cls, model, s, **kw):
        out = real(cls, model, s, **kw)
        seen.append(out.probe)
        return out

    monkeypatch.setattr(_losses.RetainHealth, "measure", classmethod(spy))
    fu.unlearn(digits_original, split, fu.FTConfig(epochs=1, **CPU))
    probe = seen[0]
    assert probe.part == "test" and bool(torch.isin(probe.indices, split.val_retain.indices).all())
    assert not bool(torch.isin(probe.indices, split.test.indices).any())
