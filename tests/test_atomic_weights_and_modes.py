"""Two reliability leftovers of issue 13: ``predict_logits`` gives every submodule its own
train/eval mode back (it used ``model.train(was_training)``), and ``save_weights`` replaces its
file atomically with the umask's permissions (it wrote in place)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from fastunlearn.inference import predict_logits
from fastunlearn.models import create_model
from fastunlearn.models.weights import load_weights, save_weights


def test_predict_logits_restores_every_submodules_mode(digits):
    model = create_model("resnet18", digits).train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    before = {n: m.training for n, m in model.named_modules()}
    predict_logits(model, digits.test.take(4))
    assert {n: m.training for n, m in model.named_modules()} == before


def test_save_weights_is_atomic(tmp_path, digits, monkeypatch):
    path = tmp_path / "w.safetensors"
    old = create_model("small_cnn", digits)
    save_weights(old, path)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()
    new = create_model("small_cnn", digits)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(1.0)

    def full_disk(fd):  # noqa: ANN001 - the write fails at its flush (ENOSPC)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_weights(new, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temp left
    back = load_weights(create_model("small_cnn", digits), path)
    for a, b in zip(back.state_dict().values(), old.state_dict().values()):
        assert torch.equal(a, b)  # the previous file, whole


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
