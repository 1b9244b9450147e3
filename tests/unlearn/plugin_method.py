"""A third-party unlearning method, defined outside fastunlearn (tests/unlearn/
test_plugins_device_rng.py registers it through ``fu.register_methods_from``, an entry point
and ``$FASTUNLEARN_METHODS``). It is written like research code: it seeds every global RNG
itself and draws from them — ``fu.unlearn`` must still leave the caller's RNG state as it
found it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.unlearn import UnlearnConfig, UnlearnResult, register_method
from fastunlearn.unlearn.base import method_device


@dataclass
class PluginNoiseConfig(UnlearnConfig):
    method: ClassVar[str] = "plugin_noise"

    scale: float = 1e-3


@register_method(PluginNoiseConfig)
def plugin_noise(model: nn.Module, split: ForgetSplit, config: PluginNoiseConfig) -> UnlearnResult:
    """Test plugin: seeded Gaussian noise on every weight."""
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed + random.randrange(100) + int(np.random.randint(100)))
    device = method_device(model, config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape).to(device) * config.scale)
    return UnlearnResult(model, "plugin_noise", config, info={"ran_on": str(device)})
