"""The step runner: the only place in fastunlearn where a training loop calls ``backward()``
and ``optimizer.step()`` (kernels aside).

A loop is a sequence of ``runner.step(loss)`` calls; the method computes the loss of one batch
(forward through ``runner.net(model, x)`` so compile applies) and the runner does the rest::

    runner = StepRunner(opt, lr, total, schedule="cosine", desc="ft", compile=config.compile)
    run_epochs(model, split.retain, lambda net, x, y: F.cross_entropy(net(x), y), runner,
               epochs, batch_size, generator, device)
    runner.close()

:func:`run_epochs` is the common case (shuffled passes over one part); methods that
interleave several streams call ``runner.step`` themselves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from fastunlearn.kernels.compile import CompiledForward, check_compile_mode, compiled_forward

if TYPE_CHECKING:  # pragma: no cover
    from fastunlearn.data.base import DataPart

SCHEDULES = ("cosine", "constant", "linear")

#: A callback run after every applied step: ``fn(runner) -> stop reason`` ("" to go on).
Callback = Callable[["StepRunner"], str]
#: A per-batch loss: ``fn(net, x, y) -> scalar`` (``net``: the module to run ``x`` through).
BatchLoss = Callable[[nn.Module, Tensor, Tensor], Tensor]

_UNSET = object()


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total``: linear
    warm-up over ``warmup`` steps, then constant, a cosine decay to 0 or a linear decay to 0
    (with a warm-up: the triangular one-cycle schedule)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def check_schedule(where: str, schedule: str | Callable[[int], float]) -> None:
    if not callable(schedule) and schedule not in SCHEDULES:
        raise ValueError(f"{where}: schedule must be one of {SCHEDULES}, got {schedule!r}")


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def cycle_batches(
    part: DataPart, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless shuffled batches of ``part`` (a new permutation every pass)."""
    if len(part) == 0:
        raise ValueError(f"cannot draw batches from the empty part {part.name!r}")
    while True:
        yield from part.batches(batch_size, shuffle=True, generator=generator, device=device)


def _opt_device(opt: torch.optim.Optimizer) -> torch.device:
    for group in opt.param_groups:
        for p in group["params"]:
            return p.device
    return torch.device("cpu")


class StepRunner:
    """Runs the optimisation steps of one loop.

    ``step(loss)``: skip a non-finite loss (nothing is updated; with ``stop_on_nonfinite``
    the run stops with reason ``"loss is not finite"``) → ``zero_grad`` → ``backward`` (scaled
    under AMP) → optional ``grad_hook`` (e.g. a mask on the gradients) → optional gradient
    clipping → ``optimizer.step()`` → the schedule advances → the callbacks (guards) run.
    Returns whether the update was applied. :attr:`stop_reason` is non-empty once the loop
    should stop (a callback said so, or a non-finite loss with ``stop_on_nonfinite``).

    * schedule: ``"constant"`` or ``"cosine"`` with ``warmup_steps`` of linear warm-up, or a
      function ``step -> factor`` (e.g. a per-epoch schedule), via
      ``torch.optim.lr_scheduler.LambdaLR`` over ``total_steps``; ``lr`` (when given) becomes
      every parameter group's base learning rate.
    * ``amp``: float16 autocast + ``GradScaler`` on CUDA (ignored on CPU).
    * ``compile`` (True / False / ``"auto"``): ``runner.net(model, x)`` returns
      ``torch.compile(model)`` for batches shaped like the first one seen (resolved once per
      model, on that batch, so the compile time counts in the loop's cold time), ``model``
      otherwise. Loops write ``out = runner.net(model, x)(x)``. ``compile_steps``: the steps
      "auto" expects to amortise compiling over (default: the steps left).
    * ``callbacks``: ``fn(runner) -> reason`` after every ``check_every``-th applied step and
      the last one; a non-empty reason stops the loop.
    * progress: a tqdm bar over ``total_steps`` (``progress=False`` hides it); timing:
      :attr:`seconds` from construction to :meth:`close`.
    """

    def __init__(
        self,
        opt: torch.optim.Optimizer,
        lr: float | None,
        total_steps: int,
        *,
        schedule: str | Callable[[int], float] = "constant",
        warmup_steps: int = 0,
        desc: str = "",
        progress: bool = True,
        clip_grad: float | None = None,
        compile: bool | str = False,
        amp: bool = False,
        callbacks: Sequence[Callback] = (),
        check_every: int = 1,
        stop_on_nonfinite: bool = True,
        check_finite: bool = True,
        compile_steps: int | None = None,
    ) -> None:
        check_schedule(desc or "StepRunner", schedule)
        self.opt, self.total = opt, max(1, int(total_steps))
        self.clip_grad = clip_grad
        self.compile = check_compile_mode(compile, desc or "StepRunner")
        self.device = _opt_device(opt)
        self.amp = bool(amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.callbacks = list(callbacks)
        self.check_every = max(1, int(check_every))
        self.stop_on_nonfinite = stop_on_nonfinite
        self.check_finite = check_finite
        self.compile_steps = compile_steps
        for group in opt.param_groups:
            if lr is not None:
                group["lr"] = lr
            group["initial_lr"] = group["lr"]
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        if callable(schedule):
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        elif schedule != "constant" or warmup_steps > 0:
            total, warm = self.total, int(warmup_steps)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: lr_factor(s, total, warm, schedule))
        self._forwards: dict[int, CompiledForward] = {}
        self.steps = 0
        self.stop_reason = ""
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        self.bar = tqdm(total=total_steps, desc=desc, disable=not progress, leave=False)

    # -- forward --------------------------------------------------------------------------
    def net(self, model: nn.Module, x: Tensor) -> nn.Module:
        """The module to run ``x`` through: compiled or ``model`` itself (see the class)."""
        if self.compile is False:
            return model
        fwd = self._forwards.get(id(model))
        if fwd is None or fwd.model is not model:
            fwd = self._forwards[id(model)] = compiled_forward(
                model, x, self.compile, x.device,
                autocast_dtype=torch.float16 if self.amp else None,
                expected_steps=(self.compile_steps if self.compile_steps is not None
                                else self.total - self.steps),
            )
        return fwd.module_for(x)

    def autocast(self) -> AbstractContextManager:
        """float16 autocast under AMP, a no-op context otherwise."""
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()

    @property
    def compiled(self) -> bool:
        """Whether any forward of this loop ran compiled."""
        return any(f.compiled for f in self._forwards.values())

    # -- step -----------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate of the next step (first parameter group)."""
        return float(self.opt.param_groups[0]["lr"])

    def step(self, loss: Tensor, *, advance: bool = True,
             grad_hook: Callable[[], None] | None = None,
             clip_grad: float | None | object = _UNSET) -> bool:
        """One update from ``loss`` (see the class). ``advance=False``: an extra update at the
        current learning rate that neither counts as a step of the schedule nor runs the
        callbacks (an interleaved second loss, e.g. ``sfr_on``'s forget step);
        ``grad_hook()`` runs between backward and the update; ``clip_grad`` overrides the
        runner's clipping for this update."""
        if self.check_finite and not bool(torch.isfinite(loss)):
            if self.stop_on_nonfinite:
                self.stop_reason = "loss is not finite"
            return False
        opt = self.opt
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if grad_hook is not None:
            if self.scaler is not None:
                self.scaler.unscale_(opt)
            grad_hook()
        clip = self.clip_grad if clip_grad is _UNSET else clip_grad
        if clip is not None:
            if self.scaler is not None and grad_hook is None:
                self.scaler.unscale_(opt)
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, float(clip))  # type: ignore[arg-type]
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        if not advance:
            return True
        self.steps += 1
        if self.scheduler is not None:
            self.scheduler.step()
        self.bar.update(1)
        if self.callbacks and (self.steps % self.check_every == 0 or self.steps == self.total):
            for callback in self.callbacks:
                reason = callback(self)
                if reason:
                    self.stop_reason = reason
                    break
        return True

    @property
    def stopped(self) -> bool:
        return bool(self.stop_reason)

    def close(self) -> None:
        """Close the bar, drop the compiled forwards, record :attr:`seconds`."""
        self.bar.close()
        self._forwards.clear()
        self.seconds = time.perf_counter() - self._t0


def run_epochs(
    model: nn.Module,
    part: DataPart,
    loss_fn: BatchLoss,
    runner: StepRunner,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    positions: Callable[[torch.Tensor], None] | None = None,
) -> bool:
    """``epochs`` shuffled passes over ``part``, one ``runner.step(loss_fn(net, x, y))`` per
    batch (under the runner's autocast), model in train mode at the start of each pass;
    ``net`` is ``model`` or, with the runner's ``compile``, its compiled forward (same
    parameters). ``positions`` is called with each batch's positions in ``part`` before its
    step. Returns False (and stops) when the runner stops (a guard's reason, or a non-finite
    loss)."""
    for _ in range(epochs):
        model.train()
        for x, y in part.batches(batch_size, shuffle=True, generator=generator, device=device,
                                 positions=positions):
            with runner.autocast():
                loss = loss_fn(runner.net(model, x), x, y)
            runner.step(loss)
            if runner.stop_reason:
                return False
    return True
