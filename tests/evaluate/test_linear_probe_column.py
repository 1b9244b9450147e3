"""``EvalConfig(linear_probe=True)``: the probe recovery of the evaluated and the retrained
model, the same number the audit's linear probe gives."""

from __future__ import annotations

import pytest
import torch

import fastunlearn as fu
from fastunlearn.evaluate.audit import linear_probe
from fastunlearn.evaluate.core import EvalConfig, Evaluator


@pytest.mark.parametrize("kind", ["class", "random"])
def test_probe_column_matches_the_audit_probe(kind, digits, digits_original):
    split = (fu.forget_classes(digits, ["3"]) if kind == "class"
             else fu.forget_random(digits, fraction=0.1, seed=0))
    torch.manual_seed(1)
    other = fu.create_model("small_cnn", digits)  # an untrained model as the "retrain"
    ev = Evaluator(split, EvalConfig(mia=False, cka=False, linear_probe=True))
    res = ev.evaluate(digits_original, retrained=other)
    if kind == "class":
        ref = linear_probe(digits_original, split.full.take(3000, seed=0), split.test,
                           forget_classes=split.forget_class_ids, seed=0)
        assert res["probe_forget_acc"] == pytest.approx(ref["forget_class_accuracy"])
    else:
        ref = linear_probe(digits_original, split.retain.take(3000, seed=0), split.forget,
                           seed=0)
        assert res["probe_forget_acc"] == pytest.approx(ref["accuracy"])
    # the retrained model's own probe, computed the same way
    if kind == "class":
        gold = linear_probe(other, split.full.take(3000, seed=0), split.test,
                            forget_classes=split.forget_class_ids, seed=0)["forget_class_accuracy"]
    else:
        gold = linear_probe(other, split.retain.take(3000, seed=0), split.forget,
                            seed=0)["accuracy"]
    assert res["retrain_probe_forget_acc"] == pytest.approx(gold)
    plain = Evaluator(split, EvalConfig(mia=False, cka=False)).evaluate(digits_original)
    assert "probe_forget_acc" not in plain
