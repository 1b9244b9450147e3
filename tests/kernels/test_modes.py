"""Issue 13 item 14: helpers that switch a model to eval must give every submodule its own
mode back — a training model whose batch-norm layers were deliberately frozen in eval used to
come back with them training (``model.train(was_training)`` overwrites every flag)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastunlearn._modes import eval_mode, preserve_modes
from fastunlearn.evaluate import drift
from fastunlearn.kernels import (
    fast_fisher_diagonal,
    fisher_diagonal,
    integrated_gradients,
    per_sample_grads,
    torch_per_sample_grads_loop,
)
from fastunlearn.kernels.compile import _preserved
from fastunlearn.models import create_model


@pytest.fixture()
def frozen_bn_resnet(digits):
    """timm resnet18 in training mode with every BatchNorm frozen in eval."""
    model = create_model("resnet18", digits).train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def _batch(digits, n=4):
    x, y = digits.train.subset(torch.arange(n)).tensors()
    return x, y


def test_fixture_has_mixed_modes(frozen_bn_resnet):
    modes = _modes(frozen_bn_resnet)
    assert modes[""] and not modes["bn1"] and modes["layer1.0"] and not modes["layer1.0.bn1"]


@pytest.mark.parametrize("call", [
    pytest.param(lambda m, x, y, d: fisher_diagonal(m, x, y), id="fisher_diagonal"),
    pytest.param(lambda m, x, y, d: fisher_diagonal(m, x, y, impl="reference"),
                 id="fisher_diagonal-reference"),
    pytest.param(lambda m, x, y, d: fast_fisher_diagonal(m, x, y), id="fast_fisher_diagonal"),
    pytest.param(lambda m, x, y, d: per_sample_grads(m, x, y), id="per_sample_grads"),
    pytest.param(lambda m, x, y, d: torch_per_sample_grads_loop(m, x[:2], y[:2]),
                 id="per_sample_grads_loop"),
    pytest.param(lambda m, x, y, d: integrated_gradients(m, (x, y), steps=2),
                 id="integrated_gradients"),
    pytest.param(lambda m, x, y, d: drift.block_activations(m, d.test.take(8)),
                 id="block_activations"),
    pytest.param(lambda m, x, y, d: drift.penultimate_features(m, d.test.take(8)),
                 id="penultimate_features"),
    pytest.param(lambda m, x, y, d: drift.penultimate_by_hook(m, d.test.take(8)),
                 id="penultimate_by_hook"),
])
def test_helpers_restore_every_module_mode(frozen_bn_resnet, digits, call):
    x, y = _batch(digits)
    before = _modes(frozen_bn_resnet)
    call(frozen_bn_resnet, x, y, digits)
    assert _modes(frozen_bn_resnet) == before


def test_compile_probe_restores_every_module_mode(frozen_bn_resnet, digits):
    x, y = _batch(digits)
    before = _modes(frozen_bn_resnet)
    with _preserved(frozen_bn_resnet, torch.device("cpu")):
        frozen_bn_resnet.train()  # what the probe loops do
        frozen_bn_resnet(x)
    assert _modes(frozen_bn_resnet) == before


def test_eval_mode_and_preserve_modes_restore_on_error(frozen_bn_resnet):
    before = _modes(frozen_bn_resnet)
    with pytest.raises(RuntimeError), eval_mode(frozen_bn_resnet):
        assert not any(_modes(frozen_bn_resnet).values())
        raise RuntimeError("boom")
    assert _modes(frozen_bn_resnet) == before
    with pytest.raises(RuntimeError), preserve_modes(frozen_bn_resnet):
        frozen_bn_resnet.train()
        raise RuntimeError("boom")
    assert _modes(frozen_bn_resnet) == before


def test_compile_cache_file_respects_the_umask(tmp_path):
    """Issue 13 item 3, for the compile-decision cache (mkstemp made it 0600)."""
    import os

    from fastunlearn.kernels.compile import CompileDecision, _read_cache, _write_entry

    old = os.umask(0o022)
    try:
        _write_entry(tmp_path / "compile.json", "k", CompileDecision(False, "test"))
    finally:
        os.umask(old)
    assert (tmp_path / "compile.json").stat().st_mode & 0o777 == 0o644
    assert _read_cache(tmp_path / "compile.json")["k"]["reason"] == "test"
