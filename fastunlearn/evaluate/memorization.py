"""Memorization of training examples: the Feldman–Zhang estimate from a pool of models trained
on random halves, and the cheap single-run proxy recorded while training.

* :func:`memorization_scores` — per example, the mean logit-scaled confidence
  ``φ = log p_y − log(1 − p_y)`` of the models that trained on it minus the mean over the models
  that did not (Feldman & Zhang, NeurIPS 2020, "What neural networks memorize and why", with φ in
  place of 0/1 correctness, as in LiRA's layout). A large value: the example is only fitted when
  it is seen — it is memorized, and a model that forgot it should look like the ones that never
  saw it.
* :func:`proxy_scores` — the learning-event proxy of Zhao et al. (NeurIPS 2024, "What makes
  unlearning hard and what to do about it", kairanzhao/RUM): one minus the example's mean
  true-class confidence over the training epochs. :func:`fastunlearn.train` records that mean
  (``history.confidence``) at no extra pass; examples learned late or never are the memorized
  ones.

Both return a float64 array, higher = more memorized; :func:`spearman` compares two of them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["memorization_scores", "proxy_scores", "spearman"]


def memorization_scores(phi: np.ndarray, member: np.ndarray) -> np.ndarray:
    """``phi[M, n]`` (φ of ``n`` training examples under ``M`` models) and ``member[M, n]``
    (True where model ``m`` trained on example ``j``) → ``[n]`` mean φ in − mean φ out. NaN for
    an example that every model, or no model, trained on."""
    phi = np.asarray(phi, dtype=np.float64)
    member = np.asarray(member, dtype=bool)
    if phi.ndim != 2 or phi.shape != member.shape:
        raise ValueError(f"phi and member must be [models, examples] of one shape, got "
                         f"{phi.shape} and {member.shape}")
    n_in, n_out = member.sum(0), (~member).sum(0)
    s_in = np.where(member, phi, 0.0).sum(0)
    s_out = np.where(member, 0.0, phi).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = s_in / n_in - s_out / n_out
    score[(n_in == 0) | (n_out == 0)] = np.nan
    return score


def proxy_scores(mean_confidence: np.ndarray) -> np.ndarray:
    """The learning-event proxy from the mean true-class confidence over training (in
    ``[0, 1]``): ``1 − confidence``, so that, as for :func:`memorization_scores`, higher means
    more memorized."""
    conf = np.asarray(mean_confidence, dtype=np.float64)
    if conf.size and (np.nanmin(conf) < -1e-6 or np.nanmax(conf) > 1 + 1e-6):
        raise ValueError("mean_confidence must hold probabilities in [0, 1]")
    return 1.0 - conf


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two score arrays over the examples where both are finite."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        raise ValueError("spearman needs at least 3 examples with finite scores")
    return float(spearmanr(a[ok], b[ok]).statistic)
