"""Batch-broadcast owners: parameters no leaf module owns, which the owner only broadcasts
over the batch. timm's ``VisionTransformer`` ``cls_token`` / ``reg_token`` / ``pos_embed``
(``[1, ...]``) get a ``[B, ...]`` stand-in for the pass, so the ordinary backward yields their
per-sample gradients (see ``register_batch_broadcast``). Registered by qualified name, so timm
is not imported here."""

from __future__ import annotations

from torch import nn

from fastunlearn.kernels.fisher_rules.registry import register_batch_broadcast


def _vit_broadcast(m: nn.Module) -> tuple[str, ...]:
    # timm VisionTransformer._pos_embed: ``cls_token.expand(B, -1, -1)``, ``x + pos_embed``
    # (resampling under dynamic_img_size would mix rows: not declared then).
    names = ("cls_token", "reg_token")
    return names if getattr(m, "dynamic_img_size", False) else (*names, "pos_embed")


register_batch_broadcast("timm.models.vision_transformer.VisionTransformer", _vit_broadcast)
