"""benchmarks/tune_on_val.py (issue 16): the tuning function reads no test image (the test
images are instrumented as in test_no_test_reads.py), scores each run with the documented val
gap, and selects the argmin; the grid is read from the config dataclasses."""

from __future__ import annotations

import csv
import dataclasses
import importlib
from pathlib import Path
from types import ModuleType

import pytest
import torch
from guarded_data import ForbiddenRead, GuardedImages, forbid  # tests/unlearn/

from fastunlearn.data import forget_classes, forget_random
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.inference import accuracy, predict_logits
from fastunlearn.unlearn import make_config

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _retain_ref(original, split) -> float:
    """The val-retain reference, computed by hand: on class forgetting the original's
    predictions over the retained classes only."""
    if split.kind != "class":
        return accuracy(original, split.val)
    logits = predict_logits(original, split.val_retain)
    keep = [c for c in range(logits.shape[1]) if c not in split.forget_class_ids]
    pred = torch.tensor(keep)[logits[:, keep].argmax(1)]
    hits = int((pred == split.val_retain.labels).sum())
    return 100.0 * hits / len(split.val_retain)


def sel_m(sweep, setting) -> float:
    return sweep.selected()[("ft", setting)]["val_gap_m"]


def _loss_auc(model, members, heldout) -> float:
    """ROC AUC of "lower cross-entropy ⇒ member", by hand with scikit-learn."""
    from sklearn.metrics import roc_auc_score

    losses = []
    for part in (members, heldout):
        logits = predict_logits(model, part)
        losses.append(torch.nn.functional.cross_entropy(
            logits.double(), part.labels.long(), reduction="none"))
    y = [1] * len(losses[0]) + [0] * len(losses[1])
    return float(roc_auc_score(y, (-torch.cat(losses)).numpy()))


@pytest.fixture
def tov(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("tune_on_val")


def test_grid_reads_the_config_defaults(tov: ModuleType) -> None:
    ft = make_config("ft")
    pts = tov.grid("ft")
    assert len(pts) == 6 and sum(p.is_default for p in pts) == 1
    d = next(p for p in pts if p.is_default)
    assert (d.lr, d.epochs) == (ft.lr, ft.epochs)
    assert {p.epochs for p in pts} == {ft.epochs // 2, ft.epochs}
    assert sorted({round(p.lr / ft.lr, 6) for p in pts}) == [round(1 / 3, 6), 1.0, 3.0]
    # guarded methods: epochs is a cap, only the lr is swept
    ga = tov.grid("ga")
    assert len(ga) == 3 and all(p.epochs == make_config("ga").epochs for p in ga)
    # rum scales every group's sub-method lr, read from its config
    rum = make_config("rum")
    low = [p for p in tov.grid("rum") if p.label == "lr×3"][0]
    opts = low.config(device="cpu").method_options
    assert [o["lr"] for o in opts] == pytest.approx(
        [3 * rum.group_config(g).lr for g in ("low", "mid", "high")])


def test_tuning_reads_no_test_image_and_selects_the_argmin(
        tov: ModuleType, digits, digits_original, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    plain = forget_classes(digits, ["3"])
    store = GuardedImages(digits.test_images, plain.val.indices)
    data = dataclasses.replace(digits, test_images=store)
    splits = {"class": forget_classes(data, ["3"]),
              "random": forget_random(data, count=60, seed=1)}
    for split in splits.values():
        assert torch.equal(split.val.indices, plain.val.indices)
    for name in ("test", "test_forget", "test_retain"):
        monkeypatch.setattr(ForgetSplit, name, forbid(name, "the tuning"))

    sweep = tov.tune(digits_original, splits, ["ft"], lr_factors=(1 / 3, 1.0),
                     epoch_factors=(1.0,), keep_models=True)

    assert store.reads > 0  # the validation part was read, nothing else
    with pytest.raises(ForbiddenRead):
        _ = splits["class"].test
    assert len(sweep.rows) == 4
    ft = make_config("ft")
    assert sorted(r["lr"] for r in sweep.rows) == pytest.approx(
        [ft.lr / 3, ft.lr / 3, ft.lr, ft.lr])

    # every row's val gap follows the definition, from the kept model
    for r in sweep.rows:
        split = splits[r["setting"]]
        model = tov._model_of(digits_original, sweep, "ft", r["setting"],
                              next(p for p in sweep.points["ft"] if p.label == r["point"]),
                              split, {"device": "cpu", "progress": False})
        fa = accuracy(model, split.forget)
        drop = max(0.0, _retain_ref(digits_original, split) - accuracy(model, split.val_retain))
        target = 0.0 if split.kind == "class" else accuracy(digits_original, split.val)
        assert r["forget_acc"] == pytest.approx(fa)
        assert r["val_gap"] == pytest.approx((abs(fa - target) + drop) / 2)
        # the membership term: loss attack, forget set vs unseen val images of its classes
        held = split.val_forget if split.kind == "class" else split.val
        auc = _loss_auc(model, split.forget, held)
        assert r["val_loss_auc"] == pytest.approx(auc)
        assert r["val_gap_m"] == pytest.approx((abs(fa - target) + drop + 100 * abs(auc - 0.5))
                                               / 3)
    # the runs differ, so the selection is a real choice
    assert len({round(r["val_gap"], 6) for r in sweep.rows}) > 1

    sel = sweep.selected()
    for setting in splits:
        rows = [r for r in sweep.rows if r["setting"] == setting]
        assert sel[("ft", setting)]["val_gap"] == min(r["val_gap"] for r in rows)
    default, best = sweep.proposed("ft")
    gaps = sweep.mean_gaps("ft")
    assert default.is_default and gaps[best.label] == min(gaps.values())
    # the membership objective selects by val_gap_m instead
    sweep.objective = "val_gap_m"
    for setting in splits:
        rows = [r for r in sweep.rows if r["setting"] == setting]
        assert sel_m(sweep, setting) == min(r["val_gap_m"] for r in rows)
    gaps_m = sweep.mean_gaps("ft")
    assert gaps_m[sweep.proposed("ft")[1].label] == min(gaps_m.values())
    assert gaps_m != gaps
    sweep.objective = "val_gap"

    # the CSV round trip (--evaluate-only / --transfer-from read it back) keeps the choice
    path = tmp_path / "sweep.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=tov.FIELDS)
        w.writeheader()
        w.writerows({k: tov._round(r.get(k, "")) for k in tov.FIELDS} for r in sweep.rows)
    back = tov.load_sweep(path)
    assert [r["val_gap"] for r in back.rows] == pytest.approx(
        [r["val_gap"] for r in sweep.rows], abs=1e-3)
    assert back.proposed("ft")[1].label == best.label

    # after a default changes, a recorded sweep keeps the lrs it ran with
    monkeypatch.setattr(tov, "make_config", lambda m, **kw: make_config(
        m, **{"lr": ft.lr * 3, **kw}) if m == "ft" else make_config(m, **kw))
    later = tov.load_sweep(path)
    lrs = {p.label: p.lr for p in later.points["ft"]}
    for p in sweep.points["ft"]:
        assert lrs[p.label] == pytest.approx(p.lr)
    d = next(p for p in later.points["ft"] if p.is_default)
    assert d.lr == pytest.approx(ft.lr) and d.config(device="cpu").lr == pytest.approx(ft.lr)
