import pytest
import torch

from fastunlearn.engine.runner import lr_factor
from fastunlearn.models import create_model
from fastunlearn.train import TrainConfig, train


def test_training_lowers_the_loss_and_learns(synthetic):
    model = create_model("small_cnn", synthetic)
    cfg = TrainConfig(epochs=4, lr=0.05, batch_size=32, device="cpu", progress=False)
    train(model, synthetic.train, cfg)
    hist = model.fastunlearn_history.epochs
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert hist[-1]["test_acc"] > 90.0
    assert not model.training


def test_same_seed_same_weights(synthetic):
    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", progress=False, eval_every=0, seed=7)
    ws = []
    for _ in range(2):
        torch.manual_seed(1)
        m = train(create_model("lenet5", synthetic), synthetic.train, cfg)
        ws.append(torch.cat([p.flatten() for p in m.parameters()]))
    assert torch.equal(ws[0], ws[1])


def test_adamw_and_label_smoothing(synthetic):
    cfg = TrainConfig(
        epochs=2,
        optimizer="adamw",
        lr=3e-3,
        label_smoothing=0.1,
        warmup_epochs=1,
        device="cpu",
        progress=False,
    )
    m = train(create_model("small_cnn", synthetic), synthetic.train, cfg)
    assert m.fastunlearn_history.epochs[-1]["test_acc"] > 80


def test_cosine_schedule_shape():
    vals = [lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert vals[0] == pytest.approx(0.1) and vals[9] == pytest.approx(1.0)
    assert vals[10] == pytest.approx(1.0) and vals[-1] < 0.01
    assert all(a >= b for a, b in zip(vals[10:], vals[11:]))
    assert lr_factor(50, 100, 0, "constant") == 1.0


@pytest.mark.parametrize(
    "kw",
    [
        {"epochs": 0},
        {"lr": -1.0},
        {"optimizer": "rmsprop"},
        {"schedule": "step"},
        {"weight_decay": -1},
        {"label_smoothing": 1.0},
        {"batch_size": 0},
    ],
)
def test_bad_config(kw):
    with pytest.raises(ValueError):
        TrainConfig(**kw)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_compile_option(value):
    with pytest.raises(ValueError, match="compile must be True, False or 'auto'"):
        TrainConfig(compile=value)


def test_compile_auto_that_picks_eager_changes_nothing(synthetic, monkeypatch, tmp_path):
    """The "auto" measurement (stand-in compile, measured slower) leaves weights, BatchNorm
    statistics and the RNG stream exactly as a plain eager run has them."""
    from fastunlearn.kernels import compile as fc

    monkeypatch.setenv(fc.CACHE_ENV_VAR, str(tmp_path))
    fc.forget_compile_decisions()
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)
    monkeypatch.setattr(fc, "measure_step_times",
                        lambda eager, comp, device, rounds=1: ([1.0], [1.5]))
    states = []
    for mode in (False, "auto"):
        torch.manual_seed(1)
        cfg = TrainConfig(epochs=1, batch_size=64, device="cpu", progress=False, eval_every=0,
                          compile=mode)
        m = train(create_model("small_cnn", synthetic), synthetic.train, cfg)
        assert m.fastunlearn_history.compiled is False
        states.append(m.state_dict())
    assert (tmp_path / "compile.json").exists()  # "auto" did measure
    fc.forget_compile_decisions()
    for k, v in states[0].items():
        assert torch.equal(v, states[1][k]), k
