"""``compile=`` reaches every unlearning method: each method that trains runs its training
steps through :mod:`fastunlearn.kernels.compile` (counted with a stand-in compiler), the
methods without training steps say so and compile nothing, and compiled runs unlearn like
eager ones (the eager run is the reference) and return plain modules.

Real compilation is slow on CPU, so the equality tests compile with dynamo + AOT autograd and
the ``aot_eager`` backend (the same graph capture, no C++ build); one ``slow`` test uses the
default inductor backend."""

from __future__ import annotations

import functools
import logging
import shutil

import pytest
import torch

from fastunlearn.data import forget_indices
from fastunlearn.inference import accuracy
from fastunlearn.kernels import compile as fc
from fastunlearn.train import TrainConfig
from fastunlearn.unlearn import make_config, unlearn
from fastunlearn.unlearn.sisa import SISAConfig, train_sisa

_REAL_COMPILE = torch.compile
COMMON = {"device": "cpu", "progress": False}

# (method, options, compile calls expected with compile=True): tiny runs of every method that
# trains; the count is one per training loop (two_stage has two, prune IMP one per round + base)
TRAINING = {
    "ft": ("ft", {"epochs": 1}, 1),
    "ft_mask": ("ft", {"epochs": 1, "mask": "salun"}, 1),
    "retrain": ("retrain", {"epochs": 1}, 1),
    "lora_ft": ("lora_ft", {"epochs": 1}, 1),
    "prune_omp_ga": ("prune", {"base": "ga", "base_options": {"epochs": 1}}, 1),
    "prune_imp_ft": ("prune", {"kind": "imp", "imp_rounds": 2, "epochs": 1, "base": "ft",
                               "base_options": {"epochs": 1}}, 3),
    "bad_teacher": ("bad_teacher", {"epochs": 1}, 1),
    "boundary_shrink": ("boundary_shrink", {"epochs": 1}, 1),
    "l1_sparse": ("l1_sparse", {"epochs": 1}, 1),
    "neggrad_plus": ("neggrad_plus", {"epochs": 1}, 1),
    "rl": ("rl", {"epochs": 1, "retain_per_epoch": 256}, 1),
    "scrub": ("scrub", {"epochs": 1, "msteps": 1, "retain_per_epoch": 256}, 1),
    "two_stage": ("two_stage", {"epochs": 1, "stage1_steps": 1}, 2),
    "ga": ("ga", {"epochs": 1, "target_forget_acc": None}, 1),
    "salun": ("salun", {"epochs": 1, "retain_per_epoch": 256}, 1),
    "salun_ga": ("salun", {"base": "ga"}, 1),
    "ig_salun": ("ig_salun", {"epochs": 1, "retain_per_epoch": 256, "ig_steps": 2}, 1),
}
# methods without training steps: compile has no effect, and they say so
NO_TRAINING = {
    "fisher": {"num_samples": 64},
    "ssd": {"num_samples": 64, "num_forget_samples": 64},
    "influence": {"num_samples": 16, "alpha": 1.0},
    "zero_shot": {"impressions_per_class": 2, "impression_steps": 2, "epochs": 1},
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets an empty in-memory memo and its own compile-cache directory."""
    monkeypatch.setenv(fc.CACHE_ENV_VAR, str(tmp_path / "cache"))
    fc.forget_compile_decisions()
    yield
    fc.forget_compile_decisions()


@pytest.fixture
def compile_calls(monkeypatch) -> list:
    """Replace the compile entry point by a counting identity (no compilation)."""
    calls: list = []

    def fake(model):  # noqa: ANN001, ANN202
        calls.append(model)
        return model

    monkeypatch.setattr(fc, "_compile", fake)
    return calls


def _state_keys_plain(model: torch.nn.Module) -> bool:
    return not any("_orig_mod." in k for k in model.state_dict())


@pytest.mark.parametrize("case", list(TRAINING))
def test_every_training_method_compiles_its_steps(case, digits_original, class_split,
                                                  compile_calls) -> None:
    name, opts, expected = TRAINING[case]
    unlearn(digits_original, class_split, make_config(name, compile=False, **opts, **COMMON))
    assert compile_calls == []  # control: compile=False never reaches the compiler
    res = unlearn(digits_original, class_split, make_config(name, compile=True, **opts, **COMMON))
    assert len(compile_calls) == expected
    assert all(isinstance(m, torch.nn.Module) for m in compile_calls)
    assert _state_keys_plain(res.model)


def test_sisa_compiles_the_shards_it_retrains(digits, compile_calls) -> None:
    cfg = TrainConfig(epochs=1, batch_size=64, device="cpu", progress=False, eval_every=0)
    ens = train_sisa("small_cnn", digits, 2, 1, cfg)
    assert compile_calls == []  # the recipe says compile=False
    split = forget_indices(digits, [0, 1, 2])
    res = unlearn(ens, split, SISAConfig(compile=True, **COMMON))
    assert res.info["shards_retrained"] >= 1
    assert len(compile_calls) == res.info["shards_retrained"]  # one stage per shard (R = 1)
    with pytest.raises(ValueError, match="sisa: compile must be"):
        SISAConfig(compile="yes")


@pytest.mark.parametrize("name", list(NO_TRAINING))
def test_methods_without_training_steps_say_compile_has_no_effect(
    name, digits_original, class_split, compile_calls, caplog
) -> None:
    with caplog.at_level(logging.INFO, logger=f"fastunlearn.unlearn.{name}"):
        unlearn(digits_original, class_split,
                make_config(name, compile="auto", **NO_TRAINING[name], **COMMON))
    assert compile_calls == []
    lines = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"{name}: compile='auto' has no effect")


# (method, options) compiled for real and compared with eager: the TrainConfig path (ft) and
# the StepRunner paths (rl through run_epochs, neggrad_plus with its own two-batch step)
EQUAL = {
    "ft": {"epochs": 1},
    "rl": {"epochs": 1, "retain_per_epoch": 384},
    "neggrad_plus": {"epochs": 2, "beta": 0.9, "check_every": 1},
}


def _compiled_vs_eager(name, model, split, monkeypatch) -> None:  # noqa: ANN001
    """Run ``name`` eager and compiled; same accuracies and weights, plain state dict keys."""
    real_calls: list = []

    def counting(mod, **kw):  # noqa: ANN001, ANN003, ANN202
        real_calls.append(mod)
        return torch.compile(mod, **kw)

    monkeypatch.setattr(fc, "_compile", counting)
    results = {}
    for mode in (False, True):
        cfg = make_config(name, compile=mode, **EQUAL[name], **COMMON)
        results[mode] = unlearn(model, split, cfg).model
    assert len(real_calls) == 1
    eager, comp = results[False], results[True]
    assert _state_keys_plain(comp) and list(comp.state_dict()) == list(eager.state_dict())
    assert type(comp) is type(eager)
    for part in (split.forget, split.retain):
        assert accuracy(comp, part) == pytest.approx(accuracy(eager, part), abs=1.0)
    torch.testing.assert_close(comp.state_dict(), eager.state_dict(), rtol=1e-3, atol=1e-4)
    before = model.state_dict()  # the runs trained: the comparison is not of two no-ops
    assert any(not torch.equal(v, before[k]) for k, v in eager.state_dict().items())


@pytest.mark.parametrize("name", list(EQUAL))
def test_compiled_method_unlearns_like_eager_aot(name, digits_original, class_split,
                                                 monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", functools.partial(_REAL_COMPILE, backend="aot_eager"))
    _compiled_vs_eager(name, digits_original, class_split, monkeypatch)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="inductor on CPU needs a C++ compiler")
@pytest.mark.parametrize("name", ["ft", "neggrad_plus"])
def test_compiled_method_unlearns_like_eager_inductor(name, digits_original, class_split,
                                                      monkeypatch) -> None:
    _compiled_vs_eager(name, digits_original, class_split, monkeypatch)
