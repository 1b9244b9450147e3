import pytest
import torch

from fastunlearn.data import forget_classes, forget_indices, forget_random, split_from_spec


def _check_invariants(split, data):
    f, r = set(split.forget_idx.tolist()), set(split.retain_idx.tolist())
    assert f and r
    assert not f & r
    assert f | r == set(range(len(data.train_labels)))
    tf, tr = set(split.test_forget.indices.tolist()), set(split.test_retain.indices.tolist())
    vf, vr = set(split.val_forget.indices.tolist()), set(split.val_retain.indices.tolist())
    v, t = set(split.val.indices.tolist()), set(split.test.indices.tolist())
    # test = test_forget ∪ test_retain, val = val_forget ∪ val_retain, val ∪ test = test images
    assert not tf & tr and tf | tr == t and not vf & vr and vf | vr == v
    assert v and not v & t and v | t == set(range(len(data.test_labels)))
    assert len(v) == round(0.1 * len(data.test_labels))
    assert len(split.full) == len(data.train_labels)


def test_class_split_by_name_and_index(digits):
    a = forget_classes(digits, ["3"])
    b = forget_classes(digits, 3)
    assert torch.equal(a.forget_idx, b.forget_idx)
    _check_invariants(a, digits)
    assert (a.forget.labels == 3).all() and (a.retain.labels != 3).all()
    assert (a.test_forget.labels == 3).all() and (a.test_retain.labels != 3).all()
    assert (a.val_forget.labels == 3).all() and (a.val_retain.labels != 3).all()
    assert len(a.test_forget) + len(a.val_forget) == int((digits.test_labels == 3).sum())


def test_several_classes(digits):
    s = forget_classes(digits, ["1", "7"])
    _check_invariants(s, digits)
    assert set(s.forget.labels.unique().tolist()) == {1, 7}
    assert s.forget_class_names == ["1", "7"]


def test_real_class_names_case_insensitive():
    from fastunlearn.data import load_dataset

    data = load_dataset("synthetic")
    s = forget_classes(data, ["CLASS1"])
    assert s.spec == {"type": "class", "classes": ["class1"]}


@pytest.mark.parametrize("kw", [{"count": 100}, {"fraction": 0.1}])
def test_random_split_invariants_and_seed(digits, kw):
    a = forget_random(digits, **kw, seed=3)
    b = forget_random(digits, **kw, seed=3)
    c = forget_random(digits, **kw, seed=4)
    _check_invariants(a, digits)
    assert torch.equal(a.forget_idx, b.forget_idx)
    assert not torch.equal(a.forget_idx, c.forget_idx)
    assert len(a.test_forget) == 0 and len(a.test_retain) == len(a.test)
    assert len(a.val_forget) == 0 and len(a.val_retain) == len(a.val)
    assert len(a.test) + len(a.val) == len(digits.test_labels)
    expected = kw.get("count") or round(0.1 * len(digits.train_labels))
    assert len(a.forget) == expected


def test_indices_split_and_spec_roundtrip(digits):
    s = forget_indices(digits, [5, 1, 9])
    assert s.forget_idx.tolist() == [1, 5, 9]
    _check_invariants(s, digits)
    for split in (s, forget_random(digits, count=50, seed=1), forget_classes(digits, ["2"])):
        again = split_from_spec(digits, split.spec)
        assert torch.equal(again.forget_idx, split.forget_idx)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda d: forget_classes(d, ["Airplane"]), r"valid names: 0, 1, 2"),
        (lambda d: forget_classes(d, [12]), "out of range"),
        (lambda d: forget_classes(d, []), "at least one"),
        (lambda d: forget_classes(d, ["3", 3]), "twice"),
        (lambda d: forget_classes(d, [str(i) for i in range(10)]), "all 10 classes"),
        (lambda d: forget_random(d, count=10**6), "must be smaller"),
        (lambda d: forget_random(d, count=0), "positive"),
        (lambda d: forget_random(d, fraction=1.5), r"\(0, 1\)"),
        (lambda d: forget_random(d), "exactly one"),
        (lambda d: forget_indices(d, []), "empty"),
        (lambda d: forget_indices(d, [1, 2, 2]), r"duplicate ids .*\[2\]"),
        (lambda d: forget_indices(d, [10**6]), "out of range"),
        (lambda d: split_from_spec(d, {"type": "weird"}), "unknown forget spec"),
    ],
)
def test_bad_specs_raise_clear_value_errors(digits, call, match):
    with pytest.raises(ValueError, match=match):
        call(digits)


def test_batches_normalise_on_device_and_cover_every_sample(digits):
    part = forget_classes(digits, ["0"]).retain
    seen = []
    for x, y in part.batches(100, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        seen.append(y)
    assert torch.cat(seen).sort().values.equal(part.labels.sort().values)
    x, _ = part.tensors()
    assert abs(x.mean().item()) < 0.2 and 0.7 < x.std().item() < 1.3


def test_augmentation_is_a_crop_and_flip_of_the_image():
    from fastunlearn.data.base import random_crop_flip

    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    g = torch.Generator().manual_seed(0)
    y = random_crop_flip(x, padding=2, generator=g)
    assert y.shape == x.shape
    # reference: per-sample loop with the same random draws
    g = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 5, (2,), generator=g)
    dx = torch.randint(0, 5, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        ref = padded[i, :, dy[i] : dy[i] + 5, dx[i] : dx[i] + 7]
        if flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(y[i], ref)


def test_validation_hold_out_is_seeded_and_configurable(digits):
    a, b = forget_random(digits, count=50, seed=0), forget_random(digits, count=50, seed=1)
    assert torch.equal(a.val.indices, b.val.indices)  # does not depend on the forget set
    c = a.with_val(0.25, seed=3)
    assert torch.equal(c.forget_idx, a.forget_idx)
    assert len(c.val) == round(0.25 * len(digits.test_labels))
    assert not torch.equal(c.with_val(0.25, seed=4).val.indices, c.val.indices)
    none = a.with_val(0.0)
    assert len(none.val) == 0 and len(none.test) == len(digits.test_labels)
    with pytest.raises(ValueError, match="val_fraction"):
        a.with_val(1.0)
