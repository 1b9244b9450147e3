"""Fisher diagonal as a multiple of one plain forward+backward, measured in the same run.

pytest-benchmark suite (``make bench``: ``pytest benchmarks --benchmark-only``; one test per
case and provider) and a plain script that runs every available provider of a case in one
interleaved run::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_fisher_fast.py [CASE…] [--repeats N]

Per case, each round times a plain fwd+bwd of the summed loss (model in eval mode, the
baseline) and the provider(s), interleaved (conftest.time_rounds: one warm-up round, medians
of the rest). Every provider's Fisher ``Σ_i (∂ℓ_i/∂θ)²`` must agree with fastunlearn's to
rel. err ≤ 1e-4 in fp32 (fastunlearn's own row: against the vmap reference); the CSV row
gets the error. Rows go to ``benchmarks/results/<device>.csv``.

Providers:

* ``vmap`` — the reference, :func:`fastunlearn.kernels.fisher.fisher_diagonal` with
  ``impl="reference"`` (``torch.func``: ``vmap(grad(...))`` over the batch, in one chunk).
* ``fastunlearn`` — :func:`fastunlearn.kernels.fisher_fast.fast_fisher_diagonal`.
* ``opacus`` (the ``bench`` extra) — ``GradSampleModule(loss_reduction="sum")``, then
  ``Σ_n p.grad_sample²``. Opacus records activations only in train mode, so its copy of the
  model runs in train mode with every ``BatchNorm2d`` turned into a running-statistics batch
  norm (the eval-mode maths) with a registered per-sample rule (Σ_spatial g·x̂, Σ_spatial g),
  followed by a clone (Opacus' backward hooks forbid the in-place ``+=``/ReLU that follow);
  a check that the copy's logits equal the eval model's guards against dropout. Parameters
  owned by no leaf layer (ViT ``cls_token``/``pos_embed``) go through Opacus' own functorch
  fallback, as in any Opacus run.
* ``backpack`` (the ``bench`` extra) — ``extend(model, use_converter=True)`` and the
  ``SumGradSquared`` extension (exactly ``Σ_n g_n²`` with a ``reduction="sum"`` loss).
  Where BackPACK cannot give every parameter (timm ViT: the converter rejects attention's
  batch-axis permute, and there is no rule for LayerNorm or ``cls_token``/``pos_embed``) the
  case is skipped with that reason.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn.kernels.fisher import fisher_diagonal
from fastunlearn.kernels.fisher_fast import fast_fisher_diagonal
from fastunlearn.models import create_model

SUITE = "fisher"
CASES = {  # name: (model, image size, batch)
    "resnet18-32px-b32": ("resnet18", 32, 32),
    "vit_tiny-32px-b32": ("vit_tiny", 32, 32),
}
PROVIDERS = ("vmap", "fastunlearn", "opacus", "backpack")
#: provider -> (import name, distribution) of the optional packages it needs
OPTIONAL = {"opacus": ("opacus", "opacus"), "backpack": ("backpack", "backpack-for-pytorch")}
TOLERANCE = 1e-4

Fisher = dict[str, Tensor]


class Unsupported(Exception):
    """A provider cannot handle this model (the message says why)."""


def setup_case(case: str, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    name, size, batch = CASES[case]
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=3, img_size=size).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return model, x, y


def fwd_bwd(model: nn.Module, x: Tensor, y: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y, reduction="sum").backward()


def rel_err(got: Fisher, ref: Fisher) -> float:
    """max over parameters of max|got − ref| / max|ref|."""
    missing = sorted(set(ref) - set(got))
    if missing:
        raise AssertionError(f"{len(missing)} parameter(s) missing, e.g. {missing[0]!r}")
    return max(((got[n] - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()
               for n, r in ref.items())


# --------------------------------------------------------------------------- opacus ----------
class _RunningStatsBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that normalises with its running statistics even in train mode."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


class _Clone(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.clone()


_OPACUS_BN_REGISTERED = False


def _register_opacus_bn() -> None:
    global _OPACUS_BN_REGISTERED
    if _OPACUS_BN_REGISTERED:
        return
    from opacus.grad_sample import register_grad_sampler

    @register_grad_sampler(_RunningStatsBatchNorm2d)
    def _bn_grad_sample(layer: nn.BatchNorm2d, activations: list[Tensor],
                        backprops: Tensor) -> dict[nn.Parameter, Tensor]:
        shape = (1, -1, 1, 1)
        xhat = ((activations[0] - layer.running_mean.view(shape))
                * torch.rsqrt(layer.running_var.view(shape) + layer.eps))
        return {layer.weight: (xhat * backprops).sum((2, 3)), layer.bias: backprops.sum((2, 3))}

    _OPACUS_BN_REGISTERED = True


def _swap_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d and child.track_running_stats:
            child.__class__ = _RunningStatsBatchNorm2d
            setattr(module, name, nn.Sequential(child, _Clone()))
        else:
            _swap_batchnorm(child)


def opacus_provider(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], Fisher]:
    from opacus import GradSampleModule

    _register_opacus_bn()
    m = copy.deepcopy(model)
    names = {id(p): n for n, p in m.named_parameters() if p.requires_grad}
    _swap_batchnorm(m)
    gsm = GradSampleModule(m, batch_first=True, loss_reduction="sum", strict=False)
    gsm.train()
    with torch.no_grad():
        same = torch.allclose(gsm(x), model(x), rtol=1e-4, atol=1e-5)
    if not same:
        raise Unsupported("the train-mode copy Opacus needs gives other logits (dropout?)")

    def run() -> Fisher:
        gsm.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            F.cross_entropy(gsm(x), y, reduction="sum").backward()
        return {names[id(p)]: p.grad_sample.pow(2).sum(0)
                for p in m.parameters() if id(p) in names}

    return run


# --------------------------------------------------------------------------- backpack --------
def backpack_provider(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], Fisher]:
    from backpack import backpack, extend
    from backpack.extensions import SumGradSquared

    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    try:
        ext = extend(copy.deepcopy(model), use_converter=True)
    except (ValueError, NotImplementedError, RuntimeError) as err:
        # the module-by-module fallback would leave parameters without a value; say which
        raise Unsupported(f"BackPACK's converter rejects {type(model).__name__}: "
                          f"{str(err).splitlines()[0]}; "
                          f"{_backpack_missing(model, x, y)}") from err
    own = {id(p): names[id(p)] for p in ext.parameters() if id(p) in names}
    if len(own) != len(names):  # the converter copied the parameters: match by name
        own = {id(p): n for n, p in ext.named_parameters() if n in set(names.values())}
    loss = extend(nn.CrossEntropyLoss(reduction="sum"))

    def run() -> Fisher:
        ext.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            with backpack(SumGradSquared()):
                loss(ext(x), y).backward()
        return {own[id(p)]: p.sum_grad_squared for p in ext.parameters()
                if id(p) in own and hasattr(p, "sum_grad_squared")}

    got = run()
    if len(got) != len(names):
        missing = sorted(set(names.values()) - set(got))
        raise Unsupported(f"BackPACK gives no sum_grad_squared for {len(missing)} "
                          f"parameter(s), e.g. {missing[:3]}")
    return run


def _backpack_missing(model: nn.Module, x: Tensor, y: Tensor) -> str:
    """Which parameters BackPACK's module-by-module hooks (no converter) leave without value."""
    from backpack import backpack, extend
    from backpack.extensions import SumGradSquared

    m = extend(copy.deepcopy(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with backpack(SumGradSquared()):
            extend(nn.CrossEntropyLoss(reduction="sum"))(m(x[:2]), y[:2]).backward()
    missing = [n for n, p in m.named_parameters()
               if p.requires_grad and not hasattr(p, "sum_grad_squared")]
    owners = sorted({type(m.get_submodule(n.rpartition(".")[0])).__name__ for n in missing})
    return (f"without it, {len(missing)} parameter(s) get no value (owned by "
            f"{', '.join(owners)}, e.g. {missing[:2]})")


# --------------------------------------------------------------------------- run -------------
def make_provider(name: str, model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], Fisher]:
    """The zero-argument callable timing provider ``name`` (raises :class:`Unsupported`)."""
    if name == "vmap":
        return lambda: fisher_diagonal(model, x, y, chunk_size=x.shape[0], impl="reference")
    if name == "fastunlearn":
        return lambda: fast_fisher_diagonal(model, x, y)
    if name == "opacus":
        return opacus_provider(model, x, y)
    if name == "backpack":
        return backpack_provider(model, x, y)
    raise ValueError(f"provider must be one of {PROVIDERS}, got {name!r}")


def available(name: str) -> str | None:
    """``None`` when provider ``name`` can be imported, else why not."""
    if name not in OPTIONAL:
        return None
    import importlib

    try:
        importlib.import_module(OPTIONAL[name][0])
    except ImportError as err:
        return f"{OPTIONAL[name][1]} not installed (pip install -e '.[bench]'): {err}"
    return None


def run_case(bench, case: str, providers: tuple[str, ...] = PROVIDERS,  # noqa: ANN001
             repeats: int = 5) -> tuple[list[dict[str, object]], dict[str, str]]:
    """Time fwd+bwd and ``providers`` interleaved; return the CSV rows and the providers
    skipped (name -> reason). ``bench`` is the conftest module."""
    device = bench.bench_device()
    model, x, y = setup_case(case, device)
    fns: dict[str, Callable[[], object]] = {"fwd+bwd": lambda: fwd_bwd(model, x, y)}
    skipped: dict[str, str] = {}
    for name in providers:
        why = available(name)
        if why is None:
            try:
                fns[name] = make_provider(name, model, x, y)
            except Unsupported as err:
                why = str(err)
        if why is not None:
            skipped[name] = why
    if len(fns) == 1:  # nothing to compare with the baseline
        return [], skipped
    timings, results = bench.time_rounds(fns, device, repeats)
    # every provider against fastunlearn; fastunlearn itself against the vmap reference
    fast = results.get("fastunlearn")
    if fast is None:
        fast = fast_fisher_diagonal(model, x, y)
    errs: dict[str, float] = {}
    for name in fns:
        if name == "fwd+bwd":
            continue
        if name == "fastunlearn":
            ref = results.get("vmap")
            if ref is None:
                ref = make_provider("vmap", model, x, y)()
            errs[name] = rel_err(fast, ref)
        else:
            errs[name] = rel_err(results[name], fast)
    packages = {k: (v[1],) for k, v in OPTIONAL.items()}
    return bench.make_rows(SUITE, case, timings, "fwd+bwd", repeats, errs, packages), skipped


# --------------------------------------------------------------------------- pytest ----------
try:
    import pytest
except ImportError:  # script mode without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("provider", PROVIDERS)
    @pytest.mark.parametrize("case", list(CASES))
    def test_fisher_ratio(benchmark, bench, record_rows, case: str,  # noqa: ANN001
                          provider: str) -> None:
        why = available(provider)  # like pytest.importorskip, for any ImportError
        if why is not None:
            pytest.skip(f"{provider}: {why}")
        rows, skipped = benchmark.pedantic(run_case, args=(bench, case, (provider,)),
                                           rounds=1, iterations=1)
        if provider in skipped:
            pytest.skip(f"{provider} on {case}: {skipped[provider]}")
        record_rows(rows)
        for row in rows:
            if row["provider"] != "fwd+bwd":
                assert float(str(row["rel_err"])) <= TOLERANCE, row


def main(argv: list[str]) -> None:
    import conftest as bench  # this folder is sys.path[0] when run as a script

    cases, repeats = bench.script_args(argv, CASES, 5)
    for case in cases:
        rows, skipped = run_case(bench, case, PROVIDERS, repeats)
        path = bench.append_rows(rows)
        sys.stdout.write(bench.format_rows(rows))
        for name, why in skipped.items():
            sys.stdout.write(f"{case:20s} {name:26s} skipped: {why}\n")
        sys.stdout.write(f"-> {path}\n")
        bad = [r for r in rows if r["rel_err"] and float(str(r["rel_err"])) > TOLERANCE]
        if bad:
            raise SystemExit(f"providers disagree beyond {TOLERANCE}: {bad}")


if __name__ == "__main__":
    main(sys.argv[1:])
