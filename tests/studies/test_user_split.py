"""Studies and the audit on a user's own split and model (issue 14): a plain ``nn.Module``
factory and a ``TensorDataset`` with the user's own normalisation, no fastunlearn names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import fastunlearn as fu
from fastunlearn.data import ForgetSplit, load_dataset
from fastunlearn.models import create_model
from fastunlearn.studies.audit import audit
from fastunlearn.studies.user import register_user_data, register_user_model


class TinyNet(nn.Module):
    """A user's classifier for 8×8 digits (not from fu.create_model)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.head = nn.Linear(16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


@pytest.fixture(scope="module")
def user_split() -> ForgetSplit:
    """sklearn digits through the user's own pipeline: float tensors normalised with their
    own train mean/std; forget = 30 given training indices."""
    import sklearn.datasets

    d = sklearn.datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[:1400], perm[1400:]
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    forget = torch.randperm(1400, generator=g)[:30].tolist()
    return ForgetSplit.from_datasets(TensorDataset(x[tr], y[tr]), forget=forget,
                                     test=TensorDataset(x[te], y[te]), val=0.1, seed=0,
                                     classes=[str(i) for i in range(10)])


def test_registration_is_content_named_and_rebuilds_the_split(user_split):
    name = register_user_data(user_split)
    assert name.startswith("user:") and register_user_data(user_split) == name
    data = load_dataset(name)
    assert data is user_split.data
    model = create_model(register_user_model(TinyNet), data)
    assert isinstance(model, TinyNet) and model.fastunlearn_spec["name"].startswith("user:")
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_cost_quality_study_on_a_user_split(user_split, tmp_path):
    kw = {"epochs": 3, "methods": ("ft", "ga"), "method_epochs": 2, "mia_samples": 100,
          "cka": False, "progress": False, "threads": 1, "out": str(tmp_path / "cq"),
          "pool": str(tmp_path / "pool")}
    res = fu.studies.run("cost-quality", split=user_split, model_fn=TinyNet, **kw)
    rows = {r["method"]: r for r in res.rows}
    assert {"original", "ft", "ga", "retrain"} <= set(rows)
    assert res.counts["pool_trained"] == 2  # the user's original and gold retrain
    for r in rows.values():  # every run is the user's data, model and forget set
        assert r["dataset"].startswith("user:") and r["model"].endswith("tinynet")
        assert "indices" in str(r["forget"]) and np.isfinite(float(r["test_acc"]))
    assert float(rows["original"]["retain_acc"]) > 50  # the user's model really trained
    assert np.isfinite(float(rows["ft"]["avg_gap"]))
    assert float(rows["ft"]["js_to_retrain"]) != float(rows["original"]["js_to_retrain"])
    again = fu.studies.run("cost-quality", split=user_split, model_fn=TinyNet, **kw)
    assert again.counts["ran"] == 0 and again.counts["pool_trained"] == 0  # resumed


def test_audit_on_a_user_split(user_split, tmp_path):
    res = audit(methods=("ft",), split=user_split, model_fn=TinyNet, epochs=15, lr=0.05,
                batch_size=32, shadows=8, probe_shadows=0, progress=False, device="cpu",
                method_options={"ft": {"epochs": 5, "lr": 0.05}}, out=str(tmp_path / "a"),
                pool=str(tmp_path / "apool"))
    rows = {r["method"]: r for r in res.rows}
    assert set(rows) == {"original", "ft", "retrain"}
    assert res.counts["pool_trained"] == 3 * 8
    for r in rows.values():
        assert 0 <= r["forget_score"] <= 1 and 0 <= r["ulira_auc"] <= 1
    assert "30 given training samples" in res.report.read_text()


def test_user_split_errors(user_split):
    with pytest.raises(ValueError, match="needs model_fn="):
        fu.studies.run("cost-quality", split=user_split, methods=("ft",))
    with pytest.raises(ValueError, match="executor='local'"):
        fu.studies.run("cost-quality", split=user_split, model_fn=TinyNet, methods=("ft",),
                       executor="process")
    with pytest.raises(ValueError, match="goes with split="):
        audit(methods=("ft",), model_fn=TinyNet)
    with pytest.raises(TypeError, match="ForgetSplit"):
        register_user_data(load_dataset("digits"))
