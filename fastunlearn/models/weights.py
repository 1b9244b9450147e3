"""Local weights as ``.safetensors`` state dicts (never pickle / ``torch.load``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

from fastunlearn._atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar"}


def _preview(keys: list[str], n: int = 3) -> str:
    head = ", ".join(keys[:n])
    return head + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a ``.safetensors`` state dict into ``model`` strictly and return the model.

    Raises ``FileNotFoundError`` when ``path`` does not exist and ``ValueError`` (one line,
    naming the first offending keys) when the file is not safetensors or its keys or shapes do
    not match the model.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    if p.suffix.lower() in _PICKLE_SUFFIXES:
        raise ValueError(
            f"{p} looks like a pickle checkpoint; only .safetensors weights are loaded "
            "(convert with safetensors.torch.save_file(model.state_dict(), 'x.safetensors'))"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(p), device="cpu")
    except SafetensorError as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"could not read {p} as a .safetensors file: {msg}") from None

    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {list(state[k].shape)} vs model {list(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_preview(mismatched)}")
    if problems:
        name = getattr(model, "fastunlearn_spec", {}).get("name", type(model).__name__)
        raise ValueError(f"weights {p} do not fit model {name}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    logger.info("loaded %d tensors from %s", len(state), p)
    return model


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save ``model.state_dict()`` as ``.safetensors`` (contiguous CPU copies; shared tensors
    are stored once per key) and return the path.

    The file is replaced atomically (staged under a temp name, fsynced, renamed — the
    checkpoint module's write): a crash or a full disk leaves the previous file or the new
    one, never a torn one; the file gets the permissions the umask gives."""
    from safetensors.torch import save

    p = Path(path)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(p, save(state))
    return p
