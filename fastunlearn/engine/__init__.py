"""The one training engine: every training loop of fastunlearn — ``fu.train`` (the original
and the gold retrain) and every training-based unlearning method — runs its optimisation
steps through :class:`StepRunner`.

A method describes *what* to optimise (a per-batch loss, which parts of the split to batch
from, its optimiser and schedule, its guard); the runner owns *how*: the learning-rate
schedule (``torch.optim.lr_scheduler``), AMP on CUDA, ``torch.compile`` of the forward,
gradient clipping and gradient transforms (masks), skipping non-finite losses, the guard
callbacks that stop a run early or restore the last healthy weights, the tqdm progress bar
and the wall-clock timing. The masked SGD kernel enters as the optimiser
(:func:`fastunlearn.engine.optim.build_optimizer` with ``masks``).

Modules
-------
* :mod:`~fastunlearn.engine.runner` — :class:`StepRunner`, :func:`run_epochs`, the schedule.
* :mod:`~fastunlearn.engine.optim` — optimisers (SGD / AdamW / masked SGD) and their option
  checks, shared by every config.
* :mod:`~fastunlearn.engine.guards` — the one guard implementation (:class:`ForgetGuard`) and
  the validation-split health check every method shares (:class:`RetainHealth`).
* :mod:`~fastunlearn.engine.rng` — seeded local generators that leave the global RNG alone.

The engine imports nothing from :mod:`fastunlearn.unlearn`, :mod:`fastunlearn.train` or the
studies: they are its users.
"""

from fastunlearn.engine.guards import (
    ForgetGuard,
    RetainHealth,
    check_guard_fields,
    finish_guarded,
)
from fastunlearn.engine.optim import build_optimizer, check_sgd_options
from fastunlearn.engine.rng import seeded
from fastunlearn.engine.runner import (
    StepRunner,
    cycle_batches,
    lr_factor,
    run_epochs,
    steps_per_epoch,
)

__all__ = [
    "ForgetGuard",
    "RetainHealth",
    "StepRunner",
    "build_optimizer",
    "check_guard_fields",
    "check_sgd_options",
    "cycle_batches",
    "finish_guarded",
    "lr_factor",
    "run_epochs",
    "seeded",
    "steps_per_epoch",
]
