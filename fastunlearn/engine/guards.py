"""The one guard implementation of the engine, and the validation health check.

:class:`ForgetGuard` stops a loop that ascends a loss on the forget data before it destroys
the model: it measures accuracy on a fixed retain probe and a fixed forget probe; a retain
accuracy below ``collapse_fraction`` × its starting value is a collapse (the loop stops and
:func:`finish_guarded` restores the last healthy weights), a forget accuracy at or below the
target is success (the loop stops, weights kept). ``ga``, ``neggrad_plus``,
``boundary_shrink``, ``zero_shot`` (on its class impressions) and ``influence`` (for its
step-size search) all use it. The target ``"auto"`` is 5 % for class forgetting and, for
sample forgetting, the accuracy a probe of the **validation** split's retained classes gets —
never the test part.

:class:`RetainHealth` is the check every method shares (run by ``fu.unlearn`` around the
method, outside its timing) on ``split.val_retain``.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from fastunlearn.engine.runner import StepRunner

log = logging.getLogger(__name__)

#: a probe: a DataPart (accuracy via fastunlearn.inference) or an ``(x, y)`` pair of tensors
Probe = Any


def probe_accuracy(model: nn.Module, probe: Probe) -> float:
    """Accuracy (%) of ``model`` on ``probe`` in eval mode, every submodule's own mode restored
    afterwards; NaN for an empty probe."""
    if isinstance(probe, tuple):
        from fastunlearn._modes import eval_mode

        x, y = probe
        if len(y) == 0:
            return math.nan
        with eval_mode(model), torch.no_grad():
            return 100.0 * (model(x).argmax(1) == y).float().mean().item()
    from fastunlearn.inference import accuracy

    return accuracy(model, probe)


class ForgetGuard:
    """Early stop and divergence guard (see the module). ``check(model)`` returns ``""`` to
    go on, ``"retain accuracy collapsed …"`` or ``"forget accuracy reached target …"``; a
    guard is also a :class:`~fastunlearn.engine.runner.StepRunner` callback (``guard(runner)``
    checks :attr:`model`). ``keep_state=False`` skips the copy of the healthy weights (a
    caller that restores by itself)."""

    def __init__(self, model: nn.Module, retain_probe: Probe, forget_probe: Probe, *,
                 collapse_fraction: float, target: float | None,
                 keep_state: bool = True) -> None:
        self.model = model
        self.retain_probe, self.forget_probe = retain_probe, forget_probe
        self.retain_start = probe_accuracy(model, retain_probe)
        self.floor = collapse_fraction * self.retain_start
        self.target = target
        self.keep_state = keep_state
        self.good_state = copy.deepcopy(model.state_dict()) if keep_state else None

    @classmethod
    def from_split(cls, model: nn.Module, split: Any, *, probe_size: int, seed: int,
                   collapse_fraction: float, target: float | str | None,
                   keep_state: bool = True) -> ForgetGuard:
        """Probes of ``probe_size`` seeded samples of ``split.retain`` and ``split.forget``;
        ``target="auto"``: 5 % for class forgetting, else the accuracy on a probe of
        ``split.val_retain``."""
        if target == "auto":
            target = 5.0 if split.kind == "class" else probe_accuracy(
                model, split.val_retain.take(probe_size, seed=seed))
        return cls(model, split.retain.take(probe_size, seed=seed),
                   split.forget.take(probe_size, seed=seed),
                   collapse_fraction=collapse_fraction, target=target,  # type: ignore[arg-type]
                   keep_state=keep_state)

    def check(self, model: nn.Module | None = None) -> str:
        model = self.model if model is None else model
        r = probe_accuracy(model, self.retain_probe)
        if not r >= self.floor:
            return f"retain accuracy collapsed ({r:.1f} % < {self.floor:.1f} %)"
        if self.keep_state:
            self.good_state = copy.deepcopy(model.state_dict())
        if self.target is not None:
            f = probe_accuracy(model, self.forget_probe)
            if f <= self.target:
                return f"forget accuracy reached target ({f:.1f} % ≤ {self.target:.1f} %)"
        return ""

    def __call__(self, runner: StepRunner) -> str:
        return self.check(self.model)

    def restore(self, model: nn.Module | None = None) -> None:
        if self.good_state is None:
            raise RuntimeError("this guard keeps no healthy weights (keep_state=False)")
        (self.model if model is None else model).load_state_dict(self.good_state)


def is_divergence(reason: str) -> bool:
    """A stop reason that means the weights are unusable (collapse, non-finite loss)."""
    return reason.startswith(("retain", "loss"))


def finish_guarded(model: nn.Module, runner: StepRunner, guard: ForgetGuard,
                   method: str) -> dict:
    """Close a guarded loop: on divergence (non-finite loss, retain collapse) restore the last
    healthy weights; return the ``info`` entries every guarded method reports."""
    runner.close()
    reason = runner.stop_reason
    diverged = is_divergence(reason)
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


def check_guard_fields(method: str, probe_size: int, check_every: int, collapse: float,
                       target: float | str | None, *, allow_auto: bool = True) -> None:
    """Validation of the guard options of a config (one-line ValueErrors); ``allow_auto``:
    whether ``target_forget_acc="auto"`` (a validation-probe target) is meaningful."""
    for name, value in (("probe_size", probe_size), ("check_every", check_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{method}: {name} must be a positive integer, got {value!r}")
    if isinstance(collapse, bool) or not isinstance(collapse, (int, float)) or not (
            0 < collapse < 1):
        raise ValueError(f"{method}: collapse_fraction must be in (0, 1), got {collapse!r}")
    if target is not None and not (target == "auto" and allow_auto) and not (
        isinstance(target, (int, float)) and not isinstance(target, bool) and 0 <= target <= 100
    ):
        what = "'auto', a percentage" if allow_auto else "a percentage"
        raise ValueError(f"{method}: target_forget_acc must be {what} in [0, 100] or None, "
                         f"got {target!r}")


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

    def __init__(self, probe: Any, chance: float, before: float) -> None:
        self.probe, self.chance, self.before = probe, chance, before

    @classmethod
    def measure(cls, model: nn.Module, split: Any, *, probe_size: int = 256,
                seed: int = 0) -> RetainHealth | None:
        probe = split.val_retain.take(probe_size, seed=seed)
        if len(probe) == 0:
            return None
        kept = split.data.num_classes - len(set(split.forget_class_ids))
        return cls(probe, 100.0 / max(1, kept), probe_accuracy(model, probe))

    def check(self, model: nn.Module, method: str = "") -> dict:
        after = probe_accuracy(model, self.probe)
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

