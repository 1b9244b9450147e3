"""The recipe options that separate ``rl`` / ``salun`` / ``ft`` from the SalUn reference code
(issue 16): ``retain_per_epoch`` (what is drawn each epoch), ``rl_order`` (mixed vs the
reference's forget-then-retain branch) and the ``schedule`` (constant vs cosine lr sequence).

What the methods train on is read off the model itself: a forward pre-hook records every
training batch, and each input row is identified by its pixels (digits' train images are
all distinct), so the tests count samples, not accuracies.
"""

from __future__ import annotations

import copy
import math
from collections import Counter

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from fastunlearn.unlearn.ft import FTConfig, ft
from fastunlearn.unlearn.rl import RLConfig, rl
from fastunlearn.unlearn.salun import SalUnConfig, salun

BS = 64


def _keys(part) -> list[bytes]:
    x, _ = part.tensors()
    return [row.numpy().tobytes() for row in x]


class _BatchRecorder:
    """Records the rows of every batch the model sees in train mode."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.batches: list[list[bytes]] = []
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:  # noqa: ANN001
        if module.training:
            self.batches.append([row.numpy().tobytes() for row in args[0].detach().cpu()])

    def epochs(self, sizes: list[int]) -> list[list[list[bytes]]]:
        """The recorded batches cut into consecutive epochs of ``sizes`` samples each."""
        out, it = [], iter(self.batches)
        for size in sizes:
            epoch, seen = [], 0
            while seen < size:
                b = next(it)
                epoch.append(b)
                seen += len(b)
            assert seen == size, "a batch straddles two epochs"
            out.append(epoch)
        assert next(it, None) is None, "more batches than the epochs account for"
        return out


def _run_rl(model, split, **over):
    m = copy.deepcopy(model)
    rec = _BatchRecorder(m)
    res = rl(m, split, RLConfig(batch_size=BS, progress=False, device="cpu", **over))
    rec.handle.remove()
    return res, rec


@pytest.fixture(scope="module")
def keys(random_split):
    return Counter(_keys(random_split.forget)), Counter(_keys(random_split.retain))


def test_retain_per_epoch_none_uses_every_retain_sample_each_epoch(
    digits_original, random_split, keys
):
    fkeys, rkeys = keys
    n = len(random_split.forget) + len(random_split.retain)
    res, rec = _run_rl(digits_original, random_split, epochs=2, retain_per_epoch=None)
    for epoch in rec.epochs([n, n]):
        seen = Counter(k for b in epoch for k in b)
        assert seen == fkeys + rkeys  # every forget and every retain sample, once
    assert res.info["steps"] == 2 * math.ceil(n / BS)


def test_retain_per_epoch_int_draws_that_many_fresh_each_epoch(
    digits_original, random_split, keys
):
    fkeys, rkeys = keys
    k = 300
    n_f = len(random_split.forget)
    res, rec = _run_rl(digits_original, random_split, epochs=2, retain_per_epoch=k)
    draws = []
    for epoch in rec.epochs([n_f + k, n_f + k]):
        seen = Counter(key for b in epoch for key in b)
        retain_seen = seen - fkeys
        assert seen - retain_seen == fkeys  # every forget sample, once
        assert sum(retain_seen.values()) == k and max(retain_seen.values()) == 1
        assert not retain_seen - rkeys  # drawn from the retain set, without repeats
        draws.append(set(retain_seen))
    assert draws[0] != draws[1]  # a fresh draw each epoch
    assert res.info["steps"] == 2 * math.ceil((n_f + k) / BS)


def test_retain_per_epoch_above_the_retain_size_is_the_whole_set(
    digits_original, random_split, keys
):
    fkeys, rkeys = keys
    n = len(random_split.forget) + len(random_split.retain)
    _, rec = _run_rl(digits_original, random_split, epochs=1, retain_per_epoch=10**6)
    (epoch,) = rec.epochs([n])
    assert Counter(k for b in epoch for k in b) == fkeys + rkeys


@pytest.mark.parametrize("retain_per_epoch", [None, 300])
def test_forget_then_retain_runs_forget_batches_first(
    digits_original, random_split, keys, retain_per_epoch
):
    fkeys, rkeys = keys
    n_f = len(random_split.forget)
    n_r = len(random_split.retain) if retain_per_epoch is None else retain_per_epoch
    res, rec = _run_rl(digits_original, random_split, epochs=2,
                       retain_per_epoch=retain_per_epoch, rl_order="forget_then_retain")
    n_fb = math.ceil(n_f / BS)
    for epoch in rec.epochs([n_f + n_r, n_f + n_r]):
        assert len(epoch) == n_fb + math.ceil(n_r / BS)
        forget_part = [k for b in epoch[:n_fb] for k in b]
        retain_part = [k for b in epoch[n_fb:] for k in b]
        assert Counter(forget_part) == fkeys  # the forget pass: all forget samples, only them
        assert len(retain_part) == n_r and set(retain_part) <= set(rkeys)
        if retain_per_epoch is None:
            assert Counter(retain_part) == rkeys
    assert res.info["steps"] == 2 * (n_fb + math.ceil(n_r / BS))


def test_mixed_order_interleaves_forget_and_retain(digits_original, random_split, keys):
    fkeys, _ = keys
    n = len(random_split.forget) + len(random_split.retain)
    _, rec = _run_rl(digits_original, random_split, epochs=1, retain_per_epoch=None)
    (epoch,) = rec.epochs([n])
    mixed = [b for b in epoch if any(k in fkeys for k in b) and not all(k in fkeys for k in b)]
    assert len(mixed) >= len(epoch) // 2  # 10 % forget samples spread over the batches


def test_forget_then_retain_keeps_the_mixed_draws(digits_original, random_split):
    """Same seed: the two orders see the same relabelled forget set and retain draw."""
    a, rec_a = _run_rl(digits_original, random_split, epochs=1, retain_per_epoch=300)
    b, rec_b = _run_rl(digits_original, random_split, epochs=1, retain_per_epoch=300,
                       rl_order="forget_then_retain")
    seen_a = Counter(k for batch in rec_a.batches for k in batch)
    seen_b = Counter(k for batch in rec_b.batches for k in batch)
    assert seen_a == seen_b
    assert not all(torch.equal(p, q) for p, q in
                   zip(a.model.parameters(), b.model.parameters()))


@pytest.mark.parametrize("order", ["mixed", "forget_then_retain"])
@pytest.mark.parametrize("retain_per_epoch", [None, 200])
def test_salun_passes_the_retain_draw_and_order_through(
    digits_original, random_split, order, retain_per_epoch
):
    n_f = len(random_split.forget)
    n_r = len(random_split.retain) if retain_per_epoch is None else retain_per_epoch
    cfg = SalUnConfig(epochs=1, batch_size=BS, progress=False, device="cpu",
                      retain_per_epoch=retain_per_epoch, rl_order=order)
    res = salun(copy.deepcopy(digits_original), random_split, cfg)
    want = (math.ceil((n_f + n_r) / BS) if order == "mixed"
            else math.ceil(n_f / BS) + math.ceil(n_r / BS))
    assert res.info["steps"] == want


class _LrRecorder:
    """The lr of every optimiser step taken while active (any torch optimiser)."""

    def __enter__(self) -> list[float]:
        self.lrs: list[float] = []
        self.handle = register_optimizer_step_pre_hook(
            lambda opt, args, kwargs: self.lrs.append(opt.param_groups[0]["lr"]))
        return self.lrs

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.handle.remove()


def _cosine(lr: float, total: int) -> list[float]:
    return [lr * 0.5 * (1 + math.cos(math.pi * k / total)) for k in range(total)]


@pytest.mark.parametrize("mask", [None, "salun"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_ft_schedule_gives_the_lr_sequence(digits_original, random_split, schedule, mask):
    cfg = FTConfig(epochs=2, lr=0.02, batch_size=BS, schedule=schedule, mask=mask,
                   progress=False, device="cpu")
    total = 2 * math.ceil(len(random_split.retain) / BS)
    with _LrRecorder() as lrs:
        ft(copy.deepcopy(digits_original), random_split, cfg)
    want = [0.02] * total if schedule == "constant" else _cosine(0.02, total)
    assert lrs == pytest.approx(want, rel=1e-12, abs=1e-15)
    if schedule == "cosine":
        assert lrs[-1] < 0.001  # decays to ~0, unlike the reference's constant lr


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_rl_schedule_gives_the_lr_sequence(digits_original, random_split, schedule):
    with _LrRecorder() as lrs:
        res, _ = _run_rl(digits_original, random_split, epochs=2, retain_per_epoch=200,
                         schedule=schedule, rl_order="forget_then_retain")
    total = res.info["steps"]
    want = [0.01] * total if schedule == "constant" else _cosine(0.01, total)
    assert lrs == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_defaults_are_the_documented_recipe():
    assert RLConfig().retain_per_epoch == SalUnConfig().retain_per_epoch == 12000
    assert RLConfig().rl_order == SalUnConfig().rl_order == "mixed"
    assert FTConfig().schedule == RLConfig().schedule == "cosine"


@pytest.mark.parametrize(
    "cls, kw, match",
    [(RLConfig, {"rl_order": "retain_then_forget"}, "rl: rl_order must be one of"),
     (SalUnConfig, {"rl_order": "concat"}, "salun: rl_order must be one of"),
     (RLConfig, {"retain_per_epoch": 0}, "rl: retain_per_epoch must be a positive integer"),
     (SalUnConfig, {"retain_per_epoch": -5}, "salun: retain_per_epoch must be a positive"),
     (RLConfig, {"retain_per_epoch": 2.5}, "retain_per_epoch must be a positive integer"),
     (RLConfig, {"retain_per_epoch": True}, "retain_per_epoch must be a positive integer"),
     (RLConfig, {"retain_per_epoch": "None"}, "retain_per_epoch must be a positive integer"),
     (RLConfig, {"schedule": "step"}, "rl: schedule must be one of"),
     (FTConfig, {"schedule": "step"}, "ft: schedule must be one of")],
)
def test_config_errors(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(**kw)
