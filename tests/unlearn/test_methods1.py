"""Unlearning methods I (rl, salun, ig_salun, neggrad_plus, l1_sparse, two_stage, scrub,
bad_teacher, boundary_shrink) and mask composition (ft, rl, ga, neggrad_plus) on digits.

The defaults are recipes for Fashion-MNIST (6 000 samples per class, networks trained to a
few tenths of loss); digits has ~145 samples per class and the test network fits it to ~1e-3
loss, so class forgetting — which most methods count in passes over the forget set — runs
with more passes (and, for the methods whose push starts from a vanishing gradient, a larger
step) here. Random forgetting runs every method with its defaults. ``small_cnn`` is trained
once per session (tests/conftest.py).
"""

import math

import pytest
import torch

from fastunlearn.data import forget_classes
from fastunlearn.evaluate.accuracy import accuracy_metrics
from fastunlearn.unlearn import get_method, list_methods, make_config, unlearn
from fastunlearn.unlearn.bad_teacher import BadTeacherConfig
from fastunlearn.unlearn.boundary_shrink import BoundaryShrinkConfig, nearest_wrong_class
from fastunlearn.unlearn.ft import FTConfig
from fastunlearn.unlearn.ga import GAConfig
from fastunlearn.unlearn.ig_salun import IGSalUnConfig
from fastunlearn.unlearn.l1_sparse import L1SparseConfig
from fastunlearn.unlearn.masks import compute_saliency
from fastunlearn.unlearn.neggrad_plus import NegGradPlusConfig
from fastunlearn.unlearn.rl import RLConfig
from fastunlearn.unlearn.salun import SalUnConfig
from fastunlearn.unlearn.scrub import SCRUBConfig
from fastunlearn.unlearn.two_stage import TwoStageConfig

COMMON = {"device": "cpu", "progress": False}

# digits-sized class-forgetting runs of each method (see the module docstring)
DIGITS = {
    "rl": RLConfig(**COMMON),
    "salun": SalUnConfig(**COMMON),
    "ig_salun": IGSalUnConfig(**COMMON),
    "neggrad_plus": NegGradPlusConfig(beta=0.8, epochs=30, check_every=1, **COMMON),
    "l1_sparse": L1SparseConfig(epochs=20, alpha=1e-2, **COMMON),
    "two_stage": TwoStageConfig(epochs=20, **COMMON),
    "scrub": SCRUBConfig(epochs=5, msteps=4, **COMMON),
    "bad_teacher": BadTeacherConfig(epochs=8, lr=1e-2, batch_size=64, **COMMON),
    "boundary_shrink": BoundaryShrinkConfig(epochs=5, **COMMON),
}
DEFAULTS = {name: type(cfg)(**COMMON) for name, cfg in DIGITS.items()}

ELEVEN = ("ft", "ga", "neggrad_plus", "rl", "l1_sparse", "salun", "ig_salun", "two_stage",
          "scrub", "bad_teacher", "boundary_shrink")


@pytest.fixture(scope="module")
def before_class(digits_original, class_split):
    return accuracy_metrics(digits_original, class_split)


@pytest.fixture(scope="module")
def before_random(digits_original, random_split):
    return accuracy_metrics(digits_original, random_split)


def test_all_eleven_methods_are_listed_with_descriptions():
    methods = list_methods()
    for name in ELEVEN:
        assert name in methods and len(methods[name]) > 15, name


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_class_forgetting(digits_original, class_split, before_class, name):
    res = unlearn(digits_original, class_split, DIGITS[name])
    after = accuracy_metrics(res.model, class_split)
    assert after["forget_acc"] < 10, after
    assert after["retain_acc"] >= before_class["retain_acc"] - 5, (before_class, after)
    assert res.rte_s > 0 and res.method == name


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_random_forgetting_keeps_test_accuracy(digits_original, random_split, before_random,
                                               name):
    res = unlearn(digits_original, random_split, DEFAULTS[name])
    after = accuracy_metrics(res.model, random_split)
    assert after["test_acc"] >= before_random["test_acc"] - 5, (before_random, after)
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_salun_with_ga_base(digits_original, class_split, before_class):
    res = unlearn(digits_original, class_split, SalUnConfig(base="ga", **COMMON))
    after = accuracy_metrics(res.model, class_split)
    assert after["forget_acc"] < 10 and after["retain_acc"] >= before_class["retain_acc"] - 5
    assert res.info["base"] == "ga" and res.info["mask_density"] == pytest.approx(0.5, abs=1e-3)


# --- masks compose with ft / rl / ga / neggrad_plus --------------------------------------------

MASKED = [
    ("ft", FTConfig(epochs=2, mask="salun", **COMMON), "grad"),
    ("rl", RLConfig(mask="ig", mask_sparsity=0.7, **COMMON), "ig"),
    ("ga", GAConfig(mask="salun", mask_sparsity=0.3, lr=2e-3, **COMMON), "grad"),
    # lr 0.01 (its pre-tuning default): at the Fashion-MNIST-tuned 0.03 this digits-sized
    # 30-epoch ascent takes retain accuracy to 94 % (measured), below the 5-point band
    ("neggrad_plus",
     NegGradPlusConfig(beta=0.8, epochs=30, check_every=1, lr=0.01, mask="ig", **COMMON), "ig"),
]


@pytest.mark.parametrize(("name", "cfg", "kind"), MASKED, ids=[m[0] for m in MASKED])
def test_mask_composition(digits_original, class_split, before_class, name, cfg, kind):
    res = unlearn(digits_original, class_split, cfg)
    # weights outside the mask are bit-for-bit unchanged, some inside it moved
    masks = compute_saliency(
        digits_original, class_split.forget, kind, cfg.mask_sparsity,
        batch_size=cfg.batch_size, seed=cfg.seed,
    )
    before = dict(digits_original.named_parameters())
    changed_inside = 0
    for pname, p in res.model.named_parameters():
        m = masks[pname]
        assert torch.equal(p.detach()[~m], before[pname].detach()[~m]), pname
        changed_inside += int((p.detach()[m] != before[pname].detach()[m]).sum())
    assert changed_inside > 0
    assert res.info["mask"] == cfg.mask
    assert res.info["mask_density"] == pytest.approx(1 - cfg.mask_sparsity, abs=1e-3)
    after = accuracy_metrics(res.model, class_split)
    assert after["retain_acc"] >= before_class["retain_acc"] - 5, (before_class, after)
    if name != "ft":  # plain fine-tuning is not a class forgetter on its own
        assert after["forget_acc"] < 10, after


# --- pieces ---------------------------------------------------------------------------------


def test_nearest_wrong_class_never_returns_the_true_class(digits_original, class_split):
    x, y = class_split.forget.take(64).tensors()
    eps = torch.full((1, 1, 1, 1), 10.0)  # huge budget so the attack does succeed sometimes
    lo, hi = torch.full_like(eps, -1e9), torch.full_like(eps, 1e9)
    for steps in (1, 3):
        target = nearest_wrong_class(digits_original, x, y, eps * 0.01, lo, hi, steps)
        assert (target != y).all() and target.shape == y.shape


def test_bad_teacher_uses_a_fresh_random_network(digits_original, class_split):
    from fastunlearn.unlearn._losses import random_init_copy

    a, b = random_init_copy(digits_original, 1), random_init_copy(digits_original, 1)
    c = random_init_copy(digits_original, 2)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    po = torch.cat([p.flatten() for p in digits_original.parameters()])
    assert torch.equal(pa, pb) and not torch.equal(pa, pc) and not torch.equal(pa, po)


def test_neggrad_plus_guard_restores_healthy_weights(digits_original, class_split):
    cfg = NegGradPlusConfig(beta=0.05, lr=1.0, epochs=5, check_every=1, target_forget_acc=None,
                            **COMMON)
    res = unlearn(digits_original, class_split, cfg)
    assert res.info["diverged"], res.info
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    after = accuracy_metrics(res.model, class_split)
    assert after["retain_acc"] >= 40


def test_scrub_caps_the_max_steps(digits_original, class_split):
    cfg = SCRUBConfig(epochs=2, msteps=2, lr=0.05, max_forget_kl=1.0, **COMMON)
    res = unlearn(digits_original, class_split, cfg)
    assert 0 < res.info["max_steps"] < 2 * math.ceil(len(class_split.forget) / 64)
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_make_config_reaches_every_method():
    for name in ELEVEN:
        cfg = make_config(name, lr=0.123, device="cpu")
        assert cfg.method == name and cfg.lr == 0.123
        assert get_method(name).config_cls is type(cfg)


# --- config validation -------------------------------------------------------------------

CONFIGS = [RLConfig, SalUnConfig, IGSalUnConfig, NegGradPlusConfig, L1SparseConfig,
           TwoStageConfig, SCRUBConfig, BadTeacherConfig, BoundaryShrinkConfig]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.method)
def test_negative_lr_is_rejected(cls):
    with pytest.raises(ValueError, match=f"{cls.method}: lr must be a positive number"):
        cls(lr=-0.1)


@pytest.mark.parametrize(
    ("cls", "kw", "match"),
    [(SalUnConfig, {"sparsity": 1.0}, r"salun: sparsity must be in \(0, 1\)"),
     (SalUnConfig, {"sparsity": 0.0}, r"sparsity must be in \(0, 1\)"),
     (IGSalUnConfig, {"sparsity": -0.5}, r"ig_salun: sparsity must be in \(0, 1\)"),
     (SalUnConfig, {"base": "ft"}, "unknown base method 'ft'"),
     (IGSalUnConfig, {"ig_steps": 0}, "ig_steps must be a positive integer"),
     (FTConfig, {"mask": "magnitude"}, "ft: mask must be one of"),
     (FTConfig, {"mask": "salun", "mask_sparsity": 1.5}, "mask_sparsity"),
     (GAConfig, {"mask_sparsity": 0.0}, "ga: mask_sparsity"),
     (RLConfig, {"mask_sparsity": 1}, "rl: mask_sparsity"),
     (NegGradPlusConfig, {"mask": "IG"}, "neggrad_plus: mask must be one of"),
     (NegGradPlusConfig, {"beta": 1.0}, r"beta must be in \(0, 1\)"),
     (NegGradPlusConfig, {"target_forget_acc": 120}, "target_forget_acc"),
     (L1SparseConfig, {"alpha": -1e-4}, "alpha must be ≥ 0"),
     (TwoStageConfig, {"temperature": 0}, "temperature must be > 0"),
     (TwoStageConfig, {"epochs": 0, "stage1_steps": 0}, "cannot both be 0"),
     (SCRUBConfig, {"msteps": -1}, "msteps"),
     (SCRUBConfig, {"max_forget_kl": 0}, "max_forget_kl"),
     (BadTeacherConfig, {"retain_fraction": 1.5}, "retain_fraction"),
     (BoundaryShrinkConfig, {"epsilon": 0}, "epsilon must be > 0"),
     (RLConfig, {"schedule": "step"}, "schedule must be one of"),
     (RLConfig, {"retain_per_epoch": 0}, "retain_per_epoch")],
)
def test_config_validation(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(**kw)


@pytest.mark.parametrize("cfg", [SalUnConfig(sparsity=0.7, **COMMON),
                                 IGSalUnConfig(sparsity=0.4, ig_steps=2, **COMMON)],
                         ids=["salun", "ig_salun"])
def test_saliency_methods_update_only_their_mask(digits_original, class_split, cfg):
    res = unlearn(digits_original, class_split, cfg)
    old = torch.cat([p.detach().flatten() for p in digits_original.parameters()])
    new = torch.cat([p.detach().flatten() for p in res.model.parameters()])
    assert (old == new).float().mean().item() >= cfg.sparsity - 1e-3
    assert res.info["mask_density"] == pytest.approx(1 - cfg.sparsity, abs=1e-3)


# --- any model: every method runs on other architectures -----------------------------------


@pytest.fixture(scope="module")
def synthetic_split(synthetic):
    return forget_classes(synthetic, ["class1"])


@pytest.mark.parametrize("model_name", ["lenet5", "karpathynet"])
@pytest.mark.parametrize("name", ELEVEN)
def test_every_method_runs_on_other_models(synthetic, synthetic_split, model_name, name):
    from fastunlearn.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, synthetic)
    overrides = {"epochs": 1}
    if name == "ig_salun":
        overrides["ig_steps"] = 2
    cfg = make_config(name, **overrides, **COMMON)
    res = unlearn(model, synthetic_split, cfg)
    assert res.method == name and res.rte_s > 0
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert res.model is not model
