"""Checkpoints: one safetensors file that carries its own metadata, written atomically, loaded
without pickle.

``save_checkpoint("runs/x/orig.safetensors", model, dataset=data, ...)`` writes
``orig.safetensors`` and, for people and older tools, ``orig.json``. The metadata — the
architecture (``model`` spec from :func:`fastunlearn.models.create_model`), the dataset and its
class names, the forget spec, seed, training config, metrics, package versions and the SHA-256
of the tensor data (``tensors_sha256``) — lives in the safetensors header itself, so the
weights file alone is the checkpoint and it is replaced by one atomic rename: a crash, kill or
full disk at any point leaves either the previous checkpoint or the new one, never a mix.

The ``.json`` sidecar holds the same metadata plus the SHA-256 of the whole weights file
(``weights_sha256``). It is staged before the weights are committed and renamed after them, so
it is current except when the process dies between the two renames; the loader then notices
that it describes other weights, warns and ignores it. Checkpoints written before the metadata
moved into the header (``format_version`` 1) are still read through their sidecar.

Loading checks, before any model is built: the file's header and size, the tensor data's hash
(a missing hash is an error, not a skipped check), and that the architecture the metadata
describes has exactly the keys and shapes stored in the file — on the ``meta`` device, so
metadata asking for ``num_classes: 1e8`` allocates nothing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastunlearn._atomic import atomic_write_bytes, commit, current_umask, stage

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "checkpoint_paths",
    "current_umask",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
    "verify_checkpoint",
]

log = logging.getLogger(__name__)

FORMAT = "fastunlearn-checkpoint"
FORMAT_VERSION = 2
#: safetensors header ``__metadata__`` entry holding the checkpoint metadata as JSON
HEADER_KEY = "fastunlearn"
_MAX_HEADER = 100_000_000  # the safetensors limit on the header size


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


# ----------------------------------------------------------------------- atomic files
# (in fastunlearn._atomic; the old private names stay importable from here)
_stage, _commit, _atomic_write_bytes = stage, commit, atomic_write_bytes


# ----------------------------------------------------------------- safetensors header
def _header_size(first8: bytes, total: int) -> int | None:
    if len(first8) < 8:
        return None
    n = int.from_bytes(first8[:8], "little")
    return n if 2 <= n <= min(_MAX_HEADER, total - 8) else None


def _decode_header(raw: bytes) -> dict[str, Any] | None:
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return header if isinstance(header, dict) else None


def _blob_header(blob: bytes) -> tuple[dict[str, Any], int] | None:
    """``(header, header_size)`` of a safetensors byte string, or None when it has none."""
    n = _header_size(blob[:8], len(blob))
    header = None if n is None else _decode_header(blob[8 : 8 + n])
    return None if header is None or n is None else (header, n)


def _file_header(path: Path) -> tuple[dict[str, Any], int] | None:
    """The same, reading only the header of the file at ``path``."""
    with path.open("rb") as fh:
        n = _header_size(fh.read(8), os.fstat(fh.fileno()).st_size)
        header = None if n is None else _decode_header(fh.read(n))
    return None if header is None or n is None else (header, n)


def _tensor_shapes(header: dict[str, Any], where: Path) -> tuple[dict[str, tuple[int, ...]], int]:
    """``({name: shape}, data_size)`` from a safetensors header (CheckpointError if malformed)."""
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(d) for d in info["shape"])
            begin, stop = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(
                f"{where} is not a readable safetensors file (bad entry for {name!r}: {err})"
            ) from None
        if min(shape, default=0) < 0 or not 0 <= begin <= stop:
            raise CheckpointError(f"{where} is not a readable safetensors file "
                                  f"(bad shape or offsets for {name!r})")
        shapes[name] = shape
        end = max(end, stop)
    return shapes, end


def _embedded_meta(header: dict[str, Any], where: Path) -> dict[str, Any] | None:
    """The metadata stored in the header, None for files without it (format 1, foreign)."""
    raw = (header.get("__metadata__") or {}).get(HEADER_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: the metadata in its header is not valid JSON ({err})"
                              ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: the metadata in its header is not a fastunlearn "
                              "checkpoint's")
    return meta


def _canonical(meta: dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True, default=str)


# ------------------------------------------------------------------------------ save
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
    """Write the checkpoint (metadata inside the weights file) and its JSON sidecar; return the
    weights path. ``model`` must come from :func:`fastunlearn.create_model` (it carries its spec).

    Both files are staged (written and fsynced under temp names) before anything is replaced;
    the weights file's rename is the commit. A failure before it leaves the previous checkpoint
    untouched; after it, the new checkpoint is complete whatever happens to the sidecar.
    """
    from safetensors.torch import save

    spec = getattr(model, "fastunlearn_spec", None)
    if spec is None:
        raise CheckpointError(
            "model has no fastunlearn_spec; build it with fastunlearn.create_model(...)"
        )
    weights, sidecar = checkpoint_paths(path)
    tensors = state_dict_tensors(model)
    probe = save(tensors, metadata={"format": FORMAT})
    n = int.from_bytes(probe[:8], "little")
    tensors_sha256 = hashlib.sha256(memoryview(probe)[8 + n :]).hexdigest()
    del probe
    meta: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": spec,
        "dataset": dataset.describe() if hasattr(dataset, "describe") else dataset,
        "forget": forget,
        "seed": seed,
        "train_config": train_config,
        "metrics": metrics or {},
        "versions": package_versions(),
        **(extra or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights_file": weights.name,
        "tensors_sha256": tensors_sha256,
    }
    text = json.dumps(meta, default=str)
    blob = save(tensors, metadata={"format": FORMAT, HEADER_KEY: text})
    parsed = _blob_header(blob)
    if parsed is None or hashlib.sha256(
            memoryview(blob)[8 + parsed[1] :]).hexdigest() != tensors_sha256:
        raise RuntimeError("safetensors laid the tensors out differently twice; not saving")
    side = {**json.loads(text), "weights_sha256": hashlib.sha256(blob).hexdigest()}
    staged_weights = _stage(weights, blob)
    try:
        staged_sidecar = _stage(sidecar, (json.dumps(side, indent=2) + "\n").encode())
    except BaseException:
        staged_weights.unlink(missing_ok=True)
        raise
    try:
        _commit(staged_weights, weights)  # the commit point
    except BaseException:
        staged_sidecar.unlink(missing_ok=True)
        raise
    try:
        _commit(staged_sidecar, sidecar)
    except OSError as err:
        log.warning("saved %s, but its sidecar %s could not be updated (%s); the weights file "
                    "carries the metadata", weights, sidecar.name, err)
    return weights


# ------------------------------------------------------------------------------ load
def _read_sidecar(weights: Path, sidecar: Path) -> dict[str, Any]:
    if not sidecar.exists():
        raise CheckpointError(
            f"checkpoint metadata not found: {sidecar} (it must sit beside {weights.name})"
        )
    try:
        meta = json.loads(sidecar.read_bytes().decode("utf-8"))
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(f"checkpoint metadata {sidecar} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar} is not a fastunlearn checkpoint sidecar")
    return meta


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's metadata, read from the weights file's header (only the header is
    read; :func:`load_checkpoint` verifies the rest), or from the ``.json`` sidecar for
    checkpoints written before format 2. CheckpointError when missing or not ours."""
    weights, sidecar = checkpoint_paths(path)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint not found: {weights}")
    parsed = _file_header(weights)
    meta = _embedded_meta(parsed[0], weights) if parsed is not None else None
    return meta if meta is not None else _read_sidecar(weights, sidecar)


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified(weights: Path, sidecar: Path) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """``(meta, file bytes, {name: shape})`` once the file has been checked whole and
    unmodified against the hash its metadata records (CheckpointError otherwise)."""
    if not weights.is_file():
        raise CheckpointError(f"checkpoint not found: {weights}")
    blob = weights.read_bytes()
    parsed = _blob_header(blob)
    meta = _embedded_meta(parsed[0], weights) if parsed is not None else None
    if meta is not None and parsed is not None:
        header, n = parsed
        want = meta.get("tensors_sha256")
        if not isinstance(want, str) or not want:
            raise CheckpointError(f"{weights}: its metadata has no tensors_sha256, so the "
                                  "weights cannot be verified; re-save the checkpoint")
        shapes, size = _tensor_shapes(header, weights)
        if len(blob) != 8 + n + size:
            raise CheckpointError(f"{weights} has {len(blob)} bytes, its header describes "
                                  f"{8 + n + size}: file damaged or replaced (truncated?)")
        if _sha256(memoryview(blob)[8 + n :]) != want:
            raise CheckpointError(f"{weights}: tensor data does not match the SHA-256 in its "
                                  "header: file damaged or replaced")
        _check_sidecar(weights, sidecar, meta)
        return meta, blob, shapes
    # format 1: the sidecar is the metadata and holds the whole file's hash
    meta = _read_sidecar(weights, sidecar)
    want = meta.get("weights_sha256")
    if want and _sha256(blob) != want:
        raise CheckpointError(
            f"{weights} does not match {sidecar.name} (SHA-256 differs): file damaged or replaced"
        )
    if parsed is None:
        raise CheckpointError(f"{weights} is not a readable safetensors file (no valid header)")
    shapes, size = _tensor_shapes(parsed[0], weights)
    if len(blob) != 8 + parsed[1] + size:
        raise CheckpointError(f"{weights} is not a readable safetensors file "
                              f"({len(blob)} bytes, its header describes {8 + parsed[1] + size})")
    if not want:
        raise CheckpointError(f"{sidecar} has no weights_sha256, so {weights.name} cannot be "
                              "verified; re-save the checkpoint")
    return meta, blob, shapes


def _check_sidecar(weights: Path, sidecar: Path, meta: dict[str, Any]) -> None:
    """Warn when the sidecar of a format-2 checkpoint describes other weights (a crash between
    the two renames of a save); the weights file's own metadata is used either way."""
    if not sidecar.exists():
        log.debug("%s has no sidecar; using the metadata in its header", weights)
        return
    try:
        side = json.loads(sidecar.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable sidecar %s (%s); using the metadata in %s",
                    sidecar, err, weights.name)
        return
    if not isinstance(side, dict):
        side = {}
    side.pop("weights_sha256", None)
    if _canonical(side) != _canonical(meta):
        log.warning("ignoring stale sidecar %s (it describes other weights); using the metadata "
                    "in %s", sidecar, weights.name)


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check that a checkpoint is whole and unmodified (header, size, hash) without building
    its model; return its metadata. CheckpointError (one line) otherwise."""
    weights, sidecar = checkpoint_paths(path)
    return _verified(weights, sidecar)[0]


def _check_architecture(spec: Any, shapes: dict[str, tuple[int, ...]], weights: Path) -> None:
    """Build the architecture the metadata names on the ``meta`` device (no memory) and check
    that its state dict has exactly the stored keys and shapes."""
    from fastunlearn.models._registry import model_from_spec

    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{weights}: metadata field 'model' must be a model spec "
                              f"{{'name': ..., 'num_classes': ...}}, got {spec!r:.80}")
    try:
        with torch.device("meta"):
            skeleton = model_from_spec(spec)
    except (ValueError, TypeError, OverflowError) as err:
        raise CheckpointError(f"{weights}: cannot rebuild the model ({err})") from err
    except (RuntimeError, NotImplementedError) as err:  # a factory that needs real tensors
        log.debug("cannot build %s on the meta device (%s); checking sizes only",
                  spec["name"], err)
        _check_sizes(spec, shapes, weights)
        return
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    del skeleton
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not fit architecture {spec['name']!r}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    bad = [k for k in expected if expected[k] != shapes[k]]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{weights} does not fit architecture {spec['name']!r}: {k} has shape "
            f"{shapes[k]}, expected {expected[k]}"
        )


def _check_sizes(spec: dict[str, Any], shapes: dict[str, tuple[int, ...]], weights: Path) -> None:
    """Fallback for models that cannot be built on ``meta``: a classifier's class and channel
    counts are dimensions of some stored tensor."""
    dims = {d for shape in shapes.values() for d in shape}
    for field in ("num_classes", "in_chans"):
        value = spec.get(field)
        if value is not None and value not in dims:
            raise CheckpointError(f"{weights} does not fit architecture {spec['name']!r}: "
                                  f"{field}={value!r} is no dimension of any stored tensor")


def load_checkpoint(
    path: str | os.PathLike,
    *,
    expect_model: str | None = None,
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Rebuild the model from the checkpoint's metadata and load the weights strictly.

    Raises :class:`CheckpointError` (one line) when files are missing or damaged, when the
    metadata has no hash, when the weights do not match the metadata (hash, keys, shapes —
    checked before the model is allocated), or when ``expect_model`` is given and the
    checkpoint holds another architecture. Never unpickles anything.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    from fastunlearn.models._registry import model_from_spec

    weights, sidecar = checkpoint_paths(path)
    meta, blob, shapes = _verified(weights, sidecar)
    spec = meta.get("model")
    name = spec.get("name") if isinstance(spec, dict) else None
    if expect_model is not None and name != expect_model:
        raise CheckpointError(f"{weights} holds a {name!r} model, not {expect_model!r}")
    _check_architecture(spec, shapes, weights)
    try:
        state = load(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({err})") from err
    del blob
    try:
        model = model_from_spec(spec)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{weights}: cannot rebuild the model ({err})") from err
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
