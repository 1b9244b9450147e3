"""Your own split and model in the studies and the audit (bring your own model and data).

Studies and audits are keyed, resumable and name-based: a run names its dataset, model and
forget set, and any process that executes it rebuilds them from those names. A user's split
(:meth:`ForgetSplit.from_datasets <fastunlearn.data.ForgetSplit.from_datasets>`) and model
factory enter the same machinery by registering them **in this process** under content-derived
names:

* the split's dataset → ``"user:<digest>"`` in the dataset registry (the digest covers the
  labels, class names, sizes and a sample of images, so the same data gets the same name — and
  the same pool entries — on the next run);
* ``model_fn`` (a zero-argument callable returning a freshly initialised model, as
  :class:`~fastunlearn.unlearn.RetrainConfig` takes) → ``"user:<module.qualname>"`` in the
  model registry (the studies train originals, gold retrains and shadows from it);
* the forget set → a split spec (``{"type": "class", ...}`` or ``{"type": "indices", ...}``).

Then ``fu.studies.run(NAME, split=..., model_fn=...)`` and ``fu.audit(split=..., model_fn=...)``
run exactly as on a built-in dataset. The registrations live in this process only, so such a
study runs with ``executor="local"``; a process pool or Ray worker would not find them (use a
registered dataset/model module — see :func:`fastunlearn.data.register_dataset` — for those).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

USER_PREFIX = "user:"


def _digest_data(data: Any) -> str:
    h = hashlib.sha256()
    for t in (data.train_labels, data.test_labels):
        h.update(t.to(torch.int64).contiguous().numpy().tobytes())
    h.update(repr((list(data.classes), tuple(data.train_images.shape),
                   tuple(data.test_images.shape))).encode())
    n = len(data.train_labels)
    probe = sorted({0, n // 3, (2 * n) // 3, n - 1}) if n else []
    if probe:  # a few images, so relabelled-but-different data gets another name
        x = data.train_images[torch.tensor(probe)]
        h.update(x.float().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def register_user_data(split: Any, name: str | None = None) -> str:
    """Register ``split.data`` (a user split's dataset) in the dataset registry and return its
    name (``"user:<digest>"`` unless ``name`` is given)."""
    from fastunlearn.data._registry import register_dataset
    from fastunlearn.data.splits import ForgetSplit

    if not isinstance(split, ForgetSplit):
        raise TypeError(f"split must be a ForgetSplit (fu.ForgetSplit.from_datasets(...)), got "
                        f"{type(split).__name__}")
    data = split.data
    key = (name or USER_PREFIX + _digest_data(data)).strip().lower()

    def loader(**_: Any) -> Any:
        return data

    loader.__doc__ = f"your split's data ({len(data.train_labels)} train images; this process)"
    register_dataset(key, replace=True)(loader)
    return key


def register_user_model(model_fn: Callable[[], nn.Module], name: str | None = None) -> str:
    """Register ``model_fn`` (zero arguments → a freshly initialised model) in the model
    registry and return its name (``"user:<module.qualname>"`` unless ``name`` is given)."""
    from fastunlearn.models._registry import register_model

    if not callable(model_fn):
        raise TypeError("model_fn must be a zero-argument callable returning a fresh model, got "
                        f"{type(model_fn).__name__}")
    qual = f"{getattr(model_fn, '__module__', '?')}.{getattr(model_fn, '__qualname__', '?')}"
    key = (name or USER_PREFIX + qual).strip().lower()

    def factory(num_classes: int, in_chans: int, img_size: Any, pretrained: bool = False,
                **_: Any) -> nn.Module:
        model = model_fn()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model_fn must return an nn.Module, got {type(model).__name__}")
        return model

    register_model(key, description=f"your model_fn {qual} (this process)",
                   replace=True)(factory)
    return key


def user_forget_spec(split: Any) -> dict[str, Any]:
    """The split spec that rebuilds ``split``'s forget set from its dataset."""
    if split.kind == "class":
        return {"type": "class", "classes": [split.data.classes[c]
                                             for c in split.forget_class_ids]}
    return {"type": "indices", "ids": [int(i) for i in split.forget_idx.tolist()]}


def user_task(split: Any, model_fn: Callable[[], nn.Module] | None, executor: str,
              where: str) -> dict[str, Any]:
    """Register a user's split and model for a study/audit: ``{"dataset", "model",
    "forget"}`` to put into its config. One-line errors for a missing ``model_fn`` and for an
    executor other than ``"local"``."""
    if model_fn is None:
        raise ValueError(f"{where} with split= needs model_fn= (a zero-argument callable "
                         "returning a fresh model): it trains originals and gold retrains")
    if executor != "local":
        raise ValueError(f"{where} with split= runs with executor='local' (your data and "
                         f"model_fn live in this process), got executor={executor!r}")
    return {"dataset": register_user_data(split), "model": register_user_model(model_fn),
            "forget": user_forget_spec(split)}
