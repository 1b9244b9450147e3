"""Accuracy metrics: FA/UA, RA, TA, test-forget and per-class test accuracy."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.inference import predict_logits


def per_class_accuracy(pred: Tensor, labels: Tensor, num_classes: int) -> list[float]:
    """Accuracy (%) per class; NaN for classes with no samples."""
    hits = torch.bincount(labels[pred == labels], minlength=num_classes).float()
    counts = torch.bincount(labels, minlength=num_classes).float()
    return [100.0 * h / c if c > 0 else math.nan for h, c in zip(hits.tolist(), counts.tolist())]


def _acc(pred: Tensor, labels: Tensor) -> float:
    return 100.0 * (pred == labels).float().mean().item() if len(labels) else math.nan


def split_logits(
    model: nn.Module, split: ForgetSplit, *, batch_size: int = 512
) -> dict[str, Tensor]:
    """Logits of ``model`` on ``forget``, ``retain`` and ``test`` (float32, CPU)."""
    return {
        "forget": predict_logits(model, split.forget, batch_size=batch_size),
        "retain": predict_logits(model, split.retain, batch_size=batch_size),
        "test": predict_logits(model, split.test, batch_size=batch_size),
    }


def forget_mask_of_test(split: ForgetSplit) -> Tensor:
    """Boolean mask over the positions of ``split.test``: True for the test-forget samples."""
    return torch.isin(split.test.indices, split.test_forget.indices)


def accuracy_metrics(
    model: nn.Module | None,
    split: ForgetSplit,
    *,
    batch_size: int = 512,
    logits: dict[str, Tensor] | None = None,
) -> dict:
    """``forget_acc`` (FA), ``UA`` = 100 − FA, ``retain_acc`` (RA), ``test_acc`` (TA: retain
    classes only for class forgetting, the whole test set otherwise), ``test_forget_acc``,
    ``test_retain_acc``, ``test_all_acc`` and ``per_class_test_acc`` (class name → %).

    ``logits`` (from :func:`split_logits`) skips the forward passes; ``model`` may then be None.
    """
    if logits is None:
        if model is None:
            raise ValueError("accuracy_metrics needs a model or precomputed logits")
        logits = split_logits(model, split, batch_size=batch_size)
    out: dict = {}
    for name, part in (("forget", split.forget), ("retain", split.retain)):
        out[f"{name}_acc"] = _acc(logits[name].argmax(1), part.labels)
    out["UA"] = 100.0 - out["forget_acc"]
    labels = split.test.labels
    pred = logits["test"].argmax(1)
    out["test_all_acc"] = _acc(pred, labels)
    fmask = forget_mask_of_test(split)
    out["test_forget_acc"] = _acc(pred[fmask], labels[fmask])
    out["test_retain_acc"] = _acc(pred[~fmask], labels[~fmask])
    out["test_acc"] = out["test_retain_acc"] if split.kind == "class" else out["test_all_acc"]
    classes = split.data.classes
    out["per_class_test_acc"] = dict(zip(classes, per_class_accuracy(pred, labels, len(classes))))
    return out
