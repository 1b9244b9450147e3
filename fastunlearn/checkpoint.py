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

Any ``nn.Module`` can be saved: a model from :func:`~fastunlearn.models.create_model` carries its
spec, so :func:`load_checkpoint` rebuilds it; a model of your own is stored with ``model: null``
and its class name (``model_class``), and loads into an instance you pass
(``load_checkpoint(path, model=MyNet())``). Your own JSON metadata goes in with
``save_checkpoint(..., metadata={...})`` and comes back as ``Checkpoint.metadata``.

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
    """A loaded checkpoint: the model (in eval mode), its metadata, and the weights file."""

    model: nn.Module
    meta: dict[str, Any]
    path: Path

    @property
    def metadata(self) -> dict[str, Any]:
        """The user metadata given to ``save_checkpoint(..., metadata=...)`` (``{}`` if none)."""
        return dict(self.meta.get("metadata") or {})


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
    """A detached, contiguous CPU copy of the state dict (no shared storage); TypeError (one
    line) for an entry that is not a tensor (e.g. a module's ``get_extra_state``)."""
    state = model.state_dict()
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state dict entry {k!r} of {type(model).__name__} is a "
                            f"{type(v).__name__}, not a tensor; a checkpoint stores tensors only")
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


_JSON_SCALARS = (str, int, float, bool, type(None))


def _json_problem(value: Any, where: str, path: tuple[int, ...] = ()) -> str | None:
    """Why ``value`` would not come back from JSON as given (None when it would): only dicts
    with string keys, lists/tuples and str/int/float/bool/None."""
    if isinstance(value, _JSON_SCALARS):
        return None
    if id(value) in path:
        return f"{where} contains itself"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{where} has the key {k!r} ({type(k).__name__}); JSON keys are strings"
            problem = _json_problem(v, f"{where}[{k!r}]", (*path, id(value)))
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            problem = _json_problem(v, f"{where}[{i}]", (*path, id(value)))
            if problem:
                return problem
        return None
    return (f"{where} is a {type(value).__name__}, which JSON cannot hold (use str, int, "
            "float, bool, None, list or dict)")


def _check_metadata(metadata: Any) -> dict[str, Any]:
    """``metadata`` as it will read back (tuples become lists); TypeError (one line) when it
    is not a dict of JSON values."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of JSON values, got {type(metadata).__name__}")
    problem = _json_problem(metadata, "metadata")
    if problem:
        raise TypeError(problem)
    return json.loads(json.dumps(metadata))


def _class_name(model: nn.Module) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


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
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint (metadata inside the weights file) and its JSON sidecar; return the
    weights path.

    ``model`` is any ``nn.Module`` whose state dict holds tensors. One from
    :func:`fastunlearn.create_model` carries its spec, and :func:`load_checkpoint` rebuilds it;
    for any other model the checkpoint records its class name and is loaded into an instance
    you pass (``load_checkpoint(path, model=...)``). ``metadata`` is your own dict of JSON
    values (str keys; str, int, float, bool, None, lists, dicts), read back as
    ``Checkpoint.metadata`` or ``read_metadata(path)["metadata"]``; anything else is a
    one-line TypeError before any file is touched.

    Both files are staged (written and fsynced under temp names) before anything is replaced;
    the weights file's rename is the commit. A failure before it leaves the previous checkpoint
    untouched; after it, the new checkpoint is complete whatever happens to the sidecar.
    """
    from safetensors.torch import save

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    user_meta = _check_metadata(metadata)
    spec = getattr(model, "fastunlearn_spec", None)
    weights, sidecar = checkpoint_paths(path)
    tensors = state_dict_tensors(model)
    probe = save(tensors, metadata={"format": FORMAT})
    n = int.from_bytes(probe[:8], "little")
    tensors_sha256 = hashlib.sha256(memoryview(probe)[8 + n :]).hexdigest()
    del probe
    meta: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": spec,
        "model_class": _class_name(model),
        "metadata": user_meta,
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
    _check_fit(expected, shapes, weights, f"architecture {spec['name']!r}")


def _check_sizes(spec: dict[str, Any], shapes: dict[str, tuple[int, ...]], weights: Path) -> None:
    """Fallback for models that cannot be built on ``meta``: a classifier's class and channel
    counts are dimensions of some stored tensor."""
    dims = {d for shape in shapes.values() for d in shape}
    for field in ("num_classes", "in_chans"):
        value = spec.get(field)
        if value is not None and value not in dims:
            raise CheckpointError(f"{weights} does not fit architecture {spec['name']!r}: "
                                  f"{field}={value!r} is no dimension of any stored tensor")


def _check_fit(expected: dict[str, tuple[int, ...]], stored: dict[str, tuple[int, ...]],
               weights: Path, what: str) -> None:
    """CheckpointError (one line) unless the stored tensors have exactly the model's keys and
    shapes."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not fit {what}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    bad = [k for k in expected if tuple(expected[k]) != tuple(stored[k])]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{weights} does not fit {what}: {k} has shape "
                              f"{tuple(stored[k])}, expected {tuple(expected[k])}")


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    expect_model: str | None = None,
    device: str | torch.device | None = None,
) -> Checkpoint:
    """Load a checkpoint's weights strictly into a model, returned in eval mode.

    Without ``model``, the model is rebuilt from the metadata's spec (checkpoints of
    :func:`fastunlearn.create_model` models) and moved to ``device`` (default CPU). A
    checkpoint saved from a model of your own has no spec: pass ``model=`` an instance of the
    same architecture and the weights are loaded into it (moved to ``device`` only when
    ``device`` is given); ``model=`` works for fastunlearn checkpoints too.

    Raises :class:`CheckpointError` (one line) when files are missing or damaged, when the
    metadata has no hash, when the weights do not match the architecture (hash, keys, shapes —
    checked before the model is allocated or touched), when a checkpoint of your own model is
    loaded without ``model=``, or when ``expect_model`` is given and the checkpoint holds
    another architecture. Never unpickles anything.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    from fastunlearn.models._registry import model_from_spec

    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    weights, sidecar = checkpoint_paths(path)
    meta, blob, shapes = _verified(weights, sidecar)
    spec = meta.get("model")
    name = spec.get("name") if isinstance(spec, dict) else None
    if expect_model is not None and name != expect_model:
        raise CheckpointError(f"{weights} holds a {name!r} model, not {expect_model!r}")
    if model is None and spec is None:
        cls = meta.get("model_class") or "model of your own"
        raise CheckpointError(f"{weights} holds the weights of a {cls} (no fastunlearn model "
                              "spec); load them into an instance of it: "
                              "load_checkpoint(path, model=...)")
    if model is not None:
        what = f"the given {type(model).__name__}"
        _check_fit({k: tuple(v.shape) for k, v in model.state_dict().items()}, shapes,
                   weights, what)
    else:
        _check_architecture(spec, shapes, weights)
    try:
        state = load(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({err})") from err
    del blob
    if model is None:
        try:
            model = model_from_spec(spec)
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{weights}: cannot rebuild the model ({err})") from err
        what = f"architecture {spec['name']!r}"
        device = "cpu" if device is None else device
    _check_fit({k: tuple(v.shape) for k, v in model.state_dict().items()},
               {k: tuple(v.shape) for k, v in state.items()}, weights, what)
    model.load_state_dict(state, strict=True)
    if device is not None:
        model.to(device)
    model.eval()
    return Checkpoint(model, meta, weights)
