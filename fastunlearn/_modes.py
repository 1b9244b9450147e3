"""Train/eval mode of every submodule, saved and restored.

``model.train(was_training)`` restores one flag by overwriting all of them: a model whose
batch-norm layers were deliberately put in eval inside a training model (frozen statistics)
would come back with them training. These helpers remember each module's own flag.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def preserve_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's ``training`` flag on exit, whatever happens inside."""
    saved = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` for the duration of the block, then every submodule's own mode back."""
    with preserve_modes(model):
        model.eval()
        yield model
