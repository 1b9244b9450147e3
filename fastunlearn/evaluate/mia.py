"""Membership inference: the SalUn / Sparse-Unlearning "MIA-Efficacy" and a
loss-threshold attack.

MIA-Efficacy: an attack classifier is fitted on *member* = retain-train samples vs
*non-member* = test samples, each described by one feature of the model's softmax output
(:data:`FEATURES`). MIA-Efficacy is the percentage of **forget** samples the attack calls
non-member: 100 % means the model treats the forget set like data it never saw. Two attack
classifiers are fitted per feature: scikit-learn ``SVC(C=3, gamma="auto", kernel="rbf")`` on the
raw feature, exactly as the SalUn code does, and a logistic regression on the standardised
feature. The headline ``mia_efficacy`` is the SVC on ``true_prob`` — the feature SalUn's code
calls "confidence" (``gather(prob, 1, label)``). Members and non-members are subsampled to the
same size (at most ``max_samples`` each, seeded) so the attack sees balanced classes and
evaluation of large datasets stays fast. Near chance the fitted boundary moves with the
subsample, so the headline is averaged over several attack seeds (each a fresh balanced
subsample): :func:`efficacy_over_seeds`.

Which test samples are non-members is the caller's choice; the SalUn reference code
(OPTML-Group/Unlearn-Saliency ``dataset.py``) removes the forgotten classes from the test set
for class forgetting, so its non-members are the test images of the retained classes
(:class:`fastunlearn.evaluate.core.EvalConfig` ``mia_nonmembers``).

Features (``p`` = softmax output, ``y`` = true label):

- ``confidence``: ``max_i p_i``;
- ``entropy``: ``−Σ_i p_i log p_i``;
- ``m_entropy`` (Song & Mittal 2021): ``−(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i)``. The
  wrong classes use ``log(1 − p_i)``; the OPTML-Group code uses ``log p_i`` there, which
  makes it an ordinary label-weighted entropy;
- ``true_prob``: ``p_y``.

The loss attack scores each sample by ``−loss`` and reports the ROC AUC of separating the
forget set (positives) from held-out samples (negatives): 0.5 = indistinguishable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

FEATURES = ("confidence", "entropy", "m_entropy", "true_prob")
ATTACKS = ("svc", "lr")
HEADLINE_ATTACK = ("svc", "true_prob")
_TINY = 1e-30  # log clamp, as in the reference implementations


def m_entropy(probs: Tensor, labels: Tensor) -> Tensor:
    """Modified entropy per sample, ``−(1−p_y) log p_y − Σ_{i≠y} p_i log(1−p_i)`` (float64)."""
    p = probs.detach().to(torch.float64)
    y = labels.to(p.device).long().view(-1, 1)
    log_p = p.clamp_min(_TINY).log()
    log_1mp = (1.0 - p).clamp_min(_TINY).log()
    onehot = torch.zeros_like(p, dtype=torch.bool).scatter_(1, y, True)
    # true class: (1 − p_y)·log p_y ; wrong classes: p_i·log(1 − p_i)
    terms = torch.where(onehot, (1.0 - p) * log_p, p * log_1mp)
    return -terms.sum(1)


def mia_features(probs: Tensor, labels: Tensor) -> dict[str, np.ndarray]:
    """The four attack features of each sample, as float64 numpy arrays ``[N]``."""
    p = probs.detach().to(torch.float64)
    y = labels.long().view(-1, 1)
    ent = -torch.special.xlogy(p, p).sum(1)
    return {
        "confidence": p.max(1).values.numpy(),
        "entropy": ent.numpy(),
        "m_entropy": m_entropy(p, labels).numpy(),
        "true_prob": p.gather(1, y).squeeze(1).numpy(),
    }


def _make_attack(kind: str, seed: int):  # noqa: ANN202 - sklearn estimator
    if kind == "svc":
        from sklearn.svm import SVC

        return SVC(C=3, gamma="auto", kernel="rbf")
    if kind == "lr":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(random_state=seed))
    raise ValueError(f"unknown attack {kind!r}; choose one of: {', '.join(ATTACKS)}")


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


@dataclass
class AttackResult:
    """``efficacy``: % of targets predicted non-member by the attack fitted on all shadow data;
    ``attack_acc``: balanced held-out accuracy (%) of the same attack fitted on one half of
    the shadow data and tested on the other half (50 % = no better than chance)."""

    efficacy: float
    attack_acc: float


def attack_efficacy(
    members: np.ndarray,
    nonmembers: np.ndarray,
    targets: np.ndarray,
    *,
    attack: str = "svc",
    seed: int = 0,
) -> AttackResult:
    """Fit ``attack`` on member (label 1) vs non-member (label 0) features and report the
    percentage of ``targets`` predicted non-member, plus the attack's held-out accuracy."""
    xm, xn, xt = _as_2d(members), _as_2d(nonmembers), _as_2d(targets)
    _check_inputs(xm, xn, xt)
    x = np.concatenate([xm, xn])
    y = np.concatenate([np.ones(len(xm)), np.zeros(len(xn))])
    # held-out accuracy: fit on a seeded half (stratified), score on the other half
    rng = np.random.default_rng(seed)
    train_mask = np.zeros(len(x), dtype=bool)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        train_mask[rng.permutation(idx)[: len(idx) // 2]] = True
    half = _make_attack(attack, seed).fit(x[train_mask], y[train_mask])
    pred = half.predict(x[~train_mask])
    yt = y[~train_mask]
    acc = 50.0 * ((pred[yt == 1] == 1).mean() + (pred[yt == 0] == 0).mean())
    eff = _fit_efficacy(xm, xn, xt, attack, seed)
    return AttackResult(efficacy=eff, attack_acc=float(acc))


def _check_inputs(xm: np.ndarray, xn: np.ndarray, xt: np.ndarray) -> None:
    if len(xm) < 2 or len(xn) < 2:
        raise ValueError(
            f"the attack needs at least 2 members and 2 non-members, got {len(xm)} and {len(xn)}"
        )
    if not all(np.isfinite(a).all() for a in (xm, xn, xt)):
        raise ValueError(
            "membership-inference features are not finite: the model outputs NaN/inf "
            "(did unlearning diverge?); evaluate with mia=False to see the other metrics"
        )


def _fit_efficacy(xm: np.ndarray, xn: np.ndarray, xt: np.ndarray, attack: str,
                  seed: int) -> float:
    """% of targets ``xt`` the attack fitted on all of ``xm`` (1) vs ``xn`` (0) calls 0."""
    x = np.concatenate([xm, xn])
    y = np.concatenate([np.ones(len(xm)), np.zeros(len(xn))])
    full = _make_attack(attack, seed).fit(x, y)
    return 100.0 * float((full.predict(xt) == 0).mean()) if len(xt) else float("nan")


def balanced_sample(n_a: int, n_b: int, max_samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded positions ``(ia, ib)`` drawing ``k = min(n_a, n_b, max_samples)`` from each set."""
    k = min(n_a, n_b, max_samples)
    g = torch.Generator().manual_seed(seed)
    ia = torch.randperm(n_a, generator=g)[:k].sort().values
    ib = torch.randperm(n_b, generator=g)[:k].sort().values
    return ia, ib


def mia_efficacy(
    member_probs: Tensor,
    member_labels: Tensor,
    nonmember_probs: Tensor,
    nonmember_labels: Tensor,
    target_probs: Tensor,
    target_labels: Tensor,
    *,
    max_samples: int = 2000,
    seed: int = 0,
    attacks: tuple[str, ...] = ATTACKS,
    features: tuple[str, ...] = FEATURES,
) -> dict[str, dict[str, AttackResult]]:
    """``{attack: {feature: AttackResult}}`` for member = retain, non-member = test, target =
    forget. Members and non-members are subsampled to the same size (≤ ``max_samples``);
    every target sample is scored."""
    if max_samples < 2:
        raise ValueError(f"max_samples must be at least 2, got {max_samples}")
    bad = sorted(set(features) - set(FEATURES))
    if bad:
        raise ValueError(f"unknown MIA feature {bad[0]!r}; choose from: {', '.join(FEATURES)}")
    im, inn = balanced_sample(len(member_labels), len(nonmember_labels), max_samples, seed)
    fm = mia_features(member_probs[im], member_labels[im])
    fn = mia_features(nonmember_probs[inn], nonmember_labels[inn])
    ft = mia_features(target_probs, target_labels)
    return {
        a: {f: attack_efficacy(fm[f], fn[f], ft[f], attack=a, seed=seed) for f in features}
        for a in attacks
    }


def efficacy_over_seeds(
    member_probs: Tensor,
    member_labels: Tensor,
    nonmember_probs: Tensor,
    nonmember_labels: Tensor,
    target_probs: Tensor,
    target_labels: Tensor,
    *,
    seeds: Sequence[int],
    max_samples: int = 2000,
    attack: str = "svc",
    feature: str = "true_prob",
) -> list[float]:
    """MIA-Efficacy of one ``attack`` on one ``feature`` once per seed: each seed draws its own
    balanced member/non-member subsample (:func:`balanced_sample`, as :func:`mia_efficacy`
    does for that seed) and fits the attack on all of it. The value for a seed equals
    ``mia_efficacy(..., seed=s)[attack][feature].efficacy``; the held-out attack accuracy is
    not refitted. Report the mean and the spread: near chance one seed is not a measurement."""
    if feature not in FEATURES:
        raise ValueError(f"unknown MIA feature {feature!r}; choose from: {', '.join(FEATURES)}")
    fm = _as_2d(mia_features(member_probs, member_labels)[feature])
    fn = _as_2d(mia_features(nonmember_probs, nonmember_labels)[feature])
    ft = _as_2d(mia_features(target_probs, target_labels)[feature])
    out = []
    for seed in seeds:
        im, inn = balanced_sample(len(fm), len(fn), max_samples, int(seed))
        xm, xn = fm[im.numpy()], fn[inn.numpy()]
        _check_inputs(xm, xn, ft)
        out.append(_fit_efficacy(xm, xn, ft, attack, int(seed)))
    return out


def per_sample_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of each sample (float64, nats)."""
    logp = torch.log_softmax(logits.detach().to(torch.float64), 1)
    return -logp.gather(1, labels.long().view(-1, 1)).squeeze(1)


def loss_attack_auc(target_loss: Tensor, heldout_loss: Tensor) -> float:
    """ROC AUC of the threshold attack "low loss ⇒ member": P(loss_target < loss_heldout)
    + ½ P(tie). 0.5 = the targets look like held-out data; 1.0 = all look like members."""
    from sklearn.metrics import roc_auc_score

    if len(target_loss) == 0 or len(heldout_loss) == 0:
        return float("nan")
    scores = -torch.cat([target_loss, heldout_loss]).double().numpy()
    y = np.concatenate([np.ones(len(target_loss)), np.zeros(len(heldout_loss))])
    return float(roc_auc_score(y, scores))
