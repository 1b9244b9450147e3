"""Pieces shared by several unlearning methods: losses (distillation KL, KL to uniform, the
two-stage contrastive push), random wrong labels, batch streams and a small step loop with a
learning-rate schedule and a progress bar. Private: not a method module."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from fastunlearn._device import model_device
from fastunlearn.data.base import DataPart
from fastunlearn.kernels.compile import CompiledForward, check_compile_mode, compiled_forward
from fastunlearn.train import lr_factor

_SCHEDULES = ("cosine", "constant")

log = logging.getLogger(__name__)


def check_schedule(method: str, schedule: str) -> None:
    if schedule not in _SCHEDULES:
        raise ValueError(f"{method}: schedule must be one of {_SCHEDULES}, got {schedule!r}")


def check_fraction(method: str, name: str, value: float, *, closed: bool = False) -> None:
    """ValueError unless ``value`` is in (0, 1) — or [0, 1] when ``closed``."""
    ok = 0 <= value <= 1 if closed else 0 < value < 1
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{method}: {name} must be in {interval}, got {value!r}")


def check_nonneg(method: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{method}: {name} must be ≥ 0, got {value!r}")


def check_positive_int(
    method: str, name: str, value: int | None, *, allow_none: bool = False
) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{method}: {name} must be a positive integer, got {value!r}")


def kl_to_uniform(logits: Tensor) -> Tensor:
    """``KL(u ‖ softmax(logits))`` averaged over the batch (u uniform over the classes)."""
    logp = F.log_softmax(logits.float(), dim=1)
    c = logits.shape[1]
    return (-math.log(c) - logp.mean(dim=1)).mean()


def distill_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Knowledge-distillation loss ``T² · KL(p_T(teacher) ‖ p_T(student))``, batch mean (the
    ``DistillKL`` of SCRUB and Hinton et al.)."""
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    p_t = F.softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_s, p_t, reduction="batchmean") * (t * t)


def kl_to_probs(student_logits: Tensor, target_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(target ‖ p_T(student))``, batch mean (``target_probs`` rows sum to 1)."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_s, target_probs.float(), reduction="batchmean")


def contrastive_push(out_f: Tensor, out_r: Tensor, temperature: float = 1.15) -> Tensor:
    """The two-stage seed's contrastive term ``mean_{i,j} −log softmax_j(z_f,i · z_r,jᵀ / τ)``
    over forget outputs ``out_f`` [m, C] against (detached) retain outputs ``out_r`` [n, C]."""
    sim = out_f.float() @ out_r.detach().float().T / temperature
    return -F.log_softmax(sim, dim=1).mean()


def random_wrong_labels(y: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """A uniformly random label different from ``y`` for each sample (on ``y``'s device)."""
    if num_classes < 2:
        raise ValueError("random labels need at least 2 classes")
    shift = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)
    return (y + shift) % num_classes


def relabelled(part: DataPart, labels: Tensor, name: str = "") -> DataPart:
    """A view of ``part`` whose samples carry ``labels`` instead of their own."""
    if labels.shape != part.labels.shape:
        raise ValueError("relabelled: one label per sample is needed")
    return DataPart(part.dataset, part.part, part.indices, name or part.name, _labels=labels.cpu())


def concat_parts(a: DataPart, b: DataPart, name: str = "") -> DataPart:
    """The samples (and labels) of two views of the same dataset part, one after the other."""
    if a.dataset is not b.dataset or a.part != b.part:
        raise ValueError("concat_parts: both views must come from the same dataset part")
    return DataPart(
        a.dataset, a.part, torch.cat([a.indices, b.indices]), name or f"{a.name}+{b.name}",
        _labels=torch.cat([a.labels, b.labels]),
    )


def sample_part(part: DataPart, n: int | None, generator: torch.Generator) -> DataPart:
    """A random subset of ``n`` samples drawn with ``generator`` (the whole part for None)."""
    if n is None or n >= len(part):
        return part
    pos = torch.randperm(len(part), generator=generator)[:n].sort().values
    return DataPart(part.dataset, part.part, part.indices[pos], part.name, _labels=part.labels[pos])


def cycle_batches(
    part: DataPart, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless shuffled batches of ``part`` (a new permutation every pass)."""
    if len(part) == 0:
        raise ValueError(f"cannot draw batches from the empty part {part.name!r}")
    while True:
        yield from part.batches(batch_size, shuffle=True, generator=generator, device=device)


def random_init_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with freshly initialised weights (every submodule that has
    ``reset_parameters``), drawn on the CPU from ``seed`` — the same network on every device
    — then moved to the model's device; the global RNG state is left untouched."""
    device = model_device(model)
    fresh = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in fresh.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh.to(device)


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode, gradient-free copy (a teacher)."""
    t = copy.deepcopy(model).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


class StepRunner:
    """Counts optimisation steps over a known total, sets the learning rate of ``opt`` from
    the schedule before each step, and shows a tqdm bar (disabled when ``progress`` is False).

    ``runner.step(loss)`` does zero_grad → backward → (optional grad clipping) → step and
    returns False when the loss is not finite (nothing is updated then).

    ``compile`` (True / False / ``"auto"``, the config's ``compile``): ``runner.net(model, x)``
    returns the module to run the batch ``x`` through — ``torch.compile(model)`` for batches
    shaped like the first one seen when compiling is on (resolved once per model, on that
    first batch, so the compile time counts in the method's cold RTE), ``model`` otherwise.
    Loops write ``out = runner.net(model, x)(x)`` instead of ``out = model(x)``.
    """

    def __init__(
        self,
        opt: torch.optim.Optimizer,
        lr: float,
        total_steps: int,
        *,
        schedule: str = "constant",
        desc: str = "",
        progress: bool = True,
        clip_grad: float | None = None,
        compile: bool | str = False,
    ) -> None:
        self.opt, self.lr, self.total, self.schedule = opt, lr, max(1, total_steps), schedule
        self.clip_grad = clip_grad
        self.compile = check_compile_mode(compile, desc or "StepRunner")
        self._forwards: dict[int, CompiledForward] = {}
        self.steps = 0
        self.bar = tqdm(total=total_steps, desc=desc, disable=not progress, leave=False)

    def net(self, model: nn.Module, x: Tensor) -> nn.Module:
        """The module to run ``x`` through: compiled or ``model`` itself (see the class)."""
        if self.compile is False:
            return model
        fwd = self._forwards.get(id(model))
        if fwd is None or fwd.model is not model:
            fwd = self._forwards[id(model)] = compiled_forward(
                model, x, self.compile, x.device, expected_steps=self.total - self.steps
            )
        return fwd.module_for(x)

    def step(self, loss: Tensor) -> bool:
        if not torch.isfinite(loss):
            return False
        for group in self.opt.param_groups:
            group["lr"] = self.lr * lr_factor(self.steps, self.total, 0, self.schedule)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad is not None:
            params = [p for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        self.opt.step()
        self.steps += 1
        self.bar.update(1)
        return True

    def close(self) -> None:
        self.bar.close()
        self._forwards.clear()


def run_epochs(
    model: nn.Module,
    part: DataPart,
    loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor],
    runner: StepRunner,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> bool:
    """``epochs`` shuffled passes over ``part``, one ``runner.step(loss_fn(net, x, y))`` per
    batch, model in train mode; ``net`` is ``model`` or, with the runner's ``compile``, its
    compiled forward (same parameters). Returns False (and stops) if a loss was not finite."""
    model.train()
    for _ in range(epochs):
        for x, y in part.batches(batch_size, shuffle=True, generator=generator, device=device):
            if not runner.step(loss_fn(runner.net(model, x), x, y)):
                return False
    return True


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


class ForgetGuard:
    """Early stop and divergence guard for methods that ascend a loss on the forget set
    (the ``ga`` rules, reusable): every check measures accuracy on a fixed retain probe and
    a fixed forget probe (``probe_size`` samples each, seeded).

    ``check(model)`` returns ``""`` to go on, ``"retain accuracy collapsed …"`` when the retain
    probe falls below ``collapse_fraction`` × its starting value (call :meth:`restore` to go
    back to the last healthy weights), or ``"forget accuracy reached target …"`` once the
    forget probe is at or below ``target`` — ``"auto"``: 5 % for class forgetting, the
    accuracy a validation probe (``split.val_retain``) gets for sample forgetting; None: never.
    """

    def __init__(
        self,
        model: nn.Module,
        split,  # noqa: ANN001 - ForgetSplit (kept import-light)
        *,
        probe_size: int,
        seed: int,
        collapse_fraction: float,
        target: float | str | None,
    ) -> None:
        from fastunlearn.inference import accuracy

        self._accuracy = accuracy
        self.retain_probe = split.retain.take(probe_size, seed=seed)
        self.forget_probe = split.forget.take(probe_size, seed=seed)
        self.retain_start = accuracy(model, self.retain_probe)
        self.floor = collapse_fraction * self.retain_start
        if target == "auto":
            target = 5.0 if split.kind == "class" else accuracy(
                model, split.val_retain.take(probe_size, seed=seed)
            )
        self.target = target
        self.good_state = copy.deepcopy(model.state_dict())

    def check(self, model: nn.Module) -> str:
        r = self._accuracy(model, self.retain_probe)  # restores every submodule's own mode
        reason = ""
        if not r >= self.floor:
            reason = f"retain accuracy collapsed ({r:.1f} % < {self.floor:.1f} %)"
        else:
            self.good_state = copy.deepcopy(model.state_dict())
            if self.target is not None:
                f = self._accuracy(model, self.forget_probe)
                if f <= self.target:
                    reason = f"forget accuracy reached target ({f:.1f} % ≤ {self.target:.1f} %)"
        return reason

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.good_state)


#: a method "collapsed" the retained classes when their validation accuracy kept less than
#: this share of its margin over chance (e.g. 95 % → below 53 % with 10 classes)
COLLAPSE_SHARE = 0.5
#: no collapse check when the model starts within this many points of chance
_MIN_MARGIN = 10.0


class RetainHealth:
    """The validation guard every method shares (run by :func:`fastunlearn.unlearn.unlearn`
    around the method, outside its timing): accuracy on a fixed probe of ``split.val_retain``
    — the validation hold-out's retained classes, never the test part — before and after.

    ``check(model)`` → ``info`` entries ``val_retain_acc_before``, ``val_retain_acc_after``
    and ``retain_collapsed``: True when the retained classes fell toward chance (kept less than
    :data:`COLLAPSE_SHARE` of the margin over chance, ``100 / retained classes``), which is
    also logged as a warning — e.g. ``ft``/``rl`` at an absurd learning rate.
    ``measure`` returns None when the split has no validation part (nothing is checked).
    """

    def __init__(self, probe: DataPart, chance: float, before: float) -> None:
        self.probe, self.chance, self.before = probe, chance, before

    @classmethod
    def measure(cls, model: nn.Module, split, *, probe_size: int = 256,  # noqa: ANN001
                seed: int = 0) -> RetainHealth | None:
        from fastunlearn.inference import accuracy

        probe = split.val_retain.take(probe_size, seed=seed)
        if len(probe) == 0:
            return None
        kept = split.data.num_classes - len(set(split.forget_class_ids))
        return cls(probe, 100.0 / max(1, kept), accuracy(model, probe))

    def check(self, model: nn.Module, method: str = "") -> dict:
        from fastunlearn.inference import accuracy

        after = accuracy(model, self.probe)
        margin = self.before - self.chance
        collapsed = bool(margin >= _MIN_MARGIN and not after - self.chance >= COLLAPSE_SHARE
                         * margin)
        if collapsed:
            log.warning(
                "%s: validation accuracy on the retained classes collapsed toward chance "
                "(%.1f %% → %.1f %%, chance %.1f %%); the unlearned model is likely broken — "
                "lower the learning rate or the epochs", method or "unlearning", self.before,
                after, self.chance)
        return {"val_retain_acc_before": self.before, "val_retain_acc_after": after,
                "retain_collapsed": collapsed}


def check_guard_fields(method: str, probe_size: int, check_every: int, collapse: float,
                       target: float | str | None) -> None:
    """Validation of the :class:`ForgetGuard` options of a config."""
    check_positive_int(method, "probe_size", probe_size)
    check_positive_int(method, "check_every", check_every)
    check_fraction(method, "collapse_fraction", collapse)
    if target is not None and target != "auto" and not (
        isinstance(target, (int, float)) and not isinstance(target, bool) and 0 <= target <= 100
    ):
        raise ValueError(
            f"{method}: target_forget_acc must be 'auto', a percentage in [0, 100] or None"
        )


def guarded_step(
    runner: StepRunner, guard: ForgetGuard, model: nn.Module, loss: Tensor, *,
    check_every: int, total: int,
) -> str:
    """One optimiser step, then the guard's check every ``check_every`` steps (and at the
    last); returns the stop reason, ``""`` to go on."""
    if not runner.step(loss):
        return "loss is not finite"
    if runner.steps % check_every == 0 or runner.steps == total:
        return guard.check(model)
    return ""


def finish_guarded(
    model: nn.Module, runner: StepRunner, guard: ForgetGuard, reason: str, method: str
) -> dict:
    """Close the loop: on divergence (non-finite loss, retain collapse) restore the last
    healthy weights; return the ``info`` entries every guarded method reports."""
    runner.close()
    diverged = reason.startswith(("retain", "loss"))
    if diverged:
        log.warning("%s stopped after %d steps: %s; restored the last healthy weights",
                    method, runner.steps, reason)
        guard.restore(model)
    model.eval()
    return {
        "steps": runner.steps,
        "stopped_early": bool(reason),
        "stop_reason": reason or "epochs done",
        "diverged": diverged,
        "target_forget_acc": guard.target,
    }
