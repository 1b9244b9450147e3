"""Per-example forgetting audits.

The output-level metrics (UA/RA/TA, MIA-Efficacy, JS) average over a forget set; the audits
here ask, *per example*, whether the distribution of a model statistic under N unlearned models
can be told apart from its distribution under N models retrained without the example. The
inputs are plain arrays ``[n_models, n_examples]`` that a shadow pool produces; nothing here
trains a model except the two feature-level checks at the end.

- :func:`logit_scaled_confidence` / :func:`margin`: ``φ = log p_y − log(1 − p_y)``, which is the
  same number as the KLoM margin ``z_y − logsumexp_{j≠y} z_j`` (see :func:`margin`).
- NeurIPS-2023 Machine Unlearning Challenge forget score (Triantafillou et al., "Are we
  making progress in unlearning? Findings from the first NeurIPS unlearning competition",
  2024; reference code ``google-deepmind/unlearning_evaluation``, ``metric.py`` and
  ``main.py``): :func:`epsilon_scores` (fast) / :func:`epsilon_scores_reference` (slow),
  :func:`forget_score`, :func:`final_score`; bootstrap intervals :func:`forget_score_ci`
  (over forget examples) and :func:`auc_ci_over_groups` (U-LiRA, over target models).
- U-LiRA (Hayes et al., "Inexact unlearning needs more careful evaluations to avoid a false
  sense of privacy", SaTML 2025): :func:`ulira_scores` / :func:`ulira_scores_reference`,
  :func:`ulira_attack`.
- KLoM (Georgiev et al., "Attribute-to-delete: machine unlearning via datamodel matching",
  ICLR 2025; reference code ``RoyRin/data-unlearning-bench``, ``src/eval.py``
  ``compute_binned_KL_div``): :func:`klom` / :func:`klom_reference`, :func:`klom_summary`.
- Feature-level checks that see past the classifier head: :func:`linear_probe` (a fresh
  linear head on frozen penultimate features) and :func:`relearn_time` (fine-tuning steps on
  a few forget samples until the original's accuracy returns).

Every function is pure: inputs are not modified, and no global random state (Python, numpy,
torch) is read or changed; randomness comes from seeded local generators.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fastunlearn._device import model_device
from fastunlearn.data.base import DataPart
from fastunlearn.engine.rng import seeded
from fastunlearn.engine.runner import StepRunner
from fastunlearn.evaluate.drift import penultimate_features
from fastunlearn.inference import accuracy, predict_logits

log = logging.getLogger(__name__)

# Constants of google-deepmind/unlearning_evaluation metric.py (names kept).
DELTA = 1e-5
"""δ of the (ε, δ) bound each threshold attack is converted to."""
EPSILON_CAP = 50.0
"""ε given to examples whose two distributions differ by > 100× in range, and the upper clip
of every per-example ε."""
NUM_THRESHOLDS_PER_UNIT = 100
"""Threshold grid density: ``ceil(100 × span)`` thresholds over a span of φ values."""
DOUBLE_THRESHOLD_BUFFER = 2.0
"""Half-width (in φ units) of the sweep of each end of the double-threshold interval."""
MIN_RANGE_RATIO = 0.01
"""Below this ratio of the two ranges (smaller / larger), ε = :data:`EPSILON_CAP`."""
BUCKET_SIZE = 0.5
"""Width of the ε buckets of the forget score (``main.py``/``metric.py``)."""

# KLoM defaults of RoyRin/data-unlearning-bench src/eval.py compute_binned_KL_div.
KLOM_BINS = 20
KLOM_CLIP = 100.0
KLOM_EPS = 1e-5

# Memory budget of the vectorised ε: threshold evaluations held at once (≈ 8 MB per array).
_THRESHOLDS_PER_CHUNK = 1 << 20


# --------------------------------------------------------------------------- confidences


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """KLoM margin ``z_y − logsumexp_{j≠y} z_j`` (float64).

    ``logits`` is ``[..., C]`` (C ≥ 2), ``labels`` integer class ids broadcastable to
    ``logits.shape[:-1]``; the result has shape ``logits.shape[:-1]``.

    This is the same number as the logit-scaled confidence ``φ = log p_y − log(1 − p_y)``:
    with ``lse = logsumexp_j z_j``, ``log p_y = z_y − lse`` and
    ``log(1 − p_y) = log Σ_{j≠y} p_j = logsumexp_{j≠y} z_j − lse``, so the ``lse`` terms
    cancel. Computed this way it never overflows or saturates: the reference's
    ``log(p_y + 1e-45) − log(1 − p_y + 1e-45)`` is capped near ±103.6 once a probability
    underflows, this is exact for any finite logits.
    """
    z = torch.as_tensor(logits).detach().to(torch.float64)
    if z.dim() < 1 or z.shape[-1] < 2:
        raise ValueError(f"logits need a class dimension of size ≥ 2, got shape {tuple(z.shape)}")
    y = torch.as_tensor(labels, device=z.device).long()
    try:
        y = y.expand(z.shape[:-1]).unsqueeze(-1)
    except RuntimeError as err:
        raise ValueError(
            f"labels of shape {tuple(y.shape)} do not match logits {tuple(z.shape)}"
        ) from err
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[-1]):
        raise ValueError(f"labels must be class ids in [0, {z.shape[-1] - 1}]")
    z_y = z.gather(-1, y).squeeze(-1)
    others = z.scatter(-1, y, -math.inf)
    return z_y - torch.logsumexp(others, dim=-1)


def logit_scaled_confidence(logits: Tensor, labels: Tensor) -> Tensor:
    """Logit-scaled confidence ``φ = log p_y − log(1 − p_y)`` of the true class (float64),
    the statistic of LiRA (Carlini et al. 2022) and of the NeurIPS-2023 unlearning challenge.

    Computed stably as ``z_y − logsumexp_{j≠y} z_j``, i.e. identical to :func:`margin` (see
    there for the derivation). Deviation from ``metric.py``'s
    ``compute_logit_scaled_confidence``: that code adds 1e-45 inside both logs, which caps
    φ at about ±103.6 when a probability underflows; here φ is exact.
    """
    return margin(logits, labels)


# ------------------------------------------------------------- NeurIPS-2023 forget score


def _conf_pair(unlearned_conf: Any, retrained_conf: Any) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(torch.as_tensor(unlearned_conf).detach().cpu(), dtype=np.float64)
    r = np.asarray(torch.as_tensor(retrained_conf).detach().cpu(), dtype=np.float64)
    if u.ndim != 2 or r.ndim != 2:
        raise ValueError(
            f"confidences must be [n_models, n_examples]; got {u.shape} and {r.shape}"
        )
    if u.shape != r.shape:
        raise ValueError(
            f"unlearned and retrained confidences differ in shape: {u.shape} vs {r.shape} "
            "(the challenge compares N unlearned with N retrained models)"
        )
    if u.shape[0] < 1 or u.shape[1] < 1:
        raise ValueError(f"need at least one model and one example, got shape {u.shape}")
    if not (np.isfinite(u).all() and np.isfinite(r).all()):
        raise ValueError("confidences must be finite (no NaN or inf)")
    return u, r


def _orient(u: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pos, neg)`` per example: the retrained models are positive where their median is
    strictly larger, else the unlearned ones (``compute_forget_score_from_confs``)."""
    retrain_is_positive = np.median(r, axis=0) > np.median(u, axis=0)
    return np.where(retrain_is_positive, r, u), np.where(retrain_is_positive, u, r)


def _too_peaky(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Examples whose smaller range is < 1 % of the larger one (both ranges 0: 0/0 is NaN,
    which is not < 1 %, so such examples go through the threshold attacks)."""
    pos_diff = pos.max(0) - pos.min(0)
    neg_diff = neg.max(0) - neg.min(0)
    largest = np.where(pos_diff > neg_diff, pos_diff, neg_diff)
    smallest = np.where(pos_diff > neg_diff, neg_diff, pos_diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = smallest / largest
    return ratio < MIN_RANGE_RATIO


def _num_thresholds(span: np.ndarray | float) -> np.ndarray:
    return np.ceil(np.asarray(span) * NUM_THRESHOLDS_PER_UNIT).astype(np.int64)


def _num_left_thresholds() -> int:
    return int(np.ceil(2 * DOUBLE_THRESHOLD_BUFFER * NUM_THRESHOLDS_PER_UNIT))


def _double_threshold_grid_start(peaky: np.ndarray, width: np.ndarray
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(min_, max_)`` of the right thresholds, as in ``_get_double_threshold_rates``."""
    return (peaky.min(0) + width) - DOUBLE_THRESHOLD_BUFFER, peaky.max(0) + DOUBLE_THRESHOLD_BUFFER


def _linspace_rows(start: np.ndarray, stop: np.ndarray, num: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``np.linspace(start[i], stop[i], num[i])`` for every index ``i`` of the arrays, padded
    with NaN to ``max(num)`` along a new last axis; returns ``(grid, valid)``.

    Bit-identical to ``np.linspace``: point ``k`` is ``k * ((stop − start) / (num − 1)) +
    start`` and the last point is ``stop`` exactly (``[start]`` for ``num == 1``).
    """
    num = np.broadcast_to(num, np.shape(start)).astype(np.int64)
    width = int(num.max()) if num.size else 0
    k = np.arange(width, dtype=np.float64)
    div = np.where(num > 1, num - 1, 1).astype(np.float64)
    step = (stop - start) / div
    grid = k * step[..., None] + start[..., None]
    last = np.clip(num - 1, 0, None)[..., None]
    if width:
        has_end = (num > 1)[..., None]
        current = np.take_along_axis(grid, last, axis=-1)
        np.put_along_axis(grid, last, np.where(has_end, stop[..., None], current), axis=-1)
    valid = k < num[..., None]
    grid[~valid] = np.nan
    return grid, valid


def _epsilon_table(n_models: int, delta: float) -> np.ndarray:
    """ε of one threshold by its error counts: ``table[fn, fp]`` with ``FNR = fn / N``,
    ``FPR = fp / N``. ``inf`` when both are 0 (perfect separation), NaN (threshold dropped)
    when exactly one is 0 or when neither log term is defined, else
    ``max(0, max(log(1−δ−FPR) − log FNR, log(1−δ−FNR) − log FPR))``."""
    rate = np.arange(n_models + 1, dtype=np.float64) / n_models
    fnr, fpr = rate[:, None], rate[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(1 - delta - fpr) - np.log(fnr)
        b = np.log(1 - delta - fnr) - np.log(fpr)
        eps = np.clip(np.fmax(a, b), 0, None)
    eps = np.where((fnr == 0) != (fpr == 0), np.nan, eps)
    eps = np.where((fnr == 0) & (fpr == 0), np.inf, eps)
    return eps


def _count(sorted_rows: Tensor, queries: np.ndarray, *, right: bool) -> np.ndarray:
    """Per row ``b``: how many of ``sorted_rows[b]`` are ``< q`` (``right=False``) or
    ``≤ q`` (``right=True``) for every query ``q`` of ``queries[b]``."""
    b = queries.shape[0]
    q = torch.from_numpy(np.ascontiguousarray(queries.reshape(b, -1)))
    out = torch.searchsorted(sorted_rows, q, right=right)
    return out.numpy().reshape(queries.shape)


def _best(values: np.ndarray, valid: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Max over ``axes`` of the valid, non-NaN values (−inf when none survives)."""
    keep = valid & ~np.isnan(values)
    return np.where(keep, values, -np.inf).max(axis=axes, initial=-np.inf)


def _chunk_epsilons(pos: np.ndarray, neg: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Max ε over both threshold families for the examples (columns) of ``pos``/``neg``;
    −inf where no threshold survives."""
    n = pos.shape[0]
    # single threshold: predict "pos" for φ ≥ t, t on a grid over the joint range
    lo = np.minimum(pos.min(0), neg.min(0))
    hi = np.maximum(pos.max(0), neg.max(0))
    thr, valid = _linspace_rows(lo, hi, _num_thresholds(hi - lo))
    pos_sorted = torch.from_numpy(np.sort(pos.T, axis=1))
    neg_sorted = torch.from_numpy(np.sort(neg.T, axis=1))
    fn = _count(pos_sorted, thr, right=False)
    fp = n - _count(neg_sorted, thr, right=False)
    best = _best(table[fn, fp], valid, (1,))

    # double threshold: predict the peakier distribution inside [left, right]
    pos_diff = pos.max(0) - pos.min(0)
    neg_diff = neg.max(0) - neg.min(0)
    width = np.where(pos_diff > neg_diff, neg_diff, pos_diff)
    swap = pos_diff >= neg_diff
    peaky_sorted = torch.where(torch.from_numpy(swap)[:, None], neg_sorted, pos_sorted)
    other_sorted = torch.where(torch.from_numpy(swap)[:, None], pos_sorted, neg_sorted)
    peaky = np.where(swap, neg, pos)
    lo_r, hi_r = _double_threshold_grid_start(peaky, width)
    right, rvalid = _linspace_rows(lo_r, hi_r, _num_thresholds(hi_r - lo_r))
    shifted = right - width[:, None]
    left, _ = _linspace_rows(shifted - DOUBLE_THRESHOLD_BUFFER,
                             shifted + DOUBLE_THRESHOLD_BUFFER,
                             np.full(right.shape, _num_left_thresholds()))
    inside_peaky = np.maximum(
        _count(peaky_sorted, right, right=True)[..., None]
        - _count(peaky_sorted, left, right=False), 0)
    inside_other = np.maximum(
        _count(other_sorted, right, right=True)[..., None]
        - _count(other_sorted, left, right=False), 0)
    eps_double = table[n - inside_peaky, inside_other]
    best_double = _best(eps_double, np.broadcast_to(rvalid[..., None], eps_double.shape), (1, 2))
    return np.maximum(best, best_double)


def _finish_epsilons(best: np.ndarray, peaky: np.ndarray, cap: float | None) -> np.ndarray:
    none_left = ~peaky & (best == -np.inf)
    if none_left.any():
        log.debug("%d example(s): every threshold was dropped; ε = 0", int(none_left.sum()))
    eps = np.where(peaky, EPSILON_CAP, np.where(none_left, 0.0, best))
    if cap is not None:
        eps = np.clip(eps, 0.0, cap)
    return eps


def epsilon_scores(
    unlearned_conf: Any, retrained_conf: Any, *, delta: float = DELTA,
    cap: float | None = EPSILON_CAP,
) -> np.ndarray:
    """Per-example ε of the NeurIPS-2023 Machine Unlearning Challenge (Triantafillou et al.;
    reference ``google-deepmind/unlearning_evaluation`` ``metric.py``, ``_get_epsilons``).

    ``unlearned_conf`` and ``retrained_conf`` are ``[n_models, n_examples]`` (numpy or torch):
    the logit-scaled confidence (:func:`logit_scaled_confidence`) of each forget example under
    each of N unlearned and N retrained models. Returns ε ``[n_examples]`` (float64).

    Per example, as in the reference:

    1. *positive* = the retrained sample if its median is strictly larger, else the unlearned
       one; *negative* = the other.
    2. If (smaller range) / (larger range) < 1 % (ranges = max − min of each sample), ε = 50
       (:data:`EPSILON_CAP`): one distribution is far peakier than the other.
    3. Else two families of attacks, each threshold giving an FPR and an FNR over the N
       models: *single threshold* — predict positive for φ ≥ t, ``ceil(100·span)`` values of
       t evenly over [min, max] of both samples; *double threshold* — predict the peakier
       sample (smaller range, width w; the negative one on ties) for ``l ≤ φ ≤ r``, with
       ``ceil(100·span)`` right ends r evenly over ``[min + w − 2, max + 2]`` of the peakier
       sample and, for each r, 400 left ends evenly over ``[r − w − 2, r − w + 2]``.
    4. Per threshold: FPR = FNR = 0 → ∞ (perfect separation); exactly one of them 0 → the
       threshold is dropped (too few samples to trust it); else
       ``max(0, max(log(1−δ−FPR) − log FNR, log(1−δ−FNR) − log FPR))``, dropped when neither
       log is defined (FPR = FNR = 1). ε = max over the surviving thresholds of both
       families, then clipped to ``[0, cap]``.

    ``cap=None`` keeps ∞ for perfectly separated examples (the reference clips every ε to 50,
    which is the default here; the forget score is the same either way).

    Deviations from ``metric.py`` (none changes a score on real data):

    - ``assert thr_eps`` there raises whenever more than one threshold survives (truth value
      of a numpy array); this follows the definition instead. When *no* threshold survives
      (e.g. both samples the same constant, or N = 1) the reference fails; here ε = 0.
    - Everything is float64; the reference counts rates in float32 and uses
      ``torch.linspace`` for the single-threshold grid (here ``np.linspace`` arithmetic for
      both grids; points can differ in the last bit, which matters only when a φ value
      equals a grid point to the last bit).

    Implementation: per threshold, only the counts (#false negatives, #false positives)
    matter, so ε is looked up in an ``[N+1, N+1]`` table; the counts come from
    ``torch.searchsorted`` on the sorted samples, batched over examples (about 160 000
    double thresholds per example). :func:`epsilon_scores_reference` is the slow per-example,
    per-threshold version; the tests check that both agree.
    """
    u, r = _conf_pair(unlearned_conf, retrained_conf)
    pos, neg = _orient(u, r)
    n, e = pos.shape
    peaky = _too_peaky(pos, neg)
    best = np.full(e, -np.inf)
    todo = np.flatnonzero(~peaky)
    per_example = _num_left_thresholds() * (int(_num_thresholds(4 * DOUBLE_THRESHOLD_BUFFER)) + 2)
    chunk = max(1, _THRESHOLDS_PER_CHUNK // per_example)
    table = _epsilon_table(n, delta)
    for start in range(0, todo.size, chunk):
        cols = todo[start : start + chunk]
        best[cols] = _chunk_epsilons(pos[:, cols], neg[:, cols], table)
    return _finish_epsilons(best, peaky, cap)


def _threshold_epsilon(fpr: float, fnr: float, delta: float) -> float | None:
    """ε of one threshold (None = dropped), written out case by case."""
    if fpr == 0 and fnr == 0:
        return math.inf
    if fpr == 0 or fnr == 0:
        return None
    candidates = []
    for keep, err in ((1 - delta - fpr, fnr), (1 - delta - fnr, fpr)):
        if keep > 0:
            candidates.append(math.log(keep) - math.log(err))
        elif keep == 0:
            candidates.append(-math.inf)
    if not candidates:
        return None
    return max(0.0, max(candidates))


def epsilon_scores_reference(
    unlearned_conf: Any, retrained_conf: Any, *, delta: float = DELTA,
    cap: float | None = EPSILON_CAP,
) -> np.ndarray:
    """Obviously correct, but slow: :func:`epsilon_scores` one example at a time, following
    ``metric.py`` statement by statement — the thresholds built with ``np.linspace``
    exactly as there, each threshold's FPR/FNR as the fraction of models on the wrong side,
    and the per-threshold rule applied in a Python loop (to each distinct (FPR, FNR) pair a
    threshold family produces: the rule depends on nothing else)."""
    u, r = _conf_pair(unlearned_conf, retrained_conf)
    n_left = _num_left_thresholds()
    out = []
    for i in range(u.shape[1]):
        ui, ri = u[:, i], r[:, i]
        pos, neg = (ri, ui) if np.median(ri) > np.median(ui) else (ui, ri)
        pos_diff, neg_diff = pos.max() - pos.min(), neg.max() - neg.min()
        largest = pos_diff if pos_diff > neg_diff else neg_diff
        smallest = neg_diff if pos_diff > neg_diff else pos_diff
        if largest > 0 and smallest / largest < MIN_RANGE_RATIO:
            out.append(EPSILON_CAP)
            continue
        pairs: set[tuple[float, float]] = set()  # (FPR, FNR) of every threshold
        lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
        for t in np.linspace(lo, hi, int(_num_thresholds(hi - lo))):
            pairs.add((float(np.mean(neg >= t)), float(np.mean(pos < t))))
        peaky, other = (neg, pos) if pos_diff >= neg_diff else (pos, neg)
        width = smallest
        min_ = peaky.min() + width - DOUBLE_THRESHOLD_BUFFER
        max_ = peaky.max() + DOUBLE_THRESHOLD_BUFFER
        for right in np.linspace(min_, max_, int(_num_thresholds(max_ - min_))):
            lefts = np.linspace(right - width - DOUBLE_THRESHOLD_BUFFER,
                                right - width + DOUBLE_THRESHOLD_BUFFER, n_left)
            inside_peaky = (lefts[:, None] <= peaky[None]) & (peaky[None] <= right)
            inside_other = (lefts[:, None] <= other[None]) & (other[None] <= right)
            fpr = inside_other.mean(1)
            fnr = (~inside_peaky).mean(1)
            pairs.update(zip(fpr.tolist(), fnr.tolist()))
        kept = [v for f, m in pairs if (v := _threshold_epsilon(f, m, delta)) is not None]
        out.append(max(kept) if kept else 0.0)
    eps = np.asarray(out, dtype=np.float64)
    return np.clip(eps, 0.0, cap) if cap is not None else eps


def forget_score(eps: Any, n_models: int) -> float:
    """NeurIPS-2023 challenge forget score from per-example ε (``metric.py``
    ``compute_forget_score_from_confs``): the mean over examples of ``2^-k`` where ``k`` is
    ε's 0.5-wide bucket, ``ε ∈ [k/2, (k+1)/2)``, for the buckets below
    ``⌈ln(N − 1)⌉`` (natural log, N = number of unlearned models); larger ε scores 0.

    The reference builds ``{0: 1, 0.5: 1/2, 1: 1/4, …}`` with a while loop
    (``while start + 0.5 ≤ ⌈ln(N−1)⌉``) and gives each ε the points of the first bucket
    with ``ε < start + 0.5``; that is ``k = floor(2ε)`` when ``k < 2⌈ln(N−1)⌉``.
    N = 512: 14 buckets, ε ≥ 7 scores 0; N = 8: ⌈ln 7⌉ = 2, 4 buckets; N = 3: 2 buckets;
    N = 2: no bucket, every score is 0. 1 = indistinguishable from retraining.

    Expect far less than 1 even for a perfect unlearner: two independent pools drawn from one
    distribution get ε ≈ 1.5–2 from tail fluctuations, a score near 0.2 at N = 8 … 512 (same
    with the reference code). Compare with a retrain-vs-independent-retrain audit.
    """
    e = np.asarray(torch.as_tensor(eps).detach().cpu(), dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("forget_score needs at least one ε")
    if np.isnan(e).any() or (e < 0).any():
        raise ValueError("ε values must be ≥ 0 (no NaN)")
    if int(n_models) != n_models or n_models < 2:
        raise ValueError(f"n_models must be an integer ≥ 2, got {n_models}")
    max_epsilon = math.ceil(math.log(n_models - 1))
    n_buckets = int(max_epsilon / BUCKET_SIZE)
    if n_buckets == 0:
        log.warning("forget_score with N=%d models has no ε bucket: the score is 0", n_models)
    k = np.floor(e / BUCKET_SIZE)
    points = np.where(k < n_buckets, np.exp2(-np.minimum(k, n_buckets)), 0.0)
    return float(points.mean())


def forget_score_ci(eps: Any, n_models: int, *, n_boot: int = 1000, level: float = 0.95,
                    seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`forget_score` over the forget *examples*
    (resampled with replacement, ``n_boot`` times, ``numpy.random.default_rng(seed)``). It
    shows how much the score moves with the particular forget examples; it does not capture
    the variation from the finite pool of models (ε itself is computed across the models), so
    it is a lower bound on the full uncertainty."""
    e = np.asarray(torch.as_tensor(eps).detach().cpu(), dtype=np.float64).reshape(-1)
    forget_score(e, n_models)  # validates
    points = np.asarray([forget_score(np.asarray([x]), n_models) for x in np.unique(e)])
    per = points[np.searchsorted(np.unique(e), e)]  # each example's points
    rng = np.random.default_rng(seed)
    boots = per[rng.integers(0, per.size, size=(int(n_boot), per.size))].mean(1)
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def rank_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC of positives vs negatives from ranks (Mann–Whitney U / (n_pos · n_neg); ties
    get average ranks): ``P(pos > neg) + ½ P(tie)``, as ``roc_auc_score``, without its
    per-call overhead."""
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[pos, neg])
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def auc_ci_over_groups(pos_groups: Sequence[Any], neg_groups: Sequence[Any], *,
                       n_boot: int = 500, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC of positives vs negatives, resampling
    whole *groups* with replacement (U-LiRA: one group per target shadow model, its forgotten
    and never-seen scores together), so the interval reflects the spread between target
    models. Non-finite scores are dropped; the AUC of each resample is the Mann–Whitney rank
    statistic (:func:`rank_auc`, equal to ``sklearn.metrics.roc_auc_score`` with ties)."""
    if len(pos_groups) != len(neg_groups) or not pos_groups:
        raise ValueError("auc_ci_over_groups needs as many positive as negative groups (≥ 1)")
    pos = [np.asarray(g, np.float64).reshape(-1) for g in pos_groups]
    neg = [np.asarray(g, np.float64).reshape(-1) for g in neg_groups]
    pos = [g[np.isfinite(g)] for g in pos]
    neg = [g[np.isfinite(g)] for g in neg]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(int(n_boot)):
        pick = rng.integers(0, len(pos), size=len(pos))
        p, n = np.concatenate([pos[i] for i in pick]), np.concatenate([neg[i] for i in pick])
        if p.size and n.size:
            boots.append(rank_auc(p, n))
    if not boots:
        raise ValueError("auc_ci_over_groups needs finite scores on both sides")
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def _mean(x: float | Sequence[float] | np.ndarray) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64)))


def final_score(
    forget: float,
    ra_u: float | Sequence[float],
    ra_r: float | Sequence[float],
    ta_u: float | Sequence[float],
    ta_r: float | Sequence[float],
) -> float:
    """Challenge final score (``main.py``): ``forget × (RA_u / RA_r) × (TA_u / TA_r)`` with
    retain (RA) and test (TA) accuracies of the unlearned (u) and retrained (r) models. Each
    accuracy may be a sequence (one per model); its mean is used, as in the reference. Any
    unit works as long as u and r share it."""
    ra_r_m, ta_r_m = _mean(ra_r), _mean(ta_r)
    if not (ra_r_m > 0 and ta_r_m > 0):
        raise ValueError("retrained accuracies must be positive")
    return float(forget) * (_mean(ra_u) / ra_r_m) * (_mean(ta_u) / ta_r_m)


# ------------------------------------------------------------------------------ U-LiRA


def _masked(conf: Any, name: str) -> np.ndarray:
    x = np.asarray(torch.as_tensor(conf).detach().cpu(), dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [n_models, n_examples], got shape {x.shape}")
    if np.isinf(x).any():
        raise ValueError(f"{name} contains ±inf (NaN marks a missing value)")
    return x


def _gaussian_fit(x: np.ndarray, min_samples: int, fixed_variance: bool, name: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and variance of the finite entries of ``x`` ``[models, examples]``."""
    finite = ~np.isnan(x)
    n = finite.sum(0)
    xs = np.where(finite, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xs.sum(0) / n
        sq = np.where(finite, (x - mean) ** 2, 0.0).sum(0)
        own = sq / (n - 1)
    pooled_from = n >= 2
    dof = (n[pooled_from] - 1).sum()
    pooled = sq[pooled_from].sum() / dof if dof > 0 else np.nan
    use_own = (n >= max(min_samples, 2)) & (own > 0) & (not fixed_variance)
    var = np.where(use_own, own, pooled)
    needs_pooled = (n > 0) & ~use_own
    if needs_pooled.any() and not (np.isfinite(pooled) and pooled > 0):
        raise ValueError(
            f"cannot fit a variance for {name}: too few samples per example and no spread "
            "to pool over examples"
        )
    return mean, var


def _gauss_logpdf(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def ulira_scores(
    target_conf: Any, in_conf: Any, out_conf: Any, *, min_samples: int = 4,
    fixed_variance: bool = False,
) -> np.ndarray:
    """U-LiRA score (Hayes et al., "Inexact unlearning needs more careful evaluations to avoid
    a false sense of privacy", SaTML 2025): per example, the log-likelihood ratio of the
    target model's φ under two Gaussians,
    ``log N(φ; μ_in, σ²_in) − log N(φ; μ_out, σ²_out)`` — *in*: shadow models that trained on
    the example and then unlearned it; *out*: shadow models that never saw it. Large = looks
    like an example that was learned and unlearned (the attack says "forgotten").

    ``in_conf`` ``[n_in_models, n_examples]`` and ``out_conf`` ``[n_out_models, n_examples]``
    hold φ (:func:`logit_scaled_confidence`); NaN marks a model that does not have that
    example in that role (in a pool of models each trained on a random half, every example
    is "in" for some models and "out" for the others). ``target_conf`` is ``[..., n_examples]``
    (one or several target models); leave the target model itself out of ``in_conf`` /
    ``out_conf``. Returns an array of ``target_conf``'s shape; NaN where the target value is
    NaN or a side has no sample for that example.

    Fit per example and side: the mean of the available values; the unbiased variance
    (ddof=1) when at least ``min_samples`` values are available and their variance is
    positive, else the side's *global* variance — the pooled within-example variance
    ``Σ_i Σ_m (φ_mi − μ_i)² / Σ_i (n_i − 1)`` over examples with ≥ 2 values. LiRA (Carlini et
    al. 2022) finds the global variance better with few shadow models; ``fixed_variance=True``
    uses it for every example. Hayes et al.'s reference code is not public; the fit above is
    the LiRA one they describe.
    """
    t = np.asarray(torch.as_tensor(target_conf).detach().cpu(), dtype=np.float64)
    x_in, x_out = _masked(in_conf, "in_conf"), _masked(out_conf, "out_conf")
    e = x_in.shape[1]
    if x_out.shape[1] != e or t.ndim < 1 or t.shape[-1] != e:
        raise ValueError(
            f"example counts differ: target {t.shape}, in {x_in.shape}, out {x_out.shape}"
        )
    mu_in, var_in = _gaussian_fit(x_in, min_samples, fixed_variance, "in_conf")
    mu_out, var_out = _gaussian_fit(x_out, min_samples, fixed_variance, "out_conf")
    with np.errstate(invalid="ignore", divide="ignore"):
        return _gauss_logpdf(t, mu_in, var_in) - _gauss_logpdf(t, mu_out, var_out)


def ulira_scores_reference(
    target_conf: Any, in_conf: Any, out_conf: Any, *, min_samples: int = 4,
    fixed_variance: bool = False,
) -> np.ndarray:
    """Obviously correct, but slow: :func:`ulira_scores` with a Python loop over examples,
    ``np.var(ddof=1)`` and ``scipy.stats.norm.logpdf``."""
    from scipy.stats import norm

    t = np.asarray(torch.as_tensor(target_conf).detach().cpu(), dtype=np.float64)
    sides = [_masked(in_conf, "in_conf"), _masked(out_conf, "out_conf")]
    fits = []
    for x in sides:
        values = [x[:, i][~np.isnan(x[:, i])] for i in range(x.shape[1])]
        ss = sum(float(((v - v.mean()) ** 2).sum()) for v in values if len(v) >= 2)
        dof = sum(len(v) - 1 for v in values if len(v) >= 2)
        pooled = ss / dof if dof else math.nan
        fit = []
        for v in values:
            if len(v) == 0:
                fit.append((math.nan, math.nan))
                continue
            own = float(np.var(v, ddof=1)) if len(v) >= 2 else 0.0
            use_own = len(v) >= max(min_samples, 2) and own > 0 and not fixed_variance
            fit.append((float(v.mean()), own if use_own else pooled))
        fits.append(fit)
    out = np.full(t.shape, np.nan)
    flat_t, flat_out = t.reshape(-1, t.shape[-1]), out.reshape(-1, t.shape[-1])
    for row in range(flat_t.shape[0]):
        for i in range(flat_t.shape[1]):
            (m_in, v_in), (m_out, v_out) = fits[0][i], fits[1][i]
            if math.isnan(flat_t[row, i]) or math.isnan(m_in) or math.isnan(m_out):
                continue
            flat_out[row, i] = (norm.logpdf(flat_t[row, i], m_in, math.sqrt(v_in))
                                - norm.logpdf(flat_t[row, i], m_out, math.sqrt(v_out)))
    return out


def _tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR at ``target`` FPR on the ROC curve: the last operating point with FPR ≤ target,
    linearly interpolated towards the next one (a randomised mix of the two classifiers)."""
    j = int(np.searchsorted(fpr, target, side="right")) - 1
    if j >= len(fpr) - 1:
        return float(tpr[-1])
    frac = (target - fpr[j]) / (fpr[j + 1] - fpr[j])
    return float(tpr[j] + frac * (tpr[j + 1] - tpr[j]))


def ulira_attack(
    scores_forgotten: Any, scores_never_seen: Any, *, balance: bool = True, seed: int = 0,
) -> dict[str, Any]:
    """U-LiRA attack summary: forgotten examples (positives) vs never-seen ones (negatives),
    scored by :func:`ulira_scores`. Returns ``auc`` (``sklearn.metrics.roc_auc_score``; 0.5 =
    ideal unlearning, 1 = every forgotten example detected), ``tpr_at_1pct_fpr`` and
    ``tpr_at_0.1pct_fpr`` (read off ``roc_curve``, interpolated between operating points),
    ``fpr`` / ``tpr`` (the curve), ``n_forgotten`` / ``n_never_seen`` (after balancing).

    Non-finite scores are dropped. ``balance=True`` (Hayes et al. evaluate on balanced sets)
    subsamples the larger side to the size of the smaller one without replacement, with
    ``numpy.random.default_rng(seed)``. TPR at 0.1 % FPR is only resolved with ≥ 1000
    negatives.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    pos = np.asarray(torch.as_tensor(scores_forgotten).detach().cpu(), np.float64).reshape(-1)
    neg = np.asarray(torch.as_tensor(scores_never_seen).detach().cpu(), np.float64).reshape(-1)
    dropped = int((~np.isfinite(pos)).sum() + (~np.isfinite(neg)).sum())
    if dropped:
        log.info("ulira_attack: dropped %d non-finite score(s)", dropped)
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("ulira_attack needs at least one finite score on each side")
    if balance and pos.size != neg.size:
        rng = np.random.default_rng(seed)
        k = min(pos.size, neg.size)
        if pos.size > k:
            pos = pos[np.sort(rng.choice(pos.size, k, replace=False))]
        else:
            neg = neg[np.sort(rng.choice(neg.size, k, replace=False))]
    y = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    s = np.r_[pos, neg]
    fpr, tpr, _ = roc_curve(y, s)
    return {
        "auc": float(roc_auc_score(y, s)),
        "tpr_at_1pct_fpr": _tpr_at_fpr(fpr, tpr, 0.01),
        "tpr_at_0.1pct_fpr": _tpr_at_fpr(fpr, tpr, 0.001),
        "fpr": fpr,
        "tpr": tpr,
        "n_forgotten": int(pos.size),
        "n_never_seen": int(neg.size),
    }


# -------------------------------------------------------------------------------- KLoM


def _margins(x: Any, name: str) -> np.ndarray:
    a = np.asarray(torch.as_tensor(x).detach().cpu(), dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must be [n_models, n_examples], got shape {a.shape}")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN")
    return a


def _klom_edges(u: np.ndarray, r: np.ndarray, bins: int) -> np.ndarray:
    start = np.minimum(u.min(0), r.min(0))
    end = np.maximum(u.max(0), r.max(0))
    end = np.where(start >= end, start + 1, end)
    return np.linspace(start, end, bins + 1, axis=-1)  # [examples, bins + 1]


def _kl_from_counts(cu: np.ndarray, cr: np.ndarray, eps: float) -> np.ndarray:
    """``scipy.stats.entropy(p, q_safe)`` row by row, vectorised: p and q are the count rows
    normalised, ``q_safe = max(q, eps)`` where p > 0, both renormalised, natural log."""
    with np.errstate(invalid="ignore", divide="ignore"):
        p = cu / cu.sum(1, keepdims=True)
        tot_r = cr.sum(1, keepdims=True)
        q = np.where(tot_r > 0, cr / np.where(tot_r > 0, tot_r, 1), 0.0)
        q = np.where(p > 0, np.maximum(q, eps), q)
        p = p / p.sum(1, keepdims=True)
        q = q / q.sum(1, keepdims=True)
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    kl = terms.sum(1)
    return np.where(np.isnan(p).any(1), np.nan, kl)


def klom(
    unlearned_margins: Any, retrained_margins: Any, bins: int = KLOM_BINS,
    clip: float = KLOM_CLIP, eps: float = KLOM_EPS, *, drop_joint_max: bool = False,
) -> np.ndarray:
    """KLoM, "KL divergence of margins" (Georgiev et al., "Attribute-to-delete", ICLR 2025;
    reference ``RoyRin/data-unlearning-bench`` ``src/eval.py`` ``compute_binned_KL_div`` and
    ``kl_from_margins``), per example: ``KL(P_unlearned ‖ P_retrained)`` of the histograms of
    the margin (:func:`margin`) under the unlearned and under the retrained models.

    ``unlearned_margins`` ``[n_u, n_examples]`` and ``retrained_margins`` ``[n_r, n_examples]``
    (model counts may differ). Per example: values clipped to ``±clip``; ``bins`` equal-width
    bins over the joint [min, max] of both samples (``[min, min + 1]`` if all values are
    equal); p, q = bin frequencies; in bins where p > 0, q is raised to at least ``eps``;
    p and q renormalised to sum 1 (``scipy.stats.entropy`` does this in the reference);
    ``KL = Σ_{p>0} p ln(p / q)``. 0 = identical histograms; disjoint samples give about
    ``ln(1/eps) ≈ 11.5``.

    Deviation: the reference bins with ``np.digitize(x, edges)`` and keeps indices 1..bins, so
    every value equal to the joint maximum (at least one per example) falls outside all bins
    and is dropped — e.g. one model per side, margins 0 vs 1, gives KL = 0. Here the last bin
    is closed (as in ``np.histogram``). ``drop_joint_max=True`` reproduces the reference
    exactly (NaN where the unlearned sample is left with no value).
    """
    u, r = _margins(unlearned_margins, "unlearned_margins"), _margins(retrained_margins,
                                                                    "retrained_margins")
    if u.shape[1] != r.shape[1]:
        raise ValueError(f"example counts differ: {u.shape[1]} vs {r.shape[1]}")
    if bins < 1 or not clip > 0 or not eps > 0:
        raise ValueError("bins must be ≥ 1, clip and eps positive")
    u, r = np.clip(u, -clip, clip), np.clip(r, -clip, clip)
    edges = _klom_edges(u, r, bins)
    e = u.shape[1]

    edge_rows = torch.from_numpy(np.ascontiguousarray(edges))

    def counts(x: np.ndarray) -> np.ndarray:
        # np.digitize(x, edges) − 1 = (number of edges ≤ x) − 1, per example
        idx = _count(edge_rows, x.T, right=True).T - 1  # [models, examples] in [0, bins]
        if drop_joint_max:
            keep = idx < bins
        else:
            idx = np.minimum(idx, bins - 1)
            keep = np.ones_like(idx, dtype=bool)
        flat = (np.arange(e)[None, :] * bins + idx)[keep]
        return np.bincount(flat, minlength=e * bins).reshape(e, bins).astype(np.float64)

    return _kl_from_counts(counts(u), counts(r), eps)


def klom_reference(
    unlearned_margins: Any, retrained_margins: Any, bins: int = KLOM_BINS,
    clip: float = KLOM_CLIP, eps: float = KLOM_EPS, *, drop_joint_max: bool = False,
) -> np.ndarray:
    """Obviously correct, but slow: :func:`klom` one example at a time with ``np.linspace``,
    ``np.digitize`` and ``scipy.stats.entropy``, as ``compute_binned_KL_div``."""
    from scipy import stats

    u, r = _margins(unlearned_margins, "unlearned_margins"), _margins(retrained_margins,
                                                                    "retrained_margins")
    out = []
    for i in range(u.shape[1]):
        p_arr, q_arr = np.clip(u[:, i], -clip, clip), np.clip(r[:, i], -clip, clip)
        start = min(p_arr.min(), q_arr.min())
        end = max(p_arr.max(), q_arr.max())
        if start >= end:
            end = start + 1
        edges = np.linspace(start, end, bins + 1)
        p_idx, q_idx = np.digitize(p_arr, edges), np.digitize(q_arr, edges)
        if not drop_joint_max:
            p_idx, q_idx = np.minimum(p_idx, bins), np.minimum(q_idx, bins)
        p_counts = np.array([np.sum(p_idx == k) for k in range(1, bins + 1)])
        q_counts = np.array([np.sum(q_idx == k) for k in range(1, bins + 1)])
        if p_counts.sum() == 0:
            out.append(math.nan)
            continue
        p = p_counts / p_counts.sum()
        q = q_counts / q_counts.sum() if q_counts.sum() > 0 else np.zeros(bins)
        q_safe = np.where(p > 0, np.maximum(q, eps), q)
        out.append(float(stats.entropy(pk=p, qk=q_safe)))
    return np.asarray(out, dtype=np.float64)


def klom_summary(values: Any) -> dict[str, float]:
    """``{"p95", "median", "mean", "n"}`` of per-example KLoM values (NaN ignored) — the paper
    reports the 95th percentile and the median per split (forget / retain / validation)."""
    v = np.asarray(torch.as_tensor(values).detach().cpu(), dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"p95": math.nan, "median": math.nan, "mean": math.nan, "n": 0}
    return {"p95": float(np.percentile(v, 95)), "median": float(np.median(v)),
            "mean": float(v.mean()), "n": int(v.size)}


# ------------------------------------------------------------------ feature-level checks


def _class_ids(part: DataPart, classes: Iterable[str | int] | str | int | None) -> list[int]:
    if classes is None:
        return []
    if isinstance(classes, (str, int)):
        classes = [classes]
    return sorted({part.dataset.class_index(c) for c in classes})


def _pct(hits: Tensor) -> float:
    return 100.0 * float(hits.float().mean()) if hits.numel() else math.nan


def linear_probe(
    model: nn.Module,
    train_part: DataPart,
    eval_part: DataPart,
    *,
    forget_classes: Iterable[str | int] | str | int | None = None,
    epochs: int = 30,
    lr: float = 0.01,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Linear probe on frozen penultimate features: does the representation still encode
    what the output no longer shows? (It catches head-only edits.)

    The penultimate features of ``model`` (:func:`~fastunlearn.evaluate.drift.
    penultimate_features`) on ``train_part`` (retain + forget training samples) are
    standardised with their own mean/std; a fresh linear head (multinomial logistic
    regression, zero-initialised, Adam with ``lr``/``weight_decay``, ``epochs`` passes in
    mini-batches shuffled by a ``torch.Generator`` seeded with ``seed``) is fitted on them and
    scored on ``eval_part`` (held-out samples, standardised with the training statistics).
    Deterministic; the model is not changed.

    Returns percentages: ``accuracy`` (probe, all eval samples), ``per_class`` (NaN for
    classes without eval samples), ``output_accuracy`` (the model's own predictions on the
    same samples) and, when ``forget_classes`` (names or ids) is given,
    ``forget_class_accuracy`` — what the probe recovers on those classes — beside
    ``output_forget_class_accuracy`` and ``retain_class_accuracy``. Compare the forget-class
    accuracy with the retrained model's: a retrained model's features carry less of the
    class; a head-only edit's carry all of it.
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError("epochs and batch_size must be ≥ 1 and lr positive")
    if len(train_part) == 0 or len(eval_part) == 0:
        raise ValueError("linear_probe needs non-empty train and eval parts")
    c = train_part.dataset.num_classes
    ids = _class_ids(train_part, forget_classes)
    x_tr = penultimate_features(model, train_part).double()
    x_ev = penultimate_features(model, eval_part).double()
    mean, std = x_tr.mean(0), x_tr.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    x_tr, x_ev = ((x_tr - mean) / std).float(), ((x_ev - mean) / std).float()
    y_tr, y_ev = train_part.labels, eval_part.labels

    weight = torch.zeros(c, x_tr.shape[1], requires_grad=True)
    bias = torch.zeros(c, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(int(seed))
    n = x_tr.shape[0]
    runner = StepRunner(opt, None, int(epochs) * math.ceil(n / batch_size),
                        desc="linear probe", progress=False, check_finite=False)
    with torch.enable_grad():
        for _ in range(int(epochs)):
            order = torch.randperm(n, generator=g)
            for b in range(0, n, batch_size):
                pos = order[b : b + batch_size]
                runner.step(nn.functional.cross_entropy(x_tr[pos] @ weight.T + bias, y_tr[pos]))
    runner.close()
    with torch.no_grad():
        pred = (x_ev @ weight.T + bias).argmax(1)
    out_pred = predict_logits(model, eval_part).argmax(1)
    hits, out_hits = pred == y_ev, out_pred == y_ev
    result: dict[str, Any] = {
        "accuracy": _pct(hits),
        "per_class": [_pct(hits[y_ev == k]) for k in range(c)],
        "output_accuracy": _pct(out_hits),
        "feature_dim": int(x_tr.shape[1]),
        "n_train": int(n),
        "n_eval": int(len(eval_part)),
    }
    if ids:
        in_forget = torch.isin(y_ev, torch.tensor(ids))
        result["forget_classes"] = ids
        result["forget_class_accuracy"] = _pct(hits[in_forget])
        result["output_forget_class_accuracy"] = _pct(out_hits[in_forget])
        result["retain_class_accuracy"] = _pct(hits[~in_forget])
    return result


def _endless(part: DataPart | None, batch_size: int, g: torch.Generator, device: torch.device
             ) -> Iterator[tuple[Tensor, Tensor]] | None:
    """Shuffled batches of ``part``, epoch after epoch (None for no part)."""
    if part is None or len(part) == 0:
        return None

    def gen() -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            yield from part.batches(batch_size, shuffle=True, generator=g, device=device,
                                    augment=False)

    return gen()


def relearn_time(
    model: nn.Module,
    forget_subset: DataPart,
    *,
    target_acc: float,
    lr: float = 0.01,
    batch_size: int = 32,
    max_steps: int = 200,
    momentum: float = 0.0,
    retain_subset: DataPart | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Relearn time (Golatkar et al. 2020): fine-tune a deep copy of ``model``
    with SGD (``lr``, ``momentum``, cross-entropy, no augmentation) on ``forget_subset`` (a few
    forget samples) and count the optimizer steps until its accuracy on that subset reaches
    ``target_acc`` (percent; typically the original model's accuracy on the same subset).

    The accuracy (eval mode, whole subset) is measured before the first step and after every
    step. Returns ``steps`` (0 when it already reaches the target; ``max_steps + 1`` when it
    never does — a censored value, flagged by ``reached=False``), ``reached``, ``curve``
    (accuracy after 0, 1, …, ``steps`` steps), ``final_acc`` and ``target_acc``. A model whose
    features still hold the forgotten data relearns in fewer steps than the retrained one.

    ``retain_subset`` (optional): each step also trains on a batch of the same size from it,
    so the copy cannot regain the forget accuracy by predicting the forget class for
    everything; the accuracy is still measured on ``forget_subset`` only.

    On a single-class forget subset a *fresh* model relearns fastest (its small logits flip
    to that class in one step), so compare with the retrained model's count, not a fresh one.

    ``model`` is not modified. Shuffling uses a ``torch.Generator`` seeded with ``seed``;
    layers that draw from torch's global generator (dropout) get it seeded inside a
    ``torch.random.fork_rng`` block, so the caller's random state is left as it was.
    """
    if len(forget_subset) == 0:
        raise ValueError("relearn_time needs a non-empty forget subset")
    if max_steps < 0 or batch_size < 1 or not lr > 0:
        raise ValueError("max_steps must be ≥ 0, batch_size ≥ 1 and lr positive")
    device = model_device(model)
    net = copy.deepcopy(model)
    net.requires_grad_(True)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    g = torch.Generator().manual_seed(int(seed))
    g_retain = torch.Generator().manual_seed(int(seed) + 1)
    retain_batches = _endless(retain_subset, batch_size, g_retain, device)
    curve = [accuracy(net, forget_subset)]

    def measure(r: StepRunner) -> str:  # accuracy after every step; stop at the target
        curve.append(accuracy(net, forget_subset))
        return "reached" if curve[-1] >= target_acc else ""

    runner = StepRunner(opt, None, max(1, max_steps), desc="relearn", progress=False,
                        check_finite=False, callbacks=[measure])
    with seeded(int(seed), device), torch.enable_grad():
        while curve[-1] < target_acc and runner.steps < max_steps:
            for x, y in forget_subset.batches(batch_size, shuffle=True, generator=g,
                                              device=device, augment=False):
                if retain_batches is not None:
                    xr, yr = next(retain_batches)
                    x, y = torch.cat([x, xr]), torch.cat([y, yr])
                runner.step(nn.functional.cross_entropy(net(x), y))
                if runner.stopped or runner.steps >= max_steps:
                    break
    runner.close()
    steps = runner.steps
    reached = curve[-1] >= target_acc
    return {
        "steps": steps if reached else max_steps + 1,
        "reached": bool(reached),
        "curve": curve,
        "final_acc": curve[-1],
        "target_acc": float(target_acc),
    }
