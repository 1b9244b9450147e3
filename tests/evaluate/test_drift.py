import math

import pytest
import torch

from fastunlearn.evaluate.drift import (
    block_activations,
    collateral_damage,
    confusion_drift,
    confusion_matrix,
    linear_cka,
    linear_cka_reference,
    penultimate_by_hook,
    penultimate_features,
    probe_blocks,
)


def _x(n: int, p: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("p", [5, 300])  # feature form (p < n) and Gram form (p > n)
def test_cka_self_is_one(p):
    x = _x(60, p)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("p", [5, 300])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(p):
    x, y = _x(60, p, 0), _x(60, 7, 1)
    q, _ = torch.linalg.qr(_x(p, p, 2))  # random orthogonal matrix
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(x @ q * 5.0, x) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x + 4.0, y - 2.0) == pytest.approx(base, rel=1e-9)  # mean shift


@pytest.mark.parametrize(("p", "q"), [(5, 9), (300, 40), (41, 401)])
def test_cka_matches_slow_reference(p, q):
    x, y = _x(50, p, 3), _x(50, q, 4) + 0.3 * _x(50, q, 5)
    y[:, : min(p, q)] += x[:, : min(p, q)]  # some shared structure
    assert linear_cka(x, y) == pytest.approx(linear_cka_reference(x, y), rel=1e-9)


def test_cka_is_not_invariant_to_anisotropic_scaling_and_low_for_unrelated():
    x = _x(200, 10, 6)
    scaled = x * torch.linspace(0.01, 10, 10, dtype=torch.float64)
    assert linear_cka(x, scaled) < 0.9
    assert linear_cka(x, _x(200, 10, 7)) < 0.2
    assert math.isnan(linear_cka(torch.ones(10, 3), x[:10]))


def test_confusion_drift_of_a_model_with_itself_is_zero():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (100,), generator=g)
    pred = torch.randint(0, 5, (100,), generator=g)
    c = confusion_matrix(pred, y, 5)
    assert int(c.sum()) == 100 and int(c.trace()) == int((pred == y).sum())
    assert confusion_drift(c, c) == 0.0
    # one changed prediction moves one count between two cells of a row: ½·2/N
    pred2 = pred.clone()
    pred2[0] = (pred[0] + 1) % 5
    assert confusion_drift(confusion_matrix(pred2, y, 5), c) == pytest.approx(1 / 100)
    # swapping two predictions within a class leaves the matrix (and the drift) unchanged
    with pytest.raises(ValueError, match="different samples"):
        confusion_drift(c, confusion_matrix(pred[:50], y[:50], 5))


def test_collateral_damage_hand_example():
    orig = [90.0, 80.0, 70.0, float("nan")]
    model = [85.0, 82.0, 40.0, 50.0]
    d = collateral_damage(model, orig, retain_classes=[0, 1, 3])
    assert d["per_class"] == {0: 5.0, 1: -2.0}  # class 3 has no original accuracy: skipped
    assert d["mean"] == pytest.approx(1.5) and d["worst"] == 5.0


def test_blocks_and_penultimate_for_every_registered_model(digits):
    from fastunlearn.models import create_model, list_models
    from fastunlearn.models._registry import _MODELS

    probe = digits.test.take(12, seed=0)
    factories = {}
    for name in list_models():  # aliases share a factory: test each architecture once
        factories.setdefault(_MODELS[name].factory, name)
    for name in factories.values():
        torch.manual_seed(0)
        model = create_model(name, digits)
        blocks = probe_blocks(model)
        assert blocks, name
        acts = block_activations(model, probe, batch_size=5)
        assert set(blocks) <= set(acts) and "logits" in acts, name
        for key, a in acts.items():
            assert a.shape[0] == len(probe) and a.dim() == 2, (name, key)
            assert torch.isfinite(a).all(), (name, key)
        logits = model.eval()(probe.tensors()[0])
        assert torch.allclose(acts["logits"], logits, atol=1e-5), name
        cka = linear_cka(acts["logits"], acts["logits"])
        assert cka == pytest.approx(1.0, abs=1e-9), name
        if "pre_logits" in acts:
            feats = penultimate_features(model, probe)
            assert torch.allclose(feats, acts["pre_logits"], atol=1e-5), name
            assert torch.allclose(penultimate_by_hook(model, probe), feats, atol=1e-5), name
        else:  # an ensemble: no single classifier layer produces the logits
            with pytest.raises(ValueError, match="penultimate"):
                penultimate_by_hook(model, probe)


def test_activations_are_not_changed_by_inplace_relu(digits):
    """lenet5 runs conv → ReLU(inplace): the hook must store the conv output before the ReLU."""
    from fastunlearn.models import create_model

    torch.manual_seed(0)
    model = create_model("lenet5", digits).eval()
    probe = digits.test.take(8, seed=0)
    acts = block_activations(model, probe)
    x = probe.tensors()[0]
    with torch.no_grad():
        conv_out = model.features[0](x).flatten(1)
    assert (conv_out < 0).any()  # the ReLU would have removed these
    assert torch.allclose(acts["features.0"], conv_out, atol=1e-6)
