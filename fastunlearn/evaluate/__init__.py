"""Judging unlearned models: accuracy family now; MIA, divergence, drift follow (issue 6)."""

from fastunlearn.evaluate.accuracy import accuracy_metrics, per_class_accuracy
from fastunlearn.evaluate.core import HEADLINE, evaluate

__all__ = ["HEADLINE", "accuracy_metrics", "evaluate", "per_class_accuracy"]
