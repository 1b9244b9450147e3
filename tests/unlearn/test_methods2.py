"""fisher / influence / ssd / zero_shot / prune / lora_ft on digits (small_cnn, session fixture)."""

import pytest
import torch
from torch import nn

from fastunlearn.data import ImageDataset, forget_classes
from fastunlearn.evaluate.accuracy import accuracy_metrics
from fastunlearn.unlearn import list_methods, unlearn
from fastunlearn.unlearn.fisher import FisherConfig
from fastunlearn.unlearn.influence import InfluenceConfig, woodfisher_solve
from fastunlearn.unlearn.lora_ft import LoRAFTConfig
from fastunlearn.unlearn.prune import PruneConfig, magnitude_masks, prunable_layers, sparsity_of
from fastunlearn.unlearn.ssd import SSDConfig, ssd_dampening, ssd_importances
from fastunlearn.unlearn.zero_shot import ZeroShotConfig

COMMON = {"device": "cpu", "progress": False}
METHODS2 = ("fisher", "influence", "ssd", "sisa", "zero_shot", "prune", "lora_ft")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread for this module: on the shared 2-core box two threads make these
    small-tensor tests ~10x slower (tests/conftest.py sets two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def before(digits_original, class_split):
    return accuracy_metrics(digits_original, class_split)


def test_all_seven_are_registered_with_descriptions():
    methods = list_methods()
    for name in METHODS2:
        assert name in methods and len(methods[name]) > 10, name


def _class_forgets(model, split, before, retain_points=5.0):
    after = accuracy_metrics(model, split)
    assert after["forget_acc"] < 10, after
    assert after["retain_acc"] > before["retain_acc"] - retain_points, (before, after)
    return after


@pytest.fixture(scope="module")
def fisher_class(digits_original, class_split):
    return unlearn(digits_original, class_split, FisherConfig(**COMMON))


@pytest.fixture(scope="module")
def ssd_class(digits_original, class_split):
    return unlearn(digits_original, class_split, SSDConfig(**COMMON))


@pytest.mark.parametrize(
    "cfg",
    [InfluenceConfig(**COMMON), InfluenceConfig(hessian="diag", **COMMON), PruneConfig(**COMMON)],
    ids=["influence-woodfisher", "influence-diag", "prune-omp-ga"],
)
def test_class_forgetting(digits_original, class_split, before, cfg):
    res = unlearn(digits_original, class_split, cfg)
    _class_forgets(res.model, class_split, before)
    assert res.rte_s > 0


def test_fisher_class_forgetting(fisher_class, class_split, before):
    _class_forgets(fisher_class.model, class_split, before)


def test_ssd_class_forgetting(ssd_class, class_split, before):
    _class_forgets(ssd_class.model, class_split, before)


def test_zero_shot_class_forgetting_within_10_points(digits_original, class_split, before):
    res = unlearn(digits_original, class_split, ZeroShotConfig(**COMMON))
    _class_forgets(res.model, class_split, before, retain_points=10.0)
    assert res.info["impressions"] == 32 * 10


def test_zero_shot_input_space_class_forgetting(digits_original, class_split, before):
    cfg = ZeroShotConfig(space="input", lr=0.01, epochs=5, impressions_per_class=16,
                         impression_steps=50, **COMMON)
    _class_forgets(unlearn(digits_original, class_split, cfg).model, class_split, before, 10.0)


class _NoPixels:
    """An image store that refuses to be read (except at ``allowed`` positions): proves a
    method never touches training data."""

    def __init__(self, images, allowed=()):
        self.shape = images.shape
        self._images = images
        self._allowed = set(int(i) for i in allowed)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        if not set(torch.as_tensor(index).reshape(-1).tolist()) <= self._allowed:
            raise AssertionError("zero_shot read a training image")
        return self._images[index]


def test_zero_shot_never_reads_training_data(digits, digits_original):
    # the validation images stay readable: fu.unlearn's shared collapse guard (outside the
    # method) measures retain-class accuracy on them before and after
    val = forget_classes(digits, ["3"]).val.indices
    blind = ImageDataset(
        "digits-blind", digits.classes, _NoPixels(digits.train_images), digits.train_labels,
        _NoPixels(digits.test_images, val), digits.test_labels, digits.mean, digits.std,
    )
    split = forget_classes(blind, ["3"])
    res = unlearn(digits_original, split, ZeroShotConfig(**COMMON))
    real = forget_classes(digits, ["3"])
    assert accuracy_metrics(res.model, real)["forget_acc"] < 10


def test_zero_shot_refuses_sample_forgetting(digits_original, random_split):
    with pytest.raises(ValueError, match="whole classes only"):
        unlearn(digits_original, random_split, ZeroShotConfig(**COMMON))


@pytest.mark.parametrize(
    "cfg",
    [FisherConfig(**COMMON), InfluenceConfig(**COMMON),
     SSDConfig(num_samples=512, num_forget_samples=512, **COMMON),
     PruneConfig(base="ft", base_options={"epochs": 1}, **COMMON),
     LoRAFTConfig(epochs=1, **COMMON)],
    ids=["fisher", "influence", "ssd", "prune", "lora_ft"],
)
def test_random_forgetting_keeps_test_accuracy(digits_original, random_split, cfg):
    start = accuracy_metrics(digits_original, random_split)
    after = accuracy_metrics(unlearn(digits_original, random_split, cfg).model, random_split)
    assert after["test_acc"] > start["test_acc"] - 5, (start, after)


def test_lora_ft_keeps_retain_and_returns_a_plain_model(digits_original, class_split, before):
    # Like `ft`, LoRA fine-tuning forgets a class only by starving it; the digits model has ~0
    # retain loss, so nothing pushes the class away here (on Fashion-MNIST it does: docs).
    res = unlearn(digits_original, class_split, LoRAFTConfig(epochs=1, **COMMON))
    after = accuracy_metrics(res.model, class_split)
    assert after["retain_acc"] > before["retain_acc"] - 5
    assert after["forget_acc"] <= before["forget_acc"]
    assert set(res.model.state_dict()) == set(digits_original.state_dict())
    assert all(p.requires_grad for p in res.model.parameters())
    changed = [k for k, v in res.model.state_dict().items()
               if not torch.equal(v, digits_original.state_dict()[k])]
    assert changed and all(k.endswith("weight") for k in changed)  # biases are not adapted
    assert res.info["merge_dropped_fraction"] == 0.0


# ------------------------------------------------------------------------------ sparsity
def _zero_pattern(model):
    return {n: m.weight.detach() == 0 for n, m in prunable_layers(model).items()}


@pytest.mark.parametrize(
    "cfg",
    [PruneConfig(sparsity=0.6, **COMMON),
     PruneConfig(kind="imp", sparsity=0.7, imp_rounds=2, epochs=1, base="ft",
                 base_options={"epochs": 1}, **COMMON),
     PruneConfig(sparsity=0.5, scope="layer", base="fisher", **COMMON),
     PruneConfig(sparsity=0.5, base="lora_ft", base_options={"epochs": 1}, **COMMON)],
    ids=["omp-ga", "imp-ft", "omp-layer-fisher", "omp-lora_ft"],
)
def test_prune_keeps_requested_sparsity_after_unlearning(digits_original, class_split, cfg):
    res = unlearn(digits_original, class_split, cfg)
    total = sum(m.weight.numel() for m in prunable_layers(res.model).values())
    assert sparsity_of(res.model) >= cfg.sparsity - 1.0 / total
    assert res.info["sparsity"] == pytest.approx(sparsity_of(res.model))
    assert not any(hasattr(m, "weight_orig") for m in res.model.modules())  # mask made permanent
    if cfg.kind == "omp":  # exactly the weights OMP chose stay zero
        masks = magnitude_masks(digits_original, cfg.sparsity, cfg.scope)
        zeros = _zero_pattern(res.model)
        for n, keep in masks.items():
            assert zeros[n][~keep].all(), n
    if cfg.scope == "layer":
        for n, m in prunable_layers(res.model).items():
            assert (m.weight == 0).float().mean() >= cfg.sparsity - 1.0 / m.weight.numel(), n


def test_lora_merge_keeps_pruned_weights_zero(digits_original, class_split):
    # a pruned model fed straight to lora_ft (no prune wrapper): zeros survive the merge
    model = unlearn(digits_original, class_split, PruneConfig(sparsity=0.5, base="ft",
                                                              base_options={"epochs": 1},
                                                              **COMMON)).model
    zeros = _zero_pattern(model)
    res = unlearn(model, class_split, LoRAFTConfig(epochs=1, **COMMON))
    after = _zero_pattern(res.model)
    for n in zeros:
        assert after[n][zeros[n]].all(), n
    assert sparsity_of(res.model) >= 0.5 - 1e-3
    assert 0 < res.info["merge_dropped_fraction"] < 1


# ------------------------------------------------------------------------------------- SSD
def test_ssd_leaves_weights_with_lower_forget_importance_untouched(
    digits_original, class_split, ssd_class
):
    cfg, res = ssd_class.config, ssd_class
    imp_f, imp_d = ssd_importances(digits_original, class_split, cfg)
    orig = dict(digits_original.named_parameters())
    dampened = 0
    for name, p in res.model.named_parameters():
        keep = imp_f[name] <= cfg.alpha * imp_d[name]
        assert torch.equal(p[keep], orig[name][keep]), name  # bit for bit
        beta = ssd_dampening(imp_f[name], imp_d[name], cfg.alpha, cfg.lam)
        torch.testing.assert_close(p[~keep], orig[name][~keep] * beta[~keep])
        assert (beta[~keep] < 1).all()
        dampened += int((~keep).sum())
    assert dampened == res.info["dampened_weights"] > 0


def test_ssd_dampening_rule():
    i_f = torch.tensor([1.0, 5.0, 40.0, 0.0])
    i_d = torch.tensor([1.0, 1.0, 2.0, 0.0])
    beta = ssd_dampening(i_f, i_d, alpha=3.0, lam=1.0)
    torch.testing.assert_close(beta, torch.tensor([1.0, 0.2, 0.05, 1.0]))


# ------------------------------------------------------------------------------- influence
def test_woodfisher_solve_equals_dense_inverse():
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(7, 23, generator=g, dtype=torch.float64)
    v = torch.randn(23, generator=g, dtype=torch.float64)
    lam = 0.3
    dense = lam * torch.eye(23, dtype=torch.float64) + grads.T @ grads / 7
    torch.testing.assert_close(woodfisher_solve(grads, v, lam), torch.linalg.solve(dense, v))


def test_influence_fixed_alpha_is_one_newton_step(digits_original, class_split):
    res = unlearn(digits_original, class_split, InfluenceConfig(alpha=1e-3, **COMMON))
    assert res.info["alpha"] == 1e-3 and res.info["alphas_tried"] == 0
    delta = torch.cat([(a - b).flatten() for a, b in
                       zip(res.model.parameters(), digits_original.parameters())])
    assert delta.norm().item() == pytest.approx(res.info["step_norm"], rel=1e-4)


# ------------------------------------------------------------------------------ fisher
def test_fisher_zeroes_the_forgotten_head_rows(digits_original, fisher_class, class_split):
    """As the reference's get_mean_var: the forgotten rows get mean 0 and variance
    forget_row_var (1e-4) × 10 — small noise around zero; forget_row_var=0 makes them exactly 0."""
    res = fisher_class
    head = res.model.get_classifier()
    row = torch.cat([head.weight[3], head.bias[3:4]]).detach()
    assert row.abs().max() < 0.2 and 0.6 * 1e-3 ** 0.5 < row.std() < 1.4 * 1e-3 ** 0.5
    others = [i for i in range(10) if i != 3]
    assert not torch.equal(head.weight[others], digits_original.get_classifier().weight[others])
    exact = unlearn(digits_original, class_split, FisherConfig(forget_row_var=0.0, **COMMON))
    head = exact.model.get_classifier()
    assert torch.equal(head.weight[3], torch.zeros_like(head.weight[3])) and head.bias[3] == 0


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize(
    ("cls", "kw", "match"),
    [(FisherConfig, {"alpha": 0}, "alpha must be a positive"),
     (FisherConfig, {"labels": "true"}, "labels must be one of"),
     (InfluenceConfig, {"hessian": "full"}, "hessian must be one of"),
     (InfluenceConfig, {"alpha": "big"}, "alpha must be 'auto'"),
     (SSDConfig, {"lam": -1}, "lam must be a positive"),
     (ZeroShotConfig, {"space": "pixels"}, "space must be one of"),
     (ZeroShotConfig, {"forget_loss": "kl"}, "forget_loss must be one of"),
     (PruneConfig, {"sparsity": 1.0}, "sparsity must be in"),
     (PruneConfig, {"base": "nope"}, "unknown method"),
     (PruneConfig, {"base": "prune"}, "another method"),
     (PruneConfig, {"base": "ft", "base_options": {"sparsity": 1}}, "has no option"),
     (PruneConfig, {"kind": "random"}, "kind must be one of"),
     (LoRAFTConfig, {"rank": 0}, "rank must be a positive"),
     (LoRAFTConfig, {"target": "conv"}, "target must be one of")],
)
def test_config_validation(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(**kw)


def test_methods_leave_the_original_untouched(digits_original, class_split):
    state = {k: v.clone() for k, v in digits_original.state_dict().items()}
    for cfg in (PruneConfig(base="lora_ft", base_options={"epochs": 1}, **COMMON),
                InfluenceConfig(num_samples=16, **COMMON)):
        unlearn(digits_original, class_split, cfg)
    assert all(torch.equal(state[k], v) for k, v in digits_original.state_dict().items())
    assert not any(isinstance(m, nn.Identity) and "lora" in n
                   for n, m in digits_original.named_modules())


def test_cli_prune_with_a_base_method(tmp_path, digits, digits_original):
    from fastunlearn.checkpoint import load_checkpoint, save_checkpoint
    from fastunlearn.cli import main

    src = save_checkpoint(tmp_path / "orig.safetensors", digits_original, dataset=digits)
    out = tmp_path / "pruned.safetensors"
    assert main(["unlearn", "--method", "prune", "--model-path", str(src), "--forget-class", "3",
                 "--set", "base=ft", 'base_options={"epochs": 1}', "sparsity=0.4",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    assert sparsity_of(load_checkpoint(out).model) >= 0.4 - 1e-4
