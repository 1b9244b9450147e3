"""Model-batched training: K models of one architecture trained at once — one vmapped
forward/backward over stacked parameters instead of K separate passes — for shadow pools and
multi-seed studies.

:func:`train_many` ``(model_fn, parts, config, seeds, batched="auto") -> list[nn.Module]``
trains model ``i`` on ``parts[i]`` (e.g. a seeded random half of the train set; or pass one
part and ``subsets=`` index lists) with seed ``seeds[i]``, and computes the same thing as::

    for part, seed in zip(parts, seeds):
        with torch.random.fork_rng():        # the caller's RNG is left as it was
            torch.default_generator.manual_seed(seed)
            model = model_fn()               # initial weights from the seed (built on CPU)
            train(model, part, dataclasses.replace(config, seed=seed), eval_on=eval_on or {})

which is exactly the sequential path (``batched=False``). The batched path
(``batched=True``) stacks the K models' parameters with ``torch.func.stack_module_state``,
runs ``vmap(functional_call)`` over them (one forward and one backward for all K), and applies
SGD to the stacked tensors — elementwise, so the same maths as K ``torch.optim.SGD``. Each model
keeps its own data order (its own ``torch.Generator``, seeded like :func:`fastunlearn.train.train`
seeds its shuffling), its own learning-rate schedule position (the same for all: the parts must
have the same length) and, under AMP on CUDA, its own loss scale (a per-model GradScaler: a
model whose gradients overflow skips its step alone). Results agree with the sequential path
to float rounding (vmap runs convolutions as grouped convolutions).

``batched="auto"`` measures once per key — architecture and parameter shapes, K, batch shape,
device (and CPU threads), AMP, torch version — a warm batched step against ``K`` sequential
steps (:data:`ROUNDS` interleaved rounds after a warm-up, the sequential side timed on at most
:data:`SEQ_PROBE_MODELS` models and scaled to K), on copies of the models, and picks batched
only if it is at least :data:`MARGIN` faster. Decisions live in a module-level dict for the
process (:func:`batched_decisions`, :func:`forget_batched_decisions`); every returned model
carries the one that applied as ``model.fastunlearn_batched`` (a :class:`BatchedDecision` with
the reason and the numbers).

Supported in batched mode: SGD (momentum, weight decay), constant/cosine schedules with
warm-up, label smoothing, augmentation, AMP, models without BatchNorm-style running statistics
and without dropout (``small_cnn``, ``lenet5``, ``karpathynet``, MLPs). Anything else — AdamW,
BatchNorm (running-statistics buffers), dropout (vmap would draw other random numbers than K
sequential runs), parts of different lengths, models of different shapes, one model, a vmap
failure — trains sequentially, with the reason logged (a warning when ``batched=True`` asked
for the batched path) and recorded. ``config.compile`` applies to the sequential path only.

On CPU the batched path is slower at realistic sizes (2-core x86 VM, 1 thread, 28×28, B=128:
small_cnn K=8/32 ≈ 2.5–3×, lenet5 ≈ 1.5–1.8× the time of sequential steps: oneDNN's grouped
convolutions, the pooling of their ``[B, K·C, H, W]`` output and the layout copies around them
cost more than K small passes; a hand-laid channels-last grouped convolution was break-even at
best), so "auto" picks sequential there (for tiny inputs, where per-step overhead dominates,
it may measure batched faster and take it). On a GPU, where one small model leaves the
device idle, batched is the point (goal: ≥ 8× for K = 32 small CNNs,
``benchmarks/bench_batched.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from fastunlearn._device import resolve_device, synchronize
from fastunlearn.data.base import DataPart, normalize
from fastunlearn.engine.optim import build_optimizer
from fastunlearn.engine.runner import lr_factor
from fastunlearn.inference import accuracy
from fastunlearn.kernels.compile import _architecture, _device_name, _shapes_hash
from fastunlearn.train import TrainConfig, TrainHistory, train

log = logging.getLogger(__name__)

#: Valid values of the ``batched`` option.
BATCHED_MODES = (False, True, "auto")
#: "auto" picks batched only if sequential time / batched time ≥ 1 + MARGIN.
MARGIN = 0.05
#: Timed rounds per path for "auto" (interleaved, after one warm-up round).
ROUNDS = 3
#: "auto" times sequential steps on at most this many models and scales to K.
SEQ_PROBE_MODELS = 4
# torch.amp.GradScaler's defaults, per model in the batched path
_INIT_SCALE, _GROWTH, _BACKOFF, _GROWTH_INTERVAL = 2.0**16, 2.0, 0.5, 2000

_MEMO: dict[str, BatchedDecision] = {}


@dataclass
class BatchedDecision:
    """Which path trained a pool, and why. ``sequential_step_s`` / ``batched_step_s``: seconds
    for one training step of all K models ("auto" only); ``speedup`` = their ratio."""

    batched: bool
    reason: str
    sequential_step_s: float | None = None
    batched_step_s: float | None = None
    speedup: float | None = None
    description: str = ""


def check_batched_mode(value: object, owner: str = "") -> bool | str:
    """Return ``value`` if it is True, False or ``"auto"``; a one-line ValueError otherwise."""
    if value is True or value is False or (isinstance(value, str) and value == "auto"):
        return value  # type: ignore[return-value]
    prefix = f"{owner}: " if owner else ""
    raise ValueError(f"{prefix}batched must be True, False or 'auto', got {value!r}")


def batched_decisions() -> dict[str, BatchedDecision]:
    """A copy of the "auto" decisions made in this process, by key."""
    return dict(_MEMO)


def forget_batched_decisions() -> None:
    """Clear the in-memory "auto" decisions (the next "auto" call measures again)."""
    _MEMO.clear()


# ------------------------------------------------------------------------ support -----------


def unsupported_reason(models: Sequence[nn.Module], config: TrainConfig,
                       parts: Sequence[DataPart] | None = None) -> str | None:
    """Why these models / this config cannot train batched (None if they can)."""
    if len(models) < 2:
        return "one model: nothing to batch"
    if config.optimizer != "sgd":
        return f"optimizer {config.optimizer!r}: the batched path implements SGD only"
    if parts is not None:
        lengths = sorted({len(p) for p in parts})
        if len(lengths) > 1:
            return (f"parts differ in length ({lengths[0]}..{lengths[-1]}): their steps would "
                    "not line up")
    for name, mod in models[0].named_modules():
        if isinstance(mod, nn.modules.batchnorm._NormBase) and mod.track_running_stats:
            return (f"{type(mod).__name__} at {name or 'top'}: running-statistics buffers "
                    "are not supported under vmap here")
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0:
            return (f"{type(mod).__name__} at {name or 'top'}: vmap would draw other random "
                    "numbers than sequential training")
    sig = _signature(models[0])
    for m in models[1:]:
        if _signature(m) != sig:
            return "the models differ in parameter names, shapes or dtypes"
    return None


def _signature(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype, bool]]:
    return ([(n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters()]
            + [(n, tuple(b.shape), b.dtype, False) for n, b in model.named_buffers()])


def decision_key(model: nn.Module, k: int, example: Tensor, device: torch.device,
                 amp: bool) -> tuple[str, str]:
    """``(key, description)`` of one "auto" decision: a hash of the architecture, parameter
    shapes, K, the per-model batch shape/dtype, the device (and CPU threads), AMP and torch."""
    parts = {
        "model": _architecture(model),
        "params": _shapes_hash(model),
        "k": k,
        "input": f"{tuple(example.shape[1:])}:{example.dtype}",
        "device": _device_name(device),
        "amp": amp,
        "torch": torch.__version__,
    }
    desc = f"{type(model).__name__} K={k} {parts['input']} on {parts['device']}"
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20], desc


# ---------------------------------------------------------------------- the steps -----------


def _autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()


class StackedScaler:
    """``torch.amp.GradScaler`` semantics for K models at once: one loss scale and growth
    tracker per model; a model whose gradients are not finite skips its step and halves its
    scale, the others step as usual."""

    def __init__(self, k: int, device: torch.device) -> None:
        self.scale = torch.full((k,), _INIT_SCALE, dtype=torch.float32, device=device)
        self.growth_tracker = torch.zeros(k, dtype=torch.int32, device=device)

    def scale_losses(self, losses: Tensor) -> Tensor:
        """Per-model losses ``[K]`` times each model's scale."""
        return losses * self.scale.to(losses.dtype)

    def unscale_(self, grads: Sequence[Tensor | None]) -> Tensor:
        """Divide each model's gradients by its scale (in place); return ``ok`` ``[K]``: the
        models whose gradients are all finite."""
        inv = self.scale.double().reciprocal().float()
        ok = torch.ones_like(self.scale, dtype=torch.bool)
        for g in grads:
            if g is None:
                continue
            g.mul_(inv.view(-1, *([1] * (g.dim() - 1))))
            ok &= torch.isfinite(g).flatten(1).all(1)
        return ok

    def update(self, ok: Tensor) -> None:
        """Back off the scale of models that overflowed; grow it after ``_GROWTH_INTERVAL``
        clean steps in a row."""
        tracker = torch.where(ok, self.growth_tracker + 1, torch.zeros_like(self.growth_tracker))
        grow = tracker >= _GROWTH_INTERVAL
        self.scale = torch.where(ok, torch.where(grow, self.scale * _GROWTH, self.scale),
                                 self.scale * _BACKOFF)
        self.growth_tracker = torch.where(grow, torch.zeros_like(tracker), tracker)


def stacked_sgd_(params: Sequence[Tensor], grads: Sequence[Tensor | None],
                 bufs: list[Tensor | None], lr: float, momentum: float, weight_decay: float,
                 ok: Tensor | None = None) -> None:
    """``torch.optim.SGD``'s update (no dampening, no Nesterov) on stacked ``[K, …]`` tensors,
    in place; the maths of ``torch.optim.SGD`` term by term, so each slice ``k`` follows what
    its own optimiser would do. ``ok`` ``[K]`` (AMP): models whose step is skipped keep their
    weights and momentum. (With ``ok``, a buffer starts at zero: ``0 · momentum + d`` is
    exactly ``d``, the first-step clone of ``torch.optim.SGD``, also for a model whose first
    steps were skipped.)"""
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            continue
        d = g.add(p, alpha=weight_decay) if weight_decay != 0 else g
        if ok is None:
            if momentum != 0:
                buf = bufs[i]
                if buf is None:
                    buf = bufs[i] = torch.clone(d).detach()
                else:
                    buf.mul_(momentum).add_(d)
                d = buf
            p.add_(d, alpha=-lr)
            continue
        okv = ok.view(-1, *([1] * (p.dim() - 1)))
        if momentum != 0:
            buf = bufs[i]
            if buf is None:
                buf = torch.zeros_like(p)
            buf = bufs[i] = torch.where(okv, buf * momentum + d, buf)
            d = buf
        p.add_(torch.where(okv, d, torch.zeros_like(d)), alpha=-lr)


class BatchedSteps:
    """The K models' parameters stacked (``[K, …]`` leaves), and :meth:`step`: one vmapped
    forward/backward and SGD step for all K, as :func:`fastunlearn.train.train` does per batch.
    The modules themselves are untouched until :meth:`write_back`."""

    def __init__(self, models: Sequence[nn.Module], config: TrainConfig,
                 device: torch.device) -> None:
        self.models = list(models)
        self.k = len(models)
        self.config = config
        self.amp = config.amp and device.type == "cuda"
        for m in self.models:
            m.to(device).train()
        params, self.buffers = stack_module_state(self.models)
        self.names = list(params)
        self.params = [params[n] for n in self.names]
        self.bufs: list[Tensor | None] = [None] * len(self.params)
        base = copy.deepcopy(self.models[0]).to("meta")

        def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(base, (p, b), (x,))

        self._forward = vmap(one, randomness="error")
        self.scaler = StackedScaler(self.k, device) if self.amp else None

    def step(self, x: Tensor, y: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        """Train on ``x`` ``[K, B, …]``, ``y`` ``[K, B]``; return per-model (mean loss,
        number correct), detached."""
        for p in self.params:
            p.grad = None
        k, b = y.shape
        with _autocast(x.device, self.amp):
            out = self._forward(dict(zip(self.names, self.params)), self.buffers, x)
            losses = F.cross_entropy(out.reshape(k * b, -1), y.reshape(-1), reduction="none",
                                     label_smoothing=self.config.label_smoothing)
            losses = losses.view(k, b).mean(1)
        cfg = self.config
        if self.scaler is None:
            losses.sum().backward()
            with torch.no_grad():
                stacked_sgd_(self.params, [p.grad for p in self.params], self.bufs, lr,
                             cfg.momentum, cfg.weight_decay)
        else:
            self.scaler.scale_losses(losses).sum().backward()
            grads = [p.grad for p in self.params]
            with torch.no_grad():
                ok = self.scaler.unscale_(grads)
                stacked_sgd_(self.params, grads, self.bufs, lr, cfg.momentum, cfg.weight_decay,
                             ok=ok)
            self.scaler.update(ok)
        correct = (out.detach().argmax(-1) == y).sum(1)
        return losses.detach(), correct

    @torch.no_grad()
    def write_back(self) -> list[nn.Module]:
        """Copy the stacked weights into the K modules; return them."""
        for i, m in enumerate(self.models):
            stacked = dict(zip(self.names, self.params))
            for name, p in m.named_parameters():
                p.copy_(stacked[name][i])
            for name, buf in m.named_buffers():
                buf.copy_(self.buffers[name][i])
        return self.models


class SequentialSteps:
    """K models stepped one after the other, each exactly as :func:`fastunlearn.train.train`
    steps it (its own ``torch.optim.SGD``, autocast and GradScaler under AMP on CUDA). What
    "auto" and the benchmark time against :class:`BatchedSteps`."""

    def __init__(self, models: Sequence[nn.Module], config: TrainConfig,
                 device: torch.device) -> None:
        self.models = list(models)
        self.amp = config.amp and device.type == "cuda"
        self.opts = []
        self.scalers = []
        for m in self.models:
            m.to(device).train()
            self.opts.append(build_optimizer(m.parameters(), config.optimizer, config.lr,
                                             config.momentum, config.weight_decay))
            self.scalers.append(torch.amp.GradScaler("cuda", enabled=self.amp))
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def step(self, x: Tensor, y: Tensor, lr: float) -> None:
        """One step of model ``k`` on ``x[k]``, ``y[k]``, for every model."""
        for k, (m, opt, scaler) in enumerate(zip(self.models, self.opts, self.scalers)):
            for group in opt.param_groups:
                group["lr"] = lr
            with _autocast(x.device, self.amp):
                loss = self.loss_fn(m(x[k]), y[k])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()


# ------------------------------------------------------------------------- "auto" -----------


def _time_paths(seq: Callable[[], None], bat: Callable[[], None], device: torch.device,
                rounds: int = ROUNDS) -> tuple[list[float], list[float]]:
    """Seconds of ``rounds`` sequential and batched calls, interleaved, after one warm-up."""
    seq()
    bat()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, out in ((seq, times[0]), (bat, times[1])):
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            out.append(time.perf_counter() - t0)
    return times


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _measure(models: Sequence[nn.Module], x: Tensor, y: Tensor, config: TrainConfig,
             device: torch.device, desc: str) -> BatchedDecision:
    """Time a warm batched step of all K against sequential steps (on copies of the models;
    sequential on at most :data:`SEQ_PROBE_MODELS`, scaled to K)."""
    k = len(models)
    m = min(k, SEQ_PROBE_MODELS)
    seq = SequentialSteps([copy.deepcopy(mod) for mod in models[:m]], config, device)
    try:
        bat = BatchedSteps([copy.deepcopy(mod) for mod in models], config, device)
        seq_s, bat_s = _time_paths(lambda: seq.step(x[:m], y[:m], config.lr),
                                   lambda: bat.step(x, y, config.lr), device)
    except (RuntimeError, NotImplementedError) as err:  # vmap rules, out of memory
        return BatchedDecision(False, f"batched step failed: {_first_line(err)}",
                               description=desc)
    s = statistics.median(seq_s) * k / m
    b = statistics.median(bat_s)
    speedup = s / b if b > 0 else float("inf")
    use = speedup >= 1 + MARGIN
    reason = (f"batched step {b * 1e3:.1f} ms vs {k} sequential {s * 1e3:.1f} ms "
              f"({speedup:.2f}x; needs ≥ {1 + MARGIN:.2f}x)")
    return BatchedDecision(use, reason, s, b, speedup, desc)


def _first_batches(parts: Sequence[DataPart], batch_size: int,
                   device: torch.device) -> tuple[Tensor, Tensor]:
    """The first unshuffled batch of every part, stacked ``[K, B, …]`` (no generator used)."""
    xs, ys = zip(*(next(p.batches(batch_size, device=device)) for p in parts))
    return torch.stack(xs), torch.stack(ys)


def resolve_batched(models: Sequence[nn.Module], parts: Sequence[DataPart],
                    config: TrainConfig, mode: bool | str = "auto") -> BatchedDecision:
    """The path :func:`train_many` takes for these models and parts: ``mode=False`` →
    sequential, ``True`` → batched where supported, ``"auto"`` → the faster one, measured once
    per key (see the module docstring) and remembered for the process. The models are not
    changed."""
    mode = check_batched_mode(mode)
    if mode is False:
        return BatchedDecision(False, "batched=False")
    why = unsupported_reason(models, config, parts)
    if why is None and mode == "auto" and config.compile is True:
        why = "compile=True applies to the sequential path"
    if why is not None:
        return BatchedDecision(False, f"sequential: {why}")
    if mode is True:
        return BatchedDecision(True, "batched=True")
    device = resolve_device(config.device)
    x, y = _first_batches(parts, config.batch_size, device)
    key, desc = decision_key(models[0], len(models), x, device,
                             config.amp and device.type == "cuda")
    known = _MEMO.get(key)
    if known is not None:
        return known
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        decision = _measure(models, x, y, config, device, desc)
    _MEMO[key] = decision
    log.info("batched=auto: %s for %s — %s", "batched" if decision.batched else "sequential",
             desc, decision.reason)
    return decision


# ----------------------------------------------------------------------- training -----------


def _stacked_batches(parts: Sequence[DataPart], batch_size: int,
                     gens: Sequence[torch.Generator],
                     device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of ``[K, B, …]`` batches: batch ``b`` of model ``k`` is the ``b``-th batch of
    ``parts[k].batches(batch_size, shuffle=True, generator=gens[k])`` — the very batches
    :func:`fastunlearn.train.train` draws. Parts of one dataset without augmentation are
    gathered in host memory and moved and normalised once for all K (same numbers)."""
    first = parts[0]
    same = all(p.dataset is first.dataset and p.part == first.part for p in parts)
    if not same or first.dataset.augment:
        its = [p.batches(batch_size, shuffle=True, generator=g, device=device)
               for p, g in zip(parts, gens)]
        for pairs in zip(*its):
            xs, ys = zip(*pairs)
            yield torch.stack(xs), torch.stack(ys)
        return
    n = len(first)
    orders = [torch.randperm(n, generator=g) for g in gens]  # as DataPart.batches draws it
    k = len(parts)
    for b in range(math.ceil(n / batch_size)):
        raw = [p.raw(o[b * batch_size:(b + 1) * batch_size]) for p, o in zip(parts, orders)]
        x = torch.stack([r[0] for r in raw]).to(device, non_blocking=True)
        y = torch.stack([r[1] for r in raw]).to(device, non_blocking=True)
        x = normalize(x.flatten(0, 1), first.dataset.mean, first.dataset.std)
        yield x.view(k, -1, *x.shape[1:]), y


def _train_batched(models: list[nn.Module], parts: Sequence[DataPart], config: TrainConfig,
                   seeds: Sequence[int], eval_on: Mapping[str, DataPart],
                   device: torch.device) -> list[nn.Module]:
    """The batched loop: :func:`fastunlearn.train.train`'s schedule and bookkeeping, K models
    per step. The modules change only when weights are written back (evaluation, the end)."""
    steps = BatchedSteps(models, config, device)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    n = len(parts[0])
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = round(config.warmup_epochs * steps_per_epoch)
    histories = [TrainHistory() for _ in models]
    k = len(models)
    step = 0
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device, dtype=torch.long)
        seen = 0
        for x, y in _stacked_batches(parts, config.batch_size, gens, device):
            lr = config.lr * lr_factor(step, total, warmup, config.schedule)
            losses, right = steps.step(x, y, lr)
            loss_sum += losses * y.shape[1]
            correct += right
            seen += y.shape[1]
            step += 1
        losses_l, correct_l = loss_sum.tolist(), correct.tolist()
        records = [{"epoch": epoch + 1, "loss": losses_l[i] / seen,
                    "train_acc": 100.0 * correct_l[i] / seen} for i in range(k)]
        if eval_on and config.eval_every and (
            (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        ):
            for model, record in zip(steps.write_back(), records):
                for name, part in eval_on.items():
                    record[f"{name}_acc"] = accuracy(model, part)
                model.train()
        synchronize(device)
        for hist, record in zip(histories, records):
            record["seconds"] = time.perf_counter() - t0
            hist.epochs.append(record)
        log.info("batched epoch %d/%d, mean loss %.4f", epoch + 1, config.epochs,
                 sum(r["loss"] for r in records) / k)
    out = steps.write_back()
    seconds = time.perf_counter() - t0
    for model, hist in zip(out, histories):
        hist.seconds = seconds
        model.eval()
        model.fastunlearn_history = hist  # type: ignore[attr-defined]
    return out


def _train_sequential(models: Sequence[nn.Module], parts: Sequence[DataPart],
                      config: TrainConfig, seeds: Sequence[int],
                      eval_on: Mapping[str, DataPart], device: torch.device) -> list[nn.Module]:
    """K :func:`fastunlearn.train.train` runs, each in a forked RNG."""
    out = []
    for model, part, seed in zip(models, parts, seeds):
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            out.append(train(model, part, dataclasses.replace(config, seed=int(seed)),
                             eval_on=dict(eval_on)))
    return out


def _init(model_fn: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
    """``model_fn()`` with the CPU RNG seeded by ``seed``; the caller's RNG state is kept."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.default_generator.manual_seed(int(seed))
        model = model_fn()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_fn must return an nn.Module, got {type(model).__name__}")
    return model


def train_many(
    model_fn: Callable[[], nn.Module],
    parts: Sequence[DataPart] | DataPart,
    config: TrainConfig | None = None,
    seeds: Sequence[int] | None = None,
    *,
    batched: bool | str = "auto",
    subsets: Sequence[Sequence[int] | Tensor] | None = None,
    eval_on: Mapping[str, DataPart] | None = None,
) -> list[nn.Module]:
    """Train K models of one architecture, model ``i`` on ``parts[i]`` with seed ``seeds[i]``
    (its initial weights: ``model_fn()`` under that seed; its data order: a generator with
    that seed, as :func:`fastunlearn.train.train` uses), and return them in eval mode.

    ``parts``: one :class:`DataPart` per model, or one part plus ``subsets`` (per-model
    position lists within it, e.g. random halves for a shadow pool). ``seeds`` default to
    ``config.seed + i``. ``batched``: ``False`` (K sequential :func:`train` runs), ``True``
    (one vmapped step for all K where supported), ``"auto"`` (the faster, measured once per
    architecture, K and device). ``eval_on`` is evaluated as in :func:`train` (default: none).
    Each model carries ``fastunlearn_history`` and ``fastunlearn_batched`` (the
    :class:`BatchedDecision`). The caller's RNG state is left unchanged.
    """
    config = config or TrainConfig()
    check_batched_mode(batched, "train_many")
    if subsets is not None:
        if not isinstance(parts, DataPart):
            raise TypeError("with subsets=, parts must be one DataPart to take them from")
        parts = [parts.subset(torch.as_tensor(s, dtype=torch.long), name=f"{parts.name}[{i}]")
                 for i, s in enumerate(subsets)]
    elif isinstance(parts, DataPart):
        parts = [parts]
    parts = list(parts)
    if not parts:
        raise ValueError("train_many needs at least one part")
    for i, p in enumerate(parts):
        if len(p) == 0:
            raise ValueError(f"part {i} is empty")
    seeds = [config.seed + i for i in range(len(parts))] if seeds is None else list(seeds)
    if len(seeds) != len(parts):
        raise ValueError(f"got {len(seeds)} seeds for {len(parts)} parts")
    device = resolve_device(config.device)
    eval_on = dict(eval_on or {})
    models = [_init(model_fn, s, device) for s in seeds]
    decision = resolve_batched(models, parts, config, batched)
    if not decision.batched and batched is True:
        log.warning("batched=True: training %d models sequentially (%s)", len(parts),
                    decision.reason)
    if decision.batched:
        try:
            out = _train_batched(models, parts, config, seeds, eval_on, device)
        except (RuntimeError, NotImplementedError) as err:
            if batched is not True:
                raise
            decision = BatchedDecision(False, f"sequential: batched step failed: "
                                              f"{_first_line(err)}")
            log.warning("batched=True: %s", decision.reason)
            models = [_init(model_fn, s, device) for s in seeds]  # fresh: no partial training
    if not decision.batched:
        out = _train_sequential(models, parts, config, seeds, eval_on, device)
    for model in out:
        model.fastunlearn_batched = decision  # type: ignore[attr-defined]
    return out
