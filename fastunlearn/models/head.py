"""Finding a classifier's head: the final ``nn.Linear`` that maps features to logits.

Methods that edit or read the head (``fisher``, ``zero_shot``) and the penultimate-feature
metrics (:mod:`fastunlearn.evaluate.drift`) find it by one documented rule,
:func:`find_head`; a config's ``head="module.name"`` overrides it for one method, and a
``fastunlearn_head = "module.name"`` attribute on the model overrides it everywhere.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["HEAD_ATTR", "HEAD_ATTRIBUTES", "find_head"]

#: A model attribute naming its head module for every consumer (``model.fastunlearn_head =
#: "out"``): methods, metrics and the audit's probe then agree without a ``head=`` each.
HEAD_ATTR = "fastunlearn_head"

#: Attributes searched after ``get_classifier()``: torchvision's ResNet/Inception/RegNet (``fc``),
#: VGG/MobileNet/EfficientNet/DenseNet/ConvNeXt (``classifier``), ViT (``heads``), Swin and
#: many hand-written models (``head``). A container is searched for its last ``nn.Linear``.
HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


def _named(model: nn.Module) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, m in model.named_modules():
        names.setdefault(id(m), name)
    return names


def _last_linear(module: nn.Module) -> nn.Linear | None:
    if isinstance(module, nn.Linear):
        return module
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _first_tensor(out: object) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    logits = getattr(out, "logits", None)  # HF-style output objects
    return logits if isinstance(logits, Tensor) else None


def _forward_linears(model: nn.Module, example: Tensor) -> tuple[list[nn.Linear], int | None]:
    """The ``nn.Linear`` modules one eval-mode forward of ``example`` calls, in call order, and
    the width of the output (None when it is not a tensor). Modes and gradients untouched."""
    import torch

    from fastunlearn._device import model_device
    from fastunlearn._modes import eval_mode

    called: list[nn.Linear] = []

    def hook(m: nn.Module, _inp: object, _out: object) -> None:
        called.append(m)  # type: ignore[arg-type]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with eval_mode(model), torch.no_grad():
            out = model(example.to(model_device(model)))
    finally:
        for h in handles:
            h.remove()
    t = _first_tensor(out)
    return called, (int(t.shape[-1]) if t is not None and t.dim() >= 1 else None)


def find_head(
    model: nn.Module, head: str | None = None, *, example: Tensor | None = None
) -> tuple[str, nn.Linear]:
    """``(name, module)`` of the classifier head of ``model`` — the first rule that applies:

    1. ``head``: the submodule of that name (it must be an ``nn.Linear``), else the model's
       ``fastunlearn_head`` attribute (:data:`HEAD_ATTR`) when set;
    2. ``model.get_classifier()`` when it returns an ``nn.Linear`` (timm, the built-in nets);
    3. the attributes :data:`HEAD_ATTRIBUTES` (``fc``, ``classifier``, ``heads``, ``head``) —
       the attribute itself when it is an ``nn.Linear``, else the last ``nn.Linear`` inside;
    4. the last ``nn.Linear`` the forward reaches (when ``example``, a batch of inputs, is
       given: one eval-mode forward with hooks, preferring one that outputs as many values as
       the model), else the last ``nn.Linear`` registered.

    With ``example`` a candidate of rules 2–3 must output the model's logit width, else the
    next rule is tried. A ValueError names the ``head=`` option when nothing is found.
    """
    names = _named(model)
    kind = type(model).__name__
    if head is None:
        head = getattr(model, HEAD_ATTR, None)
    if head is not None:
        try:
            m = model.get_submodule(head)
        except AttributeError as e:
            raise ValueError(f"head={head!r}: {kind} has no submodule of that name ({e})") from e
        if not isinstance(m, nn.Linear):
            raise ValueError(f"head={head!r} is a {type(m).__name__}, not an nn.Linear; name "
                             "the model's final linear layer")
        return head, m

    called: list[nn.Linear] | None = None
    width: int | None = None
    if example is not None:
        called, width = _forward_linears(model, example)

    def fits(m: nn.Linear | None) -> bool:
        return m is not None and id(m) in names and (width is None or m.out_features == width)

    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        got = getter()
        if isinstance(got, nn.Linear) and fits(got):
            return names[id(got)], got
    for attr in HEAD_ATTRIBUTES:
        sub = getattr(model, attr, None)
        if isinstance(sub, nn.Module):
            cand = _last_linear(sub)
            if cand is not None and fits(cand):
                return names[id(cand)], cand
    if called is not None:
        wide = [m for m in called if fits(m)]
        pick = wide[-1] if wide else (called[-1] if called else None)
        if pick is not None:
            return names[id(pick)], pick
    else:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if linears:
            return names[id(linears[-1])], linears[-1]
    raise ValueError(
        f"{kind} has no nn.Linear classifier head (looked for get_classifier(), "
        f"{', '.join('.' + a for a in HEAD_ATTRIBUTES)} and the last nn.Linear of the forward); "
        "pass head='<module name>' (the method config's head= option) naming its final "
        "nn.Linear"
    )
