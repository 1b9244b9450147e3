import json

import pytest
import torch

from fastunlearn.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
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


def test_batchnorm_buffers_survive(tmp_path, synthetic):
    m = create_model("resnet18", synthetic)
    m.train()
    m(torch.randn(4, 1, 8, 8))  # updates running stats
    p = save_checkpoint(tmp_path / "r", m, dataset=synthetic)
    m2 = load_checkpoint(p).model
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_truncated_weights_are_detected(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="damaged or replaced"):
        load_checkpoint(path)


def test_garbage_weights_without_hash_are_detected(saved):
    _, path = saved
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    del meta["weights_sha256"]
    side.write_text(json.dumps(meta))
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)


def test_architecture_mismatch(saved, synthetic):
    _, path = saved
    with pytest.raises(CheckpointError, match="holds a 'small_cnn' model, not 'lenet5'"):
        load_checkpoint(path, expect_model="lenet5")
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["model"]["name"] = "lenet5"
    del meta["weights_sha256"]
    side.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not fit architecture 'lenet5'"):
        load_checkpoint(path)


def test_shape_mismatch(saved):
    _, path = saved
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["model"]["num_classes"] = 7
    side.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path)


def test_missing_and_corrupt_sidecar(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    path.with_suffix(".json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="metadata not found"):
        load_checkpoint(path)


def test_model_without_spec_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="create_model"):
        save_checkpoint(tmp_path / "x", torch.nn.Linear(2, 2))
