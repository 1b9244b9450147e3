"""Image classifiers for unlearning experiments, built by name from a timm-style registry.

>>> from fastunlearn.models import create_model, list_models
>>> model = create_model("small_cnn", num_classes=10, in_chans=1, img_size=28)
>>> list_models("mobile*")
['mobilenetv2', 'mobilenetv2_100', 'mobilevit', 'mobilevit_xxs']

``create_model(name, data)`` takes classes/channels/size from a dataset; ``weights=PATH`` loads
a local ``.safetensors`` state dict; ``model.fastunlearn_spec`` rebuilds the architecture via
:func:`model_from_spec`.  timm is only imported when a timm model is built.
"""

from fastunlearn.models import ensemble, small, timm_models  # noqa: F401  (register built-in models)
from fastunlearn.models._registry import (
    ModelEntry,
    create_model,
    list_models,
    model_descriptions,
    model_from_spec,
    register_model,
)
from fastunlearn.models.timm_models import vit_patch_size
from fastunlearn.models.weights import load_weights, save_weights

__all__ = [
    "ModelEntry",
    "create_model",
    "list_models",
    "load_weights",
    "model_descriptions",
    "model_from_spec",
    "register_model",
    "save_weights",
    "vit_patch_size",
]
