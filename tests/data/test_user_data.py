"""Bring your own model and data (issue 14): ``ForgetSplit.from_datasets`` on plain torch
Datasets, a plain ``nn.Module`` (not from ``fu.create_model``), head discovery, ``retrain``
without a spec."""

from __future__ import annotations

import collections
import json
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

import fastunlearn as fu
from fastunlearn.data import ForgetSplit, ImageDataset, forget_random
from fastunlearn.data.base import DatasetImages, normalize
from fastunlearn.models.head import find_head
from fastunlearn.unlearn import list_methods, make_config, unlearn

COMMON = {"device": "cpu", "progress": False}
CHEAP = {
    "ft": {"epochs": 1}, "l1_sparse": {"epochs": 1}, "lora_ft": {"epochs": 1},
    "retrain": {"epochs": 1}, "rl": {"epochs": 1}, "salun": {"epochs": 1},
    "ig_salun": {"epochs": 1}, "scrub": {"epochs": 1}, "bad_teacher": {"epochs": 1},
    "two_stage": {"epochs": 1}, "boundary_shrink": {"epochs": 1}, "neggrad_plus": {"epochs": 2},
    "ga": {"epochs": 2}, "zero_shot": {"epochs": 2}, "fisher": {"num_samples": 256},
}
CLASS_ONLY = {"zero_shot", "delete"}


class UserNet(nn.Module):
    """A user's own classifier: the head (``out``) is registered *before* a hidden linear
    layer, so "last registered nn.Linear" would be wrong and the forward order is right."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.out = nn.Linear(64, classes)
        self.hidden = nn.Linear(16 * 16, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1)
        return self.out(torch.relu(self.hidden(x)))


def sklearn_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The user's own pipeline: sklearn digits as 8-bit images, their train/test split, and
    per-channel normalisation with the train pixels' mean/std (float32 tensors)."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    bunch = sklearn.datasets.load_digits()
    values = np.asarray(bunch.data, dtype=np.float64).reshape(-1, 1, 8, 8)
    images = torch.from_numpy(np.rint(values * 255.0 / 16.0).clip(0, 255).astype(np.uint8))
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    pix = images[tr].double().div(255.0).flatten()
    mean, std = float(pix.mean()), float(pix.std())

    def norm(x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor([mean], dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor([std], dtype=torch.float32).view(1, -1, 1, 1)
        return (x.float() / 255.0 - m) / s

    return norm(images[tr]), y[tr], norm(images[te]), y[te]


class DigitsDataset(Dataset):
    """A map-style Dataset with its own transform and no ``targets`` attribute (labels need a
    pass); counts how often an item is read."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes=None) -> None:
        self.x, self.y, self.reads = x, y, 0
        if classes is not None:
            self.classes = classes

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.x[i] * 1.0, int(self.y[i])


@pytest.fixture(scope="module")
def user_data():
    return sklearn_digits()


@pytest.fixture(scope="module")
def user_model(digits):
    """UserNet trained on digits (a plain nn.Module: no fastunlearn_spec)."""
    torch.manual_seed(0)
    cfg = fu.TrainConfig(epochs=8, lr=0.05, batch_size=64, device="cpu", progress=False,
                         eval_every=0)
    model = fu.train(UserNet(), digits.train, cfg)
    assert not hasattr(model, "fastunlearn_spec")
    return model


def _numeric(rep: dict) -> dict:
    return {k: v for k, v in rep.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "rte" not in k
            and "time" not in k and "mem" not in k}


# ------------------------------------------------------------------ same result as built-in


def test_user_tensors_equal_the_builtin_batches(digits, user_data):
    xtr, ytr, xte, yte = user_data
    assert torch.equal(ytr, digits.train_labels) and torch.equal(yte, digits.test_labels)
    assert torch.equal(xtr, normalize(digits.train_images, digits.mean, digits.std))
    assert torch.equal(xte, normalize(digits.test_images, digits.mean, digits.std))


@pytest.mark.parametrize("method", ["ft", "ssd", "salun", "fisher"])
def test_same_unlearning_result_as_the_builtin_path(method, digits, user_data, user_model):
    xtr, ytr, xte, yte = user_data
    builtin = forget_random(digits, count=60, seed=1)
    user = ForgetSplit.from_datasets(TensorDataset(xtr, ytr), forget=builtin.forget_idx,
                                     test=TensorDataset(xte, yte), val=0.1, seed=0)
    assert isinstance(user.data.train_images, DatasetImages) and user.data.mean is None
    for part in ("forget", "retain", "val", "val_retain", "test", "test_retain"):
        assert torch.equal(getattr(user, part).indices, getattr(builtin, part).indices), part
    cfg = make_config(method, **COMMON, **CHEAP.get(method, {}))
    a, b = unlearn(user_model, builtin, cfg), unlearn(user_model, user, cfg)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    changed = False
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-5, atol=1e-6, msg=k)
        changed |= not torch.equal(sa[k], user_model.state_dict()[k])
    assert changed, "the method changed nothing: the comparison would be vacuous"
    ra = _numeric(fu.evaluate(a.model, builtin, original=user_model, cka=False, mia_seeds=2))
    rb = _numeric(fu.evaluate(b.model, user, original=user_model, cka=False, mia_seeds=2))
    assert ra.keys() == rb.keys() and "forget_acc" in ra and "mia_efficacy" in ra
    for k in ra:
        assert (math.isnan(ra[k]) and math.isnan(rb[k])) or ra[k] == pytest.approx(rb[k],
                                                                                  abs=1e-6), k


# ------------------------------------------------------------------ every method, evaluate


@pytest.fixture(scope="module")
def own_splits(user_data):
    xtr, ytr, xte, yte = user_data
    names = [f"digit {i}" for i in range(10)]
    train = DigitsDataset(xtr, ytr, classes=names)
    test = DigitsDataset(xte, yte)
    ids = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(5))[:60]
    return {
        "random": ForgetSplit.from_datasets(train, forget=ids, test=test, val=0.1),
        "class": ForgetSplit.from_datasets(train, forget="Digit 3", test=test, val=0.1),
    }


@pytest.mark.parametrize("name", sorted(set(list_methods()) - {"sisa"}))
def test_every_method_runs_on_a_user_split(name, own_splits, user_model):
    split = own_splits["class" if name in CLASS_ONLY else "random"]
    assert isinstance(split.data.train_images, DatasetImages)
    res = unlearn(user_model, split, make_config(name, **COMMON, **CHEAP.get(name, {})))
    assert res.info["weights_finite"]
    assert next(res.model.parameters()).device.type == "cpu"
    out = res.model(split.val.tensors()[0])
    assert out.shape == (len(split.val), 10) and torch.isfinite(out).all()


def test_evaluate_and_retrain_on_a_user_split(own_splits, user_model, caplog):
    split = own_splits["class"]
    assert split.kind == "class" and split.forget_class_names == ["digit 3"]
    with caplog.at_level(logging.INFO, logger="fastunlearn.unlearn.retrain"):
        gold = unlearn(user_model, split, fu.RetrainConfig(epochs=3, **COMMON))
    assert gold.info["fresh_model"] == "reset_parameters"
    assert "reset_parameters" in caplog.text
    res = unlearn(user_model, split, fu.FTConfig(epochs=2, **COMMON))
    rep = fu.evaluate(res, split, original=user_model, retrained=gold)
    assert rep["retain_acc"] > 80 and rep["test_acc"] > 80
    assert 0 <= rep["mia_efficacy"] <= 100 and rep["retrain_forget_acc"] < 5
    assert math.isfinite(rep["avg_gap"]) and math.isfinite(rep["js_to_retrain"])
    assert len(rep["per_class_test_acc"]) == 10


# ------------------------------------------------------------------ errors


def test_pil_images_get_a_one_line_error():
    torchvision = pytest.importorskip("torchvision")
    pil = torchvision.datasets.FakeData(size=12, image_size=(3, 8, 8), num_classes=3)
    with pytest.raises(TypeError, match=r"PIL images.*transforms\.ToTensor\(\)") as e:
        ForgetSplit.from_datasets(pil, forget=[0, 1], test=pil, classes=["a", "b", "c"])
    assert "\n" not in str(e.value)
    ok = torchvision.datasets.FakeData(size=12, image_size=(3, 8, 8), num_classes=3,
                                       transform=torchvision.transforms.ToTensor())
    split = ForgetSplit.from_datasets(ok, forget=[0, 1], test=ok, classes=["a", "b", "c"])
    x, y = next(split.retain.batches(4))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32


def test_bad_samples_are_named():
    x = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(TypeError, match="ConvertImageDtype"):
        ForgetSplit.from_datasets(TensorDataset(x, torch.arange(6) % 2), forget=[0],
                                  test=TensorDataset(x, torch.arange(6) % 2))
    flat = TensorDataset(torch.zeros(6, 16), torch.arange(6) % 2)
    with pytest.raises(ValueError, match=r"\[channels, height, width\]"):
        ForgetSplit.from_datasets(flat, forget=[0], test=flat)
    good = TensorDataset(torch.zeros(6, 1, 4, 4), torch.arange(6) % 2)
    with pytest.raises(TypeError, match="labels"):
        ForgetSplit.from_datasets(good, forget=[0], test=[(torch.zeros(1, 4, 4), "cat")])
    other = TensorDataset(torch.zeros(6, 1, 5, 5), torch.arange(6) % 2)
    with pytest.raises(ValueError, match="one size"):
        ForgetSplit.from_datasets(good, forget=[0], test=other)
    with pytest.raises(ValueError, match="augment"):
        ImageDataset("x", ["a"], torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long),
                     torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), None, None,
                     augment=True)


# ------------------------------------------------------------------ val / forget / loader


def _ds(n: int = 40, classes: int = 4, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 4, 4, generator=g), torch.arange(n) % classes)


def test_val_as_fraction_indices_or_dataset():
    train, test, extra = _ds(40), _ds(30, seed=1), _ds(12, seed=2)
    frac = ForgetSplit.from_datasets(train, forget=[1, 2], test=test, val=0.2, seed=3)
    again = ForgetSplit.from_datasets(train, forget=[5], test=test, val=0.2, seed=3)
    other = ForgetSplit.from_datasets(train, forget=[1, 2], test=test, val=0.2, seed=4)
    assert len(frac.val) == 6 and len(frac.test) == 24
    assert torch.equal(frac.val.indices, again.val.indices)
    assert not torch.equal(frac.val.indices, other.val.indices)

    idx = ForgetSplit.from_datasets(train, forget=[1, 2], test=test, val=[0, 7, 3])
    assert idx.val.indices.tolist() == [0, 3, 7] and len(idx.test) == 27
    assert 7 not in idx.test.indices.tolist()
    assert torch.equal(idx.val.tensors()[0], test.tensors[0][[0, 3, 7]])

    ds = ForgetSplit.from_datasets(train, forget=[1, 2], test=test, val=extra)
    assert len(ds.val) == 12 and len(ds.test) == 30
    x, y = ds.val.tensors()
    assert torch.equal(x, extra.tensors[0]) and torch.equal(y, extra.tensors[1])
    assert torch.equal(ds.test.tensors()[0], test.tensors[0])
    # a group split (rum) keeps the fixed validation set
    from fastunlearn.unlearn.rum import _GroupSplit
    group = _GroupSplit(ds, ds.forget_idx[:1], "g")
    assert torch.equal(group.val.indices, ds.val.indices)
    zero = ForgetSplit.from_datasets(train, forget=[1], test=test, val=0)
    assert len(zero.val) == 0 and len(zero.test) == 30

    for bad, err in ((1.0, ValueError), (5, ValueError), ([0, 0], ValueError),
                     ([30], ValueError), (True, TypeError), ("a", TypeError)):
        with pytest.raises(err):
            ForgetSplit.from_datasets(train, forget=[1], test=test, val=bad)


def test_forget_as_indices_mask_or_class_names():
    train, test = _ds(40), _ds(20, seed=1)
    names = ["zero", "one", "two", "three"]
    by_idx = ForgetSplit.from_datasets(train, forget=np.array([3, 1, 2]), test=test)
    mask = torch.zeros(40, dtype=torch.bool)
    mask[[1, 2, 3]] = True
    by_mask = ForgetSplit.from_datasets(train, forget=mask, test=test)
    by_list = ForgetSplit.from_datasets(train, forget=mask.tolist(), test=test)
    assert by_idx.forget_idx.tolist() == by_mask.forget_idx.tolist() == [1, 2, 3]
    assert by_list.forget_idx.tolist() == [1, 2, 3] and by_idx.kind == "indices"
    one = ForgetSplit.from_datasets(train, forget="TWO", test=test, classes=names)
    assert one.kind == "class" and one.forget_class_ids == [2]
    assert (one.forget.labels == 2).all() and len(one.forget) == 10
    assert (one.test_forget.labels == 2).all() and len(one.test_forget) + len(one.val_forget) == 5
    two = ForgetSplit.from_datasets(train, forget=["one", "three"], test=test, classes=names)
    assert two.forget_class_names == ["one", "three"] and len(two.forget) == 20
    named = Subset(DigitsDataset(train.tensors[0], train.tensors[1], classes=names), range(40))
    assert ForgetSplit.from_datasets(named, forget="one", test=test).forget_class_ids == [1]
    with pytest.raises(ValueError, match="valid names"):
        ForgetSplit.from_datasets(train, forget="four", test=test, classes=names)
    with pytest.raises(ValueError, match="entries"):
        ForgetSplit.from_datasets(train, forget=mask[:10], test=test)
    with pytest.raises(ValueError, match="out of range"):
        ForgetSplit.from_datasets(train, forget=[40], test=test)
    with pytest.raises(TypeError, match="mixes"):
        ForgetSplit.from_datasets(train, forget=["one", 2], test=test, classes=names)


def test_a_dataloader_is_accepted_with_its_options():
    train, test = _ds(48), _ds(24, seed=1)
    loader = DataLoader(train, batch_size=16, num_workers=1, shuffle=True)
    split = ForgetSplit.from_datasets(loader, forget=[0, 5], test=DataLoader(test), val=0.25)
    assert split.batch_size == 16 and split.data.loader.num_workers == 1
    assert not split.data.loader.pin_memory
    plain = ForgetSplit.from_datasets(train, forget=[0, 5], test=test, val=0.25, batch_size=8)
    assert plain.batch_size == 8 and plain.data.loader.num_workers == 0
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = list(split.retain.batches(10, shuffle=True, generator=g1))
    b = list(plain.retain.batches(10, shuffle=True, generator=g2))
    assert len(a) == len(b) == 5
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    over = ForgetSplit.from_datasets(loader, forget=[0], test=test, num_workers=0)
    assert over.data.loader.num_workers == 0 and over.batch_size == 16


def test_labels_from_attributes_or_one_pass():
    x, y = torch.randn(20, 1, 4, 4), torch.arange(20) % 5
    counted = DigitsDataset(x, y)
    split = ForgetSplit.from_datasets(counted, forget=[0], test=TensorDataset(x, y))
    assert counted.reads == 20 + 1  # one pass for the labels, one sample for the shape
    assert torch.equal(split.data.train_labels, y) and split.data.classes == list("01234")

    class WithTargets(DigitsDataset):
        @property
        def targets(self):
            return self.y.tolist()

    tagged = WithTargets(x, y)
    ForgetSplit.from_datasets(Subset(tagged, range(10, 20)), forget=[0],
                              test=TensorDataset(x, y))
    assert tagged.reads == 1
    tagged.target_transform = lambda t: t  # the attribute is no longer the label: a pass
    ForgetSplit.from_datasets(tagged, forget=[0], test=TensorDataset(x, y))
    assert tagged.reads == 1 + 1 + 20


def test_user_batches_leave_the_global_rng_alone_and_keep_relabelled_labels():
    from fastunlearn.unlearn._losses import relabelled

    split = ForgetSplit.from_datasets(_ds(40), forget=[0, 1], test=_ds(10, seed=1))
    state = torch.get_rng_state()
    g = torch.Generator().manual_seed(0)
    n = sum(len(y) for _, y in split.full.batches(7, shuffle=True, generator=g))
    assert n == 40 and torch.equal(torch.get_rng_state(), state)
    flipped = relabelled(split.retain, torch.full((len(split.retain),), 3))
    assert all((y == 3).all() for _, y in flipped.batches(16, shuffle=True, generator=g))


def test_the_builtin_path_keeps_its_in_memory_batches(digits, monkeypatch):
    import torch.utils.data as tud

    def no_loader(*a, **k):
        raise AssertionError("a DataLoader was built")

    user = ForgetSplit.from_datasets(_ds(20), forget=[0], test=_ds(8, seed=1))
    monkeypatch.setattr(tud, "DataLoader", no_loader)
    split = forget_random(digits, count=10)
    assert sum(len(y) for _, y in split.retain.batches(256, shuffle=True)) == len(split.retain)
    with pytest.raises(AssertionError, match="DataLoader"):
        next(user.retain.batches(4))


# ------------------------------------------------------------------ head discovery


def test_find_head_rule():
    net = UserNet()
    assert find_head(net)[0] == "hidden"  # no example: the last registered nn.Linear
    example = torch.zeros(1, 1, 8, 8)
    assert find_head(net, example=example)[0] == "out"  # the forward's last one
    assert find_head(net, "hidden")[0] == "hidden"
    net.fastunlearn_head = "out"
    assert find_head(net)[0] == "out"
    from fastunlearn.evaluate.drift import final_linear
    assert final_linear(net) is net.out

    small = fu.create_model("small_cnn", num_classes=10, in_chans=1, img_size=8)
    assert find_head(small)[1] is small.get_classifier()

    class Torchvisionish(nn.Module):
        def __init__(self, attr: str, head: nn.Module) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU())
            setattr(self, attr, head)
            self.attr = attr

        def forward(self, x):
            return getattr(self, self.attr)(self.body(x))

    fc = Torchvisionish("fc", nn.Linear(8, 3))
    assert find_head(fc)[0] == "fc"
    vgg = Torchvisionish("classifier", nn.Sequential(nn.Linear(8, 8), nn.ReLU(),
                                                      nn.Linear(8, 3), nn.Dropout()))
    assert find_head(vgg)[0] == "classifier.2"
    vit = Torchvisionish("heads", nn.Sequential(collections.OrderedDict(head=nn.Linear(8, 3))))
    assert find_head(vit)[0] == "heads.head"
    # an `fc` that is not the output layer is skipped when an example shows the logit width
    odd = Torchvisionish("fc", nn.Linear(8, 8))
    odd.out = nn.Linear(8, 3)
    odd.forward = lambda x: odd.out(odd.fc(odd.body(x)))
    assert find_head(odd, example=torch.zeros(1, 1, 4, 4))[0] == "out"

    conv_only = nn.Sequential(nn.Conv2d(1, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="head="):
        find_head(conv_only, example=torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="head="):
        find_head(conv_only)
    with pytest.raises(ValueError, match="no submodule"):
        find_head(net, "nope")
    with pytest.raises(ValueError, match="not an nn.Linear"):
        find_head(net, "conv")


def test_torchvision_models_heads():
    tv = pytest.importorskip("torchvision")
    assert find_head(tv.models.resnet18(num_classes=3))[0] == "fc"
    assert find_head(tv.models.mobilenet_v3_small(num_classes=3))[0] == "classifier.3"


def test_fisher_and_zero_shot_take_head(own_splits, user_model):
    split = own_splits["class"]
    res = unlearn(user_model, split, fu.FisherConfig(num_samples=64, head="out", **COMMON))
    assert res.info["zeroed_head_rows"] == 1
    assert (res.model.out.weight[3] != 0).any()  # zeroed, then the head noise added
    assert res.model.out.weight[3].abs().max() < 0.2
    zs = unlearn(user_model, split, fu.ZeroShotConfig(epochs=2, head="out", **COMMON))
    assert not torch.equal(zs.model.out.weight, user_model.out.weight)
    assert torch.equal(zs.model.hidden.weight, user_model.hidden.weight)  # features space
    with pytest.raises(ValueError, match="head='nope'"):
        unlearn(user_model, split, fu.FisherConfig(head="nope", **COMMON))
    with pytest.raises(ValueError, match="head must be"):
        fu.ZeroShotConfig(head="")


def test_zero_shot_input_space_and_boundary_shrink_on_a_user_split(own_splits, user_model,
                                                                   digits):
    from fastunlearn.unlearn.boundary_shrink import attack_bounds

    split = own_splits["class"]
    eps, lo, hi = attack_bounds(split, 0.1, torch.device("cpu"))
    assert lo is None and hi is None and float(eps) == pytest.approx(0.1)
    eps, lo, hi = attack_bounds(forget_random(digits, count=5), 0.1, torch.device("cpu"))
    assert lo is not None and float(eps.flatten()[0]) == pytest.approx(0.1 / digits.std[0])
    res = unlearn(user_model, split, fu.ZeroShotConfig(space="input", epochs=1, lr=0.01,
                                                       impressions_per_class=4,
                                                       impression_steps=5, **COMMON))
    assert res.info["space"] == "input" and res.info["weights_finite"]


# ------------------------------------------------------------------ retrain without a spec


def test_retrain_model_fn_and_reset_parameters(own_splits, user_model, caplog):
    split = own_splits["random"]
    made = []

    def factory() -> nn.Module:
        made.append(1)
        return UserNet()

    cfg = fu.RetrainConfig(epochs=1, model_fn=factory, **COMMON)
    a, b = unlearn(user_model, split, cfg), unlearn(user_model, split, cfg)
    assert a.info["fresh_model"] == "model_fn" and len(made) == 2
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
    assert json.dumps(cfg.to_dict())  # the factory is recorded by name
    assert cfg.to_dict()["model_fn"].endswith("factory")

    class WithBareParameter(UserNet):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return super().forward(x) * self.scale

    model = WithBareParameter()
    model.load_state_dict({**user_model.state_dict(), "scale": torch.full((1,), 2.0)})
    with caplog.at_level(logging.INFO, logger="fastunlearn.unlearn.retrain"):
        r = unlearn(model, split, fu.RetrainConfig(epochs=1, **COMMON))
    assert r.info["fresh_model"] == "reset_parameters" and r.info["not_reinitialised"] == 1
    assert "keep their trained values (first: scale)" in caplog.text
    assert not torch.equal(r.model.conv.weight, user_model.conv.weight)

    with pytest.raises(TypeError, match="not an nn.Module"):
        unlearn(user_model, split, fu.RetrainConfig(epochs=1, model_fn=lambda: 3, **COMMON))
    with pytest.raises(ValueError, match="callable"):
        fu.RetrainConfig(model_fn=3)
