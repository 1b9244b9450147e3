"""How far unlearning moved a model: confusion drift, per-layer linear CKA,
collateral damage, and the activations / penultimate features they need.

- ``confusion_drift(C_u, C_o) = ½ ‖C_u − C_o‖₁ / N`` for two confusion matrices (counts) on the
  same N samples: 0 for identical predictions, at most the fraction of changed predictions.
- ``linear_cka(X, Y)`` (Kornblith et al. 2019) between two activation matrices of the same
  probe samples: ``‖Ycᵀ Xc‖²_F / (‖Xcᵀ Xc‖_F ‖Ycᵀ Yc‖_F)`` with column-centred ``Xc, Yc``;
  1 for identical representations, invariant to orthogonal transforms and isotropic scaling.
- Collateral damage: per retain class, original test accuracy minus the model's (percentage
  points, positive = accuracy lost); the mean and the worst (largest) over retain classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from fastunlearn._device import model_device
from fastunlearn._modes import eval_mode
from fastunlearn.data.base import DataPart

# ----------------------------------------------------------------------------- confusion


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Counts ``C[true, pred]`` (int64, ``[num_classes, num_classes]``)."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def confusion_drift(c_a: Tensor, c_b: Tensor) -> float:
    """``½ ‖C_a − C_b‖₁ / N`` for two confusion matrices over the same N samples."""
    if c_a.shape != c_b.shape:
        raise ValueError(
            f"confusion matrices differ in shape: {tuple(c_a.shape)} vs {tuple(c_b.shape)}"
        )
    n = int(c_a.sum())
    if n != int(c_b.sum()):
        raise ValueError(f"confusion matrices count different samples: {n} vs {int(c_b.sum())}")
    if n == 0:
        return math.nan
    return 0.5 * float((c_a.long() - c_b.long()).abs().sum()) / n


def collateral_damage(
    per_class_model: list[float], per_class_original: list[float], retain_classes: list[int]
) -> dict[str, float | dict[int, float]]:
    """``{"mean", "worst", "per_class"}`` of original − model accuracy over retain classes
    (classes with no test samples are skipped)."""
    per = {
        c: per_class_original[c] - per_class_model[c]
        for c in retain_classes
        if not (math.isnan(per_class_original[c]) or math.isnan(per_class_model[c]))
    }
    if not per:
        return {"mean": math.nan, "worst": math.nan, "per_class": {}}
    vals = list(per.values())
    return {"mean": sum(vals) / len(vals), "worst": max(vals), "per_class": per}


# -------------------------------------------------------------------------------- CKA


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA between activations ``x`` ``[n, p]`` and ``y`` ``[n, q]`` (any trailing
    shape is flattened); float64. Uses the n×n Gram form when features outnumber samples.
    NaN when either representation is constant over the probe."""
    x = x.detach().flatten(1).to(torch.float64)
    y = y.detach().flatten(1).to(torch.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same samples: {x.shape[0]} vs {y.shape[0]} rows")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    n = x.shape[0]
    if max(x.shape[1], y.shape[1]) > n:
        k, l_ = x @ x.T, y @ y.T
        num = (k * l_).sum()
        den = torch.linalg.norm(k) * torch.linalg.norm(l_)
    else:
        num = torch.linalg.norm(y.T @ x) ** 2
        den = torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)
    if den <= 0:
        return math.nan
    return float(num / den)


def linear_cka_reference(x: Tensor, y: Tensor) -> float:
    """Obviously correct, but slow: HSIC with the explicit centring matrix ``H = I − 11ᵀ/n``,
    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``, ``HSIC(K, L) = tr(K H L H)``."""
    x = x.detach().flatten(1).to(torch.float64)
    y = y.detach().flatten(1).to(torch.float64)
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    k, l_ = x @ x.T, y @ y.T

    def hsic(a: Tensor, b: Tensor) -> Tensor:
        return torch.trace(a @ h @ b @ h)

    return float(hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_)))


# ------------------------------------------------------------------------ blocks & hooks


def final_linear(model: nn.Module, head: str | None = None) -> nn.Linear:
    """The classifier layer by :func:`fastunlearn.models.head.find_head`'s rule: ``head`` (a
    module name) when given, else ``model.get_classifier()`` when it is an ``nn.Linear`` (timm
    and the small CNNs), torchvision's ``fc`` / ``classifier`` / ``heads`` (``head``), else the
    last ``nn.Linear`` in ``model.modules()``. A ValueError names ``head=`` when none is
    found."""
    from fastunlearn.models.head import find_head

    return find_head(model, head)[1]


def probe_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The blocks whose outputs :func:`block_activations` records, in forward order.

    timm models: the modules of ``model.feature_info`` (ResNet ``act1, layer1..4``, ViT
    ``blocks.i``, MobileNet/MobileViT stages). Other models: every top-level child that has
    parameters, with ``nn.Sequential`` / ``nn.ModuleList`` children expanded into their
    parameterised members (small CNNs: each conv and hidden linear layer). The final
    classifier layer is left out: its output is the ``logits`` entry.
    """
    named = dict(model.named_modules())
    info = getattr(model, "feature_info", None)
    names: list[str] = []
    if info is not None:
        try:
            names = [d["module"] for d in info]
        except (TypeError, KeyError):
            names = []
        names = [n for n in names if n in named]
    if not names:
        head = final_linear(model)
        for cname, child in model.named_children():
            if isinstance(child, (nn.Sequential, nn.ModuleList)):
                for sub, m in child.named_children():
                    if any(True for _ in m.parameters()) and m is not head:
                        names.append(f"{cname}.{sub}")
            elif any(True for _ in child.parameters()) and child is not head:
                if not any(m is head for m in child.modules()):
                    names.append(cname)
    return {n: named[n] for n in names}


def _first_tensor(out: object) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, dict):
        for v in out.values():
            if isinstance(v, Tensor):
                return v
    raise TypeError(f"block output of type {type(out).__name__} holds no tensor")


_HEAD_OUT = "_head_out"


def _head_is_output(store: dict[str, list[Tensor]], logits: list[Tensor]) -> bool:
    """Whether the recorded final-linear outputs are the model's logits (not so for an
    ensemble averaging several heads, whose "pre_logits" would be one member's features)."""
    head = store.get(_HEAD_OUT, [])
    if len(head) != len(logits):
        return False
    return all(h.shape == o.shape and torch.allclose(h, o, rtol=1e-4, atol=1e-4)
               for h, o in zip(head, logits))


@contextmanager
def _recording(model: nn.Module, blocks: dict[str, nn.Module], store: dict[str, list[Tensor]],
               pre_logits: bool) -> Iterator[None]:
    handles = []

    def save(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, _inp: object, out: object) -> None:
            # clone: a following in-place op (ReLU(inplace=True)) would otherwise change it
            t = _first_tensor(out).detach().flatten(1).float().cpu().clone()
            store.setdefault(name, []).append(t)
        return hook

    def save_input(_m: nn.Module, inp: tuple) -> None:
        store.setdefault("pre_logits", []).append(inp[0].detach().flatten(1).float().cpu().clone())

    try:
        for name, mod in blocks.items():
            handles.append(mod.register_forward_hook(save(name)))
        if pre_logits:
            head = final_linear(model)
            handles.append(head.register_forward_pre_hook(save_input))
            handles.append(head.register_forward_hook(save(_HEAD_OUT)))
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def block_activations(
    model: nn.Module, part: DataPart, *, batch_size: int = 256
) -> dict[str, Tensor]:
    """Outputs of every :func:`probe_blocks` block, the classifier input (``pre_logits``) and
    the ``logits`` on ``part``, each flattened to ``[len(part), features]`` (float32, CPU)."""
    store: dict[str, list[Tensor]] = {}
    logits = []
    with eval_mode(model), _recording(model, probe_blocks(model), store, pre_logits=True):
        for x in _eval_batches(model, part, batch_size):
            logits.append(model(x).float().cpu())
    keep_pre = _head_is_output(store, logits)
    out = {k: torch.cat(v) for k, v in store.items() if k not in ("pre_logits", _HEAD_OUT)}
    if keep_pre:
        out["pre_logits"] = torch.cat(store["pre_logits"])
    out["logits"] = torch.cat(logits)
    return out


def _eval_batches(model: nn.Module, part: DataPart, batch_size: int) -> Iterator[Tensor]:
    device = model_device(model)
    for x, _ in part.batches(batch_size, device=device):
        yield x


@torch.no_grad()
def penultimate_features(model: nn.Module, part: DataPart, *, batch_size: int = 256) -> Tensor:
    """Penultimate features ``[len(part), d]``: ``forward_head(forward_features(x),
    pre_logits=True)`` when the model has both (timm, small CNNs), else the input of the
    final linear layer (:func:`penultimate_by_hook`)."""
    if not (callable(getattr(model, "forward_features", None))
            and callable(getattr(model, "forward_head", None))):
        return penultimate_by_hook(model, part, batch_size=batch_size)
    with eval_mode(model):
        feats = [
            model.forward_head(model.forward_features(x), pre_logits=True).flatten(1).float().cpu()
            for x in _eval_batches(model, part, batch_size)
        ]
    return torch.cat(feats) if feats else torch.empty(0, 0)


@torch.no_grad()
def penultimate_by_hook(model: nn.Module, part: DataPart, *, batch_size: int = 256) -> Tensor:
    """Input of the final ``nn.Linear`` on ``part``, recorded by a forward pre-hook (works for
    any model whose logits are that layer's output; ValueError otherwise, e.g. ensembles)."""
    store: dict[str, list[Tensor]] = {}
    logits: list[Tensor] = []
    with eval_mode(model), _recording(model, {}, store, pre_logits=True):
        for x in _eval_batches(model, part, batch_size):
            logits.append(model(x).float().cpu())
    if logits and not _head_is_output(store, logits):
        raise ValueError(f"{type(model).__name__}: the output is not the output of one final "
                         "linear layer, so it has no single penultimate feature")
    feats = store.get("pre_logits", [])
    return torch.cat(feats) if feats else torch.empty(0, 0)


def layer_cka(acts_a: dict[str, Tensor], acts_b: dict[str, Tensor]) -> dict[str, float]:
    """Linear CKA per block for two :func:`block_activations` results of the same probe."""
    return {k: linear_cka(acts_a[k], acts_b[k]) for k in acts_a if k in acts_b}
