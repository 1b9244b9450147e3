"""``auto``: the recipe to call when you do not know which method to call.

``fu.unlearn(model, split)`` (no config) and ``fastunlearn unlearn`` (its default method) run it.
It spends at most ``budget`` (default 5 %) of a retrain's cost and records every choice it
made in ``result.info["auto"]``.

The idea: a retrained model predicts a forgotten example the way a model that never saw it
would — from what the rest of the data teaches. ``auto`` builds a cheap stand-in for such a
model (the *teacher*) and moves only the forget set's outputs to it, keeping everything else
where the original had it:

1. **Teacher.** A copy of the original whose learned spatial filters are scrambled (every
   square conv kernel transposed, the ``ct`` recipe of the NeurIPS 2023 unlearning challenge
   as re-implemented by DeepUnlearn, xcadet/deepunlearn ``munl/unlearning/kgltop5.py``; a
   model without square conv kernels has its weights shrunk and perturbed instead, Ash &
   Adams 2020) and then repaired by a few SGD steps on the retain set only. What the original
   memorised about single examples is lost; what the retain set re-teaches comes back first.
2. **Calibration.** The repaired teacher is less sharp than a fully trained model. Its
   temperature is set so that its mean prediction entropy on the validation split equals the
   original's there (validation images are unseen by both, so the original's entropy on them
   is that of a model on data it never trained on).
3. **Groups.** Each forget example gets a memorisation signal: how much more probability the
   original gives its label than the calibrated teacher does. The same signal on validation
   images (unseen by both models) is the null — the teacher's own shortfall; an example is
   ``memorized`` beyond the null's 99th percentile (and ``high``), ``partial`` beyond its 95th
   (and ``low``), else ``typical``. Memorized and partial examples are moved to the teacher's
   φ. Typical examples already look nearly unseen: a retrain treats them like validation
   images of the same rank, so their φ moves from its quantile among seen retain examples to
   the same quantile of the original's validation φ (never up; with fewer than 200
   validation images they keep the original's outputs). For class forgetting there is no
   teacher: every forget example's target is the original's own prediction with the
   forgotten classes removed (a model trained without a class never predicts it), and the
   whole budget goes to the student.
4. **Student.** The original, fine-tuned for the rest of the budget. Each step pulls a batch
   of the moved examples' LiRA statistic ``φ = log p_y − log(1 − p_y)`` to the teacher's
   (smooth L1; ``target="distribution"``: KL to the teacher's whole softmax instead) and
   holds a retain batch to the original's outputs (``retain_weight`` × KL to the frozen
   original; ``retain_loss="ce"``: cross-entropy on the labels). Half of each retain batch
   comes from the ``at_risk`` least confident of ``at_risk_pool`` sampled retain examples —
   the retained examples a push on the forget set flips first. ``mask_sparsity`` (off by
   default) restricts the updates to the weights whose forget-set gradient is largest
   relative to the retain set's. A validation guard measures the validation accuracy every
   ``check_every`` steps; a drop of more than ``max_val_drop`` points (or two probe images)
   restores the last healthy weights and divides the learning rate by 4, at most
   ``backtracks`` times, then stops.

What the defaults were chosen on (fashion-mnist-10k shadows of the audit's recipe, three of
them, the gold models' φ as the yardstick — never the test split; mean |φ − φ_gold| over
``memorized:5%``, doing nothing 9.87): the KL retain anchor beat cross-entropy (8.97 vs 9.08,
retain accuracy 98.8 vs 97.2 %); without backtracking, student lrs ≥ 0.005 tripped the guard
within 2–6 steps, with it a 0.01 start beat 0.002 (9.02 vs 9.17; class "Coat" 6.9 vs 10.7);
the saliency mask kept retain accuracy (99.6 %) but forgot less (9.3–9.7); mapping the
teacher's φ by quantiles instead of the temperature forgot less (9.31); the seen → unseen map
for typical examples helped (8.78; ``mixed:600`` 5.82 vs 5.92 for doing nothing). Measured
with the audit, N = 32 (docs/methods.md): within 5 % of a retrain ``auto`` beats doing
nothing on both audit scores on ``memorized:5%``, ``random:10%`` and class "Coat", but moves
U-LiRA only from 0.959 to 0.921 on ``memorized:5%`` (ceiling 0.492): at this budget, moving
the memorized examples further costs retain and validation accuracy.

**Budget.** Costs are counted in sample passes (one training sample forward + backward = 1,
an inference-only forward = 1/3), so the choice is deterministic for a seed. A retrain costs
``epochs × |retain|`` passes; ``epochs`` is the original's training epochs — from
``retrain_epochs``, else the history ``fu.train`` left on the model, else 20 (recorded as an
assumption). ``PLAN_FRACTION`` (0.7) × ``budget`` × that is planned, split ``teacher_share`` /
rest between teacher and student (the margin covers what the pass count misses: copies,
probes, small batches).
``result.info["auto"]`` records the source of the retrain cost, the pass budget, each
group's size and treatment, the teacher's steps and temperature, the student's steps and the
validation signals (forget-vs-validation loss AUC and validation accuracy, before and after).
The test set is never read.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn.data.base import DataPart
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.engine.optim import make_sgd
from fastunlearn.engine.rng import seed_everything
from fastunlearn.engine.runner import StepRunner, cycle_batches
from fastunlearn.inference import predict_logits
from fastunlearn.unlearn._losses import check_fraction, check_nonneg, check_positive_int
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split, method_device
from fastunlearn.unlearn.ct import transpose_conv_kernels
from fastunlearn.unlearn.masks import saliency_scores, threshold_scores

__all__ = ["AutoConfig", "auto", "membership_auc"]

log = logging.getLogger(__name__)

#: the original's training epochs assumed when neither the config nor the model says
ASSUMED_EPOCHS = 20
#: an inference-only forward costs about a third of a training step (forward + backward)
FORWARD_COST = 1.0 / 3.0
#: the share of the budget the pass count plans for: copies, probes and small batches cost
#: wall time the pass count misses (measured on fashion-mnist-10k shadows: 0.95 s for a
#: planned 5 %, i.e. 6.7 % of the retrain's 14.1 s, before this margin)
PLAN_FRACTION = 0.7
#: the fewest teacher / student steps that can do anything: on a small problem (digits) 5 % of
#: a retrain is one or two steps, and the run spends these minimums instead (the record's
#: ``budget_fraction_spent`` says how much of a retrain that was)
MIN_TEACHER_STEPS = 10
MIN_STUDENT_STEPS = 5
#: the validation signal's quantiles (the null distribution) under which a forget example
#: counts as typical / partial
NULL_QUANTILES = (0.95, 0.99)
#: the fewest validation images whose quantiles the typical group's map trusts (fewer: the
#: typical examples keep the original's outputs)
MIN_QUANTILE_PROBE = 200
#: the student's learning rate is divided by 1 / BACKTRACK each time the guard trips
BACKTRACK = 0.25


@dataclass
class AutoConfig(UnlearnConfig):
    """``auto``'s knobs; the defaults are the recipe (the module docstring says what each
    step does). ``budget``: the fraction of a retrain's cost it may spend (0.05).
    ``retrain_epochs``: the original's training epochs when the model does not carry its
    history (the CLI and the audit fill it from the checkpoint / the shadow recipe).
    ``teacher_share``: the part of the budget spent repairing the teacher. ``lr`` /
    ``student_lr``: SGD learning rates of teacher and student (momentum, weight decay and
    ``batch_size`` shared). ``low`` / ``high``: the memorisation-signal thresholds of the
    groups. ``max_val_drop``: the validation accuracy (points) the student may lose before the
    guard restores it, checked every ``check_every`` steps on ``probe_size`` validation
    images. ``target``, ``retain_loss``, ``retain_weight``, ``at_risk``, ``at_risk_pool``,
    ``mask_sparsity``: the student's losses and batches."""

    method = "auto"
    epochs: int = 1
    budget: float = 0.05
    retrain_epochs: int | None = None
    teacher_share: float = 0.4
    lr: float = 0.05
    student_lr: float = 0.01
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    low: float = 0.1
    high: float = 0.5
    max_val_drop: float = 1.0
    probe_size: int = 256
    check_every: int = 2
    target: str = "confidence"
    retain_weight: float = 3.0
    at_risk: int = 256
    at_risk_pool: int = 1024
    mask_sparsity: float | None = None
    retain_loss: str = "kl"
    backtracks: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.budget <= 1.0:
            raise ValueError(f"auto: budget must be in (0, 1] (a fraction of a retrain's cost), "
                             f"got {self.budget}")
        if self.retrain_epochs is not None:
            check_positive_int(self.method, "retrain_epochs", self.retrain_epochs)
        check_fraction(self.method, "teacher_share", self.teacher_share)
        check_nonneg(self.method, "student_lr", self.student_lr)
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise ValueError(f"auto: need 0 ≤ low ≤ high ≤ 1, got low={self.low}, "
                             f"high={self.high}")
        check_nonneg(self.method, "max_val_drop", self.max_val_drop)
        check_positive_int(self.method, "probe_size", self.probe_size)
        check_positive_int(self.method, "check_every", self.check_every)
        if self.retain_loss not in ("kl", "ce"):
            raise ValueError(f"auto: retain_loss must be 'kl' or 'ce', got {self.retain_loss!r}")
        if self.mask_sparsity is not None:
            check_fraction(self.method, "mask_sparsity", self.mask_sparsity)
        check_nonneg(self.method, "retain_weight", self.retain_weight)
        if isinstance(self.at_risk, bool) or not isinstance(self.at_risk, int) or \
                self.at_risk < 0:
            raise ValueError(f"auto: at_risk must be an integer ≥ 0, got {self.at_risk!r}")
        check_positive_int(self.method, "at_risk_pool", self.at_risk_pool)
        if isinstance(self.backtracks, bool) or not isinstance(self.backtracks, int) or \
                self.backtracks < 0:
            raise ValueError(f"auto: backtracks must be an integer ≥ 0, got {self.backtracks!r}")
        if self.target not in ("confidence", "distribution"):
            raise ValueError(f"auto: target must be 'confidence' or 'distribution', got "
                             f"{self.target!r}")


def membership_auc(member_loss: Tensor, unseen_loss: Tensor) -> float:
    """AUC of the loss threshold attack that calls low-loss examples members: the probability
    that a random member's loss is below a random unseen example's (ties count half). 0.5:
    the members look unseen; 1: every member is told apart."""
    a = member_loss.double().flatten()
    b = unseen_loss.double().flatten()
    if a.numel() == 0 or b.numel() == 0:
        return float("nan")
    ranks = torch.cat([a, b]).argsort().argsort().double()  # 0-based ranks, ties broken
    # average ranks over ties, so equal losses count half
    allv = torch.cat([a, b])
    uniq, inv = torch.unique(allv, return_inverse=True)
    mean_rank = torch.zeros(len(uniq), dtype=torch.double).index_add_(0, inv, ranks)
    mean_rank /= torch.bincount(inv, minlength=len(uniq)).double()
    r_b = mean_rank[inv[len(a):]].sum().item()
    # U statistic of "unseen loss > member loss"
    u = r_b - len(b) * (len(b) - 1) / 2.0
    return u / (len(a) * len(b))


def logit_confidence(logits: Tensor, labels: Tensor) -> Tensor:
    """LiRA's per-example statistic ``log p_y − log(1 − p_y)`` (stable in logit space)."""
    logits = logits.float()
    true = logits.gather(1, labels[:, None])[:, 0]
    rest = logits.scatter(1, labels[:, None], float("-inf")).logsumexp(1)
    return true - rest


def quantile_map(values: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """Map ``values`` from the distribution of ``source`` onto that of ``target``: each value's
    empirical CDF in ``source`` (linear between order statistics, clamped to [0, 1]) becomes
    the same quantile of ``target`` (``torch.quantile``, linear interpolation)."""
    src = source.double().sort().values
    n = len(src)
    if n == 1:
        return torch.full_like(values, float(torch.quantile(target.double(), 0.5)))
    v = values.double()
    hi = torch.searchsorted(src, v).clamp(1, n - 1)
    lo = hi - 1
    span = (src[hi] - src[lo]).clamp_min(1e-12)
    pos = (lo.double() + ((v - src[lo]) / span).clamp(0, 1)) / (n - 1)
    pos = torch.where(v <= src[0], torch.zeros_like(pos), pos)
    pos = torch.where(v >= src[-1], torch.ones_like(pos), pos)
    return torch.quantile(target.double(), pos).to(values.dtype)


def _losses(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def _entropy(logits: Tensor, temperature: float = 1.0) -> float:
    logp = F.log_softmax(logits / temperature, dim=1)
    return float(-(logp.exp() * logp).sum(1).mean())


def matched_temperature(logits: Tensor, target_entropy: float) -> float:
    """The temperature τ for which ``softmax(logits / τ)`` has mean entropy
    ``target_entropy`` (bisection on log τ; entropy rises with τ)."""
    lo, hi = math.log(0.05), math.log(20.0)
    if _entropy(logits, math.exp(lo)) >= target_entropy:
        return math.exp(lo)
    if _entropy(logits, math.exp(hi)) <= target_entropy:
        return math.exp(hi)
    for _ in range(40):
        mid = (lo + hi) / 2
        if _entropy(logits, math.exp(mid)) < target_entropy:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def forget_specific_masks(model: nn.Module, forget: DataPart, retain: DataPart,
                          sparsity: float) -> dict[str, Tensor]:
    """The weights the forget set's loss depends on far more than the retain set's: the top
    ``1 − sparsity`` of ``|∇ forget| / (|∇ retain| + ε)`` over all weights (ε: 1 % of the
    mean retain gradient magnitude)."""
    gf = saliency_scores(model, forget)
    gr = saliency_scores(model, retain)
    eps = 0.01 * torch.cat([g.flatten() for g in gr.values()]).mean()
    return threshold_scores({k: gf[k] / (gr[k] + eps) for k in gf}, sparsity)


def _retrain_epochs(model: nn.Module, config: AutoConfig) -> tuple[int, str]:
    if config.retrain_epochs is not None:
        return int(config.retrain_epochs), "config.retrain_epochs"
    history = getattr(model, "fastunlearn_history", None)
    epochs = len(getattr(history, "epochs", []) or [])
    if epochs:
        return epochs, "the model's training history"
    return ASSUMED_EPOCHS, f"assumed ({ASSUMED_EPOCHS} epochs: the model carries no history)"


@torch.no_grad()
def _scramble(model: nn.Module, generator: torch.Generator) -> str:
    """Destroy what the weights memorised: transpose square conv kernels, or (no such kernel)
    shrink every weight to 40 % and add 1 % of its scale as noise."""
    done, _ = transpose_conv_kernels(model)
    if done:
        return f"transposed {done} conv kernel(s)"
    for p in model.parameters():
        if p.dim() < 2:
            continue
        noise = torch.randn(p.shape, generator=generator).to(p.device, p.dtype)
        p.mul_(0.4).add_(noise * 0.01 * p.std().clamp_min(1e-8))
    return "shrink-and-perturb (no square conv kernel)"


def _val_acc(model: nn.Module, probe: DataPart) -> float:
    logits = predict_logits(model, probe)
    return 100.0 * float((logits.argmax(1) == probe.labels).float().mean())


def _repaired_teacher(model: nn.Module, retain: DataPart, steps: int, config: AutoConfig,
                      gen: torch.Generator, device: torch.device) -> tuple[nn.Module, str]:
    """A scrambled copy of ``model`` repaired by ``steps`` SGD steps on the retain set."""
    teacher = copy.deepcopy(model)
    scramble = _scramble(teacher, gen)
    opt = torch.optim.SGD(teacher.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    runner = StepRunner(opt, config.lr, steps, schedule="cosine",
                        warmup_steps=max(1, steps // 10), desc="auto teacher",
                        progress=config.progress, compile=config.compile)
    teacher.train()
    stream = cycle_batches(retain, config.batch_size, gen, device)
    for _ in range(steps):
        x, y = next(stream)
        runner.step(F.cross_entropy(runner.net(teacher, x)(x), y))
        if runner.stopped:
            break
    runner.close()
    return teacher.eval(), scramble


@register_method(AutoConfig)
def auto(model: nn.Module, split: ForgetSplit, config: AutoConfig) -> UnlearnResult:
    """Teacher-distilled forgetting within a budget (see the module docstring)."""
    check_split(split, "auto")
    device = method_device(model, config)
    gen = seed_everything(config.seed)
    val = split.val_retain if split.kind == "class" else split.val
    if len(val) == 0:
        raise ValueError("auto needs a validation split (split.val is empty); build the split "
                         "with a validation hold-out (ForgetSplit.with_val)")
    probe = val.take(config.probe_size, seed=config.seed)
    forget, retain = split.forget, split.retain
    b = config.batch_size

    # the budget in sample passes
    epochs, source = _retrain_epochs(model, config)
    retrain_passes = epochs * len(retain)
    budget = PLAN_FRACTION * config.budget * retrain_passes
    spent = 0.0

    # validation signals of the original (forget and probe forwards)
    orig_f = predict_logits(model, forget, device=device)
    orig_v = predict_logits(model, probe, device=device)
    spent += FORWARD_COST * (len(forget) + len(probe))
    val_loss = _losses(orig_v, probe.labels)
    auc_before = membership_auc(_losses(orig_f, forget.labels), val_loss)
    val_before = 100.0 * float((orig_v.argmax(1) == probe.labels).float().mean())
    # a sample of the retain set, seen in training: its φ against the validation φ is the
    # original's generalisation gap, and its least confident examples are the ones at risk
    seen = retain.take(min(len(retain), config.at_risk_pool), seed=config.seed + 1)
    orig_s = predict_logits(model, seen, device=device)
    spent += FORWARD_COST * len(seen)
    phi_seen = logit_confidence(orig_s, seen.labels)

    y_f = forget.labels
    phi_orig = logit_confidence(orig_f, y_f)
    if split.kind == "class":
        # a model trained without the class never predicts it: the target is the original's
        # own prediction over the remaining classes (no teacher needed, the whole budget goes
        # to the student)
        teacher_steps, scramble, tau, teacher_val_acc = 0, "none (class forgetting)", 1.0, None
        thresholds, raised = None, False
        gone = torch.tensor(split.forget_class_ids, dtype=torch.long)
        target = F.softmax(orig_f.index_fill(1, gone, float("-inf")), 1)
        tphi = torch.full_like(phi_orig, float("-inf"))
        signal = torch.sigmoid(phi_orig)
        groups = {"class": torch.ones_like(signal, dtype=torch.bool)}
        treat = {"class": "the original's prediction without the class"}
        push = torch.ones_like(signal, dtype=torch.bool)
        loss_kind = "distribution"
    else:
        # 1. the teacher: scrambled, repaired on the retain set; calibration and the
        # student's targets cost forwards over probe and forget
        reserve = FORWARD_COST * (len(probe) + len(forget))
        affordable = int((config.teacher_share * budget - reserve) // b)
        raised = affordable < MIN_TEACHER_STEPS
        teacher_steps = max(MIN_TEACHER_STEPS, affordable)
        teacher, scramble = _repaired_teacher(model, retain, teacher_steps, config, gen, device)
        spent += teacher_steps * b + reserve
        # 2. calibration: the teacher's validation entropy matched to the original's
        teach_v = predict_logits(teacher, probe, device=device)
        teach_f = predict_logits(teacher, forget, device=device)
        del teacher
        tau = matched_temperature(teach_v, _entropy(orig_v))
        teacher_val_acc = round(
            100.0 * float((teach_v.argmax(1) == probe.labels).float().mean()), 2)
        # 3. groups by the memorisation signal: the probability of the label the original
        # gives above the calibrated teacher's
        tphi = logit_confidence(teach_f / tau, y_f)
        signal = torch.sigmoid(phi_orig) - torch.sigmoid(tphi)
        # validation images are unseen by both models: their signal is the teacher's own
        # shortfall, the null distribution; a forget example counts as memorised only
        # beyond it
        null = (torch.sigmoid(logit_confidence(orig_v, probe.labels))
                - torch.sigmoid(logit_confidence(teach_v / tau, probe.labels)))
        t_low = max(config.low, float(torch.quantile(null.double(), NULL_QUANTILES[0])))
        t_high = max(config.high, float(torch.quantile(null.double(), NULL_QUANTILES[1])), t_low)
        thresholds = {"low": round(t_low, 4), "high": round(t_high, 4)}
        high = signal >= t_high
        low = signal < t_low
        groups = {"memorized": high, "partial": ~high & ~low, "typical": low}
        treat = {"memorized": "move to the teacher", "partial": "move to the teacher",
                 "typical": "keep the original's outputs"}
        push = ~low
        if len(probe) >= MIN_QUANTILE_PROBE:
            # typical examples: a retrain treats them like validation images of the same
            # rank, so their φ moves from its quantile among seen retain examples to the
            # same quantile of the validation images (never up)
            unseen = quantile_map(phi_orig, phi_seen, logit_confidence(orig_v, probe.labels))
            tphi = torch.where(low, torch.minimum(unseen, phi_orig), tphi)
            treat["typical"] = "seen → unseen level of the original (quantile map)"
            push = torch.ones_like(low)
        target = F.softmax(teach_f / tau, 1)
        loss_kind = config.target

    # 4. the student: the original, forget outputs moved to the targets, retain kept
    student_budget = max(0.0, budget - spent)
    nf = int(push.sum())
    fb = min(b, max(1, nf))
    per_step = fb + b + FORWARD_COST * len(probe) / config.check_every
    if config.retain_loss == "kl":
        per_step += FORWARD_COST * b
    # fixed costs first: the at-risk search (at most a quarter of the student's budget) and
    # the saliency mask
    n_mask_retain = min(len(retain), nf + b)
    fixed = nf + n_mask_retain if config.mask_sparsity else 0
    affordable = int(max(0.0, student_budget - fixed) // per_step)
    raised = raised or bool(nf and affordable < MIN_STUDENT_STEPS)
    student_steps = max(MIN_STUDENT_STEPS, affordable) if nf else 0
    stop_reason = "" if nf else "no forget example needs a change"
    info_student: dict[str, Any] = {"steps": 0}
    if student_steps > 0:
        push_idx = torch.nonzero(push).flatten()
        fpart = forget.subset(push_idx, name="auto_push")
        ftarget = target[push_idx].to(device)
        fy = y_f[push_idx].to(device)
        fphi = tphi[push_idx].to(device)
        spent += fixed
        masks = None
        if config.mask_sparsity:
            masks = forget_specific_masks(model, fpart, retain.take(n_mask_retain,
                                                                     seed=config.seed + 2),
                                          config.mask_sparsity)
        opt = make_sgd(model, config.student_lr, momentum=config.momentum,
                       weight_decay=config.weight_decay, masks=masks)
        runner = StepRunner(opt, config.student_lr, student_steps, schedule="cosine",
                            desc="auto student", progress=config.progress,
                            compile=config.compile)
        lrs = [config.student_lr]  # the guard's backtracking: each trip divides it by 4
        frozen = copy.deepcopy(model).eval() if config.retain_loss == "kl" else None
        # a small validation split cannot resolve 1 point: allow at least two probe images
        floor = val_before - max(config.max_val_drop, 200.0 / len(probe))
        good = copy.deepcopy(model.state_dict())
        rstream = cycle_batches(retain, b, gen, device)
        if config.at_risk:
            # the retained examples a push on the forget set flips first: the least confident
            # of the retain sample (the original's own margins)
            worst = phi_seen.argsort()[: config.at_risk]
            risk = seen.subset(worst, name="auto_at_risk")
            rstream_risk = cycle_batches(risk, b // 2, gen, device)
            rstream_rand = cycle_batches(retain, b - b // 2, gen, device)

            def _mixed() -> Any:
                while True:
                    xa, ya = next(rstream_risk)
                    xb, yb = next(rstream_rand)
                    yield torch.cat([xa, xb]), torch.cat([ya, yb])
            rstream = _mixed()
        model.train()
        steps = 0
        where: list[Tensor] = []
        while steps < student_steps and not stop_reason:
            for xf, _ in fpart.batches(fb, shuffle=True, generator=gen, device=device,
                                       augment=False, positions=where.append):
                pos = where.pop().to(device)
                xr, yr = next(rstream)
                out_f = runner.net(model, xf)(xf)
                if loss_kind == "distribution":
                    loss = F.kl_div(F.log_softmax(out_f, 1), ftarget[pos], reduction="batchmean")
                else:
                    loss = F.smooth_l1_loss(logit_confidence(out_f, fy[pos]), fphi[pos])
                out_r = runner.net(model, xr)(xr)
                if config.retain_loss == "kl":
                    with torch.no_grad():
                        ref = frozen(xr)
                    r_loss = F.kl_div(F.log_softmax(out_r, 1), F.log_softmax(ref, 1),
                                      reduction="batchmean", log_target=True)
                else:
                    r_loss = F.cross_entropy(out_r, yr)
                loss = loss + config.retain_weight * r_loss
                runner.step(loss)
                steps += 1
                if runner.stopped:
                    stop_reason = runner.stop_reason
                    break
                if steps % config.check_every == 0 or steps == student_steps:
                    acc = _val_acc(model, probe)
                    model.train()
                    if acc < floor:
                        model.load_state_dict(good)
                        opt.state.clear()  # no momentum from the step that overshot
                        if len(lrs) > config.backtracks:
                            stop_reason = (f"validation accuracy fell to {acc:.1f} % (< "
                                           f"{floor:.1f} %) at every lr; restored the last "
                                           "healthy weights")
                            break
                        lrs.append(lrs[-1] * BACKTRACK)
                        runner.scheduler.base_lrs = [lrs[-1]] * len(opt.param_groups)
                        continue
                    good = copy.deepcopy(model.state_dict())
                if steps >= student_steps:
                    break
        runner.close()
        info_student = {"steps": steps, "lr_tried": [round(v, 6) for v in lrs]}
        spent += steps * per_step
    model.eval()

    # signals after (one more forward over forget and probe: not counted in the budget)
    new_f = predict_logits(model, forget, device=device)
    new_v = predict_logits(model, probe, device=device)
    auc_after = membership_auc(_losses(new_f, y_f), _losses(new_v, probe.labels))
    val_after = 100.0 * float((new_v.argmax(1) == probe.labels).float().mean())
    record = {
        "retrain_epochs": epochs, "retrain_cost_source": source, "minimum_steps": raised,
        "budget": config.budget, "budget_passes": round(budget, 1),
        "spent_passes": round(spent, 1),
        "teacher": {"scramble": scramble, "steps": teacher_steps, "lr": config.lr,
                    "temperature": round(tau, 4), "val_acc": teacher_val_acc},
        "loss": ("KL to the target distribution" if loss_kind == "distribution"
                 else "smooth L1 on φ"),
        "thresholds": thresholds,
        "groups": {name: {"size": int(mask.sum()), "treatment": treat[name],
                          "mean_signal": (round(float(signal[mask].mean()), 4)
                                          if mask.any() else None)}
                   for name, mask in groups.items()},
        "student": {"lr": config.student_lr, "planned_steps": student_steps,
                    **info_student, "stop_reason": stop_reason or "budget spent"},
        "signals": {"forget_val_auc_before": round(auc_before, 4),
                    "forget_val_auc_after": round(auc_after, 4),
                    "val_acc_before": round(val_before, 2), "val_acc_after": round(val_after, 2)},
    }
    info: dict[str, Any] = {
        "auto": record, "steps": teacher_steps + info_student["steps"],
        "budget_fraction_spent": round(spent / retrain_passes, 4),
        "stop_reason": record["student"]["stop_reason"],
    }
    return UnlearnResult(model, "auto", config, info=info)
