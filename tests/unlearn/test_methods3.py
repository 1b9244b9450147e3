"""sfr_on / rum / msg / ct / delete on digits (small_cnn, session fixture).

Class forgetting: the forgotten class's training accuracy falls below 10 % while the retain
accuracy stays within 5 points. Random forgetting (10 %): the mean loss on the forget set
moves toward the loss a model retrained without the forget set has there (in log space, at
least a quarter of the way, and ending closer to it than the original) while retain / test
accuracy stay within 5 points. The original model itself fails both checks (tested)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastunlearn.evaluate.accuracy import accuracy_metrics
from fastunlearn.evaluate.mia import per_sample_loss
from fastunlearn.inference import predict_logits
from fastunlearn.unlearn import RetrainConfig, list_methods, make_config, unlearn
from fastunlearn.unlearn.ct import CTConfig, epoch_cosine, transpose_conv_kernels
from fastunlearn.unlearn.delete import DeleteConfig, masked_teacher_probs
from fastunlearn.unlearn.msg import MSGConfig, reinit_small_gradients, triangle_factor
from fastunlearn.unlearn.rum import GROUPS, RUMConfig, _GroupSplit, memorization_scores, rum_groups
from fastunlearn.unlearn.sfr_on import SFROnConfig, adaptive_forget_loss

COMMON = {"device": "cpu", "progress": False}
METHODS3 = ("sfr_on", "rum", "msg", "ct", "delete")

# digits recipes: the paper defaults are scaled for Fashion-MNIST; digits has 1,437 training
# images, a forget class of 146 and a model that fits its training set to CE ≈ 0.002, so the
# retain-driven methods need smaller batches (more steps) and the ascent a larger α.
CLASS_CONFIGS = {
    # 4 epochs left the class at 51 % on an AMD EPYC CPU (0 % on Intel): 6 clear it on both
    "sfr_on": SFROnConfig(batch_size=32, epochs=6, **COMMON),
    "rum": RUMConfig(methods="delete", method_options={}, **COMMON),
    # MSG re-initialises the weights that matter *least* (small retain−forget gradient), a
    # random-forgetting recipe: at its default 30 % the class survives fine-tuning (87 %)
    "msg": MSGConfig(init_rate=0.9, **COMMON),
    "ct": CTConfig(**COMMON),
    "delete": DeleteConfig(**COMMON),
}
_NGP = {"beta": 0.7, "epochs": 5, "lr": 0.05, "batch_size": 16, "target_forget_acc": 0}
RANDOM_CONFIGS = {
    "sfr_on": SFROnConfig(batch_size=32, epochs=4, forget_alpha=1000.0, **COMMON),
    "rum": RUMConfig(method_options=_NGP, **COMMON),
    "msg": MSGConfig(**COMMON),
    "ct": CTConfig(**COMMON),
}


@pytest.fixture(scope="module")
def before(digits_original, class_split):
    return accuracy_metrics(digits_original, class_split)


def _forget_loss(model, split) -> float:
    return float(per_sample_loss(predict_logits(model, split.forget), split.forget.labels).mean())


@pytest.fixture(scope="module")
def reference(digits_original, random_split):
    """Forget-set mean loss of the original and of a model retrained on the retain set with
    the original's recipe (15 epochs, lr 0.05, batch 64)."""
    gold = unlearn(digits_original, random_split,
                   RetrainConfig(epochs=15, lr=0.05, batch_size=64, **COMMON)).model
    return {"original": _forget_loss(digits_original, random_split),
            "retrained": _forget_loss(gold, random_split),
            "start": accuracy_metrics(digits_original, random_split)}


def _class_forgets(model, split, before) -> dict:
    after = accuracy_metrics(model, split)
    assert after["forget_acc"] < 10, after
    assert after["retain_acc"] > before["retain_acc"] - 5, (before, after)
    return after


def _moves_toward_retrain(model, split, ref) -> float:
    """Fraction of the way (log forget loss) from the original to the retrained model."""
    lo, lr_ = math.log(ref["original"]), math.log(ref["retrained"])
    lm = math.log(_forget_loss(model, split))
    frac = (lm - lo) / (lr_ - lo)
    assert frac >= 0.25, (frac, ref)
    assert abs(lm - lr_) < abs(lo - lr_), (lm, ref)
    after = accuracy_metrics(model, split)
    assert after["retain_acc"] > ref["start"]["retain_acc"] - 5, after
    assert after["test_acc"] > ref["start"]["test_acc"] - 5, after
    return frac


def test_all_five_are_registered_with_descriptions():
    methods = list_methods()
    for name in METHODS3:
        assert name in methods and len(methods[name]) > 20, name


def test_doing_nothing_fails_both_checks(digits_original, class_split, random_split, before,
                                         reference):
    assert reference["retrained"] > 5 * reference["original"]  # a gap to close
    with pytest.raises(AssertionError):
        _class_forgets(digits_original, class_split, before)
    with pytest.raises(AssertionError):
        _moves_toward_retrain(digits_original, random_split, reference)


@pytest.mark.parametrize("name", METHODS3)
def test_class_forgetting(name, digits_original, class_split, before):
    res = unlearn(digits_original, class_split, CLASS_CONFIGS[name])
    _class_forgets(res.model, class_split, before)
    assert res.rte_s > 0


@pytest.mark.parametrize("name", sorted(RANDOM_CONFIGS))
def test_random_forgetting_moves_toward_retrain(name, digits_original, random_split, reference):
    res = unlearn(digits_original, random_split, RANDOM_CONFIGS[name])
    _moves_toward_retrain(res.model, random_split, reference)


def test_delete_refuses_random_forgetting(digits_original, random_split):
    with pytest.raises(ValueError, match="whole classes only"):
        unlearn(digits_original, random_split, DeleteConfig(**COMMON))


# ------------------------------------------------------------------------------- pieces
def test_sfr_on_adaptive_loss_is_the_reference_formula():
    """The reference's AdaptiveLoss: mean((c / Σc) · ℓ · B), c = 1 / (ℓ^λ + 1e-15)."""
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(9, 4, generator=g), torch.randint(0, 4, (9,), generator=g)
    ce = nn.functional.cross_entropy(logits, y, reduction="none")
    coef = 1 / (ce.pow(0.5) + 1e-15)
    ref = ((coef / coef.sum()) * ce * 9).mean()
    torch.testing.assert_close(adaptive_forget_loss(logits, y, 0.5), ref)
    torch.testing.assert_close(adaptive_forget_loss(logits, y, 0.0), ce.mean())


def test_sfr_on_mask_and_counts(digits_original, class_split):
    res = unlearn(digits_original, class_split, SFROnConfig(epochs=1, **COMMON))
    assert 0 < res.info["mask_density"] < 1
    assert res.info["forget_steps"] == math.ceil(res.info["steps"] / 5)


def test_rum_groups_split_by_score_into_tertiles():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8])
    idx = torch.tensor([10, 11, 12, 13, 14, 15, 16])
    groups = rum_groups(scores, idx)
    assert [len(groups[g]) for g in GROUPS] == [3, 2, 2]
    assert groups["low"].tolist() == [11, 15, 13] and groups["high"].tolist() == [16, 12]


def test_rum_group_split_keeps_other_forget_examples_out_of_retain(random_split):
    group = random_split.forget_idx[:20]
    sub = _GroupSplit(random_split, group, "low")
    assert torch.equal(sub.forget.indices, group.sort().values)
    assert torch.equal(sub.retain.indices, random_split.retain.indices)
    assert not torch.isin(random_split.forget_idx, sub.retain.indices).any()
    assert torch.equal(sub.val.indices, random_split.val.indices)


@pytest.mark.parametrize("proxy", ["confidence", "holdout", "curvature"])
def test_rum_proxies_score_every_forget_example(proxy, digits_original, random_split):
    cfg = RUMConfig(proxy=proxy, proxy_epochs=3, **COMMON)
    s = memorization_scores(digits_original, random_split, cfg)
    assert s.shape == (len(random_split.forget),) and torch.isfinite(s).all()
    assert s.std() > 0


def test_rum_runs_each_group_with_its_method(digits_original, random_split):
    cfg = RUMConfig(methods=("ct", "msg", "ct"), method_options=({"epochs": 1}, {"epochs": 1},
                                                                  {"epochs": 1}), **COMMON)
    res = unlearn(digits_original, random_split, cfg)
    groups = res.info["groups"]
    assert [g["group"] for g in groups] == list(GROUPS)
    assert [g["method"] for g in groups] == ["ct", "msg", "ct"]
    assert sum(g["size"] for g in groups) == len(random_split.forget)
    assert groups[0]["score_max"] <= groups[1]["score_min"]


def test_ct_transposes_every_square_kernel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, (1, 3)), nn.Linear(3, 3))
    w0 = [m.weight.detach().clone() for m in model if isinstance(m, nn.Conv2d)]
    assert transpose_conv_kernels(model) == (1, 1)
    assert torch.equal(model[0].weight, w0[0].transpose(2, 3))
    assert torch.equal(model[1].weight, w0[1])
    assert [round(epoch_cosine(e, 3), 4) for e in range(3)] == [1.0, 0.75, 0.25]


def test_msg_reinitialises_the_smallest_gradients_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    w0, b0 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    grads = {"0.weight": torch.arange(36, dtype=torch.float32).view(4, 1, 3, 3) - 10.0}
    masks = reinit_small_gradients(model, grads, 0.25, torch.Generator().manual_seed(0))
    chosen = masks["0.weight"]
    assert int(chosen.sum()) == 9
    assert set(torch.nonzero(chosen.flatten()).flatten().tolist()) == set(range(6, 15))
    assert torch.equal(model[0].weight[~chosen], w0[~chosen])
    assert not torch.equal(model[0].weight[chosen], w0[chosen])
    assert not torch.equal(model[0].bias, b0)  # the reference's new conv: fresh bias
    again = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    b1 = again[0].bias.detach().clone()
    reinit_small_gradients(again, grads, 0.25, torch.Generator(), reinit_bias=False)
    assert torch.equal(again[0].bias, b1)
    assert [round(triangle_factor(e, 5), 4) for e in range(5)] == [0.3333, 0.6667, 1.0,
                                                                   0.6667, 0.3333]


def test_msg_leaves_no_gradient_hooks(digits_original, random_split):
    res = unlearn(digits_original, random_split, MSGConfig(epochs=1, **COMMON))
    assert all(not p._backward_hooks for p in res.model.parameters())
    assert res.info["reinit_fraction"] == pytest.approx(0.3, abs=1e-3)


def test_delete_target_masks_the_label():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    p = masked_teacher_probs(z, torch.tensor([0, 1]))
    assert p[0, 0] == 0 and p[1, 1] == 0
    torch.testing.assert_close(p[0, 1:], torch.softmax(z[0, 1:], 0))
    q = masked_teacher_probs(z, torch.tensor([0, 1]), classes=[2])
    assert q[0, 2] == 0 and q[0, 1] == 1


@pytest.mark.parametrize(
    ("name", "kw", "match"),
    [("sfr_on", {"forget_every": 0}, "forget_every"),
     ("sfr_on", {"forget_loss": "kl"}, "forget_loss must be one of"),
     ("sfr_on", {"max_norm": -1.0}, "max_norm"),
     ("rum", {"proxy": "c-score"}, "proxy must be one of"),
     ("rum", {"methods": ["ft", "nope", "ft"]}, "unknown method"),
     ("rum", {"methods": ["ft", "rum", "ft"]}, "another registered method"),
     ("rum", {"methods": ["ft", "ft"]}, "one entry per group"),
     ("rum", {"method_options": [{}, {"sparsity": 2}, {}]}, "mid group"),
     ("msg", {"init_rate": 1.5}, "init_rate"),
     ("msg", {"damp": -0.1}, "damp"),
     ("ct", {"epochs": 0}, "epochs must be"),
     ("delete", {"mask": "all"}, "mask must be one of")],
)
def test_config_validation(name, kw, match):
    with pytest.raises(ValueError, match=match):
        make_config(name, **kw)


@pytest.mark.parametrize(
    ("name", "kw", "expected"),
    [("sfr_on", {"epochs": 1}, 1), ("msg", {"epochs": 1}, 1), ("ct", {"epochs": 1}, 1),
     ("delete", {"epochs": 1}, 1),
     ("rum", {"methods": "ct", "method_options": {"epochs": 1}}, 3)],
)
def test_compile_reaches_the_training_steps(name, kw, expected, digits_original, class_split,
                                            monkeypatch, tmp_path):
    """With ``compile=True`` each training loop goes through the compile kernel once (a
    counting stand-in compiler; ``rum`` runs three loops)."""
    from fastunlearn.kernels import compile as fc

    monkeypatch.setenv(fc.CACHE_ENV_VAR, str(tmp_path / "cache"))
    fc.forget_compile_decisions()
    calls: list = []
    monkeypatch.setattr(fc, "_compile", lambda m: calls.append(m) or m)
    try:
        unlearn(digits_original, class_split, make_config(name, compile=True, **kw, **COMMON))
    finally:
        fc.forget_compile_decisions()
    assert len(calls) == expected
