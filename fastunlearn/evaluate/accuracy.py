"""Accuracy metrics (DESIGN §3): FA/UA, RA, TA, test-forget and per-class test accuracy."""

from __future__ import annotations

import math

import torch
from torch import nn

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.inference import predict_logits


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy (%) per class; NaN for classes with no samples."""
    hits = torch.bincount(labels[pred == labels], minlength=num_classes).float()
    counts = torch.bincount(labels, minlength=num_classes).float()
    return [100.0 * h / c if c > 0 else math.nan for h, c in zip(hits.tolist(), counts.tolist())]


def _acc(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (pred == labels).float().mean().item() if len(labels) else math.nan


def accuracy_metrics(model: nn.Module, split: ForgetSplit, *, batch_size: int = 512) -> dict:
    """``forget_acc`` (FA), ``UA`` = 100 − FA, ``retain_acc`` (RA), ``test_acc`` (TA: retain
    classes only for class forgetting, the whole test set otherwise), ``test_forget_acc``,
    ``test_retain_acc``, ``test_all_acc`` and ``per_class_test_acc`` (class name → %)."""
    out: dict = {}
    for name, part in (("forget", split.forget), ("retain", split.retain)):
        pred = predict_logits(model, part, batch_size=batch_size).argmax(1)
        out[f"{name}_acc"] = _acc(pred, part.labels)
    out["UA"] = 100.0 - out["forget_acc"]
    test = split.test
    pred = predict_logits(model, test, batch_size=batch_size).argmax(1)
    labels = test.labels
    out["test_all_acc"] = _acc(pred, labels)
    fmask = torch.zeros(len(labels), dtype=torch.bool)
    fmask[split.test_forget.indices] = True
    out["test_forget_acc"] = _acc(pred[fmask], labels[fmask])
    out["test_retain_acc"] = _acc(pred[~fmask], labels[~fmask])
    out["test_acc"] = out["test_retain_acc"] if split.kind == "class" else out["test_all_acc"]
    classes = split.data.classes
    out["per_class_test_acc"] = dict(zip(classes, per_class_accuracy(pred, labels, len(classes))))
    return out
