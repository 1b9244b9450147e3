"""Judging unlearned models: accuracy, membership inference, divergence to the
retrained model, drift, runtime, per-example audits (ε forget score, U-LiRA, KLoM, linear
probe, relearn time), plots and reports. Definitions: docs/evaluation.md."""

from fastunlearn.evaluate.accuracy import accuracy_metrics, per_class_accuracy
from fastunlearn.evaluate.audit import (
    epsilon_scores,
    final_score,
    forget_score,
    klom,
    klom_summary,
    linear_probe,
    logit_scaled_confidence,
    margin,
    relearn_time,
    ulira_attack,
    ulira_scores,
)
from fastunlearn.evaluate.core import HEADLINE, EvalConfig, Evaluator, evaluate
from fastunlearn.evaluate.divergence import entropy, js_divergence, kl_divergence
from fastunlearn.evaluate.drift import (
    block_activations,
    confusion_drift,
    confusion_matrix,
    linear_cka,
    penultimate_features,
    probe_blocks,
)
from fastunlearn.evaluate.mia import attack_efficacy, loss_attack_auc, m_entropy, mia_features
from fastunlearn.evaluate.report import discover_run, write_report
from fastunlearn.evaluate.runtime import RuntimeReport, time_unlearn

__all__ = [
    "HEADLINE",
    "EvalConfig",
    "Evaluator",
    "RuntimeReport",
    "accuracy_metrics",
    "attack_efficacy",
    "block_activations",
    "confusion_drift",
    "confusion_matrix",
    "discover_run",
    "entropy",
    "epsilon_scores",
    "evaluate",
    "final_score",
    "forget_score",
    "js_divergence",
    "kl_divergence",
    "klom",
    "klom_summary",
    "linear_cka",
    "linear_probe",
    "logit_scaled_confidence",
    "loss_attack_auc",
    "m_entropy",
    "margin",
    "mia_features",
    "penultimate_features",
    "per_class_accuracy",
    "probe_blocks",
    "relearn_time",
    "time_unlearn",
    "ulira_attack",
    "ulira_scores",
    "write_report",
]
