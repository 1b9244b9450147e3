"""Issue 14 leftovers: third-party methods (entry points, module paths, study workers), the
model staying on its device under ``device="auto"``, and the caller's global RNG state left
as it was found.

``plugin_method`` (beside this file) defines the method ``plugin_noise``; each test that
registers it removes it again, so the rest of the session sees the built-ins only.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import sys

import numpy as np
import pytest
import torch
from test_no_test_reads import CHEAP, _model_for
from torch import nn

import fastunlearn as fu
from fastunlearn.unlearn import _registry, list_methods, make_config, unlearn
from fastunlearn.unlearn.base import method_device

PLUGIN_MODULE = "plugin_method"
PLUGIN = "plugin_noise"
BUILTIN_METHODS = sorted(list_methods())  # at collection: the plugin is never among them


@pytest.fixture()
def no_plugin(monkeypatch):
    """Forget the plugin before and after the test; plugin discovery (entry points and
    ``$FASTUNLEARN_METHODS``) runs again on the next lookup and is reset afterwards."""
    def forget():
        _registry._METHODS.pop(PLUGIN, None)
        sys.modules.pop(PLUGIN_MODULE, None)
        fu.__dict__.pop("PluginNoiseConfig", None)

    forget()
    monkeypatch.setattr(_registry, "_plugins_loaded", False)
    monkeypatch.delenv(_registry.ENV_VAR, raising=False)
    yield
    forget()


@pytest.fixture()
def plugin(no_plugin):
    assert fu.register_methods_from(PLUGIN_MODULE) == [PLUGIN]
    return PLUGIN


def _rng_states():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _assert_rng_states_equal(a, b, where: str) -> None:
    assert torch.equal(a[0], b[0]), f"{where} changed torch's global RNG state"
    assert a[1] == b[1], f"{where} changed Python's random state"
    assert a[2][0] == b[2][0] and np.array_equal(a[2][1], b[2][1]) and a[2][2:] == b[2][2:], (
        f"{where} changed numpy's global RNG state")


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------ plugins
def test_register_methods_from_a_module_path(plugin, class_split, digits_original):
    assert PLUGIN in list_methods()
    assert list_methods()[PLUGIN] == "Test plugin: seeded Gaussian noise on every weight."
    cfg = make_config(PLUGIN, scale=0.01, progress=False)
    assert type(cfg).__name__ == "PluginNoiseConfig" and fu.PluginNoiseConfig is type(cfg)
    res = fu.unlearn(digits_original, class_split, cfg)
    assert res.info["ran_on"] == "cpu" and not res.info["unchanged"]
    assert _registry.method_module(PLUGIN) == PLUGIN_MODULE
    assert _registry.method_module("ga") is None  # built-ins need no import in workers
    assert fu.register_methods_from(PLUGIN_MODULE) == []  # imported already: nothing new


def test_register_methods_from_a_missing_module_raises(no_plugin):
    with pytest.raises(ModuleNotFoundError, match="no_such_fastunlearn_plugin"):
        fu.register_methods_from("no_such_fastunlearn_plugin")
    with pytest.raises(TypeError, match="module paths"):
        fu.register_methods_from("")


def test_entry_point_plugins_load_and_a_broken_one_is_only_logged(no_plugin, tmp_path,
                                                                   monkeypatch, caplog):
    dist = tmp_path / "fu_test_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fu-test-plugins\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{_registry.ENTRY_POINT_GROUP}]\nbroken = no_such_fastunlearn_plugin\n"
        f"noise = {PLUGIN_MODULE}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger=_registry.__name__):
        methods = list_methods()
    assert PLUGIN in methods and "ga" in methods
    assert "entry point 'broken'" in caplog.text and "no_such_fastunlearn_plugin" in caplog.text


def test_env_var_plugins_load_and_a_broken_one_is_only_logged(no_plugin, monkeypatch, caplog):
    monkeypatch.setenv(_registry.ENV_VAR, f" no_such_fastunlearn_plugin , {PLUGIN_MODULE},")
    with caplog.at_level(logging.WARNING, logger=_registry.__name__):
        assert _registry.get_method(PLUGIN).name == PLUGIN
    assert "no_such_fastunlearn_plugin" in caplog.text and "FASTUNLEARN_METHODS" in caplog.text
    assert "salun" in list_methods()


def test_a_plugin_method_runs_in_a_process_pool_worker(plugin, tmp_path):
    """The worker is a fresh (spawned) interpreter: without importing the method's module
    there, the run fails with "unknown method 'plugin_noise'"."""
    tiny = {"dataset": "digits", "epochs": 1, "method_epochs": 1, "mia_samples": 200,
            "cka": False, "progress": False, "threads": 1}
    res = fu.studies.run("cost-quality", out=str(tmp_path / "cq"), executor="process",
                         workers=1, methods=(PLUGIN,), **tiny)
    rows = [r for r in res.rows if r["method"] == PLUGIN]
    assert len(rows) == 1 and rows[0]["status"] == "ok", rows[0]["failure"]
    saved = json.loads((tmp_path / "cq" / "runs" / rows[0]["key"] / "result.json").read_text())
    assert saved["run"]["method_module"] == PLUGIN_MODULE
    assert saved["info"]["ran_on"] == "cpu"


# ------------------------------------------------------------------------- device
def test_method_device_is_the_models_own_unless_named():
    meta = nn.Linear(3, 2, device="meta")
    assert method_device(meta, make_config("ga")) == torch.device("meta")  # "auto"
    assert method_device(meta, make_config("ga", device="cpu")) == torch.device("cpu")
    assert method_device(nn.ReLU(), make_config("ft")) == torch.device("cpu")  # no parameters
    with pytest.raises(ValueError, match="CUDA is not available"):
        method_device(meta, make_config("ga", device="cuda"))


def test_explicit_cpu_device_keeps_the_model_on_cpu(class_split, digits_original):
    res = unlearn(digits_original, class_split, make_config("ga", device="cpu", progress=False))
    assert {p.device.type for p in res.model.parameters()} == {"cpu"}
    assert res.config.device == "cpu"


# -------------------------------------------------------------- device and RNG, every method
def _cuda_for_fastunlearn_device_resolution():
    """``torch.cuda.is_available`` answering True to fastunlearn's device resolution
    (``fastunlearn/_device.py``: ``"auto"`` would mean CUDA) and the truth to everything else
    (torch's own checks, e.g. Adam's, must not try to initialise CUDA here)."""
    real = torch.cuda.is_available

    def is_available() -> bool:
        caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
        return caller.endswith("fastunlearn/_device.py") or real()

    return is_available


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_method_stays_on_the_models_device_and_leaves_the_global_rng(
        name, class_split, digits, digits_original, monkeypatch):
    """With ``device="auto"`` and a machine that *says* it has CUDA, the CPU model stays on
    the CPU (moving it to CUDA would fail here); the global RNG states (torch, Python, numpy,
    CUDA's pending seed) are those before the call; the caller's global seed does not change
    the result."""
    model = _model_for(name, digits, digits_original)
    cfg = make_config(name, progress=False, **CHEAP.get(name, {}))
    assert cfg.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", _cuda_for_fastunlearn_device_resolution())
    results = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        random.seed(caller_seed)
        np.random.seed(caller_seed)
        before = _rng_states()
        lazy = dict(vars(torch.cuda._lazy_seed_tracker))
        res = unlearn(model, class_split, cfg)
        _assert_rng_states_equal(before, _rng_states(), name)
        assert dict(vars(torch.cuda._lazy_seed_tracker)) == lazy, (
            f"{name} changed the seed CUDA would get when initialised")
        assert {p.device.type for p in res.model.parameters()} == {"cpu"}
        assert res.config is cfg and cfg.device == "auto"
        results.append(res.model)
    assert _same_weights(*results), f"{name}: the caller's global seed changed the result"


def test_dropout_in_a_method_that_seeds_nothing_follows_the_config_seed(class_split):
    """``delete`` draws from no global RNG itself, but a user model's dropout does: the
    global RNG is seeded from ``config.seed`` inside ``fu.unlearn``, so the caller's seed
    changes nothing and ``config.seed`` does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(32, 10))
    runs = {}
    for caller_seed, seed in ((1, 0), (2, 0), (1, 1)):
        torch.manual_seed(caller_seed)
        cfg = make_config("delete", epochs=1, seed=seed, progress=False)
        runs[caller_seed, seed] = unlearn(model, class_split, cfg).model
    assert _same_weights(runs[1, 0], runs[2, 0])
    assert not _same_weights(runs[1, 0], runs[1, 1])


def test_a_plugin_seeding_every_global_rng_leaves_them(plugin, class_split, digits_original):
    cfg = make_config(PLUGIN, progress=False)
    results = []
    for caller_seed in (5, 6):
        torch.manual_seed(caller_seed)
        random.seed(caller_seed)
        np.random.seed(caller_seed)
        before = _rng_states()
        results.append(unlearn(digits_original, class_split, cfg).model)
        _assert_rng_states_equal(before, _rng_states(), PLUGIN)
    assert _same_weights(*results)


# -------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_stays_an_explicit_device_moves_and_cuda_rng_is_kept(class_split,
                                                                       digits_original):
    cfg = make_config("ga", progress=False, epochs=1)
    on_gpu = copy.deepcopy(digits_original).to("cuda")  # Module.to works in place
    torch.cuda.manual_seed(7)
    cuda_before = torch.cuda.get_rng_state()
    res = unlearn(on_gpu, class_split, cfg)
    assert {p.device.type for p in res.model.parameters()} == {"cuda"}
    assert torch.equal(torch.cuda.get_rng_state(), cuda_before)
    res = unlearn(digits_original, class_split, make_config("ga", progress=False,
                                                            device="cuda"))
    assert {p.device.type for p in res.model.parameters()} == {"cuda"}
    assert {p.device.type for p in digits_original.parameters()} == {"cpu"}
    res = unlearn(digits_original, class_split, cfg)  # "auto": CUDA is there, the model is not
    assert {p.device.type for p in res.model.parameters()} == {"cpu"}
