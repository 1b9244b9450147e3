"""Hand-written small networks: ``small_cnn`` (the project default), ``lenet5``, ``karpathynet``.

All three take any ``in_chans`` and any image size from 1×1 up (max-pooling uses
``ceil_mode=True``, so odd and tiny maps never shrink to zero), and expose a timm-like
``forward_features`` / ``forward_head(pre_logits=...)`` / ``get_classifier`` interface.
None has pretrained weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fastunlearn.models._registry import register_model


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(
            f"{name} has no pretrained weights; use pretrained=False, or weights=PATH to load "
            "a local .safetensors file"
        )


def _no_options(name: str, kwargs: dict[str, Any], allowed: tuple[str, ...] = ()) -> None:
    if kwargs:
        opts = ", ".join(allowed) if allowed else "none"
        raise ValueError(
            f"unexpected option(s) for {name}: {', '.join(sorted(kwargs))} (accepted: {opts})"
        )


def _channels_last(x: Tensor) -> Tensor:
    """``x`` in channels-last layout.

    For 1-channel images ``x.contiguous(memory_format=torch.channels_last)`` keeps the NCHW
    strides (both layouts are the same bytes), and convolutions then stay on the slower NCHW
    path; a reshape/permute view with NHWC strides makes oneDNN pick its fast channels-last
    kernels (and, unlike ``as_strided``, works under ``torch.func.vmap``).
    """
    if x.dim() == 4 and x.shape[1] == 1:
        n, _, h, w = x.shape
        return x.reshape(n, h, w, 1).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(2, ceil_mode=True)


class _SmallNet(nn.Module):
    """Base: ``features`` (conv stack) → ``head_pool`` → flatten → ``classifier`` (Sequential
    whose last module is the final ``nn.Linear``)."""

    features: nn.Module
    head_pool: nn.Module
    classifier: nn.Sequential

    def _feature_shape(self, in_chans: int, img_size: tuple[int, int]) -> torch.Size:
        with torch.no_grad():
            return self.head_pool(self.features(torch.zeros(1, in_chans, *img_size))).shape[1:]

    def forward_features(self, x: Tensor) -> Tensor:
        """Feature maps ``[N, C, h, w]`` before the head."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool, flatten and classify feature maps; ``pre_logits`` stops before the last layer."""
        x = torch.flatten(self.head_pool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)

    def get_classifier(self) -> nn.Linear:
        """The final linear layer."""
        last = self.classifier[-1]
        assert isinstance(last, nn.Linear)
        return last

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class SmallCNN(_SmallNet):
    """Two 3×3 conv layers (ReLU, 2×2 max-pool) + one hidden FC layer + linear head.

    The map after the convs (``ceil(H/4) × ceil(W/4)``, 7×7 for 28×28 input) is average-pooled
    down to at most ``max_grid × max_grid`` so the FC layer stays small on large images.

    Speed (CPU training is the common case): activations run in channels-last layout (the
    parameters stay ordinary contiguous tensors) and max-pooling comes before each ReLU; both
    leave the computed function unchanged and together give ~2x training throughput on CPU.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        img_size: tuple[int, int],
        width: tuple[int, int] = (32, 64),
        hidden: int = 128,
        max_grid: int = 8,
    ) -> None:
        super().__init__()
        c1, c2 = width
        # Pool before ReLU: the same function (ReLU and max commute), 4x less ReLU work.
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, 3, padding=1),
            _pool(),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1),
            _pool(),
            nn.ReLU(inplace=True),
        )
        fh, fw = (-(-img_size[0] // 4), -(-img_size[1] // 4))
        grid = (min(fh, max_grid), min(fw, max_grid))
        self.head_pool = nn.Identity() if grid == (fh, fw) else nn.AdaptiveAvgPool2d(grid)
        self.classifier = nn.Sequential(
            nn.Linear(c2 * grid[0] * grid[1], hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """Feature maps ``[N, C, h, w]`` (channels-last memory layout) before the head."""
        return self.features(_channels_last(x))


class LeNet5(_SmallNet):
    """LeNet-5 with ReLU: conv 6@5×5 (pad 2) → pool → conv 16@5×5 → pool → 5×5 → 120 → 84 → fc.

    The second conv is unpadded when its input is at least 14 px (classic LeNet on 28×28: 14 →
    10 → 5) and padded by 2 on smaller images (8×8: 4 → 4 → 2); an adaptive average pool to
    5×5 then gives the classic 400-dimensional FC input for every image size.
    """

    def __init__(self, num_classes: int, in_chans: int, img_size: tuple[int, int]) -> None:
        super().__init__()
        half = min(-(-img_size[0] // 2), -(-img_size[1] // 2))
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            _pool(),
            nn.Conv2d(6, 16, 5, padding=0 if half >= 14 else 2),
            nn.ReLU(inplace=True),
            _pool(),
        )
        self.head_pool = nn.AdaptiveAvgPool2d((5, 5))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )


class KarpathyNet(_SmallNet):
    """The ConvNetJS CIFAR-10 demo net: 3 × (conv 5×5 pad 2 → ReLU → 2×2 max-pool) with
    16, 20, 20 filters, then one linear layer.

    Pools use ``ceil_mode`` so small inputs never vanish (8×8 → 4 → 2 → 1; 28×28 → 14 → 7 → 4;
    32×32 → 16 → 8 → 4, the original 320-dimensional FC input).
    """

    def __init__(self, num_classes: int, in_chans: int, img_size: tuple[int, int]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 16, 5, padding=2),
            nn.ReLU(inplace=True),
            _pool(),
            nn.Conv2d(16, 20, 5, padding=2),
            nn.ReLU(inplace=True),
            _pool(),
            nn.Conv2d(20, 20, 5, padding=2),
            nn.ReLU(inplace=True),
            _pool(),
        )
        self.head_pool = nn.Identity()
        c, h, w = self._feature_shape(in_chans, img_size)
        self.classifier = nn.Sequential(nn.Linear(c * h * w, num_classes))


@register_model("small_cnn")
def small_cnn(
    num_classes: int,
    in_chans: int,
    img_size: tuple[int, int],
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Fast 2-conv CNN (32/64 ch, FC 128): the project default for 28×28 data on CPU.

    Options: ``width=(c1, c2)`` conv channels, ``hidden`` FC width, ``max_grid`` (largest
    pooled grid fed to the FC layer).
    """
    _no_pretrained("small_cnn", pretrained)
    opts = {k: kwargs.pop(k) for k in ("width", "hidden", "max_grid") if k in kwargs}
    _no_options("small_cnn", kwargs, ("width", "hidden", "max_grid"))
    if "width" in opts:
        width = tuple(int(c) for c in opts["width"])
        if len(width) != 2:
            raise ValueError(f"small_cnn width must be two channel counts, got {opts['width']!r}")
        opts["width"] = width
    return SmallCNN(num_classes, in_chans, img_size, **opts)


@register_model("small_cnn_narrow")
def small_cnn_narrow(
    num_classes: int,
    in_chans: int,
    img_size: tuple[int, int],
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """``small_cnn`` with half the conv channels (16/32, FC 128): the audit's shadow model.

    About 2.7x faster to train on CPU than ``small_cnn``; on fashion-mnist-10k halves it still
    fits the training set (≥ 99.5 %) within a point of ``small_cnn``'s test accuracy
    (benchmarks/bench_pool.py). Options as for ``small_cnn`` (``hidden``, ``max_grid``).
    """
    _no_pretrained("small_cnn_narrow", pretrained)
    if "width" in kwargs:
        raise ValueError("small_cnn_narrow has a fixed width (16, 32); for another width use "
                         "small_cnn with width=(c1, c2)")
    opts = {k: kwargs.pop(k) for k in ("hidden", "max_grid") if k in kwargs}
    _no_options("small_cnn_narrow", kwargs, ("hidden", "max_grid"))
    return SmallCNN(num_classes, in_chans, img_size, width=(16, 32), **opts)


@register_model("lenet5")
def lenet5(
    num_classes: int,
    in_chans: int,
    img_size: tuple[int, int],
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Classic LeNet-5 (6@5×5, 16@5×5, FC 120-84) with ReLU and size-adaptive padding/pooling."""
    _no_pretrained("lenet5", pretrained)
    _no_options("lenet5", kwargs)
    return LeNet5(num_classes, in_chans, img_size)


@register_model("karpathynet")
def karpathynet(
    num_classes: int,
    in_chans: int,
    img_size: tuple[int, int],
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """ConvNetJS CIFAR-10 demo net: 3 × (conv 5×5 16/20/20 → ReLU → pool 2) → linear."""
    _no_pretrained("karpathynet", pretrained)
    _no_options("karpathynet", kwargs)
    return KarpathyNet(num_classes, in_chans, img_size)
