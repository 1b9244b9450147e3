"""Checkpoints: safetensors weights + a JSON sidecar, written atomically, loaded without pickle.

``save_checkpoint("runs/x/orig.safetensors", model, dataset=data, ...)`` writes
``orig.safetensors`` and ``orig.json``. The JSON holds the architecture (``model`` spec from
:func:`fastunlearn.models.create_model`), the dataset and its class names, the forget spec,
seed, training config, metrics, package versions and the SHA-256 of the weights file, so a
weights file that does not belong to its sidecar (or is damaged) is detected on load.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "fastunlearn-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, or does not match what the caller expects."""


@dataclass
class Checkpoint:
    model: nn.Module
    meta: dict[str, Any]
    path: Path


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, sidecar)`` paths for ``path`` (``.safetensors`` added when missing)."""
    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    elif p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    return p, p.with_suffix(".json")


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("fastunlearn", "torch", "torchvision", "timm", "numpy", "safetensors"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def state_dict_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached, contiguous CPU copy of the state dict (no shared storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    dataset: Any = None,
    forget: dict[str, Any] | None = None,
    seed: int | None = None,
    train_config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write weights and sidecar atomically (each via temp file + rename); return the weights
    path. ``model`` must come from :func:`fastunlearn.create_model` (it carries its spec)."""
    from safetensors.torch import save

    spec = getattr(model, "fastunlearn_spec", None)
    if spec is None:
        raise CheckpointError(
            "model has no fastunlearn_spec; build it with fastunlearn.create_model(...)"
        )
    weights, sidecar = checkpoint_paths(path)
    blob = save(state_dict_tensors(model), metadata={"format": FORMAT})
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": spec,
        "dataset": dataset.describe() if hasattr(dataset, "describe") else dataset,
        "forget": forget,
        "seed": seed,
        "train_config": train_config,
        "metrics": metrics or {},
        "versions": package_versions(),
        "weights_file": weights.name,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
    }
    if extra:
        meta.update(extra)
    _atomic_write_bytes(weights, blob)
    _atomic_write_bytes(sidecar, (json.dumps(meta, indent=2, default=str) + "\n").encode())
    return weights


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar JSON of a checkpoint (CheckpointError when missing or not ours)."""
    weights, sidecar = checkpoint_paths(path)
    if not weights.exists():
        raise CheckpointError(f"checkpoint not found: {weights}")
    if not sidecar.exists():
        raise CheckpointError(
            f"checkpoint metadata not found: {sidecar} (it must sit beside {weights.name})"
        )
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint metadata {sidecar} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar} is not a fastunlearn checkpoint sidecar")
    return meta


def load_checkpoint(
    path: str | os.PathLike,
    *,
    expect_model: str | None = None,
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Rebuild the model from the sidecar's architecture and load the weights strictly.

    Raises :class:`CheckpointError` (one line) when files are missing or damaged, when the
    weights do not match the sidecar (hash, keys, shapes), or when ``expect_model`` is given
    and the checkpoint holds another architecture. Never unpickles anything.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    from fastunlearn.models import model_from_spec

    weights, sidecar = checkpoint_paths(path)
    meta = read_metadata(weights)
    spec = meta.get("model") or {}
    if expect_model is not None and spec.get("name") != expect_model:
        raise CheckpointError(f"{weights} holds a {spec.get('name')!r} model, not {expect_model!r}")
    blob = weights.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if meta.get("weights_sha256") and digest != meta["weights_sha256"]:
        raise CheckpointError(
            f"{weights} does not match {sidecar.name} (SHA-256 differs): file damaged or replaced"
        )
    try:
        state = load(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({err})") from err
    try:
        model = model_from_spec(spec)
    except ValueError as err:
        raise CheckpointError(f"{sidecar}: cannot rebuild the model ({err})") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not fit architecture {spec['name']!r}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    bad = [k for k in expected if expected[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{weights} does not fit architecture {spec['name']!r}: {k} has shape "
            f"{tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
        )
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return Checkpoint(model, meta, weights)
