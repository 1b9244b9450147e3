"""Tests for fastunlearn.models: registry, every architecture on small inputs, specs, weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fastunlearn.models import (
    _registry,
    create_model,
    list_models,
    model_descriptions,
    model_from_spec,
    register_model,
    vit_patch_size,
)

REPO = Path(__file__).resolve().parents[2]
BUILTIN = [
    "karpathynet",
    "lenet5",
    "mobilenetv2",
    "mobilenetv2_100",
    "mobilevit",
    "mobilevit_xxs",
    "resnet18",
    "small_cnn",
    "vit_tiny",
]
TIMM_MODELS = ["mobilenetv2_100", "mobilevit_xxs", "resnet18", "vit_tiny"]
HAND_WRITTEN = ["karpathynet", "lenet5", "small_cnn"]
# (channels, size, classes)
SHAPES = [(1, 8, 10), (1, 28, 7), (3, 32, 10)]


def _build(name: str, chans: int, size: int, classes: int, **kw) -> nn.Module:
    return create_model(name, num_classes=classes, in_chans=chans, img_size=size, **kw)


def _save(model: nn.Module, path: Path) -> Path:
    save_file(model.state_dict(), str(path))
    return path


# ------------------------------------------------------------------------------------ registry


def test_builtin_models_registered() -> None:
    assert set(BUILTIN) <= set(list_models())
    assert list_models() == sorted(list_models())


def test_list_models_pattern() -> None:
    assert list_models("mobile*") == [
        "mobilenetv2",
        "mobilenetv2_100",
        "mobilevit",
        "mobilevit_xxs",
    ]
    assert list_models("vit_*") == ["vit_tiny"]
    assert list_models("no_such_*") == []


def test_model_descriptions_one_line() -> None:
    desc = model_descriptions()
    assert list(desc) == list_models()
    for name, text in desc.items():
        assert text and "\n" not in text, name


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'") as err:
        create_model("nope", num_classes=3, in_chans=1, img_size=8)
    for name in BUILTIN:
        assert name in str(err.value)


def test_register_custom_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))

    @register_model("tiny_linear")
    def tiny_linear(num_classes, in_chans, img_size, pretrained=False, **kwargs):
        """A linear model on flattened pixels.

        More text that is not part of the description.
        """
        return nn.Sequential(
            nn.Flatten(), nn.Linear(in_chans * img_size[0] * img_size[1], num_classes)
        )

    assert "tiny_linear" in list_models()
    assert model_descriptions()["tiny_linear"] == "A linear model on flattened pixels."
    model = create_model("tiny_linear", num_classes=3, in_chans=1, img_size=(4, 5))
    assert model(torch.randn(2, 1, 4, 5)).shape == (2, 3)
    with pytest.raises(ValueError, match="registered twice"):
        register_model("tiny_linear")(tiny_linear)


# ------------------------------------------------------------------------- forward / backward


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[1]}-c{s[2]}")
@pytest.mark.parametrize("name", BUILTIN)
def test_forward_backward(name: str, shape: tuple[int, int, int]) -> None:
    chans, size, classes = shape
    model = _build(name, chans, size, classes)
    model.train()
    logits = model(torch.randn(2, chans, size, size))
    assert logits.shape == (2, classes)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, classes - 1])).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("name", HAND_WRITTEN)
@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (64, 64), (30, 17)])
def test_hand_written_any_size(name: str, hw: tuple[int, int]) -> None:
    model = create_model(name, num_classes=2, in_chans=3, img_size=hw)
    out = model(torch.randn(2, 3, *hw))
    assert out.shape == (2, 2)
    out.sum().backward()


def test_hand_written_timm_like_head() -> None:
    model = _build("small_cnn", 1, 28, 10)
    x = torch.randn(3, 1, 28, 28)
    feats = model.forward_features(x)
    assert feats.shape == (3, 64, 7, 7)
    assert model.forward_head(feats, pre_logits=True).shape == (3, 128)
    assert torch.allclose(model.forward_head(feats), model(x))
    assert model.get_classifier().out_features == 10


def test_small_cnn_channels_last_is_exact() -> None:
    """The channels-last fast path computes the same function as plain NCHW layers."""
    model = _build("small_cnn", 1, 28, 10).eval()
    x = torch.randn(4, 1, 28, 28)
    reference = model.classifier(torch.flatten(model.features(x), 1))
    assert torch.allclose(model(x), reference, atol=1e-5)


def test_small_cnn_per_sample_grads_with_vmap() -> None:
    """torch.func per-sample gradients (used by influence-style methods) match a plain loop."""
    from torch.func import functional_call, grad, vmap

    model = _build("small_cnn", 1, 28, 10)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(model, p, (x[None],)), y[None])

    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 3, 9, 1])
    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    nn.functional.cross_entropy(model(x[2:3]), y[2:3]).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(per_sample[name][2], p.grad, atol=1e-5), name


def test_deterministic_given_seed() -> None:
    for name in ("small_cnn", "resnet18"):
        torch.manual_seed(123)
        a = _build(name, 3, 32, 10).state_dict()
        torch.manual_seed(123)
        b = _build(name, 3, 32, 10).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_create_from_data_and_overrides() -> None:
    data = SimpleNamespace(num_classes=5, channels=1, image_size=(28, 28), name="fake")
    model = create_model("lenet5", data)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    assert model.fastunlearn_spec["img_size"] == [28, 28]
    model = create_model("lenet5", data, num_classes=3, in_chans=3, img_size=(16, 20))
    assert model(torch.randn(2, 3, 16, 20)).shape == (2, 3)
    assert model.fastunlearn_spec["in_chans"] == 3
    with pytest.raises(ValueError, match="img_size"):
        create_model("lenet5", num_classes=3, in_chans=1)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="unexpected option"):
        _build("lenet5", 1, 28, 10, depth=3)
    with pytest.raises(ValueError, match="JSON"):
        _build("small_cnn", 1, 28, 10, hidden=object())


# ----------------------------------------------------------------------- architecture details


def test_resnet18_cifar_stem() -> None:
    model = _build("resnet18", 3, 32, 10)
    assert isinstance(model.conv1, nn.Conv2d)
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.padding == (1, 1)
    assert model.conv1.bias is None and model.conv1.out_channels == 64
    assert isinstance(model.maxpool, nn.Identity)
    big = _build("resnet18", 3, 224, 10)
    assert big.conv1.kernel_size == (7, 7) and big.conv1.stride == (2, 2)
    assert not isinstance(big.maxpool, nn.Identity)
    # Same parameter names either way (timm-like state dicts).
    assert model.state_dict().keys() == big.state_dict().keys()


@pytest.mark.parametrize(
    ("name", "attr"), [("mobilenetv2_100", "conv_stem"), ("mobilevit_xxs", "stem.conv")]
)
def test_mobile_stem_stride(name: str, attr: str) -> None:
    def stem(model: nn.Module) -> nn.Conv2d:
        return model.get_submodule(attr)

    assert stem(_build(name, 3, 32, 10)).stride == (1, 1)
    assert stem(_build(name, 3, 224, 10)).stride == (2, 2)
    assert stem(_build(name, 3, 32, 10, stem_stride=2)).stride == (2, 2)


@pytest.mark.parametrize(
    ("size", "patch"), [(8, 2), (28, 4), (32, 4), (64, 4), (224, 16), (30, 2), (15, 1)]
)
def test_vit_patch_size(size: int, patch: int) -> None:
    assert vit_patch_size((size, size)) == patch


def test_vit_tiny_grid() -> None:
    for size, grid in ((8, 4), (28, 7), (32, 8)):
        model = _build("vit_tiny", 1, size, 10)
        assert model.patch_embed.patch_size == (size // grid, size // grid)
        assert model.patch_embed.grid_size == (grid, grid)
    model = _build("vit_tiny", 1, 28, 10, patch_size=7)
    assert model.patch_embed.grid_size == (4, 4)
    assert model.fastunlearn_spec["kwargs"] == {"patch_size": 7}


# ------------------------------------------------------------------------------------- specs


@pytest.mark.parametrize("name", BUILTIN)
def test_spec_round_trip(name: str) -> None:
    model = _build(name, 3, 32, 7)
    spec = json.loads(json.dumps(model.fastunlearn_spec))
    assert spec == {
        "name": name,
        "num_classes": 7,
        "in_chans": 3,
        "img_size": [32, 32],
        "kwargs": {},
    }
    again = create_model(
        spec["name"],
        num_classes=spec["num_classes"],
        in_chans=spec["in_chans"],
        img_size=spec["img_size"],
        **spec["kwargs"],
    )
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_spec_round_trip_with_kwargs() -> None:
    model = _build("small_cnn", 1, 8, 4, width=[8, 16], hidden=32)
    spec = json.loads(json.dumps(model.fastunlearn_spec))
    assert spec["kwargs"] == {"width": [8, 16], "hidden": 32}
    again = model_from_spec(spec)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in again.state_dict().items()
    }


# ----------------------------------------------------------------------------------- weights


@pytest.mark.parametrize("name", ["small_cnn", "lenet5", "karpathynet", "resnet18", "vit_tiny"])
def test_weights_round_trip(name: str, tmp_path: Path) -> None:
    model = _build(name, 1, 28, 7).eval()
    path = _save(model, tmp_path / "w.safetensors")
    torch.manual_seed(999)  # a different random init, overwritten by the file
    loaded = _build(name, 1, 28, 7, weights=str(path)).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    rebuilt = model_from_spec(model.fastunlearn_spec, weights=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_weights_wrong_shape(tmp_path: Path) -> None:
    path = _save(_build("small_cnn", 1, 28, 10), tmp_path / "ten.safetensors")
    with pytest.raises(ValueError, match="shape mismatch: classifier.2.weight") as err:
        _build("small_cnn", 1, 28, 7, weights=str(path))
    assert "\n" not in str(err.value)


def test_weights_wrong_keys(tmp_path: Path) -> None:
    state = _build("lenet5", 1, 28, 10).state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["features.0.bias"]
    path = tmp_path / "keys.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match="missing keys: features.0.bias") as err:
        _build("lenet5", 1, 28, 10, weights=str(path))
    assert "unexpected keys: extra.weight" in str(err.value)
    assert "\n" not in str(err.value)


def test_weights_other_architecture(tmp_path: Path) -> None:
    path = _save(_build("lenet5", 1, 28, 10), tmp_path / "lenet.safetensors")
    with pytest.raises(ValueError, match="do not fit model small_cnn"):
        _build("small_cnn", 1, 28, 10, weights=str(path))


def test_weights_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found") as err:
        _build("small_cnn", 1, 28, 10, weights=str(tmp_path / "absent.safetensors"))
    assert "\n" not in str(err.value)


def test_weights_not_safetensors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file")
    with pytest.raises(ValueError, match="not read"):
        _build("small_cnn", 1, 28, 10, weights=str(junk))
    pickle_like = tmp_path / "model.pt"
    pickle_like.write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="only .safetensors"):
        _build("small_cnn", 1, 28, 10, weights=str(pickle_like))


# -------------------------------------------------------------------------------- pretrained


@pytest.fixture
def offline_timm(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """timm.create_model that fails like an offline download when pretrained=True."""
    import timm

    real = timm.create_model
    calls: list[dict] = []

    def fake(name, pretrained=False, **kwargs):
        calls.append({"name": name, "pretrained": pretrained, **kwargs})
        if pretrained:
            raise OSError("[Errno -2] Name or service not known")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake)
    return calls


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_pretrained_offline_raises_runtime_error(name: str, offline_timm: list[dict]) -> None:
    with pytest.raises(RuntimeError, match="weights=PATH") as err:
        _build(name, 3, 32, 10, pretrained=True)
    msg = str(err.value)
    assert "could not be downloaded (offline?)" in msg and "\n" not in msg
    assert offline_timm[-1]["pretrained"] is True
    assert offline_timm[-1]["num_classes"] == 10


def test_pretrained_vit_passes_size_and_patch(offline_timm: list[dict]) -> None:
    with pytest.raises(RuntimeError):
        _build("vit_tiny", 1, 28, 10, pretrained=True)
    call = offline_timm[-1]
    assert call["name"] == "vit_tiny_patch16_224"
    assert call["img_size"] == (28, 28) and call["patch_size"] == 4 and call["in_chans"] == 1


def test_pretrained_hub_error_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    hub_errors = pytest.importorskip("huggingface_hub.errors")
    import timm

    def fake(name, pretrained=False, **kwargs):
        raise hub_errors.LocalEntryNotFoundError("cannot find the requested files in the cache")

    monkeypatch.setattr(timm, "create_model", fake)
    with pytest.raises(RuntimeError, match="weights="):
        _build("resnet18", 3, 32, 10, pretrained=True)


def test_weights_skip_pretrained_download(offline_timm: list[dict], tmp_path: Path) -> None:
    path = _save(_build("resnet18", 3, 32, 10), tmp_path / "r.safetensors")
    _build("resnet18", 3, 32, 10, pretrained=True, weights=str(path))
    assert offline_timm[-1]["pretrained"] is False


def test_pretrained_vit_from_local_imagenet_file(tmp_path: Path) -> None:
    """timm adapts 224-px / patch-16 / RGB weights to 28-px / patch-4 / grey (offline)."""
    import timm

    source = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    path = _save(source, tmp_path / "vit_in1k.safetensors")
    model = _build(
        "vit_tiny", 1, 28, 10, pretrained=True, pretrained_cfg_overlay={"file": str(path)}
    )
    assert model.patch_embed.proj.weight.shape == (192, 1, 4, 4)
    assert model.pos_embed.shape == (1, 1 + 7 * 7, 192)
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_hand_written_pretrained_is_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        _build(name, 1, 28, 10, pretrained=True)


# ---------------------------------------------------------------------------------- imports


def test_import_does_not_import_timm() -> None:
    if not (REPO / "fastunlearn" / "__init__.py").is_file():
        pytest.skip("fastunlearn/__init__.py is not there yet, so the package cannot be imported")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import fastunlearn.models, sys; assert 'timm' not in sys.modules, 'timm imported'"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
