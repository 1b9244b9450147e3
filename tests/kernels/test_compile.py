"""Compiled training steps: option validation, compiled vs eager equality (the eager loop is the
reference), the "auto" decision, its cache, and failures.

Real compilation is slow on CPU, so the fast tests compile with dynamo + AOT autograd and the
``aot_eager`` backend (the same graph capture, no C++ build), or replace ``torch.compile`` by
a stand-in; one ``slow`` test runs the default inductor backend."""

from __future__ import annotations

import functools
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastunlearn.engine.runner import StepRunner, run_epochs
from fastunlearn.kernels import compile as fc
from fastunlearn.train import TrainConfig, train
from fastunlearn.unlearn.base import UnlearnConfig
from fastunlearn.unlearn.ft import FTConfig

_REAL_COMPILE = torch.compile


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets an empty in-memory memo and its own cache directory."""
    monkeypatch.setenv(fc.CACHE_ENV_VAR, str(tmp_path / "cache"))
    fc.forget_compile_decisions()
    yield
    fc.forget_compile_decisions()


def _tiny(size: int = 7, classes: int = 4) -> nn.Module:
    """conv → BatchNorm → ReLU → linear for 1-channel ``size``² images."""
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * (size - 2) ** 2, classes))


def _identity_compile(calls: list | None = None):
    """A stand-in for torch.compile that returns the module itself (no compilation)."""
    def fake(model, **kw):  # noqa: ANN001, ANN003, ANN202 - torch.compile's signature
        if calls is not None:
            calls.append(model)
        return model
    return fake


def _fake_times(eager: float, compiled: float, counter: list):
    def fake(eager_step, compiled_step, device, rounds=fc.ROUNDS):  # noqa: ANN001, ANN202
        counter.append(1)
        return [eager] * rounds, [compiled] * rounds
    return fake


# ------------------------------------------------------------------------- options ----------


@pytest.mark.parametrize("value", [False, True, "auto"])
def test_valid_modes(value) -> None:  # noqa: ANN001
    assert fc.check_compile_mode(value) is value
    assert TrainConfig(compile=value).compile is value
    assert FTConfig(compile=value).compile is value


@pytest.mark.parametrize("value", ["yes", "Auto", 1, 0, None, "max-autotune"])
def test_bad_modes_are_one_line_errors(value) -> None:  # noqa: ANN001
    for make in (lambda: TrainConfig(compile=value), lambda: FTConfig(compile=value),
                 lambda: UnlearnConfig(compile=value)):
        with pytest.raises(ValueError, match="compile must be True, False or 'auto'") as err:
            make()
        assert "\n" not in str(err.value)


def test_cache_file_location(tmp_path, monkeypatch) -> None:
    assert fc.cache_file(tmp_path / "x.json") == tmp_path / "x.json"
    assert fc.cache_file() == tmp_path / "cache" / "compile.json"
    monkeypatch.delenv(fc.CACHE_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fc.cache_file() == tmp_path / "xdg" / "fastunlearn" / "compile.json"


def test_key_ignores_weights_but_not_shapes() -> None:
    dev = torch.device("cpu")
    x = torch.randn(4, 1, 7, 7)
    k1, _ = fc.decision_key(_tiny(), x, dev)
    k2, _ = fc.decision_key(_tiny(), x, dev)
    assert k1 == k2  # another instance of the same architecture
    assert fc.decision_key(_tiny(), x[:3], dev)[0] != k1
    assert fc.decision_key(_tiny(), x.double(), dev)[0] != k1
    assert fc.decision_key(nn.Sequential(nn.Flatten(), nn.Linear(49, 4)), x, dev)[0] != k1


# --------------------------------------------------------- compiled equals eager ----------


def _train_weights(synthetic, mode) -> tuple[nn.Module, torch.Tensor]:  # noqa: ANN001
    torch.manual_seed(3)
    model = _tiny(8, synthetic.num_classes)
    cfg = TrainConfig(epochs=1, batch_size=100, lr=0.1, device="cpu", progress=False,
                      eval_every=0, compile=mode)
    part = synthetic.train.take(230, seed=0)  # batches of 100, 100 and a short one of 30
    out = train(model, part, cfg)
    return out, torch.cat([t.flatten() for t in out.state_dict().values()]).float()


def _check_compiled_training(synthetic) -> None:  # noqa: ANN001
    eager, w_eager = _train_weights(synthetic, False)
    comp, w_comp = _train_weights(synthetic, True)
    assert comp.fastunlearn_history.compiled and not eager.fastunlearn_history.compiled
    assert type(comp) is nn.Sequential  # the original module, not the OptimizedModule
    assert not any(k.startswith("_orig_mod") for k in comp.state_dict())
    assert list(comp.state_dict()) == list(eager.state_dict())
    loss_e = eager.fastunlearn_history.epochs[0]["loss"]
    loss_c = comp.fastunlearn_history.epochs[0]["loss"]
    assert loss_c == pytest.approx(loss_e, rel=1e-4)
    torch.testing.assert_close(w_comp, w_eager, rtol=1e-4, atol=1e-5)


def test_compile_true_trains_like_eager_aot(synthetic, monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", functools.partial(_REAL_COMPILE, backend="aot_eager"))
    _check_compiled_training(synthetic)


@pytest.mark.slow
def test_compile_true_trains_like_eager_inductor(synthetic) -> None:
    _check_compiled_training(synthetic)


def test_step_runner_compiled_matches_eager(synthetic, monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", functools.partial(_REAL_COMPILE, backend="aot_eager"))
    part = synthetic.train.take(70, seed=1)  # batches of 32, 32, 6
    weights = []
    for mode in (False, True):
        torch.manual_seed(0)
        model = _tiny(8, synthetic.num_classes)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        runner = StepRunner(opt, 0.1, 6, progress=False, compile=mode)
        seen = []

        def loss_fn(m, x, y, seen=seen):  # noqa: ANN001, ANN202
            seen.append(type(m).__name__)
            return F.cross_entropy(m(x), y)

        gen = torch.Generator().manual_seed(0)
        assert run_epochs(model, part, loss_fn, runner, 2, 32, gen, torch.device("cpu"))
        runner.close()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        if mode:  # full batches compiled, the short last batch eager
            assert seen == ["OptimizedModule", "OptimizedModule", "Sequential"] * 2
        else:
            assert set(seen) == {"Sequential"}
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------- auto ----------


def test_auto_measures_once_and_caches(monkeypatch, tmp_path) -> None:
    compiles, timings = [], []
    monkeypatch.setattr(torch, "compile", _identity_compile(compiles))
    monkeypatch.setattr(fc, "measure_step_times", _fake_times(2.0, 1.0, timings))
    x = torch.randn(5, 1, 7, 7)
    assert fc.resolve_compile(_tiny(), x, "auto", "cpu") is True
    assert fc.resolve_compile(_tiny(), x, "auto", "cpu") is True
    assert len(timings) == 1  # the second call used the in-memory decision
    path = fc.cache_file()
    entries = json.loads(path.read_text())["entries"]
    assert len(entries) == 1
    entry = next(iter(entries.values()))
    assert entry["compiled"] is True and entry["speedup"] == pytest.approx(2.0)
    assert entry["compile_s"] >= 0 and "Sequential" in entry["description"]
    fc.forget_compile_decisions()  # a new process: the file answers
    fwd = fc.compiled_forward(_tiny(), x, "auto", "cpu")
    assert fwd.compiled and len(timings) == 1
    assert fc._read_cache(path) == entries  # round trip
    # another input shape is another key: measured again
    assert fc.resolve_compile(_tiny(), x[:2], "auto", "cpu") is True
    assert len(timings) == 2 and len(json.loads(path.read_text())["entries"]) == 2
    # an explicit cache_path wins over the environment
    own = tmp_path / "own.json"
    fc.forget_compile_decisions()
    fc.resolve_compile(_tiny(), x, "auto", "cpu", cache_path=own)
    assert own.exists() and len(timings) == 3


def test_auto_picks_eager_when_compiled_is_slower(monkeypatch) -> None:
    compiles, timings = [], []
    monkeypatch.setattr(torch, "compile", _identity_compile(compiles))
    monkeypatch.setattr(fc, "measure_step_times", _fake_times(1.0, 0.98, timings))
    model, x = _tiny(), torch.randn(5, 1, 7, 7)
    fwd = fc.compiled_forward(model, x, "auto", "cpu")  # 2 % faster is below the margin
    assert not fwd.compiled and fwd.module_for(x) is model
    assert fc.resolve_compile(_tiny(), x, "auto", "cpu") is False
    assert len(timings) == 1 and len(compiles) == 1  # cached eager: no compile either
    entry = next(iter(json.loads(fc.cache_file().read_text())["entries"].values()))
    assert entry["compiled"] is False and "needs" in entry["reason"]


def test_auto_measurement_leaves_no_trace(monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", _identity_compile())
    monkeypatch.setattr(fc, "ROUNDS", 2)
    model, x = _tiny().train(), torch.randn(6, 1, 7, 7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fc.resolve_compile(model, x, "auto", "cpu")
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    model(x)  # the steps did move the BatchNorm statistics; the measurement put them back
    assert not torch.equal(model.state_dict()["1.running_mean"], before["1.running_mean"])


def test_corrupt_cache_is_ignored(monkeypatch, caplog) -> None:
    timings: list = []
    monkeypatch.setattr(torch, "compile", _identity_compile())
    monkeypatch.setattr(fc, "measure_step_times", _fake_times(2.0, 1.0, timings))
    path = fc.cache_file()
    path.parent.mkdir(parents=True)
    for bad in ["{not json", '{"format": 1, "entries": {"k": {"nope": 1}}}', "[1, 2]"]:
        path.write_text(bad)
        fc.forget_compile_decisions()
        with caplog.at_level(logging.WARNING, logger=fc.__name__):
            assert fc.resolve_compile(_tiny(), torch.randn(3, 1, 7, 7), "auto", "cpu")
        assert "ignoring corrupt compile cache" in caplog.text
        caplog.clear()
        assert json.loads(path.read_text())["format"] == 1  # rewritten whole
    assert len(timings) == 3


def test_compile_failure_falls_back_for_auto_and_explains_for_true(monkeypatch, caplog) -> None:
    def broken(model, **kw):  # noqa: ANN001, ANN003, ANN202
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    x = torch.randn(3, 1, 7, 7)
    with caplog.at_level(logging.WARNING, logger=fc.__name__):
        assert fc.resolve_compile(_tiny(), x, "auto", "cpu") is False
        assert fc.resolve_compile(_tiny(), x, "auto", "cpu") is False
    assert len([r for r in caplog.records if "running eagerly" in r.message]) == 1
    assert not fc.cache_file().exists()  # a failure is not written to the file
    with pytest.raises(RuntimeError, match="set compile=False") as err:
        fc.resolve_compile(_tiny(), x, True, "cpu")
    assert "\n" not in str(err.value) and "No working C++ compiler" in str(err.value)


def test_failure_in_the_first_compiled_step(monkeypatch) -> None:
    """Compilation is lazy: errors surface on the first call, which the probe step makes."""
    class Exploding(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            raise RuntimeError("BackendCompilerFailed: unsupported op")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: Exploding())
    model, x = _tiny(), torch.randn(3, 1, 7, 7)
    with pytest.raises(RuntimeError, match="unsupported op.*set compile=False"):
        fc.compiled_forward(model, x, True, "cpu")
    fwd = fc.compiled_forward(model, x, "auto", "cpu")
    assert not fwd.compiled and fwd(x).shape == (3, 4)


def test_auto_skips_compiling_when_a_short_run_cannot_win_it_back(monkeypatch) -> None:
    compiles, timings = [], []
    monkeypatch.setattr(torch, "compile", _identity_compile(compiles))
    monkeypatch.setattr(fc, "measure_step_times", _fake_times(0.3, 0.1, timings))
    x = torch.randn(3, 1, 7, 7)
    assert fc.resolve_compile(_tiny(), x, "auto", "cpu", expected_steps=2)  # measured: sunk
    (entry,) = fc._MEMO.values()
    entry.compile_s = 10.0  # a cached decision: compiled saves 0.2 s a step, compiling 10 s
    fc._WARM.clear()  # as in a new process that has not compiled this model yet
    assert not fc.resolve_compile(_tiny(), x, "auto", "cpu", expected_steps=40)
    assert len(compiles) == 1  # not even compiled
    assert fc.resolve_compile(_tiny(), x, "auto", "cpu", expected_steps=60)
    assert fc.resolve_compile(_tiny(), x, "auto", "cpu", expected_steps=2)  # warm now: free
    fc._WARM.clear()
    assert fc.resolve_compile(_tiny(), x, "auto", "cpu")  # unknown length: compiled
    assert fc.resolve_compile(_tiny(), x, True, "cpu", expected_steps=1)  # True always is
    assert len(timings) == 1
