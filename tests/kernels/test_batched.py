"""Model-batched training: K vmapped models against K sequential ``train`` runs (the reference),
the "auto" choice and its memo, fall-backs for what the batched path does not support, and the
per-model GradScaler against ``torch.amp.GradScaler``."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from fastunlearn.data import load_dataset
from fastunlearn.kernels import batched as fb
from fastunlearn.models import create_model
from fastunlearn.train import TrainConfig

SEEDS = [3, 4, 5]


@pytest.fixture(autouse=True)
def _fresh_memo():
    fb.forget_batched_decisions()
    yield
    fb.forget_batched_decisions()


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", num_classes=4, channels=1, size=8)


def _subsets(n: int, k: int = 3, size: int = 50) -> list[torch.Tensor]:
    """``k`` different seeded random subsets (a shadow pool's "halves", made small)."""
    g = torch.Generator().manual_seed(11)
    return [torch.randperm(n, generator=g)[:size] for _ in range(k)]


def _config(**kw) -> TrainConfig:  # noqa: ANN003
    base = dict(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-4,
                warmup_epochs=0.5, label_smoothing=0.1, device="cpu", progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _assert_same(a: list[nn.Module], b: list[nn.Module], rel: float = 1e-5) -> None:
    """Every tensor of ``b`` within ``rel`` of ``a``'s in relative Frobenius norm. (Not
    elementwise: in float32 a ReLU input within rounding of 0 can take the other branch in
    one path, which moves one row of the layer before it by ~1e-5 — legitimate rounding.)"""
    assert len(a) == len(b)
    for ma, mb in zip(a, b):
        for (name, pa), pb in zip(ma.named_parameters(), mb.parameters()):
            assert pa.dtype == pb.dtype and pa.shape == pb.shape
            err = (pb - pa).norm().item()
            assert err <= rel * pa.norm().item(), (name, err, pa.norm().item())


class _Float64(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


# ---------------------------------------------------------------- the reference test -------


@pytest.mark.parametrize("name", ["small_cnn", "lenet5"])
def test_batched_equals_sequential_trainings(data, name: str) -> None:
    """K = 3 models, different subsets and seeds, 50 samples in batches of 16 (last batch: 2),
    2 epochs with warm-up, cosine lr, momentum, weight decay and label smoothing — in float64
    (inputs cast by a first layer), so rounding cannot flip a ReLU and the weights must agree
    to 1e-10."""
    subsets = _subsets(len(data.train))
    cfg = _config()

    def fn() -> nn.Module:
        return nn.Sequential(_Float64(), create_model(name, data).double())

    seq = fb.train_many(fn, data.train, cfg, SEEDS, batched=False, subsets=subsets)
    bat = fb.train_many(fn, data.train, cfg, SEEDS, batched=True, subsets=subsets)
    assert all(m.fastunlearn_batched.batched for m in bat)
    assert not any(m.fastunlearn_batched.batched for m in seq)
    _assert_same(seq, bat, rel=1e-10)
    for ms, mb in zip(seq, bat):
        hs, hb = ms.fastunlearn_history.epochs, mb.fastunlearn_history.epochs
        assert [r["train_acc"] for r in hs] == [r["train_acc"] for r in hb]
        assert [r["loss"] for r in hb] == pytest.approx([r["loss"] for r in hs], rel=1e-5)
        assert not mb.training
    # the models really differ (own init, own data) and really trained
    assert not torch.equal(_weights(bat[0])[0], _weights(bat[1])[0])
    init = fb._init(fn, SEEDS[0], torch.device("cpu"))
    assert not torch.equal(_weights(init)[-1], _weights(bat[0])[-1])


@pytest.mark.parametrize("name", ["small_cnn", "lenet5"])
def test_float32_batched_is_sequential_within_rounding(data, name: str) -> None:
    subsets = _subsets(len(data.train))

    def fn() -> nn.Module:
        return create_model(name, data)

    cfg = _config()
    _assert_same(fb.train_many(fn, data.train, cfg, SEEDS, batched=False, subsets=subsets),
                 fb.train_many(fn, data.train, cfg, SEEDS, batched=True, subsets=subsets))


def test_augmented_parts_in_lockstep_equal_sequential() -> None:
    """Augmenting data goes through each part's own ``batches`` (random crops drawn from each
    model's generator); parts given as a list."""
    aug = load_dataset("synthetic", num_classes=3, channels=1, size=8, augment=True)
    parts = [aug.train.subset(s) for s in _subsets(len(aug.train), k=2, size=40)]
    cfg = _config(epochs=1, batch_size=12, label_smoothing=0.0)

    def fn() -> nn.Module:
        return create_model("small_cnn", aug)

    seq = fb.train_many(fn, parts, cfg, [1, 2], batched=False)
    bat = fb.train_many(fn, parts, cfg, [1, 2], batched=True)
    assert bat[0].fastunlearn_batched.batched
    _assert_same(seq, bat)


def test_evaluation_and_rng_state_as_in_train(data) -> None:
    subsets = _subsets(len(data.train), k=2)
    cfg = _config(epochs=1)
    state = torch.get_rng_state()
    before = torch.rand(1)
    torch.set_rng_state(state)

    def fn() -> nn.Module:
        return create_model("lenet5", data)

    seq = fb.train_many(fn, data.train, cfg, [0, 1], batched=False, subsets=subsets,
                        eval_on={"test": data.test})
    bat = fb.train_many(fn, data.train, cfg, [0, 1], batched=True, subsets=subsets,
                        eval_on={"test": data.test})
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched
    for ms, mb in zip(seq, bat):
        assert mb.fastunlearn_history.epochs[-1]["test_acc"] == pytest.approx(
            ms.fastunlearn_history.epochs[-1]["test_acc"])


def test_cpu_training_never_initialises_cuda(data, monkeypatch) -> None:
    def no_cuda() -> None:
        raise AssertionError("CUDA was initialised by a CPU run")

    monkeypatch.setattr(torch.cuda, "_lazy_init", no_cuda)
    cfg = _config(epochs=1)
    for mode in (False, True, "auto"):
        fb.train_many(lambda: create_model("lenet5", data), [data.train] * 2, cfg,
                      batched=mode)


def test_same_seed_and_part_give_identical_models(data) -> None:
    models = fb.train_many(lambda: create_model("small_cnn", data), [data.train, data.train],
                           _config(epochs=1, batch_size=32), [7, 7], batched=True)
    assert models[0].fastunlearn_batched.batched
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------ auto -------


def _fake_times(seq: float, bat: float, calls: list):
    def fake(seq_fn, bat_fn, device, rounds=fb.ROUNDS):  # noqa: ANN001, ANN202
        calls.append(1)
        seq_fn()
        bat_fn()
        return [seq] * rounds, [bat] * rounds
    return fake


@pytest.mark.parametrize(("seq_s", "bat_s", "picks"), [(0.3, 0.1, True), (0.1, 0.3, False),
                                                    (0.103, 0.1, False)])
def test_auto_measures_once_per_key_and_says_why(data, monkeypatch, seq_s, bat_s,
                                                 picks) -> None:
    calls: list = []
    monkeypatch.setattr(fb, "_time_paths", _fake_times(seq_s, bat_s, calls))
    subsets = _subsets(len(data.train))
    cfg = _config(epochs=1)

    def fn() -> nn.Module:
        return create_model("small_cnn", data)

    first = fb.train_many(fn, data.train, cfg, SEEDS, subsets=subsets)
    again = fb.train_many(fn, data.train, cfg, [8, 9, 10], subsets=subsets)
    assert len(calls) == 1  # the second pool reuses the decision
    for d in (first[0].fastunlearn_batched, again[0].fastunlearn_batched):
        assert d.batched is picks
        assert "sequential" in d.reason and "ms" in d.reason
    # sequential is timed on the 3 models (≤ SEQ_PROBE_MODELS): 0.3 s per round as is
    assert first[0].fastunlearn_batched.sequential_step_s == pytest.approx(seq_s)
    assert first[0].fastunlearn_batched.speedup == pytest.approx(seq_s / bat_s)
    assert len(fb.batched_decisions()) == 1
    # another K is another key
    fb.train_many(fn, data.train, cfg, [1, 2], subsets=subsets[:2])
    assert len(calls) == 2


def test_auto_real_measurement_trains_like_sequential(data) -> None:
    subsets = _subsets(len(data.train), k=2)
    cfg = _config(epochs=1)

    def fn() -> nn.Module:
        return create_model("lenet5", data)

    auto = fb.train_many(fn, data.train, cfg, [0, 1], batched="auto", subsets=subsets)
    d = auto[0].fastunlearn_batched
    assert d.sequential_step_s > 0 and d.batched_step_s > 0
    assert d.batched is (d.speedup >= 1 + fb.MARGIN)
    assert f"{d.speedup:.2f}x" in d.reason
    _assert_same(fb.train_many(fn, data.train, cfg, [0, 1], batched=False, subsets=subsets),
                 auto)


# ------------------------------------------------------------------------- fall-backs -------


class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.mark.parametrize("mode", ["auto", True])
def test_batchnorm_model_falls_back_with_reason(data, caplog, mode) -> None:
    subsets = _subsets(len(data.train), k=2)
    cfg = _config(epochs=1)
    with caplog.at_level(logging.INFO, logger="fastunlearn.kernels.batched"):
        got = fb.train_many(_BNNet, data.train, cfg, [0, 1], batched=mode, subsets=subsets)
    d = got[0].fastunlearn_batched
    assert not d.batched and "BatchNorm2d at bn" in d.reason
    if mode is True:
        assert any("BatchNorm2d" in r.message and r.levelno == logging.WARNING
                   for r in caplog.records)
    ref = fb.train_many(_BNNet, data.train, cfg, [0, 1], batched=False, subsets=subsets)
    for a, b in zip(ref, got):
        for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(pa, pb)


def test_other_unsupported_cases_name_their_reason(data) -> None:
    models = [create_model("small_cnn", data) for _ in range(2)]
    parts = [data.train.subset(torch.arange(40)), data.train.subset(torch.arange(40))]
    assert fb.unsupported_reason(models, _config(), parts) is None
    cases = {
        "SGD only": (models, _config(optimizer="adamw"), parts),
        "differ in length": (models, _config(), [parts[0], data.train.subset(torch.arange(30))]),
        "Dropout": ([nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, 4))
                     for _ in range(2)], _config(), parts),
        "differ in parameter": ([models[0], create_model("small_cnn", data, hidden=64)],
                                _config(), parts),
        "one model": (models[:1], _config(), parts[:1]),
    }
    for words, (ms, cfg, ps) in cases.items():
        why = fb.unsupported_reason(ms, cfg, ps)
        assert why is not None and words in why, (words, why)
        assert not fb.resolve_batched(ms, ps, cfg, "auto").batched


def test_options_are_checked(data) -> None:
    with pytest.raises(ValueError, match="batched must be True, False or 'auto'"):
        fb.train_many(lambda: create_model("lenet5", data), [data.train], _config(),
                      batched="yes")
    with pytest.raises(ValueError, match="2 seeds for 3 parts"):
        fb.train_many(lambda: create_model("lenet5", data), [data.train] * 3, _config(),
                      [0, 1])


# ------------------------------------------------------------------------- GradScaler -------


def test_stacked_scaler_and_sgd_follow_one_gradscaler_per_model() -> None:
    """Model 1 overflows at step 0, model 2 at step 2: each skips only its own step, halves
    only its own scale, and starts its momentum when its first step happens — as K separate
    ``torch.amp.GradScaler`` + ``torch.optim.SGD`` do."""
    k, shape, lr, mom, wd = 3, (4, 5), 0.1, 0.9, 1e-2
    g = torch.Generator().manual_seed(0)
    start = torch.randn(k, *shape, generator=g)
    grads = [torch.randn(k, *shape, generator=g) for _ in range(4)]
    grads[0][1, 2, 3] = float("inf")
    grads[2][2, 0, 0] = float("nan")
    # reference: one parameter, optimiser and scaler per model
    ref = []
    for i in range(k):
        p = nn.Parameter(start[i].clone())
        opt = torch.optim.SGD([p], lr=lr, momentum=mom, weight_decay=wd)
        scaler = torch.amp.GradScaler("cpu")
        scales = []
        for step_grads in grads:
            loss = (p * step_grads[i]).sum()  # d loss / dp = the given gradient
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        ref.append((p.detach(), scales))
    # stacked
    stacked = start.clone()
    scaler = fb.StackedScaler(k, torch.device("cpu"))
    bufs: list[torch.Tensor | None] = [None]
    scales = []
    for step_grads in grads:
        grad = step_grads * scaler.scale.view(k, 1, 1)  # what backward of the scaled loss gives
        ok = scaler.unscale_([grad])
        fb.stacked_sgd_([stacked], [grad], bufs, lr, mom, wd, ok=ok)
        scaler.update(ok)
        scales.append(scaler.scale.tolist())
    for i, (p, ref_scales) in enumerate(ref):
        torch.testing.assert_close(stacked[i], p, rtol=1e-6, atol=1e-7)
        assert [s[i] for s in scales] == ref_scales
    assert scales[-1] == [2.0**16, 2.0**15, 2.0**15]


# ------------------------------------------------------------------------------- GPU -------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batched_equals_sequential_and_auto_batches_32_small_cnns(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    data = load_dataset("synthetic", num_classes=10, channels=1, size=28, train_per_class=40)
    subsets = _subsets(len(data.train), k=3, size=100)

    def fn() -> nn.Module:
        return create_model("small_cnn", data)

    cfg = _config(device="cuda", amp=False, batch_size=32)
    _assert_same(fb.train_many(fn, data.train, cfg, SEEDS, batched=False, subsets=subsets),
                 fb.train_many(fn, data.train, cfg, SEEDS, batched=True, subsets=subsets),
                 rel=1e-4)
    amp = _config(device="cuda", amp=True, batch_size=32, lr=0.01)
    _assert_same(fb.train_many(fn, data.train, amp, SEEDS, batched=False, subsets=subsets),
                 fb.train_many(fn, data.train, amp, SEEDS, batched=True, subsets=subsets),
                 rel=1e-2)
    pool = _subsets(len(data.train), k=32, size=256)
    cfg = _config(device="cuda", batch_size=128, epochs=1)
    got = fb.train_many(fn, data.train, cfg, list(range(32)), subsets=pool)
    d = got[0].fastunlearn_batched
    assert d.batched, d.reason
