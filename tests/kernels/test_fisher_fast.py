"""The fast Fisher diagonal against the batch-size-1 loop and torch.func references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn.kernels import fisher_fast
from fastunlearn.kernels.fisher import (
    fisher_diagonal,
    torch_fisher_diagonal_loop,
    torch_per_sample_grads_loop,
)
from fastunlearn.kernels.fisher_fast import (
    fast_fisher_diagonal,
    fast_fisher_supported,
    fast_per_sample_grads,
    register_fisher_rule,
)
from fastunlearn.kernels.fisher_rules import conv as conv_rules
from fastunlearn.kernels.fisher_rules import norm_act, norms
from fastunlearn.kernels.fisher_rules.registry import _RULES, rule_for
from fastunlearn.models import create_model

RTOL = 1e-4


def assert_close_dicts(got: dict[str, Tensor], ref: dict[str, Tensor]) -> None:
    assert set(got) == set(ref)
    for name, r in ref.items():
        assert got[name].shape == r.shape, name
        scale = r.abs().max().clamp_min(1e-12)
        err = ((got[name] - r).abs().max() / scale).item()
        assert err <= RTOL, f"{name}: rel err {err:.2e}"


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so the BN rule is exercised."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("small_cnn", (3, 1, 7, 5)),
        ("lenet5", (3, 1, 7, 5)),
        ("resnet18", (3, 3, 8, 8)),
        ("vit_tiny", (3, 3, 8, 8)),
    ],
)
def test_models_match_loop_reference(name: str, shape: tuple[int, ...]) -> None:
    model = create_model(name, num_classes=5, in_chans=shape[1], img_size=shape[2:])
    _randomise_bn(model)
    model.train()  # the fast path must switch to eval mode (and back)
    x, y = torch.randn(shape), torch.randint(0, 5, (shape[0],))
    got = fast_fisher_diagonal(model, x, y)
    assert model.training
    assert_close_dicts(got, torch_fisher_diagonal_loop(model, x, y))


def test_matches_vmap_reference_small_cnn() -> None:
    model = create_model("small_cnn", num_classes=4, in_chans=2, img_size=(9, 6))
    x, y = torch.randn(7, 2, 9, 6), torch.randint(0, 4, (7,))
    assert_close_dicts(fast_fisher_diagonal(model, x, y), fisher_diagonal(model, x, y))


class _Zoo(nn.Module):
    """One of every rule and fallback: odd sizes, a strided/dilated conv, reflect and 'same'
    padding, grouped and depthwise convs, 1-D/2-D batch norm, group norm, layer norm over
    tokens, a token Linear, a Linear called twice, tied weights, an embedding (vmap fallback),
    a parameter owned by a non-leaf module, a frozen layer and an unused one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1)
        self.conv2 = nn.Conv2d(4, 6, (3, 2), padding="same", padding_mode="reflect", bias=False)
        self.conv3 = nn.Conv2d(6, 6, 3, stride=1, padding=2, dilation=2, groups=3)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.bn2 = nn.BatchNorm2d(6)
        self.gn = nn.GroupNorm(2, 6)
        self.tok = nn.Linear(6, 41)
        self.ln = nn.LayerNorm(41)
        self.twice = nn.Linear(41, 41)
        self.emb = nn.Embedding(10, 41)
        self.scale = nn.Parameter(torch.randn(1, 1, 41))  # owned by this non-leaf module
        self.bn1 = nn.BatchNorm1d(41)
        self.head = nn.Linear(41, 5)
        self.tied = nn.Linear(5, 5, bias=False)
        self.tied2 = nn.Linear(5, 5, bias=False)
        self.tied2.weight = self.tied.weight
        self.frozen = nn.Linear(5, 5)
        self.frozen.requires_grad_(False)
        self.unused = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.conv1(x))
        h = self.conv2(h)
        h = self.gn(self.dw(self.conv3(h)) + h)
        h = F.relu(self.bn2(h))
        t = self.ln(self.tok(h.flatten(2).transpose(1, 2)))  # [B, T, 41]
        t = self.twice(torch.tanh(self.twice(t))) * self.scale
        ids = (x.flatten(1)[:, :2].abs() * 7).long().clamp_max(9)  # [B, 2] data-dependent
        z = t.mean(1) + self.emb(ids).sum(1)
        z = self.head(torch.tanh(self.bn1(z)))
        return self.frozen(self.tied2(torch.relu(self.tied(z))))


@pytest.fixture
def zoo() -> _Zoo:
    torch.manual_seed(1)
    model = _Zoo()
    _randomise_bn(model)
    return model


@pytest.mark.parametrize("chunk_elems", [fisher_fast.DEFAULT_CHUNK_ELEMS, 50])
def test_zoo_matches_loop_reference(zoo: _Zoo, chunk_elems: int) -> None:
    x, y = torch.randn(3, 3, 7, 5), torch.randint(0, 5, (3,))
    ref = torch_fisher_diagonal_loop(zoo, x, y)
    assert "unused.weight" in ref and "frozen.weight" not in ref
    assert ref["scale"].abs().sum() > 0 and ref["emb.weight"].abs().sum() > 0
    assert_close_dicts(fast_fisher_diagonal(zoo, x, y, chunk_elems=chunk_elems), ref)


@pytest.mark.parametrize("grouped_from", [0, 10**9])
def test_conv_paths_agree(monkeypatch: pytest.MonkeyPatch, grouped_from: int) -> None:
    """Both conv strategies (unfold + bmm, grouped convolution_backward) match the loop."""
    monkeypatch.setattr(conv_rules, "CONV_GROUPED_MIN_POSITIONS", grouped_from)
    monkeypatch.setattr(conv_rules, "CONV_GROUPED_MIN_POSITIONS_GROUPS", grouped_from)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(3, 4, 2, padding="same", padding_mode="circular",
                                    groups=1), nn.Conv2d(4, 4, 3, groups=2),
                          nn.Flatten(), nn.LazyLinear(3))
    x, y = torch.randn(5, 2, 11, 9), torch.randint(0, 3, (5,))
    model(x)  # materialise the lazy layer
    assert_close_dicts(fast_fisher_diagonal(model, x, y), torch_fisher_diagonal_loop(model, x, y))


def test_per_sample_grads_and_weights(zoo: _Zoo) -> None:
    x, y = torch.randn(4, 3, 7, 5), torch.randint(0, 5, (4,))
    ref = torch_per_sample_grads_loop(zoo, x, y)
    assert_close_dicts(fast_per_sample_grads(zoo, x, y), ref)
    w = torch.rand(4)
    weighted = {n: (g.pow(2) * w.view(-1, *[1] * (g.dim() - 1))).sum(0) for n, g in ref.items()}
    assert_close_dicts(fast_fisher_diagonal(zoo, x, y, weights=w), weighted)


def test_callable_loss_is_per_sample() -> None:
    model = create_model("lenet5", num_classes=3, in_chans=1, img_size=8)
    x, y = torch.randn(3, 1, 8, 8), torch.randint(0, 3, (3,))

    def loss(z: Tensor, t: Tensor) -> Tensor:  # not additive over a batch on purpose
        return F.cross_entropy(z, t) ** 2

    assert_close_dicts(fast_fisher_diagonal(model, x, y, loss=loss),
                       torch_fisher_diagonal_loop(model, x, y, loss=loss))


def test_batch_statistics_bn_is_rejected() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False),
                          nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(2, 1, 5, 5)
    model(x)
    assert not fast_fisher_supported(model)
    with pytest.raises(ValueError, match="running statistics"):
        fast_fisher_diagonal(model, x, torch.tensor([0, 1]))
    assert fast_fisher_supported(create_model("resnet18", num_classes=2, in_chans=1, img_size=8))


def test_bad_input_raises() -> None:
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="samples"):
        fast_fisher_diagonal(model, x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="weights"):
        fast_fisher_diagonal(model, x, torch.zeros(4, dtype=torch.long), weights=torch.ones(3))
    with pytest.raises(ValueError, match="loss"):
        fast_fisher_diagonal(model, x, torch.zeros(4, dtype=torch.long), loss="mse")
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        fast_fisher_diagonal(model, x, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("addcmul_from", [1, 10**9])
@pytest.mark.parametrize("cache_elems", [50, fisher_fast.DEFAULT_CHUNK_ELEMS])
def test_square_sum_paths_and_cache_chunks(zoo: _Zoo, monkeypatch: pytest.MonkeyPatch,
                                           addcmul_from: int, cache_elems: int) -> None:
    """Both ways of squaring per-sample gradients into the Fisher (per-sample ``addcmul_``,
    ``mul_`` + ``sum``), with and without weights, in one-sample and whole-batch chunks."""
    monkeypatch.setattr(fisher_fast, "ADDCMUL_MIN_ELEMS", addcmul_from)
    monkeypatch.setattr(fisher_fast, "FISHER_CACHE_ELEMS", cache_elems)
    x, y = torch.randn(4, 3, 7, 5), torch.randint(0, 5, (4,))
    ref = torch_per_sample_grads_loop(zoo, x, y)
    w = torch.rand(4)
    for weights in (None, w):
        ww = torch.ones(4) if weights is None else weights
        want = {n: (g.pow(2) * ww.view(-1, *[1] * (g.dim() - 1))).sum(0) for n, g in ref.items()}
        assert_close_dicts(fast_fisher_diagonal(zoo, x, y, weights=weights), want)


def test_streamed_and_deferred_layers_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers squared inside the backward (as their output gradient arrives) give what the
    same layers give when processed after the backward."""
    model = create_model("resnet18", num_classes=5, in_chans=3, img_size=(8, 8))
    _randomise_bn(model)
    x, y = torch.randn(3, 3, 8, 8), torch.randint(0, 5, (3,))
    streamed = fast_fisher_diagonal(model, x, y)
    run = fisher_fast._run
    monkeypatch.setattr(fisher_fast, "_run", lambda *a, **k: run(*a, **k, stream=False))
    assert_close_dicts(streamed, fast_fisher_diagonal(model, x, y))


class _Gain(nn.Module):
    """A leaf with its own parameter and no built-in rule: ``x * gain`` over the last dim."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.randn(d))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gain


def test_user_registered_rule_is_used() -> None:
    """A rule registered for a custom type replaces the vmap fallback (it is called, inside
    the backward and after it) and gives the reference Fisher."""
    seen: list[tuple[int, int]] = []

    def gain_rule(m: nn.Module, calls: list, s: int, e: int, scratch: object
                  ) -> dict[str, Tensor]:
        seen.append((s, e))
        out = sum((c.grad_out()[s:e] * c.args[0][s:e]).reshape(e - s, -1, m.gain.numel()).sum(1)
                  for c in calls if c.grads)
        return {"gain": out}

    torch.manual_seed(0)
    once = nn.Sequential(nn.Linear(4, 6), _Gain(6), nn.Tanh(), nn.Linear(6, 3))
    g = _Gain(6)
    twice = nn.Sequential(nn.Linear(4, 6), g, nn.Tanh(), g, nn.Linear(6, 3))  # deferred path
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    assert _Gain not in _RULES
    try:
        assert register_fisher_rule(_Gain)(gain_rule) is gain_rule
        for model in (once, twice):
            seen.clear()
            got = fast_fisher_diagonal(model, x, y)
            assert seen and seen[0][0] == 0 and seen[-1][1] == 5
            assert_close_dicts(got, torch_fisher_diagonal_loop(model, x, y))
        seen.clear()
        assert_close_dicts(fast_per_sample_grads(once, x, y),
                           torch_per_sample_grads_loop(once, x, y))
        assert seen == [(0, 5)]
    finally:
        _RULES.pop(_Gain, None)
    with pytest.raises(TypeError, match="nn.Module"):
        register_fisher_rule(int)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- timm layers -----
def _no_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make both vmap fallbacks fail: the test then shows every parameter took a rule."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a vmap fallback was used")

    monkeypatch.setattr(fisher_fast, "vmap_rule", boom)
    monkeypatch.setattr(fisher_fast, "_whole_model_grads", boom)


def _randomise_affine(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)


def test_timm_vit_layernorm_takes_the_layernorm_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm ``LayerNorm`` (a ``nn.LayerNorm`` subclass, registered by name) takes the layer-norm
    rule, not the vmap fallback, on a ViT with odd sizes; the Fisher matches the loop."""
    from timm.layers import LayerNorm as TimmLayerNorm
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=(9, 6), patch_size=3, in_chans=2, num_classes=5,
                              embed_dim=12, depth=2, num_heads=3, mlp_ratio=1.75, reg_tokens=1)
    lns = [m for m in model.modules() if type(m) is TimmLayerNorm]
    assert len(lns) == 5 and all(rule_for(m) is norms._layernorm_rule for m in lns)
    _randomise_affine(model)
    x, y = torch.randn(3, 2, 9, 6), torch.randint(0, 5, (3,))
    ref = torch_fisher_diagonal_loop(model, x, y)
    _no_fallbacks(monkeypatch)
    assert_close_dicts(fast_fisher_diagonal(model, x, y), ref)


def test_timm_layernorm2d_and_groupnorm_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm ``LayerNorm2d`` (permute, layer norm over channels, permute back), ``GroupNorm``
    and ``GroupNorm1`` take rules and match the loop (Fisher and per-sample gradients)."""
    from timm.layers import GroupNorm, GroupNorm1, LayerNorm2d

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), LayerNorm2d(5), nn.GELU(),
                          nn.Conv2d(5, 6, 2), GroupNorm(6, num_groups=3), nn.Tanh(),
                          GroupNorm1(6), nn.Flatten(), nn.Linear(6 * 6 * 4, 4))
    _randomise_affine(model)
    x, y = torch.randn(3, 2, 7, 5), torch.randint(0, 4, (3,))
    ref = torch_fisher_diagonal_loop(model, x, y)
    ref_psg = torch_per_sample_grads_loop(model, x, y)
    _no_fallbacks(monkeypatch)
    assert rule_for(model[1]) is norms._channel_layernorm_rule
    assert_close_dicts(fast_fisher_diagonal(model, x, y), ref)
    assert_close_dicts(fast_per_sample_grads(model, x, y), ref_psg)


class _ScaledLayerNorm(nn.LayerNorm):
    """A subclass whose forward is not the parent's: it must not take the LayerNorm rule."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(2 * x.tanh())


def test_unregistered_subclass_is_not_matched_by_parent_rule() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), _ScaledLayerNorm(6), nn.Linear(6, 3))
    _randomise_affine(model)
    assert rule_for(model[1]) is None and rule_for(nn.LayerNorm(6)) is not None
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    assert_close_dicts(fast_fisher_diagonal(model, x, y), torch_fisher_diagonal_loop(model, x, y))


def _acts() -> list[nn.Module]:
    from timm.layers import activations as ta

    return [nn.Identity(), nn.ReLU(inplace=True), nn.ReLU6(inplace=True), nn.ReLU6(),
            nn.LeakyReLU(0.1), nn.ELU(0.7), nn.SiLU(inplace=True), nn.GELU(),
            nn.GELU(approximate="tanh"), nn.Hardswish(), nn.Hardsigmoid(), nn.Sigmoid(),
            nn.Tanh(), ta.GELU(), ta.GELUTanh(), ta.Sigmoid(inplace=True), ta.Tanh()]


def _bn_act_net(act: nn.Module, drop: nn.Module | None = None) -> nn.Module:
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    bn = BatchNormAct2d(6)
    bn.act = act
    if drop is not None:
        bn.drop = drop
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), bn, nn.Conv2d(6, 4, 3, stride=2),
                          nn.Flatten(), nn.LazyLinear(5))
    model(torch.zeros(1, 3, 7, 8))
    _randomise_bn(model)
    with torch.no_grad():  # a wide pre-activation range: ReLU6/hard* saturate on both sides
        bn.weight.mul_(4)
    return model


@pytest.mark.parametrize("act", _acts(), ids=lambda a: f"{type(a).__module__}.{type(a).__name__}")
def test_batchnorm_act_rule_matches_loop(act: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """timm ``BatchNormAct2d`` (not a leaf: act/drop children) owns its weight/bias and takes
    its rule for every supported activation (no fallback); Fisher and per-sample gradients
    match the loop."""
    model = _bn_act_net(act, drop=nn.Dropout(0.5) if isinstance(act, nn.SiLU) else None)
    model.train()
    assert norm_act.bn_act_supported(model[1])
    x, y = torch.randn(4, 3, 7, 8), torch.randint(0, 5, (4,))
    ref = torch_fisher_diagonal_loop(model, x, y)
    ref_psg = torch_per_sample_grads_loop(model, x, y)
    assert ref["1.weight"].abs().sum() > 0
    _no_fallbacks(monkeypatch)
    by_module, rest = fisher_fast._ownership(model)
    assert not rest and by_module[model[1]] == {"weight": "1.weight", "bias": "1.bias"}
    assert_close_dicts(fast_fisher_diagonal(model, x, y), ref)
    assert all(m.training for m in model.modules())  # modes restored
    assert_close_dicts(fast_per_sample_grads(model, x, y), ref_psg)


@pytest.mark.parametrize("act, drop", [(nn.Softplus(), None), (nn.ReLU(), nn.Tanh())])
def test_batchnorm_act_unknown_child_falls_back(act: nn.Module, drop: nn.Module | None) -> None:
    """An activation or ``drop`` the rule does not know: the parameters go to the whole-model
    fallback, as before, and the result still matches the loop."""
    model = _bn_act_net(act, drop)
    assert not norm_act.bn_act_supported(model[1])
    _, rest = fisher_fast._ownership(model)
    assert set(rest) == {"1.weight", "1.bias"}
    x, y = torch.randn(3, 3, 7, 8), torch.randint(0, 5, (3,))
    assert_close_dicts(fast_fisher_diagonal(model, x, y), torch_fisher_diagonal_loop(model, x, y))


def test_timm_mobilenetv2_matches_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm ``mobilenetv2_100`` (BatchNormAct2d with ReLU6 and Identity, depthwise convs) at
    32 px, B = 3: every parameter takes a rule and the Fisher matches the loop."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=5)
    _randomise_bn(model)
    x, y = torch.randn(3, 3, 32, 32), torch.randint(0, 5, (3,))
    ref = torch_fisher_diagonal_loop(model, x, y)
    _no_fallbacks(monkeypatch)
    assert_close_dicts(fast_fisher_diagonal(model, x, y), ref)


@pytest.mark.parametrize("weighted", [False, True])
def test_single_position_conv_shortcut(monkeypatch: pytest.MonkeyPatch, weighted: bool) -> None:
    """Convs whose output is one position per sample (an ImageNet-stem last stage at 32 px)
    take the rank-one shortcut ``(w·g²)ᵀ (a²)`` — grouped, strided and with bias too — and
    match the loop; the per-sample rule is not called for them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2),  # 3x3 -> 2x2
                          nn.Tanh(), nn.Conv2d(8, 8, 3, stride=2, padding=1),  # 2x2 -> 1x1
                          nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1, groups=2, bias=False),
                          nn.Tanh(), nn.Conv2d(6, 5, 1), nn.Flatten())
    x, y = torch.randn(4, 3, 3, 3), torch.randint(0, 5, (4,))
    w = torch.rand(4) if weighted else None
    ref = torch_per_sample_grads_loop(model, x, y)
    ww = torch.ones(4) if w is None else w
    want = {n: (g.pow(2) * ww.view(-1, *[1] * (g.dim() - 1))).sum(0) for n, g in ref.items()}
    shortcut: list[int] = []
    rule_calls: list[int] = []
    square_sum, rule = fisher_fast.conv_square_sum, _RULES[nn.Conv2d]
    monkeypatch.setattr(fisher_fast, "conv_square_sum",
                        lambda m, *a: shortcut.append(id(m)) or square_sum(m, *a))
    monkeypatch.setitem(_RULES, nn.Conv2d, lambda m, *a: rule_calls.append(id(m)) or rule(m, *a))
    assert_close_dicts(fast_fisher_diagonal(model, x, y, weights=w), want)
    assert sorted(shortcut) == sorted(id(model[i]) for i in (4, 6, 8))
    assert set(rule_calls) == {id(model[0]), id(model[2])}


@pytest.mark.parametrize("kernel_from", [1, 10**9])
def test_batchnorm_paths_agree(monkeypatch: pytest.MonkeyPatch, kernel_from: int) -> None:
    """Both batch-norm strategies (batch-norm backward kernel with samples as channels,
    elementwise) match the loop: BatchNorm1d/2d and BatchNormAct2d, with a frozen weight."""
    monkeypatch.setattr(norms, "BN_KERNEL_MIN_POSITIONS", kernel_from)
    model = _bn_act_net(nn.ReLU6())
    model.append(nn.BatchNorm1d(5))  # after the LazyLinear: [B, 5]
    model.insert(1, nn.BatchNorm2d(6))
    _randomise_bn(model)
    model[1].weight.requires_grad_(False)
    x, y = torch.randn(4, 3, 7, 8), torch.randint(0, 5, (4,))
    ref = torch_fisher_diagonal_loop(model, x, y)
    assert "1.weight" not in ref and "1.bias" in ref
    assert_close_dicts(fast_fisher_diagonal(model, x, y), ref)
    assert_close_dicts(fast_per_sample_grads(model, x, y),
                       torch_per_sample_grads_loop(model, x, y))
