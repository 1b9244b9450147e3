"""Model registry: ``@register_model("name")`` on a factory, ``create_model(name, data)``.

A factory has the signature ``fn(num_classes, in_chans, img_size, pretrained=False, **kwargs)``
and returns a freshly initialised :class:`torch.nn.Module` producing ``[N, num_classes]`` logits
from ``[N, in_chans, H, W]`` images.  Its docstring's first line is the one-line description
returned by :func:`model_descriptions`.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import logging
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

logger = logging.getLogger(__name__)

ModelFactory = Callable[..., nn.Module]


class DataLike(Protocol):
    """Anything that describes image data: an ``ImageDataset`` or a look-alike."""

    @property
    def num_classes(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def image_size(self) -> tuple[int, int]: ...


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its name, factory and one-line description."""

    name: str
    factory: ModelFactory
    description: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, description: str | None = None, replace: bool = False
) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(num_classes, in_chans, img_size, pretrained=False, **kwargs)`` as
    ``name``.

    The description defaults to the first line of the factory's docstring.  Decorators can be
    stacked to register aliases of one factory.  Registering a name twice is a ``ValueError``
    unless ``replace=True`` (a user's in-process model factory, registered again).
    """
    key = name.strip().lower()
    if not key:
        raise ValueError("model name must not be empty")

    def deco(fn: ModelFactory) -> ModelFactory:
        if key in _MODELS and not replace:
            raise ValueError(f"model {key!r} is registered twice")
        doc = inspect.getdoc(fn) or ""
        desc = description if description is not None else (doc.splitlines()[0] if doc else "")
        _MODELS[key] = ModelEntry(key, fn, desc)
        return fn

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching the shell-style ``pattern`` (``"vit_*"``)."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern.lower()))


def model_descriptions() -> dict[str, str]:
    """``{name: one-line description}`` for every registered model, sorted by name."""
    return {n: _MODELS[n].description for n in sorted(_MODELS)}


def _unknown(name: str) -> str:
    return f"unknown model {name!r}; choose one of: {', '.join(sorted(_MODELS))}"


def _as_size(img_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(img_size, numbers.Integral):
        size = (int(img_size), int(img_size))
    else:
        size = tuple(int(s) for s in img_size)
        if len(size) != 2:
            raise ValueError(f"img_size must be an int or (height, width), got {img_size!r}")
    if min(size) < 1:
        raise ValueError(f"img_size must be positive, got {img_size!r}")
    return size[0], size[1]


def create_model(
    name: str,
    data: DataLike | None = None,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    img_size: int | Sequence[int] | None = None,
    pretrained: bool = False,
    weights: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` for ``data`` (or explicit ``num_classes``/``in_chans``/``img_size``).

    Explicit arguments override what ``data`` (any object with ``num_classes``, ``channels`` and
    ``image_size``) says.  ``pretrained=True`` asks timm for its ImageNet weights (needs the
    network or a filled Hugging Face cache); ``weights=PATH`` loads a local ``.safetensors``
    state dict strictly instead (``pretrained`` is then ignored).  Extra keyword arguments go to
    the factory and must be JSON-serialisable.

    The returned model carries ``model.fastunlearn_spec``, a JSON-serialisable dict from which
    :func:`model_from_spec` rebuilds the same architecture.
    """
    key = name.strip().lower()
    entry = _MODELS.get(key)
    if entry is None:
        raise ValueError(_unknown(name))

    if num_classes is None:
        num_classes = getattr(data, "num_classes", None)
    if in_chans is None:
        in_chans = getattr(data, "channels", None)
    if img_size is None:
        img_size = getattr(data, "image_size", None)
    absent = [
        n
        for n, v in (("num_classes", num_classes), ("in_chans", in_chans), ("img_size", img_size))
        if v is None
    ]
    if absent:
        raise ValueError(
            f"create_model({key!r}) needs data=<dataset> or explicit {', '.join(absent)}"
        )
    assert num_classes is not None and in_chans is not None and img_size is not None
    num_classes, in_chans, size = int(num_classes), int(in_chans), _as_size(img_size)
    if num_classes < 1 or in_chans < 1:
        raise ValueError(
            f"num_classes and in_chans must be >= 1, got num_classes={num_classes}, "
            f"in_chans={in_chans}"
        )
    try:
        spec_kwargs = json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"model options for {key!r} must be JSON-serialisable (got {sorted(kwargs)}): {err}"
        ) from None

    use_pretrained = bool(pretrained) and weights is None
    model = entry.factory(
        num_classes=num_classes,
        in_chans=in_chans,
        img_size=size,
        pretrained=use_pretrained,
        **kwargs,
    )
    model.fastunlearn_spec = {
        "name": key,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "img_size": [size[0], size[1]],
        "kwargs": spec_kwargs,
    }
    if weights is not None:
        from fastunlearn.models.weights import load_weights

        load_weights(model, weights)
    logger.debug(
        "created model %s for %s classes, %s channels, %s px", key, num_classes, in_chans, size
    )
    return model


def model_from_spec(
    spec: dict[str, Any], *, weights: str | None = None, pretrained: bool = False
) -> nn.Module:
    """Rebuild the architecture described by a ``model.fastunlearn_spec`` dict."""
    try:
        return create_model(
            spec["name"],
            num_classes=spec["num_classes"],
            in_chans=spec["in_chans"],
            img_size=spec["img_size"],
            pretrained=pretrained,
            weights=weights,
            **spec.get("kwargs", {}),
        )
    except KeyError as err:
        raise ValueError(f"model spec is missing the field {err.args[0]!r}") from None
