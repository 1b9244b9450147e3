"""Compiled training steps: ``compile=True | False | "auto"`` for the training and unlearning
loops, via ``torch.compile`` of the model's forward.

The loops compile the *module* (``torch.compile(model)`` → an ``OptimizedModule`` that shares
the parameters and buffers of ``model``), so optimisers, masks, checkpoints and the returned
model are unaffected: the loops keep returning and saving the original ``nn.Module`` and its
``state_dict`` keys carry no ``_orig_mod.`` prefix. Only batches of the shape the module was
compiled for go through the compiled forward; any other shape (the short last batch of an
epoch) runs eagerly, so a ragged epoch costs no second compilation.

``compile=True`` always compiles; a failure (no C++ compiler, an op dynamo cannot trace) is a
one-line ``RuntimeError`` that says to set ``compile=False``. ``compile="auto"`` compiles only
where it pays: the first time a key is seen — model architecture and parameter shapes, device
(and CPU thread count), torch version, input shape and dtype, autocast dtype — it times a few
warm eager and compiled training steps (forward + backward on the first batch, interleaved,
compile time kept apart) and picks compiled only if its median step is at least
:data:`MARGIN` faster. The decision is kept in memory and in a small JSON file
(:func:`cache_file`), so later runs skip the measurement; "auto" therefore never ends up
slower than eager on a device where the measurement says eager. A later run that tells how
many steps it will take (``expected_steps``; the loops do) compiles only if those steps save
more than the recorded compile time — the cold one, while torch's on-disk caches usually make
compiling again cheaper, so this errs towards eager; once a key has been compiled in this
process, torch reuses that code and the check is skipped. If compiling fails under "auto", one
warning is logged and the loop runs eagerly.

Timing: compilation happens inside the first step of the loop, so its cost — and, for "auto",
the one-off measurement — lands in the cold time (RTE) of whatever is timed around the loop;
warm runs reuse torch's compiled code.

The measurement leaves no trace: parameters are never stepped, gradients, buffers (BatchNorm
running statistics) and the RNG state are restored afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fastunlearn._device import cpu_model_name
from fastunlearn._modes import preserve_modes

log = logging.getLogger(__name__)

#: Valid values of the ``compile`` option.
COMPILE_MODES = (False, True, "auto")
#: "auto" picks compiled only if eager step time / compiled step time ≥ 1 + MARGIN.
MARGIN = 0.05
#: Timed steps per variant for "auto" (interleaved eager / compiled, after warm-up).
ROUNDS = 5
#: Environment variable naming the fastunlearn cache directory (holds ``compile.json``).
CACHE_ENV_VAR = "FASTUNLEARN_CACHE"
_CACHE_FORMAT = 1

_MEMO: dict[str, CompileDecision] = {}
_WARM: set[str] = set()  # keys compiled in this process: torch reuses that code, ~free


@dataclass
class CompileDecision:
    """What "auto" chose for one key, and the numbers it chose on (seconds; None when not
    measured). ``speedup`` = eager step time / compiled step time."""

    compiled: bool
    reason: str
    eager_step_s: float | None = None
    compiled_step_s: float | None = None
    compile_s: float | None = None
    speedup: float | None = None
    description: str = ""
    time: str = ""


def check_compile_mode(value: object, owner: str = "") -> bool | str:
    """Return ``value`` if it is True, False or ``"auto"``; a one-line ValueError otherwise."""
    if value is True or value is False or (isinstance(value, str) and value == "auto"):
        return value  # type: ignore[return-value]
    prefix = f"{owner}: " if owner else ""
    raise ValueError(f"{prefix}compile must be True, False or 'auto', got {value!r}")


# ----------------------------------------------------------------------------- cache ----------


def cache_file(cache_path: str | os.PathLike | None = None) -> Path:
    """The JSON file holding "auto" decisions: ``cache_path`` if given, else
    ``$FASTUNLEARN_CACHE/compile.json``, else ``$XDG_CACHE_HOME/fastunlearn/compile.json``,
    else ``~/.cache/fastunlearn/compile.json``."""
    if cache_path is not None:
        return Path(cache_path)
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env) / "compile.json"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastunlearn" / "compile.json"


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Entries of the cache file; an absent file is empty, a corrupt one is ignored (warning)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as err:
        log.warning("cannot read the compile cache %s (%s); ignoring it", path, err)
        return {}
    try:
        data = json.loads(text)
        entries = data["entries"]
        if data.get("format") != _CACHE_FORMAT or not isinstance(entries, dict):
            raise ValueError("unknown layout")
        for entry in entries.values():
            CompileDecision(**entry)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("ignoring corrupt compile cache %s (%s)", path, err)
        return {}
    return entries


def _write_entry(path: Path, key: str, decision: CompileDecision) -> None:
    """Add one entry to the cache file (read, update, atomic replace); failures only warn."""
    from fastunlearn.checkpoint import current_umask

    entries = _read_cache(path)
    entries[key] = asdict(decision)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".compile-", suffix=".json")
        try:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; a new file gets what the umask says
                os.fchmod(fd, 0o666 & ~current_umask())
            with os.fdopen(fd, "w") as fh:
                json.dump({"format": _CACHE_FORMAT, "entries": entries}, fh, indent=1)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as err:
        log.warning("cannot write the compile cache %s (%s); the decision is kept in memory",
                    path, err)


def forget_compile_decisions() -> None:
    """Clear the in-memory decisions (the cache file is left alone)."""
    _MEMO.clear()
    _WARM.clear()


# ------------------------------------------------------------------------------ keys ----------


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{cpu_model_name()}:threads={torch.get_num_threads()}"


def _architecture(model: nn.Module) -> str:
    spec = getattr(model, "fastunlearn_spec", None)
    if isinstance(spec, dict):
        with contextlib.suppress(TypeError, ValueError):
            return json.dumps(spec, sort_keys=True)
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _shapes_hash(model: nn.Module) -> str:
    h = hashlib.sha1()
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}:{p.requires_grad};".encode())
    for name, b in model.named_buffers():
        h.update(f"{name}:{tuple(b.shape)}:{b.dtype};".encode())
    return h.hexdigest()[:16]


def decision_key(
    model: nn.Module, example: Tensor, device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[str, str]:
    """``(key, description)`` of one "auto" decision: a hash of the architecture (spec or
    class), parameter shapes, device, torch version, input shape/dtype and autocast dtype."""
    parts = {
        "model": _architecture(model),
        "params": _shapes_hash(model),
        "device": _device_name(device),
        "torch": torch.__version__,
        "input": f"{tuple(example.shape)}:{example.dtype}",
        "autocast": str(autocast_dtype),
    }
    text = json.dumps(parts, sort_keys=True)
    desc = f"{type(model).__name__} {parts['input']} on {parts['device']}"
    return hashlib.sha1(text.encode()).hexdigest()[:20], desc


# ---------------------------------------------------------------------------- timing ----------


def _scalar(out: Any) -> Tensor:
    """A scalar to backpropagate from a model output (tensor, tuple/list, or ``.logits``)."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    out = getattr(out, "logits", out)
    if not isinstance(out, Tensor):
        raise TypeError(f"cannot time a model whose output is {type(out).__name__}")
    return out.float().mean()


def _train_step(net: Callable[[Tensor], Any], params: list[nn.Parameter], x: Tensor,
                autocast_dtype: torch.dtype | None) -> None:
    """One forward + backward as the loops do it (gradients set to None first, no update)."""
    for p in params:
        p.grad = None
    ctx = (torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with ctx:
        out = net(x)
    _scalar(out).backward()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step_times(
    eager_step: Callable[[], None], compiled_step: Callable[[], None], device: torch.device,
    rounds: int = ROUNDS,
) -> tuple[list[float], list[float]]:
    """Seconds of ``rounds`` eager and compiled steps, interleaved round by round (so load
    changes hit both alike), device synchronised. Both must be warm already."""
    eager: list[float] = []
    compiled: list[float] = []
    for _ in range(rounds):
        for step, times in ((eager_step, eager), (compiled_step, compiled)):
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t0)
    return eager, compiled


@contextlib.contextmanager
def _preserved(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run probe steps without a trace: gradients, buffers, train/eval mode and the RNG state
    are restored on exit (parameters are never stepped). The steps run in the model's current
    mode — the loops call ``model.train()`` first — so the loop's calls hit the same graph."""
    grads = [(p, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [device] if device.type == "cuda" else []
    try:
        with preserve_modes(model), torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, g in grads:
            p.grad = g


# ------------------------------------------------------------------------- compiling ----------


def _compile(model: nn.Module) -> nn.Module:
    # looked up at call time, so tests can monkeypatch torch.compile
    return torch.compile(model)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _probe(model: nn.Module, compiled: nn.Module, x: Tensor,
           autocast_dtype: torch.dtype | None) -> float:
    """Compile by running one step through ``compiled``; return the seconds it took."""
    params = [p for p in model.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    _train_step(compiled, params, x, autocast_dtype)
    _sync(x.device)
    return time.perf_counter() - t0


def _measure(model: nn.Module, compiled: nn.Module, x: Tensor, device: torch.device,
             autocast_dtype: torch.dtype | None, desc: str) -> CompileDecision:
    """Time warm eager vs compiled steps (the compiled module has been probed already)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def eager() -> None:
        _train_step(model, params, x, autocast_dtype)

    def comp() -> None:
        _train_step(compiled, params, x, autocast_dtype)

    eager()  # warm-up (allocator, cuDNN autotuning); the compiled one is warm from the probe
    comp()
    eager_s, compiled_s = measure_step_times(eager, comp, device, ROUNDS)
    e, c = statistics.median(eager_s), statistics.median(compiled_s)
    speedup = e / c if c > 0 else float("inf")
    use = speedup >= 1 + MARGIN
    reason = (f"compiled step {c * 1e3:.2f} ms vs eager {e * 1e3:.2f} ms "
              f"({speedup:.2f}x; needs ≥ {1 + MARGIN:.2f}x)")
    return CompileDecision(use, reason, e, c, None, speedup, desc,
                           _dt.datetime.now().isoformat(timespec="seconds"))


def _pays_off(decision: CompileDecision, expected_steps: int | None) -> bool:
    """Whether ``expected_steps`` compiled steps save more time than compiling costs."""
    d = decision
    if expected_steps is None or None in (d.compile_s, d.eager_step_s, d.compiled_step_s):
        return True
    return expected_steps * (d.eager_step_s - d.compiled_step_s) > d.compile_s  # type: ignore


def _resolve(
    model: nn.Module, example: Tensor, mode: bool | str, device: torch.device | None,
    cache_path: str | os.PathLike | None, autocast_dtype: torch.dtype | None,
    expected_steps: int | None = None,
) -> tuple[bool, nn.Module | None]:
    """The decision and, when compiled, the (already compiled and probed) module."""
    mode = check_compile_mode(mode)
    if mode is False:
        return False, None
    if not isinstance(example, Tensor):
        raise TypeError(f"example_batch must be a Tensor, got {type(example).__name__}")
    device = torch.device(device) if device is not None else example.device
    key, desc = decision_key(model, example, device, autocast_dtype)
    known: CompileDecision | None = None
    if mode == "auto":
        known = _MEMO.get(key)
        if known is None:
            entry = _read_cache(cache_file(cache_path)).get(key)
            if entry is not None:
                known = _MEMO[key] = CompileDecision(**entry)
        if known is not None and not known.compiled:
            log.debug("compile=auto: eager for %s (cached: %s)", desc, known.reason)
            return False, None
        if known is not None and key not in _WARM and not _pays_off(known, expected_steps):
            log.info("compile=auto: eager for this run of %s steps of %s: saves less than "
                     "the %.1f s compile", expected_steps, desc, known.compile_s)
            return False, None
    try:
        with _preserved(model, device):
            compiled = _compile(model)
            compile_s = _probe(model, compiled, example, autocast_dtype)
            decision = known
            if decision is None and mode == "auto":
                decision = _measure(model, compiled, example, device, autocast_dtype, desc)
                decision.compile_s = compile_s
        _WARM.add(key)
    except Exception as err:  # torch.compile raises many types (backend, inductor, C++ build)
        if mode is True:
            raise RuntimeError(
                f"torch.compile failed for {type(model).__name__} on {device.type} "
                f"({_first_line(err)}); set compile=False to run eagerly"
            ) from err
        log.warning("compile=auto: torch.compile failed for %s (%s); running eagerly",
                    desc, _first_line(err))
        _MEMO[key] = CompileDecision(False, f"compile failed: {_first_line(err)}",
                                     description=desc)
        return False, None
    if mode is True:
        log.info("compile=True: %s compiled in %.1f s", desc, compile_s)
        return True, compiled
    assert decision is not None
    if key not in _MEMO:
        _MEMO[key] = decision
        _write_entry(cache_file(cache_path), key, decision)
        log.info("compile=auto: %s for %s — %s; compile took %.1f s",
                 "compiled" if decision.compiled else "eager", desc, decision.reason, compile_s)
    return decision.compiled, (compiled if decision.compiled else None)


def resolve_compile(
    model: nn.Module, example_batch: Tensor, mode: bool | str,
    device: torch.device | str | None = None, *, cache_path: str | os.PathLike | None = None,
    autocast_dtype: torch.dtype | None = None, expected_steps: int | None = None,
) -> bool:
    """Whether a training loop for ``model`` on batches like ``example_batch`` should use the
    compiled forward: False for ``mode=False``, True for ``mode=True`` (RuntimeError if
    compiling fails), the measured-and-cached choice for ``mode="auto"`` (eager for a run of
    ``expected_steps`` that would not win back the compile time of a cached decision).

    The model's state (gradients, buffers, RNG) is unchanged afterwards. Use
    :func:`compiled_forward` to also get the compiled module.
    """
    use, _ = _resolve(model, example_batch, mode, device, cache_path, autocast_dtype,
                      expected_steps)
    return use


class CompiledForward:
    """Pick the module for each batch: the compiled one for batches of the compiled shape and
    dtype, the original eager ``model`` for anything else (no recompilation for a short last
    batch). ``forward.module_for(x)(x)``; ``forward.compiled`` says whether compiling is on."""

    def __init__(self, model: nn.Module, compiled: nn.Module | None, example: Tensor) -> None:
        self.model = model
        self.compiled_module = compiled
        self.shape = tuple(example.shape)
        self.dtype = example.dtype

    @property
    def compiled(self) -> bool:
        return self.compiled_module is not None

    def module_for(self, x: Tensor) -> nn.Module:
        if (self.compiled_module is not None and tuple(x.shape) == self.shape
                and x.dtype == self.dtype):
            return self.compiled_module
        return self.model

    def __call__(self, x: Tensor) -> Any:
        return self.module_for(x)(x)


def compiled_forward(
    model: nn.Module, example_batch: Tensor, mode: bool | str,
    device: torch.device | str | None = None, *, cache_path: str | os.PathLike | None = None,
    autocast_dtype: torch.dtype | None = None, expected_steps: int | None = None,
) -> CompiledForward:
    """:func:`resolve_compile` and, when it says yes, the compiled module — wrapped in a
    :class:`CompiledForward` that falls back to ``model`` for other batch shapes."""
    _, compiled = _resolve(model, example_batch, mode, device, cache_path, autocast_dtype,
                           expected_steps)
    return CompiledForward(model, compiled, example_batch)
