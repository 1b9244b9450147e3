"""``evaluate(model, split, original=..., retrained=...)`` → a flat metrics dict."""

from __future__ import annotations

from typing import Any

from torch import nn

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.evaluate.accuracy import accuracy_metrics

HEADLINE = ("forget_acc", "UA", "retain_acc", "test_acc", "test_forget_acc", "test_retain_acc")


def evaluate(
    model: nn.Module,
    split: ForgetSplit,
    *,
    original: nn.Module | None = None,
    retrained: nn.Module | None = None,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Judge ``model`` on ``split``. With ``retrained`` (the gold model) also reports the
    gold model's headline numbers as ``retrain_<name>`` and the gap ``gap_<name>`` =
    |model − gold|; with ``original`` the original's as ``original_<name>``."""
    out = accuracy_metrics(model, split, batch_size=batch_size)
    for prefix, ref in (("original", original), ("retrain", retrained)):
        if ref is None:
            continue
        ref_m = accuracy_metrics(ref, split, batch_size=batch_size)
        for k in HEADLINE:
            out[f"{prefix}_{k}"] = ref_m[k]
            if prefix == "retrain":
                out[f"gap_{k}"] = abs(out[k] - ref_m[k])
    return out
