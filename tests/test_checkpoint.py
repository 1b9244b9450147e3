import contextlib
import datetime
import errno
import hashlib
import json
import logging
import os

import pytest
import torch

from fastunlearn.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    verify_checkpoint,
)
from fastunlearn.models import create_model


@pytest.fixture()
def saved(tmp_path, synthetic):
    model = create_model("small_cnn", synthetic)
    path = save_checkpoint(
        tmp_path / "m",
        model,
        dataset=synthetic,
        seed=3,
        forget={"type": "class", "classes": ["class1"]},
        metrics={"test_acc": 1.0},
    )
    return model, path


def _header(path):
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _edit_header_meta(path, edit):
    """Rewrite the metadata inside the weights file's header (tensor data unchanged), as a
    hand-edited or crafted checkpoint would be."""
    header, data = _header(path)
    meta = json.loads(header["__metadata__"]["fastunlearn"])
    edit(meta)
    header["__metadata__"]["fastunlearn"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


def _make_format1(path, edit=None):
    """Turn a checkpoint into the format-1 layout: metadata only in the sidecar, which holds
    the whole file's SHA-256 (what fastunlearn wrote before the metadata moved into the header)."""
    from safetensors.torch import load, save

    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    blob = save(load(path.read_bytes()), metadata={"format": FORMAT})
    path.write_bytes(blob)
    meta.pop("tensors_sha256", None)
    meta["format_version"] = 1
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    if edit:
        edit(meta)
    side.write_text(json.dumps(meta))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_roundtrip_identical_outputs_and_metadata(saved, synthetic):
    model, path = saved
    assert path.name == "m.safetensors" and path.with_suffix(".json").exists()
    ck = load_checkpoint(path)
    x = torch.randn(3, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), ck.model(x))
    meta = ck.meta
    assert meta["model"]["name"] == "small_cnn"
    assert meta["dataset"]["classes"] == synthetic.classes
    assert meta["forget"]["classes"] == ["class1"] and meta["seed"] == 3
    assert "torch" in meta["versions"]
    assert list(path.parent.glob("*.tmp")) == []
    # the weights file alone carries the metadata; the sidecar repeats it for people
    side = json.loads(path.with_suffix(".json").read_text())
    assert side.pop("weights_sha256") == hashlib.sha256(path.read_bytes()).hexdigest()
    assert side == meta == read_metadata(path) == verify_checkpoint(path)


def test_batchnorm_buffers_survive(tmp_path, synthetic):
    m = create_model("resnet18", synthetic)
    m.train()
    m(torch.randn(4, 1, 8, 8))  # updates running stats
    p = save_checkpoint(tmp_path / "r", m, dataset=synthetic)
    m2 = load_checkpoint(p).model
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("keep", [100, -10], ids=["header-cut", "data-cut"])
def test_truncated_weights_are_detected(saved, keep):
    _, path = saved
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match="damaged or replaced"):
        load_checkpoint(path)


def test_flipped_byte_is_detected(saved):
    _, path = saved
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="damaged or replaced"):
        load_checkpoint(path)


def test_garbage_weights_without_hash_are_detected(saved):
    _, path = saved
    _make_format1(path, lambda m: m.pop("weights_sha256"))
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)


def test_format1_checkpoint_still_loads(saved):
    model, path = saved
    _make_format1(path)
    ck = load_checkpoint(path)
    assert _same_weights(model, ck.model) and ck.meta["seed"] == 3


def test_missing_hash_is_an_error(saved):
    """Issue 13 item 12: a sidecar without weights_sha256 used to skip the check silently."""
    _, path = saved
    _make_format1(path, lambda m: m.pop("weights_sha256"))
    with pytest.raises(CheckpointError, match="no weights_sha256"):
        load_checkpoint(path)


def test_missing_hash_in_header_is_an_error(saved):
    _, path = saved
    _edit_header_meta(path, lambda m: m.pop("tensors_sha256"))
    with pytest.raises(CheckpointError, match="no tensors_sha256"):
        load_checkpoint(path)


@pytest.mark.parametrize("where", ["sidecar-format1", "header"])
def test_metadata_sizes_are_checked_before_allocating(saved, monkeypatch, where):
    """Issue 13 item 12: metadata asking for a huge head (num_classes 1e8 → 51 GB) must be
    refused from the stored shapes, before a real model is built."""
    import fastunlearn.models._registry as models

    _, path = saved

    def huge(meta):
        meta["model"]["num_classes"] = 100_000  # 51 MB here; 1e8 would be 51 GB

    if where == "header":
        _edit_header_meta(path, huge)
    else:
        _make_format1(path, huge)
    built_on = []
    real = models.model_from_spec

    def spy(spec, **kw):
        built_on.append(torch.empty(0).device.type)
        return real(spec, **kw)

    monkeypatch.setattr(models, "model_from_spec", spy)
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path)
    assert built_on and set(built_on) == {"meta"}


def test_model_field_that_is_not_a_spec_is_one_line(saved):
    _, path = saved
    _edit_header_meta(path, lambda m: m.update(model="small_cnn"))
    with pytest.raises(CheckpointError, match="must be a model spec"):
        load_checkpoint(path)


def test_architecture_mismatch(saved, synthetic):
    _, path = saved
    with pytest.raises(CheckpointError, match="holds a 'small_cnn' model, not 'lenet5'"):
        load_checkpoint(path, expect_model="lenet5")
    _edit_header_meta(path, lambda m: m["model"].update(name="lenet5"))
    with pytest.raises(CheckpointError, match="does not fit architecture 'lenet5'"):
        load_checkpoint(path)


def test_shape_mismatch(saved):
    _, path = saved
    _edit_header_meta(path, lambda m: m["model"].update(num_classes=7))
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path)


def test_missing_and_corrupt_sidecar_of_format1(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    _make_format1(path)
    path.with_suffix(".json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(path)
    path.with_suffix(".json").write_bytes(b"\xff\xfe{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="metadata not found"):
        load_checkpoint(path)


def test_sidecar_missing_corrupt_or_stale_does_not_matter(saved, synthetic, caplog):
    """The weights file is the checkpoint: its sidecar is for people only."""
    model, path = saved
    side = path.with_suffix(".json")
    old_side = side.read_text()
    side.unlink()
    assert _same_weights(model, load_checkpoint(path).model)
    side.write_text("{broken")
    with caplog.at_level(logging.WARNING, logger="fastunlearn.checkpoint"):
        assert _same_weights(model, load_checkpoint(path).model)
    assert "unreadable sidecar" in caplog.text
    other = create_model("small_cnn", synthetic)
    save_checkpoint(path, other, dataset=synthetic, seed=9)
    side.write_text(old_side)  # the previous save's sidecar beside the new weights
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastunlearn.checkpoint"):
        ck = load_checkpoint(path)
    assert _same_weights(other, ck.model) and ck.meta["seed"] == 9
    assert "stale sidecar" in caplog.text


def _fail_on_call(monkeypatch, name, n):
    """Make ``os.<name>`` raise ENOSPC on its n-th call from now (1-based)."""
    real = getattr(os, name)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, flaky)


def test_failed_second_write_keeps_the_old_checkpoint(saved, synthetic, monkeypatch):
    """Issue 13 item 1: the disk fills up while the second file (the sidecar) is written.
    Before, the new weights were already renamed into place next to the old sidecar: the
    SHA-256 mismatch made the checkpoint unloadable and the previous good one was gone."""
    model, path = saved
    _fail_on_call(monkeypatch, "fsync", 2)  # 1: the weights' temp file, 2: the sidecar's
    with pytest.raises(OSError, match="injected"):
        save_checkpoint(path, create_model("small_cnn", synthetic), dataset=synthetic, seed=4)
    monkeypatch.undo()
    ck = load_checkpoint(path)
    assert _same_weights(model, ck.model) and ck.meta["seed"] == 3
    assert read_metadata(path)["seed"] == 3
    assert list(path.parent.glob(".*.tmp")) == []


@pytest.mark.parametrize("failing_rename", [1, 2])
def test_failed_rename_leaves_one_whole_checkpoint(saved, synthetic, monkeypatch,
                                                   failing_rename):
    """A crash at either rename leaves the old checkpoint or the new one, both loadable and
    self-consistent (the second rename is the sidecar's: the new weights already stand)."""
    model, path = saved
    new = create_model("small_cnn", synthetic)
    _fail_on_call(monkeypatch, "replace", failing_rename)
    with contextlib.suppress(OSError):
        save_checkpoint(path, new, dataset=synthetic, seed=4)
    monkeypatch.undo()
    ck = load_checkpoint(path)
    want, seed = (model, 3) if failing_rename == 1 else (new, 4)
    assert _same_weights(want, ck.model) and ck.meta["seed"] == seed
    assert read_metadata(path)["seed"] == seed
    assert list(path.parent.glob(".*.tmp")) == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_respect_the_umask(tmp_path, synthetic, umask, mode):
    """Issue 13 item 3: mkstemp made every checkpoint 0600, unreadable to teammates."""
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "m", create_model("small_cnn", synthetic),
                               dataset=synthetic)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert path.with_suffix(".json").stat().st_mode & 0o777 == mode


# ------------------------------------------------ any nn.Module, user metadata (issue 14)


def _user_net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 4),
    )


USER_META = {"run": "exp-7", "lr": 0.05, "ok": True, "none": None,
             "tags": ["a", "b"], "nested": {"pair": (1, 2), "deep": [{"x": 1.5}]}}


@pytest.fixture()
def user_saved(tmp_path):
    net = _user_net(0)
    net.train()
    net(torch.randn(5, 1, 8, 8))  # non-trivial BatchNorm running stats
    path = save_checkpoint(tmp_path / "mine", net, metadata=USER_META, seed=11)
    return net, path


def test_any_module_round_trip_with_metadata(user_saved):
    net, path = user_saved
    want = json.loads(json.dumps(USER_META))  # the tuple reads back as a list
    meta = read_metadata(path)
    assert meta["metadata"] == want and meta["model"] is None and meta["seed"] == 11
    assert meta["model_class"] == "torch.nn.modules.container.Sequential"
    assert json.loads(path.with_suffix(".json").read_text())["metadata"] == want
    fresh = _user_net(1)
    assert not _same_weights(net, fresh)
    ck = load_checkpoint(path, model=fresh)
    assert ck.model is fresh and _same_weights(net, fresh)
    assert ck.metadata == want and ck.path == path
    assert not fresh.training
    x = torch.randn(2, 1, 8, 8)
    net.eval()
    assert torch.equal(net(x), fresh(x))
    assert verify_checkpoint(path)["metadata"] == want


def test_user_checkpoint_keeps_the_integrity_checks(user_saved):
    _, path = user_saved
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    path.write_bytes(bytes(blob))
    fresh = _user_net(1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match="damaged or replaced"):
        load_checkpoint(path, model=fresh)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_user_checkpoint_without_model_is_one_line(user_saved):
    _, path = user_saved
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and "model=" in msg and "Sequential" in msg


def test_user_checkpoint_into_the_wrong_model(user_saved):
    _, path = user_saved
    other = torch.nn.Sequential(torch.nn.Linear(3, 4))
    before = other[0].weight.clone()
    with pytest.raises(CheckpointError, match="does not fit the given Sequential"):
        load_checkpoint(path, model=other)
    assert torch.equal(other[0].weight, before)
    wider = _user_net(0)
    wider[4] = torch.nn.Linear(3 * 6 * 6, 5)
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path, model=wider)
    with pytest.raises(TypeError, match="nn.Module"):
        load_checkpoint(path, model="Sequential")


def test_fastunlearn_model_with_metadata_loads_without_model(saved, synthetic, tmp_path):
    model, _ = saved
    path = save_checkpoint(tmp_path / "f", model, dataset=synthetic, metadata={"note": "x"})
    ck = load_checkpoint(path)
    assert _same_weights(model, ck.model) and ck.metadata == {"note": "x"}
    into = create_model("small_cnn", synthetic)
    assert load_checkpoint(path, model=into).model is into and _same_weights(model, into)


@pytest.mark.parametrize("metadata,where", [
    ({"when": datetime.datetime(2024, 1, 1)}, "metadata['when'] is a datetime"),
    ({"ids": {1, 2}}, "metadata['ids'] is a set"),
    ({"a": [1, torch.tensor(2.0)]}, "metadata['a'][1] is a Tensor"),
    ({3: "x"}, "has the key 3"),
    (["not", "a", "dict"], "must be a dict"),
])
def test_non_json_metadata_is_refused_before_writing(saved, metadata, where):
    model, path = saved
    side = path.with_suffix(".json")
    old = path.read_bytes(), side.read_bytes()
    with pytest.raises(TypeError) as info:
        save_checkpoint(path, _user_net(0), metadata=metadata)
    assert where in str(info.value) and "\n" not in str(info.value)
    assert (path.read_bytes(), side.read_bytes()) == old
    assert list(path.parent.glob(".*.tmp")) == []
    assert _same_weights(model, load_checkpoint(path).model)


def test_self_containing_metadata_is_refused(tmp_path):
    loop = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(TypeError, match="contains itself"):
        save_checkpoint(tmp_path / "x", _user_net(0), metadata=loop)
    assert list(tmp_path.iterdir()) == []


def test_state_without_tensors_is_refused_before_writing(tmp_path):
    class Extra(torch.nn.Linear):
        def get_extra_state(self):
            return {"step": 3}

        def set_extra_state(self, state):
            pass

    with pytest.raises(TypeError, match="not a tensor"):
        save_checkpoint(tmp_path / "x", Extra(2, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        save_checkpoint(tmp_path / "x", {"w": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []
