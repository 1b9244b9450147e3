"""timm architectures adapted to small images: ``resnet18``, ``mobilenetv2_100``, ``vit_tiny``,
``mobilevit_xxs``.

timm is imported lazily inside the factories, so ``import fastunlearn.models`` stays fast.
Adaptations only change strides, padding or the stem conv and keep timm's module names, so
state dicts stay timm-like.  "Small" means ``max(H, W) <= 64`` (digits, MNIST, CIFAR).
Extra keyword arguments go to ``timm.create_model`` (e.g. ``drop_rate=0.1``).  Offline,
ImageNet weights already on disk can still be adapted by timm (patch-embedding and position-
embedding resampling for ``vit_tiny``, channel folding for 1-channel input) with
``pretrained=True, pretrained_cfg_overlay={"file": "/path/model.safetensors"}``.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from fastunlearn.models._registry import register_model

logger = logging.getLogger(__name__)

SMALL_INPUT_MAX_PX = 64


def _is_small(img_size: tuple[int, int]) -> bool:
    return max(img_size) <= SMALL_INPUT_MAX_PX


def _download_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean "the pretrained weights could not be fetched"."""
    errors: list[type[BaseException]] = [OSError, RuntimeError, ValueError]
    try:
        from huggingface_hub import errors as hf_errors
    except ImportError:
        hf_errors = None
    if hf_errors is not None:
        for name in (
            "HfHubHTTPError",
            "LocalEntryNotFoundError",
            "OfflineModeIsEnabled",
            "EntryNotFoundError",
            "RepositoryNotFoundError",
            "RevisionNotFoundError",
        ):
            cls = getattr(hf_errors, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                errors.append(cls)
    try:
        import httpx
    except ImportError:
        httpx = None
    if httpx is not None:
        errors.append(httpx.HTTPError)
    return tuple(errors)


def _create_timm(arch: str, display: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """``timm.create_model(arch, pretrained=..., **kwargs)``; a failed download of pretrained
    weights becomes a one-line ``RuntimeError`` that points to ``weights=PATH``."""
    import timm

    if not pretrained:
        return timm.create_model(arch, pretrained=False, **kwargs)
    try:
        return timm.create_model(arch, pretrained=True, **kwargs)
    except _download_errors() as err:
        detail = (str(err).strip().splitlines() or [""])[0][:160]
        raise RuntimeError(
            f"pretrained weights for {display} could not be downloaded (offline?); pass "
            f"weights=PATH with a local .safetensors file ({type(err).__name__}: {detail})"
        ) from err


@register_model("resnet18")
def resnet18(
    num_classes: int,
    in_chans: int,
    img_size: tuple[int, int],
    pretrained: bool = False,
    cifar_stem: bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """ResNet-18 (timm); CIFAR-style 3×3 stride-1 stem without max-pool for images ≤ 64 px.

    ``cifar_stem`` forces the stem choice (default: by image size).  The CIFAR stem replaces
    ``conv1`` by a 3×3 stride-1 conv (64 channels, no bias, Kaiming-normal init like timm) and
    ``maxpool`` by ``nn.Identity``, keeping timm's names.  With ``pretrained=True`` that new
    ``conv1`` is randomly initialised; all other layers keep the ImageNet weights.
    """
    model = _create_timm(
        "resnet18", "resnet18", pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    use_cifar = _is_small(img_size) if cifar_stem is None else bool(cifar_stem)
    if use_cifar:
        out = model.conv1.out_channels
        model.conv1 = nn.Conv2d(in_chans, out, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
        if pretrained:
            logger.warning(
                "resnet18: the CIFAR-style 3x3 stem is randomly initialised; the other layers "
                "are pretrained (pass cifar_stem=False to keep the pretrained 7x7 stem)"
            )
    return model


@register_model("mobilenetv2_100")
def mobilenetv2_100(
    num_classes: int,
    in_chans: int,
    img_size: tuple[int, int],
    pretrained: bool = False,
    stem_stride: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """MobileNetV2 1.0 (timm); stem stride 1 for images ≤ 64 px (total stride 16 instead of 32).

    ``stem_stride`` forces the stem stride (default: 1 if small else 2).  Changing the stride
    leaves all weights (and pretrained weights) valid.
    """
    model = _create_timm(
        "mobilenetv2_100",
        "mobilenetv2_100",
        pretrained,
        num_classes=num_classes,
        in_chans=in_chans,
        **kwargs,
    )
    stride = (1 if _is_small(img_size) else 2) if stem_stride is None else int(stem_stride)
    model.conv_stem.stride = (stride, stride)
    return model


register_model("mobilenetv2", description="Alias of mobilenetv2_100.")(mobilenetv2_100)


def vit_patch_size(img_size: tuple[int, int]) -> int:
    """Default ViT patch size for an image size: 16 from 224 px, else 4 when both sides are
    multiples of 4 and at least 16 px (28 → 7×7 grid, 32 → 8×8), else 2 when both are even
    (8×8 → 4×4 grid), else 1."""
    h, w = img_size
    if min(h, w) >= 224:
        return 16
    if min(h, w) >= 16 and h % 4 == 0 and w % 4 == 0:
        return 4
    if h % 2 == 0 and w % 2 == 0:
        return 2
    return 1


@register_model("vit_tiny")
def vit_tiny(
    num_classes: int,
    in_chans: int,
    img_size: tuple[int, int],
    pretrained: bool = False,
    patch_size: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """ViT-Tiny (timm vit_tiny_patch16_224 layout) at the data's size, patch size by image size.

    ``patch_size`` overrides :func:`vit_patch_size`.  With ``pretrained=True`` timm resamples
    the pretrained patch embedding and position embedding to the new patch and grid size.
    """
    patch = vit_patch_size(img_size) if patch_size is None else int(patch_size)
    if patch < 1 or patch > min(img_size):
        raise ValueError(f"vit_tiny patch_size {patch} does not fit images of {img_size} px")
    return _create_timm(
        "vit_tiny_patch16_224",
        "vit_tiny (timm vit_tiny_patch16_224)",
        pretrained,
        num_classes=num_classes,
        in_chans=in_chans,
        img_size=tuple(img_size),
        patch_size=patch,
        **kwargs,
    )


@register_model("mobilevit_xxs")
def mobilevit_xxs(
    num_classes: int,
    in_chans: int,
    img_size: tuple[int, int],
    pretrained: bool = False,
    stem_stride: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """MobileViT-XXS (timm); stem stride 1 for images ≤ 64 px (total stride 16 instead of 32).

    timm's MobileViT blocks already resize feature maps that are not a multiple of their 2×2
    unfolding patch (bilinear ``F.interpolate`` there and back), so any input size runs
    unwrapped; the only change is the stem stride (``stem_stride`` forces it; default 1 if
    small else 2), which gives 28×28/32×32 inputs a 2×2 final map instead of 1×1.  Weights and
    module names are exactly timm's.
    """
    model = _create_timm(
        "mobilevit_xxs",
        "mobilevit_xxs",
        pretrained,
        num_classes=num_classes,
        in_chans=in_chans,
        **kwargs,
    )
    stride = (1 if _is_small(img_size) else 2) if stem_stride is None else int(stem_stride)
    model.stem.conv.stride = (stride, stride)
    return model


register_model("mobilevit", description="Alias of mobilevit_xxs.")(mobilevit_xxs)
