"""Method registry: ``@register_method(Config)`` on ``fn(model, split, config) -> UnlearnResult``.

``unlearn(model, split, config)`` copies the model (the original is never modified), runs it
where the model is (or on ``config.device`` when one is named), times the method honestly
(synchronised; precomputation included), fills in ``rte_s`` and ``peak_mem_mb`` and leaves
the caller's global RNG state as it found it.

Third-party methods: besides the built-ins, the registry imports every module named by an
entry point of the group :data:`ENTRY_POINT_GROUP` (``fastunlearn.methods``) and every module
listed in the environment variable :data:`ENV_VAR` (``FASTUNLEARN_METHODS=pkg.a,pkg.b``), the
first time a method is looked up; a plugin that fails to import is logged and skipped.
:func:`register_methods_from` imports modules explicitly (errors raise). Study workers
(process pool, Ray) import the defining module of a non-built-in method before running it.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import logging
import os
import random
import sys
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import torch
from torch import nn

from fastunlearn._timing import measure
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.engine.guards import RetainHealth
from fastunlearn.train import check_model_fits, check_split_arg, nonfinite_tensors
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, explicit_device, method_device

log = logging.getLogger(__name__)

MethodFn = Callable[[nn.Module, ForgetSplit, Any], UnlearnResult]


@dataclass(frozen=True)
class MethodEntry:
    name: str
    fn: MethodFn
    config_cls: type[UnlearnConfig]
    description: str


_METHODS: dict[str, MethodEntry] = {}

#: the entry-point group third-party packages declare their method modules in, e.g. in
#: ``pyproject.toml``: ``[project.entry-points."fastunlearn.methods"] mine = "my_pkg.methods"``
ENTRY_POINT_GROUP = "fastunlearn.methods"
#: comma-separated module paths imported (registering their methods) on first lookup
ENV_VAR = "FASTUNLEARN_METHODS"
_BUILTIN_PREFIX = "fastunlearn."
_plugins_loaded = False


def register_method(config_cls: type[UnlearnConfig]) -> Callable[[MethodFn], MethodFn]:
    """Register a method under ``config_cls.method``; the function docstring's first line is
    the description ``fastunlearn list methods`` shows."""
    name = config_cls.method
    if not name:
        raise ValueError(f"{config_cls.__name__} must set the class attribute `method`")

    def deco(fn: MethodFn) -> MethodFn:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        doc = inspect.getdoc(fn) or ""
        _METHODS[name] = MethodEntry(name, fn, config_cls, doc.splitlines()[0] if doc else "")
        return fn

    return deco


def _ensure_builtin() -> None:
    """Load (once per process) the plugins: entry points of :data:`ENTRY_POINT_GROUP` and the
    modules in :data:`ENV_VAR`. The built-in methods are registered by the package's
    ``__init__`` (which imports :mod:`fastunlearn.unlearn.methods`) before any of this runs."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # first: a plugin that looks methods up must not recurse
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _load_plugin(f"entry point {ep.name!r} ({ep.value})", ep.load)
    for module in _env_modules():
        _load_plugin(f"module {module!r} from ${ENV_VAR}",
                     lambda m=module: importlib.import_module(m))


def _env_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]


def _load_plugin(what: str, load: Callable[[], Any]) -> None:
    """Import one plugin; its failure is logged (with the traceback at debug level) and the
    other methods stay usable."""
    try:
        load()
    except Exception as err:  # noqa: BLE001 - a broken plugin must not break the others
        log.warning("fastunlearn: could not load method plugin %s: %s: %s", what,
                    type(err).__name__, err)
        log.debug("plugin %s failed", what, exc_info=True)


def register_methods_from(*modules: str) -> list[str]:
    """Import each module (a dotted path such as ``"my_pkg.my_methods"``) so that its
    ``@register_method`` decorators run; returns the names of the methods it registered (a
    module imported before registers nothing new). Import errors raise. Study runs of these
    methods work in process-pool and Ray workers too: the worker imports the method's module
    (it must be importable there — installed, or on ``PYTHONPATH``)."""
    _ensure_builtin()
    before = set(_METHODS)
    for module in modules:
        if not isinstance(module, str) or not module.strip():
            raise TypeError(f"register_methods_from needs module paths, got {module!r}")
        importlib.import_module(module.strip())
    return sorted(set(_METHODS) - before)


def method_module(name: str) -> str | None:
    """The module whose import registers method ``name`` — None for a built-in method and for
    one defined in ``__main__`` (which no worker can import by name)."""
    module = get_method(name).fn.__module__
    if module.startswith(_BUILTIN_PREFIX) or module in ("__main__", "__mp_main__"):
        return None
    return module


def import_method_module(module: str | None) -> None:
    """Import a method's defining module (see :func:`method_module`) in a worker process, so
    that a method registered by the parent exists here too; a no-op when already imported."""
    if module and module not in sys.modules:
        importlib.import_module(module)


def list_methods() -> dict[str, str]:
    """``{name: one-line description}`` of every registered method, sorted by name."""
    _ensure_builtin()
    return {n: _METHODS[n].description for n in sorted(_METHODS)}


def config_classes() -> dict[str, type[UnlearnConfig]]:
    """``{ConfigClassName: class}`` of every registered method (e.g. ``"SalUnConfig"``)."""
    _ensure_builtin()
    return {e.config_cls.__name__: e.config_cls for e in _METHODS.values()}


def get_method(name: str) -> MethodEntry:
    _ensure_builtin()
    entry = _METHODS.get(name.strip().lower().replace("-", "_"))
    if entry is None:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(_METHODS))}")
    return entry


def make_config(name: str, **overrides: Any) -> UnlearnConfig:
    """The config of method ``name`` with the given fields overridden (an explicit None sets
    the field to None, e.g. ``retain_per_epoch=None``: the whole retain set); unknown fields
    raise ValueError naming the valid ones."""
    entry = get_method(name)
    valid = {f.name for f in fields(entry.config_cls)}
    given = dict(overrides)
    bad = sorted(set(given) - valid)
    if bad:
        raise ValueError(
            f"method {entry.name!r} has no option {bad[0]!r}; options: {', '.join(sorted(valid))}"
        )
    hints = _field_types(entry.config_cls)
    for key, value in given.items():
        hint = hints.get(key)
        if hint is not None and not _type_ok(value, hint):
            raise ValueError(f"method {entry.name!r}: option {key} must be {_describe(hint)}, "
                             f"got {value!r}")
    return entry.config_cls(**given)


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation this module cannot resolve: no type check
        return {}


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from the command line or JSON) fits the annotation ``hint``; hints
    this does not know accept anything (the config's own validation still runs)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True


def _describe(hint: Any) -> str:
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union,
                                                                 types.UnionType) else (hint,)
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             type(None): "null"}
    return " or ".join(names.get(a, getattr(a, "__name__", str(a))) for a in args)


def unlearn(
    model: nn.Module, split: ForgetSplit, config: UnlearnConfig | None = None, *,
    inplace: bool = False
) -> UnlearnResult:
    """Run the method named by ``config`` on a copy of ``model`` and time it. Without a
    config: ``auto`` at its defaults (``fu.AutoConfig()``: at most 5 % of a retrain's cost;
    ``result.info["auto"]`` records what it chose).

    Around the method (outside its timing) every run is checked, and ``result.info`` says:
    ``weights_finite`` (False: the method diverged to NaN/inf weights — never save such a
    model), ``unchanged`` (every weight equals the input's: a guard restored the original,
    ``epochs=0`` …; ``unchanged_reason`` says which) and the shared validation guard's
    ``retain_collapsed`` with ``val_retain_acc_before`` / ``_after``
    (:class:`~fastunlearn.engine.guards.RetainHealth`). Misuse raises one clear
    ``TypeError`` / ``ValueError`` before any work: a model that is not an ``nn.Module``, a
    dataset or data part instead of a ``ForgetSplit``, a config that is not a method config,
    a model whose output size is not the split's class count.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"unlearn needs an nn.Module, got {type(model).__name__}")
    check_split_arg(split, "unlearn")
    if config is None:
        config = make_config("auto")
    if not isinstance(config, UnlearnConfig):
        raise TypeError(
            f"unlearn needs a method config such as fu.FTConfig(...) or fu.GAConfig(...) (see "
            f"fu.list_methods()), got {type(config).__name__}"
        )
    entry = get_method(config.method)
    if not isinstance(config, entry.config_cls):
        raise TypeError(f"method {entry.name!r} expects {entry.config_cls.__name__}")
    device = method_device(model, config)
    with preserved_rng(_cuda_indices(model, device)):
        work = model if inplace else copy.deepcopy(model)
        if explicit_device(config):
            work.to(device)
        check_model_fits(work, split.retain, f"unlearn ({entry.name})")
        before = _snapshot(work) if inplace else model.state_dict()
        health = RetainHealth.measure(work, split, seed=config.seed)
        run_config = _on_device(config, device)
        torch.manual_seed(config.seed)  # what a method draws from the global RNG is seeded too
        with measure(device) as m:
            result = entry.fn(work, split, run_config)
    if result.config is run_config:
        result.config = config  # the caller's config ("auto" stays "auto")
    result.rte_s = m.seconds
    result.peak_mem_mb = m.peak_mem_mb
    spec = getattr(model, "fastunlearn_spec", None)
    if spec is not None and not hasattr(result.model, "fastunlearn_spec"):
        result.model.fastunlearn_spec = spec  # type: ignore[attr-defined]
    result.model.eval()
    bad = nonfinite_tensors(result.model)
    result.info["weights_finite"] = not bad
    if bad:
        log.warning("%s diverged: %d weight tensor(s) hold NaN/inf (first: %s)", entry.name,
                    len(bad), bad[0])
        result.info["nonfinite_tensors"] = len(bad)
    unchanged = _same_weights(before, result.model.state_dict())
    result.info["unchanged"] = unchanged
    if unchanged:
        result.info["unchanged_reason"] = _unchanged_reason(result, config)
        log.warning("%s left the model unchanged: %s", entry.name,
                    result.info["unchanged_reason"])
    if health is not None:
        result.info.update(health.check(result.model, entry.name))
    return result


def _on_device(config: UnlearnConfig, device: torch.device) -> UnlearnConfig:
    """``config`` with ``device="auto"`` replaced by the concrete device, so everything the
    method passes it on to (``fu.train``, inner configs, ``resolve_device``) stays there too.
    A shallow copy: ``__post_init__`` does not run again."""
    if explicit_device(config):
        return config
    pinned = copy.copy(config)
    object.__setattr__(pinned, "device", str(device))
    return pinned


def _cuda_indices(model: nn.Module, device: torch.device) -> list[int]:
    """The CUDA devices whose RNG a run may touch: none while CUDA is unused (not initialised,
    model and run off CUDA), else every one (a method's ``torch.manual_seed`` seeds them
    all)."""
    used = {device} | {t.device for t in (*model.parameters(), *model.buffers())}
    if torch.cuda.is_initialized() or any(d.type == "cuda" for d in used):
        return list(range(torch.cuda.device_count()))
    return []


@contextmanager
def preserved_rng(cuda_devices: list[int]) -> Iterator[None]:
    """Restore, on exit, the global RNG states a method may use: torch's CPU generator, the
    given CUDA devices' generators, the seed CUDA would receive on its (lazy) initialisation,
    Python's ``random`` and numpy's legacy global generator."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    lazy = _lazy_cuda_seed()
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        _restore_lazy_cuda_seed(lazy)


def _lazy_cuda_seed() -> dict[str, Any] | None:
    """Before CUDA is initialised, ``torch.manual_seed`` queues the CUDA seed for later
    (``torch.cuda._lazy_seed_tracker``, private): a snapshot of that queue, or None."""
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
    if tracker is None or torch.cuda.is_initialized() or not hasattr(tracker, "__dict__"):
        return None
    return {k: copy.copy(v) for k, v in vars(tracker).items()}


def _restore_lazy_cuda_seed(saved: dict[str, Any] | None) -> None:
    if saved is None or torch.cuda.is_initialized():
        return
    vars(torch.cuda._lazy_seed_tracker).update(saved)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same tensors, bit for bit (devices may differ)."""
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y.to(x.device)):
            return False
    return True


def _unchanged_reason(result: UnlearnResult, config: UnlearnConfig) -> str:
    info = result.info
    if info.get("diverged"):
        return f"the divergence guard restored the original weights ({info.get('stop_reason')})"
    if config.epochs == 0:
        return "epochs=0: the method took no step"
    if info.get("steps") == 0:
        return f"the method took no step ({info.get('stop_reason', 'no reason given')})"
    return "the method changed no weight"
